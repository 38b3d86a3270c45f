/**
 * Shapes of the JSON documents served under `/gpu-containers/` (as
 * openapi.yaml describes them): a notebook's kernel request and its session,
 * the user's kernels with their GPU use and reclaim states, and a kernel's
 * own view and log events.
 */
import { IEnvironmentStamp } from './environmenttypes';
import { InventorySource } from './gputypes';

/**
 * A GPU request: a count, specific GPU ids, or `null` for the image's default.
 */
export type GpuRequest = number | string[] | null;

/**
 * The body of `POST /gpu-containers/notebooks/kernel`.
 */
export interface INotebookKernelRequest {
  path: string;
  gpus?: GpuRequest;
  kernel_name?: string | null;
  /**
   * `false`: check and store the request, start nothing.
   */
  start?: boolean;
  /**
   * `true`: busy GPUs are waited for in the host-wide GPU queue rather than
   * refused; absent or `null`: the server's default (GPUQueue.wait_by_default).
   */
  wait?: boolean | null;
}

/**
 * A notebook's session, as Jupyter Server's sessions API gives it.
 */
export interface ISession {
  id: string;
  path: string;
  name: string;
  type: string;
  kernel: ISessionKernel;
}

/**
 * The kernel of a session.
 */
export interface ISessionKernel {
  id: string;
  name: string;
  last_activity?: string;
  execution_state?: string;
  connections?: number;
}

/**
 * The reply of `POST /gpu-containers/notebooks/kernel`.
 */
export interface INotebookKernelReply {
  /**
   * The notebook's session; `null` only when nothing was started.
   */
  session: ISession | null;
  gpus: GpuRequest;
}

/**
 * A GPU one of the user's kernels holds (`GET /gpu-containers/kernels`).
 */
export interface IKernelGpu {
  uuid: string;
  /**
   * `null` when the GPU is no longer in the inventory.
   */
  index: string | null;
  name?: string;
  /**
   * Bytes; `null` when unknown.
   */
  memory_total?: number | null;
}

/**
 * One sample of a kernel's GPU use.
 */
export interface IKernelGpuSample {
  /**
   * Unix time (seconds).
   */
  at: number;
  /**
   * Bytes its processes use, over all its GPUs.
   */
  memory_used: number;
  /**
   * Percent of its GPUs' SMs, averaged over them; `null` when unknown.
   */
  utilization: number | null;
}

/**
 * A kernel's GPU use over the last minutes.
 */
export interface IKernelGpuUsage {
  source: InventorySource;
  /**
   * Why the numbers are unknown; empty when they are known.
   */
  reason: string;
  /**
   * Seconds between two samples.
   */
  interval: number;
  /**
   * Unix time since which it holds its GPUs; `null` when it holds none.
   */
  since: number | null;
  memory_total: number | null;
  /**
   * Oldest first.
   */
  samples: IKernelGpuSample[];
}

/**
 * One of the user's container kernels, with its GPU use.
 */
export interface IKernelSummary {
  kernel_id: string;
  kernel_name: string;
  image: string;
  /**
   * The digest its notebook pins the image to, or `''` (an older server sends
   * none).
   */
  pinned: string;
  notebook: string;
  execution_state: string;
  container_id: string | null;
  gpus: IKernelGpu[];
  /**
   * The data it sees beside its workspace (extra mounts, a cluster's
   * datasets); an older server sends none.
   */
  datasets: IKernelDataset[];
  usage: IKernelGpuUsage;
  /**
   * Where it stands with the idle-GPU policy; `null` when that is off or it
   * holds no GPUs.
   */
  reclaim: IKernelReclaim | null;
}

/**
 * Data a kernel sees beside its workspace.
 */
export interface IKernelDataset {
  name: string;
  /**
   * Where the kernel sees it.
   */
  target: string;
  read_only: boolean;
  /**
   * Where its data is: a host path, or a cluster's volume in words.
   */
  source: string;
}

/**
 * Where a kernel stands with the administrator's idle-GPU policy.
 */
export type ReclaimState = 'active' | 'idle' | 'warned' | 'reclaimed';

/**
 * A kernel and the administrator's idle-GPU policy (GPUReclaim): `active`,
 * `idle`, `warned` (its GPUs go at `release_at` unless it uses them) or
 * `reclaimed`.
 */
