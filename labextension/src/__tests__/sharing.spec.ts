import { nullTranslator } from '@jupyterlab/translation';

import { formatClock } from '../format';
import { gpuChoices } from '../gpuchoices';
import {
  activityText,
  cellWhileWaitingText,
  deadlineText,
  departedTickets,
  departureOutcome,
  formatDuration,
  isStartUnderWay,
  holderGpus,
  noticeKey,
  noticeText,
  outcomeMessage,
  positionText,
  prePullLast,
  prePullNext,
  prePullRule,
  pruningText,
  accountedLine,
  accountedTitle,
  quotaLine,
  defaultKeep,
  keepChoices,
  keepLengthText,
  keptText,
  reclaimText,
  ticketFor,
  waitingLabel,
  waitingStatusText,
  waitingTicketOf,
  waitsFor,
  warningKey
} from '../sharing';
import {
  adminViewOf,
  noticesOf,
  prePullsOf,
  queueOf,
  quotaOf,
  reclaimOf
} from '../sharingreaders';
import { IQueuedStart } from '../sharingtypes';
import { makeGpu, makeHolder, makeReport, makeRow } from './fixtures';

const trans = nullTranslator.load('jupyter_gpu_containers');

function ticket(overrides: Partial<IQueuedStart> = {}): IQueuedStart {
  return {
    kernel_id: 'k-1',
    yours: true,
    user: 'alice',
    notebook: 'work/train.ipynb',
    gpus: 1,
    position: 1,
    waited: 12,
    deadline: '2030-01-01T12:00:00Z',
    scheduler: '',
    reason: '',
    estimate: null,
    ...overrides
  };
}

describe('queueOf', () => {
  it('reads the server’s queue in fair order, with what others may see', () => {
    const queue = queueOf({
      queue: [
        {
          kernel_id: null,
          yours: false,
          user: null,
          notebook: null,
          gpus: 2,
          position: 2,
          waited: 3.5,
          deadline: null
        },
        {
          kernel_id: 'k-1',
          yours: true,
          user: 'alice',
          notebook: 'a.ipynb',
          gpus: ['0'],
          position: 1,
          waited: 9,
          deadline: '2030-01-01T12:00:00Z'
        },
        { not: 'a ticket' }
      ],
      length: 2,
      wait_by_default: true,
      max_wait: 3600
    });
    expect(queue).toEqual({
      queue: [
        {
          kernel_id: 'k-1',
          yours: true,
          user: 'alice',
          notebook: 'a.ipynb',
          gpus: ['0'],
          position: 1,
          waited: 9,
          deadline: '2030-01-01T12:00:00Z',
          scheduler: '',
          reason: '',
          estimate: null
        },
        // Another user's, as the server sends it: nulls kept.
        {
          kernel_id: null,
          yours: false,
          user: null,
          notebook: null,
          gpus: 2,
          position: 2,
          waited: 3.5,
          deadline: null,
          scheduler: '',
          reason: '',
          estimate: null
        }
      ],
      length: 2,
      wait_by_default: true,
      max_wait: 3600
    });
  });

  it("lists a start waiting in Slurm after the host queue's, in Slurm's words", () => {
    const queue = queueOf({
      queue: [
        {
          kernel_id: 'k-slurm',
          yours: true,
          user: 'alice',
          notebook: 'a.ipynb',
          gpus: 2,
          position: 0,
          waited: 4,
          deadline: null,
          scheduler: 'Slurm',
          reason: 'Resources',
          estimate: '2030-01-01T12:30:00Z'
        },
        {
          kernel_id: 'k-host',
          yours: true,
          user: 'alice',
          notebook: 'b.ipynb',
          gpus: 1,
          position: 1,
          waited: 9,
          deadline: null
        }
      ],
      length: 2,
      wait_by_default: false,
      max_wait: 3600
    });
    expect(queue?.queue.map(t => t.kernel_id)).toEqual(['k-host', 'k-slurm']);
    const slurm = queue!.queue[1];
    expect(waitingLabel(trans, slurm)).toBe('Queued in Slurm (Resources)');
    expect(positionText(trans, slurm, 2)).toBe('queued in Slurm: Resources');
    expect(deadlineText(trans, slurm)).toBe(
      `Slurm expects it at ${formatClock('2030-01-01T12:30:00Z')}`
    );
    expect(deadlineText(trans, { ...slurm, estimate: null })).toBe('');
    expect(waitingLabel(trans, { ...slurm, reason: '' })).toBe(
      'Queued in Slurm'
    );
    expect(cellWhileWaitingText(trans, 'a.ipynb', slurm)).toBe(
      'The kernel of a.ipynb is queued in Slurm (Resources): the cell runs once it starts, in a new kernel.'
    );
  });

  it('is null for anything else', () => {
    expect(queueOf(undefined)).toBeNull();
    expect(queueOf({ message: 'Not found' })).toBeNull();
    expect(queueOf([])).toBeNull();
  });
});

