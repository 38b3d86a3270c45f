import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { NotebookPanel } from '@jupyterlab/notebook';

import { getNotebookKernelState } from '../api';
import {
  NotebookEnvironment,
  askMovedTag,
  describeStamp,
  notebookPin,
  notebookStamp,
  repositoryOf,
  sameStamp,
  shortDigest
} from '../environment';
import { sectionWith, setInSection } from '../metadatakeys';
import { environmentStampOf } from '../environmentreaders';
import {
  IEnvironmentStamp,
  INotebookKernelState,
  INotebookRetiredImage,
  INotebookStampCheck
} from '../environmenttypes';
import { translationBundle } from '../i18n';
import { askRetired, moveNotebook, moveRecordOf } from '../retired';
import { GpuContainersModel } from '../model';

jest.mock('@jupyterlab/apputils', () => ({
  Dialog: {
    cancelButton: (options: object = {}) => ({
      label: 'Cancel',
      accept: false,
      actions: [],
      ...options
    }),
    okButton: (options: object = {}) => ({
      label: 'OK',
      accept: true,
      actions: [],
      ...options
    }),
    // The dialogs on the page (dismissKernelSelection): set by a test.
    tracker: {
      dialogs: [] as unknown[],
      forEach(f: (d: unknown) => void) {
        this.dialogs.forEach(f);
      }
    }
  },
  Notification: { error: jest.fn(), warning: jest.fn(), info: jest.fn() },
  showDialog: jest.fn()
}));
jest.mock('../api', () => ({
  ...jest.requireActual('../api'),
  getNotebookKernelState: jest.fn()
}));

const trans = translationBundle();
const getState = getNotebookKernelState as jest.MockedFunction<
  typeof getNotebookKernelState
>;

const REPO = '127.0.0.1:5000/course/pytorch';
const OLD = `${REPO}@sha256:${'ab'.repeat(32)}`;
const NEW = `${REPO}@sha256:${'cd'.repeat(32)}`;

function stamp(digest: string): IEnvironmentStamp {
  return {
    image: `${REPO}:class`,
    digest,
    framework: 'PyTorch',
    framework_version: '24.05',
    cuda_version: '12.4.1',
    python_version: '3.10.12',
    gpus: [],
    driver_version: '',
    verdict: null
  };
}

function state(
  environment: IEnvironmentStamp | null,
  check: INotebookStampCheck | null = null
): INotebookKernelState {
  return {
    path: 'nb.ipynb',
    request: null,
    request_problem: '',
    default: null,
    kernel: environment
      ? {
          id: 'k-1',
          name: 'gpuc-course',
          image: environment.image,
          display_name: 'course',
          gpus: [],
          execution_state: 'idle',
          environment,
          pinned: ''
        }
      : null,
    stamp: check,
    retired: null
  };
}

function moved(
  overrides: Partial<INotebookStampCheck> = {}
): INotebookStampCheck {
  return {
    recorded: stamp(OLD),
    pin: '',
    tag_digest: NEW,
    moved: true,
    recorded_present: true,
    pinnable: true,
    pin_reference: OLD,
    compared: true,
    ...overrides
  };
}

function makeSignal() {
  const slots: Array<[(...args: unknown[]) => void, unknown]> = [];
  return {
    connect: (slot: (...args: unknown[]) => void, owner: unknown) =>
      slots.push([slot, owner]),
    disconnect: () => undefined,
    emit: () => slots.forEach(([slot, owner]) => slot.call(owner))
  };
}

