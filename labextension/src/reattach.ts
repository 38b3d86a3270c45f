/**
 * Attach a page to a kernel whose start waited, once it runs: the page tried
 * the kernel while it did not exist yet, and JupyterLab may have given up (or
 * wait long before its next try). One reconnection at most, and never over a
 * connection under way: a second websocket with the same session, while
 * another connects, is taken by the server for the first one's replacement,
 * and it closes one of them (seen in runs: a cell sent then got no output).
 * So several parts of the page asking make one reconnection, and a kernel
 * that JupyterLab is connecting ('connecting': its own socket opening, or its
 * wait before the next try) is given `SETTLE_MS` to connect by itself first.
 */
import type { Kernel } from '@jupyterlab/services';

/**
 * How long JupyterLab's own connection under way may take before the page
 * makes its own: a socket to a running kernel opens in well under a second.
 */
export const SETTLE_MS = 5000;

const reconnecting = new WeakSet<Kernel.IKernelConnection>();

export async function reattach(
  kernel: Kernel.IKernelConnection | null | undefined
): Promise<void> {
  if (!kernel || isConnected(kernel) || reconnecting.has(kernel)) {
    return;
  }
  reconnecting.add(kernel);
  try {
    await settled(kernel);
    // (Read again: it changed while the page waited.)
    if (kernel.isDisposed || isConnected(kernel)) {
      return;
    }
    await kernel.reconnect();
  } catch {
    // Disposed meanwhile, or the server refused: nothing more to do here.
  } finally {
    reconnecting.delete(kernel);
  }
}

function isConnected(kernel: Kernel.IKernelConnection): boolean {
  return kernel.connectionStatus === 'connected';
}

/**
 * Until JupyterLab's connection under way ends (connected, or given up), or
 * `SETTLE_MS` passed.
 */
function settled(kernel: Kernel.IKernelConnection): Promise<void> {
  if (kernel.connectionStatus !== 'connecting') {
    return Promise.resolve();
  }
  return new Promise<void>(resolve => {
    const done = (): void => {
      clearTimeout(timer);
      kernel.connectionStatusChanged.disconnect(changed);
      resolve();
    };
    const changed = (
      _: Kernel.IKernelConnection,
      status: Kernel.ConnectionStatus
    ): void => {
      if (status !== 'connecting') {
        done();
      }
    };
    const timer = setTimeout(done, SETTLE_MS);
    kernel.connectionStatusChanged.connect(changed);
  });
}