describe('the quota line', () => {
  it('says what is left of the period', () => {
    const quota = quotaOf({
      enabled: true,
      period: 'week',
      limit_hours: 10,
      used_hours: 6.5,
      left_hours: 3.5,
      resets_at: '2030-01-06T00:00:00Z',
      group: null
    });
    expect(quotaLine(trans, quota)).toBe('3.5 of 10 GPU-hours left this week');
    expect(quotaLine(trans, { ...quota!, period: 'day' })).toBe(
      '3.5 of 10 GPU-hours left today'
    );
  });

  it('is hidden when quotas are off or unknown', () => {
    expect(quotaLine(trans, quotaOf({ enabled: false, limit_hours: 0 }))).toBe(
      ''
    );
    expect(quotaLine(trans, null)).toBe('');
    expect(quotaOf({ message: 'Not found' })).toBeNull();
  });

  it('never says less than nothing is left', () => {
    const quota = quotaOf({ enabled: true, limit_hours: 2, used_hours: 3 });
    expect(quotaLine(trans, quota)).toBe('0 of 2 GPU-hours left this week');
  });

  it("says the engine's own count where the server keeps no quota", () => {
    const quota = quotaOf({
      enabled: false,
      period: 'week',
      limit_hours: 0,
      used_hours: 5.234,
      resets_at: '2030-01-06T00:00:00Z',
      accounted_by: 'Slurm'
    });
    expect(quota?.accounted_by).toBe('Slurm');
    // Not a quota: no "left", and the host's quota line stays empty.
    expect(quotaLine(trans, quota)).toBe('');
    expect(accountedLine(trans, quota)).toBe(
      '5.23 GPU-hours used this week, as Slurm counts them'
    );
    expect(accountedLine(trans, { ...quota!, period: 'day' })).toBe(
      '5.23 GPU-hours used today, as Slurm counts them'
    );
    expect(accountedTitle(trans, quota!)).toMatch(
      /^Every job of yours on the cluster, from Slurm's accounting; its own limits apply\. Counts from zero again /
    );
  });

  it('says no count where the engine keeps none', () => {
    const plain = quotaOf({ enabled: false, used_hours: 0, accounted_by: '' });
    expect(plain?.accounted_by).toBeUndefined();
    expect(accountedLine(trans, plain)).toBe('');
    expect(accountedLine(trans, null)).toBe('');
    // A quota of the server's own is the quota line's, never the engine's.
    const own = quotaOf({
      enabled: true,
      limit_hours: 2,
      accounted_by: 'Slurm'
    });
    expect(accountedLine(trans, own)).toBe('');
  });
});