function makePanel(metadata: Record<string, unknown> = {}) {
  const statusChanged = makeSignal();
  const panel = {
    isDisposed: false,
    disposed: makeSignal(),
    model: {
      metadata: { ...metadata },
      dirty: false,
      setMetadata: jest.fn((key: string, value: unknown) => {
        panel.model.metadata[key] = value;
        panel.model.dirty = true;
      }),
      deleteMetadata: jest.fn((key: string) => {
        delete panel.model.metadata[key];
      }),
      getMetadata: (key: string) => panel.model.metadata[key]
    },
    context: {
      path: 'nb.ipynb',
      ready: Promise.resolve(),
      save: jest.fn().mockResolvedValue(undefined)
    },
    sessionContext: {
      kernelDisplayStatus: 'starting',
      statusChanged,
      session: { kernel: { name: 'gpuc-course' } },
      name: 'nb.ipynb',
      initialize: jest.fn().mockResolvedValue(true),
      changeKernel: jest.fn().mockResolvedValue(undefined),
      specsManager: {
        specs: { default: '', kernelspecs: {} as Record<string, unknown> },
        refreshSpecs: jest.fn().mockResolvedValue(undefined)
      }
    },
    /**
     * The kernel came up (JupyterLab's status goes to idle).
     */
    kernelReady() {
      panel.sessionContext.kernelDisplayStatus = 'starting';
      statusChanged.emit();
      panel.sessionContext.kernelDisplayStatus = 'idle';
      statusChanged.emit();
    }
  };
  return panel;
}

const model = {
  serverSettings: {},
  pull: jest.fn(),
  refreshImages: jest.fn().mockResolvedValue(undefined)
};

function environmentFor(
  panel: ReturnType<typeof makePanel>,
  answer: jest.Mock = jest.fn().mockResolvedValue('later'),
  answerRetired: jest.Mock = jest.fn().mockResolvedValue('later')
): NotebookEnvironment {
  return new NotebookEnvironment(
    panel as unknown as NotebookPanel,
    model as unknown as GpuContainersModel,
    trans,
    answer,
    answerRetired
  );
}

/**
 * Until the promises under way have settled.
 */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) {
    await Promise.resolve();
  }
}

afterEach(() => {
  jest.clearAllMocks();
});

describe('the metadata', () => {
  it('reads the stamp and the pin, and leaves the GPU request alone', () => {
    const metadata = {
      gpu_containers: { gpus: 2, environment: stamp(OLD), image_digest: OLD }
    };
    expect(notebookStamp(metadata)).toEqual(stamp(OLD));
    expect(notebookPin(metadata)).toBe(OLD);
    expect(notebookStamp({ gpu_containers: { environment: 'x' } })).toBeNull();
    expect(notebookPin({ gpu_containers: [] })).toBe('');
    expect(sectionWith(metadata, 'image_digest', null)).toEqual({
      gpus: 2,
      environment: stamp(OLD)
    });
    expect(sectionWith({}, 'image_digest', null)).toBeUndefined();
    // Each writer its own key: the GPU request set or removed keeps the stamp
    // and the pin (setNotebookGpuRequest writes through setInSection).
    const panel = makePanel(metadata);
    setInSection(panel.model, 'gpus', null);
    expect(panel.model.metadata.gpu_containers).toEqual({
      environment: stamp(OLD),
      image_digest: OLD
    });
    setInSection(panel.model, 'gpus', ['0']);
    setInSection(panel.model, 'environment', null);
    setInSection(panel.model, 'image_digest', null);
    expect(panel.model.metadata.gpu_containers).toEqual({ gpus: ['0'] });
    setInSection(panel.model, 'gpus', null);
    expect(panel.model.metadata.gpu_containers).toBeUndefined();
    expect(sameStamp(stamp(OLD), stamp(OLD))).toBe(true);
    expect(sameStamp(stamp(OLD), stamp(NEW))).toBe(false);
  });

  it('reads a hand-edited stamp field by field', () => {
    expect(
      environmentStampOf({ image: 'a:1', digest: 'sha256:1', gpus: [3, 'T4'] })
    ).toEqual({
      image: 'a:1',
      digest: 'sha256:1',
      framework: '',
      framework_version: '',
      cuda_version: '',
      python_version: '',
      gpus: ['T4'],
      driver_version: '',
      verdict: null
    });
    expect(environmentStampOf({ image: 'a:1' })).toBeNull();
  });

  it('reads repositories', () => {
    expect(repositoryOf('127.0.0.1:5000/a/b:1')).toBe('127.0.0.1:5000/a/b');
    expect(repositoryOf(OLD)).toBe(REPO);
    expect(repositoryOf('python')).toBe('python');
  });

  it('says the stamp in a line', () => {
    expect(shortDigest(OLD)).toBe('sha256:abababababab');
    expect(shortDigest('sha256:0123')).toBe('sha256:0123');
    expect(describeStamp(trans, stamp(OLD))).toBe(
      `${REPO}:class (sha256:abababababab): PyTorch 24.05, CUDA 12.4.1, ` +
        'Python 3.10.12; no GPU'
    );
    const withGpu = {
      ...stamp(OLD),
      framework: '',
      cuda_version: '',
      python_version: '',
      gpus: ['Tesla T4'],
      verdict: { outcome: 'native', reason: 'runs natively' }
    };
    expect(describeStamp(trans, withGpu)).toBe(
      `${REPO}:class (sha256:abababababab); on Tesla T4: runs natively`
    );
  });
});

