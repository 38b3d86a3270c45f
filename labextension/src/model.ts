/**
 * The client-side state of the GPU Containers panel and toolbars: engine
 * status, GPUs, the image catalog and pulls under way. One instance is shared
 * by every view, so the server is polled once however many notebooks are open.
 */
import { KernelAPI, ServerConnection } from '@jupyterlab/services';
import type { ITranslator, TranslationBundle } from '@jupyterlab/translation';
import { IDisposable } from '@lumino/disposable';
import { IPoll, Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import {
  ApiError,
  adminKernelAction,
  cancelPull,
  cancelQueued,
  getAdminView,
  getCluster,
  getGpus,
  getImages,
  getAdminNotices,
  getKernels,
  getPrePulls,
  getQueue,
  getQuota,
  getStatus,
  pullEventsUrl,
  startPull
} from './api';
import { translationBundle } from './i18n';
import {
  adminViewOf,
  departedTickets,
  departureOutcome,
  noticeKey,
  noticesOf,
  prePullsOf,
  queueOf,
  quotaOf,
  QueueOutcome,
  reclaimOf,
  warningKey
} from './sharing';
import {
  AdminAction,
  IAdminActionReply,
  IAdminNotice,
  IAdminView,
  ICatalog,
  IGpuQueue,
  IGpuQuota,
  IClusterView,
  IGpuReport,
  IKernelList,
  IKernelReclaim,
  IPrePulls,
  IPull,
  IQueuedStart,
  IRegistryCredentials,
  IStatus
} from './types';

/**
 * The part of `EventSource` the model uses (a browser's, or a test's).
 */
export interface IEventSourceLike {
  addEventListener(
    type: string,
    listener: (event: { data?: string }) => void
  ): void;
  close(): void;
  /**
   * `2` (`EventSource.CLOSED`) once the stream has failed for good: the
   * browser does not reconnect after an HTTP error such as a 404.
   */
  readonly readyState?: number;
}

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
  noticeStore?: Pick<Storage, 'getItem' | 'setItem'> | null;
}

/**
 * How a waiting start of the user's ended (the `queueEnded` signal).
 */
export interface IQueueEnd {
  ticket: IQueuedStart;
  outcome: QueueOutcome;
}

/**
 * A kernel of the user's that the idle-GPU policy warned or reclaimed (the
 * `reclaimChanged` signal): once per warning.
 */
export interface IReclaimNotice {
  kernelId: string;
  /**
   * Its notebook's path; '' without one.
   */
  notebook: string;
  reclaim: IKernelReclaim;
}

/**
 * How long a route the server does not have (404) is left alone (ms): a
 * server upgraded meanwhile is noticed without a reload.
 */
const MISSING_ROUTE_RETRY_MS = 60 * 1000;

/**
 * How many times a start that left the queue is looked at before it counts
 * as gone.
 */
const DEPARTURE_LOOKS = 60;

/**
 * How many looks a start that left the queue, and that the server does not
 * know, may still be launching before it counts as gone.
 */
const GONE_AFTER_LOOKS = 20;

/**
 * The local storage key of the administrator's notices already told.
 */
const TOLD_NOTICES_KEY = 'jupyter-gpu-containers:told-admin-notices';

const FINAL_EVENTS = ['done', 'error', 'cancelled'];

/**
 * `EventSource.CLOSED`: the stream will not reconnect.
 */
const STREAM_CLOSED = 2;

/**
 * The longest GPU and catalog refresh intervals (ms) when the server does not
 * answer (the polls back off up to these), unless a longer interval is set.
 */
const GPU_MAX_INTERVAL = 60 * 1000;
const IMAGE_MAX_INTERVAL = 10 * 60 * 1000;

/**
 * Seconds between catalog re-reads while readiness probes run in the
 * background (rows with `kernel_ready: null`).
 */
const PROBE_RECHECK_SECONDS = 2;

/**
 * How many times the catalog is re-read for background probes.
 */
const PROBE_RECHECKS = 10;

