import { JupyterFrontEnd } from '@jupyterlab/application';
import { NotebookPanel } from '@jupyterlab/notebook';

import { translationBundle } from '../i18n';
import { GpuContainersModel } from '../model';
import { switchNotebook } from '../switching';
import { KernelImageItem } from '../toolbar';
import { by, findOne, textOf } from './elements';
import { makeGpu, makeHolder, makeReport } from './fixtures';
import { pseudoBundle } from './pseudo';

// The JupyterLab UI packages need a DOM, which the node test environment does
// not have: a ReactWidget that counts its updates, a UseSignal that draws its
// children once.
jest.mock('@jupyterlab/ui-components', () => ({
  ReactWidget: class {
    readonly classes: string[] = [];
    updates = 0;
    isDisposed = false;
    addClass(name: string): void {
      this.classes.push(name);
    }
    update(): void {
      this.updates += 1;
    }
    dispose(): void {
      this.isDisposed = true;
    }
  },
  UseSignal: (props: { children: () => unknown }) => props.children()
}));
jest.mock('@jupyterlab/apputils', () => ({}));
jest.mock('../icon', () => ({ gpuContainersIcon: { react: () => null } }));
// The notebook's environment (environment.ts) has its own tests: here, one
// that is never undecided.
jest.mock('../environment', () => ({
  ...jest.requireActual('../environment'),
  environmentOf: () => ({
    changed: { connect: jest.fn(), disconnect: jest.fn() },
    undecided: null,
    decide: jest.fn()
  })
}));
jest.mock('../switching', () => ({
  ...jest.requireActual('../switching'),
  switchNotebook: jest.fn()
}));

const trans = translationBundle();

const IMAGE = 'nvcr.io/nvidia/pytorch:24.05-py3';

function makeSignal() {
  const slots = new Set<unknown>();
  return {
    connect: jest.fn((slot: unknown) => slots.add(slot)),
    disconnect: jest.fn((slot: unknown) => slots.delete(slot)),
    emit: () => [...slots].forEach(slot => (slot as () => void).call(item)),
    get size() {
      return slots.size;
    }
  };
}

let item: KernelImageItem;

const app = {
  serviceManager: {
    kernelspecs: {
      specsChanged: makeSignal(),
      specs: {
        kernelspecs: {
          'gpuc-torch': {
            name: 'gpuc-torch',
            metadata: {
              gpu_containers: { image: IMAGE },
              kernel_provisioner: { config: { gpus: 1 } }
            }
          },
          python3: { name: 'python3' }
        }
      }
    }
  }
};

function makePanel(
  kernel: { id: string; name: string } | null,
  metadata: Record<string, unknown> = {},
  status = 'idle'
) {
  return {
    model: { metadata, metadataChanged: makeSignal() },
    context: { path: 'work/train.ipynb' },
    sessionContext: {
      session: kernel ? { kernel } : null,
      kernelDisplayStatus: status,
      kernelChanged: makeSignal(),
      statusChanged: makeSignal(),
      sessionChanged: makeSignal()
    }
  };
}

function makeModel() {
  const mine = (kernel_id: string) => makeHolder({ mine: true, kernel_id });
  return {
    changed: makeSignal(),
    gpus: makeReport([
      makeGpu('0', [mine('k-1')]),
      makeGpu('1', [mine('k-2')]),
      makeGpu('2', [mine('k-2')])
    ]),
    refreshGpus: jest.fn().mockResolvedValue(undefined)
  };
}

function build(
  panel: ReturnType<typeof makePanel>,
  model = makeModel(),
  bundle = trans
) {
  item = new KernelImageItem(
    app as unknown as JupyterFrontEnd,
    model as unknown as GpuContainersModel,
    panel as unknown as NotebookPanel,
    bundle
  );
  return { item, model };
}

function button() {
  return findOne(item.render(), by('button', 'jgc-toolbar-button'));
}

afterEach(() => {
  jest.clearAllMocks();
});