describe('NotebookEnvironment', () => {
  it("records the kernel's environment at each start, and only when it changed", async () => {
    const panel = makePanel({ gpu_containers: { gpus: 1 } });
    getState.mockResolvedValue(state(stamp(OLD)));
    const environment = environmentFor(panel);
    await settle();
    panel.kernelReady();
    await settle();
    expect(panel.model.metadata.gpu_containers).toEqual({
      gpus: 1,
      environment: stamp(OLD)
    });
    expect(environment.current).toEqual(stamp(OLD));
    // A notebook nothing changed in stays unmodified: saved with the next save.
    expect(panel.model.dirty).toBe(false);
    // The same environment again: the notebook is not touched (not modified).
    panel.kernelReady();
    await settle();
    expect(panel.model.setMetadata).toHaveBeenCalledTimes(1);
  });

  it('asks when the tag moved, and records nothing over the saved stamp until answered', async () => {
    const panel = makePanel({ gpu_containers: { environment: stamp(OLD) } });
    getState.mockResolvedValue(state(stamp(NEW), moved()));
    const ask = jest.fn().mockResolvedValue('later');
    const environment = environmentFor(panel, ask);
    await settle();
    expect(ask).toHaveBeenCalledWith(trans, moved());
    expect(environment.undecided).toEqual(moved());
    // The kernel JupyterLab started on opening runs the new content.
    panel.kernelReady();
    await settle();
    expect(panel.model.setMetadata).not.toHaveBeenCalled();
    expect(environment.current).toEqual(stamp(NEW));

    // Asked again (the toolbar's "Image changed"): the new content.
    ask.mockResolvedValue('new');
    await environment.decide();
    await settle();
    expect(environment.undecided).toBeNull();
    expect(panel.model.metadata.gpu_containers).toEqual({
      environment: stamp(NEW)
    });
    expect(panel.sessionContext.changeKernel).not.toHaveBeenCalled();
  });

  it('starts the new content for a notebook left without a kernel as it opened', async () => {
    // "No Kernel" in JupyterLab's own question, then the new content: the
    // notebook's kernel spec starts, on the tag as it is now.
    const panel = makePanel({
      gpu_containers: { environment: stamp(OLD) },
      kernelspec: { name: 'gpuc-course', display_name: 'Course' }
    });
    (panel.sessionContext as { session: unknown }).session = null;
    getState.mockResolvedValue(state(null, moved()));
    environmentFor(panel, jest.fn().mockResolvedValue('new'));
    await settle();
    expect(panel.context.save).toHaveBeenCalled();
    expect(panel.sessionContext.changeKernel).toHaveBeenCalledWith({
      name: 'gpuc-course'
    });
    expect(panel.model.metadata.gpu_containers).toEqual({
      environment: stamp(OLD)
    });
  });

  it('runs the recorded content: pinned, saved, and a new kernel', async () => {
    const panel = makePanel({ gpu_containers: { environment: stamp(OLD) } });
    getState.mockResolvedValue(state(stamp(NEW), moved()));
    model.refreshImages.mockClear();
    environmentFor(panel, jest.fn().mockResolvedValue('recorded'));
    await settle();
    // The catalog (and with it the page's kernel specs) is read at once: the tag moved.
    expect(model.refreshImages).toHaveBeenCalledTimes(1);
    expect(panel.model.metadata.gpu_containers).toEqual({
      environment: stamp(OLD),
      image_digest: OLD
    });
    expect(panel.context.save).toHaveBeenCalled();
    expect(panel.sessionContext.changeKernel).toHaveBeenCalledWith({
      name: 'gpuc-course'
    });
    expect(model.pull).not.toHaveBeenCalled();
  });

  it("pins content built on the server by the server's kept pin, never by its bare id", async () => {
    const id = 'sha256:' + 'cd'.repeat(32);
    const local = { ...stamp(id), image: 'jgc/course:1' };
    const panel = makePanel({ gpu_containers: { environment: local } });
    getState.mockResolvedValue(
      state(stamp(NEW), {
        ...moved({ pin_reference: `jgc/course@${id}` }),
        recorded: local
      })
    );
    environmentFor(panel, jest.fn().mockResolvedValue('recorded'));
    await settle();
    expect(panel.model.metadata.gpu_containers).toEqual({
      environment: local,
      image_digest: `jgc/course@${id}`
    });
    expect(model.pull).not.toHaveBeenCalled();
  });

  it('pulls the recorded content first when the server lacks it', async () => {
    const panel = makePanel({ gpu_containers: { environment: stamp(OLD) } });
    getState.mockResolvedValue(
      state(stamp(NEW), moved({ recorded_present: false }))
    );
    model.pull.mockResolvedValue({ state: 'done', message: '' });
    environmentFor(panel, jest.fn().mockResolvedValue('recorded'));
    await settle();
    expect(model.pull).toHaveBeenCalledWith(OLD);
    expect(panel.sessionContext.changeKernel).toHaveBeenCalled();
  });

  it("drops a pin of another image once the notebook's kernel runs another", async () => {
    const panel = makePanel({
      gpu_containers: { environment: stamp(OLD), image_digest: OLD }
    });
    const other = { ...stamp('jgc/other@sha256:' + 'ef'.repeat(32)) };
    other.image = 'jgc/other:1';
    getState.mockResolvedValue(state(other));
    environmentFor(panel);
    await settle();
    panel.kernelReady();
    await settle();
    expect(panel.model.metadata.gpu_containers).toEqual({ environment: other });
  });

  it('does not ask a notebook pinned to the recorded content, or one whose tag did not move', async () => {
    const ask = jest.fn().mockResolvedValue('later');
    const pinned = makePanel({
      gpu_containers: { environment: stamp(OLD), image_digest: OLD }
    });
    getState.mockResolvedValue(state(stamp(OLD), moved({ pin: OLD })));
    environmentFor(pinned, ask);
    await settle();
    const still = makePanel({ gpu_containers: { environment: stamp(OLD) } });
    getState.mockResolvedValue(
      state(stamp(OLD), moved({ moved: false, tag_digest: OLD }))
    );
    environmentFor(still, ask);
    await settle();
    expect(ask).not.toHaveBeenCalled();
  });
});