describe('words for a waiting start', () => {
  it('says what it waits for and where it stands', () => {
    expect(waitsFor(trans, 1)).toBe('1 GPU');
    expect(waitsFor(trans, 2)).toBe('2 GPUs');
    expect(waitsFor(trans, ['0', '1'])).toBe('GPUs 0,1');
    expect(positionText(trans, ticket({ position: 2 }), 5)).toBe(
      'position 2 of 5'
    );
    expect(waitingLabel(trans, ticket({ position: 3 }))).toBe(
      'Waiting for a GPU (position 3)'
    );
  });

  it('gives its deadline as the only estimate, and none without one', () => {
    // The panel's one time format (formatClock).
    expect(deadlineText(trans, ticket())).toBe(
      `gives up at ${formatClock(ticket().deadline)}`
    );
    expect(deadlineText(trans, ticket({ deadline: '' }))).toBe('');
  });
});

describe('ticketFor', () => {
  const queue = queueOf({
    queue: [
      ticket({ kernel_id: 'k-9', notebook: 'other.ipynb', position: 1 }),
      ticket({ position: 2 }),
      { yours: false, gpus: 1, position: 3, waited: 0, deadline: '' }
    ],
    length: 3
  });

  it('finds the notebook’s own start by its path or its kernel', () => {
    expect(ticketFor(queue, 'work/train.ipynb', '')?.position).toBe(2);
    expect(ticketFor(queue, 'elsewhere.ipynb', 'k-1')?.position).toBe(2);
    expect(ticketFor(queue, 'nothing.ipynb', 'k-0')).toBeNull();
    expect(ticketFor(null, 'work/train.ipynb', 'k-1')).toBeNull();
  });
});

describe('a waiting notebook', () => {
  const queue = queueOf({ queue: [ticket({ position: 2 })], length: 2 });
  const panel = (
    path: string,
    kernelId: string | null,
    isDisposed = false
  ) => ({
    isDisposed,
    context: { localPath: path },
    sessionContext: {
      session: kernelId === null ? null : { kernel: { id: kernelId } }
    }
  });

  it('is found by its panel, with or without a session yet', () => {
    expect(
      waitingTicketOf(queue, panel('work/train.ipynb', null))?.position
    ).toBe(2);
    expect(waitingTicketOf(queue, panel('moved.ipynb', 'k-1'))?.position).toBe(
      2
    );
    expect(waitingTicketOf(queue, panel('other.ipynb', 'k-0'))).toBeNull();
    expect(
      waitingTicketOf(queue, panel('work/train.ipynb', 'k-1', true))
    ).toBeNull();
    expect(waitingTicketOf(queue, null)).toBeNull();
  });

  it('says where it stands and what it waits for, in the status bar', () => {
    expect(waitingStatusText(trans, ticket({ position: 2, gpus: 1 }))).toBe(
      'Waiting for a GPU (position 2) · waits for 1 GPU'
    );
  });
});

