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
 * An allocatable GPU (or MIG instance) and the kernels that hold it.
 */
export interface IGpu {
  index: string;
  uuid: string;
  name: string;
  brand: string;
  compute_capability: string;
  memory_total: number;
  memory_used: number;
  utilization: number | null;
  mig_enabled: boolean;
  parent_uuid: string;
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
  total_bytes: number;
  downloaded_bytes: number;
  extracted_layers: number;
  progress: number;
  digest: string;
  started: number;
  finished: number;
}

/**
 * A GPU request: a count, specific GPU ids, or `null` for the image's default.
 */
export type GpuRequest = number | string[] | null;

/**
 * The reply of `POST /gpu-containers/notebooks/kernel`.
 */
export interface INotebookKernelReply {
  /**
   * The notebook's session; `null` only when nothing was started.
   */
  session: {
    id: string;
    path: string;
    kernel: { id: string; name: string };
  } | null;
  gpus: GpuRequest;
}
