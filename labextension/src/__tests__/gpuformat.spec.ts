/**
 * The pure helpers of gpuformat.ts: GPU holders, availability, memory and why there are no GPUs.
 */
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
import { translationBundle } from '../i18n';
import { makeGpu, makeHolder, makeReport } from './fixtures';

/**
 * The English bundle, as the extension gets it without a translator.
 */
const trans = translationBundle();

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
    [[], 'No GPU'],
    [['0'], 'GPU 0'],
    [['0', '1'], 'GPUs 0,1'],
    [['0/1', '0/2'], 'GPUs 0/1,0/2']
  ])('gpuListLabel(trans, %p) is %p', (indexes, label) => {
    expect(gpuListLabel(trans, indexes)).toBe(label);
  });

  it('says "no GPU" in lower case only inside a sentence', () => {
    expect(gpuListLabel(trans, [], 'sentence')).toBe('no GPU');
    expect(gpuListLabel(trans, ['0'], 'sentence')).toBe('GPU 0');
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
