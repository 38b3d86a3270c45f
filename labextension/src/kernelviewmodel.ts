/**
 * What one kernel's own view shows, kept up to date while it is open: its
 * details and GPU use (read on a Poll) and its container log (a server-sent
 * event stream).
 */
import type { ServerConnection } from '@jupyterlab/services';
import type { TranslationBundle } from '@jupyterlab/translation';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { getKernelView, kernelLogUrl, logStreamRefusal } from './api';
import {
  IEventSourceLike,
  STREAM_CLOSED,
  openEventSource
} from './eventsource';
import { describeEnd } from './gpuuse';
import { Reader, readEvent } from './json';
import { IKernelView } from './kerneltypes';
import { ILogEvents, logEventReaders } from './readers';
import { SaveModel } from './savemodel';

/**
 * One entry of the log as the view shows it: a line of the container's log,
 * or a note of the view's own (a new container, why one ended).
 */
export interface ILogEntry {
  kind: 'line' | 'note' | 'end';
  text: string;
  time: string;
}

/**
 * Options of a kernel's view model.
 */
export interface IKernelViewOptions {
  kernelId: string;
  serverSettings: ServerConnection.ISettings;
  trans: TranslationBundle;
  /**
   * Opens an event stream; the browser's `EventSource` by default.
   */
  openEvents?: (url: string) => IEventSourceLike;
  /**
   * Lines of the log read when the view opens.
   */
  tail?: number;
  /**
   * Lines kept on screen; older ones are dropped.
   */
  maxEntries?: number;
  /**
   * Seconds between two reads of the details and GPU use.
   */
  refreshSeconds?: number;
  /**
   * Called once a save of the kernel's environment is done.
   */
  onSaved?: () => void;
}

/**
 * What one kernel's view shows, kept up to date while it is open: the details
 * (read every few seconds) and the log (a server-sent event stream).
 */
export class KernelViewModel {
  constructor(options: IKernelViewOptions) {
    this.kernelId = options.kernelId;
    this._settings = options.serverSettings;
    this._trans = options.trans;
    this._tail = options.tail ?? 500;
    this._maxEntries = options.maxEntries ?? 5000;
    this._openEvents = options.openEvents ?? openEventSource;
    this.saving = new SaveModel({
      kernelId: options.kernelId,
      serverSettings: options.serverSettings,
      trans: options.trans,
      onDone: options.onSaved
    });
    this.saving.changed.connect(() => this._changed.emit());
    // Read while the view is open, hidden or not (as before: a tab in the
    // background still follows its log); `refresh` never rejects.
    this._poll = new Poll({
      auto: false,
      factory: () => this.refresh(),
      frequency: {
        interval: (options.refreshSeconds ?? 5) * 1000,
        backoff: false
      },
      name: 'gpu-containers:kernel-view',
      standby: 'never'
    });
  }

  readonly kernelId: string;

  /**
   * Saving the kernel's environment as an image of the user's own.
   */
  readonly saving: SaveModel;

  /**
   * The kernel's details; `null` until read.
   */
  view: IKernelView | null = null;

  /**
   * Why the details could not be read; empty when they could.
   */
  error = '';

  /**
   * The log on screen, oldest first.
   */
  entries: ILogEntry[] = [];

  /**
   * Whether new lines of the log still come.
   */
  following = false;

  /**
   * Whether the reader is at the end of the log (which then stays in view as
   * lines come).
   */
  atEnd = true;

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /**
   * Read the details, open the log, and keep both current.
   */
  start(): void {
    if (this._started || this._isDisposed) {
      return;
    }
    this._started = true;
    void this.refresh();
    void this._poll.schedule({
      interval: this._poll.frequency.interval,
      phase: 'started'
    });
    this._follow();
  }

  /**
   * Read the kernel's details (and GPU use) again.
   */
  async refresh(): Promise<void> {
    try {
      const view = await getKernelView(
        this.kernelId,
        this._settings,
        this._trans
      );
      if (this._isDisposed) {
        return;
      }
      this.view = view;
      this.error = '';
      void this.saving.load(view.image.reference);
    } catch (error) {
      if (this._isDisposed) {
        return;
      }
      this.error = error instanceof Error ? error.message : String(error);
    }
    this._changed.emit();
  }

