/// <reference types="node" />
import * as fs from 'fs';
import * as path from 'path';

import { ILayoutRestorer, JupyterFrontEnd } from '@jupyterlab/application';
import {
  ICommandPalette,
  IToolbarWidgetRegistry,
  Notification
} from '@jupyterlab/apputils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ServerConnection } from '@jupyterlab/services';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ITranslator } from '@jupyterlab/translation';

import { askRegistryLogin } from '../credentials';
import type { JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Token } from '@lumino/coreutils';
import { Signal } from '@lumino/signaling';

import { IStatus } from '../gputypes';
import { IPull } from '../imagetypes';
import plugins, {
  CommandIDs,
  IGpuContainersModel,
  PLUGIN_ID,
  TOOLBAR_ITEM,
  buildPlugin,
  kernelViewPlugin,
  modelPlugin,
  notificationsPlugin,
  panelPlugin,
  toolbarPlugin
} from '../index';
import { tendLauncherCards } from '../launcherlabels';
import { GpuContainersModel } from '../model';
import { IPanelActions } from '../panel';
import { KernelImageItem } from '../toolbar';
import { makeGpu, makePull, makeReport, makeRow } from './fixtures';
import { pseudoTranslator } from './pseudo';

// The JupyterLab UI packages need a DOM, which the node test environment does
// not have: the plugin only needs their tokens (and Notification) here.
function mockToken(name: string): unknown {
  const { Token } = jest.requireActual('@lumino/coreutils');
  return new Token(`test:${name}`);
}
jest.mock('@jupyterlab/application', () => ({
  ILayoutRestorer: mockToken('ILayoutRestorer')
}));
jest.mock('@jupyterlab/apputils', () => ({
  ICommandPalette: mockToken('ICommandPalette'),
  IToolbarWidgetRegistry: mockToken('IToolbarWidgetRegistry'),
  Notification: {
    warning: jest.fn(),
    error: jest.fn(),
    success: jest.fn(),
    info: jest.fn()
  }
}));
jest.mock('@jupyterlab/filebrowser', () => ({
  IDefaultFileBrowser: mockToken('IDefaultFileBrowser')
}));
jest.mock('@jupyterlab/launcher', () => ({
  ILauncher: mockToken('ILauncher')
}));
jest.mock('@jupyterlab/notebook', () => ({
  INotebookTracker: mockToken('INotebookTracker'),
  NotebookActions: { executionScheduled: mockSignal() }
}));
jest.mock('@jupyterlab/statusbar', () => ({
  IStatusBar: mockToken('IStatusBar')
}));
jest.mock('@jupyterlab/settingregistry', () => ({
  ISettingRegistry: mockToken('ISettingRegistry')
}));

/**
 * The panels the plugin built, with the model and actions they were given.
 */
const mockPanels: Array<{
  id: string;
  model: GpuContainersModel;
  actions: IPanelActions;
  readKernelsAgain: jest.Mock;
}> = [];

/**
 * A signal as the plugin uses it: connect, and emit (for tests).
 */
function mockSignal() {
  const slots: Array<(sender: unknown, args: any) => void> = [];
  return {
    connect: (slot: (sender: unknown, args: any) => void) => slots.push(slot),
    emit: (args?: unknown) => slots.forEach(slot => slot(null, args))
  };
}
jest.mock('../panel', () => ({
  GpuContainersPanel: class {
    readonly id = 'jgc-panel';
    readonly readKernelsAgain = jest.fn();
    constructor(
      readonly model: GpuContainersModel,
      readonly actions: IPanelActions
    ) {
      mockPanels.push(this);
    }
  }
}));
jest.mock('../switching', () => ({
  launchNotebook: jest.fn(),
  switchNotebook: jest.fn()
}));
jest.mock('../toolbar', () => ({ KernelImageItem: jest.fn() }));
jest.mock('../waitstatus', () => ({
  WaitingStatus: class {
    readonly waiting = false;
  }
}));
jest.mock('../kernelview', () => ({ KernelViewWidget: jest.fn() }));
jest.mock('../kernelviewmodel', () => ({ KernelViewModel: jest.fn() }));
jest.mock('../launcherlabels', () => ({
  tendLauncherCards: jest.fn()
}));
jest.mock('../icon', () => ({ gpuContainersIcon: { name: 'test:icon' } }));
jest.mock('../credentials', () => ({ askRegistryLogin: jest.fn() }));
jest.mock('../dialogs', () => ({
  confirmDialog: jest.fn(),
  FormDialogBody: class {},
  showFormDialog: jest.fn()
}));
jest.mock('../buildview', () => ({
  BuildViewWidget: jest.fn(),
  BuildForm: jest.fn()
}));

