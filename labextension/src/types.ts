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
