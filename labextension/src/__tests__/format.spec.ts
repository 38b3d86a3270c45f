import { formatBytes } from '../format';
import {
  defaultGpuChoice,
  gpuChoices,
  noGpuWarning,
  offersWait
} from '../gpuchoices';
import {
  availableGpus,
  describeNoGpus,
  gpuListLabel,
  gpuMemoryText,
  gpusOfKernel,
  hasRoom,
  holderLabel,
  memoryFraction
} from '../gpuformat';
import { VerdictOutcome } from '../gputypes';
import { translationBundle } from '../i18n';
import {
  IImageFilter,
  filterImages,
  frameworkGroup,
  frameworkLabel,
  groupByFramework,
  imageNames,
  isCompatible,
  isLaunchable,
  launchBlocker,
  pullProgressText,
  referenceBreaks,
  shortImageName,
  verdictBadge
} from '../imageformat';
import { IPull } from '../imagetypes';
import { engineProblem } from '../status';
import {
  makeGpu,
  makeHolder,
  makePull,
  makeReport,
  makeRow,
  makeStatus
} from './fixtures';
import { pseudoBundle } from './pseudo';

/**
 * The English bundle, as the extension gets it without a translator.
 */
const trans = translationBundle();

describe('formatBytes', () => {
  it.each<[number | null | undefined, string]>([
    [null, '—'],
    [undefined, '—'],
    [NaN, '—'],
    [Infinity, '—'],
    [-Infinity, '—'],
    [-5, '0 B'],
    [0, '0 B'],
    [1, '1 B'],
    [1023, '1023 B'],
    [1024, '1 KiB'],
    [1536, '1.5 KiB'],
    [1264, '1.23 KiB'],
    [102_395, '100 KiB'],
    // Rounds to 1024 KiB: the next unit.
    [1_048_570, '1 MiB'],
    [1_048_576, '1 MiB'],
    [12_897_485, '12.3 MiB'],
    [300 * 2 ** 20, '300 MiB'],
    [300_000_000, '286 MiB'],
    [2 ** 30 - 1, '1 GiB'],
    [1.5 * 2 ** 30, '1.5 GiB'],
    // A 32 GiB card (a V100-SXM2-32GB): not "34.4 GB".
    [34_359_738_368, '32 GiB'],
    [80 * 2 ** 30, '80 GiB'],
    [80_000_000_000, '74.5 GiB'],
    [2 ** 40, '1 TiB'],
    [2 ** 50, '1024 TiB'],
    [1e15, '909 TiB']
  ])('formats %p as %p', (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });
});

describe('verdictBadge', () => {
  it.each<[string, string, string]>([
    ['native', 'Compatible', 'good'],
    ['compat', 'Compat mode', 'warn'],
    ['cannot-run', 'Cannot run here', 'bad'],
    ['cpu-only', 'CPU build', 'neutral'],
    ['no-gpus', 'No GPUs here', 'neutral'],
    ['unknown', 'Unknown', 'neutral'],
    ['from-a-newer-server', 'Unknown', 'neutral'],
    ['', 'Unknown', 'neutral']
  ])('shows %p as %p (%p)', (outcome, label, tone) => {
    expect(verdictBadge(trans, outcome)).toEqual({ label, tone });
  });

  it('gives every outcome its own label', () => {
    const outcomes: VerdictOutcome[] = [
      'native',
      'compat',
      'cannot-run',
      'cpu-only',
      'no-gpus',
      'unknown'
    ];
    const labels = outcomes.map(outcome => verdictBadge(trans, outcome).label);
    expect(new Set(labels).size).toBe(outcomes.length);
  });
});

describe('isCompatible', () => {
  it.each<[VerdictOutcome, boolean]>([
    ['native', true],
    ['compat', true],
    ['cpu-only', true],
    ['no-gpus', true],
    ['cannot-run', false],
    ['unknown', false]
  ])('%p is compatible: %p', (outcome, compatible) => {
    const row = makeRow({
      verdict: { outcome, reason: 'why', needed_driver: '' }
    });
    expect(isCompatible(row)).toBe(compatible);
  });
});

describe('launchBlocker and isLaunchable', () => {
  it.each<[string, Parameters<typeof makeRow>[0], string]>([
    ['a ready image', {}, ''],
    [
      'a refused image, with the reason',
      { allowed: false, allowed_reason: 'Only nvcr.io images are allowed.' },
      'Only nvcr.io images are allowed.'
    ],
    [
      'a refused image, without a reason',
      { allowed: false, allowed_reason: '', pulled: false },
      'The administrator does not allow this image.'
    ],
    [
      'an image not pulled yet',
      { pulled: false, kernel_ready: null },
      'Not on this host yet: pull it first.'
    ],
    [
      'an image being probed',
      { kernel_ready: null },
      'Still checking whether it can run a kernel.'
    ],
    [
      'an image being probed, with the reason',
      { kernel_ready: null, kernel_ready_reason: 'Probing…' },
      'Probing…'
    ],
    [
      'an image without Python, with the reason',
      { kernel_ready: false, kernel_ready_reason: 'No Python in the image.' },
      'No Python in the image.'
    ],
    [
      'an image that cannot run a kernel',
      { kernel_ready: false },
      'This image cannot run a kernel.'
    ],
    [
      'an image not offered as a kernel',
      { kernel_name: '' },
      'This image is not offered as a kernel on this server.'
    ]
  ])('%s', (_, overrides, blocker) => {
    const row = makeRow(overrides);
    expect(launchBlocker(trans, row)).toBe(blocker);
    expect(isLaunchable(row)).toBe(blocker === '');
  });
});

