/**
 * Attach a page to a kernel whose start waited, once it runs: the page tried
 * the kernel while it did not exist yet, and JupyterLab may have given up (or
 * wait long before its next try). Several parts of the page may ask at once
 * (the launch that waited, the queue's word that the start ended); one
 * reconnection is made: a second, while the first connects, would open a
 * second websocket with the same session, which the server takes for the
 * first one's replacement and closes one of them (seen in a run: a cell sent
 * then got no output).
 */
import type { Kernel } from '@jupyterlab/services';

const reconnecting = new WeakSet<Kernel.IKernelConnection>();

export async function reattach(
  kernel: Kernel.IKernelConnection | null | undefined
): Promise<void> {
  if (
    !kernel ||
    kernel.connectionStatus === 'connected' ||
    reconnecting.has(kernel)
  ) {
    return;
  }
  reconnecting.add(kernel);
  try {
    await kernel.reconnect();
  } catch {
    // Disposed meanwhile, or the server refused: nothing more to do here.
  } finally {
    reconnecting.delete(kernel);
  }
}
