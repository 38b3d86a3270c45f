/**
 * Fair GPU sharing in the front end, as pure helpers: reading the queue,
 * quota, reclaim, admin, notice and pre-pull documents (types.ts, as
 * openapi.yaml describes them), and the words the panel, the toolbar and the
 * notifications use for them. No DOM, no requests.
 *
 * The readers check what they read: a server older than these routes (or one
 * answering something else) yields `null` or nothing, never a broken panel.
 * Fields are read as the API defines them, with nothing guessed.
 */
import type { TranslationBundle } from '@jupyterlab/translation';

import { formatBytes, formatClock } from './format';
import {
  GpuRequest,
  IAdminHolder,
  IAdminHolderActivity,
  IAdminNotice,
  IAdminQueue,
  IAdminQueuedStart,
  IAdminQuotaUser,
  IAdminQuotas,
  IAdminView,
  IGpuQueue,
  IGpuQuota,
  IImageRow,
  IKernelReclaim,
  IPrePullEntry,
  IPrePullRun,
  IPrePulls,
  IPruning,
  IPruningRun,
  IQueuedStart,
  InventorySource
} from './types';

/**
 * How a waiting start of the user's ended, as the page finds out (the API
 * does not say: its start's request ends, in another page perhaps).
 */
export type QueueOutcome = 'started' | 'timed-out' | 'cancelled' | 'gone';

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function str(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

function num(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

/**
 * A string, or `null` for anything else (the API's nullable strings).
 */
function strOrNull(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

function day(value: unknown): 'day' | 'week' {
  return value === 'day' ? 'day' : 'week';
}

/**
 * A GPU request as the server writes it (a count, ids, a string of them, or
 * null), narrowed to what the front end shows.
 */
function gpuRequestOf(value: unknown): GpuRequest {
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0) {
    return value;
  }
  if (Array.isArray(value)) {
    return value.map(v => String(v));
  }
  if (typeof value === 'string' && value.trim() !== '') {
    const text = value.trim();
    if (/^\d+$/.test(text)) {
      return Number(text);
    }
    return text === 'none' ? 0 : text.split(',').map(s => s.trim());
  }
  return null;
}

/**
 * A queued start from the server's JSON, or `null` when it is not one.
 */
export function ticketOf(value: unknown): IQueuedStart | null {
  if (!isObject(value)) {
    return null;
  }
  const position = num(value.position);
  if (position === null) {
    return null;
  }
  return {
    // Another user's start has no kernel id, and a user and notebook only
    // where the administrator shows other users: null, as the server sends.
    kernel_id: strOrNull(value.kernel_id) || null,
    yours: value.yours === true,
    user: strOrNull(value.user),
    notebook: strOrNull(value.notebook),
    gpus: gpuRequestOf(value.gpus),
    position,
    waited: num(value.waited) ?? 0,
    deadline: strOrNull(value.deadline) || null
  };
}

function ticketsOf<T extends IQueuedStart>(
  value: unknown,
  read: (item: unknown) => T | null
): T[] {
  return (Array.isArray(value) ? value : [])
    .map(read)
    .filter((t): t is T => t !== null)
    .sort((a, b) => a.position - b.position);
}

/**
 * The reply of `GET /gpu-containers/queue`, or `null` when it is not one.
 */
export function queueOf(value: unknown): IGpuQueue | null {
  if (!isObject(value) || !Array.isArray(value.queue)) {
    return null;
  }
  const queue = ticketsOf(value.queue, ticketOf);
  return {
    queue,
    length: num(value.length) ?? queue.length,
    wait_by_default: value.wait_by_default === true,
    max_wait: num(value.max_wait) ?? 0
  };
}

/**
 * The reply of `GET /gpu-containers/quota`, or `null` when it is not one.
 */
export function quotaOf(value: unknown): IGpuQuota | null {
  if (!isObject(value) || typeof value.enabled !== 'boolean') {
    return null;
  }
  return {
    enabled: value.enabled,
    period: day(value.period),
    limit_hours: num(value.limit_hours) ?? 0,
    used_hours: num(value.used_hours) ?? 0,
    left_hours: num(value.left_hours) ?? 0,
    resets_at: str(value.resets_at),
    group: strOrNull(value.group),
    group_limit_hours: num(value.group_limit_hours),
    group_used_hours: num(value.group_used_hours)
  };
}

/**
 * A kernel's reclaim state (`reclaim` of a kernels row or an admin holder,
 * an item of `reclaimed`), or `null` without one.
 */
export function reclaimOf(value: unknown): IKernelReclaim | null {
  if (!isObject(value)) {
    return null;
  }
  const state = value.state;
  if (
    state !== 'active' &&
    state !== 'idle' &&
    state !== 'warned' &&
    state !== 'reclaimed'
  ) {
    return null;
  }
  return {
    kernel_id: str(value.kernel_id),
    state,
    idle_since: str(value.idle_since),
    release_at: strOrNull(value.release_at),
    reclaimed_at: strOrNull(value.reclaimed_at),
    action:
      value.action === 'restart-without-gpus'
        ? 'restart-without-gpus'
        : 'shutdown',
    message: str(value.message),
    gpus: Array.isArray(value.gpus) ? value.gpus.map(String) : [],
    user: str(value.user),
    notebook: str(value.notebook)
  };
}

function activityOf(value: unknown): IAdminHolderActivity | null {
  if (!isObject(value)) {
    return null;
  }
  const activity: IAdminHolderActivity = {};
  const memory = num(value.memory_used);
  if (memory !== null) {
    activity.memory_used = memory;
  }
  if ('utilization' in value) {
    activity.utilization = num(value.utilization);
  }
  return activity;
}

function holderOf(value: unknown): IAdminHolder | null {
  if (!isObject(value) || !str(value.kernel_id)) {
    return null;
  }
  return {
    kernel_id: str(value.kernel_id),
    container_id: str(value.container_id),
    user: str(value.user),
    uid: String(value.uid ?? ''),
    notebook: str(value.notebook),
    image: str(value.image),
    server_id: str(value.server_id),
    since: strOrNull(value.since),
    held_seconds: num(value.held_seconds),
    gpus: (Array.isArray(value.gpus) ? value.gpus : [])
      .filter(isObject)
      .map(gpu => ({
        uuid: str(gpu.uuid),
        index: strOrNull(gpu.index),
        name: str(gpu.name)
      })),
    activity: activityOf(value.activity),
    reclaim: reclaimOf(value.reclaim),
    here: value.here === true,
    server_alive: value.server_alive !== false
  };
}

function adminTicketOf(value: unknown): IAdminQueuedStart | null {
  const ticket = ticketOf(value);
  if (!ticket || !isObject(value)) {
    return null;
  }
  // The server writes each ticket as its own user sees it (`yours` is true
  // for all); to the administrator none is theirs.
  return {
    ...ticket,
    yours: false,
    uid: num(value.uid) ?? -1,
    server_id: str(value.server_id)
  };
}

function adminQueueOf(value: unknown): IAdminQueue {
  const queue = ticketsOf(isObject(value) ? value.queue : [], adminTicketOf);
  return {
    queue,
    length: (isObject(value) && num(value.length)) || queue.length
  };
}

function quotaUserOf(value: unknown): IAdminQuotaUser | null {
  const quota = quotaOf(value);
  if (!quota || !isObject(value) || !str(value.user)) {
    return null;
  }
  return { uid: num(value.uid) ?? -1, user: str(value.user), ...quota };
}

function adminQuotasOf(value: unknown): IAdminQuotas | null {
  if (!isObject(value) || !Array.isArray(value.users)) {
    return null;
  }
  const perGroup: Record<string, number> = {};
  if (isObject(value.hours_per_group)) {
    for (const [group, hours] of Object.entries(value.hours_per_group)) {
      const n = num(hours);
      if (n !== null) {
        perGroup[group] = n;
      }
    }
  }
  return {
    enabled: value.enabled === true,
    period: day(value.period),
    hours_per_user: num(value.hours_per_user) ?? 0,
    hours_per_group: perGroup,
    users: value.users
      .map(quotaUserOf)
      .filter((q): q is IAdminQuotaUser => q !== null)
  };
}

/**
 * The reply of `GET /gpu-containers/admin`, or `null` when it is not one.
 */
export function adminViewOf(value: unknown): IAdminView | null {
  if (!isObject(value) || !Array.isArray(value.holders)) {
    return null;
  }
  const source: InventorySource =
    value.source === 'nvml' || value.source === 'static'
      ? value.source
      : 'none';
  return {
    holders: value.holders
      .map(holderOf)
      .filter((h): h is IAdminHolder => h !== null),
    gpus: (Array.isArray(value.gpus) ? value.gpus : [])
      .filter(isObject)
      .map(gpu => ({
        uuid: str(gpu.uuid),
        index: strOrNull(gpu.index),
        name: str(gpu.name),
        holders: num(gpu.holders) ?? 0
      })),
    queue: adminQueueOf(value.queue),
    reclaim: (Array.isArray(value.reclaim) ? value.reclaim : [])
      .map(reclaimOf)
      .filter((r): r is IKernelReclaim => r !== null),
    quotas: adminQuotasOf(value.quotas),
    engine_error: str(value.engine_error),
    source
  };
}

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
 * The reply of `GET /gpu-containers/admin/notices`: the user's notices,
 * oldest first (none when it is not one).
 */
export function noticesOf(value: unknown): IAdminNotice[] {
  const items =
    isObject(value) && Array.isArray(value.notices) ? value.notices : [];
  return items.filter(isObject).flatMap(item => {
    const action = item.action;
    const message = str(item.message);
    if ((action !== 'release' && action !== 'shutdown') || !message) {
      return [];
    }
    return [
      {
        kernel_id: str(item.kernel_id),
        user: str(item.user),
        action,
        reason: str(item.reason),
        by: str(item.by),
        at: strOrNull(item.at),
        message
      }
    ];
  });
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

function prePullRunOf(value: unknown): IPrePullRun | null {
  if (!isObject(value)) {
    return null;
  }
  const state = value.state;
  if (
    state !== 'pulling' &&
    state !== 'done' &&
    state !== 'error' &&
    state !== 'cancelled' &&
    state !== 'interrupted'
  ) {
    return null;
  }
  return {
    state,
    started: str(value.started),
    finished: strOrNull(value.finished),
    message: str(value.message),
    digest: str(value.digest),
    image_id: str(value.image_id)
  };
}

function pruningRunOf(value: unknown): IPruningRun | null {
  if (!isObject(value) || !str(value.ran)) {
    return null;
  }
  return {
    ran: str(value.ran),
    removed_count: num(value.removed_count) ?? 0,
    kept_count: num(value.kept_count) ?? 0,
    // The lists are an administrator's; the panel shows only the counts.
    removed: null,
    kept: null,
    freed_bytes: num(value.freed_bytes) ?? 0,
    error: str(value.error)
  };
}

function pruningOf(value: unknown): IPruning {
  const v = isObject(value) ? value : {};
  return {
    enabled: v.enabled === true,
    after_days: num(v.after_days) ?? 0,
    interval_hours: num(v.interval_hours) ?? 0,
    last_run: pruningRunOf(v.last_run),
    next_run: strOrNull(v.next_run)
  };
}

/**
 * The reply of `GET /gpu-containers/prepull`, or `null` when it is not one.
 * The pull under way of an entry is left out (`null`): the panel follows
 * pulls through the pulls API.
 */
export function prePullsOf(value: unknown): IPrePulls | null {
  if (!isObject(value) || !Array.isArray(value.schedule)) {
    return null;
  }
  const schedule: IPrePullEntry[] = value.schedule
    .filter(isObject)
    .filter(entry => str(entry.image) !== '')
    .map(entry => ({
      image: str(entry.image),
      at: strOrNull(entry.at),
      every_hours: num(entry.every_hours),
      last_run: prePullRunOf(entry.last_run),
      next_run: strOrNull(entry.next_run),
      pull: null
    }));
  return {
    schedule,
    running: value.running === true,
    check_interval: num(value.check_interval) ?? 0,
    time_zone: str(value.time_zone),
    pruning: pruningOf(value.pruning)
  };
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
  return trans.__(
    'position %1 of %2',
    ticket.position,
    Math.max(length, ticket.position)
  );
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
 * The only honest estimate of a wait: when it gives up (`gives up at
 * 14:05`), or `''` without a deadline. No one can know when a GPU frees.
 */
export function deadlineText(
  trans: TranslationBundle,
  ticket: IQueuedStart
): string {
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
  if (kernelState === 'starting' || /waiting/i.test(kernelState)) {
    return undefined;
  }
  return kernelState === 'dead' ? 'gone' : 'started';
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
 * A key that names one warning (a kernel warned again later is a new one).
 */
export function warningKey(kernelId: string, reclaim: IKernelReclaim): string {
  return `${kernelId}|${reclaim.state}|${reclaim.release_at ?? ''}`;
}

/**
 * The disk the pulled images use, in bytes, or `null` when no row says.
 */
export function imagesDiskUse(rows: IImageRow[]): number | null {
  // One image under several references counts once.
  const sizes = new Map<string, number>();
  for (const row of rows) {
    if (row.pulled && typeof row.size === 'number' && row.size >= 0) {
      sizes.set(row.id || row.reference, row.size);
    }
  }
  if (sizes.size === 0) {
    return null;
  }
  let total = 0;
  for (const size of sizes.values()) {
    total += size;
  }
  return total;
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
  return trans.__(
    'The kernel of %1 is waiting for a GPU (position %2): the cell runs once it starts, in a new kernel.',
    notebook,
    ticket.position
  );
}