describe('departures from the queue', () => {
  it('are the user’s tickets that are gone', () => {
    const before = queueOf({
      queue: [
        ticket(),
        ticket({ kernel_id: 'k-2', position: 2 }),
        { yours: false, gpus: 1, position: 3, waited: 0, deadline: '' }
      ]
    });
    const after = queueOf({ queue: [ticket({ kernel_id: 'k-2' })] });
    expect(departedTickets(before, after).map(t => t.kernel_id)).toEqual([
      'k-1'
    ]);
    expect(departedTickets(null, after)).toEqual([]);
    // A failed read is no departure.
    expect(departedTickets(before, null)).toEqual([]);
  });

  it('ended as their kernel says', () => {
    const now = Date.parse('2030-01-01T11:00:00Z');
    const t = ticket();
    expect(departureOutcome(t, 'idle', false, now)).toBe('started');
    expect(departureOutcome(t, 'busy', false, now)).toBe('started');
    // Still coming up: look again.
    expect(departureOutcome(t, 'starting', false, now)).toBeUndefined();
    expect(
      departureOutcome(t, 'waiting for a GPU', false, now)
    ).toBeUndefined();
    expect(departureOutcome(t, null, true, now)).toBe('cancelled');
    expect(
      departureOutcome(t, null, false, Date.parse('2030-01-01T12:00:00Z'))
    ).toBe('timed-out');
    expect(departureOutcome(t, null, false, now)).toBe('gone');
  });

  it('durations in one format, with the precision short phases need', () => {
    expect(formatDuration(trans, 0.012)).toBe('0.01 s');
    expect(formatDuration(trans, 0.646)).toBe('0.65 s');
    expect(formatDuration(trans, 2.14)).toBe('2.1 s');
    expect(formatDuration(trans, 10.847)).toBe('11 s');
    expect(formatDuration(trans, 185)).toBe('3 min');
  });

  it('under way while the kernels API lists them waiting or starting', () => {
    expect(isStartUnderWay('waiting for a GPU')).toBe(true);
    expect(isStartUnderWay('starting')).toBe(true);
    for (const state of ['idle', 'busy', 'dead', 'unknown', undefined]) {
      expect(isStartUnderWay(state)).toBe(false);
    }
  });

  it('are told in a sentence naming the notebook', () => {
    expect(outcomeMessage(trans, ticket(), 'started')).toBe(
      'A GPU is free: the kernel of train.ipynb started with 1 GPU.'
    );
    expect(outcomeMessage(trans, ticket(), 'timed-out')).toContain(
      'until the longest wait allowed'
    );
    expect(
      outcomeMessage(trans, ticket({ notebook: undefined }), 'cancelled')
    ).toBe(
      'The kernel of kernel k-1 stopped waiting for a GPU: its start was cancelled.'
    );
  });
});

