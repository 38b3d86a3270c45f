import { JupyterFrontEnd } from '@jupyterlab/application';
import { Notification, showErrorMessage } from '@jupyterlab/apputils';
import { NotebookPanel } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';

import { startNotebookKernel } from '../api';
import { translationBundle } from '../i18n';
import { confirmDialog, showFormDialog } from '../dialogs';
import { GpuContainersModel } from '../model';
import { ImagePicker, IPickerValue } from '../picker';
import {
  applyKernelChoice,
  askedGpus,
  imageOfSpec,
  launchNotebook,
  notebookGpuRequest,
  switchDiscardsState,
  switchNotebook
} from '../switching';
import { GpuRequest } from '../kerneltypes';
import {
  makeCatalog,
  makeGpu,
  makeHolder,
  makeReport,
  makeRow,
  slurmClusterView
} from './fixtures';
import { pseudoBundle } from './pseudo';

// The JupyterLab UI packages need a DOM, which the node test environment does
// not have: the workflow only needs their dialogs and notifications.
// Dialog: the dialogs JupyterLab puts up (its tracker's signal), and its own translation.
const dialogAdded = new Set<(sender: unknown, dialog: unknown) => void>();
jest.mock('@jupyterlab/apputils', () => ({
  Dialog: {
    tracker: {
      widgetAdded: {
        connect: (slot: (sender: unknown, dialog: unknown) => void) =>
          dialogAdded.add(slot),
        disconnect: (slot: (sender: unknown, dialog: unknown) => void) =>
          dialogAdded.delete(slot)
      }
    },
    translator: {
      load: () => ({
        __: (text: string, ...args: string[]) =>
          args.reduce((t, arg, i) => t.replace(`%${i + 1}`, arg), text)
      })
    }
  },
  Notification: {
    emit: jest.fn(() => 'note-1'),
    update: jest.fn(),
    dismiss: jest.fn()
  },
  showErrorMessage: jest.fn()
}));
jest.mock('../dialogs', () => ({
  confirmDialog: jest.fn(),
  showFormDialog: jest.fn()
}));
jest.mock('../picker', () => ({ ImagePicker: jest.fn() }));
jest.mock('../api', () => ({
  ...jest.requireActual('../api'),
  startNotebookKernel: jest.fn()
}));

const trans = translationBundle();

const settings = ServerConnection.makeSettings({
  baseUrl: 'http://localhost:8888/'
});

const torch = makeRow();
const debian = makeRow({
  reference: 'jgc/debian-ipykernel:bookworm',
  kernel_name: 'gpuc-debian'
});

const specs: Record<string, unknown> = {
  [torch.kernel_name]: {
    name: torch.kernel_name,
    display_name: 'PyTorch 24.05',
    language: 'python',
    metadata: { gpu_containers: { image: torch.reference } }
  },
  'gpuc-debian': {
    name: 'gpuc-debian',
    display_name: 'Debian',
    language: 'python',
    metadata: { gpu_containers: { image: debian.reference } }
  },
  python3: { name: 'python3', display_name: 'Python 3', language: 'python' }
};

function makeApp() {
  return {
    serviceManager: {
      kernelspecs: { specs: { kernelspecs: specs } },
      sessions: {
        refreshRunning: jest.fn().mockResolvedValue(undefined),
        running: jest.fn((): unknown[] => [])
      },
      contents: {
        newUntitled: jest
          .fn()
          .mockResolvedValue({ path: 'work/Untitled.ipynb' }),
        save: jest.fn().mockResolvedValue(undefined),
        delete: jest.fn().mockResolvedValue(undefined)
      }
    },
    commands: { execute: jest.fn().mockResolvedValue(undefined) },
    shell: { activateById: jest.fn() }
  };
}

const mine = makeHolder({ mine: true, kernel_id: 'k-1' });

function makeModel(overrides: Record<string, unknown> = {}) {
  return {
    serverSettings: settings,
    catalog: makeCatalog([torch, debian]),
    catalogError: '',
    gpus: makeReport([makeGpu('0', [mine]), makeGpu('1')]),
    refreshImages: jest.fn().mockResolvedValue(undefined),
    refreshGpus: jest.fn().mockResolvedValue(undefined),
    cancelledSince: jest.fn().mockReturnValue(false),
    queue: null as unknown,
    changed: makeSignal(),
    ...overrides
  };
}

/**
 * A signal as the workflow uses it: connect, disconnect, and emit (for tests).
 */
function makeSignal() {
  const slots = new Set<() => void>();
  return {
    connect: (slot: () => void) => slots.add(slot),
    disconnect: (slot: () => void) => slots.delete(slot),
    emit: () => [...slots].forEach(slot => slot()),
    get size() {
      return slots.size;
    }
  };
}

function makePanel(
  kernel: { id: string; name: string } | null,
  status = 'idle'
) {
  return {
    sessionContext: {
      session: kernel ? { kernel } : null,
      kernelDisplayStatus: status,
      kernelChanged: makeSignal(),
      changeKernel: jest.fn().mockResolvedValue(undefined)
    },
    context: {
      path: 'RTC:work/train.ipynb',
      localPath: 'work/train.ipynb',
      save: jest.fn().mockResolvedValue(undefined)
    },
    model: { setMetadata: jest.fn(), deleteMetadata: jest.fn(), dirty: false }
  };
}

