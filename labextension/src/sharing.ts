/**
 * Fair GPU sharing in the front end, as pure helpers: the words the panel,
 * the toolbar and the notifications use for the queue, quota, reclaim, admin,
 * notice and pre-pull documents (read by sharingreaders.ts), and how a
 * waiting start ended. No DOM, no requests.
 */
import type { TranslationBundle } from '@jupyterlab/translation';

import { formatBytes, formatClock } from './format';
import { GpuRequest, IKernelReclaim, IReclaimKeepOffer } from './kerneltypes';
import {
  IAdminHolder,
  IAdminHolderActivity,
  IAdminNotice,
  IGpuQueue,
  IGpuQuota,
  IPrePullEntry,
  IPrePullRun,
  IPruning,
  IQueuedStart
} from './sharingtypes';

/**
 * How a waiting start of the user's ended, as the page finds out (the API
 * does not say: its start's request ends, in another page perhaps).
 */
export type QueueOutcome = 'started' | 'timed-out' | 'cancelled' | 'gone';

/**
 * The GPUs a holder holds, for people: `0,1` (a GPU no longer present by
 * its uuid).
 */
export function holderGpus(holder: IAdminHolder): string {
  return holder.gpus.map(gpu => gpu.index ?? gpu.uuid).join(',');
}

/**
 * A holder's GPU activity now: `42% · 1.2 GiB`, or `''` when unknown.
 */
export function activityText(
  trans: TranslationBundle,
  activity: IAdminHolderActivity | null
): string {
  if (!activity) {
    return '';
  }
  const parts: string[] = [];
  if (typeof activity.utilization === 'number') {
    parts.push(trans.__('%1% busy', Math.round(activity.utilization)));
  }
  if (typeof activity.memory_used === 'number') {
    parts.push(trans.__('%1 in use', formatBytes(activity.memory_used)));
  }
  return parts.join(' · ');
}

/**
 * What the user is told of an administrator's notice, in their language (the
 * server's `message` is English).
 */
export function noticeText(
  trans: TranslationBundle,
  notice: IAdminNotice
): string {
  const kernel = notice.kernel_id.slice(0, 8);
  const by = notice.by || trans.__('An administrator');
  if (notice.action === 'release') {
    return notice.reason
      ? trans.__(
          '%1 gave back the GPUs of your kernel %2, which restarted without GPUs (its variables are lost): %3',
          by,
          kernel,
          notice.reason
        )
      : trans.__(
          '%1 gave back the GPUs of your kernel %2, which restarted without GPUs (its variables are lost).',
          by,
          kernel
        );
  }
  return notice.reason
    ? trans.__('%1 shut down your kernel %2: %3', by, kernel, notice.reason)
    : trans.__('%1 shut down your kernel %2.', by, kernel);
}

/**
 * A key that names one notice (the same kernel released twice: two).
 */
export function noticeKey(notice: IAdminNotice): string {
  return `${notice.kernel_id}|${notice.action}|${notice.at ?? ''}`;
}

/**
 * A time for people, from an ISO time, or `''` (formatClock: the panel's one format).
 */
function when(iso: string | null | undefined): string {
  return formatClock(iso);
}

/**
 * An entry's rule: `daily at 02:00 (UTC)`, `every 12 hours`.
 */
export function prePullRule(
  trans: TranslationBundle,
  entry: IPrePullEntry,
  timeZone: string
): string {
  if (entry.at) {
    return timeZone
      ? trans.__('daily at %1 (%2)', entry.at, timeZone)
      : trans.__('daily at %1', entry.at);
  }
  if (entry.every_hours !== null) {
    return trans._n(
      'every hour',
      'every %1 hours',
      entry.every_hours,
      formatHours(entry.every_hours)
    );
  }
  return '';
}

/**
 * An entry's last run: `pulled Mon 02:01`, `failed Mon 02:00: why`,
 * `pulling since …`, or `not run yet`.
 */
export function prePullLast(
  trans: TranslationBundle,
  run: IPrePullRun | null
): string {
  if (!run) {
    return trans.__('not pulled yet');
  }
  const at = when(run.finished ?? run.started);
  switch (run.state) {
    case 'done':
      return trans.__('pulled %1', at);
    case 'pulling':
      return trans.__('pulling since %1', when(run.started));
    case 'cancelled':
      return trans.__('cancelled %1', at);
    case 'interrupted':
      return trans.__('interrupted %1 (tried again later)', at);
    default:
      return trans.__('failed %1', at);
  }
}

