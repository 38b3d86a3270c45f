/**
 * Shapes of the JSON documents served under `/gpu-containers/`.
 */

/**
 * Reachability of the container engine (the Docker daemon) as the server sees it.
 */
export interface IEngineStatus {
  /**
   * Whether the server could talk to the engine.
   */
  ok: boolean;

  /**
   * A sentence for people: what the server found, or why the engine is unreachable.
   */
  message: string;

  /**
   * The engine's version, when it answered.
   */
  version?: string;

  /**
   * The endpoint the server tried, e.g. `unix:///var/run/docker.sock`.
   */
  endpoint: string;
}

/**
 * The reply of `GET /gpu-containers/status`.
 */
export interface IStatus {
  /**
   * The container engine's status.
   */
  engine: IEngineStatus;

  /**
   * How many container kernel specs the server currently offers.
   */
  kernelspecs: number;

  /**
   * Whether the user is an administrator of GPU sharing here (an older
   * server does not say: read as unknown).
   */
  admin?: boolean;

  /**
   * Why no pull of the user's can succeed here (pulls are the
   * administrator's), or `''` (an older server does not say).
   */
  pull_refusal?: string;
}

/**
 * Where the GPU inventory comes from (see the server's `InventorySource`).
 */
export type InventorySource = 'nvml' | 'static' | 'none';

/**
 * One kernel's hold on a GPU. Another user's shows only that the GPU is taken.
 */
export interface IHolder {
  mine: boolean;
  kernel_id: string;
  user: string;
  notebook: string;
  image: string;
  since: number;
  memory_used: number | null;
}

/**
 * A GPU (or MIG instance) of the host's inventory.
 */
export interface IGpuDevice {
  index: string;
  uuid: string;
  name: string;
  brand: string;
  compute_capability: string;
  /**
   * Bytes; 0 when unknown.
   */
  memory_total: number;
  /**
   * Bytes; `null` when unknown (a static inventory, or a driver that does not say).
   */
  memory_used: number | null;
  utilization: number | null;
  mig_enabled: boolean;
  /**
   * The MIG instances of a GPU with MIG enabled (the report lists them instead of the GPU).
   */
  mig_instances: IGpuDevice[];
  parent_uuid: string;
}

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
}

/**
 * An allocatable GPU (or MIG instance) and the kernels that hold it.
 */
export interface IGpu extends IGpuDevice {
  holders: IHolder[];
}

/**
 * The reply of `GET /gpu-containers/gpus`.
 */
export interface IGpuReport {
  source: InventorySource;
  reason: string;
  driver_version: string;
  cuda_driver_version: string;
  policy: 'exclusive' | 'shared';
  max_kernels_per_gpu: number;
  max_gpus_per_user: number;
  gpus: IGpu[];
  /**
   * Why the holders are unknown (no Docker engine), or `''`.
   */
  engine_error: string;
}

/**
 * Outcomes of the compatibility verdict of an image against the host's driver.
 */
export type VerdictOutcome =
  'native' | 'compat' | 'cannot-run' | 'cpu-only' | 'no-gpus' | 'unknown';

/**
 * Whether an image's CUDA stack runs on this host's driver.
 */
export interface IVerdict {
  outcome: VerdictOutcome;
  reason: string;
  needed_driver: string;
}

/**
 * The reply of `GET /gpu-containers/cluster`: on Kubernetes, the GPU node
 * pools; on Docker, backend "docker" and no pools.
 */
export interface IClusterView {
  backend: 'docker' | 'kubernetes';
  pools: INodePool[];
  /**
   * Why the Kubernetes API did not answer, or `''`.
   */
  engine_error: string;
}

/**
 * GPU nodes whose GPU feature discovery labels agree (product, driver,
 * compute capability, memory).
 */
export interface INodePool {
  id: string;
  product: string;
  driver_version: string;
  cuda_driver_version: string;
  compute_capability: string;
  memory_total: number | null;
  nodes: IClusterNode[];
  holders: IClusterHolder[];
  verdicts: IPoolVerdict[];
}

/**
 * One GPU node of a pool.
 */
export interface IClusterNode {
  name: string;
  ready: boolean;
  resources: IClusterNodeResource[];
}

/**
 * A node's GPUs of one resource (`nvidia.com/gpu`, a MIG resource).
 */
export interface IClusterNodeResource {
  resource: string;
  allocatable: number;
  held: number;
  free: number;
}