type App = ReturnType<typeof makeApp>;
type Model = ReturnType<typeof makeModel>;
type Panel = ReturnType<typeof makePanel>;

const asApp = (app: App) => app as unknown as JupyterFrontEnd;
const asModel = (model: Model) => model as unknown as GpuContainersModel;
const asPanel = (panel: Panel) => panel as unknown as NotebookPanel;

/**
 * Have the picker give `value` (or be cancelled with `null`).
 */
function pick(value: IPickerValue | null): void {
  jest.mocked(showFormDialog).mockResolvedValueOnce(value);
}

function reply(kernelId: string) {
  return {
    session: {
      id: 's-1',
      path: 'work/train.ipynb',
      name: 'train.ipynb',
      type: 'notebook',
      kernel: { id: kernelId, name: torch.kernel_name }
    },
    gpus: 1
  };
}

afterEach(() => {
  jest.clearAllMocks();
  jest.useRealTimers();
});

describe('imageOfSpec', () => {
  it('reads the image of a container kernel spec, or nothing', () => {
    expect(imageOfSpec(specs[torch.kernel_name] as any)).toBe(torch.reference);
    expect(imageOfSpec(specs.python3 as any)).toBe('');
    expect(imageOfSpec(undefined)).toBe('');
  });
});

describe('launchNotebook', () => {
  it('creates the notebook on the kernel spec, starts its kernel, then opens it', async () => {
    const app = makeApp();
    const model = makeModel();
    jest.mocked(startNotebookKernel).mockResolvedValue(reply('k-2'));
    await launchNotebook(asApp(app), asModel(model), torch, 1, 'work', trans);
    const { contents } = app.serviceManager;
    expect(contents.newUntitled).toHaveBeenCalledWith({
      path: 'work',
      type: 'notebook'
    });
    expect(contents.save).toHaveBeenCalledWith('work/Untitled.ipynb', {
      type: 'notebook',
      format: 'json',
      content: {
        // One empty cell, as JupyterLab would add (it then opens unmodified).
        cells: [
          {
            cell_type: 'code',
            id: expect.stringMatching(/^[0-9a-f]{32}$/),
            metadata: {},
            source: '',
            outputs: [],
            execution_count: null
          }
        ],
        metadata: {
          kernelspec: {
            name: torch.kernel_name,
            display_name: 'PyTorch 24.05',
            language: 'python'
          },
          // The request travels with the notebook.
          gpu_containers: { gpus: 1 }
        },
        nbformat: 4,
        nbformat_minor: 5
      }
    });
    expect(startNotebookKernel).toHaveBeenCalledWith(
      'work/Untitled.ipynb',
      torch.kernel_name,
      1,
      settings,
      true,
      trans,
      undefined
    );
    expect(app.serviceManager.sessions.refreshRunning).toHaveBeenCalled();
    expect(app.commands.execute).toHaveBeenCalledWith('docmanager:open', {
      path: 'work/Untitled.ipynb',
      factory: 'Notebook',
      kernel: { name: torch.kernel_name }
    });
    expect(model.refreshGpus).toHaveBeenCalled();
    expect(showErrorMessage).not.toHaveBeenCalled();
  });

  it("removes the notebook and shows the server's sentence when the kernel is refused", async () => {
    const app = makeApp();
    jest
      .mocked(startNotebookKernel)
      .mockRejectedValue(new Error('No free GPU: every GPU is taken.'));
    await launchNotebook(
      asApp(app),
      asModel(makeModel()),
      torch,
      2,
      'work',
      trans
    );
    expect(app.serviceManager.contents.delete).toHaveBeenCalledWith(
      'work/Untitled.ipynb'
    );
    expect(showErrorMessage).toHaveBeenCalledWith(
      'Could not start a kernel on pytorch:24.05-py3',
      'No free GPU: every GPU is taken.'
    );
    expect(app.commands.execute).not.toHaveBeenCalled();
  });

  it('says nothing more of a start its user cancelled while it waited in a cluster queue', async () => {
    const app = makeApp();
    const model = {
      ...makeModel(),
      cancelledSince: jest.fn().mockReturnValue(true)
    };
    jest
      .mocked(startNotebookKernel)
      .mockRejectedValue(
        new Error(
          "The start was cancelled while its job waited in Slurm's queue (cancelled by its user)."
        )
      );
    await launchNotebook(asApp(app), asModel(model), torch, 1, 'work', trans);
    // The notebook goes; the queue's own notification said it was cancelled.
    expect(app.serviceManager.contents.delete).toHaveBeenCalledWith(
      'work/Untitled.ipynb'
    );
    expect(model.cancelledSince).toHaveBeenCalledWith(
      'work/Untitled.ipynb',
      expect.any(Number)
    );
    expect(showErrorMessage).not.toHaveBeenCalled();
    expect(app.commands.execute).not.toHaveBeenCalled();
  });
});

