/**
 * What the panel's image rows offer for a new notebook (issue 27): waiting
 * for a free GPU where the server has a GPU queue, a sentence under every
 * greyed button, the picker's GPU choice kept only where an image can have
 * it, one time format, and error notifications that are never cut off.
 */
import { formatClock, toastParts } from '../format';
import {
  defaultGpuChoice,
  gpuChoices,
  keptChoice,
  launchButton,
  noGpuWarning,
  offersWait
} from '../gpuchoices';
import { translationBundle } from '../i18n';
import { deadlineText, quotaTitle } from '../sharing';
import { makeGpu, makeHolder, makeReport, makeRow } from './fixtures';

const trans = translationBundle();

const other = makeHolder({ user: 'bob' });
const allTaken = makeReport([makeGpu('0', [other]), makeGpu('1', [other])]);
const oneFree = makeReport([makeGpu('0', [other]), makeGpu('1')]);
const gpuImage = makeRow();
const cpuImage = makeRow({ gpu: false });

/** The button a row shows by default, with or without waiting. */
function defaultButton(report = allTaken, wait = false, row = gpuImage) {
  const choices = gpuChoices(trans, report, row, '', wait);
  const selected = choices.find(
    c => c.value === defaultGpuChoice(choices, row)
  );
  const withoutGpu = noGpuWarning(trans, choices, row, selected);
  return {
    selected,
    button: launchButton(trans, '', selected, withoutGpu, wait, false)
  };
}

describe('offersWait', () => {
  it('offers waiting when every GPU is taken and the server has a queue', () => {
    expect(offersWait(trans, true, allTaken, gpuImage)).toBe(true);
  });

  it('offers waiting when more GPUs than are free could be waited for', () => {
    // 2 GPUs, or GPU 0 alone, are taken now.
    expect(offersWait(trans, true, oneFree, gpuImage)).toBe(true);
  });

  it('offers no waiting without a queue, for a CPU build, or with all free', () => {
    expect(offersWait(trans, false, allTaken, gpuImage)).toBe(false);
    expect(offersWait(trans, true, allTaken, cpuImage)).toBe(false);
    const free = makeReport([makeGpu('0')]);
    expect(offersWait(trans, true, free, gpuImage)).toBe(false);
  });

  it("offers no waiting for GPUs the user's own kernels hold", () => {
    // The server refuses such a wait: only other users' GPUs free meanwhile.
    const mine = makeHolder({ mine: true, kernel_id: 'k-mine' });
    const ownAll = makeReport([makeGpu('0', [mine]), makeGpu('1', [mine])]);
    expect(offersWait(trans, true, ownAll, gpuImage)).toBe(false);
    const waiting = gpuChoices(trans, ownAll, gpuImage, '', true);
    const one = waiting.find(c => c.value === 'count:1');
    expect(one?.disabled).toBe(true);
    expect(one?.reason).toBe(
      'No free GPU: every GPU is taken. Your own kernels hold the GPUs it needs: shut one down first.'
    );
    // One of each: 1 GPU can be waited for (the other user's), 2 cannot.
    const mixed = makeReport([makeGpu('0', [mine]), makeGpu('1', [other])]);
    const choices = gpuChoices(trans, mixed, gpuImage, '', true);
    expect(choices.map(c => [c.value, c.disabled])).toEqual([
      ['count:0', false],
      ['count:1', false],
      ['count:2', true],
      ['id:GPU-0', true],
      ['id:GPU-1', false]
    ]);
  });

  it('offers no waiting for GPUs the host does not have', () => {
    const none = makeReport([], { source: 'none', reason: 'No driver' });
    expect(offersWait(trans, true, none, gpuImage)).toBe(false);
  });
});