/**
 * When an entry runs next: `next Tue 02:00`, or `''` (it is being pulled).
 */
export function prePullNext(
  trans: TranslationBundle,
  entry: IPrePullEntry
): string {
  const next = when(entry.next_run);
  return next ? trans.__('next %1', next) : '';
}

/**
 * Pruning's summary: `Images unused for 30 days are removed; last pass Mon
 * 08:07: 2 removed (1.5 GB freed), 3 kept.`, or `''` when it is off.
 */
export function pruningText(
  trans: TranslationBundle,
  pruning: IPruning
): string {
  if (!pruning.enabled) {
    return '';
  }
  const policy = trans._n(
    'Images unused for %1 day are removed.',
    'Images unused for %1 days are removed.',
    pruning.after_days,
    formatHours(pruning.after_days)
  );
  const last = pruning.last_run;
  if (!last) {
    return policy;
  }
  if (last.error) {
    return trans.__(
      '%1 The last pass (%2) failed: %3',
      policy,
      when(last.ran),
      last.error
    );
  }
  return trans.__(
    '%1 Last pass %2: %3 removed (%4 freed), %5 kept.',
    policy,
    when(last.ran),
    last.removed_count,
    formatBytes(last.freed_bytes),
    last.kept_count
  );
}

/**
 * A number of hours for people: `3.5`, `10`, `0.25`.
 */
export function formatHours(hours: number): string {
  const value = Math.max(0, hours);
  const digits = value >= 10 ? 1 : 2;
  return String(Number(value.toFixed(digits)));
}

/**
 * The quota line (`3.5 of 10 GPU-hours left this week`), or `''` when
 * quotas are off.
 */
export function quotaLine(
  trans: TranslationBundle,
  quota: IGpuQuota | null
): string {
  if (!quota || !quota.enabled || !(quota.limit_hours > 0)) {
    return '';
  }
  const left = formatHours(quota.left_hours);
  const limit = formatHours(quota.limit_hours);
  return quota.period === 'day'
    ? trans.__('%1 of %2 GPU-hours left today', left, limit)
    : trans.__('%1 of %2 GPU-hours left this week', left, limit);
}

/**
 * The engine's own count of the user's GPU-hours where the server keeps no
 * quota (`5.2 GPU-hours used this week, as Slurm counts them`), or `''`
 * where it does not say.
 */
export function accountedLine(
  trans: TranslationBundle,
  quota: IGpuQuota | null
): string {
  if (!quota || quota.enabled || !quota.accounted_by) {
    return '';
  }
  const used = formatHours(quota.used_hours);
  return quota.period === 'day'
    ? trans.__(
        '%1 GPU-hours used today, as %2 counts them',
        used,
        quota.accounted_by
      )
    : trans.__(
        '%1 GPU-hours used this week, as %2 counts them',
        used,
        quota.accounted_by
      );
}

/**
 * The engine's count's title: what it counts, and when it starts again.
 */
export function accountedTitle(
  trans: TranslationBundle,
  quota: IGpuQuota
): string {
  const parts = [
    trans.__(
      "Every job of yours on the cluster, from %1's accounting; its own limits apply.",
      quota.accounted_by ?? ''
    )
  ];
  const resets = Date.parse(quota.resets_at);
  if (!Number.isNaN(resets)) {
    parts.push(trans.__('Counts from zero again %1.', formatClock(resets)));
  }
  return parts.join(' ');
}

/**
 * The quota line's title: when it resets, and the group's use.
 */
export function quotaTitle(
  trans: TranslationBundle,
  quota: IGpuQuota | null
): string {
  if (!quota || !quota.enabled) {
    return '';
  }
  const parts = [
    trans.__(
      '%1 GPU-hours used of %2.',
      formatHours(quota.used_hours),
      formatHours(quota.limit_hours)
    )
  ];
  const resets = Date.parse(quota.resets_at);
  if (!Number.isNaN(resets)) {
    parts.push(trans.__('Resets %1.', formatClock(resets)));
  }
  if (
    quota.group &&
    quota.group_limit_hours !== null &&
    quota.group_limit_hours !== undefined &&
    quota.group_limit_hours > 0
  ) {
    parts.push(
      trans.__(
        'Group %1: %2 of %3 GPU-hours used.',
        quota.group,
        formatHours(quota.group_used_hours ?? 0),
        formatHours(quota.group_limit_hours)
      )
    );
  }
  return parts.join(' ');
}