describe('launchNotebook, when the network changes as the kernel starts', () => {
  /** JupyterLab puts up a dialog titled `title`. */
  function showDialog(title: string) {
    const dialog = {
      // As JupyterLab names an error dialog: its title, then the error.
      node: {
        getAttribute: (attribute: string) =>
          attribute === 'aria-label' ? `${title} Failed to fetch` : null
      },
      reject: jest.fn()
    };
    [...dialogAdded].forEach(slot => slot(null, dialog));
    return dialog;
  }

  /** A notebook's widget whose read succeeds, or fails with JupyterLab's dialog. */
  function notebookWidget(read: 'succeeds' | 'fails') {
    const widget = {
      context: {
        get model() {
          return widget.model;
        },
        // JupyterLab's context never settles `ready` when its read fails.
        ready:
          read === 'succeeds' ? Promise.resolve() : new Promise(() => undefined)
      },
      id: `notebook-${read}`,
      isDisposed: false,
      disposed: { connect: jest.fn() },
      dispose: jest.fn(),
      // JupyterLab's notebook model before any read: its first cell marks it modified.
      model: { dirty: true },
      dialogs: [] as ReturnType<typeof showDialog>[],
      /** What docmanager:open does: the widget, and its read (with its dialogs). */
      open() {
        if (read === 'fails') {
          // Another dialog of the user's, then the one about the read.
          setTimeout(() => {
            widget.dialogs.push(showDialog('Save your work'));
            widget.dialogs.push(
              showDialog('File Load Error for Untitled.ipynb')
            );
          }, 0);
        }
        return Promise.resolve(widget);
      }
    };
    return widget;
  }

  /** A notebook on 1 GPU from the panel, whose kernel the server starts. */
  function launchOneGpuNotebook(app: App): Promise<void> {
    jest.mocked(startNotebookKernel).mockResolvedValue(reply('k-2'));
    return launchNotebook(
      asApp(app),
      asModel(makeModel()),
      torch,
      1,
      'work',
      trans
    );
  }

  afterEach(() => {
    dialogAdded.clear();
  });

  it('reads the notebook again when its first read failed and the file reads now, closing the error dialog', async () => {
    const app = makeApp();
    const contents = app.serviceManager.contents as Record<string, jest.Mock>;
    contents.get = jest.fn().mockResolvedValue({ path: 'work/Untitled.ipynb' });
    const failed = notebookWidget('fails');
    const opened = notebookWidget('succeeds');
    app.commands.execute
      .mockImplementationOnce(() => failed.open())
      .mockImplementationOnce(() => opened.open());
    await launchOneGpuNotebook(app);
    expect(app.commands.execute).toHaveBeenCalledTimes(2);
    expect(app.commands.execute).toHaveBeenLastCalledWith('docmanager:open', {
      path: 'work/Untitled.ipynb',
      factory: 'Notebook',
      kernel: { name: torch.kernel_name }
    });
    expect(contents.get).toHaveBeenCalledWith('work/Untitled.ipynb', {
      content: false
    });
    // JupyterLab closes the failed tab itself: it asks nothing, as nothing was read into it.
    expect(failed.model.dirty).toBe(false);
    expect(failed.dispose).toHaveBeenCalled();
    expect(opened.model.dirty).toBe(true);
    expect(opened.dispose).not.toHaveBeenCalled();
    // The tab read again is the current one, as the first would have been.
    expect(app.shell.activateById).toHaveBeenCalledWith('notebook-succeeds');
    const [other, loadError] = failed.dialogs;
    expect(loadError.reject).toHaveBeenCalled();
    expect(other.reject).not.toHaveBeenCalled();
    // The kernel the server started is the notebook's: nothing is removed.
    expect(contents.delete).not.toHaveBeenCalled();
    // No dialog is watched for any more.
    expect(dialogAdded.size).toBe(0);
  });

  it('leaves a read that fails again as JupyterLab shows it', async () => {
    const app = makeApp();
    const contents = app.serviceManager.contents as Record<string, jest.Mock>;
    contents.get = jest.fn().mockRejectedValue(new Error('Forbidden'));
    const failed = notebookWidget('fails');
    app.commands.execute.mockImplementationOnce(() => failed.open());
    await launchOneGpuNotebook(app);
    expect(app.commands.execute).toHaveBeenCalledTimes(1);
    expect(failed.dialogs[1].reject).not.toHaveBeenCalled();
    expect(dialogAdded.size).toBe(0);
  });

  it('opens a notebook three times at most', async () => {
    const app = makeApp();
    const contents = app.serviceManager.contents as Record<string, jest.Mock>;
    contents.get = jest.fn().mockResolvedValue({ path: 'work/Untitled.ipynb' });
    const widgets = [1, 2, 3].map(() => notebookWidget('fails'));
    widgets.forEach(widget =>
      app.commands.execute.mockImplementationOnce(() => widget.open())
    );
    await launchOneGpuNotebook(app);
    expect(app.commands.execute).toHaveBeenCalledTimes(3);
    // The last one's error stays up.
    expect(widgets[2].dialogs[1].reject).not.toHaveBeenCalled();
    expect(widgets[1].dialogs[1].reject).toHaveBeenCalled();
  });
});