const settings = ServerConnection.makeSettings({
  baseUrl: 'http://localhost:8888/'
});

const engine = {
  ok: true,
  message: 'ok',
  version: '27.3.1',
  endpoint: 'unix:///var/run/docker.sock'
};

/**
 * A front end with just what the plugin touches.
 */
function makeApp() {
  return {
    serviceManager: {
      serverSettings: settings,
      sessions: { runningChanged: mockSignal() },
      kernels: { runningChanged: mockSignal() }
    },
    shell: { add: jest.fn(), activateById: jest.fn(), currentWidget: null },
    contextMenu: { addItem: jest.fn() },
    commands: {
      addCommand: jest.fn(),
      execute: jest.fn(),
      notifyCommandChanged: jest.fn()
    }
  };
}

type App = ReturnType<typeof makeApp>;

/**
 * Serve `body` with `status` for the status endpoint, and valid documents
 * for the model's other reads (a fresh response each time).
 */
function serve(body: string, status = 200): void {
  jest
    .spyOn(ServerConnection, 'makeRequest')
    .mockImplementation(async (url: string) => {
      if (url.endsWith('/gpu-containers/status')) {
        return new Response(body, { status, statusText: 'Reason' });
      }
      if (url.endsWith('/gpu-containers/gpus')) {
        return new Response(JSON.stringify(makeReport([makeGpu('0')])));
      }
      return new Response(JSON.stringify({ images: [], host: { gpus: 1 } }), {
        status: 200
      });
    });
}

/**
 * Activate the plugins in order, as JupyterLab does: each gets the services
 * its `requires` and `optional` name (the optional ones absent by default),
 * and what a plugin provides is a service for those after it.
 */
function start(
  app: App,
  optional: {
    palette?: unknown;
    browser?: unknown;
    launcher?: unknown;
    restorer?: unknown;
    notebooks?: unknown;
    settingRegistry?: unknown;
    toolbarRegistry?: unknown;
    translator?: unknown;
    statusBar?: unknown;
  } = {}
): void {
  const services = new Map<Token<unknown>, unknown>([
    [ICommandPalette, optional.palette],
    [IDefaultFileBrowser, optional.browser],
    [ILauncher, optional.launcher],
    [ILayoutRestorer, optional.restorer],
    [INotebookTracker, optional.notebooks],
    [ISettingRegistry, optional.settingRegistry],
    [IToolbarWidgetRegistry, optional.toolbarRegistry],
    [ITranslator, optional.translator],
    [IStatusBar, optional.statusBar]
  ]);
  for (const plugin of plugins) {
    const required = (plugin.requires ?? []).map(token => {
      if (!services.has(token)) {
        throw new Error(`${plugin.id} requires ${token.name}, not provided`);
      }
      return services.get(token);
    });
    const optionals = (plugin.optional ?? []).map(
      token => services.get(token) ?? null
    );
    const provided = plugin.activate(
      app as unknown as JupyterFrontEnd,
      ...required,
      ...optionals
    );
    if (plugin.provides) {
      services.set(plugin.provides, provided);
    }
  }
}

/**
 * Activate the plugin against a server whose status endpoint answers `body`
 * with `status`, and wait until it has reported.
 */
async function activate(body: string, status = 200): Promise<App> {
  serve(body, status);
  const log = jest.spyOn(console, 'log').mockImplementation(() => undefined);
  const app = makeApp();
  start(app);
  for (let i = 0; i < 100; i++) {
    const calls =
      log.mock.calls.length +
      jest.mocked(Notification.warning).mock.calls.length +
      jest.mocked(Notification.error).mock.calls.length;
    if (calls > 0) {
      return app;
    }
    await jest.advanceTimersByTimeAsync(5);
  }
  throw new Error('the plugin did not report');
}