/**
 * What a ticket waits for: `1 GPU`, `2 GPUs`, `GPU 0`, `GPUs 0,1`.
 */
export function waitsFor(trans: TranslationBundle, gpus: GpuRequest): string {
  if (Array.isArray(gpus)) {
    return trans._n('GPU %2', 'GPUs %2', gpus.length, gpus.join(','));
  }
  if (gpus === null) {
    return trans.__('its default GPUs');
  }
  return trans._n('%1 GPU', '%1 GPUs', gpus);
}

/**
 * A ticket's place: `position 2 of 5`.
 */
export function positionText(
  trans: TranslationBundle,
  ticket: IQueuedStart,
  length: number
): string {
  if (ticket.scheduler) {
    return schedulerText(trans, ticket);
  }
  return trans.__(
    'position %1 of %2',
    ticket.position,
    Math.max(length, ticket.position)
  );
}

/**
 * A start that waits in the engine's own scheduler, in its words:
 * `queued in Slurm: Resources`.
 */
function schedulerText(trans: TranslationBundle, ticket: IQueuedStart): string {
  return ticket.reason
    ? trans.__('queued in %1: %2', ticket.scheduler, ticket.reason)
    : trans.__('queued in %1', ticket.scheduler);
}

/**
 * A duration for people: `45 s`, `3 min`, `1 h 20 min`.
 */
export function formatWait(trans: TranslationBundle, seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) {
    return trans.__('%1 s', s);
  }
  const minutes = Math.floor(s / 60);
  if (minutes < 60) {
    return trans.__('%1 min', minutes);
  }
  return trans.__('%1 h %2 min', Math.floor(minutes / 60), minutes % 60);
}

/**
 * A duration for people, in the format of `formatWait`, with the tenths (or
 * hundredths, below a second) that short launch phases need: `0.38 s`,
 * `2.1 s`, then `11 s`, `3 min`.
 */
export function formatDuration(
  trans: TranslationBundle,
  seconds: number
): string {
  const value = Math.max(0, seconds);
  if (value >= 10) {
    return formatWait(trans, value);
  }
  const digits = value < 1 ? 2 : 1;
  return trans.__('%1 s', String(Number(value.toFixed(digits))));
}

/**
 * The only honest estimate of a wait: when it gives up (`gives up at
 * 14:05`), or `''` without a deadline. No one can know when a GPU frees.
 */
export function deadlineText(
  trans: TranslationBundle,
  ticket: IQueuedStart
): string {
  if (ticket.scheduler) {
    // The scheduler's own estimate, where it has one (`squeue --start`).
    const expected = Date.parse(ticket.estimate ?? '');
    return Number.isNaN(expected)
      ? ''
      : trans.__(
          '%1 expects it at %2',
          ticket.scheduler,
          formatClock(expected)
        );
  }
  const at = Date.parse(ticket.deadline ?? '');
  if (Number.isNaN(at)) {
    return '';
  }
  return trans.__('gives up at %1', formatClock(at));
}

/**
 * The toolbar's words for a notebook whose start waits:
 * `Waiting for a GPU (position 2)`.
 */
export function waitingLabel(
  trans: TranslationBundle,
  ticket: IQueuedStart
): string {
  if (ticket.scheduler) {
    return ticket.reason
      ? trans.__('Queued in %1 (%2)', ticket.scheduler, ticket.reason)
      : trans.__('Queued in %1', ticket.scheduler);
  }
  return trans.__('Waiting for a GPU (position %1)', ticket.position);
}

/**
 * The user's ticket for a notebook (by its path) or a kernel, if it waits.
 */
export function ticketFor(
  queue: IGpuQueue | null,
  notebookPath: string,
  kernelId: string
): IQueuedStart | null {
  if (!queue) {
    return null;
  }
  return (
    queue.queue.find(
      t =>
        t.yours &&
        ((kernelId !== '' && t.kernel_id === kernelId) ||
          (notebookPath !== '' && t.notebook === notebookPath))
    ) ?? null
  );
}

