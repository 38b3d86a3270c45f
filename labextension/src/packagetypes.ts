/**
 * The user's own packages, kept per image in their workspace: the shapes of
 * `GET /gpu-containers/packages` (openapi.yaml's `Packages`).
 */

/**
 * One image's packages folder.
 */
export interface IPackagesFolder {
  /**
   * The folder's name, which a reset names (`DELETE /packages/<key>`).
   */
  key: string;
  /**
   * The image whose kernels use it, when the server offers or lists it; `''`
   * otherwise (the key starts with the image's name).
   */
  image: string;
  /**
   * Disk space it takes.
   */
  bytes: number;
  /**
   * Files and folders in it (counted up to 200,000).
   */
  entries: number;
  /**
   * Packages installed in it; 0 for a folder no install wrote to yet.
   */
  packages: number;
  /**
   * False when the count stopped early and `bytes` is a lower bound.
   */
  complete: boolean;
  /**
   * When anything in it last changed, in seconds since the epoch.
   */
  modified: number;
  /**
   * Over the administrator's guard (`max_bytes`): its kernels cannot pip
   * install more until it is reset.
   */
  over_limit: boolean;
}

/**
 * The user's packages folders, and the server's policy for them.
 */
export interface IPackages {
  /**
   * Whether kernels keep their users' packages.
   */
  enabled: boolean;
  /**
   * Where, relative to the user's workspace.
   */
  dir: string;
  /**
   * The administrator's guard on one folder's size; 0 for none.
   */
  max_bytes: number;
  /**
   * Whether the server can see the workspace and measured its folders.
   */
  measured: boolean;
  folders: IPackagesFolder[];
  /**
   * Why nothing is listed, in a sentence; `''` otherwise.
   */
  message: string;
  /**
   * The option behind that sentence (administrators only).
   */
  setting?: string;
}