describe('the question', () => {
  const shown = showDialog as unknown as jest.Mock;

  function buttons(): Array<{ label: string; accept: boolean }> {
    return shown.mock.calls[shown.mock.calls.length - 1][0].buttons;
  }

  it('offers the recorded content, the new one, or later, by their words', async () => {
    const check = { ...moved(), recorded: stamp(OLD) };
    for (const [index, choice] of [
      [0, 'later'],
      [1, 'new'],
      [2, 'recorded']
    ] as const) {
      shown.mockImplementationOnce(async (options: any) => ({
        button: options.buttons[index]
      }));
      expect(await askMovedTag(trans, check)).toBe(choice);
    }
    expect(buttons().map(b => b.label)).toEqual([
      'Decide Later',
      'Use the New Content',
      'Run the Recorded Content'
    ]);
    // Read aloud as they are written (no aria-label of other words).
    expect(buttons().every(b => !('ariaLabel' in b))).toBe(true);
    const body = shown.mock.calls[0][0].body as string;
    expect(body).toContain(
      `This notebook last ran on ${REPO}:class (sha256:abababababab)`
    );
    expect(body).toContain('now names other content (sha256:cdcdcdcdcdcd)');
  });

  it('says when the recorded content must be pulled, or cannot be run again', async () => {
    shown.mockResolvedValue({ button: { accept: false, actions: [] } });
    await askMovedTag(trans, {
      ...moved({ recorded_present: false }),
      recorded: stamp(OLD)
    });
    expect(buttons().map(b => b.label)).toContain(
      'Pull and Run the Recorded Content'
    );
    const local = { ...stamp('sha256:' + 'ab'.repeat(32)) };
    await askMovedTag(trans, {
      ...moved({ pinnable: false, pin_reference: '' }),
      recorded: local
    });
    expect(buttons().map(b => b.label)).toEqual([
      'Decide Later',
      'Use the New Content'
    ]);
    expect(shown.mock.calls[shown.mock.calls.length - 1][0].body).toContain(
      'was built locally and is no longer kept on this server'
    );
  });
});