/**
 * The user's tickets that were in `before` and are not in `after`: their
 * starts stopped waiting (started, timed out or cancelled).
 */
export function departedTickets(
  before: IGpuQueue | null,
  after: IGpuQueue | null
): IQueuedStart[] {
  if (!before || !after) {
    return [];
  }
  const still = new Set(
    after.queue.filter(t => t.yours && t.kernel_id).map(t => t.kernel_id)
  );
  return before.queue.filter(
    t => t.yours && t.kernel_id && !still.has(t.kernel_id)
  );
}

/**
 * How a departed start ended, from what is known of its kernel now.
 *
 * @param kernelState The kernel's execution state, or `null` when the server
 *   no longer knows it.
 * @param cancelledHere Whether this page cancelled it.
 * @param now Unix time in ms.
 * @returns The outcome, or `undefined` while the kernel still comes up.
 */
export function departureOutcome(
  ticket: IQueuedStart,
  kernelState: string | null,
  cancelledHere: boolean,
  now: number
): QueueOutcome | undefined {
  if (kernelState === null) {
    if (cancelledHere) {
      return 'cancelled';
    }
    const deadline = Date.parse(ticket.deadline ?? '');
    return !Number.isNaN(deadline) && now >= deadline - 1000
      ? 'timed-out'
      : 'gone';
  }
  if (isStartUnderWay(kernelState)) {
    return undefined;
  }
  return kernelState === 'dead' ? 'gone' : 'started';
}

/**
 * Whether a kernel's execution state, as the kernels API lists it, is that of
 * a start under way: waiting for a GPU, or launching once it waited. The
 * server lists such a kernel under the id it will have, and it runs nothing
 * yet.
 */
export function isStartUnderWay(kernelState: string | undefined): boolean {
  return kernelState === 'starting' || /waiting/i.test(kernelState ?? '');
}

/**
 * What the notification says when a waiting start ends.
 */
export function outcomeMessage(
  trans: TranslationBundle,
  ticket: IQueuedStart,
  outcome: QueueOutcome
): string {
  const what = ticket.notebook
    ? (ticket.notebook.split('/').pop() ?? ticket.notebook)
    : trans.__('kernel %1', (ticket.kernel_id ?? '').slice(0, 8));
  switch (outcome) {
    case 'started':
      return trans.__(
        'A GPU is free: the kernel of %1 started with %2.',
        what,
        waitsFor(trans, ticket.gpus)
      );
    case 'timed-out':
      return trans.__(
        'The kernel of %1 waited for %2 until the longest wait allowed, and did not start.',
        what,
        waitsFor(trans, ticket.gpus)
      );
    case 'cancelled':
      return trans.__(
        'The kernel of %1 stopped waiting for a GPU: its start was cancelled.',
        what
      );
    default:
      return trans.__(
        'The kernel of %1 stopped waiting for a GPU and did not start.',
        what
      );
  }
}

/**
 * A time for people, from an ISO time, or `''` (formatClock: the panel's one format).
 */
function clock(iso: string | null | undefined): string {
  return formatClock(iso);
}

/**
 * What to tell the user of a kernel's reclaim state, or `''` when there is
 * nothing to tell (active, or merely idle).
 */
export function reclaimText(
  trans: TranslationBundle,
  reclaim: IKernelReclaim | null
): string {
  if (!reclaim) {
    return '';
  }
  if (reclaim.state === 'warned') {
    const at = clock(reclaim.release_at);
    const since = clock(reclaim.idle_since);
    const then =
      reclaim.action === 'restart-without-gpus'
        ? trans.__('it then restarts without GPUs')
        : trans.__('it is then shut down');
    const keptUntil = clock(reclaim.kept_until);
    if (keptUntil) {
      return trans.__(
        'You kept its idle GPUs until %1: they are given back then unless it uses them (%2).',
        keptUntil,
        then
      );
    }
    return at
      ? trans.__(
          'Its GPUs have been idle since %1: they are given back at %2 unless it uses them (%3).',
          since || '?',
          at,
          then
        )
      : trans.__(
          'Its GPUs are idle: they are given back soon unless it uses them (%1).',
          then
        );
  }
  if (reclaim.state === 'reclaimed') {
    return reclaim.action === 'restart-without-gpus'
      ? trans.__(
          'Its GPUs were given back after a long idle time: it restarted without GPUs.'
        )
      : trans.__(
          'Its GPUs were given back after a long idle time: it was shut down.'
        );
  }
  return '';
}