describe('launchNotebook, waiting for a GPU', () => {
  /**
   * Launch on a server that lists the notebook's session once its start
   * waits, the start answering only when `started` is called; `wait` as the
   * panel gives it.
   */
  async function launchThatWaits(
    model: ReturnType<typeof makeModel>,
    wait: boolean | undefined
  ) {
    const app = makeApp();
    let listed = false;
    const running = jest.fn(() =>
      listed
        ? [{ path: 'work/Untitled.ipynb' }][Symbol.iterator]()
        : [][Symbol.iterator]()
    );
    app.serviceManager.sessions.refreshRunning.mockImplementation(async () => {
      // The server lists the session once the start waits.
      listed = running.mock.calls.length >= 1;
    });
    (app.serviceManager.sessions as any).running = running;
    const reconnect = jest.fn().mockResolvedValue(undefined);
    // JupyterLab gave up on the kernel while it did not exist yet (a page
    // still trying is given its chance first: attach.spec.ts).
    const kernel = {
      connectionStatus: 'disconnected',
      reconnect,
      info: Promise.resolve({}),
      spec: Promise.resolve({})
    };
    const widget = {
      sessionContext: { session: { kernel }, ready: Promise.resolve() },
      context: { ready: Promise.resolve(), save: jest.fn() },
      disposed: { connect: jest.fn() },
      model: null,
      isDisposed: false
    };
    app.commands.execute.mockResolvedValue(widget);
    let started: (value: unknown) => void = () => undefined;
    jest
      .mocked(startNotebookKernel)
      .mockReturnValue(new Promise(resolve => (started = resolve)) as any);
    await launchNotebook(
      asApp(app),
      asModel(model),
      torch,
      1,
      'work',
      trans,
      wait
    );
    // Opened while the start still waits (its request has not answered).
    expect(startNotebookKernel).toHaveBeenCalledWith(
      'work/Untitled.ipynb',
      torch.kernel_name,
      1,
      settings,
      true,
      trans,
      wait
    );
    expect(app.commands.execute).toHaveBeenCalledWith('docmanager:open', {
      path: 'work/Untitled.ipynb',
      factory: 'Notebook',
      kernel: { name: torch.kernel_name }
    });
    expect(reconnect).not.toHaveBeenCalled();
    // The GPU frees: the kernel starts, and the page attaches to it.
    started(reply('k-9'));
    await new Promise(resolve => setTimeout(resolve, 0));
    await new Promise(resolve => setTimeout(resolve, 0));
    expect(reconnect).toHaveBeenCalledTimes(1);
    expect(showErrorMessage).not.toHaveBeenCalled();
  }

  it('opens the notebook once its waiting session is listed, and attaches when it starts', async () => {
    await launchThatWaits(makeModel(), true);
  });

  it("opens so on a cluster, whose scheduler queues the start (Slurm's pending job)", async () => {
    await launchThatWaits(
      { ...makeModel(), cluster: slurmClusterView() } as any,
      undefined
    );
  });

  it('says why and removes the notebook when the wait is refused before it begins', async () => {
    const app = makeApp();
    (app.serviceManager.sessions as any).running = () => [][Symbol.iterator]();
    jest
      .mocked(startNotebookKernel)
      .mockRejectedValue(
        new Error(
          'You already have 1 starts waiting for a GPU, as many as one user may.'
        )
      );
    await launchNotebook(
      asApp(app),
      asModel(makeModel()),
      torch,
      1,
      'work',
      trans,
      true
    );
    expect(app.serviceManager.contents.delete).toHaveBeenCalledWith(
      'work/Untitled.ipynb'
    );
    expect(showErrorMessage).toHaveBeenCalledWith(
      'Could not start a kernel on pytorch:24.05-py3',
      'You already have 1 starts waiting for a GPU, as many as one user may.'
    );
    expect(app.commands.execute).not.toHaveBeenCalled();
  });
});