/**
 * Wait for pending promises (and the model's first reads) to settle.
 */
async function settle(): Promise<void> {
  await jest.advanceTimersByTimeAsync(20);
}

/**
 * The options a command was registered with.
 */
function command(app: App, id: string): Record<string, any> {
  const call = app.commands.addCommand.mock.calls.find(([name]) => name === id);
  expect(call).toBeDefined();
  return call![1];
}

// Fake timers: a disposed lumino Poll leaves its next timeout pending.
beforeEach(() => {
  jest.useFakeTimers();
});

afterEach(() => {
  for (const panel of mockPanels.splice(0)) {
    panel.model.dispose();
  }
  jest.clearAllTimers();
  jest.useRealTimers();
  jest.restoreAllMocks();
  jest.clearAllMocks();
});

describe('jupyter-gpu-containers:plugin', () => {
  it('is the auto-started plugin with the expected id', () => {
    // The settings' key (schema/plugin.json): the model's plugin keeps it.
    expect(modelPlugin.id).toBe('jupyter-gpu-containers:plugin');
    expect(PLUGIN_ID).toBe(modelPlugin.id);
    expect(modelPlugin.requires ?? []).toEqual([]);
    for (const plugin of plugins) {
      expect(plugin.autoStart).toBe(true);
    }
  });

  it('is one plugin each for the model, the panel, the toolbar item, the kernel view, builds and the notifications', () => {
    expect(plugins).toEqual([
      modelPlugin,
      panelPlugin,
      toolbarPlugin,
      kernelViewPlugin,
      buildPlugin,
      notificationsPlugin
    ]);
    expect(plugins.map(p => p.id)).toEqual([
      'jupyter-gpu-containers:plugin',
      'jupyter-gpu-containers:panel',
      'jupyter-gpu-containers:toolbar',
      'jupyter-gpu-containers:kernel-view',
      'jupyter-gpu-containers:build',
      'jupyter-gpu-containers:notifications'
    ]);
  });

  it('offers "Build Image…" on a Dockerfile or a requirements.txt, in the file browser’s menu', () => {
    const app = makeApp();
    void buildPlugin.activate(
      app as unknown as JupyterFrontEnd,
      null,
      null,
      null
    );
    const [id, command] = app.commands.addCommand.mock.calls.find(
      ([name]: [string]) => name === CommandIDs.buildImage
    );
    expect(id).toBe('gpu-containers:build-image');
    expect(command.label).toBe('Build Image…');
    expect(command.isVisible({ path: 'envs/nlp/Dockerfile' })).toBe(true);
    expect(command.isVisible({ path: 'reqs/requirements.txt' })).toBe(true);
    expect(command.isVisible({ path: 'notes.txt' })).toBe(false);
    // Nothing selected and no path: nothing to build.
    expect(command.isVisible({})).toBe(false);
    expect(app.contextMenu.addItem).toHaveBeenCalledWith({
      command: CommandIDs.buildImage,
      selector: '.jp-DirListing-item[data-isdir="false"]',
      rank: 12
    });
    // Without the build plugin's own services, it still needs none.
    expect(buildPlugin.requires ?? []).toEqual([]);
  });

  it('shares the model through its token: provided by the model plugin, required by its users', () => {
    expect(IGpuContainersModel).toBeInstanceOf(Token);
    expect(IGpuContainersModel.name).toBe(
      'jupyter-gpu-containers:IGpuContainersModel'
    );
    expect(modelPlugin.provides).toBe(IGpuContainersModel);
    for (const plugin of [panelPlugin, toolbarPlugin, notificationsPlugin]) {
      expect(plugin.requires).toEqual([IGpuContainersModel]);
    }
    // The kernel view reads the server itself.
    expect(kernelViewPlugin.requires ?? []).toEqual([]);
    for (const plugin of plugins.filter(p => p !== modelPlugin)) {
      expect(plugin.provides).toBeUndefined();
    }
  });

  it('gives every plugin the one model', async () => {
    serve(JSON.stringify({ engine, kernelspecs: 1 }));
    jest.spyOn(console, 'log').mockImplementation(() => undefined);
    const app = makeApp();
    const provide = jest.spyOn(modelPlugin, 'activate');
    const toolbarRegistry = { addFactory: jest.fn() };
    start(app, { toolbarRegistry });
    expect(provide).toHaveBeenCalledTimes(1);
    const model = provide.mock.results[0].value;
    expect(model).toBeInstanceOf(GpuContainersModel);
    expect(mockPanels[0].model).toBe(model);
    toolbarRegistry.addFactory.mock.calls[0][2]({ id: 'nb' });
    expect(jest.mocked(KernelImageItem).mock.calls[0][1]).toBe(model);
  });

  it('takes every JupyterLab service as optional, in the order activate expects', () => {
    const optional = new Set(plugins.flatMap(p => p.optional ?? []));
    expect(optional).toEqual(
      new Set([
        ICommandPalette,
        IDefaultFileBrowser,
        ILauncher,
        ILayoutRestorer,
        INotebookTracker,
        ISettingRegistry,
        IToolbarWidgetRegistry,
        ITranslator,
        IStatusBar
      ])
    );
    for (const plugin of plugins as JupyterFrontEndPlugin<unknown>[]) {
      // The app, then one argument per required and optional service.
      expect(plugin.activate.length).toBe(
        1 + (plugin.requires ?? []).length + (plugin.optional ?? []).length
      );
      // Each names the translator: its words are translated.
      expect(plugin.optional).toContain(ITranslator);
    }
  });

  describe('a notebook whose kernel waits for a GPU', () => {
    it('has a status bar item, and a cell run meanwhile is said to wait, once per wait', async () => {
      serve(JSON.stringify({ engine, kernelspecs: 1 }));
      const app = makeApp();
      const registerStatusItem = jest.fn();
      const content = { id: 'notebook-content' };
      const panel = {
        content,
        isDisposed: false,
        context: { localPath: 'course/train.ipynb' },
        sessionContext: { session: { kernel: { id: 'k-1' } } }
      };
      const notebooks = {
        currentChanged: mockSignal(),
        widgetAdded: mockSignal(),
        currentWidget: panel,
        find: (test: (p: unknown) => boolean) =>
          test(panel) ? panel : undefined
      };
      start(app, { notebooks, statusBar: { registerStatusItem } });
      await settle();
      expect(registerStatusItem).toHaveBeenCalledWith(
        'jupyter-gpu-containers:plugin:waiting',
        expect.objectContaining({ align: 'left' })
      );
      const model = mockPanels[0].model as any;
      const ticket = {
        kernel_id: 'k-1',
        yours: true,
        user: null,
        notebook: 'course/train.ipynb',
        gpus: 1,
        position: 2,
        waited: 3,
        deadline: '2026-11-24T14:00:00Z'
      };
      const scheduled = NotebookActions.executionScheduled as unknown as {
        emit: (args: unknown) => void;
      };
      // Not waiting: nothing said.
      scheduled.emit({ notebook: content, cell: {} });
      expect(Notification.info).not.toHaveBeenCalled();
      jest
        .spyOn(model, 'queue', 'get')
        .mockReturnValue({ queue: [ticket], length: 2 });
      scheduled.emit({ notebook: content, cell: {} });
      scheduled.emit({ notebook: content, cell: {} });
      expect(Notification.info).toHaveBeenCalledTimes(1);
      expect(jest.mocked(Notification.info).mock.calls[0][0]).toBe(
        'The kernel of train.ipynb is waiting for a GPU (position 2): the cell runs once it starts, in a new kernel.'
      );
    });
  });

  describe('a waiting start that got its GPUs', () => {
    it('attaches the notebooks on its kernel once the server runs it, and only those', async () => {
      serve(JSON.stringify({ engine, kernelspecs: 1 }));
      const served = jest.mocked(ServerConnection.makeRequest);
      const others = served.getMockImplementation()!;
      // The kernel's container starts after its job: the first look finds no kernel.
      let looks = 0;
      served.mockImplementation(async (url: string, init, settings) => {
        if (url.includes('/api/kernels/k-1')) {
          looks += 1;
          return looks === 1
            ? new Response('{}', { status: 404 })
            : new Response(JSON.stringify({ id: 'k-1', name: 'python3' }));
        }
        return others(url, init, settings);
      });
      // JupyterLab gave up the connections it tried while the kernel did not exist.
      const kernelOf = (id: string) => ({
        id,
        isDisposed: false,
        connectionStatus: 'disconnected',
        connectionStatusChanged: mockSignal(),
        reconnect: jest.fn(async function (this: any) {
          this.connectionStatus = 'connected';
        })
      });
      const mine = kernelOf('k-1');
      const other = kernelOf('k-2');
      const panels = [mine, other].map(kernel => ({
        sessionContext: { session: { kernel } }
      }));
      const notebooks = {
        currentChanged: mockSignal(),
        widgetAdded: mockSignal(),
        currentWidget: null,
        find: () => undefined,
        forEach: (each: (panel: unknown) => void) => panels.forEach(each)
      };
      start(makeApp(), { notebooks });
      await settle();
      const model = mockPanels[0].model;
      const ticket = {
        kernel_id: 'k-1',
        yours: true,
        user: null,
        notebook: 'train.ipynb',
        gpus: 1,
        position: 1,
        waited: 3,
        deadline: null
      };
      const ended = model.queueEnded as unknown as Signal<unknown, unknown>;
      // A cancelled start has no kernel to attach to.
      ended.emit({
        ticket: { ...ticket, kernel_id: 'k-2' },
        outcome: 'cancelled'
      });
      ended.emit({ ticket, outcome: 'started' });
      await settle();
      expect(looks).toBe(1);
      expect(mine.reconnect).not.toHaveBeenCalled();
      await jest.advanceTimersByTimeAsync(1000);
      expect(looks).toBe(2);
      expect(mine.reconnect).toHaveBeenCalledTimes(1);
      expect(mine.connectionStatus).toBe('connected');
      expect(other.reconnect).not.toHaveBeenCalled();
    });
  });

  describe('status report', () => {
    it('logs one line when the engine is reachable', async () => {
      const status: IStatus = { engine, kernelspecs: 2 };
      await activate(JSON.stringify(status));
      await settle();
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
      await settle();
      expect(Notification.warning).toHaveBeenCalledTimes(1);
      expect(Notification.warning).toHaveBeenCalledWith(
        'Docker is not running.',
        { autoClose: false }
      );
      expect(Notification.error).not.toHaveBeenCalled();
    });

    it("shows the server's sentence when the request fails", async () => {
      await activate('{"message": "Engine lookup failed."}', 500);
      await settle();
      expect(Notification.error).toHaveBeenCalledTimes(1);
      expect(jest.mocked(Notification.error).mock.calls[0][0]).toBe(
        'GPU containers: Engine lookup failed.'
      );
      expect(Notification.warning).not.toHaveBeenCalled();
    });
  });

  describe('activation', () => {
    const reachable = JSON.stringify({ engine, kernelspecs: 1 });

    it("has the panel read the user's kernels again when the page's change", async () => {
      // Else "Your kernels" said none for seconds after a notebook started.
      const app = await activate(reachable);
      const [panel] = mockPanels;
      expect(panel.readKernelsAgain).not.toHaveBeenCalled();
      app.serviceManager.sessions.runningChanged.emit();
      app.serviceManager.kernels.runningChanged.emit();
      expect(panel.readKernelsAgain).toHaveBeenCalledTimes(2);
    });

    it('builds one panel on a model of the server, in the left area', async () => {
      const app = await activate(reachable);
      expect(mockPanels).toHaveLength(1);
      const [panel] = mockPanels;
      expect(panel.model).toBeInstanceOf(GpuContainersModel);
      expect(panel.model.serverSettings).toBe(settings);
      expect(app.shell.add).toHaveBeenCalledTimes(1);
      expect(app.shell.add.mock.calls[0][0]).toBe(panel);
      expect(app.shell.add.mock.calls[0][1]).toBe('left');
      // The Launcher's card labels wrap at the image reference's break points.
      expect(tendLauncherCards).toHaveBeenCalledWith(app);
    });

    it('works without any optional service', async () => {
      const app = await activate(reachable);
      const ids = app.commands.addCommand.mock.calls.map(([id]) => id);
      expect(ids).toEqual(
        expect.arrayContaining([
          CommandIDs.openPanel,
          CommandIDs.switchImage,
          CommandIDs.refreshImages
        ])
      );
    });

    it('adds the commands to the palette and a card to the launcher, and restores the panel', () => {
      serve(reachable);
      jest.spyOn(console, 'log').mockImplementation(() => undefined);
      const app = makeApp();
      const palette = { addItem: jest.fn() };
      const launcher = { add: jest.fn() };
      const restorer = { add: jest.fn() };
      start(app, { palette, launcher, restorer });
      const [panel] = mockPanels;
      expect(restorer.add).toHaveBeenCalledWith(panel, expect.any(String));
      expect(palette.addItem.mock.calls.map(([item]) => item.command)).toEqual(
        expect.arrayContaining(Object.values(CommandIDs))
      );
      expect(launcher.add).toHaveBeenCalledWith(
        expect.objectContaining({ command: CommandIDs.openPanel })
      );
    });

    it('opens the panel, and says in its label when there is no engine', async () => {
      const app = await activate(reachable);
      const open = command(app, CommandIDs.openPanel);
      open.execute();
      expect(app.shell.activateById).toHaveBeenCalledWith('jgc-panel');
      const model = mockPanels[0].model;
      await model.refreshGpus();
      expect(open.label()).toBe('GPU Containers');
      serve(
        JSON.stringify({
          engine: { ...engine, ok: false, message: 'Docker is down.' },
          kernelspecs: 0
        })
      );
      await model.refreshGpus();
      expect(open.label()).toBe('GPU Containers (no Docker engine)');
      expect(app.commands.notifyCommandChanged).toHaveBeenCalledWith(
        CommandIDs.openPanel
      );
    });

    it('adds the card again when the engine comes or goes, so open Launchers redraw it', async () => {
      serve(reachable);
      jest.spyOn(console, 'log').mockImplementation(() => undefined);
      const cards: { dispose: jest.Mock }[] = [];
      const launcher = {
        add: jest.fn(() => {
          const card = { dispose: jest.fn() };
          cards.push(card);
          return card;
        })
      };
      const app = makeApp();
      start(app, { launcher });
      const model = mockPanels[0].model;
      await model.refreshGpus();
      // The first status is news: the card drawn before it is replaced.
      expect(cards).toHaveLength(2);
      expect(cards[0].dispose).toHaveBeenCalledTimes(1);
      // The same engine state again: nothing to redraw.
      await model.refreshGpus();
      expect(cards).toHaveLength(2);
      serve(
        JSON.stringify({
          engine: { ...engine, ok: false, message: 'Docker is down.' },
          kernelspecs: 0
        })
      );
      await model.refreshGpus();
      expect(cards).toHaveLength(3);
      expect(cards[1].dispose).toHaveBeenCalledTimes(1);
      expect(cards[2].dispose).not.toHaveBeenCalled();
      expect(launcher.add).toHaveBeenLastCalledWith(
        expect.objectContaining({ command: CommandIDs.openPanel })
      );
    });

    it('names its commands, palette category and card through the translator', async () => {
      serve(reachable);
      jest.spyOn(console, 'log').mockImplementation(() => undefined);
      const translator = pseudoTranslator();
      const palette = { addItem: jest.fn() };
      const launcher = { add: jest.fn() };
      const app = makeApp();
      start(app, { palette, launcher, translator });
      const t = (text: string) => `⟦jupyter_gpu_containers:${text}⟧`;
      const open = command(app, CommandIDs.openPanel);
      expect(open.label()).toBe(t('GPU Containers'));
      expect(open.caption).toBe(
        t('Show the GPUs, who holds them, and the container images')
      );
      expect(command(app, CommandIDs.switchImage).label).toBe(
        t('Switch Notebook Image and GPUs…')
      );
      expect(command(app, CommandIDs.refreshImages).label).toBe(
        t('Refresh GPU Container Images')
      );
      expect(palette.addItem).toHaveBeenCalledWith(
        expect.objectContaining({ category: t('GPU Containers') })
      );
      // JupyterLab names the Launcher's "Other" section in its own domain.
      expect(launcher.add).toHaveBeenCalledWith(
        expect.objectContaining({ category: '⟦jupyterlab:Other⟧' })
      );
      expect(translator.load).toHaveBeenCalledWith('jupyter_gpu_containers');
      await settle();
    });

    it('names its commands in English without a translator', async () => {
      const app = await activate(reachable);
      expect(command(app, CommandIDs.switchImage).label).toBe(
        'Switch Notebook Image and GPUs…'
      );
      expect(command(app, CommandIDs.switchImage).caption).toBe(
        "Restart this notebook's kernel on another image or GPU count"
      );
      expect(command(app, CommandIDs.refreshImages).caption).toBe(
        'Read the image catalog and the GPUs again'
      );
    });

    it('refreshes the model from the refresh command', async () => {
      const app = await activate(reachable);
      const refresh = jest
        .spyOn(GpuContainersModel.prototype, 'refresh')
        .mockResolvedValue();
      await command(app, CommandIDs.refreshImages).execute();
      expect(refresh).toHaveBeenCalledTimes(1);
    });

    it("enables the switch command only for the shell's current notebook", async () => {
      serve(reachable);
      jest.spyOn(console, 'log').mockImplementation(() => undefined);
      const app = makeApp();
      const notebook = { id: 'nb' };
      const notebooks = { currentWidget: notebook, widgetAdded: mockSignal() };
      start(app, { notebooks });
      const switchImage = command(app, CommandIDs.switchImage);
      expect(switchImage.isEnabled()).toBe(false);
      (app.shell as { currentWidget: unknown }).currentWidget = notebook;
      expect(switchImage.isEnabled()).toBe(true);
    });

    it('gives the notebook toolbar registry a factory of the image item', () => {
      serve(reachable);
      jest.spyOn(console, 'log').mockImplementation(() => undefined);
      const app = makeApp();
      const toolbarRegistry = { addFactory: jest.fn() };
      start(app, { toolbarRegistry });
      expect(toolbarRegistry.addFactory).toHaveBeenCalledTimes(1);
      const [widgetFactory, name, factory] =
        toolbarRegistry.addFactory.mock.calls[0];
      expect(widgetFactory).toBe('Notebook');
      expect(name).toBe(TOOLBAR_ITEM);
      const notebook = { id: 'nb' };
      const item = factory(notebook);
      expect(KernelImageItem).toHaveBeenCalledWith(
        app,
        mockPanels[0].model,
        notebook,
        expect.objectContaining({ __: expect.any(Function) })
      );
      expect(item).toBe(jest.mocked(KernelImageItem).mock.instances[0]);
    });

    it('places the image item right of the spacer, before the kernel name, in the settings schema', () => {
      const schema = JSON.parse(
        fs.readFileSync(
          path.resolve(__dirname, '..', '..', '..', 'schema', 'plugin.json'),
          'utf8'
        )
      );
      // JupyterLab's own Notebook toolbar has its spacer at rank 100 and the
      // kernel name at 1000. Its overflow menu ("⋯") takes the last items
      // first: before the kernel name, the item stays in a split pane.
      expect(schema['jupyter.lab.toolbars']).toEqual({
        Notebook: [{ name: TOOLBAR_ITEM, rank: 101 }]
      });
    });

    it('applies the refresh intervals from the settings, and their changes', async () => {
      serve(reachable);
      jest.spyOn(console, 'log').mockImplementation(() => undefined);
      const setIntervals = jest.spyOn(
        GpuContainersModel.prototype,
        'setIntervals'
      );
      const values: Record<string, number> = {
        gpuRefreshInterval: 10,
        imageRefreshInterval: 120
      };
      const listeners: Array<() => void> = [];
      const loaded = {
        get: (key: string) => ({ composite: values[key] }),
        changed: { connect: (listener: () => void) => listeners.push(listener) }
      };
      const settingRegistry = { load: jest.fn().mockResolvedValue(loaded) };
      start(makeApp(), { settingRegistry });
      await settle();
      expect(settingRegistry.load).toHaveBeenCalledWith(PLUGIN_ID);
      expect(setIntervals).toHaveBeenCalledWith(10, 120);
      values.gpuRefreshInterval = 2;
      for (const listener of listeners) {
        listener();
      }
      expect(setIntervals).toHaveBeenLastCalledWith(2, 120);
    });

    it('warns when the settings cannot be loaded', async () => {
      serve(reachable);
      jest.spyOn(console, 'log').mockImplementation(() => undefined);
      const warn = jest
        .spyOn(console, 'warn')
        .mockImplementation(() => undefined);
      const settingRegistry = {
        load: jest.fn().mockRejectedValue(new Error('No schema.'))
      };
      start(makeApp(), { settingRegistry });
      await settle();
      expect(warn).toHaveBeenCalledWith(expect.stringContaining('No schema.'));
    });
  });

  describe('panel actions', () => {
    const reachable = JSON.stringify({ engine, kernelspecs: 1 });
    const row = makeRow();
    const done = makePull({ state: 'done', phase: 'complete' });
    const refused: IPull = makePull({
      state: 'error',
      error_status: 403,
      message: 'unauthorized: authentication required'
    });

    async function actions(): Promise<IPanelActions> {
      await activate(reachable);
      return mockPanels[0].actions;
    }

    it('pulls an image and says when it is pulled', async () => {
      const pull = jest
        .spyOn(GpuContainersModel.prototype, 'pull')
        .mockResolvedValue(done);
      await (await actions()).pull(row);
      expect(pull).toHaveBeenCalledWith(row.reference);
      expect(Notification.success).toHaveBeenCalledTimes(1);
      expect(jest.mocked(Notification.success).mock.calls[0][0]).toContain(
        row.reference
      );
    });

    it("shows the pull's error", async () => {
      jest
        .spyOn(GpuContainersModel.prototype, 'pull')
        .mockResolvedValue(
          makePull({ state: 'error', message: 'manifest unknown' })
        );
      await (await actions()).pull(row);
      expect(Notification.error).toHaveBeenCalledTimes(1);
      expect(jest.mocked(Notification.error).mock.calls[0][0]).toContain(
        'manifest unknown'
      );
      expect(askRegistryLogin).not.toHaveBeenCalled();
    });

    it('asks for a login when the registry refuses, and pulls again with it', async () => {
      const pull = jest
        .spyOn(GpuContainersModel.prototype, 'pull')
        .mockResolvedValueOnce(refused)
        .mockResolvedValueOnce(done);
      const login = { username: '$oauthtoken', password: 'key' };
      jest.mocked(askRegistryLogin).mockResolvedValue(login);
      await (await actions()).pull(row);
      expect(askRegistryLogin).toHaveBeenCalledWith(
        'nvcr.io',
        'unauthorized: authentication required',
        expect.objectContaining({ __: expect.any(Function) })
      );
      expect(pull).toHaveBeenLastCalledWith(row.reference, login);
      expect(Notification.success).toHaveBeenCalledTimes(1);
    });

    it('stops quietly when the login is not given', async () => {
      jest
        .spyOn(GpuContainersModel.prototype, 'pull')
        .mockResolvedValue(refused);
      jest.mocked(askRegistryLogin).mockResolvedValue(null);
      await (await actions()).pull(row);
      expect(GpuContainersModel.prototype.pull).toHaveBeenCalledTimes(1);
      expect(Notification.error).not.toHaveBeenCalled();
      expect(Notification.success).not.toHaveBeenCalled();
    });

    it("shows the server's sentence when a pull cannot start or be cancelled", async () => {
      jest
        .spyOn(GpuContainersModel.prototype, 'pull')
        .mockRejectedValue(new Error('Pulls are disabled.'));
      jest
        .spyOn(GpuContainersModel.prototype, 'cancel')
        .mockRejectedValue(new Error('No pull pull-1.'));
      const panel = await actions();
      await panel.pull(row);
      await panel.cancel(row);
      expect(
        jest.mocked(Notification.error).mock.calls.map(([text]) => text)
      ).toEqual([
        `Pull of ${row.reference} failed: Pulls are disabled.`,
        'No pull pull-1.'
      ]);
    });
  });
});