describe('KernelImageItem', () => {
  it("shows the kernel's image and GPUs, and what a click does", () => {
    build(makePanel({ id: 'k-2', name: 'gpuc-torch' }));
    expect((item as unknown as { classes: string[] }).classes).toEqual([
      'jgc-toolbar-item'
    ]);
    const node = button();
    expect(node.props['data-image']).toBe(IMAGE);
    expect(node.props['data-gpus']).toBe('1,2');
    expect(node.props.title).toBe(
      `Kernel image ${IMAGE}, GPUs 1,2. Click to switch the image or the GPUs.`
    );
    expect(textOf(findOne(node, by('span', 'jgc-toolbar-label')))).toBe(
      'pytorch:24.05-py3 · GPUs 1,2'
    );
  });

  it('says when there is no kernel, or one not in a container', () => {
    build(makePanel(null));
    expect(textOf(button())).toBe('Choose an image');
    expect(button().props['data-image']).toBe('');
    expect(button().props.title).toBe(
      'Click to run this notebook in a container image.'
    );
    build(makePanel({ id: 'k-3', name: 'python3' }));
    expect(textOf(button())).toBe('Not in a container');
    expect(button().props['data-gpus']).toBe('');
  });

  it("says when the notebook's start waits for a GPU, and where it stands", () => {
    const model = {
      ...makeModel(),
      queue: {
        queue: [
          { yours: false, gpus: 1, position: 1, waited: 30, deadline: '' },
          {
            kernel_id: 'k-9',
            yours: true,
            notebook: 'work/train.ipynb',
            gpus: 1,
            position: 2,
            waited: 5,
            deadline: ''
          }
        ],
        length: 2,
        wait_by_default: true,
        max_wait: 3600
      }
    };
    // The stock start has no session yet while it waits: found by its path.
    build(makePanel(null, { gpu_containers: { gpus: 1 } }), model);
    expect(textOf(button())).toBe('Waiting for a GPU (position 2)');
    expect(button().props['data-waiting']).toBe('true');
    expect(button().props['data-short']).toBeUndefined();
    // Its session listed while it waits (the panel's start): waiting, never
    // "(CPU only)", though it holds no GPU yet.
    build(makePanel({ id: 'k-9', name: 'gpuc-torch' }), model);
    expect(button().props['data-waiting']).toBe('true');
    expect(button().props['data-without-gpu']).toBeUndefined();
    expect(textOf(button())).toBe('Waiting for a GPU (position 2)');
    // Another notebook's start is not this one's.
    model.queue.queue[1].notebook = 'work/other.ipynb';
    build(makePanel(null), model);
    expect(textOf(button())).toBe('Choose an image');
  });

  it('opens the switch workflow on a click', () => {
    const panel = makePanel({ id: 'k-1', name: 'gpuc-torch' });
    const { model } = build(panel);
    button().props.onClick();
    expect(switchNotebook).toHaveBeenCalledWith(app, model, panel, trans);
  });

  it('redraws as the session changes, and reads the GPUs of a new kernel', () => {
    const panel = makePanel({ id: 'k-1', name: 'gpuc-torch' }, {}, 'starting');
    const { model } = build(panel);
    const updates = () => (item as unknown as { updates: number }).updates;
    panel.sessionContext.sessionChanged.emit();
    expect(updates()).toBe(1);
    panel.sessionContext.kernelChanged.emit();
    expect(updates()).toBe(2);
    expect(model.refreshGpus).toHaveBeenCalledTimes(1);
    // Once the kernel is up (idle after starting), its GPUs are read again;
    // not at each idle after busy.
    panel.sessionContext.kernelDisplayStatus = 'idle';
    panel.sessionContext.statusChanged.emit();
    expect(model.refreshGpus).toHaveBeenCalledTimes(2);
    panel.sessionContext.kernelDisplayStatus = 'busy';
    panel.sessionContext.statusChanged.emit();
    panel.sessionContext.kernelDisplayStatus = 'idle';
    panel.sessionContext.statusChanged.emit();
    expect(model.refreshGpus).toHaveBeenCalledTimes(2);
    expect(updates()).toBe(5);
  });

  it('lets go of the session when disposed', () => {
    const panel = makePanel({ id: 'k-1', name: 'gpuc-torch' });
    build(panel);
    item.dispose();
    expect(item.isDisposed).toBe(true);
    const { kernelChanged, statusChanged, sessionChanged } =
      panel.sessionContext;
    expect(kernelChanged.size + statusChanged.size + sessionChanged.size).toBe(
      0
    );
    item.dispose();
  });

  it("says it through the extension's bundle", () => {
    const pseudo = pseudoBundle();
    build(makePanel(null), makeModel(), pseudo);
    expect(textOf(button())).toBe('⟦jupyter_gpu_containers:Choose an image⟧');
    build(makePanel({ id: 'k-2', name: 'gpuc-torch' }), makeModel(), pseudo);
    // One translated string with placeholders, not pieces glued together.
    expect(textOf(findOne(button(), by('span', 'jgc-toolbar-label')))).toBe(
      '⟦jupyter_gpu_containers:toolbar: kernel image · its GPUs|pytorch:24.05-py3 · ⟦jupyter_gpu_containers:GPUs 1,2⟧⟧'
    );
    expect(button().props.title).toBe(
      `⟦jupyter_gpu_containers:Kernel image ${IMAGE}, ⟦jupyter_gpu_containers:GPUs 1,2⟧. Click to switch the image or the GPUs.⟧`
    );
    button().props.onClick();
    expect(jest.mocked(switchNotebook).mock.calls[0][3]).toBe(pseudo);
  });

  it('never shows fewer GPUs than asked for in silence', () => {
    const model = makeModel();
    // A host without GPUs: the GPU image's default (1) ran on the CPU.
    model.gpus = makeReport([]);
    build(makePanel({ id: 'k-4', name: 'gpuc-torch' }), model);
    let node = button();
    expect(node.props['data-short']).toBe('true');
    expect(textOf(node)).toBe(
      'pytorch:24.05-py3 · No GPUNo GPU(fewer GPUs than asked)'
    );
    // The compact form (a narrow toolbar) keeps the GPUs alone.
    expect(textOf(findOne(node, by('span', 'jgc-toolbar-compact-label')))).toBe(
      'No GPU'
    );
    // Inside the tooltip's sentence, in lower case.
    expect(node.props.title).toContain(
      `Kernel image ${IMAGE}, no GPU. Click to switch`
    );
    expect(node.props.title).toMatch(
      /^This notebook asks for 1 GPU, but its kernel has 0\. .*Kernel image/
    );
    // The notebook's own request counts over the spec's default.
    build(
      makePanel(
        { id: 'k-1', name: 'gpuc-torch' },
        { gpu_containers: { gpus: 2 } }
      )
    );
    node = button();
    expect(node.props['data-short']).toBe('true');
    expect(node.props.title).toMatch(/asks for 2 GPUs, but its kernel has 1/);
    // As many as asked: nothing to say.
    build(makePanel({ id: 'k-1', name: 'gpuc-torch' }));
    expect(button().props['data-short']).toBeUndefined();
    build(
      makePanel(
        { id: 'k-4', name: 'gpuc-torch' },
        { gpu_containers: { gpus: 0 } }
      )
    );
    expect(button().props['data-short']).toBeUndefined();
  });

  it('says nothing of GPUs it does not know yet, during a start', () => {
    const model = makeModel();
    model.gpus = makeReport([]);
    const panel = makePanel({ id: 'k-4', name: 'gpuc-torch' }, {}, 'starting');
    build(panel, model);
    let node = button();
    expect(node.props['data-short']).toBeUndefined();
    expect(textOf(findOne(node, by('span', 'jgc-toolbar-label')))).toBe(
      'pytorch:24.05-py3 · starting'
    );
    // Up now, but the GPU report is the one read during its start.
    panel.sessionContext.kernelDisplayStatus = 'idle';
    panel.sessionContext.statusChanged.emit();
    node = button();
    expect(node.props['data-short']).toBeUndefined();
    expect(node.props['data-without-gpu']).toBeUndefined();
    // A report read since says what it holds: none, of the one asked for.
    model.gpus = makeReport([]);
    node = button();
    expect(node.props['data-short']).toBe('true');
    expect(textOf(findOne(node, by('span', 'jgc-toolbar-label')))).toBe(
      'pytorch:24.05-py3 · No GPU'
    );
    // A new kernel (a restart, a switch) starts over.
    panel.sessionContext.session = {
      kernel: { id: 'k-5', name: 'gpuc-torch' }
    };
    panel.sessionContext.kernelChanged.emit();
    expect(button().props['data-short']).toBeUndefined();
  });

  it('says when a GPU image runs without a GPU because its notebook asks for none', () => {
    build(
      makePanel(
        { id: 'k-4', name: 'gpuc-torch' },
        { gpu_containers: { gpus: 0 } }
      )
    );
    const node = button();
    expect(node.props['data-without-gpu']).toBe('true');
    expect(node.props['data-short']).toBeUndefined();
    expect(textOf(node)).toMatch(/\(CPU only\)$/);
  });
  it('says what the notebook last ran on, and when it is pinned to that', () => {
    const stamp = {
      image: IMAGE,
      digest: `nvcr.io/nvidia/pytorch@sha256:${'ab'.repeat(32)}`,
      framework: 'PyTorch',
      framework_version: '24.05',
      cuda_version: '12.4.1',
      python_version: '3.10.12',
      gpus: ['NVIDIA H100 80GB HBM3'],
      driver_version: '550.54.15',
      verdict: { outcome: 'native', reason: 'runs natively' }
    };
    build(
      makePanel(
        { id: 'k-2', name: 'gpuc-torch' },
        { gpu_containers: { environment: stamp } }
      )
    );
    expect(button().props.title).toBe(
      `Kernel image ${IMAGE}, GPUs 1,2. Click to switch the image or the GPUs. ` +
        `This notebook last ran on ${IMAGE} (sha256:abababababab): PyTorch 24.05, ` +
        'CUDA 12.4.1, Python 3.10.12; on NVIDIA H100 80GB HBM3: runs natively.'
    );
    expect(() => findOne(button(), by('span', 'jgc-toolbar-pinned'))).toThrow();
    build(
      makePanel(
        { id: 'k-2', name: 'gpuc-torch' },
        { gpu_containers: { environment: stamp, image_digest: stamp.digest } }
      )
    );
    expect(textOf(findOne(button(), by('span', 'jgc-toolbar-pinned')))).toBe(
      '(pinned)'
    );
    expect(button().props.title).toContain(
      'Its image is pinned to the content sha256:abababababab, whatever its tag names now.'
    );
  });
});
