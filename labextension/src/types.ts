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
 * The reply of `GET /gpu-containers/images`.
 */
export interface ICatalog {
  images: IImageRow[];
  host: ICatalogHost;
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
}

/**
 * The reply of `GET /gpu-containers/kernels`.
 */
export interface IKernelList {
  kernels: IKernelSummary[];
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
