/**
 * Shapes of the JSON documents served under `/gpu-containers/` (as
 * openapi.yaml describes them): the server's status, the host's GPUs and who
 * holds them, an image's compatibility verdict, and the cluster's GPU node
 * pools. imagetypes.ts, kerneltypes.ts and sharingtypes.ts hold the others.
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

  /**
   * The option that decides where the engine is (administrators only).
   */
  setting?: string;
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

  /**
   * The administrator's option that refuses the pulls (administrators only).
   */
  pull_refusal_setting?: string;
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
  /**
   * Whose kernels the holders are: every user's on the host, or only the
   * caller's own (an engine that shows each user only their containers, as
   * rootless Podman does).
   */
  ledger_scope: 'host' | 'user';
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
 * The reply of `GET /gpu-containers/cluster`: on a cluster (Kubernetes,
 * Slurm), the GPU node pools; on Docker, backend "docker" and no pools.
 */
export interface IClusterView {
  backend: 'docker' | 'kubernetes' | 'slurm';
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
  /**
   * Which of the node's GPUs (indices), where the scheduler says (Slurm); `[]`
   * where it does not (Kubernetes).
   */
  gpus: string[];
}

/**
 * A listed image's verdict on a pool's driver and GPUs.
 */
export interface IPoolVerdict {
  image: string;
  verdict: IVerdict;
}
