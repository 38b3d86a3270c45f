/**
 * The toasts that say a notebook's cell waits for its kernel's GPU, one per
 * wait: dismissed once that wait ends (started, cancelled from another tab or
 * by Shut Down, timed out), so that none is left saying a wait goes on.
 */
export class WaitToasts {
  constructor(private readonly _dismiss: (toastId: string) => void) {}

  /**
   * The toast `toastId` tells of the wait of kernel `kernelId`.
   */
  told(kernelId: string, toastId: string): void {
    const before = this._toasts.get(kernelId);
    if (before !== undefined && before !== toastId) {
      this._dismiss(before);
    }
    this._toasts.set(kernelId, toastId);
  }

  /**
   * The wait of kernel `kernelId` ended: its toast goes.
   */
  ended(kernelId: string): void {
    const toastId = this._toasts.get(kernelId);
    if (toastId !== undefined) {
      this._toasts.delete(kernelId);
      this._dismiss(toastId);
    }
  }

  private _toasts = new Map<string, string>();
}