describe('reclaim', () => {
  it('reads the reclaim key, and nothing else', () => {
    expect(reclaimOf(null)).toBeNull();
    expect(reclaimOf({ state: 'sleepy' })).toBeNull();
    // As a real server sends it (KernelReclaim).
    const sent = {
      kernel_id: 'k-1',
      state: 'warned',
      idle_since: '2030-01-01T10:00:00+00:00',
      release_at: '2030-01-01T10:30:00+00:00',
      reclaimed_at: null,
      action: 'shutdown',
      message: 'Its GPUs go at 10:30 unless it uses them.',
      gpus: ['GPU-0'],
      user: 'alice',
      notebook: 'a.ipynb',
      kept_until: null,
      keeps: 0,
      keep: { min_minutes: 15, max_minutes: 120, times_left: 2 }
    };
    expect(reclaimOf(sent)).toEqual(sent);
    // An older server's state: no keep, never kept.
    const older = reclaimOf({
      ...sent,
      kept_until: undefined,
      keeps: undefined,
      keep: undefined
    });
    expect([older?.kept_until, older?.keeps, older?.keep]).toEqual([
      null,
      0,
      null
    ]);
    // A keep offer that is not one reads as none.
    expect(
      reclaimOf({
        ...sent,
        keep: { min_minutes: 30, max_minutes: 10, times_left: 1 }
      })?.keep
    ).toBeNull();
  });

  it('says until when its user kept a warned kernel, to the user and to an administrator', () => {
    const kept = reclaimOf({
      state: 'warned',
      idle_since: '2030-01-01T10:00:00Z',
      release_at: '2030-01-01T11:00:00Z',
      kept_until: '2030-01-01T11:00:00Z',
      keeps: 2,
      action: 'shutdown'
    });
    const at = formatClock('2030-01-01T11:00:00Z');
    expect(reclaimText(trans, kept)).toBe(
      `You kept its idle GPUs until ${at}: they are given back then unless it uses them (it is then shut down).`
    );
    expect(keptText(trans, kept)).toBe(
      `Kept idle by its user until ${at} (2 times since its last GPU use).`
    );
    expect(keptText(trans, { ...kept!, keeps: 1 })).toBe(
      `Kept idle by its user until ${at} (once since its last GPU use).`
    );
    // Not kept: nothing to say to an administrator beyond the warning.
    expect(keptText(trans, { ...kept!, kept_until: null })).toBe('');
    expect(keptText(trans, null)).toBe('');
  });

  it("offers keeps within the administrator's bounds, half an hour by default", () => {
    const offer = (min: number, max: number) => ({
      min_minutes: min,
      max_minutes: max,
      times_left: 1
    });
    expect(keepChoices(offer(15, 120))).toEqual([15, 30, 60, 120]);
    expect(keepChoices(offer(10, 45))).toEqual([10, 15, 30, 45]);
    expect(keepChoices(offer(20, 20))).toEqual([20]);
    expect(keepChoices(offer(0.05, 0.1))).toEqual([0.05, 0.1]);
    expect(defaultKeep(offer(15, 120))).toBe(30);
    expect(defaultKeep(offer(45, 120))).toBe(45);
    expect(defaultKeep(offer(1, 10))).toBe(10);
    expect(
      [0.05, 1, 15, 60, 90, 120].map(m => keepLengthText(trans, m))
    ).toEqual([
      '3 seconds',
      '1 minute',
      '15 minutes',
      '1 hour',
      '90 minutes',
      '2 hours'
    ]);
  });

  it('warns with the time its GPUs go and what then happens', () => {
    const warned = reclaimOf({
      state: 'warned',
      idle_since: '2030-01-01T10:00:00Z',
      release_at: '2030-01-01T10:30:00Z',
      action: 'restart-without-gpus'
    });
    const text = reclaimText(trans, warned);
    expect(text).toBe(
      `Its GPUs have been idle since ${formatClock('2030-01-01T10:00:00Z')}: they are given back at ${formatClock('2030-01-01T10:30:00Z')} unless it uses them (it then restarts without GPUs).`
    );
    expect(reclaimText(trans, { ...warned!, state: 'active' })).toBe('');
    expect(reclaimText(trans, { ...warned!, state: 'idle' })).toBe('');
    expect(
      reclaimText(trans, {
        ...warned!,
        state: 'reclaimed',
        action: 'shutdown'
      })
    ).toContain('it was shut down');
  });

  it('names each warning once', () => {
    const warned = reclaimOf({ state: 'warned', release_at: 'T1' })!;
    expect(warningKey('k', warned)).toBe(warningKey('k', { ...warned }));
    expect(warningKey('k', warned)).not.toBe(
      warningKey('k', { ...warned, release_at: 'T2' })
    );
  });
});

