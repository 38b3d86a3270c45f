/**
 * Shapes of what a notebook ran on (as openapi.yaml describes them): the
 * environment stamp its metadata records at each kernel start, and the
 * saved stamp checked against the server's images now.
 */

/**
 * The verdict on the GPUs a kernel got.
 */
export interface IEnvironmentVerdict {
  outcome: string;
  reason: string;
}

/**
 * What a kernel runs on (`metadata.gpu_containers.environment`): no paths,
 * user names or GPU UUIDs.
 */
export interface IEnvironmentStamp {
  image: string;
  /**
   * The content it ran: repo@sha256:… (else the content id of a local build).
   */
  digest: string;
  framework: string;
  framework_version: string;
  cuda_version: string;
  python_version: string;
  gpus: string[];
  driver_version: string;
  /**
   * `null` for a CPU kernel.
   */
  verdict: IEnvironmentVerdict | null;
}

/**
 * The saved notebook's stamp against the server's images now.
 */
export interface INotebookStampCheck {
  /**
   * Never `null` in a check (the schema's stamp is nullable where it is used
   * for a kernel without one).
   */
  recorded: IEnvironmentStamp | null;
  /**
   * The digest the notebook pins its image to, or `''`.
   */
  pin: string;
  /**
   * What the stamp's image reference names now (`''`: not on the server).
   */
  tag_digest: string;
  moved: boolean;
  recorded_present: boolean;
  pinnable: boolean;
  /**
   * What a pin to the recorded content writes (`image_digest`): its registry
   * digest, or a content built on the server that the server kept (`''`: none).
   * The server's words: the page never composes a pin.
   */
  pin_reference: string;
  /**
   * `false` behind a kernel service (its images are the service's).
   */
  compared: boolean;
}

/**
 * A GPU a notebook's kernel holds.
 */
export interface INotebookKernelGpu {
  uuid: string;
  /**
   * `null` for a GPU no longer present.
   */
  index: string | null;
}

/**
 * A GPU request as a saved notebook holds it (a count, GPU ids), or `null`.
 */
export type StoredGpuRequest = number | string[] | null;

/**
 * A notebook's kernel as `GET /gpu-containers/notebooks/kernel` gives it.
 */
export interface INotebookKernelStateKernel {
  id: string;
  name: string;
  image: string;
  display_name: string;
  gpus: INotebookKernelGpu[];
  execution_state: string;
  /**
   * `null` before its container runs (or for a native kernel).
   */
  environment: IEnvironmentStamp | null;
  pinned: string;
}

/**
 * The reply of `GET /gpu-containers/notebooks/kernel?path=…`.
 */
export interface INotebookKernelState {
  path: string;
  request: StoredGpuRequest;
  request_problem: string;
  default: StoredGpuRequest;
  kernel: INotebookKernelStateKernel | null;
  stamp: INotebookStampCheck | null;
  retired: INotebookRetiredImage | null;
}

/**
 * The image a saved notebook asks for, retired by the administrator or no
 * longer on the server, and the move its notebook is offered.
 */
export interface INotebookRetiredImage {
  /**
   * `retired`: its kernel spec is still here; `removed`: the spec is gone.
   */
  state: 'retired' | 'removed';
  image: string;
  /**
   * The administrator's message, or `''`.
   */
  message: string;
  /**
   * The image to move to, or `''`.
   */
  redirect: string;
  /**
   * The redirect's kernel spec here (`''`: none yet; it is pulled first).
   */
  redirect_kernel_name: string;
}
