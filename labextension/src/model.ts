/**
 * The client-side state of the GPU Containers panel and toolbars, as one
 * facade over a model per resource: the engine status and GPUs
 * (gpumodel.ts), the cluster's node pools (clustermodel.ts), the image
 * catalog (catalogmodel.ts), pulls (pullmodel.ts), the GPU queue
 * (queuemodel.ts), the quota (quotamodel.ts), the admin view
 * (adminmodel.ts), administrators' notices (noticemodel.ts), reclaims
 * (reclaimmodel.ts) and pre-pulls (prepullmodel.ts). One instance is shared
 * by every view (the plugins' IGpuContainersModel, tokens.ts), so the server
 * is polled once however many notebooks are open.
 */
import { KernelAPI, ServerConnection } from '@jupyterlab/services';
import type { ITranslator } from '@jupyterlab/translation';
import { ISignal, Signal } from '@lumino/signaling';

import { AdminModel } from './adminmodel';
import { CatalogModel } from './catalogmodel';
import { ClusterModel } from './clustermodel';
import { IEventSourceLike, openEventSource } from './eventsource';
import { GpuModel } from './gpumodel';
import { gpusOfKernel } from './gpuformat';
import { IClusterView, IGpuReport, IStatus } from './gputypes';
import { translationBundle } from './i18n';
import { ICatalog, IPull, IRegistryCredentials } from './imagetypes';
import { IKernelReclaim } from './kerneltypes';
import { NoticeModel, NoticeStore } from './noticemodel';
import { PrePullModel } from './prepullmodel';
import { PullModel } from './pullmodel';
import { IQueueEnd, QueueModel } from './queuemodel';
import { QuotaModel } from './quotamodel';
import { IReclaimNotice, ReclaimModel } from './reclaimmodel';
import {
  AdminAction,
  IAdminActionReply,
  IAdminNotice,
  IAdminView,
  IGpuQueue,
  IGpuQuota,
  IPrePulls
} from './sharingtypes';
import type { IGpuContainersModel } from './tokens';

// Where these lived before the model was split: their users import them
// from here still.
export { messageOf } from './api';
export type { IEventSourceLike } from './eventsource';
export { parseSnapshot } from './readers';
export type { IQueueEnd } from './queuemodel';
export type { IReclaimNotice } from './reclaimmodel';

/**
 * Options of the model.
 */
export interface IModelOptions {
  serverSettings?: ServerConnection.ISettings;
  /**
   * Seconds between GPU refreshes (also the engine status).
   */
  gpuInterval?: number;
  /**
   * Seconds between catalog refreshes.
   */
  imageInterval?: number;
  /**
   * Opens an event stream; the browser's `EventSource` by default.
   */
  openEvents?: (url: string) => IEventSourceLike;
  /**
   * The application's translator, for the sentences of errors; English
   * without.
   */
  translator?: ITranslator | null;
  /**
   * A kernel's execution state, or `null` when the server does not know it
   * (how a start that left the GPU queue ended); the kernels API by default.
   */
  kernelState?: (kernelId: string) => Promise<string | null>;
  /**
   * Milliseconds between two looks at a start that left the queue.
   */
  departurePollMs?: number;
  /**
   * Where the keys of the administrator's notices already told are kept, so
   * that each is told once, not again on each page load; `null`: this page's
   * memory only. The browser's local storage by default.
   */
  noticeStore?: NoticeStore | null;
}

export class GpuContainersModel implements IGpuContainersModel {
  constructor(options: IModelOptions = {}) {
    const serverSettings =
      options.serverSettings ?? ServerConnection.makeSettings();
    this.serverSettings = serverSettings;
    const trans = translationBundle(options.translator);
    this._gpu = new GpuModel({
      serverSettings,
      trans,
      interval: options.gpuInterval ?? 5,
      tick: () => this.refreshGpus()
    });
    this._images = new CatalogModel({
      serverSettings,
      trans,
      interval: options.imageInterval ?? 60,
      tick: () => this.refreshImages()
    });
    this._cluster = new ClusterModel(serverSettings, trans);
    this._quota = new QuotaModel(serverSettings, trans);
    this._prePulls = new PrePullModel(serverSettings, trans);
    this._admin = new AdminModel(serverSettings, trans);
    this._reclaim = new ReclaimModel(serverSettings, trans);
    this._notices = new NoticeModel(
      serverSettings,
      trans,
      options.noticeStore === undefined
        ? typeof window !== 'undefined' && window.localStorage
          ? window.localStorage
          : null
        : options.noticeStore
    );
    this._queue = new QueueModel({
      serverSettings,
      trans,
      kernelState:
        options.kernelState ??
        (async (kernelId: string) => {
          const model = await KernelAPI.getKernelModel(
            kernelId,
            serverSettings
          );
          return model ? (model.execution_state ?? 'unknown') : null;
        }),
      departurePollMs: options.departurePollMs ?? 1000,
      // The host's ledger, or a cluster's scheduler (its holders).
      holdsGpus: kernelId =>
        this._gpu.holdsMine(kernelId) ||
        gpusOfKernel(null, kernelId, this._cluster.cluster).length > 0,
      onStarted: () => void this.refreshQuota()
    });
    this._pulls = new PullModel({
      serverSettings,
      trans,
      openEvents: options.openEvents ?? openEventSource
    });
    // The signals of the parts are the model's own: sent by the model.
    this._pulls.changed.connect(() => this._changed.emit());
    this._pulls.pullEnded.connect((_, final) => {
      this._pullEnded.emit(final);
      // The image list changed (or the row's pull_id is gone): read it again.
      void this._images.refresh();
    });
    this._queue.queueEnded.connect((_, end) => this._queueEnded.emit(end));
    this._notices.noticeArrived.connect((_, notice) =>
      this._noticeArrived.emit(notice)
    );
    this._reclaim.reclaimChanged.connect((_, notice) =>
      this._reclaimChanged.emit(notice)
    );
  }

