/**
 * A page attaches once to a kernel whose start waited (reattach.ts), and
 * never over JupyterLab's own connection under way.
 */
import { Signal } from '@lumino/signaling';

import { reattach, reattachWhenRunning, SETTLE_MS } from '../reattach';

type Status = 'connected' | 'connecting' | 'disconnected';

/**
 * A kernel connection as reattach sees it: its status, the signal of its
 * changes, and a reconnect that connects when `connect()` is called.
 */
function kernelIn(status: Status, id = 'k1') {
  const kernel = {
    id,
    isDisposed: false,
    connectionStatus: status,
    connectionStatusChanged: new Signal<unknown, Status>({}),
    connect: (): void => undefined,
    set(next: Status): void {
      kernel.connectionStatus = next;
      kernel.connectionStatusChanged.emit(next);
    },
    reconnect: jest.fn(
      () =>
        new Promise<void>(resolve => {
          kernel.set('connecting');
          kernel.connect = () => {
            kernel.set('connected');
            resolve();
          };
        })
    )
  };
  return kernel;
}

describe('reattach', () => {
  afterEach(() => {
    jest.useRealTimers();
  });

  it('makes one reconnection however many ask while it connects', async () => {
    const kernel = kernelIn('disconnected');
    const first = reattach(kernel as any);
    const second = reattach(kernel as any);
    await Promise.resolve();
    kernel.connect();
    await Promise.all([first, second]);
    await reattach(kernel as any); // connected: nothing to do
    expect(kernel.reconnect).toHaveBeenCalledTimes(1);
  });

  it("leaves JupyterLab's own connection under way alone when it connects", async () => {
    jest.useFakeTimers();
    const kernel = kernelIn('connecting');
    const attached = reattach(kernel as any);
    jest.advanceTimersByTime(SETTLE_MS / 10);
    kernel.set('connected'); // its own socket opened
    await attached;
    expect(kernel.reconnect).not.toHaveBeenCalled();
  });

  it('reconnects a kernel JupyterLab is still only trying after a while', async () => {
    jest.useFakeTimers();
    const kernel = kernelIn('connecting'); // waiting before its next try
    const attached = reattach(kernel as any);
    await Promise.resolve();
    expect(kernel.reconnect).not.toHaveBeenCalled();
    jest.advanceTimersByTime(SETTLE_MS);
    await Promise.resolve();
    await Promise.resolve();
    expect(kernel.reconnect).toHaveBeenCalledTimes(1);
    kernel.connect();
    await attached;
  });
});

describe('reattachWhenRunning', () => {
  it("attaches the page's connections to the kernel once the server runs it", async () => {
    const mine = kernelIn('disconnected', 'k1');
    const other = kernelIn('disconnected', 'k2');
    // Not listed, then the server does not answer, then it runs.
    const answers = [false, 'error', true];
    const isRunning = jest.fn(async (id: string) => {
      expect(id).toBe('k1');
      const answer = answers.shift();
      if (answer === 'error') {
        throw new Error('no answer');
      }
      return answer === true;
    });
    const ran = reattachWhenRunning('k1', {
      isRunning,
      connections: () => [null, other as any, mine as any, undefined],
      intervalMs: 1,
      looks: 10
    });
    while (mine.reconnect.mock.calls.length === 0) {
      await new Promise(resolve => setTimeout(resolve, 1));
    }
    mine.connect();
    await expect(ran).resolves.toBe(true);
    expect(isRunning).toHaveBeenCalledTimes(3);
    expect(other.reconnect).not.toHaveBeenCalled();
  });

  it('tries again when a round of tries failed', async () => {
    const kernel = kernelIn('disconnected', 'k1');
    // The first round fails (its tries were refused), the second connects.
    kernel.reconnect
      .mockImplementationOnce(() => {
        kernel.set('disconnected');
        return Promise.reject(new Error('Kernel connection disconnected'));
      })
      .mockImplementationOnce(() => {
        kernel.set('connected');
        return Promise.resolve();
      });
    await expect(
      reattachWhenRunning('k1', {
        isRunning: async () => true,
        connections: () => [kernel as any],
        intervalMs: 1,
        looks: 1
      })
    ).resolves.toBe(true);
    expect(kernel.reconnect).toHaveBeenCalledTimes(2);
    expect(kernel.connectionStatus).toBe('connected');
  });

  it('gives up after its looks when the kernel never runs', async () => {
    const kernel = kernelIn('disconnected', 'k1');
    const isRunning = jest.fn(async () => false);
    await expect(
      reattachWhenRunning('k1', {
        isRunning,
        connections: () => [kernel as any],
        intervalMs: 1,
        looks: 4
      })
    ).resolves.toBe(false);
    expect(isRunning).toHaveBeenCalledTimes(4);
    expect(kernel.reconnect).not.toHaveBeenCalled();
  });
});
