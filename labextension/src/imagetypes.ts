/**
 * Shapes of the JSON documents served under `/gpu-containers/` (as
 * openapi.yaml describes them): the image catalog, pulls and registry
 * logins.
 */
import { IVerdict, InventorySource } from './gputypes';

/**
 * An image the administrator retired: their message, and the image its
 * notebooks are offered to move to (`''`: none).
 */
export interface IImageRetirement {
  message: string;
  redirect: string;
}

/**
 * What an image saved by its user (from a kernel's view) was saved from, as
 * its labels say.
 */
export interface IImageLineage {
  image: string;
  id: string;
  digest: string;
  saved_at: string;
  /**
   * A built image's recipe, its path in the user's workspace ('' for a saved
   * one).
   */
  recipe: string;
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
  /**
   * Retired by the administrator (`null`: it is not).
   */
  retired: IImageRetirement | null;
  /**
   * Saved by its user from a kernel's environment (`null`: any other image).
   */
  saved_from: IImageLineage | null;
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
