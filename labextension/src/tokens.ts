/**
 * What the extension's plugins share: the model, as a JupyterLab service
 * (the model plugin provides it; the panel, the toolbar item and the
 * notifications require it, and so can another extension), and the ids of
 * the plugin that keeps the settings, the toolbar item and the commands.
 */
import type { ServerConnection } from '@jupyterlab/services';
import { Token } from '@lumino/coreutils';
import type { IDisposable } from '@lumino/disposable';
import type { ISignal } from '@lumino/signaling';

import { IClusterView, IGpuReport, IStatus } from './gputypes';
import { ICatalog, IPull, IRegistryCredentials } from './imagetypes';
import { IKernelReclaim } from './kerneltypes';
import type { IQueueEnd } from './queuemodel';
import type { IReclaimNotice } from './reclaimmodel';
import {
  AdminAction,
  IAdminActionReply,
  IAdminNotice,
  IAdminView,
  IGpuQueue,
  IGpuQuota,
  IPrePulls
} from './sharingtypes';

/**
 * The id of the model's plugin, also the key of the extension's settings
 * (schema/plugin.json): it must not change.
 */
export const PLUGIN_ID = 'jupyter-gpu-containers:plugin';

/**
 * The name of the notebook toolbar item, in the toolbar registry and in the
 * `jupyter.lab.toolbars` definition of the settings schema (where its rank
 * puts it right of the spacer, before the kernel name: JupyterLab's overflow
 * menu takes the last items first, and in a split pane this one, in its
 * compact form, stays). Users hide or move it in the Notebook Panel
 * settings, as any toolbar item.
 */
export const TOOLBAR_ITEM = 'gpuContainers';

/**
 * Command ids.
 */
export namespace CommandIDs {
  export const openPanel = 'gpu-containers:open-panel';
  export const switchImage = 'gpu-containers:switch-image';
  export const refreshImages = 'gpu-containers:refresh-images';
  export const openKernelView = 'gpu-containers:open-kernel-view';
  export const buildImage = 'gpu-containers:build-image';
}

/**
 * The client-side state of the GPU Containers front end: engine status,
 * GPUs, the image catalog, pulls, the GPU queue, the quota, the admin view,
 * notices and reclaims, kept current by polling the server.
 */
export interface IGpuContainersModel extends IDisposable {
  readonly serverSettings: ServerConnection.ISettings;

  /**
   * Emitted whenever any part of the state changes.
   */
  readonly changed: ISignal<IGpuContainersModel, void>;

  /**
   * Emitted when a pull ends (done, error or cancelled), with its snapshot.
   */
  readonly pullEnded: ISignal<IGpuContainersModel, IPull>;

  /**
   * Emitted when one of the user's waiting starts leaves the queue, with how
   * it ended.
   */
  readonly queueEnded: ISignal<IGpuContainersModel, IQueueEnd>;

  /**
   * Emitted once per administrator's notice, the first time this browser
   * sees it.
   */
  readonly noticeArrived: ISignal<IGpuContainersModel, IAdminNotice>;

  /**
   * Emitted once per warning (or reclaim) of one of the user's kernels.
   */
  readonly reclaimChanged: ISignal<IGpuContainersModel, IReclaimNotice>;

  readonly status: IStatus | null;

  /**
   * Why the status could not be read, or `''`.
   */
  readonly statusError: string;

  readonly gpus: IGpuReport | null;

  /**
   * Why the GPUs could not be read, or `''`.
   */
  readonly gpuError: string;

  /**
   * The cluster's GPU node pools (Kubernetes); `null` until read, or when
   * the server does not say.
   */
  readonly cluster: IClusterView | null;

  readonly catalog: ICatalog | null;

  /**
   * Why the catalog could not be read, or `''`.
   */
  readonly catalogError: string;

  /**
   * Whether the catalog is being read now.
   */
  readonly loadingImages: boolean;

  /**
   * Pulls this page follows, by image reference as the catalog writes it.
   */
  readonly pulls: ReadonlyMap<string, IPull>;

  /**
   * The host-wide GPU wait queue; `null` when the server has none (an older
   * server) or it could not be read.
   */
  readonly queue: IGpuQueue | null;

  /**
   * The user's GPU-hour quota; `null` when the server does not say.
   */
  readonly quota: IGpuQuota | null;

  /**
   * The admin view; `null` unless the server grants this user the admin
   * scope.
   */
  readonly admin: IAdminView | null;

  /**
   * The reclaim state of the user's kernels that hold GPUs, by kernel id.
   */
  readonly reclaims: ReadonlyMap<string, IKernelReclaim>;

  /**
   * Why an administrator released or shut down the user's kernels (the
   * server keeps them a day), oldest first; empty on an older server.
   */
  readonly notices: readonly IAdminNotice[];

  /**
   * The administrator's pre-pull schedule and pruning; `null` on a server
   * without them. Read with the images.
   */
  readonly prePulls: IPrePulls | null;

  /**
   * Cancel one of the user's waiting starts (its start fails). Rejects with
   * the server's sentence.
   */
  cancelWaiting(kernelId: string, notebook?: string | null): Promise<void>;

  /**
   * Whether the user cancelled, from this page, a wait for a GPU of the
   * notebook at `path` at `since` (ms since the epoch) or later: the start
   * that waited then failed because the user chose so, which is no error to
   * put up (the queue's notification says it was cancelled).
   */
  cancelledSince(path: string, since: number): boolean;

  /**
   * Keep the GPUs of one of the user's kernels that the idle-GPU policy
   * warned, for `minutes` from now: its new reclaim state. Rejects with the
   * server's sentence.
   */
  keepGpus(kernelId: string, minutes: number): Promise<IKernelReclaim>;

  /**
   * As an admin, release a kernel's GPUs or shut it down, telling its user
   * `reason`. Rejects with the server's sentence.
   */
  adminAction(
    kernelId: string,
    action: AdminAction,
    reason: string
  ): Promise<IAdminActionReply>;

  /**
   * Change how often the GPUs and the catalog are refreshed (seconds).
   */
  setIntervals(gpuInterval: number, imageInterval: number): void;

  /**
   * Read the engine status and the GPUs (and what changes with them) now.
   * Never rejects: failures land in `statusError` / `gpuError`.
   */
  refreshGpus(): Promise<void>;

  /**
   * Read the user's GPU-hour quota now. Never rejects.
   */
  refreshQuota(): Promise<void>;

  /**
   * Read the catalog (and what goes with it) now. Never rejects: failures
   * land in `catalogError`. While images are still being probed, reads again
   * a little later.
   */
  refreshImages(): Promise<void>;

  /**
   * Refresh everything now (the panel's refresh button, the palette
   * command); routes found missing are asked again.
   */
  refresh(): Promise<void>;

  /**
   * Start (or join) a pull of `reference` and follow its progress. Resolves
   * with the pull's final snapshot; rejects only when the server refuses to
   * start it (with the server's sentence).
   */
  pull(reference: string, auth?: IRegistryCredentials): Promise<IPull>;

  /**
   * Cancel the pull of `reference`, if this page follows one.
   */
  cancel(reference: string): Promise<void>;
}

/**
 * The shared model of the GPU Containers front end.
 */
export const IGpuContainersModel = new Token<IGpuContainersModel>(
  'jupyter-gpu-containers:IGpuContainersModel',
  'The GPU Containers state: GPUs, images, pulls, the GPU queue and quota, kept current by polling the server.'
);
