/**
 * Image pulls this page follows, by image reference: started here, or
 * started elsewhere (another tab, another user of the same server) and seen
 * in the catalog. Each is followed on its server-sent event stream until it
 * ends.
 */
import type { ServerConnection } from '@jupyterlab/services';
import type { TranslationBundle } from '@jupyterlab/translation';
import { ISignal, Signal } from '@lumino/signaling';

import { cancelPull, pullEventsUrl, startPull } from './api';
import { IEventSourceLike, STREAM_CLOSED } from './eventsource';
import { ICatalog, IPull, IRegistryCredentials } from './imagetypes';
import { parseSnapshot } from './readers';

const FINAL_EVENTS = ['done', 'error', 'cancelled'];

export interface IPullModelOptions {
  serverSettings: ServerConnection.ISettings;
  trans: TranslationBundle;
  openEvents: (url: string) => IEventSourceLike;
}

export class PullModel {
  constructor(options: IPullModelOptions) {
    this._settings = options.serverSettings;
    this._trans = options.trans;
    this._openEvents = options.openEvents;
  }

  /**
   * Pulls this page follows, by image reference as the catalog writes it.
   */
  get pulls(): ReadonlyMap<string, IPull> {
    return this._pulls;
  }

  /**
   * Emitted whenever a pull's snapshot changes.
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

  /**
   * Start (or join) a pull of `reference` and follow its progress. Resolves
   * with the pull's final snapshot; rejects only when the server refuses to
   * start it (with the server's sentence).
   */
  async pull(reference: string, auth?: IRegistryCredentials): Promise<IPull> {
    const pull = await startPull(reference, auth, this._settings, this._trans);
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
    const final = await cancelPull(pull.id, this._settings, this._trans);
    this._update(reference, final);
  }

  /**
   * Follow pulls started elsewhere that the catalog says are under way.
   */
  followServerPulls(catalog: ICatalog | null): void {
    for (const row of catalog?.images ?? []) {
      const known = this._pulls.get(row.reference);
      if (row.pull_id && (!known || known.id !== row.pull_id)) {
        void this._follow(
          row.reference,
          placeholderPull(row.pull_id, row.reference, row.registry)
        );
      }
    }
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    for (const source of this._streams.values()) {
      source.close();
    }
    this._streams.clear();
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
      const source = this._openEvents(pullEventsUrl(pull.id, this._settings));
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
    });
    return ended;
  }

  private _update(reference: string, pull: IPull): void {
    this._pulls.set(reference, pull);
    this._changed.emit();
  }

  private _settings: ServerConnection.ISettings;
  private _trans: TranslationBundle;
  private _openEvents: (url: string) => IEventSourceLike;
  private _pulls = new Map<string, IPull>();
  private _streams = new Map<string, IEventSourceLike>();
  private _waiters = new Map<string, Promise<IPull>>();
  private _changed = new Signal<this, void>(this);
  private _pullEnded = new Signal<this, IPull>(this);
  private _isDisposed = false;
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