describe('shortImageName', () => {
  it.each([
    ['nvcr.io/nvidia/pytorch:24.05-py3', 'pytorch:24.05-py3'],
    ['python:3.11', 'python:3.11'],
    ['ubuntu', 'ubuntu'],
    ['jupyter/scipy-notebook', 'scipy-notebook'],
    ['localhost:5000/tf', 'tf'],
    ['localhost:5000/team/tensorflow:2.16.1-gpu', 'tensorflow:2.16.1-gpu'],
    [
      'ghcr.io/org/jax@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef',
      'jax@0123456789ab'
    ],
    [
      'registry.example.com:5000/ns/img:1.0@sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210',
      'img:1.0@fedcba987654'
    ]
  ])('shortens %p to %p', (reference, short) => {
    expect(shortImageName(reference)).toBe(short);
  });
});

describe('frameworkGroup and frameworkLabel', () => {
  it.each<[Parameters<typeof makeRow>[0], string, string]>([
    [{}, 'PyTorch', 'PyTorch 24.05 (2.4.0a0)'],
    [
      {
        framework: 'TensorFlow',
        framework_release: '',
        framework_version: '2.16.1'
      },
      'TensorFlow',
      'TensorFlow 2.16.1'
    ],
    [
      { framework: 'JAX', framework_release: '0.4.26', framework_version: '' },
      'JAX',
      'JAX 0.4.26'
    ],
    [
      {
        framework: 'JAX',
        framework_release: '0.4.26',
        framework_version: '0.4.26'
      },
      'JAX',
      'JAX 0.4.26'
    ],
    [
      { framework: 'RAPIDS', framework_release: '', framework_version: '' },
      'RAPIDS',
      'RAPIDS'
    ],
    [{ framework: '', python_version: '3.11' }, 'Python', 'Python 3.11'],
    [{ framework: '', python_version: '' }, 'Python', 'Python']
  ])('%p is in group %p, labelled %p', (overrides, group, label) => {
    const row = makeRow(overrides);
    expect(frameworkGroup(row)).toBe(group);
    expect(frameworkLabel(row)).toBe(label);
  });
});

describe('filterImages', () => {
  const torch = makeRow({ reference: 'nvcr.io/nvidia/pytorch:24.05-py3' });
  const tf = makeRow({
    reference: 'tensorflow/tensorflow:2.16.1-gpu',
    description: 'Google TensorFlow',
    framework: 'TensorFlow',
    framework_release: '',
    framework_version: '2.16.1',
    frameworks: { tensorflow: '2.16.1' },
    cuda_version: '12.3',
    pulled: false,
    kernel_ready: null,
    verdict: { outcome: 'compat', reason: '', needed_driver: '' }
  });
  const plain = makeRow({
    reference: 'python:3.11-slim',
    description: '',
    framework: '',
    framework_release: '',
    framework_version: '',
    frameworks: {},
    python_version: '3.11',
    cuda_version: '',
    gpu: false,
    kernel_ready: false,
    verdict: { outcome: 'cpu-only', reason: '', needed_driver: '' }
  });
  const old = makeRow({
    reference: 'nvcr.io/nvidia/pytorch:25.01-py3',
    framework_release: '25.01',
    cuda_version: '12.8',
    verdict: {
      outcome: 'cannot-run',
      reason: 'CUDA 12.8 needs driver 570.',
      needed_driver: '570'
    }
  });
  const rows = [torch, tf, plain, old];
  const none: IImageFilter = {
    query: '',
    kernelReady: false,
    compatible: false,
    pulled: false
  };

  it.each<[string, Partial<IImageFilter>, typeof rows]>([
    ['no filter', {}, [torch, tf, plain, old]],
    ['kernel-ready', { kernelReady: true }, [torch, old]],
    ['compatible', { compatible: true }, [torch, tf, plain]],
    ['pulled', { pulled: true }, [torch, plain, old]],
    [
      'kernel-ready, compatible and pulled',
      { kernelReady: true, compatible: true, pulled: true },
      [torch]
    ],
    ['a framework', { query: 'pytorch' }, [torch, old]],
    ['a word in capitals', { query: 'TENSORFLOW' }, [tf]],
    ['a word of the description', { query: 'google' }, [tf]],
    ['the framework release', { query: '24.05' }, [torch]],
    ['the Python version', { query: 'python 3.11' }, [plain]],
    ['the CUDA version', { query: 'cuda 12.8' }, [old]],
    ['a CUDA major version', { query: 'cuda 12' }, [torch, tf, old]],
    // Not a substring of the tag: pytorch:25.01 has CUDA 12.8.
    ['a CUDA version no image has', { query: 'cuda 25' }, []],
    ['a word of the reference', { query: 'nvcr.io' }, [torch, old]],
    ['words that must all match', { query: '  pytorch   25.01 ' }, [old]],
    ['words that match no row together', { query: 'pytorch google' }, []],
    ['a query and a flag', { query: 'pytorch', compatible: true }, [torch]],
    ['blank query', { query: '   ' }, [torch, tf, plain, old]]
  ])('keeps the rows for %s', (_, filter, expected) => {
    expect(filterImages(rows, { ...none, ...filter })).toEqual(expected);
  });

  it("offers only pulled images where the user's pulls cannot succeed", () => {
    expect(filterImages(rows, none, true)).toEqual([torch, plain, old]);
    expect(filterImages(rows, { ...none, query: 'tensorflow' }, true)).toEqual(
      []
    );
  });
});

