/**
 * The image catalog (each image's kernel spec, readiness and pull), read on a
 * cadence of its own: the image poll, whose tick also reads what goes with
 * the images (the quota, the pre-pulls, pulls started elsewhere: the model's
 * `refreshImages`). A failed read is retried soon, and a catalog whose
 * readiness probes still run is read again shortly.
 */
import type { ServerConnection } from '@jupyterlab/services';
import type { TranslationBundle } from '@jupyterlab/translation';
import { Poll } from '@lumino/polling';

import { getImages, messageOf } from './api';
import { ICatalog } from './imagetypes';
import { ScheduledRefresh, failed, frequency } from './refresh';

/**
 * The longest catalog refresh interval (ms) when the server does not answer
 * (the poll backs off up to it), unless a longer interval is set.
 */
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

/**
 * When a failed read of the images is read again (ms after each failure in
 * a row), before the poll's schedule takes over.
 */
const CATALOG_RETRY_MS = [2000, 5000, 10000];

export interface ICatalogModelOptions {
  serverSettings: ServerConnection.ISettings;
  trans: TranslationBundle;
  /**
   * Seconds between ticks (at least 5).
   */
  interval: number;
  /**
   * What a tick reads: this model's `read`, and what goes with it. Never
   * rejects.
   */
  tick: () => Promise<void>;
}

/**
 * The catalog read now, with the host's disk totals of the previous read when
 * the engine did not report them this time (it may be busy with a pull): the
 * panel's figure stays the engine's own measure rather than come and go.
 */
export function withLastDiskUse(
  previous: ICatalog | null,
  next: ICatalog
): ICatalog {
  return next.disk === null && previous?.disk
    ? { ...next, disk: previous.disk }
    : next;
}

export class CatalogModel {
  constructor(options: ICatalogModelOptions) {
    this._settings = options.serverSettings;
    this._trans = options.trans;
    // The factory rejects after a failed read so that the poll backs off
    // while the server does not answer (the tick itself never does).
    this._poll = new Poll({
      factory: async () => {
        await options.tick();
        failed(this._catalogError);
      },
      frequency: frequency(options.interval, 5, IMAGE_MAX_INTERVAL),
      name: 'gpu-containers:images',
      standby: 'when-hidden'
    });
    this._retry = new ScheduledRefresh('gpu-containers:images-retry', () =>
      options.tick()
    );
    this._recheck = new ScheduledRefresh('gpu-containers:images-probes', () =>
      this.refresh()
    );
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
    return this._loading;
  }

  /**
   * The poll's current tick (settles once a refresh is in).
   */
  get tick(): Promise<unknown> {
    return this._poll.tick;
  }

  /**
   * Say that a read begins (`loadingImages`), before anything is asked.
   */
  markLoading(): void {
    this._loading = true;
  }

  /**
   * Read the catalog now. Never rejects: failures land in `catalogError`,
   * and are read again soon, a few times.
   */
  async read(): Promise<void> {
    this._loading = true;
    try {
      this._catalog = withLastDiskUse(
        this._catalog,
        await getImages(this._settings, this._trans)
      );
      this._catalogError = '';
      this._retries = 0;
    } catch (error) {
      this._catalogError = messageOf(error);
      this._retrySoon();
    } finally {
      this._loading = false;
    }
  }

  /**
   * Tick now, through the poll (its cadence starts again from here).
   */
  refresh(): Promise<void> {
    return this._poll.refresh();
  }

  setInterval(seconds: number): void {
    this._poll.frequency = frequency(seconds, 5, IMAGE_MAX_INTERVAL);
  }

  /**
   * While images are still being probed, tick again a little later (a
   * bounded number of times).
   */
  scheduleProbeRecheck(): void {
    this._recheck.cancel();
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
    this._recheck.schedule(PROBE_RECHECK_SECONDS * 1000);
  }

  dispose(): void {
    this._isDisposed = true;
    this._poll.dispose();
    this._retry.dispose();
    this._recheck.dispose();
  }

  /**
   * A failed read of the images is read again soon, a few times, before the
   * poll's own (minutes-long, backing off) schedule takes over: a request
   * lost as the server restarted or the host's network changed would
   * otherwise leave the panel saying the server cannot be reached.
   */
  private _retrySoon(): void {
    const delay = CATALOG_RETRY_MS[this._retries];
    if (delay === undefined || this._isDisposed) {
      return;
    }
    this._retries += 1;
    this._retry.schedule(delay);
  }

  private _settings: ServerConnection.ISettings;
  private _trans: TranslationBundle;
  private _poll: Poll;
  private _retry: ScheduledRefresh;
  private _recheck: ScheduledRefresh;
  private _catalog: ICatalog | null = null;
  private _catalogError = '';
  private _loading = false;
  private _retries = 0;
  private _rechecks = 0;
  private _isDisposed = false;
}