export interface IKernelReclaim {
  kernel_id: string;
  state: ReclaimState;
  /**
   * ISO time of its last GPU activity.
   */
  idle_since: string;
  release_at: string | null;
  reclaimed_at: string | null;
  action: 'shutdown' | 'restart-without-gpus';
  /**
   * The warning or the reclaim in a sentence (the server's, in English).
   */
  message: string;
  /**
   * UUIDs of the GPUs it holds (held, once reclaimed).
   */
  gpus: string[];
  user: string;
  notebook: string;
  /**
   * ISO time its user's latest keep ends, while it lasts (its GPUs go then
   * unless it uses them); `null` when not kept.
   */
  kept_until: string | null;
  /**
   * How many times its user kept its GPUs since its last GPU activity.
   */
  keeps: number;
  /**
   * What its user may still ask for while it is warned; `null` when nothing.
   */
  keep: IReclaimKeepOffer | null;
}

/**
 * A warned kernel's keep, within the administrator's bounds
 * (GPUReclaim.keep_*): `min_minutes` to `max_minutes`, `times_left` more
 * times while it stays idle.
 */
export interface IReclaimKeepOffer {
  min_minutes: number;
  max_minutes: number;
  times_left: number;
}

/**
 * The reply of `GET /gpu-containers/kernels`.
 */
export interface IKernelList {
  kernels: IKernelSummary[];
  /**
   * The user's kernels shut down in the last hour because their GPUs were
   * reclaimed. (Items are nullable only because the schema they share with
   * `reclaim` is: the server never sends a null one.)
   */
  reclaimed: Array<IKernelReclaim | null>;
  engine_error: string;
}

/**
 * How a kernel's last container ended.
 */
export interface IKernelEnd {
  container_id: string;
  exit_code: number | null;
  oom_killed: boolean;
  /**
   * The provisioner's sentence (with the last lines of the log).
   */
  reason: string;
  at: number;
  /**
   * It ended because someone asked (a restart), not on its own: news, not
   * trouble.
   */
  routine: boolean;
}

/**
 * The image a kernel runs.
 */
export interface IKernelImage {
  reference: string;
  /**
   * The digest the kernel runs instead of its tag's content (its notebook's
   * pin), or `''`.
   */
  pinned: string;
  /**
   * Its content id (sha256:…); empty without a container.
   */
  id: string;
  /**
   * Its registry digest (repo@sha256:…), else its content id.
   */
  digest: string;
  repo_digests: string[];
}

/**
 * A kernel's container now.
 */
export interface IKernelContainer {
  id: string;
  name: string;
  status: string;
  created: number | null;
  started_at: number | null;
  finished_at: number | null;
  exit_code: number;
  oom_killed: boolean;
}

/**
 * A mount of a kernel's container.
 */
export interface IKernelMount {
  type: string;
  source: string;
  target: string;
  read_only: boolean;
}

/**
 * A phase of a kernel's last start.
 */
export interface IKernelPhase {
  name: string;
  /**
   * Unix time it ended.
   */
  at: number;
  seconds: number;
}

/**
 * The reply of `GET /gpu-containers/kernels/<id>`: the kernel's own view.
 */
export interface IKernelView {
  kernel_id: string;
  kernel_name: string;
  notebook: string;
  execution_state: string;
  image: IKernelImage;
  /**
   * `null` between the two containers of a restart.
   */
  container: IKernelContainer | null;
  mounts: IKernelMount[];
  tmpfs: string[];
  gpus: IKernelGpu[];
  launched_at: number | null;
  phases: IKernelPhase[];
  last_end: IKernelEnd | null;
  usage: IKernelGpuUsage;
  reclaim: IKernelReclaim | null;
  /**
   * What the kernel runs on (its notebook's stamp); `null` without a container.
   */
  environment: IEnvironmentStamp | null;
}

/**
 * The `container` event of a kernel's log: the container whose log follows.
 */
export interface IKernelLogContainer {
  container_id: string;
  started_at: number | null;
  last_end: IKernelEnd | null;
}

/**
 * A line of a kernel's container log.
 */
export interface IKernelLogLine {
  /**
   * RFC 3339; empty when unknown.
   */
  time: string;
  text: string;
}

/**
 * The `lines` event of a kernel's log.
 */
export interface IKernelLogLines {
  container_id: string;
  lines: IKernelLogLine[];
  /**
   * Lines dropped before these (the reader was slower than the kernel).
   */
  skipped: number;
}

/**
 * The `ended` event of a kernel's log: its container ended, and why.
 */
export interface IKernelLogEnded {
  container_id: string;
  exit_code: number | null;
  oom_killed: boolean;
  finished_at: number | null;
  reason: string;
  /**
   * Whether it ended because someone asked (a restart, a clean exit): news,
   * not trouble.
   */
  routine: boolean;
}

/**
 * The `shutdown` event of a kernel's log: the kernel is gone.
 */
export interface IKernelLogShutdown {
  reason: string;
}