describe('groupByFramework', () => {
  it('sorts the groups by name with Python last, rows in catalog order', () => {
    const tf = makeRow({ reference: 'tf', framework: 'TensorFlow' });
    const py1 = makeRow({ reference: 'py1', framework: '' });
    const torch1 = makeRow({ reference: 'torch1', framework: 'PyTorch' });
    const jax = makeRow({ reference: 'jax', framework: 'JAX' });
    const py2 = makeRow({ reference: 'py2', framework: '' });
    const torch2 = makeRow({ reference: 'torch2', framework: 'PyTorch' });
    const groups = groupByFramework([tf, py1, torch1, jax, py2, torch2]);
    expect(groups.map(g => g.group)).toEqual([
      'JAX',
      'PyTorch',
      'TensorFlow',
      'Python'
    ]);
    expect(groups.map(g => g.rows.map(r => r.reference))).toEqual([
      ['jax'],
      ['torch1', 'torch2'],
      ['tf'],
      ['py1', 'py2']
    ]);
  });

  it('keeps Python last whatever the order of the rows', () => {
    const rows = [
      makeRow({ reference: 'a', framework: '' }),
      makeRow({ reference: 'b', framework: 'Zeta' }),
      makeRow({ reference: 'c', framework: 'Alpha' })
    ];
    expect(groupByFramework(rows).map(g => g.group)).toEqual([
      'Alpha',
      'Zeta',
      'Python'
    ]);
    expect(groupByFramework(rows.reverse()).map(g => g.group)).toEqual([
      'Alpha',
      'Zeta',
      'Python'
    ]);
  });

  it('gives no groups for no rows, and one for Python alone', () => {
    expect(groupByFramework([])).toEqual([]);
    const row = makeRow({ framework: '' });
    expect(groupByFramework([row])).toEqual([{ group: 'Python', rows: [row] }]);
  });
});

describe('holderLabel', () => {
  it.each<[Parameters<typeof makeHolder>[0], string]>([
    [
      { mine: true, notebook: 'work/analysis/train.ipynb' },
      'Your notebook train.ipynb'
    ],
    [{ mine: true, notebook: 'top.ipynb' }, 'Your notebook top.ipynb'],
    [{ mine: true, notebook: '' }, 'Your kernel'],
    [{ mine: false, user: 'alice' }, 'alice'],
    [{ mine: false, user: '' }, 'Another user']
  ])('labels %p as %p', (overrides, label) => {
    expect(holderLabel(trans, makeHolder(overrides))).toBe(label);
  });
});