  readonly serverSettings: ServerConnection.ISettings;

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get pullEnded(): ISignal<this, IPull> {
    return this._pullEnded;
  }

  get queueEnded(): ISignal<this, IQueueEnd> {
    return this._queueEnded;
  }

  get noticeArrived(): ISignal<this, IAdminNotice> {
    return this._noticeArrived;
  }

  get reclaimChanged(): ISignal<this, IReclaimNotice> {
    return this._reclaimChanged;
  }

  get status(): IStatus | null {
    return this._gpu.status;
  }

  get statusError(): string {
    return this._gpu.statusError;
  }

  get gpus(): IGpuReport | null {
    return this._gpu.gpus;
  }

  get gpuError(): string {
    return this._gpu.gpuError;
  }

  get cluster(): IClusterView | null {
    return this._cluster.cluster;
  }

  get catalog(): ICatalog | null {
    return this._images.catalog;
  }

  get catalogError(): string {
    return this._images.catalogError;
  }

  get loadingImages(): boolean {
    return this._images.loadingImages;
  }

  get pulls(): ReadonlyMap<string, IPull> {
    return this._pulls.pulls;
  }

  get queue(): IGpuQueue | null {
    return this._queue.queue;
  }

  get quota(): IGpuQuota | null {
    return this._quota.quota;
  }

  get admin(): IAdminView | null {
    return this._admin.admin;
  }

  get reclaims(): ReadonlyMap<string, IKernelReclaim> {
    return this._reclaim.reclaims;
  }

  get notices(): readonly IAdminNotice[] {
    return this._notices.notices;
  }

  get prePulls(): IPrePulls | null {
    return this._prePulls.prePulls;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  async cancelWaiting(
    kernelId: string,
    notebook?: string | null
  ): Promise<void> {
    await this._queue.cancel(kernelId, notebook);
    await this.refreshGpus();
  }

  cancelledSince(path: string, since: number): boolean {
    return this._queue.cancelledSince(path, since);
  }

  async keepGpus(kernelId: string, minutes: number): Promise<IKernelReclaim> {
    const state = await this._reclaim.keep(kernelId, minutes);
    await this.refreshGpus();
    return state;
  }

  async adminAction(
    kernelId: string,
    action: AdminAction,
    reason: string
  ): Promise<IAdminActionReply> {
    const reply = await this._admin.act(kernelId, action, reason);
    await this.refreshGpus();
    return reply;
  }

  setIntervals(gpuInterval: number, imageInterval: number): void {
    this._gpu.setInterval(gpuInterval);
    this._images.setInterval(imageInterval);
  }

  async refreshGpus(): Promise<void> {
    await this._gpu.read();
    if (this._isDisposed) {
      return;
    }
    await Promise.all([
      this._cluster.refresh(),
      this._queue.refresh(),
      this._admin.refresh(this._gpu.status),
      this._reclaim.refresh(this._gpu.holdsMine()),
      this._notices.refresh()
    ]);
    if (this._isDisposed) {
      return;
    }
    this._changed.emit();
  }

  refreshQuota(): Promise<void> {
    return this._quota.refresh();
  }

  async refreshImages(): Promise<void> {
    this._images.markLoading();
    this._changed.emit();
    const alongside = Promise.all([
      this.refreshQuota(),
      this._prePulls.refresh()
    ]);
    await this._images.read();
    await alongside;
    if (this._isDisposed) {
      return;
    }
    this._pulls.followServerPulls(this._images.catalog);
    this._images.scheduleProbeRecheck();
    this._changed.emit();
  }

  async refresh(): Promise<void> {
    // Asked for: routes that were missing are asked again.
    for (const part of [
      this._queue,
      this._quota,
      this._admin,
      this._notices,
      this._prePulls,
      this._cluster
    ]) {
      part.reset();
    }
    await Promise.all([this._gpu.refresh(), this._images.refresh()]);
    await Promise.all([this._gpu.tick, this._images.tick]);
  }

  pull(reference: string, auth?: IRegistryCredentials): Promise<IPull> {
    return this._pulls.pull(reference, auth);
  }

  cancel(reference: string): Promise<void> {
    return this._pulls.cancel(reference);
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._gpu.dispose();
    this._images.dispose();
    this._pulls.dispose();
    this._queue.dispose();
    this._notices.dispose();
    this._reclaim.dispose();
    Signal.clearData(this);
  }

  private _gpu: GpuModel;
  private _images: CatalogModel;
  private _cluster: ClusterModel;
  private _quota: QuotaModel;
  private _prePulls: PrePullModel;
  private _admin: AdminModel;
  private _reclaim: ReclaimModel;
  private _notices: NoticeModel;
  private _queue: QueueModel;
  private _pulls: PullModel;
  private _changed = new Signal<this, void>(this);
  private _pullEnded = new Signal<this, IPull>(this);
  private _queueEnded = new Signal<this, IQueueEnd>(this);
  private _noticeArrived = new Signal<this, IAdminNotice>(this);
  private _reclaimChanged = new Signal<this, IReclaimNotice>(this);
  private _isDisposed = false;
}