describe('switchNotebook', () => {
  it('reads the images first, and says when they cannot be read', async () => {
    const model = makeModel({ catalog: null, catalogError: '' });
    await switchNotebook(
      asApp(makeApp()),
      asModel(model),
      asPanel(makePanel(null)),
      trans
    );
    expect(model.refreshImages).toHaveBeenCalled();
    expect(showErrorMessage).toHaveBeenCalledWith(
      'Images unavailable',
      'The image list could not be read.'
    );
    expect(showFormDialog).not.toHaveBeenCalled();
    await switchNotebook(
      asApp(makeApp()),
      asModel(makeModel({ catalog: null, catalogError: 'Docker is down.' })),
      asPanel(makePanel(null)),
      trans
    );
    expect(showErrorMessage).toHaveBeenLastCalledWith(
      'Images unavailable',
      'Docker is down.'
    );
  });

  it("offers the images with the notebook's kernel and its GPUs", async () => {
    const model = makeModel();
    pick(null);
    await switchNotebook(
      asApp(makeApp()),
      asModel(model),
      asPanel(makePanel({ id: 'k-1', name: torch.kernel_name })),
      trans
    );
    expect(ImagePicker).toHaveBeenCalledWith(
      model.catalog.images,
      model.gpus,
      torch.kernel_name,
      'k-1',
      1,
      trans,
      // No GPU queue on this server: waiting is not offered.
      { offered: false, byDefault: false },
      // A host's GPUs: this model has no cluster view.
      undefined
    );
    expect(showFormDialog).toHaveBeenCalledWith({
      title: 'Image and GPUs for train.ipynb',
      body: jest.mocked(ImagePicker).mock.instances[0],
      accept: 'Switch',
      focusNodeSelector: 'select'
    });
    // Cancelled: nothing else.
    expect(confirmDialog).not.toHaveBeenCalled();
    expect(startNotebookKernel).not.toHaveBeenCalled();
  });

  it('says why a choice cannot be made', async () => {
    pick({ kernelName: '', gpus: null, problem: 'No free GPU.' });
    await switchNotebook(
      asApp(makeApp()),
      asModel(makeModel()),
      asPanel(makePanel(null)),
      trans
    );
    expect(showErrorMessage).toHaveBeenCalledWith(
      'Cannot switch',
      'No free GPU.'
    );
    expect(startNotebookKernel).not.toHaveBeenCalled();
  });

  it('asks before restarting a running kernel, and stops when refused', async () => {
    pick({ kernelName: torch.kernel_name, gpus: 2, problem: '' });
    jest.mocked(confirmDialog).mockResolvedValueOnce(false);
    await switchNotebook(
      asApp(makeApp()),
      asModel(makeModel()),
      asPanel(makePanel({ id: 'k-1', name: torch.kernel_name }, 'unknown')),
      trans
    );
    expect(confirmDialog).toHaveBeenCalledWith({
      title: 'Restart the kernel?',
      body:
        'The kernel will restart in a new container: its variables and everything else ' +
        'in its memory are lost. The notebook stays open and keeps its cells and outputs.',
      action: 'Restart'
    });
    expect(startNotebookKernel).not.toHaveBeenCalled();
  });

  it('asks before switching a running kernel to another image, then switches', async () => {
    pick({ kernelName: 'gpuc-debian', gpus: 0, problem: '' });
    jest.mocked(confirmDialog).mockResolvedValueOnce(true);
    jest.mocked(startNotebookKernel).mockResolvedValue(reply('k-1'));
    const panel = makePanel({ id: 'k-1', name: torch.kernel_name }, 'busy');
    await switchNotebook(
      asApp(makeApp()),
      asModel(makeModel()),
      asPanel(panel),
      trans
    );
    expect(confirmDialog).toHaveBeenCalledWith({
      title: 'Switch the image?',
      body:
        'The kernel will restart in a new container of the chosen image: its variables and ' +
        'everything else in its memory are lost. The notebook stays open and keeps its ' +
        'cells and outputs.',
      action: 'Switch'
    });
    expect(startNotebookKernel).toHaveBeenCalledWith(
      panel.context.path,
      'gpuc-debian',
      0,
      settings,
      true,
      trans,
      undefined // no wait asked: the server's default
    );
  });

  it('does not ask for a dead kernel, or without one', async () => {
    jest.mocked(startNotebookKernel).mockResolvedValue(reply('k-1'));
    pick({ kernelName: torch.kernel_name, gpus: 1, problem: '' });
    await switchNotebook(
      asApp(makeApp()),
      asModel(makeModel()),
      asPanel(makePanel({ id: 'k-1', name: torch.kernel_name }, 'dead')),
      trans
    );
    pick({ kernelName: torch.kernel_name, gpus: 1, problem: '' });
    await switchNotebook(
      asApp(makeApp()),
      asModel(makeModel()),
      asPanel(makePanel(null)),
      trans
    );
    expect(confirmDialog).not.toHaveBeenCalled();
    expect(startNotebookKernel).toHaveBeenCalledTimes(2);
  });
});