/**
 * What an administrator is told of a kernel its user kept (`''` when not
 * kept): until when, and how often.
 */
export function keptText(
  trans: TranslationBundle,
  reclaim: IKernelReclaim | null
): string {
  if (!reclaim || reclaim.state !== 'warned' || !reclaim.kept_until) {
    return '';
  }
  return trans._n(
    'Kept idle by its user until %2 (once since its last GPU use).',
    'Kept idle by its user until %2 (%1 times since its last GPU use).',
    reclaim.keeps,
    clock(reclaim.kept_until)
  );
}

/**
 * A keep's length as a choice says it: "30 seconds", "15 minutes", "2 hours".
 */
export function keepLengthText(
  trans: TranslationBundle,
  minutes: number
): string {
  if (minutes < 1) {
    const seconds = Math.round(minutes * 60);
    return trans._n('%1 second', '%1 seconds', seconds);
  }
  if (minutes >= 60 && Number.isInteger(minutes / 60)) {
    return trans._n('%1 hour', '%1 hours', minutes / 60);
  }
  const whole = Math.round(minutes);
  return trans._n('%1 minute', '%1 minutes', whole);
}

/**
 * The keeps a warned kernel's user is offered, shortest first: the
 * administrator's bounds and the usual lengths between them.
 */
export function keepChoices(offer: IReclaimKeepOffer): number[] {
  const usual = [15, 30, 60, 120, 240, 480];
  const all = [
    offer.min_minutes,
    ...usual.filter(m => m > offer.min_minutes && m < offer.max_minutes),
    offer.max_minutes
  ];
  return [...new Set(all)].sort((a, b) => a - b);
}

/**
 * The keep one click asks for (a notification's action): half an hour, or
 * the nearest the administrator allows.
 */
export function defaultKeep(offer: IReclaimKeepOffer): number {
  return Math.min(offer.max_minutes, Math.max(offer.min_minutes, 30));
}

/**
 * A key that names one warning (a kernel warned again later is a new one).
 */
export function warningKey(kernelId: string, reclaim: IKernelReclaim): string {
  return `${kernelId}|${reclaim.state}|${reclaim.release_at ?? ''}`;
}

/**
 * What of a notebook panel tells whose start a ticket is (a NotebookPanel).
 */
export interface INotebookLike {
  readonly isDisposed: boolean;
  readonly context: { readonly localPath: string };
  readonly sessionContext: {
    readonly session: {
      readonly kernel: { readonly id: string } | null;
    } | null;
  };
}

/**
 * The ticket of the notebook's kernel start, if it waits in the GPU queue.
 */
export function waitingTicketOf(
  queue: IGpuQueue | null,
  panel: INotebookLike | null
): IQueuedStart | null {
  if (!panel || panel.isDisposed) {
    return null;
  }
  return ticketFor(
    queue,
    panel.context.localPath,
    panel.sessionContext.session?.kernel?.id ?? ''
  );
}

/**
 * What the status bar says of a waiting start.
 */
export function waitingStatusText(
  trans: TranslationBundle,
  ticket: IQueuedStart
): string {
  return trans.__(
    '%1 · waits for %2',
    waitingLabel(trans, ticket),
    waitsFor(trans, ticket.gpus)
  );
}

/**
 * What is said when a cell runs while its notebook's kernel waits: the
 * cell is queued for the kernel, which has not started.
 */
export function cellWhileWaitingText(
  trans: TranslationBundle,
  notebook: string,
  ticket: IQueuedStart
): string {
  if (ticket.scheduler) {
    return ticket.reason
      ? trans.__(
          'The kernel of %1 is queued in %2 (%3): the cell runs once it starts, in a new kernel.',
          notebook,
          ticket.scheduler,
          ticket.reason
        )
      : trans.__(
          'The kernel of %1 is queued in %2: the cell runs once it starts, in a new kernel.',
          notebook,
          ticket.scheduler
        );
  }
  return trans.__(
    'The kernel of %1 is waiting for a GPU (position %2): the cell runs once it starts, in a new kernel.',
    notebook,
    ticket.position
  );
}
