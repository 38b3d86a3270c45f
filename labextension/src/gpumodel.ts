/**
 * The engine's status and the host's GPUs (who holds them), read together on
 * a cadence of their own: the GPU poll, whose tick also reads the documents
 * that change with the GPUs (the queue, the admin view, reclaims, notices:
 * the model's `refreshGpus`).
 */
import type { ServerConnection } from '@jupyterlab/services';
import type { TranslationBundle } from '@jupyterlab/translation';
import { Poll } from '@lumino/polling';

import { getGpus, getStatus, messageOf } from './api';
import { IGpuReport, IStatus } from './gputypes';
import { failed, frequency } from './refresh';

/**
 * The longest GPU refresh interval (ms) when the server does not answer (the
 * poll backs off up to it), unless a longer interval is set.
 */
const GPU_MAX_INTERVAL = 60 * 1000;

export interface IGpuModelOptions {
  serverSettings: ServerConnection.ISettings;
  trans: TranslationBundle;
  /**
   * Seconds between ticks (at least 1).
   */
  interval: number;
  /**
   * What a tick reads: this model's `read`, and what changes with it. Never
   * rejects.
   */
  tick: () => Promise<void>;
}

export class GpuModel {
  constructor(options: IGpuModelOptions) {
    this._settings = options.serverSettings;
    this._trans = options.trans;
    // The factory rejects after a failed read so that the poll backs off
    // while the server does not answer (the tick itself never does).
    this._poll = new Poll({
      factory: async () => {
        await options.tick();
        failed(this._statusError || this._gpuError);
      },
      frequency: frequency(options.interval, 1, GPU_MAX_INTERVAL),
      name: 'gpu-containers:gpus',
      standby: 'when-hidden'
    });
  }

  get status(): IStatus | null {
    return this._status;
  }

  /**
   * Why the status could not be read, or `''`.
   */
  get statusError(): string {
    return this._statusError;
  }

  get gpus(): IGpuReport | null {
    return this._gpus;
  }

  /**
   * Why the GPUs could not be read, or `''`.
   */
  get gpuError(): string {
    return this._gpuError;
  }

  /**
   * Whether one of the user's kernels holds a GPU (`kernelId`: that kernel).
   */
  holdsMine(kernelId?: string): boolean {
    return (this._gpus?.gpus ?? []).some(gpu =>
      gpu.holders.some(
        h => h.mine && (kernelId === undefined || h.kernel_id === kernelId)
      )
    );
  }

  /**
   * The poll's current tick (settles once a refresh is in).
   */
  get tick(): Promise<unknown> {
    return this._poll.tick;
  }

  /**
   * Read the status and the GPUs now. Never rejects: failures land in
   * `statusError` / `gpuError`.
   */
  async read(): Promise<void> {
    const [status, gpus] = await Promise.allSettled([
      getStatus(this._settings, this._trans),
      getGpus(this._settings, this._trans)
    ]);
    if (this._isDisposed) {
      return;
    }
    this._status = status.status === 'fulfilled' ? status.value : null;
    this._statusError =
      status.status === 'rejected' ? messageOf(status.reason) : '';
    this._gpus = gpus.status === 'fulfilled' ? gpus.value : null;
    this._gpuError = gpus.status === 'rejected' ? messageOf(gpus.reason) : '';
  }

  /**
   * Tick now, through the poll (its cadence starts again from here).
   */
  refresh(): Promise<void> {
    return this._poll.refresh();
  }

  setInterval(seconds: number): void {
    this._poll.frequency = frequency(seconds, 1, GPU_MAX_INTERVAL);
  }

  dispose(): void {
    this._isDisposed = true;
    this._poll.dispose();
  }

  private _settings: ServerConnection.ISettings;
  private _trans: TranslationBundle;
  private _poll: Poll;
  private _status: IStatus | null = null;
  private _statusError = '';
  private _gpus: IGpuReport | null = null;
  private _gpuError = '';
  private _isDisposed = false;
}