describe('GPU availability', () => {
  const mine = makeHolder({ mine: true, kernel_id: 'k-mine' });
  const other = makeHolder({ user: 'bob' });

  it.each<[string, 'exclusive' | 'shared', number, number, boolean]>([
    ['a free GPU, exclusive', 'exclusive', 1, 0, true],
    ['a held GPU, exclusive', 'exclusive', 1, 1, false],
    [
      'a held GPU, exclusive, whatever the shared limit',
      'exclusive',
      4,
      1,
      false
    ],
    ['a GPU with room, shared', 'shared', 2, 1, true],
    ['a full GPU, shared', 'shared', 2, 2, false],
    ['a GPU, shared with a limit below 1', 'shared', 0, 0, true],
    ['a held GPU, shared with a limit below 1', 'shared', 0, 1, false]
  ])('hasRoom: %s', (_, policy, max, holders, room) => {
    const report = makeReport([], { policy, max_kernels_per_gpu: max });
    const gpu = makeGpu('0', Array(holders).fill(other));
    expect(hasRoom(gpu, report)).toBe(room);
  });

  it("availableGpus: the free GPUs, and the kernel's own", () => {
    const report = makeReport([
      makeGpu('0'),
      makeGpu('1', [mine]),
      makeGpu('2', [other])
    ]);
    expect(availableGpus(null)).toEqual([]);
    expect(availableGpus(report).map(g => g.index)).toEqual(['0']);
    expect(availableGpus(report, 'k-mine').map(g => g.index)).toEqual([
      '0',
      '1'
    ]);
    expect(availableGpus(report, 'k-else').map(g => g.index)).toEqual(['0']);
  });

  it('gpusOfKernel: the indexes of the GPUs my kernel holds', () => {
    const report = makeReport([
      makeGpu('0', [mine]),
      makeGpu('1', [other]),
      makeGpu('2', [other, mine])
    ]);
    expect(gpusOfKernel(report, 'k-mine')).toEqual(['0', '2']);
    expect(gpusOfKernel(report, 'k-else')).toEqual([]);
    expect(gpusOfKernel(report, '')).toEqual([]);
    expect(gpusOfKernel(null, 'k-mine')).toEqual([]);
  });

  it.each<[string[], string]>([
    [[], 'no GPU'],
    [['0'], 'GPU 0'],
    [['0', '1'], 'GPUs 0,1'],
    [['0/1', '0/2'], 'GPUs 0/1,0/2']
  ])('gpuListLabel(trans, %p) is %p', (indexes, label) => {
    expect(gpuListLabel(trans, indexes)).toBe(label);
  });

  it.each<[number, number, number]>([
    [80, 20, 0.25],
    [80, 0, 0],
    [80, 100, 1]
  ])('memoryFraction of %p used %p is %p', (total, used, fraction) => {
    const gpu = makeGpu('0', [], { memory_total: total, memory_used: used });
    expect(memoryFraction(gpu)).toBeCloseTo(fraction);
  });

  it.each<[number, number | null]>([
    [0, 10],
    [80, null],
    [0, null]
  ])('memoryFraction of %p used %p is unknown, not 0', (total, used) => {
    const gpu = makeGpu('0', [], { memory_total: total, memory_used: used });
    expect(memoryFraction(gpu)).toBeNull();
  });
});