describe('applyKernelChoice', () => {
  it('restarts the kernel through the server, waits for the page to attach, and saves the kernel spec', async () => {
    jest.useFakeTimers();
    const app = makeApp();
    const model = makeModel();
    const panel = makePanel({ id: 'k-1', name: torch.kernel_name });
    jest.mocked(startNotebookKernel).mockResolvedValue(reply('k-2'));
    const done = applyKernelChoice(
      asApp(app),
      asModel(model),
      asPanel(panel),
      torch.kernel_name,
      1,
      trans
    );
    expect(Notification.emit).toHaveBeenCalledWith(
      'Starting pytorch:24.05-py3 with 1 GPU…',
      'in-progress',
      { autoClose: false }
    );
    await jest.advanceTimersByTimeAsync(0);
    expect(startNotebookKernel).toHaveBeenCalledWith(
      panel.context.path,
      torch.kernel_name,
      1,
      settings,
      true,
      trans,
      undefined // no wait asked: the server's default
    );
    expect(app.serviceManager.sessions.refreshRunning).toHaveBeenCalled();
    // The page attaches to the new kernel.
    expect(panel.sessionContext.kernelChanged.size).toBe(1);
    panel.sessionContext.session!.kernel = {
      id: 'k-2',
      name: torch.kernel_name
    };
    panel.sessionContext.kernelChanged.emit();
    await done;
    expect(panel.sessionContext.kernelChanged.size).toBe(0);
    expect(panel.model.setMetadata).toHaveBeenCalledWith('kernelspec', {
      name: torch.kernel_name,
      display_name: 'PyTorch 24.05',
      language: 'python'
    });
    expect(panel.model.setMetadata).toHaveBeenCalledWith('gpu_containers', {
      gpus: 1
    });
    expect(panel.context.save).toHaveBeenCalled();
    expect(Notification.update).toHaveBeenCalledWith({
      id: 'note-1',
      message: 'Running on pytorch:24.05-py3 with 1 GPU.',
      type: 'success',
      autoClose: 3000
    });
    expect(model.refreshGpus).toHaveBeenCalled();
  });

  it('attaches the page to the session the server lists when its own is gone', async () => {
    // A restart whose wait was cancelled and could not bring the kernel back
    // ended it: the page's session went with it, and the start that waits
    // again makes a new one, which JupyterLab never takes up by itself.
    jest.useFakeTimers();
    const app = makeApp();
    const panel = makePanel({ id: 'k-1', name: torch.kernel_name });
    const session = panel.sessionContext.session as Record<string, unknown>;
    Object.assign(session, { id: 's-0', isDisposed: true });
    app.serviceManager.sessions.running.mockReturnValue([
      { id: 's-1', path: 'work/train.ipynb', kernel: { id: 'k-2' } }
    ]);
    jest.mocked(startNotebookKernel).mockResolvedValue(reply('k-2'));
    const done = applyKernelChoice(
      asApp(app),
      asModel(makeModel()),
      asPanel(panel),
      torch.kernel_name,
      1,
      trans,
      true
    );
    await jest.advanceTimersByTimeAsync(0);
    expect(panel.sessionContext.changeKernel).toHaveBeenCalledWith({
      id: 'k-2'
    });
    panel.sessionContext.session = {
      kernel: { id: 'k-2', name: torch.kernel_name }
    };
    Object.assign(panel.sessionContext.session, { id: 's-1' });
    Object.assign(panel.sessionContext.session.kernel, {
      connectionStatus: 'connected'
    });
    panel.sessionContext.kernelChanged.emit();
    await done;
    expect(showErrorMessage).not.toHaveBeenCalled();
    expect(panel.context.save).toHaveBeenCalled();
  });

  it("starts a tab's wait through the server when it has no session, and takes the waiting session up", async () => {
    // A tab whose wait was cancelled (here or in another tab) asks to wait
    // again: the page's own start would not wait (the server's default), so the
    // server starts it, and the tab takes up the session listed for the wait.
    jest.useFakeTimers();
    const app = makeApp();
    const panel = makePanel(null);
    app.serviceManager.sessions.running.mockReturnValue([
      { id: 's-1', path: 'work/train.ipynb', kernel: { id: 'k-2' } }
    ]);
    jest.mocked(startNotebookKernel).mockResolvedValue(reply('k-2'));
    const done = applyKernelChoice(
      asApp(app),
      asModel(makeModel()),
      asPanel(panel),
      torch.kernel_name,
      1,
      trans,
      true
    );
    await jest.advanceTimersByTimeAsync(0);
    expect(startNotebookKernel).toHaveBeenCalledWith(
      panel.context.path,
      torch.kernel_name,
      1,
      settings,
      true,
      trans,
      true
    );
    expect(panel.sessionContext.changeKernel).toHaveBeenCalledWith({
      id: 'k-2'
    });
    expect(panel.sessionContext.changeKernel).not.toHaveBeenCalledWith({
      name: torch.kernel_name
    });
    panel.sessionContext.session = {
      kernel: { id: 'k-2', name: torch.kernel_name }
    };
    Object.assign(panel.sessionContext.session, { id: 's-1' });
    Object.assign(panel.sessionContext.session.kernel, {
      connectionStatus: 'connected'
    });
    panel.sessionContext.kernelChanged.emit();
    await done;
    expect(showErrorMessage).not.toHaveBeenCalled();
    expect(panel.context.save).toHaveBeenCalled();
  });

  it('leaves a page on the listed session as it is', async () => {
    jest.useFakeTimers();
    const app = makeApp();
    const panel = makePanel({ id: 'k-1', name: torch.kernel_name });
    Object.assign(panel.sessionContext.session as object, {
      id: 's-1',
      isDisposed: false
    });
    // Closed by the server's restart, and JupyterLab gave up on it: the page
    // reconnects.
    const reconnect = jest.fn().mockResolvedValue(undefined);
    Object.assign(panel.sessionContext.session!.kernel, {
      connectionStatus: 'disconnected',
      reconnect
    });
    app.serviceManager.sessions.running.mockReturnValue([
      { id: 's-1', path: 'work/train.ipynb', kernel: { id: 'k-1' } }
    ]);
    jest.mocked(startNotebookKernel).mockResolvedValue(reply('k-1'));
    await applyKernelChoice(
      asApp(app),
      asModel(makeModel()),
      asPanel(panel),
      torch.kernel_name,
      1,
      trans,
      true
    );
    expect(panel.sessionContext.changeKernel).not.toHaveBeenCalled();
    expect(reconnect).toHaveBeenCalled();
    expect(showErrorMessage).not.toHaveBeenCalled();
  });

  it('says when the page does not attach to the new kernel', async () => {
    jest.useFakeTimers();
    const panel = makePanel({ id: 'k-1', name: torch.kernel_name });
    jest.mocked(startNotebookKernel).mockResolvedValue(reply('k-2'));
    const done = applyKernelChoice(
      asApp(makeApp()),
      asModel(makeModel()),
      asPanel(panel),
      torch.kernel_name,
      ['GPU-0', 'GPU-1'],
      trans
    );
    await jest.advanceTimersByTimeAsync(15000);
    await done;
    expect(Notification.dismiss).toHaveBeenCalledWith('note-1');
    expect(showErrorMessage).toHaveBeenCalledWith(
      'Could not start pytorch:24.05-py3 with 2 chosen GPUs',
      'The kernel started, but this page did not attach to it: reload the page.'
    );
    expect(panel.context.save).not.toHaveBeenCalled();
  });

  it('says in its notification that the start waits, and where it stands', async () => {
    jest.useFakeTimers();
    const model = makeModel();
    const panel = makePanel({ id: 'k-1', name: torch.kernel_name });
    let finish: (value: unknown) => void = () => undefined;
    jest
      .mocked(startNotebookKernel)
      .mockReturnValue(new Promise(resolve => (finish = resolve)) as never);
    const done = applyKernelChoice(
      asApp(makeApp()),
      asModel(model),
      asPanel(panel),
      torch.kernel_name,
      1,
      trans,
      true
    );
    await jest.advanceTimersByTimeAsync(0);
    model.queue = {
      queue: [
        {
          kernel_id: 'k-1',
          yours: true,
          user: null,
          notebook: 'work/train.ipynb',
          gpus: 1,
          position: 1,
          waited: 2,
          deadline: null
        }
      ],
      length: 1,
      wait_by_default: false,
      max_wait: 3600
    };
    model.changed.emit();
    model.changed.emit(); // the same place: said once
    expect(Notification.update).toHaveBeenCalledTimes(1);
    expect(Notification.update).toHaveBeenCalledWith({
      id: 'note-1',
      message: 'pytorch:24.05-py3 with 1 GPU: Waiting for a GPU (position 1)…',
      type: 'in-progress',
      autoClose: false
    });
    finish(reply('k-1'));
    await jest.advanceTimersByTimeAsync(1000);
    await done;
    // Ended: it listens no more.
    expect(model.changed.size).toBe(0);
  });

  it('puts up no error when the user cancelled the wait (the queue says so once)', async () => {
    const model = makeModel({
      cancelledSince: jest.fn().mockReturnValue(true)
    });
    const panel = makePanel({ id: 'k-1', name: torch.kernel_name });
    jest
      .mocked(startNotebookKernel)
      .mockRejectedValue(new Error('GPU wait cancelled'));
    await applyKernelChoice(
      asApp(makeApp()),
      asModel(model),
      asPanel(panel),
      torch.kernel_name,
      1,
      trans,
      true
    );
    // Asked by the notebook's own path, for a cancel made since this start began.
    expect(model.cancelledSince).toHaveBeenCalledWith(
      'work/train.ipynb',
      expect.any(Number)
    );
    expect(Notification.dismiss).toHaveBeenCalledWith('note-1');
    expect(showErrorMessage).not.toHaveBeenCalled();
    expect(Notification.update).not.toHaveBeenCalled();
  });

  it('without a session, saves the request in the notebook, then has the page start the kernel', async () => {
    const panel = makePanel(null);
    const order: string[] = [];
    panel.context.save.mockImplementation(async () => {
      order.push('save');
    });
    panel.sessionContext.changeKernel.mockImplementation(async () => {
      order.push('changeKernel');
    });
    jest
      .mocked(startNotebookKernel)
      .mockResolvedValue({ session: null, gpus: null });
    await applyKernelChoice(
      asApp(makeApp()),
      asModel(makeModel()),
      asPanel(panel),
      'gpuc-debian',
      null,
      trans
    );
    expect(Notification.emit).toHaveBeenCalledWith(
      'Starting debian-ipykernel:bookworm with its default GPUs…',
      'in-progress',
      { autoClose: false }
    );
    expect(startNotebookKernel).toHaveBeenCalledWith(
      panel.context.path,
      'gpuc-debian',
      null,
      settings,
      false,
      trans,
      undefined // no wait asked: the server's default
    );
    expect(panel.sessionContext.changeKernel).toHaveBeenCalledWith({
      name: 'gpuc-debian'
    });
    // null: the spec's default, so the notebook says nothing; saved before the kernel starts,
    // which reads the request from the saved file.
    expect(panel.model.deleteMetadata).toHaveBeenCalledWith('gpu_containers');
    expect(order).toEqual(['save', 'changeKernel']);
  });

  it.each<[number | string[], string]>([
    [0, 'no GPU'],
    [1, '1 GPU'],
    [3, '3 GPUs'],
    [['GPU-1'], '1 chosen GPU']
  ])('counts %p GPUs as %p', async (gpus, label) => {
    jest.mocked(startNotebookKernel).mockRejectedValue(new Error('No.'));
    await applyKernelChoice(
      asApp(makeApp()),
      asModel(makeModel()),
      asPanel(makePanel(null)),
      'python3',
      gpus,
      trans
    );
    // A kernel spec without an image is named by itself.
    expect(showErrorMessage).toHaveBeenCalledWith(
      `Could not start python3 with ${label}`,
      'No.'
    );
  });
});

