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

/**
 * How many rounds of JupyterLab's tries a page makes to attach to a kernel
 * that runs.
 */
const ATTACH_ROUNDS = 3;

const reconnecting = new WeakSet<Kernel.IKernelConnection>();

export interface IReattachWhenRunningOptions {
  /**
   * Whether the server runs the kernel now (its kernels API lists it).
   */
  isRunning: (kernelId: string) => Promise<boolean>;
  /**
   * The page's connections to kernels (the notebooks' own), read at the end.
   */
  connections: () => Iterable<Kernel.IKernelConnection | null | undefined>;
  /**
   * Milliseconds between two looks.
   */
  intervalMs: number;
  /**
   * How many looks before giving up (the kernel never ran).
   */
  looks: number;
}

/**
 * Once the server runs a kernel whose start waited, attach the page's
 * connections to it. The page that asked for the start does so when its
 * request answers; a page loaded while the start waited has no request of its
 * own, and JupyterLab, having tried the kernel while it did not exist, stops
 * trying after seven tries spaced by chance (about a minute, often less): a
 * cell run meanwhile would stay unsent. Resolves whether the kernel ran.
 */
export async function reattachWhenRunning(
  kernelId: string,
  options: IReattachWhenRunningOptions
): Promise<boolean> {
  for (let look = 0; look < options.looks; look++) {
    if (look > 0) {
      await new Promise(resolve => setTimeout(resolve, options.intervalMs));
    }
    let running = false;
    try {
      running = await options.isRunning(kernelId);
    } catch {
      // Not known now (the server did not answer): look again.
    }
    if (running) {
      const mine = Array.from(options.connections()).filter(
        (kernel): kernel is Kernel.IKernelConnection =>
          !!kernel && kernel.id === kernelId
      );
      await Promise.all(mine.map(kernel => attachSoon(kernel)));
      return true;
    }
  }
  return false;
}

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

/**
 * Attach a connection to a running kernel, trying again when a round of
 * JupyterLab's tries failed (a browser fails requests in flight when the
 * host's network interfaces change, as each container's start does).
 */
async function attachSoon(kernel: Kernel.IKernelConnection): Promise<void> {
  for (let round = 0; round < ATTACH_ROUNDS; round++) {
    await reattach(kernel);
    if (kernel.isDisposed || isConnected(kernel)) {
      return;
    }
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