describe('adminViewOf', () => {
  // As a real server sends it (GET /gpu-containers/admin).
  const holder = {
    kernel_id: 'k-1',
    container_id: 'c-1',
    user: 'bob',
    uid: '1002',
    notebook: 'lab/1.ipynb',
    image: 'nvcr.io/nvidia/pytorch:24.05-py3',
    server_id: '0-abc',
    since: '2030-01-01T10:00:00+00:00',
    held_seconds: 125,
    gpus: [
      { uuid: 'GPU-0', index: '0', name: 'T4' },
      { uuid: 'GPU-gone', index: null, name: '' }
    ],
    activity: { memory_used: 3 * 2 ** 30, utilization: 42 },
    reclaim: {
      kernel_id: 'k-1',
      state: 'warned',
      idle_since: '2030-01-01T10:00:00+00:00',
      release_at: '2030-01-01T10:30:00+00:00',
      reclaimed_at: null,
      action: 'restart-without-gpus',
      message: 'Idle.',
      gpus: ['GPU-0'],
      user: 'bob',
      notebook: 'lab/1.ipynb',
      kept_until: '2030-01-01T10:30:00+00:00',
      keeps: 1,
      keep: { min_minutes: 15, max_minutes: 120, times_left: 1 }
    },
    here: false,
    server_alive: false
  };
  const quotaRow = {
    uid: 1002,
    user: 'bob',
    enabled: true,
    period: 'week',
    limit_hours: 10,
    used_hours: 1.5,
    left_hours: 8.5,
    resets_at: '2030-01-07T00:00:00+00:00',
    group: 'lab',
    group_limit_hours: 40,
    group_used_hours: 2
  };
  const view = adminViewOf({
    holders: [holder, { no: 'kernel id' }],
    gpus: [{ uuid: 'GPU-0', index: '0', name: 'T4', holders: 1 }],
    queue: {
      queue: [
        // Each ticket as its own user sees it, with its uid and server.
        { ...ticket({ user: 'carol' }), uid: 1003, server_id: '0-def' },
        { nonsense: true }
      ],
      length: 1,
      wait_by_default: true,
      max_wait: 600,
      counts: { granted: 2 }
    },
    reclaim: [holder.reclaim],
    quotas: {
      enabled: true,
      period: 'week',
      hours_per_user: 10,
      hours_per_group: { lab: 40 },
      users: [quotaRow, { uid: 4 }]
    },
    engine_error: '',
    source: 'static'
  });

  it('reads holders as the server sends them', () => {
    expect(view?.holders).toEqual([holder]);
    expect(holderGpus(view!.holders[0])).toBe('0,GPU-gone');
    expect(activityText(trans, view!.holders[0].activity)).toBe(
      '42% busy · 3 GiB in use'
    );
    expect(activityText(trans, null)).toBe('');
    expect(view?.gpus).toEqual([
      { uuid: 'GPU-0', index: '0', name: 'T4', holders: 1 }
    ]);
    expect(view?.source).toBe('static');
  });

  it('reads the queue, each ticket as its user’s, not the admin’s own', () => {
    expect(view?.queue.length).toBe(1);
    expect(
      view?.queue.queue.map(t => [t.user, t.yours, t.uid, t.server_id])
    ).toEqual([['carol', false, 1003, '0-def']]);
  });

  it('reads every user’s GPU-hours', () => {
    expect(view?.quotas).toEqual({
      enabled: true,
      period: 'week',
      hours_per_user: 10,
      hours_per_group: { lab: 40 },
      users: [quotaRow]
    });
    expect(adminViewOf({ holders: [], quotas: null })?.quotas).toBeNull();
  });

  it('is null for a refusal or anything else', () => {
    expect(adminViewOf({ message: 'Only administrators…' })).toBeNull();
    expect(adminViewOf(null)).toBeNull();
  });
});

describe('administrators’ notices', () => {
  const notice = {
    kernel_id: 'abcdef12-3456',
    user: 'alice',
    action: 'release',
    reason: 'The lab needs the GPU.',
    by: 'teacher',
    at: '2030-01-01T10:00:00+00:00',
    message: 'teacher released its GPUs: The lab needs the GPU.'
  };

  it('reads the user’s notices, leaving out what is not one', () => {
    expect(
      noticesOf({
        notices: [notice, { ...notice, action: 'explode' }, 'nonsense']
      })
    ).toEqual([notice]);
    expect(noticesOf({ message: 'Not found' })).toEqual([]);
  });

  it('says who did what and why, in the user’s language', () => {
    const [released] = noticesOf({ notices: [notice] });
    expect(noticeText(trans, released)).toBe(
      'teacher gave back the GPUs of your kernel abcdef12, which restarted without GPUs (its variables are lost): The lab needs the GPU.'
    );
    expect(
      noticeText(trans, { ...released, action: 'shutdown', reason: '' })
    ).toBe('teacher shut down your kernel abcdef12.');
  });

  it('names each notice once', () => {
    const [a] = noticesOf({ notices: [notice] });
    expect(noticeKey(a)).toBe(noticeKey({ ...a }));
    expect(noticeKey(a)).not.toBe(noticeKey({ ...a, at: 'later' }));
  });
});

