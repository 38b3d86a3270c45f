/**
 * A page attaches once to a kernel whose start waited (reattach.ts).
 */
import { reattach } from '../reattach';

describe('reattach', () => {
  it('makes one reconnection however many ask while it connects', async () => {
    let connected: () => void = () => undefined;
    const kernel = {
      connectionStatus: 'disconnected',
      reconnect: jest.fn(
        () =>
          new Promise<void>(resolve => {
            kernel.connectionStatus = 'connecting';
            connected = () => {
              kernel.connectionStatus = 'connected';
              resolve();
            };
          })
      )
    };
    const first = reattach(kernel as any);
    const second = reattach(kernel as any);
    connected();
    await Promise.all([first, second]);
    await reattach(kernel as any); // connected: nothing to do
    expect(kernel.reconnect).toHaveBeenCalledTimes(1);
  });
});