describe('a retired or removed image', () => {
  const shown = showDialog as unknown as jest.Mock;
  const OLD_IMAGE = 'jgc/course:2024';
  const NEW_IMAGE = 'jgc/course:2025';

  function retired(
    overrides: Partial<INotebookRetiredImage> = {}
  ): INotebookRetiredImage {
    return {
      state: 'retired',
      image: OLD_IMAGE,
      message: 'The course moved to 2025 in March.',
      redirect: NEW_IMAGE,
      redirect_kernel_name: 'gpuc-course-2025',
      ...overrides
    };
  }

  function withRetired(found: INotebookRetiredImage): INotebookKernelState {
    return { ...state(stamp(OLD), moved()), retired: found };
  }

  it('asks to move instead of which content to run, and moves: recorded, unpinned, saved, a new kernel', async () => {
    const panel = makePanel({
      gpu_containers: { environment: stamp(OLD), image_digest: OLD, gpus: 1 }
    });
    getState.mockResolvedValue(withRetired(retired()));
    const ask = jest.fn();
    const askRetired = jest.fn().mockResolvedValue('move');
    const spec = {
      name: 'gpuc-course-2025',
      display_name: `Python 3.11 · ${NEW_IMAGE}`,
      language: 'python'
    };
    panel.sessionContext.changeKernel.mockResolvedValue({
      spec: Promise.resolve(spec)
    });
    const environment = environmentFor(panel, ask, askRetired);
    await settle();
    expect(ask).not.toHaveBeenCalled();
    expect(askRetired).toHaveBeenCalledWith(trans, retired());
    expect(panel.model.metadata.gpu_containers).toEqual({
      environment: stamp(OLD),
      gpus: 1,
      moved: {
        from: OLD_IMAGE,
        to: NEW_IMAGE,
        reason: 'retired',
        message: 'The course moved to 2025 in March.'
      }
    });
    expect(panel.sessionContext.changeKernel).toHaveBeenCalledWith({
      name: 'gpuc-course-2025'
    });
    // Saved before the start, and after it with the new kernel spec: reopened, it asks no more.
    expect(panel.context.save).toHaveBeenCalledTimes(2);
    expect(panel.model.metadata.kernelspec).toEqual(spec);
    expect(model.pull).not.toHaveBeenCalled();
    expect(environment.retired).toBeNull();
    expect(moveRecordOf(panel.model.metadata.gpu_containers as any)).toEqual(
      (panel.model.metadata.gpu_containers as any).moved
    );
  });

  it("asks about an image that is gone instead of JupyterLab's Select Kernel, one question at a time", async () => {
    const panel = makePanel({ gpu_containers: { environment: stamp(OLD) } });
    getState.mockResolvedValue(
      withRetired(retired({ state: 'removed', redirect_kernel_name: '' }))
    );
    const selector = {
      node: {
        textContent: 'Select kernel for: "nb.ipynb"',
        querySelector: () => ({})
      },
      reject: jest.fn()
    };
    (Dialog as any).tracker.dialogs = [selector];
    const askRetired = jest.fn().mockImplementation(async () => {
      // Asked once JupyterLab's question is gone.
      expect(selector.reject).toHaveBeenCalled();
      return 'later';
    });
    const environment = environmentFor(panel, jest.fn(), askRetired);
    await settle();
    await new Promise(resolve => setTimeout(resolve, 0)); // JupyterLab's turn to ask
    await settle();
    expect(panel.sessionContext.initialize).toHaveBeenCalled();
    expect(askRetired).toHaveBeenCalled();
    expect(environment.retired?.state).toBe('removed');
    (Dialog as any).tracker.dialogs = [];
  });

  it('keeps the notebook as it is until the reader moves it, and asks again from the toolbar', async () => {
    const panel = makePanel({ gpu_containers: { environment: stamp(OLD) } });
    getState.mockResolvedValue(withRetired(retired()));
    const askRetired = jest.fn().mockResolvedValue('later');
    const environment = environmentFor(panel, jest.fn(), askRetired);
    await settle();
    expect(environment.retired).toEqual(retired());
    expect(panel.sessionContext.changeKernel).not.toHaveBeenCalled();
    expect(panel.model.setMetadata).not.toHaveBeenCalled();
    askRetired.mockResolvedValue('move');
    await environment.decideRetired();
    expect(panel.sessionContext.changeKernel).toHaveBeenCalledWith({
      name: 'gpuc-course-2025'
    });
    expect(environment.retired).toBeNull();
  });

  it('pulls a redirect the server lacks, then starts the kernel on its spec once offered', async () => {
    const panel = makePanel({ gpu_containers: { environment: stamp(OLD) } });
    model.pull.mockResolvedValue({ state: 'done', message: '' });
    const specs = panel.sessionContext.specsManager;
    // The spec comes with the second read (the server's readiness probe).
    specs.refreshSpecs
      .mockResolvedValueOnce(undefined)
      .mockImplementationOnce(async () => {
        specs.specs.kernelspecs['gpuc-course-2025'] = {
          metadata: { gpu_containers: { image: NEW_IMAGE } }
        };
      });
    // JupyterLab's "Select Kernel" for this notebook (its spec is gone), and another dialog.
    const dialog = (text: string, select: boolean) => ({
      node: {
        textContent: text,
        querySelector: (s: string) => (s === 'select' && select ? {} : null)
      },
      reject: jest.fn()
    });
    const selector = dialog('Select kernel for: "nb.ipynb"', true);
    const other = dialog('Select kernel for: "other.ipynb"', true);
    const unrelated = dialog('nb.ipynb', false);
    (Dialog as any).tracker.dialogs = [selector, other, unrelated];
    const moved = await moveNotebook(
      panel as unknown as NotebookPanel,
      model as unknown as GpuContainersModel,
      trans,
      retired({ state: 'removed', redirect_kernel_name: '' }),
      'image_digest',
      async () => undefined
    );
    expect(moved).toBe(true);
    expect(model.pull).toHaveBeenCalledWith(NEW_IMAGE);
    expect(specs.refreshSpecs).toHaveBeenCalledTimes(2);
    expect(panel.sessionContext.changeKernel).toHaveBeenCalledWith({
      name: 'gpuc-course-2025'
    });
    expect((panel.model.metadata.gpu_containers as any).moved.reason).toBe(
      'removed'
    );
    // JupyterLab's question for this notebook was answered by the move; no other dialog.
    expect(selector.reject).toHaveBeenCalled();
    expect(other.reject).not.toHaveBeenCalled();
    expect(unrelated.reject).not.toHaveBeenCalled();
    (Dialog as any).tracker.dialogs = [];
  });

  it('says why when the pull fails or no kernel is offered, and moves nothing', async () => {
    const panel = makePanel({ gpu_containers: { environment: stamp(OLD) } });
    model.pull.mockResolvedValue({ state: 'error', message: 'denied' });
    const move = () =>
      moveNotebook(
        panel as unknown as NotebookPanel,
        model as unknown as GpuContainersModel,
        trans,
        retired({ redirect_kernel_name: '' }),
        'image_digest',
        async () => undefined
      );
    const said = Notification.error as unknown as jest.Mock;
    expect(await move()).toBe(false);
    expect(said.mock.calls[0][0]).toBe('denied');
    model.pull.mockResolvedValue({ state: 'done', message: '' });
    expect(await move()).toBe(false);
    expect(said.mock.calls[1][0]).toBe(
      `${NEW_IMAGE} was pulled, but the server offers no kernel for it: it may not be able to run one (the Images list says why).`
    );
    expect(
      panel.sessionContext.specsManager.refreshSpecs
    ).toHaveBeenCalledTimes(30);
    expect(panel.sessionContext.changeKernel).not.toHaveBeenCalled();
    expect(panel.model.setMetadata).not.toHaveBeenCalled();
  });

  it('asks in words: the message, the move, and for an image that is gone the way to choose another', async () => {
    shown.mockResolvedValue({ button: { accept: true, actions: ['move'] } });
    expect(await askRetired(trans, retired())).toBe('move');
    let options = shown.mock.calls[shown.mock.calls.length - 1][0];
    expect(options.title).toBe("This Notebook's Image Is Retired");
    expect(options.body).toBe(
      `The administrator retired ${OLD_IMAGE}, the image this notebook runs on. ` +
        'Their message: The course moved to 2025 in March. ' +
        `Its notebooks move to ${NEW_IMAGE}: the kernel starts again on it. ` +
        'Until you move it, the notebook keeps its image.'
    );
    expect(options.buttons.map((b: any) => b.label)).toEqual([
      'Not Now',
      `Move to ${NEW_IMAGE}`
    ]);
    shown.mockResolvedValue({ button: { accept: false, actions: [] } });
    expect(
      await askRetired(
        trans,
        retired({ state: 'removed', message: '', redirect: '' })
      )
    ).toBe('later');
    options = shown.mock.calls[shown.mock.calls.length - 1][0];
    expect(options.title).toBe("This Notebook's Image Is Gone");
    expect(options.body).toBe(
      `${OLD_IMAGE}, the image this notebook last ran on, is no longer on this server. ` +
        'There is no image to move to: choose another with Kernel › Change Kernel….'
    );
    expect(options.buttons.map((b: any) => b.label)).toEqual(['Close']);
  });

  it('reads a move record field by field', () => {
    expect(moveRecordOf({ moved: { from: 'a:1', to: 'b:1' } })).toEqual({
      from: 'a:1',
      to: 'b:1',
      reason: 'retired',
      message: ''
    });
    expect(moveRecordOf({ moved: { from: 'a:1' } })).toBeNull();
    expect(moveRecordOf({ moved: [] })).toBeNull();
    expect(moveRecordOf({})).toBeNull();
  });
});
