/**
 * The pure helpers of gpuchoices.ts: the GPU choices of a launch or switch, the default one, and
 * the warning before a notebook runs without a GPU.
 */
import {
  defaultGpuChoice,
  gpuChoices,
  noGpuWarning,
  offersWait
} from '../gpuchoices';
import { translationBundle } from '../i18n';
import { makeGpu, makeHolder, makeReport, makeRow } from './fixtures';

/**
 * The English bundle, as the extension gets it without a translator.
 */
const trans = translationBundle();

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
        ariaLabel: 'No GPU',
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
        ['count:2', true, 'Over your limit of 1 GPU per user.'],
        ['id:GPU-0', true, why],
        ['id:GPU-1', true, why]
      ]);
    }
    // Holding none, two asked of a limit of one: the limit, not "your other kernels hold 0".
    const none = makeReport([makeGpu('0', []), makeGpu('1', [])], {
      max_gpus_per_user: 1
    });
    expect(summary(gpuChoices(trans, none, makeRow()))).toEqual([
      ['count:0', false, ''],
      ['count:1', false, ''],
      ['count:2', true, 'Over your limit of 1 GPU per user.'],
      ['id:GPU-0', false, ''],
      ['id:GPU-1', false, '']
    ]);
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

describe("gpuChoices' option texts", () => {
  const mine = makeHolder({ mine: true, kernel_id: 'k-mine' });
  const other = makeHolder({ user: 'bob' });
  const texts = (choices: ReturnType<typeof gpuChoices>) =>
    choices.map(c => [c.value, c.option]);

  it('say why in a few words, the whole sentence in their aria label', () => {
    // A narrow select cut "1 GPU — Over your limit of 1 GPU per user." at
    // "1 GPU — Over your l": the sentence is the tooltip's, not the text's.
    const report = makeReport([makeGpu('0', [mine]), makeGpu('1', [other])], {
      max_gpus_per_user: 1
    });
    const choices = gpuChoices(trans, report, makeRow());
    expect(texts(choices)).toEqual([
      ['count:0', 'No GPU'],
      ['count:1', '1 GPU (over your limit)'],
      ['count:2', '2 GPUs (over your limit)'],
      ['id:GPU-0', 'GPU 0 only (NVIDIA A100-SXM4-80GB, over your limit)'],
      ['id:GPU-1', 'GPU 1 only (NVIDIA A100-SXM4-80GB, over your limit)']
    ]);
    expect(choices.map(c => c.ariaLabel)).toEqual([
      'No GPU',
      ...choices.slice(1).map(c => `${c.label} — ${c.reason}`)
    ]);
    expect(choices[2].reason).toBe('Over your limit of 1 GPU per user.');
  });

  it('say which GPUs are taken, and which a start waits for', () => {
    const report = makeReport([
      makeGpu('0', [other]),
      makeGpu('1'),
      makeGpu('2', [mine])
    ]);
    expect(texts(gpuChoices(trans, report, makeRow()))).toEqual([
      ['count:0', 'No GPU'],
      ['count:1', '1 GPU'],
      ['count:2', '2 GPUs (only 1 free)'],
      ['count:3', '3 GPUs (only 1 free)'],
      ['id:GPU-0', 'GPU 0 only (NVIDIA A100-SXM4-80GB, taken)'],
      ['id:GPU-1', 'GPU 1 only (NVIDIA A100-SXM4-80GB)'],
      ['id:GPU-2', 'GPU 2 only (NVIDIA A100-SXM4-80GB, taken)']
    ]);
    // Waiting: other users' GPUs free in time, the user's own do not.
    expect(texts(gpuChoices(trans, report, makeRow(), '', true))).toEqual([
      ['count:0', 'No GPU'],
      ['count:1', '1 GPU'],
      ['count:2', '2 GPUs (only 1 free, waits)'],
      ['count:3', '3 GPUs (held by your kernels)'],
      ['id:GPU-0', 'GPU 0 only (NVIDIA A100-SXM4-80GB, taken, waits)'],
      ['id:GPU-1', 'GPU 1 only (NVIDIA A100-SXM4-80GB)'],
      ['id:GPU-2', 'GPU 2 only (NVIDIA A100-SXM4-80GB, held by your kernels)']
    ]);
    const all = makeReport([makeGpu('0', [other])]);
    expect(texts(gpuChoices(trans, all, makeRow()))[1]).toEqual([
      'count:1',
      '1 GPU (all taken)'
    ]);
  });

  it('say that a CPU build or an image the driver cannot run gets none', () => {
    const report = makeReport([makeGpu('0')]);
    expect(texts(gpuChoices(trans, report, makeRow({ gpu: false })))).toEqual([
      ['count:0', 'No GPU'],
      ['count:1', '1 GPU (CPU build)']
    ]);
    const old = makeRow({
      verdict: {
        outcome: 'cannot-run',
        reason: 'CUDA 12.8 needs driver 570 or newer; this host has 550.',
        needed_driver: '570'
      }
    });
    const choices = gpuChoices(trans, report, old);
    expect(choices[1].option).toBe('1 GPU (cannot run here)');
    expect(choices[1].ariaLabel).toBe(
      '1 GPU — CUDA 12.8 needs driver 570 or newer; this host has 550.'
    );
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
