/**
 * A save or a build of an image followed to its end: read again every
 * second while it runs, cancelled at the user's word, said done once.
 * SaveModel (a kernel's view) and BuildModel (a build's tab) follow theirs so.
 */
import type { ServerConnection } from '@jupyterlab/services';
import type { TranslationBundle } from '@jupyterlab/translation';
import { ISignal, Signal } from '@lumino/signaling';

import { cancelSave, getSave } from './api';
import { ISave, saveActive } from './savetypes';

export interface IFollowOptions {
  serverSettings: ServerConnection.ISettings;
  trans: TranslationBundle;
  /**
   * Milliseconds between two reads of a save under way.
   */
  interval?: number;
  /**
   * Called once a save followed here is done (its image is a new kernel
   * spec).
   */
  onDone?: () => void;
}

export class SaveFollower {
  constructor(options: IFollowOptions) {
    this.serverSettings = options.serverSettings;
    this.trans = options.trans;
    this._interval = options.interval ?? 1000;
    this._onDone = options.onDone;
  }

  /**
   * The save followed, as last read.
   */
  save: ISave | null = null;

  /**
   * Why the last action failed, in the server's sentence; '' when it did not.
   */
  error = '';

  /**
   * Whether a start or a cancel is being asked for.
   */
  asking = false;

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get active(): boolean {
    return this.save !== null && saveActive(this.save);
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /**
   * Cancel the save under way; resolves once it ended.
   */
  async cancel(): Promise<void> {
    const save = this.save;
    if (!save || !saveActive(save) || this.asking) {
      return;
    }
    this.asking = true;
    this.emit();
    try {
      this.save = await cancelSave(save.id, this.serverSettings, this.trans);
    } catch (error) {
      this.error = error instanceof Error ? error.message : String(error);
    } finally {
      this.asking = false;
    }
    this.emit();
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
    Signal.clearData(this);
  }

  /**
   * Read the save again in a moment, while it is under way.
   */
  protected follow(): void {
    if (this._timer !== null || this._disposed || !this.active) {
      return;
    }
    this._timer = setTimeout(() => {
      this._timer = null;
      void this._read();
    }, this._interval);
  }

  protected emit(): void {
    if (!this._disposed) {
      this._changed.emit();
    }
  }

  protected readonly serverSettings: ServerConnection.ISettings;
  protected readonly trans: TranslationBundle;

  private async _read(): Promise<void> {
    const save = this.save;
    if (!save || this._disposed) {
      return;
    }
    try {
      const now = await getSave(save.id, this.serverSettings, this.trans);
      if (this.save?.id === now.id) {
        this.save = now;
        this.error = '';
        if (now.state === 'done') {
          this._onDone?.();
        }
      }
    } catch (error) {
      this.error = error instanceof Error ? error.message : String(error);
      if (this.save) {
        // Forgotten by the server (a restart): no longer under way.
        this.save = { ...this.save, state: 'error' };
      }
    }
    this.emit();
    this.follow();
  }

  private readonly _interval: number;
  private readonly _onDone: (() => void) | undefined;
  private _timer: ReturnType<typeof setTimeout> | null = null;
  private _disposed = false;
  private readonly _changed = new Signal<this, void>(this);
}
