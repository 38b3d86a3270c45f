/**
 * Shapes of the JSON documents served under `/gpu-containers/` (as
 * openapi.yaml describes them) for fair GPU sharing: the quota, the GPU
 * queue, administrators' notices and actions, the admin view, and the
 * pre-pull schedule with image pruning.
 */
import { InventorySource } from './gputypes';
import { IPull } from './imagetypes';
import { GpuRequest, IKernelReclaim } from './kerneltypes';

/**
 * The caller's GPU-hours this day or week (`GET /gpu-containers/quota`).
 */
export interface IGpuQuota {
  /**
   * Whether a quota applies (the user's, or the group's).
   */
  enabled: boolean;
  period: 'day' | 'week';
  /**
   * GPU-hours per period; 0 when there is no quota per user.
   */
  limit_hours: number;
  /**
   * GPU-hours used this period, kernels still running included.
   */
  used_hours: number;
  /**
   * The smaller of what the user's and the group's quota leave.
   */
  left_hours: number;
  /**
   * ISO time the next period starts, and the use with it from zero.
   */
  resets_at: string;
  group: string | null;
  group_limit_hours: number | null;
  group_used_hours: number | null;
  /**
   * Why running kernels' use is missing (no Docker engine); absent when it is counted.
   */
  engine_error?: string;
  /**
   * Who counted `used_hours` where the server keeps no quota and the engine
   * accounts GPU-hours itself (`Slurm`: every job of the user's there);
   * absent else.
   */
  accounted_by?: string;
}

/**
 * A start that waits for GPUs in the host-wide queue (`GET /gpu-containers/queue`).
 * Another user's start carries no kernel id, and its user and notebook only where the
 * administrator shows other users (GPUVisibility.show_other_users).
 */
export interface IQueuedStart {
  /**
   * The kernel the start will be; null for another user's.
   */
  kernel_id: string | null;
  yours: boolean;
  user: string | null;
  notebook: string | null;
  /**
   * What it waits for.
   */
  gpus: GpuRequest;
  /**
   * 1-based, in the order GPUs will be given (first come, first served within a user,
   * round-robin across users).
   */
  position: number;
  /**
   * Seconds since it joined the queue.
   */
  waited: number;
  /**
   * ISO time it stops waiting (409 "GPU wait timed out"); null when none is known.
   */
  deadline: string | null;
  /**
   * The engine's own scheduler the start waits in ("Slurm": its job is
   * pending), whose order is its own (`position` is then 0); `''` for a
   * start in this host's GPU queue.
   */
  scheduler: string;
  /**
   * The scheduler's reason for the wait ("Resources", "Priority"…), or `''`.
   */
  reason: string;
  /**
   * ISO time the scheduler expects the start, or null when it has no estimate.
   */
  estimate: string | null;
}

/**
 * The reply of `GET /gpu-containers/queue`.
 */
export interface IGpuQueue {
  queue: IQueuedStart[];
  length: number;
  /**
   * Whether starts that do not say wait for GPUs.
   */
  wait_by_default: boolean;
  /**
   * The longest a start waits, in seconds.
   */
  max_wait: number;
}

/**
 * What an administrator does to a kernel (`POST /gpu-containers/admin/kernels/{id}`).
 */
export type AdminAction = 'release' | 'shutdown';

/**
 * Why an administrator released or shut down one of the user's kernels.
 */
export interface IAdminNotice {
  kernel_id: string;
  user: string;
  action: AdminAction;
  reason: string;
  /**
   * The administrator's account.
   */
  by: string;
  /**
   * ISO time it was done; null when unknown.
   */
  at: string | null;
  /**
   * The sentence the user is shown (the server's, in English).
   */
  message: string;
}

/**
 * The reply of `GET /gpu-containers/admin/notices`: the user's own, oldest first.
 */
export interface IAdminNotices {
  notices: IAdminNotice[];
}

/**
 * The reply of `POST /gpu-containers/admin/kernels/{id}`: the notice its user gets, and
 * whether the action is `done` (200) or `requested` of the kernel's own server (202).
 */
export interface IAdminActionReply extends IAdminNotice {
  state: 'done' | 'requested';
  /**
   * The server that carries the action out (202 only).
   */
  server_id?: string;
}

/**
 * A GPU of the host in the admin view.
 */
export interface IAdminGpu {
  uuid: string;
  index: string | null;
  name: string;
  /**
   * Kernels holding it.
   */
  holders: number;
}

/**
 * A GPU that a holder of the admin view holds.
 */
export interface IAdminHolderGpu {
  uuid: string;
  /**
   * `"0"`, or `"0/1"` for a MIG instance; null for a GPU no longer present.
   */
  index: string | null;
  name: string;
}

/**
 * A holder's GPU activity now (NVML's processes).
 */