describe('translation', () => {
  it("says it through the extension's bundle", async () => {
    const pseudo = pseudoBundle();
    const t = (text: string) => `⟦jupyter_gpu_containers:${text}⟧`;
    pick({ kernelName: 'gpuc-debian', gpus: 0, problem: '' });
    jest.mocked(confirmDialog).mockResolvedValueOnce(false);
    await switchNotebook(
      asApp(makeApp()),
      asModel(makeModel()),
      asPanel(makePanel({ id: 'k-1', name: torch.kernel_name })),
      pseudo
    );
    expect(jest.mocked(ImagePicker).mock.calls[0][5]).toBe(pseudo);
    expect(showFormDialog).toHaveBeenCalledWith(
      expect.objectContaining({
        title: t('Image and GPUs for train.ipynb'),
        accept: t('Switch')
      })
    );
    expect(confirmDialog).toHaveBeenCalledWith({
      title: t('Switch the image?'),
      body: t(
        'The kernel will restart in a new container of the chosen image: its variables and ' +
          'everything else in its memory are lost. The notebook stays open and keeps its ' +
          'cells and outputs.'
      ),
      action: t('Switch')
    });
    jest.mocked(startNotebookKernel).mockRejectedValue(new Error('No.'));
    await applyKernelChoice(
      asApp(makeApp()),
      asModel(makeModel()),
      asPanel(makePanel(null)),
      'python3',
      2,
      pseudo
    );
    expect(Notification.emit).toHaveBeenCalledWith(
      t(`Starting ${t(`python3 with ${t('2 GPUs')}`)}…`),
      'in-progress',
      { autoClose: false }
    );
    expect(jest.mocked(startNotebookKernel).mock.calls[0][5]).toBe(pseudo);
    expect(showErrorMessage).toHaveBeenCalledWith(
      t(`Could not start ${t(`python3 with ${t('2 GPUs')}`)}`),
      'No.'
    );
  });
});