export class GpuContainersModel implements IDisposable {
  constructor(options: IModelOptions = {}) {
    this.serverSettings =
      options.serverSettings ?? ServerConnection.makeSettings();
    this._trans = translationBundle(options.translator);
    this._kernelState =
      options.kernelState ??
      (async (kernelId: string) => {
        const model = await KernelAPI.getKernelModel(
          kernelId,
          this.serverSettings
        );
        return model ? (model.execution_state ?? 'unknown') : null;
      });
    this._departurePollMs = options.departurePollMs ?? 1000;
    this._noticeStore =
      options.noticeStore === undefined
        ? typeof window !== 'undefined' && window.localStorage
          ? window.localStorage
          : null
        : options.noticeStore;
    this._told = new Set(this._readTold());
    this._openEvents =
      options.openEvents ??
      ((url: string) =>
        new EventSource(url, {
          withCredentials: true
        }) as unknown as IEventSourceLike);
    // The factories reject after a failed read so that the polls back off
    // while the server does not answer (refreshGpus/refreshImages never do).
    this._gpuPoll = new Poll({
      factory: async () => {
        await this.refreshGpus();
        failed(this._statusError || this._gpuError);
      },
      frequency: frequency(options.gpuInterval ?? 5, 1, GPU_MAX_INTERVAL),
      name: 'gpu-containers:gpus',
      standby: 'when-hidden'
    });
    this._imagePoll = new Poll({
      factory: async () => {
        await this.refreshImages();
        failed(this._catalogError);
      },
      frequency: frequency(options.imageInterval ?? 60, 5, IMAGE_MAX_INTERVAL),
      name: 'gpu-containers:images',
      standby: 'when-hidden'
    });
  }

  readonly serverSettings: ServerConnection.ISettings;

  /**
   * Emitted whenever any part of the state changes.
   */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /**
   * Emitted when a pull ends (done, error or cancelled), with its snapshot.
   */
  get pullEnded(): ISignal<this, IPull> {
    return this._pullEnded;
  }

  get status(): IStatus | null {
    return this._status;
  }

  /**
   * Why the status could not be read, or `''`.
   */
  get statusError(): string {
    return this._statusError;
  }

  /**
   * The cluster's GPU node pools (Kubernetes); `null` until read, or when the
   * server does not say.
   */
  get cluster(): IClusterView | null {
    return this._cluster;
  }

  get gpus(): IGpuReport | null {
    return this._gpus;
  }

  /**
   * Why the GPUs could not be read, or `''`.
   */
  get gpuError(): string {
    return this._gpuError;
  }

  get catalog(): ICatalog | null {
    return this._catalog;
  }

  /**
   * Why the catalog could not be read, or `''`.
   */
  get catalogError(): string {
    return this._catalogError;
  }

  /**
   * Whether the catalog is being read now.
   */
  get loadingImages(): boolean {
    return this._loadingImages;
  }

