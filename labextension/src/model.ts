/**
 * The client-side state of the GPU Containers panel and toolbars: engine
 * status, GPUs, the image catalog and pulls under way. One instance is shared
 * by every view, so the server is polled once however many notebooks are open.
 */
import { ServerConnection } from '@jupyterlab/services';
import type { ITranslator, TranslationBundle } from '@jupyterlab/translation';
import { IDisposable } from '@lumino/disposable';
import { IPoll, Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import {
  ApiError,
  cancelPull,
  getGpus,
  getImages,
  getStatus,
  pullEventsUrl,
  startPull
} from './api';
import { translationBundle } from './i18n';
import {
  ICatalog,
  IGpuReport,
  IPull,
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
}

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
    this._changed.emit();
  }

  /**
   * Read the catalog now. Never rejects: failures land in `catalogError`.
   * While images are still being probed, reads again a little later.
   */
  async refreshImages(): Promise<void> {
    this._loadingImages = true;
    this._changed.emit();
    try {
      this._catalog = await getImages(this.serverSettings, this._trans);
      this._catalogError = '';
    } catch (error) {
      this._catalogError = messageOf(error);
    } finally {
      this._loadingImages = false;
    }
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