describe('gpuChoices', () => {
  const mine = makeHolder({ mine: true, kernel_id: 'k-mine' });
  const other = makeHolder({ user: 'bob' });
  const summary = (choices: ReturnType<typeof gpuChoices>) =>
    choices.map(c => [c.value, c.disabled, c.reason]);

  it('offers no GPU alone without a report', () => {
    const choices = gpuChoices(trans, null, makeRow());
    expect(choices).toEqual([
      {
        value: 'count:0',
        label: 'No GPU',
        option: 'No GPU',
        request: 0,
        disabled: false,
        reason: ''
      }
    ]);
  });

  it('offers no GPU alone on a host without GPUs', () => {
    const report = makeReport([], {
      source: 'none',
      reason: 'No NVIDIA driver on this host'
    });
    expect(summary(gpuChoices(trans, report, makeRow()))).toEqual([
      ['count:0', false, '']
    ]);
  });

  it('offers counts, then each GPU, when all are free', () => {
    const report = makeReport([makeGpu('0'), makeGpu('1')]);
    const choices = gpuChoices(trans, report, makeRow());
    expect(choices.map(c => [c.value, c.label, c.request])).toEqual([
      ['count:0', 'No GPU', 0],
      ['count:1', '1 GPU', 1],
      ['count:2', '2 GPUs', 2],
      ['id:GPU-0', 'GPU 0 only (NVIDIA A100-SXM4-80GB)', ['GPU-0']],
      ['id:GPU-1', 'GPU 1 only (NVIDIA A100-SXM4-80GB)', ['GPU-1']]
    ]);
    expect(choices.every(c => !c.disabled && c.reason === '')).toBe(true);
  });

  it('offers GPUs without an image (the counts of a host)', () => {
    const report = makeReport([makeGpu('0')]);
    expect(summary(gpuChoices(trans, report, null))).toEqual([
      ['count:0', false, ''],
      ['count:1', false, ''],
      ['id:GPU-0', false, '']
    ]);
  });

  it('disables every GPU for a CPU build', () => {
    const report = makeReport([makeGpu('0'), makeGpu('1')]);
    const reason = 'This image is a CPU build: it cannot use GPUs.';
    expect(summary(gpuChoices(trans, report, makeRow({ gpu: false })))).toEqual(
      [
        ['count:0', false, ''],
        ['count:1', true, reason],
        ['count:2', true, reason]
      ]
    );
  });

  it("disables every GPU for an image the driver cannot run, with the verdict's reason", () => {
    const report = makeReport([makeGpu('0')]);
    const row = makeRow({
      verdict: {
        outcome: 'cannot-run',
        reason: 'CUDA 12.8 needs driver 570 or newer; this host has 550.',
        needed_driver: '570'
      }
    });
    expect(summary(gpuChoices(trans, report, row))).toEqual([
      ['count:0', false, ''],
      [
        'count:1',
        true,
        'CUDA 12.8 needs driver 570 or newer; this host has 550.'
      ]
    ]);
  });

  it('disables the GPUs of an image the driver cannot run, even without a reason', () => {
    const report = makeReport([makeGpu('0')]);
    const row = makeRow({
      verdict: { outcome: 'cannot-run', reason: '', needed_driver: '570' }
    });
    const choices = gpuChoices(trans, report, row);
    expect(choices.map(c => [c.value, c.disabled])).toEqual([
      ['count:0', false],
      ['count:1', true]
    ]);
    expect(choices[1].reason).not.toBe('');
  });

  it('disables the counts and the GPUs that are taken', () => {
    const report = makeReport([
      makeGpu('0', [other]),
      makeGpu('1'),
      makeGpu('2', [other])
    ]);
    expect(summary(gpuChoices(trans, report, makeRow()))).toEqual([
      ['count:0', false, ''],
      ['count:1', false, ''],
      ['count:2', true, 'Only 1 GPU is free.'],
      ['count:3', true, 'Only 1 GPU is free.'],
      ['id:GPU-0', true, 'GPU 0 is taken.'],
      ['id:GPU-1', false, ''],
      ['id:GPU-2', true, 'GPU 2 is taken.']
    ]);
  });

  it('says how many GPUs are free in the plural', () => {
    const report = makeReport([
      makeGpu('0'),
      makeGpu('1'),
      makeGpu('2', [other])
    ]);
    const choices = gpuChoices(trans, report, makeRow());
    expect(choices.find(c => c.value === 'count:3')?.reason).toBe(
      'Only 2 GPUs are free.'
    );
  });

  it('says when every GPU is taken', () => {
    const report = makeReport([makeGpu('0', [other]), makeGpu('1', [other])]);
    expect(summary(gpuChoices(trans, report, makeRow()))).toEqual([
      ['count:0', false, ''],
      ['count:1', true, 'No free GPU: every GPU is taken.'],
      ['count:2', true, 'No free GPU: every GPU is taken.'],
      ['id:GPU-0', true, 'GPU 0 is taken.'],
      ['id:GPU-1', true, 'GPU 1 is taken.']
    ]);
  });

  it('lets kernels share a GPU up to max_kernels_per_gpu under the shared policy', () => {
    const gpus = [makeGpu('0', [other]), makeGpu('1', [other, other])];
    const shared = makeReport(gpus, {
      policy: 'shared',
      max_kernels_per_gpu: 2
    });
    expect(summary(gpuChoices(trans, shared, makeRow()))).toEqual([
      ['count:0', false, ''],
      ['count:1', false, ''],
      ['count:2', true, 'Only 1 GPU is free.'],
      ['id:GPU-0', false, ''],
      ['id:GPU-1', true, 'GPU 1 is taken.']
    ]);
    // The same GPUs under the exclusive policy are all taken.
    const exclusive = makeReport(gpus, {
      policy: 'exclusive',
      max_kernels_per_gpu: 2
    });
    expect(
      gpuChoices(trans, exclusive, makeRow())
        .filter(c => c.value !== 'count:0')
        .every(c => c.disabled)
    ).toBe(true);
  });

  it("refuses, waiting or not, what would pass the user's cap, and says why", () => {
    // Two GPUs, one held by this user's other kernel, one by another user; one GPU per user.
    const report = makeReport([makeGpu('0', [mine]), makeGpu('1', [other])], {
      max_gpus_per_user: 1
    });
    const why =
      'Over your limit of 1 GPU per user (your other kernels hold 1): shut one down first.';
    for (const wait of [false, true]) {
      expect(summary(gpuChoices(trans, report, makeRow(), '', wait))).toEqual([
        ['count:0', false, ''],
        ['count:1', true, why],
        ['count:2', true, why],
        ['id:GPU-0', true, why],
        ['id:GPU-1', true, why]
      ]);
    }
    // Nothing to wait for: the panel offers no wait.
    expect(offersWait(trans, true, report, makeRow())).toBe(false);
    // The kernel that holds it may restart on it (a restart gives its GPU back first).
    const restart = gpuChoices(trans, report, makeRow(), 'k-mine');
    expect(restart.find(c => c.value === 'count:1')?.disabled).toBe(false);
    // Under the cap, a busy GPU can still be waited for.
    const roomy = makeReport(report.gpus, { max_gpus_per_user: 2 });
    expect(offersWait(trans, true, roomy, makeRow())).toBe(true);
  });

  it("counts the kernel's own GPUs as free (a restart gives them back)", () => {
    const report = makeReport([
      makeGpu('0', [mine]),
      makeGpu('1', [other]),
      makeGpu('2')
    ]);
    expect(summary(gpuChoices(trans, report, makeRow(), 'k-mine'))).toEqual([
      ['count:0', false, ''],
      ['count:1', false, ''],
      ['count:2', false, ''],
      ['count:3', true, 'Only 2 GPUs are free.'],
      ['id:GPU-0', false, ''],
      ['id:GPU-1', true, 'GPU 1 is taken.'],
      ['id:GPU-2', false, '']
    ]);
    // Without the kernel id, the kernel's GPU is as taken as any other.
    expect(summary(gpuChoices(trans, report, makeRow()))[4]).toEqual([
      'id:GPU-0',
      true,
      'GPU 0 is taken.'
    ]);
  });
});

