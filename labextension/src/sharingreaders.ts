/**
 * Readers of the fair-sharing documents: the queue, the quota, reclaim
 * states, the admin view, administrators' notices and the pre-pull schedule
 * (sharingtypes.ts, and kerneltypes.ts for reclaim states, as openapi.yaml
 * describes them). These routes are missing on an older server, so a value
 * that is not one reads as `null` or nothing (the lenient half of json.ts's
 * policy), never a broken panel. Fields are read as the API defines them,
 * with nothing guessed.
 */
import { InventorySource } from './gputypes';
import { isObject, num, str, strOrNull } from './json';
import { GpuRequest, IKernelReclaim, IReclaimKeepOffer } from './kerneltypes';
import {
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
  IPrePullEntry,
  IPrePullRun,
  IPrePulls,
  IPruning,
  IPruningRun,
  IQueuedStart
} from './sharingtypes';

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
    deadline: strOrNull(value.deadline) || null,
    scheduler: strOrNull(value.scheduler) ?? '',
    reason: strOrNull(value.reason) ?? '',
    estimate: strOrNull(value.estimate) || null
  };
}

function ticketsOf<T extends IQueuedStart>(
  value: unknown,
  read: (item: unknown) => T | null
): T[] {
  return (
    (Array.isArray(value) ? value : [])
      .map(read)
      .filter((t): t is T => t !== null)
      // A start that waits in the engine's scheduler (position 0) comes after
      // the host queue's, whose order is known.
      .sort((a, b) => (a.position || Infinity) - (b.position || Infinity))
  );
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
    group_used_hours: num(value.group_used_hours),
    ...(typeof value.accounted_by === 'string' && value.accounted_by
      ? { accounted_by: value.accounted_by }
      : {})
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
    notebook: str(value.notebook),
    kept_until: strOrNull(value.kept_until),
    keeps: num(value.keeps) ?? 0,
    keep: keepOfferOf(value.keep)
  };
}

/**
 * A warned kernel's keep offer, or `null` (none, or an older server's
 * state, which has none).
 */
function keepOfferOf(value: unknown): IReclaimKeepOffer | null {
  if (!isObject(value)) {
    return null;
  }
  const min = num(value.min_minutes);
  const max = num(value.max_minutes);
  const left = num(value.times_left);
  if (min === null || max === null || left === null || max < min) {
    return null;
  }
  return { min_minutes: min, max_minutes: max, times_left: left };
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
