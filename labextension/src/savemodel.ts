/**
 * Saving a kernel's environment as an image, from the kernel's own view: the
 * save under way (or the last one of this kernel's image), read again every
 * second while it runs, its start and its cancel.
 */
import type { ServerConnection } from '@jupyterlab/services';
import type { TranslationBundle } from '@jupyterlab/translation';
import { ISignal, Signal } from '@lumino/signaling';

import { cancelSave, getSave, getSaves, startSave } from './api';
import { ISave, saveActive } from './savetypes';

export interface ISaveModelOptions {
  kernelId: string;
  serverSettings: ServerConnection.ISettings;
  trans: TranslationBundle;
  /**
   * Milliseconds between two reads of a save under way.
   */
  interval?: number;
  /**
   * Called once a save started or followed here is done.
   */
  onSaved?: () => void;
}

export class SaveModel {
  constructor(options: ISaveModelOptions) {
    this.kernelId = options.kernelId;
    this._settings = options.serverSettings;
    this._trans = options.trans;
    this._interval = options.interval ?? 1000;
    this._onSaved = options.onSaved;
  }

  readonly kernelId: string;

  /**
   * The save shown: one started here, or the user's latest of this kernel's
   * image (a view reopened, or a page reloaded, while it ran).
   */
  save: ISave | null = null;

  /**
   * Why no save can be made on this server; '' when one may.
   */
  refusal = '';

  /**
   * Why the last action failed, in the server's sentence; '' when it did not.
   */
  error = '';

  /**
   * The name the user typed for the new image ('' for the image's own).
   */
  name = '';

  /**
   * Whether a start or a cancel is being asked for.
   */
  asking = false;

  /**
   * Whether the saves were read once.
   */
  loaded = false;

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get active(): boolean {
    return this.save !== null && saveActive(this.save);
  }

  /**
   * The name typed for the new image.
   */
  setName(value: string): void {
    this.name = value;
    this._emit();
  }

  /**
   * Read the user's saves once: why none can be made, and their latest of
   * `base` (followed when under way).
   */
  async load(base: string): Promise<void> {
    if (this.loaded || this._disposed) {
      return;
    }
    this.loaded = true;
    try {
      const found = await getSaves(this._settings, this._trans);
      this.refusal = found.refusal;
      const mine = found.saves
        .filter(s => s.base === base)
        .sort((a, b) => b.started - a.started);
      if (!this.save && mine.length) {
        this.save = mine[0];
      }
    } catch (error) {
      // An older server without saves: nothing to offer.
      this.refusal = this._trans.__(
        'This server cannot save environments as images (%1).',
        error instanceof Error ? error.message : String(error)
      );
    }
    this._emit();
    this._follow();
  }

  /**
   * Start saving the kernel's environment under `name`.
   */
  async start(): Promise<void> {
    if (this.asking || this.active) {
      return;
    }
    this.asking = true;
    this.error = '';
    this._emit();
    try {
      this.save = await startSave(
        this.kernelId,
        this.name.trim(),
        this._settings,
        this._trans
      );
    } catch (error) {
      this.error = error instanceof Error ? error.message : String(error);
    } finally {
      this.asking = false;
    }
    this._emit();
    this._follow();
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
    this._emit();
    try {
      this.save = await cancelSave(save.id, this._settings, this._trans);
    } catch (error) {
      this.error = error instanceof Error ? error.message : String(error);
    } finally {
      this.asking = false;
    }
    this._emit();
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

  private _follow(): void {
    if (this._timer !== null || this._disposed || !this.active) {
      return;
    }
    this._timer = setTimeout(() => {
      this._timer = null;
      void this._read();
    }, this._interval);
  }

  private async _read(): Promise<void> {
    const save = this.save;
    if (!save || this._disposed) {
      return;
    }
    try {
      const now = await getSave(save.id, this._settings, this._trans);
      if (this.save?.id === now.id) {
        this.save = now;
        if (now.state === 'done') {
          this._onSaved?.();
        }
      }
    } catch (error) {
      this.error = error instanceof Error ? error.message : String(error);
      if (this.save) {
        // Forgotten by the server (a restart): no longer under way.
        this.save = { ...this.save, state: 'error' };
      }
    }
    this._emit();
    this._follow();
  }

  private _emit(): void {
    if (!this._disposed) {
      this._changed.emit();
    }
  }

  private readonly _settings: ServerConnection.ISettings;
  private readonly _trans: TranslationBundle;
  private readonly _interval: number;
  private readonly _onSaved: (() => void) | undefined;
  private _timer: ReturnType<typeof setTimeout> | null = null;
  private _disposed = false;
  private readonly _changed = new Signal<this, void>(this);
}
