/**
 * The pure helpers of imageformat.ts: verdict badges, launchability, image names, frameworks,
 * the catalog's filters and groups, a pull's progress.
 */
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
import { makePull, makeRow } from './fixtures';

/**
 * The English bundle, as the extension gets it without a translator.
 */
const trans = translationBundle();

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
    ],
    [
      'a retired image, with its message and redirect',
      {
        retired: {
          message: 'The course moved to 2025.',
          redirect: 'jgc/course:2025'
        }
      },
      'Retired by the administrator: The course moved to 2025. Use jgc/course:2025 instead.'
    ],
    [
      'a retired image, without a message or a redirect',
      { retired: { message: '', redirect: '' } },
      'Retired by the administrator.'
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

  it('names the repository of images whose last parts match, whatever their tags', () => {
    // "ngc-like:1" and "ngc-like:24.05-py3" looked like one image's tags.
    const names = imageNames([
      'registry.example/a/ngc-like:1',
      'other/ngc-like:24.05-py3',
      'nvcr.io/nvidia/pytorch:24.05-py3',
      'nvcr.io/nvidia/pytorch:25.10-py3',
      'python:3.11-slim'
    ]);
    expect(Object.fromEntries(names)).toEqual({
      'registry.example/a/ngc-like:1': 'a/ngc-like:1',
      'other/ngc-like:24.05-py3': 'other/ngc-like:24.05-py3',
      // One repository's tags, and a name no other has: short.
      'nvcr.io/nvidia/pytorch:24.05-py3': 'pytorch:24.05-py3',
      'nvcr.io/nvidia/pytorch:25.10-py3': 'pytorch:25.10-py3',
      'python:3.11-slim': 'python:3.11-slim'
    });
  });

  it('goes as deep as the repositories differ, and reads a port as no tag', () => {
    const names = imageNames([
      'ghcr.io/a/team/jax:0.4',
      'ghcr.io/b/team/jax:0.5',
      'registry.example:5000/jax',
      'jax@sha256:' + 'c'.repeat(64)
    ]);
    expect([...names.values()]).toEqual([
      'a/team/jax:0.4',
      'b/team/jax:0.5',
      'registry.example:5000/jax',
      `jax@${'c'.repeat(12)}`
    ]);
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