export interface IAdminHolderActivity {
  /**
   * GPU memory of its processes, in bytes.
   */
  memory_used?: number;
  /**
   * SM utilisation in percent; null when NVML does not say.
   */
  utilization?: number | null;
}

/**
 * A kernel on the host that holds GPUs, from the host-wide ledger (the admin view).
 */
export interface IAdminHolder {
  kernel_id: string;
  container_id: string;
  user: string;
  uid: string;
  notebook: string;
  image: string;
  server_id: string;
  /**
   * ISO time its container was created; null when unknown.
   */
  since: string | null;
  held_seconds: number | null;
  gpus: IAdminHolderGpu[];
  /**
   * Null when unknown (declared GPUs, or no process on them).
   */
  activity: IAdminHolderActivity | null;
  /**
   * Its reclaim state, when this server watches it.
   */
  reclaim: IKernelReclaim | null;
  /**
   * The kernel is this server's.
   */
  here: boolean;
  /**
   * The server the kernel belongs to runs.
   */
  server_alive: boolean;
}

/**
 * A waiting start in the admin view: every ticket in full, with its owner and server.
 */
export interface IAdminQueuedStart extends IQueuedStart {
  uid: number;
  server_id: string;
}

/**
 * The admin view's queue.
 */
export interface IAdminQueue {
  queue: IAdminQueuedStart[];
  length: number;
  wait_by_default?: boolean;
  max_wait?: number;
  /**
   * How this process's waits ended (granted, timed_out, ...).
   */
  counts?: Record<string, number>;
}

/**
 * One user's GPU-hours in the admin view.
 */
export interface IAdminQuotaUser {
  uid: number;
  user: string;
  enabled: boolean;
  period: 'day' | 'week';
  limit_hours: number;
  used_hours: number;
  left_hours: number;
  resets_at: string;
  group: string | null;
  group_limit_hours: number | null;
  group_used_hours: number | null;
}

/**
 * Every user's GPU-hour use in the admin view, and the quotas set.
 */
export interface IAdminQuotas {
  enabled: boolean;
  period: 'day' | 'week';
  hours_per_user: number;
  hours_per_group: Record<string, number>;
  users: IAdminQuotaUser[];
}

/**
 * The reply of `GET /gpu-containers/admin` (administrators only).
 */
export interface IAdminView {
  holders: IAdminHolder[];
  gpus: IAdminGpu[];
  queue: IAdminQueue;
  reclaim: Array<IKernelReclaim | null>;
  /**
   * Null while the server has no quotas built in.
   */
  quotas: IAdminQuotas | null;
  engine_error: string;
  source: InventorySource;
}

/**
 * A scheduled pre-pull's latest run, by any server of the host.
 */
export interface IPrePullRun {
  state: 'pulling' | 'done' | 'error' | 'cancelled' | 'interrupted';
  started: string;
  finished: string | null;
  /**
   * The engine's last status line, or the error's sentence.
   */
  message: string;
  digest: string;
  image_id: string;
}

/**
 * One image of the administrator's pre-pull schedule.
 */
export interface IPrePullEntry {
  image: string;
  /**
   * A daily time, `"HH:MM"` in the host's time zone; null for an interval.
   */
  at: string | null;
  every_hours: number | null;
  /**
   * Null before its first run.
   */
  last_run: IPrePullRun | null;
  /**
   * ISO time it is due next; null while this server pulls it, or when unknown.
   */
  next_run: string | null;
  /**
   * This server's pull of it under way (or just finished), else null.
   */
  pull: IPull | null;
}

/**
 * An image pruning removed or kept (an administrator's view only).
 */
export interface IPrunedImage {
  image: string[];
  id: string;
  size: number;
  last_used: string | null;
  /**
   * Why it was kept (kept images only).
   */
  reason?: string;
}

/**
 * Pruning's last pass.
 */
export interface IPruningRun {
  ran: string;
  removed_count: number;
  kept_count: number;
  /**
   * An administrator's view only (else null).
   */
  removed: IPrunedImage[] | null;
  kept: IPrunedImage[] | null;
  freed_bytes: number;
  /**
   * Why the pass could not look at the images, or `''`.
   */
  error: string;
}

/**
 * Pruning of images unused for a while (PrePuller.prune_after_days).
 */
export interface IPruning {
  enabled: boolean;
  after_days: number;
  interval_hours: number;
  last_run: IPruningRun | null;
  next_run: string | null;
}

/**
 * The reply of `GET /gpu-containers/prepull`: the pre-pull schedule, and pruning.
 */
export interface IPrePulls {
  schedule: IPrePullEntry[];
  /**
   * Whether this server runs the schedule.
   */
  running: boolean;
  check_interval: number;
  /**
   * The host's time zone, in which `at` times are meant.
   */
  time_zone: string;
  pruning: IPruning;
}