describe('defaultGpuChoice', () => {
  const other = makeHolder({ user: 'bob' });

  it.each<[string, ReturnType<typeof makeReport> | null, boolean, string]>([
    [
      '1 GPU for a GPU build when one is free',
      makeReport([makeGpu('0')]),
      true,
      'count:1'
    ],
    ['no GPU for a CPU build', makeReport([makeGpu('0')]), false, 'count:0'],
    [
      'no GPU when every GPU is taken',
      makeReport([makeGpu('0', [other])]),
      true,
      'count:0'
    ],
    ['no GPU on a host without GPUs', makeReport([]), true, 'count:0'],
    ['no GPU without a report', null, true, 'count:0']
  ])('%s', (_, report, gpu, value) => {
    const row = makeRow({ gpu });
    expect(defaultGpuChoice(gpuChoices(trans, report, row), row)).toBe(value);
  });
});

describe('noGpuWarning', () => {
  const other = makeHolder({ user: 'bob' });
  const warn = (
    report: ReturnType<typeof makeReport> | null,
    gpu: boolean,
    value?: string
  ): string => {
    const row = makeRow({ gpu });
    const choices = gpuChoices(trans, report, row);
    const chosen = value ?? defaultGpuChoice(choices, row);
    return noGpuWarning(
      trans,
      choices,
      row,
      choices.find(c => c.value === chosen)
    );
  };

  it('says before a launch that a GPU image would get no GPU', () => {
    // The fallback to "No GPU" when every GPU is taken is never silent.
    expect(warn(makeReport([makeGpu('0', [other])]), true)).toBe(
      'No free GPU: every GPU is taken. A notebook started now runs without a GPU.'
    );
    expect(warn(makeReport([]), true)).toMatch(
      /A notebook started now runs without a GPU\.$/
    );
  });

  it('says nothing when a GPU can be had, or the image is a CPU build', () => {
    const free = makeReport([makeGpu('0')]);
    expect(warn(free, true)).toBe('');
    // "No GPU" chosen while one is free: the user's choice, not a fallback.
    expect(warn(free, true, 'count:0')).toBe('');
    expect(warn(makeReport([makeGpu('0', [other])]), false)).toBe('');
  });
});

describe('describeNoGpus', () => {
  it.each<[string, ReturnType<typeof makeReport> | null, string]>([
    [
      'no report',
      null,
      'GPUs are unknown: the server has not answered. CPU kernels still work.'
    ],
    [
      'NVML with a reason',
      makeReport([], { source: 'nvml', reason: 'NVML found no GPU' }),
      'NVML found no GPU. CPU kernels still work.'
    ],
    [
      'NVML with a reason ending in a full stop',
      makeReport([], { source: 'nvml', reason: 'NVML found no GPU.' }),
      'NVML found no GPU. CPU kernels still work.'
    ],
    [
      'NVML without a reason',
      makeReport([], { source: 'nvml', reason: '' }),
      'This host has no GPUs. CPU kernels still work.'
    ],
    [
      'no driver, with the reason',
      makeReport([], {
        source: 'none',
        reason: '  libnvidia-ml.so.1 not found  '
      }),
      'libnvidia-ml.so.1 not found. CPU kernels still work.'
    ],
    [
      'no driver, with a blank reason',
      makeReport([], { source: 'none', reason: '   ' }),
      'This host has no GPUs. CPU kernels still work.'
    ],
    [
      'an empty static inventory',
      makeReport([], { source: 'static', reason: 'ignored' }),
      "The administrator's static GPU inventory is empty. CPU kernels still work."
    ]
  ])('%s', (_, report, text) => {
    expect(describeNoGpus(trans, report)).toBe(text);
  });
});

describe('describeNoGpus says "CPU kernels still work." once', () => {
  // The reasons gpus.py's nvml_failure_reason gives, which end with the
  // reassurance themselves.
  it.each([
    'No NVIDIA driver library (libnvidia-ml.so) on this host, so no GPUs are listed. CPU kernels still work.',
    'The NVIDIA kernel driver is not loaded, so no GPUs are listed. CPU kernels still work.',
    'NVML could not be read (Unknown Error); no GPUs are listed. CPU kernels still work.',
    'NVML could not be read (Unknown Error); no GPUs are listed. CPU kernels still work',
    'The NVIDIA kernel driver is not loaded.  cpu kernels still work.  ',
    'The NVIDIA driver is loaded but reports no GPUs.'
  ])('for %p', reason => {
    for (const source of ['none', 'nvml'] as const) {
      const text = describeNoGpus(trans, makeReport([], { source, reason }));
      expect(text.match(/CPU kernels still work/gi)).toHaveLength(1);
      expect(text).toMatch(/[.)] CPU kernels still work\.$/);
    }
  });

  it('keeps the reason before the reassurance', () => {
    expect(
      describeNoGpus(
        trans,
        makeReport([], {
          source: 'none',
          reason:
            'The NVIDIA kernel driver is not loaded, so no GPUs are listed. CPU kernels still work.'
        })
      )
    ).toBe(
      'The NVIDIA kernel driver is not loaded, so no GPUs are listed. CPU kernels still work.'
    );
  });

  it('says it alone when the reason was nothing else', () => {
    expect(
      describeNoGpus(
        trans,
        makeReport([], { source: 'none', reason: 'CPU kernels still work.' })
      )
    ).toBe('This host has no GPUs. CPU kernels still work.');
  });
});