describe('launchButton', () => {
  it('with every GPU taken and waiting chosen: a GPU notebook that waits', () => {
    const { selected, button } = defaultButton(allTaken, true);
    expect(selected?.request).toBe(1);
    expect(button).toEqual({
      label: 'New notebook that waits',
      disabled: false,
      reason: '',
      waits: true
    });
  });

  it('with every GPU taken and no waiting: a CPU notebook, said so', () => {
    const { selected, button } = defaultButton(allTaken, false);
    expect(selected?.request).toBe(0);
    expect(button.label).toBe('New notebook without GPU');
    expect(button.disabled).toBe(false);
    expect(button.waits).toBe(false);
  });

  it('a free GPU: a plain new notebook that does not wait', () => {
    const { selected, button } = defaultButton(oneFree, true);
    expect(selected?.request).toBe(1);
    expect(button).toEqual({
      label: 'New notebook',
      disabled: false,
      reason: '',
      waits: false
    });
  });

  it('a chosen GPU taken since: greyed, with the sentence why', () => {
    const choices = gpuChoices(trans, allTaken, gpuImage, '', false);
    const taken = choices.find(c => c.value === 'count:1');
    const button = launchButton(trans, '', taken, '', false, false);
    expect(button.disabled).toBe(true);
    expect(button.reason).toBe('No free GPU: every GPU is taken.');
  });

  it('every greyed button says why in a sentence', () => {
    const cases = [
      launchButton(
        trans,
        'Not on this host yet: pull it first.',
        undefined,
        '',
        false,
        false
      ),
      launchButton(trans, '', undefined, '', false, false),
      launchButton(trans, '', undefined, '', false, true),
      launchButton(
        trans,
        '',
        gpuChoices(trans, allTaken, cpuImage).find(c => c.value === 'count:1'),
        '',
        false,
        false
      )
    ];
    for (const button of cases) {
      expect(button.disabled).toBe(true);
      expect(button.reason).toMatch(/^[A-Z].*\.$/);
    }
  });
});

describe('keptChoice', () => {
  it('drops a GPU choice that a CPU image cannot have', () => {
    const report = makeReport([makeGpu('0'), makeGpu('1')]);
    const cpu = gpuChoices(trans, report, cpuImage);
    expect(keptChoice(cpu, 'count:1')).toBe('count:0');
    expect(keptChoice(cpu, 'id:GPU-1')).toBe('count:0');
  });

  it('keeps a choice the image can have', () => {
    const report = makeReport([makeGpu('0'), makeGpu('1')]);
    const gpu = gpuChoices(trans, report, gpuImage);
    expect(keptChoice(gpu, 'count:2')).toBe('count:2');
    expect(keptChoice(gpu, 'count:0')).toBe('count:0');
  });
});

describe('formatClock: one time format', () => {
  const now = new Date(2026, 10, 23, 20, 30).getTime();

  it('a time today: the time of day alone', () => {
    const at = new Date(2026, 10, 23, 20, 13).getTime();
    const text = formatClock(at, now);
    expect(text).toBe(
      new Date(at).toLocaleTimeString([], {
        hour: '2-digit',
        minute: '2-digit'
      })
    );
    expect(formatClock(new Date(at).toISOString(), now)).toBe(text);
  });

  it('another day: its weekday and time', () => {
    const at = new Date(2026, 10, 24, 2, 0).getTime();
    expect(formatClock(at, now)).toBe(
      new Date(at).toLocaleString([], {
        weekday: 'short',
        hour: '2-digit',
        minute: '2-digit'
      })
    );
  });

  it('nothing for a time that cannot be read', () => {
    expect(formatClock('', now)).toBe('');
    expect(formatClock(null, now)).toBe('');
    expect(formatClock('soon', now)).toBe('');
  });

  it("the queue's deadline and the quota's reset use it", () => {
    const at = new Date(Date.now() + 60_000).toISOString();
    expect(
      deadlineText(trans, {
        kernel_id: 'k',
        yours: true,
        user: null,
        notebook: null,
        gpus: 1,
        position: 1,
        waited: 0,
        deadline: at,
        scheduler: '',
        reason: '',
        estimate: null
      })
    ).toBe(`gives up at ${formatClock(at)}`);
    const title = quotaTitle(trans, {
      enabled: true,
      period: 'day',
      limit_hours: 4,
      used_hours: 1,
      left_hours: 3,
      resets_at: at,
      group: null,
      group_limit_hours: null,
      group_used_hours: null
    });
    expect(title).toContain(`Resets ${formatClock(at)}.`);
  });
});

describe('toastParts', () => {
  it('keeps a text that fits', () => {
    expect(toastParts(trans, 'The wait was cancelled.')).toEqual({
      message: 'The wait was cancelled.',
      details: null
    });
  });

  it('cuts a long text between words, the whole behind Details', () => {
    const text =
      'An administrator gave back the GPUs of your kernel 1a2b3c4d, which restarted without GPUs (its variables are lost): the course needs them for the exam at ten.';
    const { message, details } = toastParts(trans, text);
    expect(details).toBe(text);
    expect(message.length).toBeLessThanOrEqual(140);
    expect(message).toMatch(
      /^An administrator gave back .*\S… \(more under Details\)$/
    );
    expect(text.startsWith(message.split('…')[0])).toBe(true);
  });
});