describe('prePullsOf', () => {
  // As a real server sends it (GET /gpu-containers/prepull).
  const reply = {
    schedule: [
      {
        image: 'jgc/course:latest',
        at: '02:00',
        every_hours: null,
        last_run: {
          state: 'done',
          started: '2030-01-01T02:00:00+00:00',
          finished: '2030-01-01T02:03:00+00:00',
          message: 'Downloaded newer image',
          digest: 'sha256:1',
          image_id: 'sha256:2'
        },
        next_run: '2030-01-02T02:00:00+00:00',
        pull: null
      },
      {
        image: 'jgc/other:1',
        at: null,
        every_hours: 12,
        last_run: {
          state: 'error',
          started: '2030-01-01T08:07:02+00:00',
          finished: '2030-01-01T08:07:02+00:00',
          message: 'jgc/other:1 is an image built on this host.',
          digest: '',
          image_id: ''
        },
        next_run: null,
        pull: null
      }
    ],
    running: true,
    check_interval: 60,
    time_zone: 'UTC',
    pruning: {
      enabled: true,
      after_days: 30,
      interval_hours: 6,
      last_run: {
        ran: '2030-01-01T08:07:02+00:00',
        removed_count: 2,
        kept_count: 3,
        removed: null,
        kept: null,
        freed_bytes: 1.5 * 2 ** 30,
        error: ''
      },
      next_run: '2030-01-01T14:07:02+00:00'
    }
  };

  it('reads the schedule and pruning as the server sends them', () => {
    expect(prePullsOf(reply)).toEqual(reply);
    expect(prePullsOf({ message: 'Not found' })).toBeNull();
  });

  it('says each entry’s rule, last run and next run', () => {
    const [daily, every] = prePullsOf(reply)!.schedule;
    expect(prePullRule(trans, daily, 'UTC')).toBe('daily at 02:00 (UTC)');
    expect(prePullRule(trans, every, 'UTC')).toBe('every 12 hours');
    expect(prePullLast(trans, daily.last_run)).toMatch(/^pulled \S+/);
    expect(prePullLast(trans, every.last_run)).toMatch(/^failed \S+/);
    expect(prePullLast(trans, null)).toBe('not pulled yet');
    expect(prePullNext(trans, daily)).toMatch(/^next \S+/);
    expect(prePullNext(trans, every)).toBe('');
  });

  it('sums up pruning, and says nothing when it is off', () => {
    const { pruning } = prePullsOf(reply)!;
    expect(pruningText(trans, pruning)).toMatch(
      /^Images unused for 30 days are removed\. Last pass .+: 2 removed \(1\.5 GiB freed\), 3 kept\.$/
    );
    expect(pruningText(trans, { ...pruning, enabled: false })).toBe('');
  });
});

describe('gpuChoices with waiting', () => {
  const report = makeReport([
    makeGpu('0', [makeHolder({ kernel_id: 'other' })])
  ]);
  const row = makeRow();

  it('offers busy GPUs, saying that the start waits', () => {
    const refused = gpuChoices(trans, report, row).find(
      c => c.value === 'count:1'
    )!;
    expect(refused.disabled).toBe(true);
    const waits = gpuChoices(trans, report, row, '', true).find(
      c => c.value === 'count:1'
    )!;
    expect(waits.disabled).toBe(false);
    expect(waits.request).toBe(1);
    expect(waits.reason).toBe(
      'No free GPU: every GPU is taken. Waits for it in the queue.'
    );
  });

  it('never offers what cannot be had however long it waits', () => {
    const cpu = makeRow({ gpu: false });
    const choice = gpuChoices(trans, report, cpu, '', true).find(
      c => c.value === 'count:1'
    )!;
    expect(choice.disabled).toBe(true);
    expect(choice.reason).toBe(
      'This image is a CPU build: it cannot use GPUs.'
    );
  });
});