describe('notebookGpuRequest', () => {
  it.each<[Record<string, unknown> | undefined, GpuRequest]>([
    [undefined, null],
    [{}, null],
    [{ gpu_containers: {} }, null],
    [{ gpu_containers: { gpus: 2 } }, 2],
    [{ gpu_containers: { gpus: 0 } }, 0],
    [{ gpu_containers: { gpus: ['0', 'GPU-a'] } }, ['0', 'GPU-a']],
    [{ gpu_containers: { gpus: -1 } }, null],
    [{ gpu_containers: { gpus: 1.5 } }, null],
    [{ gpu_containers: { gpus: [1] } }, null]
  ])('reads %p as %p', (metadata, expected) => {
    expect(notebookGpuRequest(metadata)).toEqual(expected);
  });
});

describe('switchDiscardsState', () => {
  it('asks before discarding any kernel but a dead one', () => {
    for (const status of [
      'idle',
      'busy',
      'starting',
      'restarting',
      'unknown'
    ]) {
      expect(switchDiscardsState(status)).toBe(true);
    }
    expect(switchDiscardsState('dead')).toBe(false);
  });
});

describe('askedGpus', () => {
  const spec = (gpu: boolean, gpus: number) =>
    ({
      name: 's',
      display_name: 's',
      language: 'python',
      argv: [],
      resources: {},
      metadata: {
        kernel_provisioner: { config: { gpus } },
        gpu_containers: { gpu }
      }
    }) as unknown as Parameters<typeof askedGpus>[1];
  const saving = (gpus: unknown) => ({ gpu_containers: { gpus } });

  it("is the notebook's request, else its spec's default", () => {
    expect(askedGpus(saving(2), spec(true, 1))).toBe(2);
    expect(askedGpus(saving(['GPU-a']), spec(true, 1))).toBe(1);
    expect(askedGpus({}, spec(true, 1))).toBe(1);
  });

  it('is none for a CPU build whatever the notebook saved (a tag moved to one)', () => {
    expect(askedGpus(saving(1), spec(false, 0))).toBe(0);
    expect(askedGpus({}, spec(false, 0))).toBe(0);
    // The administrator's own default for a spec stands.
    expect(askedGpus({}, spec(false, 2))).toBe(2);
  });
});
