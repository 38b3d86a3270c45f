/**
 * A notebook reloaded while its kernel's start waited attaches to the kernel
 * once the start ends with the kernel running (notificationsplugin.ts).
 */
import { Signal } from '@lumino/signaling';

// The plugin module's JupyterLab imports need a DOM this test has no use for.
jest.mock('@jupyterlab/application', () => ({}));
jest.mock('@jupyterlab/apputils', () => ({ Notification: {} }));
jest.mock('@jupyterlab/notebook', () => ({
  INotebookTracker: {},
  NotebookActions: {}
}));
jest.mock('@jupyterlab/statusbar', () => ({ IStatusBar: {} }));
jest.mock('../waitstatus', () => ({ WaitingStatus: jest.fn() }));

import { attachWhenStarted } from '../notificationsplugin';
import { reattach } from '../reattach';
import type { IQueueEnd } from '../queuemodel';

function panelOn(id: string, connectionStatus: string) {
  const reconnect = jest.fn().mockResolvedValue(undefined);
  return {
    reconnect,
    panel: {
      sessionContext: {
        session: { kernel: { id, connectionStatus, reconnect } }
      }
    }
  };
}

function setUp() {
  const owner = {};
  const queueEnded = new Signal<object, IQueueEnd>(owner);
  const waited = panelOn('k-waited', 'disconnected');
  const connected = panelOn('k-waited', 'connected');
  const other = panelOn('k-other', 'disconnected');
  const panels = [waited.panel, connected.panel, other.panel];
  attachWhenStarted(
    { queueEnded } as any,
    { forEach: (fn: (panel: any) => void) => panels.forEach(fn) } as any
  );
  const end = (outcome: string, kernel_id = 'k-waited') =>
    queueEnded.emit({ ticket: { kernel_id } as any, outcome } as IQueueEnd);
  return { end, waited, connected, other };
}

describe('attachWhenStarted', () => {
  it('reconnects the notebooks on a kernel that started, that gave up on it', () => {
    const { end, waited, connected, other } = setUp();
    end('started');
    expect(waited.reconnect).toHaveBeenCalledTimes(1);
    expect(connected.reconnect).not.toHaveBeenCalled();
    expect(other.reconnect).not.toHaveBeenCalled();
  });

  it('leaves them alone when the start did not end with a kernel', () => {
    const { end, waited } = setUp();
    end('cancelled');
    end('gone');
    expect(waited.reconnect).not.toHaveBeenCalled();
  });
});

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
