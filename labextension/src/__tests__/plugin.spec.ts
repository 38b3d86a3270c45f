import { JupyterFrontEnd } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';

import plugin from '../index';
import { IStatus } from '../types';

// Keep the real apputils (and its UI toolkit) out of these tests.
jest.mock('@jupyterlab/apputils', () => ({
  Notification: { warning: jest.fn(), error: jest.fn() }
}));

const settings = ServerConnection.makeSettings({
  baseUrl: 'http://localhost:8888/'
});
const app = {
  serviceManager: { serverSettings: settings }
} as unknown as JupyterFrontEnd;

/**
 * Activate the plugin against a server that answers `body` with `status`,
 * and wait until it has reported.
 */
async function activate(body: string, status = 200): Promise<void> {
  jest
    .spyOn(ServerConnection, 'makeRequest')
    .mockResolvedValue(new Response(body, { status, statusText: 'Reason' }));
  const log = jest.spyOn(console, 'log').mockImplementation(() => undefined);
  void plugin.activate(app);
  for (let i = 0; i < 100; i++) {
    const calls =
      log.mock.calls.length +
      jest.mocked(Notification.warning).mock.calls.length +
      jest.mocked(Notification.error).mock.calls.length;
    if (calls > 0) {
      return;
    }
    await new Promise(resolve => setTimeout(resolve, 5));
  }
  throw new Error('the plugin did not report');
}

afterEach(() => {
  jest.restoreAllMocks();
  jest.mocked(Notification.warning).mockClear();
  jest.mocked(Notification.error).mockClear();
});

const engine = {
  ok: true,
  message: 'ok',
  version: '27.3.1',
  endpoint: 'unix:///var/run/docker.sock'
};

describe('jupyter-gpu-containers:plugin', () => {
  it('is the auto-started plugin with the expected id', () => {
    expect(plugin.id).toBe('jupyter-gpu-containers:plugin');
    expect(plugin.autoStart).toBe(true);
    expect(plugin.requires ?? []).toEqual([]);
  });

  it('logs one line when the engine is reachable', async () => {
    const status: IStatus = { engine, kernelspecs: 2 };
    await activate(JSON.stringify(status));
    expect(console.log).toHaveBeenCalledTimes(1);
    expect(console.log).toHaveBeenCalledWith(
      'jupyter-gpu-containers: engine 27.3.1, 2 container kernel specs'
    );
    expect(Notification.warning).not.toHaveBeenCalled();
    expect(Notification.error).not.toHaveBeenCalled();
  });

  it('warns once, without closing, when the engine is unreachable', async () => {
    const status: IStatus = {
      engine: { ...engine, ok: false, message: 'Docker is not running.' },
      kernelspecs: 0
    };
    await activate(JSON.stringify(status));
    expect(Notification.warning).toHaveBeenCalledTimes(1);
    expect(Notification.warning).toHaveBeenCalledWith(
      'Docker is not running.',
      {
        autoClose: false
      }
    );
    expect(Notification.error).not.toHaveBeenCalled();
  });

  it("shows the server's sentence when the request fails", async () => {
    await activate('{"message": "Engine lookup failed."}', 500);
    expect(Notification.error).toHaveBeenCalledTimes(1);
    expect(jest.mocked(Notification.error).mock.calls[0][0]).toBe(
      'GPU containers: Engine lookup failed.'
    );
    expect(Notification.warning).not.toHaveBeenCalled();
  });
});
