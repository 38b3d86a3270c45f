/**
 * A page attaches once to a kernel whose start waited (reattach.ts), and
 * never over JupyterLab's own connection under way.
 */
import { Signal } from '@lumino/signaling';

import { reattach, SETTLE_MS } from '../reattach';

type Status = 'connected' | 'connecting' | 'disconnected';

/**
 * A kernel connection as reattach sees it: its status, the signal of its
 * changes, and a reconnect that connects when `connect()` is called.
 */
function kernelIn(status: Status) {
  const kernel = {
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