describe('gpuMemoryText', () => {
  it('shows used of total in binary units', () => {
    const gpu = makeGpu('0', [], {
      memory_total: 80 * 2 ** 30,
      memory_used: 4 * 2 ** 30
    });
    expect(gpuMemoryText(trans, gpu, 'nvml')).toEqual({
      text: '4 GiB / 80 GiB',
      title: '4 GiB of 80 GiB GPU memory used'
    });
  });

  it("shows a static inventory's unknown use as unknown, and says why", () => {
    // The V100-SXM2-32GB read "0 B / 34.4 GB".
    const gpu = makeGpu('0', [], {
      memory_total: 34_359_738_368,
      memory_used: null
    });
    expect(gpuMemoryText(trans, gpu, 'static')).toEqual({
      text: '— / 32 GiB',
      title:
        "Memory use is unknown for GPUs listed in the server's configuration."
    });
  });

  it('shows what NVML did not say as unknown', () => {
    const gpu = makeGpu('0', [], { memory_total: 0, memory_used: null });
    expect(gpuMemoryText(trans, gpu, 'nvml')).toEqual({
      text: '— / —',
      title: "The NVIDIA driver does not report this GPU's memory."
    });
  });
});

describe('imageNames', () => {
  it('names each image by its last part and tag when that is enough', () => {
    const names = imageNames([
      'tensorflow/tensorflow:2.15.0-gpu',
      'tensorflow/tensorflow:2.15.0-gpu-jupyter',
      'nvcr.io/nvidia/pytorch:25.10-py3',
      'python:3.11-slim'
    ]);
    expect([...names.values()]).toEqual([
      'tensorflow:2.15.0-gpu',
      'tensorflow:2.15.0-gpu-jupyter',
      'pytorch:25.10-py3',
      'python:3.11-slim'
    ]);
  });

  it('adds the parts of the repository it takes to tell them apart', () => {
    const names = imageNames([
      'nvcr.io/nvidia/pytorch:24.05-py3',
      'pytorch:24.05-py3',
      'registry.example:5000/team/pytorch:24.05-py3',
      'ghcr.io/team/pytorch:24.05-py3',
      'ghcr.io/team/jax:0.4'
    ]);
    expect(Object.fromEntries(names)).toEqual({
      'nvcr.io/nvidia/pytorch:24.05-py3': 'nvidia/pytorch:24.05-py3',
      'pytorch:24.05-py3': 'pytorch:24.05-py3',
      'registry.example:5000/team/pytorch:24.05-py3':
        'registry.example:5000/team/pytorch:24.05-py3',
      'ghcr.io/team/pytorch:24.05-py3': 'ghcr.io/team/pytorch:24.05-py3',
      'ghcr.io/team/jax:0.4': 'jax:0.4'
    });
  });

  it('keeps digests apart, cut to 12 hex digits when that is enough', () => {
    const a = `ghcr.io/org/jax@sha256:${'a'.repeat(64)}`;
    const b = `ghcr.io/org/jax@sha256:${'b'.repeat(64)}`;
    const c = `ghcr.io/org/jax@sha256:${'b'.repeat(63)}c`;
    const names = imageNames([a, b, c]);
    expect(names.get(a)).toBe(`jax@${'a'.repeat(12)}`);
    // Same 12 first digits: the whole reference.
    expect(names.get(b)).toBe(b);
    expect(names.get(c)).toBe(c);
  });

  it('never drops the tag, and names one image by its last part', () => {
    expect(imageNames(['a/b/c:tag']).get('a/b/c:tag')).toBe('c:tag');
    expect(imageNames([]).size).toBe(0);
  });
});

describe('referenceBreaks', () => {
  it.each<[string, string[]]>([
    [
      'tensorflow/tensorflow:2.15.0-gpu-jupyter',
      ['tensorflow/', 'tensorflow:', '2.15.0', '-gpu', '-jupyter']
    ],
    [
      'nvcr.io/nvidia/pytorch:25.10-py3',
      ['nvcr.io/', 'nvidia/', 'pytorch:', '25.10', '-py3']
    ],
    ['python', ['python']],
    ['my_image:v1', ['my', '_image:', 'v1']],
    ['', []]
  ])('cuts %p only at / : @ - _', (reference, parts) => {
    expect(referenceBreaks(reference)).toEqual(parts);
    expect(referenceBreaks(reference).join('')).toBe(reference);
  });
});

describe('engineProblem', () => {
  it.each<[string, ReturnType<typeof makeStatus> | null, string]>([
    ['no status yet', null, ''],
    ['a reachable engine', makeStatus(), ''],
    [
      'an unreachable engine, with its message',
      makeStatus({ ok: false, message: '  Docker is not running.  ' }),
      'Docker is not running.'
    ],
    [
      'an unreachable engine, without a message',
      makeStatus({ ok: false, message: ' ', endpoint: 'tcp://gpu-box:2375' }),
      'The container engine at tcp://gpu-box:2375 is unreachable.'
    ]
  ])('%s', (_, status, text) => {
    expect(engineProblem(trans, status)).toBe(text);
  });
});