  /**
   * Stop following the log and reading the details.
   */
  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._stopFollowing();
    this._poll.dispose();
    this.saving.dispose();
    Signal.clearData(this);
  }

  private _follow(): void {
    const source = this._openEvents(
      kernelLogUrl(this.kernelId, this._tail, this._settings)
    );
    this._source = source;
    this.following = true;
    // Whether the stream ever answered: one that closes before it says
    // anything was refused (or never reached), which is not "no longer".
    let answered = false;
    source.addEventListener('open', () => (answered = true));
    const on = <K extends keyof ILogEvents>(
      name: K,
      handle: (data: ILogEvents[K]) => void
    ): void => {
      source.addEventListener(name, event => {
        answered = true;
        const read: Reader<ILogEvents[K]> = logEventReaders[name];
        const data = readEvent(event.data, read);
        if (data && !this._isDisposed) {
          handle(data);
          this._changed.emit();
        }
      });
    };
    on('container', data => this._onContainer(data));
    on('lines', data => {
      if (data.skipped > 0) {
        this._note(
          this._trans._n(
            '… %1 line skipped (the log came faster than it could be shown) …',
            '… %1 lines skipped (the log came faster than it could be shown) …',
            data.skipped
          )
        );
      }
      for (const line of data.lines) {
        this._push({ kind: 'line', text: line.text, time: line.time });
      }
    });
    on('ended', data => {
      // The reason is a whole sentence ("The container ended with code 3."),
      // and a restart someone asked for is news, not trouble (in red).
      this._push({
        kind: data.routine ? 'note' : 'end',
        text: data.reason,
        time: ''
      });
      void this.refresh();
    });
    on('shutdown', data => {
      this._push({ kind: 'end', text: data.reason, time: '' });
      this._stopFollowing();
    });
    source.addEventListener('error', () => {
      // The browser reconnects by itself, unless the stream failed for good.
      if (source.readyState === STREAM_CLOSED && !this._isDisposed) {
        this._stopFollowing();
        if (answered) {
          this._note(this._trans.__('The log is no longer followed.'));
          this._changed.emit();
        } else {
          void this._sayWhyNotRead();
        }
      }
    });
  }

  /**
   * The stream was refused before it began: say so, with the server's
   * sentence, rather than that it is "no longer" followed.
   */
  private async _sayWhyNotRead(): Promise<void> {
    const why = await logStreamRefusal(
      this.kernelId,
      this._settings,
      this._trans
    );
    if (this._isDisposed) {
      return;
    }
    this._note(
      why
        ? this._trans.__('The log could not be read: %1', why)
        : this._trans.__(
            'The log could not be read: its stream closed before it began. Close this view and open it again to retry.'
          )
    );
    this._changed.emit();
  }

  private _onContainer(data: ILogEvents['container']): void {
    if (data.container_id === this._container) {
      // The stream reconnected: its tail comes again, in place of what was shown.
      this.entries = this.entries.slice(0, this._containerStart);
    } else {
      if (this._container === '' && data.last_end) {
        this._push({
          // A restart someone asked for is news; a container that ended on
          // its own (an exit, a crash, out of memory) is trouble.
          kind: data.last_end.routine ? 'note' : 'end',
          text: describeEnd(this._trans, data.last_end),
          time: ''
        });
      }
      if (this._container !== '') {
        this._note(
          this._trans.__(
            'The kernel restarted in a new container (%1).',
            data.container_id.slice(0, 12)
          )
        );
      }
      this._container = data.container_id;
    }
    this._containerStart = this.entries.length;
    void this.refresh();
  }

  private _note(text: string): void {
    this._push({ kind: 'note', text, time: '' });
  }

  private _push(entry: ILogEntry): void {
    this.entries.push(entry);
    const over = this.entries.length - this._maxEntries;
    if (over > 0) {
      this.entries.splice(0, over);
      this._containerStart = Math.max(0, this._containerStart - over);
    }
  }

  private _stopFollowing(): void {
    this._source?.close();
    this._source = null;
    this.following = false;
  }

  private _settings: ServerConnection.ISettings;
  private _trans: TranslationBundle;
  private _tail: number;
  private _maxEntries: number;
  private _poll: Poll;
  private _openEvents: (url: string) => IEventSourceLike;
  private _source: IEventSourceLike | null = null;
  private _container = '';
  private _containerStart = 0;
  private _started = false;
  private _isDisposed = false;
  private _changed = new Signal<this, void>(this);
}