  /**
   * Pulls this page follows, by image reference as the catalog writes it.
   */
  get pulls(): ReadonlyMap<string, IPull> {
    return this._pulls;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /**
   * The host-wide GPU wait queue; `null` when the server has none (an older
   * server) or it could not be read.
   */
  get queue(): IGpuQueue | null {
    return this._queue;
  }

  /**
   * The user's GPU-hour quota; `null` when the server does not say.
   */
  get quota(): IGpuQuota | null {
    return this._quota;
  }

  /**
   * The admin view; `null` unless the server grants this user the admin
   * scope.
   */
  get admin(): IAdminView | null {
    return this._admin;
  }

  /**
   * The reclaim state of the user's kernels that hold GPUs, by kernel id.
   */
  get reclaims(): ReadonlyMap<string, IKernelReclaim> {
    return this._reclaims;
  }

  /**
   * Why an administrator released or shut down the user's kernels (the
   * server keeps them a day), oldest first; empty on an older server.
   */
  get notices(): readonly IAdminNotice[] {
    return this._notices;
  }

  /**
   * Emitted once per administrator's notice, the first time this browser
   * sees it.
   */
  get noticeArrived(): ISignal<this, IAdminNotice> {
    return this._noticeArrived;
  }

  /**
   * The administrator's pre-pull schedule and pruning; `null` on a server
   * without them. Read with the images.
   */
  get prePulls(): IPrePulls | null {
    return this._prePulls;
  }

  /**
   * Emitted when one of the user's waiting starts leaves the queue, with how
   * it ended.
   */
  get queueEnded(): ISignal<this, IQueueEnd> {
    return this._queueEnded;
  }

  /**
   * Emitted once per warning (or reclaim) of one of the user's kernels.
   */
  get reclaimChanged(): ISignal<this, IReclaimNotice> {
    return this._reclaimChanged;
  }

  /**
   * Cancel one of the user's waiting starts (its start fails). Rejects with
   * the server's sentence.
   */
  async cancelWaiting(
    kernelId: string,
    notebook?: string | null
  ): Promise<void> {
    this._cancelledHere.add(kernelId);
    try {
      await cancelQueued(kernelId, this.serverSettings, this._trans);
    } catch (error) {
      this._cancelledHere.delete(kernelId);
      throw error;
    }
    if (notebook) {
      this._cancelledNotebooks.set(notebook, Date.now());
    }
    await this.refreshGpus();
  }

  /**
   * Whether the user cancelled, from this page, a wait for a GPU of the
   * notebook at `path` at `since` (ms since the epoch) or later: the start
   * that waited then failed because the user chose so, which is no error to
   * put up (the queue's notification says it was cancelled).
   */
  cancelledSince(path: string, since: number): boolean {
    const at = this._cancelledNotebooks.get(path);
    return at !== undefined && at >= since;
  }

  /**
   * As an admin, release a kernel's GPUs or shut it down, telling its user
   * `reason`. Rejects with the server's sentence.
   */
  async adminAction(
    kernelId: string,
    action: AdminAction,
    reason: string
  ): Promise<IAdminActionReply> {
    const reply = await adminKernelAction(
      kernelId,
      action,
      reason,
      this.serverSettings,
      this._trans
    );
    await this.refreshGpus();
    return reply;
  }

  /**
   * Change how often the GPUs and the catalog are refreshed (seconds).
   */
  setIntervals(gpuInterval: number, imageInterval: number): void {
    this._gpuPoll.frequency = frequency(gpuInterval, 1, GPU_MAX_INTERVAL);
    this._imagePoll.frequency = frequency(imageInterval, 5, IMAGE_MAX_INTERVAL);
  }

  /**
   * Read the engine status and the GPUs now. Never rejects: failures land in
   * `statusError` / `gpuError`.
   */
  async refreshGpus(): Promise<void> {
    const [status, gpus] = await Promise.allSettled([
      getStatus(this.serverSettings, this._trans),
      getGpus(this.serverSettings, this._trans)
    ]);
    if (this._isDisposed) {
      return;
    }
    this._status = status.status === 'fulfilled' ? status.value : null;
    this._statusError =
      status.status === 'rejected' ? messageOf(status.reason) : '';
    this._gpus = gpus.status === 'fulfilled' ? gpus.value : null;
    this._gpuError = gpus.status === 'rejected' ? messageOf(gpus.reason) : '';
    await Promise.all([
      this._refreshCluster(),
      this._refreshQueue(),
      this._refreshAdmin(),
      this._refreshReclaims(),
      this._refreshNotices()
    ]);
    if (this._isDisposed) {
      return;
    }
    this._changed.emit();
  }

  /**
   * Read the user's GPU-hour quota now. Never rejects.
   */
  async refreshQuota(): Promise<void> {
    if (Date.now() < this._missing.quota) {
      return;
    }
    try {
      this._quota = quotaOf(await getQuota(this.serverSettings, this._trans));
    } catch (error) {
      this._quota = null;
      this._noteMissing('quota', error);
    }
  }

  /**
   * Whether the server answered 404 or 403: the route is not there (an older
   * server), or not this user's. Quietly left alone for a while.
   */
  private _noteMissing(
    route: 'queue' | 'quota' | 'admin' | 'notices' | 'prepull' | 'cluster',
    error: unknown
  ): void {
    const status = error instanceof ApiError ? error.status : undefined;
    if (status === 404 || status === 403 || status === 405) {
      this._missing[route] = Date.now() + MISSING_ROUTE_RETRY_MS;
    }
  }

  private async _refreshQueue(): Promise<void> {
    if (Date.now() < this._missing.queue) {
      return;
    }
    const before = this._queue;
    try {
      this._queue = queueOf(await getQueue(this.serverSettings, this._trans));
    } catch (error) {
      // Quietly: the panel shows no queue rather than an error.
      this._noteMissing('queue', error);
      return;
    }
    for (const ticket of departedTickets(before, this._queue)) {
      // Told once per kernel: two reads under way at once (the poll, a
      // refresh) both see the start leave, and a read that answers late can
      // bring back a queue from before it left.
      const kernelId = ticket.kernel_id ?? '';
      if (!this._departed.has(kernelId)) {
        this._departed.add(kernelId);
        void this._followDeparture(ticket);
      }
    }
  }

  /**
   * Read the user's notices from administrators, and tell the new ones.
   */
  private async _refreshNotices(): Promise<void> {
    if (Date.now() < this._missing.notices) {
      return;
    }
    try {
      this._notices = noticesOf(
        await getAdminNotices(this.serverSettings, this._trans)
      );
    } catch (error) {
      this._noteMissing('notices', error);
      return;
    }
    const fresh = this._notices.filter(n => !this._told.has(noticeKey(n)));
    if (fresh.length === 0) {
      return;
    }
    for (const notice of fresh) {
      this._told.add(noticeKey(notice));
    }
    // Only the notices the server still keeps are remembered.
    const kept = new Set(this._notices.map(noticeKey));
    this._told = new Set([...this._told].filter(key => kept.has(key)));
    this._writeTold();
    for (const notice of fresh) {
      this._noticeArrived.emit(notice);
    }
  }

  private _readTold(): string[] {
    try {
      const stored = JSON.parse(
        this._noticeStore?.getItem(TOLD_NOTICES_KEY) ?? '[]'
      );
      return Array.isArray(stored)
        ? stored.filter((k): k is string => typeof k === 'string')
        : [];
    } catch {
      return [];
    }
  }

  private _writeTold(): void {
    try {
      this._noticeStore?.setItem(
        TOLD_NOTICES_KEY,
        JSON.stringify([...this._told])
      );
    } catch {
      // Storage full or refused: told once per page load instead.
    }
  }

  private async _refreshPrePulls(): Promise<void> {
    if (Date.now() < this._missing.prepull) {
      return;
    }
    try {
      this._prePulls = prePullsOf(
        await getPrePulls(this.serverSettings, this._trans)
      );
    } catch (error) {
      this._prePulls = null;
      this._noteMissing('prepull', error);
    }
  }

  /**
   * Read the cluster's node pools. A Docker server says so once: its backend
   * does not change while it runs, so it is not asked again until a refresh.
   */
  private async _refreshCluster(): Promise<void> {
    if (
      Date.now() < this._missing.cluster ||
      this._cluster?.backend === 'docker'
    ) {
      return;
    }
    try {
      this._cluster = await getCluster(this.serverSettings, this._trans);
    } catch (error) {
      this._cluster = null;
      this._noteMissing('cluster', error);
    }
  }

  private async _refreshAdmin(): Promise<void> {
    // The server's status says whether this user is an administrator: a
    // route that can only answer 403 is not asked (read first, each poll).
    if (Date.now() < this._missing.admin || this._status?.admin === false) {
      this._admin = null;
      return;
    }
    try {
      this._admin = adminViewOf(
        await getAdminView(this.serverSettings, this._trans)
      );
    } catch (error) {
      this._admin = null;
      this._noteMissing('admin', error);
    }
  }

  /**
   * Read the reclaim state of the user's kernels, while they hold GPUs (only
   * those can be reclaimed; reading the kernels keeps the server sampling).
   */
  private async _refreshReclaims(): Promise<void> {
    const holding = (this._gpus?.gpus ?? []).some(gpu =>
      gpu.holders.some(h => h.mine)
    );
    if (!holding && this._reclaims.size === 0) {
      return;
    }
    let list: IKernelList;
    try {
      list = await getKernels(this.serverSettings, this._trans);
    } catch {
      return;
    }
    const notice = (kernelId: string, notebook: string, value: unknown) => {
      const reclaim = reclaimOf(value);
      if (
        reclaim &&
        (reclaim.state === 'warned' || reclaim.state === 'reclaimed')
      ) {
        const key = warningKey(kernelId, reclaim);
        if (!this._noticed.has(key)) {
          this._noticed.add(key);
          this._reclaimChanged.emit({ kernelId, notebook, reclaim });
        }
      }
      return reclaim;
    };
    // Only kernels that hold GPUs, or were warned, are read again.
    const now = new Map<string, IKernelReclaim>();
    for (const kernel of list.kernels) {
      const reclaim = notice(kernel.kernel_id, kernel.notebook, kernel.reclaim);
      if (reclaim && reclaim.state === 'warned') {
        now.set(kernel.kernel_id, reclaim);
      }
    }
    // Kernels shut down because their GPUs were reclaimed (the last hour).
    for (const gone of list.reclaimed ?? []) {
      if (gone) {
        notice(gone.kernel_id, gone.notebook, gone);
      }
    }
    this._reclaims = now;
  }

  /**
   * Find out how a start that left the queue ended: it holds its GPUs or
   * runs (started), or its kernel is gone (timed out, cancelled).
   */
  private async _followDeparture(ticket: IQueuedStart): Promise<void> {
    const kernelId = ticket.kernel_id ?? '';
    for (let look = 0; look < DEPARTURE_LOOKS; look++) {
      if (this._isDisposed) {
        return;
      }
      const holds = (this._gpus?.gpus ?? []).some(gpu =>
        gpu.holders.some(h => h.mine && h.kernel_id === kernelId)
      );
      let state: string | null;
      try {
        // Cancelled here and holding no GPU: whatever runs now (a restart's
        // kernel stays listed) did not start on the GPUs it waited for.
        state = holds
          ? 'idle'
          : this._cancelledHere.has(kernelId)
            ? null
            : await this._kernelState(kernelId);
      } catch {
        state = 'starting'; // not known yet: look again
      }
      const outcome = departureOutcome(
        ticket,
        state,
        this._cancelledHere.has(kernelId),
        Date.now()
      );
      // Unknown to the server: gone, or granted and still launching (the
      // kernels API lists a kernel only once it runs). Give it a while.
      const launching = outcome === 'gone' && look < GONE_AFTER_LOOKS;
      if (outcome !== undefined && !launching) {
        this._cancelledHere.delete(kernelId);
        this._queueEnded.emit({ ticket, outcome });
        if (outcome === 'started') {
          void this.refreshQuota();
        }
        return;
      }
      await new Promise(resolve => setTimeout(resolve, this._departurePollMs));
    }
    this._cancelledHere.delete(kernelId);
    this._queueEnded.emit({ ticket, outcome: 'gone' });
  }

  /**
   * Read the catalog now. Never rejects: failures land in `catalogError`.
   * While images are still being probed, reads again a little later.
   */
  async refreshImages(): Promise<void> {
    this._loadingImages = true;
    this._changed.emit();
    const quota = Promise.all([this.refreshQuota(), this._refreshPrePulls()]);
    try {
      this._catalog = await getImages(this.serverSettings, this._trans);
      this._catalogError = '';
      this._catalogRetries = 0;
    } catch (error) {
      this._catalogError = messageOf(error);
      this._retryCatalogSoon();
    } finally {
      this._loadingImages = false;
    }
    await quota;
    if (this._isDisposed) {
      return;
    }
    this._followServerPulls();
    this._scheduleProbeRecheck();
    this._changed.emit();
  }

  /**
   * Refresh everything now (the panel's refresh button, the palette command).
   */
  async refresh(): Promise<void> {
    // Asked for: routes that were missing are asked again.
    this._missing = {
      queue: 0,
      quota: 0,
      admin: 0,
      notices: 0,
      prepull: 0,
      cluster: 0
    };
    if (this._cluster?.backend === 'docker') {
      this._cluster = null; // asked again (a Kubernetes one is just re-read)
    }
    await Promise.all([this._gpuPoll.refresh(), this._imagePoll.refresh()]);
    await Promise.all([this._gpuPoll.tick, this._imagePoll.tick]);
  }

  /**
   * Start (or join) a pull of `reference` and follow its progress. Resolves
   * with the pull's final snapshot; rejects only when the server refuses to
   * start it (with the server's sentence).
   */
  async pull(reference: string, auth?: IRegistryCredentials): Promise<IPull> {
    const pull = await startPull(
      reference,
      auth,
      this.serverSettings,
      this._trans
    );
    return this._follow(reference, pull);
  }

  /**
   * Cancel the pull of `reference`, if this page follows one.
   */
  async cancel(reference: string): Promise<void> {
    const pull = this._pulls.get(reference);
    if (!pull) {
      return;
    }
    const final = await cancelPull(pull.id, this.serverSettings, this._trans);
    this._update(reference, final);
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._gpuPoll.dispose();
    this._imagePoll.dispose();
    for (const source of this._streams.values()) {
      source.close();
    }
    this._streams.clear();
    clearTimeout(this._recheck);
    clearTimeout(this._catalogRetry);
    Signal.clearData(this);
  }

  /**
   * Follow a pull's event stream until it ends.
   */
  private _follow(reference: string, pull: IPull): Promise<IPull> {
    this._update(reference, pull);
    const known = this._waiters.get(pull.id);
    if (known) {
      return known;
    }
    const ended = new Promise<IPull>(resolve => {
      if (FINAL_EVENTS.includes(pull.state)) {
        resolve(pull);
        return;
      }
      const source = this._openEvents(
        pullEventsUrl(pull.id, this.serverSettings)
      );
      this._streams.set(pull.id, source);
      let last = pull;
      const end = (final: IPull): void => {
        source.close();
        this._streams.delete(pull.id);
        resolve(final);
      };
      const onEvent = (event: { data?: string }): void => {
        const snapshot = parseSnapshot(event.data);
        if (!snapshot) {
          // A failed connection: the browser retries, unless the stream is
          // closed for good (the pull is gone): then stop waiting for it.
          if (source.readyState === STREAM_CLOSED && !this._isDisposed) {
            const lost: IPull = {
              ...last,
              state: 'error',
              message: this._trans.__(
                'Lost track of the pull: its progress can no longer be read from the server.'
              )
            };
            this._update(reference, lost);
            end(lost);
          }
          return;
        }
        last = snapshot;
        this._update(reference, snapshot);
        if (FINAL_EVENTS.includes(snapshot.state)) {
          end(snapshot);
        }
      };
      for (const name of ['progress', ...FINAL_EVENTS]) {
        source.addEventListener(name, onEvent);
      }
    });
    this._waiters.set(pull.id, ended);
    void ended.then(final => {
      this._waiters.delete(pull.id);
      this._pullEnded.emit(final);
      // The image list changed (or the row's pull_id is gone): read it again.
      void this._imagePoll.refresh();
    });
    return ended;
  }

  private _update(reference: string, pull: IPull): void {
    this._pulls.set(reference, pull);
    this._changed.emit();
  }

  /**
   * Follow pulls started elsewhere (another tab, another user of the same
   * server) that the catalog says are under way.
   */
  private _followServerPulls(): void {
    for (const row of this._catalog?.images ?? []) {
      const known = this._pulls.get(row.reference);
      if (row.pull_id && (!known || known.id !== row.pull_id)) {
        void this._follow(row.reference, {
          ...placeholderPull(row.pull_id, row.reference, row.registry)
        });
      }
    }
  }

  /**
   * A failed read of the images is read again soon, a few times, before the
   * poll's own (minutes-long, backing off) schedule takes over: a request
   * lost as the server restarted or the host's network changed would
   * otherwise leave the panel saying the server cannot be reached.
   */
  private _retryCatalogSoon(): void {
    const delay = CATALOG_RETRY_MS[this._catalogRetries];
    if (delay === undefined || this._isDisposed) {
      return;
    }
    this._catalogRetries += 1;
    clearTimeout(this._catalogRetry);
    this._catalogRetry = setTimeout(() => {
      if (!this._isDisposed) {
        void this.refreshImages();
      }
    }, delay);
  }

  private _scheduleProbeRecheck(): void {
    clearTimeout(this._recheck);
    const probing = (this._catalog?.images ?? []).some(
      row => row.pulled && row.kernel_ready === null
    );
    if (!probing) {
      this._rechecks = 0;
      return;
    }
    if (this._rechecks >= PROBE_RECHECKS) {
      return;
    }
    this._rechecks += 1;
    this._recheck = setTimeout(() => {
      void this._imagePoll.refresh();
    }, PROBE_RECHECK_SECONDS * 1000);
  }

  private _trans: TranslationBundle;
  private _kernelState: (kernelId: string) => Promise<string | null>;
  private _departurePollMs: number;
  private _queue: IGpuQueue | null = null;
  private _quota: IGpuQuota | null = null;
  private _admin: IAdminView | null = null;
  private _prePulls: IPrePulls | null = null;
  private _notices: IAdminNotice[] = [];
  private _noticeStore: Pick<Storage, 'getItem' | 'setItem'> | null;
  private _told: Set<string>;
  private _noticeArrived = new Signal<this, IAdminNotice>(this);
  private _reclaims = new Map<string, IKernelReclaim>();
  private _noticed = new Set<string>();
  private _catalogRetries = 0;
  private _catalogRetry: ReturnType<typeof setTimeout> | undefined;
  private _cancelledHere = new Set<string>();
  private _cancelledNotebooks = new Map<string, number>();
  private _departed = new Set<string>();
  private _missing = {
    queue: 0,
    quota: 0,
    admin: 0,
    notices: 0,
    prepull: 0,
    cluster: 0
  };
  private _cluster: IClusterView | null = null;
  private _queueEnded = new Signal<this, IQueueEnd>(this);
  private _reclaimChanged = new Signal<this, IReclaimNotice>(this);
  private _changed = new Signal<this, void>(this);
  private _pullEnded = new Signal<this, IPull>(this);
  private _status: IStatus | null = null;
  private _statusError = '';
  private _gpus: IGpuReport | null = null;
  private _gpuError = '';
  private _catalog: ICatalog | null = null;
  private _catalogError = '';
  private _loadingImages = false;
  private _pulls = new Map<string, IPull>();
  private _streams = new Map<string, IEventSourceLike>();
  private _waiters = new Map<string, Promise<IPull>>();
  private _gpuPoll: Poll;
  private _imagePoll: Poll;
  private _openEvents: (url: string) => IEventSourceLike;
  private _recheck: ReturnType<typeof setTimeout> | undefined = undefined;
  private _rechecks = 0;
  private _isDisposed = false;
}

/**
 * A poll's frequency for a refresh every `seconds` (at least `least`),
 * backing off up to `max` ms on failures. A Poll throws for an interval above
 * its max: a longer interval raises the max with it.
 */
function frequency(
  seconds: number,
  least: number,
  max: number
): IPoll.Frequency {
  const interval = Math.min(Math.max(least, seconds) * 1000, Poll.MAX_INTERVAL);
  return { interval, backoff: true, max: Math.max(max, interval) };
}

/**
 * When a failed read of the images is read again (ms after each failure in
 * a row), before the poll's schedule takes over.
 */
const CATALOG_RETRY_MS = [2000, 5000, 10000];

/**
 * Reject a poll's tick when a read failed (`message` is not empty).
 */
function failed(message: string): void {
  if (message) {
    throw new Error(message);
  }
}

/**
 * The sentence of an error, whatever was thrown.
 */
export function messageOf(error: unknown): string {
  if (error instanceof ApiError || error instanceof Error) {
    return error.message;
  }
  return String(error);
}

/**
 * A pull snapshot from an event's data, or `null` when it is not one.
 */
export function parseSnapshot(data: string | undefined): IPull | null {
  if (!data) {
    return null;
  }
  try {
    const value: unknown = JSON.parse(data);
    if (
      typeof value === 'object' &&
      value !== null &&
      typeof (value as IPull).id === 'string' &&
      typeof (value as IPull).state === 'string'
    ) {
      return value as IPull;
    }
  } catch {
    // Not JSON: ignored, the next event carries a whole snapshot again.
  }
  return null;
}

/**
 * What is known of a pull before its first event arrives.
 */
function placeholderPull(id: string, image: string, registry: string): IPull {
  return {
    id,
    image,
    registry,
    state: 'queued',
    phase: 'resolving',
    message: '',
    error_status: 0,
    layers: [],
    total_bytes: 0,
    downloaded_bytes: 0,
    extracted_layers: 0,
    progress: 0,
    digest: '',
    started: 0,
    finished: 0
  };
}