describe('pullProgressText', () => {
  it.each<[string, Partial<IPull>, string]>([
    ['queued', { state: 'queued' }, 'Waiting for another pull to finish…'],
    ['done', { state: 'done', phase: 'complete' }, 'Pulled.'],
    ['cancelled', { state: 'cancelled' }, 'Cancelled.'],
    [
      'failed, with the message',
      { state: 'error', message: 'unauthorized: authentication required' },
      'unauthorized: authentication required'
    ],
    [
      'failed, without a message',
      { state: 'error', message: '' },
      'The pull failed.'
    ],
    ['resolving', { phase: 'resolving' }, 'Asking the registry…'],
    [
      'downloading',
      { phase: 'downloading' },
      'Downloading 114 MiB of 286 MiB (40%)'
    ],
    [
      'downloading, nothing known yet',
      {
        phase: 'downloading',
        total_bytes: 0,
        downloaded_bytes: 0,
        progress: 0
      },
      'Downloading 0 B of 0 B (0%)'
    ],
    [
      'downloading, progress above 1',
      { phase: 'downloading', progress: 1.7 },
      'Downloading 114 MiB of 286 MiB (100%)'
    ],
    [
      'downloading, progress below 0',
      { phase: 'downloading', progress: -0.5 },
      'Downloading 114 MiB of 286 MiB (0%)'
    ],
    [
      'extracting while layers still download',
      { phase: 'extracting', downloaded_bytes: 200_000_000, progress: 0.675 },
      'Downloading 191 MiB of 286 MiB (68%)'
    ],
    [
      'extracting after the download, one layer',
      {
        phase: 'extracting',
        downloaded_bytes: 300_000_000,
        extracted_layers: 1
      },
      'Extracting (1 layer done)…'
    ],
    [
      'extracting after the download, several layers',
      {
        phase: 'extracting',
        downloaded_bytes: 300_000_000,
        extracted_layers: 3
      },
      'Extracting (3 layers done)…'
    ],
    [
      'extracting after the download, no layer yet',
      {
        phase: 'extracting',
        downloaded_bytes: 300_000_000,
        extracted_layers: 0
      },
      'Extracting (0 layers done)…'
    ]
  ])('%s', (_, overrides, text) => {
    expect(pullProgressText(trans, makePull(overrides))).toBe(text);
  });
});

describe('translation', () => {
  const pseudo = pseudoBundle();
  const t = (text: string) => `⟦jupyter_gpu_containers:${text}⟧`;

  it("writes people's words through the extension's bundle", () => {
    expect(verdictBadge(pseudo, 'native').label).toBe(t('verdict|Compatible'));
    expect(launchBlocker(pseudo, makeRow({ pulled: false }))).toBe(
      t('Not on this host yet: pull it first.')
    );
    expect(holderLabel(pseudo, makeHolder({ mine: true }))).toBe(
      t('Your kernel')
    );
    expect(gpuListLabel(pseudo, ['0', '1'])).toBe(t('GPUs 0,1'));
    expect(describeNoGpus(pseudo, null)).toBe(
      t(
        'GPUs are unknown: the server has not answered. CPU kernels still work.'
      )
    );
    // The server's reason is its own sentence, inside the translated one.
    expect(
      describeNoGpus(
        pseudo,
        makeReport([], { source: 'none', reason: 'No NVML.' })
      )
    ).toBe(t('No NVML. CPU kernels still work.'));
    expect(engineProblem(pseudo, makeStatus({ ok: false, message: '' }))).toBe(
      t('The container engine at unix:///var/run/docker.sock is unreachable.')
    );
    expect(pullProgressText(pseudo, makePull())).toBe(
      t('Downloading 114 MiB of 286 MiB (40%)')
    );
    const report = makeReport([makeGpu('0'), makeGpu('1', [makeHolder()])]);
    expect(
      gpuChoices(pseudo, report, makeRow()).map(c => [c.label, c.reason])
    ).toEqual([
      [t('No GPU'), ''],
      [t('1 GPU'), ''],
      [t('2 GPUs'), t('Only 1 GPU is free.')],
      [t('GPU 0 only (NVIDIA A100-SXM4-80GB)'), ''],
      [t('GPU 1 only (NVIDIA A100-SXM4-80GB)'), t('GPU 1 is taken.')]
    ]);
  });

  it("keeps the server's sentences, names and numbers as they are", () => {
    expect(
      launchBlocker(pseudo, makeRow({ allowed: false, allowed_reason: 'No.' }))
    ).toBe('No.');
    expect(holderLabel(pseudo, makeHolder({ user: 'bob' }))).toBe('bob');
    expect(
      pullProgressText(pseudo, makePull({ state: 'error', message: 'Gone.' }))
    ).toBe('Gone.');
    expect(formatBytes(1.5 * 2 ** 30)).toBe('1.5 GiB');
    expect(frameworkLabel(makeRow())).toBe('PyTorch 24.05 (2.4.0a0)');
  });
});
