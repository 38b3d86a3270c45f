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
  memory_total: number;
  memory_used: number;
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