/**
 * A kernel pod holding GPUs on a node; another user's without its user,
 * notebook and kernel id (unless the server shows other users).
 */
export interface IClusterHolder {
  node: string;
  pod: string;
  count: number;
  resource: string;
  mine: boolean;
  kernel_id: string;
  user: string;
  notebook: string;
}

/**
 * A listed image's verdict on a pool's driver and GPUs.
 */
export interface IPoolVerdict {
  image: string;
  verdict: IVerdict;
}

/**
 * One row of the image catalog (`GET /gpu-containers/images`).
 */
export interface IImageRow {
  reference: string;
  registry: string;
  listed: boolean;
  description: string;
  allowed: boolean;
  allowed_reason: string;
  pull_id: string;
  pulled: boolean;
  id: string;
  digest: string;
  size: number | null;
  /**
   * Bytes of its layers other local images use too (null: not pulled, or not reported).
   */
  shared_size: number | null;
  /**
   * Bytes removing this image alone would free (null as shared_size).
   */
  unique_size: number | null;
  /**
   * Containers that use it, in any state (null: not pulled, or not reported).
   */
  containers: number | null;
  created: string;
  framework: string;
  framework_version: string;
  framework_release: string;
  cuda_version: string;
  gpu: boolean;
  verdict: IVerdict;
  kernel_name: string;
  kernel_ready: boolean | null;
  kernel_ready_reason: string;
  python: string;
  python_version: string;
  ipykernel_version: string;
  frameworks: Record<string, string>;
}

/**
 * The host as the catalog sees it.
 */
export interface ICatalogHost {
  gpus: number;
  driver_version: string;
  cuda_driver_version: string;
  reason: string;
  source: InventorySource;
}

/**
 * Host-wide totals of local images' disk use (GET /gpu-containers/images, `disk`).
 */
export interface IImagesDiskUse {
  images: number;
  /**
   * Bytes all image layers take, each shared layer once.
   */
  layers_bytes: number;
  images_bytes: number;
  unused_images: number;
  /**
   * Bytes removing every image no container uses would free at least.
   */
  reclaimable_bytes: number;
}

/**
 * The reply of `GET /gpu-containers/images`.
 */
export interface ICatalog {
  images: IImageRow[];
  host: ICatalogHost;
  /**
   * null when the engine did not report its disk use.
   */
  disk: IImagesDiskUse | null;
  /**
   * Why only listed images are shown (no Docker engine), or `''`.
   */
  engine_error: string;
}

/**
 * States of a pull: `queued` and `pulling` are under way, the others final.
 */
export type PullState = 'queued' | 'pulling' | 'done' | 'error' | 'cancelled';

/**
 * A snapshot of one image pull.
 */
export interface IPull {
  id: string;
  image: string;
  registry: string;
  state: PullState;
  phase: 'resolving' | 'downloading' | 'extracting' | 'complete';
  message: string;
  error_status: number;
  layers: IPullLayer[];
  total_bytes: number;
  downloaded_bytes: number;
  extracted_layers: number;
  progress: number;
  digest: string;
  started: number;
  finished: number;
}

/**
 * One layer of a pull; `exists` is a layer already on this host.
 */
export interface IPullLayer {
  id: string;
  phase:
    | 'waiting'
    | 'downloading'
    | 'downloaded'
    | 'extracting'
    | 'complete'
    | 'exists';
  downloaded: number;
  extracted: number;
  size: number;
}

/**
 * The body of `POST /gpu-containers/pulls`.
 */
export interface IPullRequest {
  image: string;
  /**
   * Credentials for this pull only (kept nowhere); the stored ones when absent or null.
   */
  auth?: IRegistryCredentials | null;
}

/**
 * A registry login: the body of `PUT /gpu-containers/registries/{registry}/credentials`,
 * and the `auth` of a pull.
 */
export interface IRegistryCredentials {
  username: string;
  password: string;
}

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
  notebook: string;
  execution_state: string;
  container_id: string | null;
  gpus: IKernelGpu[];
  usage: IKernelGpuUsage;
  /**
   * Where it stands with the idle-GPU policy; `null` when that is off or it
   * holds no GPUs.
   */
  reclaim: IKernelReclaim | null;
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
}

/**
 * The `shutdown` event of a kernel's log: the kernel is gone.
 */
export interface IKernelLogShutdown {
  reason: string;
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
