/**
 * Saving a kernel's environment as an image, from the kernel's own view: the
 * save under way (or the last one of this kernel's image), read again every
 * second while it runs, its start and its cancel.
 */
import { getSaves, startSave } from './api';
import { IFollowOptions, SaveFollower } from './savefollow';

export interface ISaveModelOptions extends IFollowOptions {
  kernelId: string;
}

export class SaveModel extends SaveFollower {
  constructor(options: ISaveModelOptions) {
    super(options);
    this.kernelId = options.kernelId;
  }

  readonly kernelId: string;

  /**
   * Why no save can be made on this server; '' when one may.
   */
  refusal = '';

  /**
   * The name the user typed for the new image ('' for the image's own).
   */
  name = '';

  /**
   * Whether the saves were read once.
   */
  loaded = false;

  /**
   * The name typed for the new image.
   */
  setName(value: string): void {
    this.name = value;
    this.emit();
  }

  /**
   * Read the user's saves once: why none can be made, and their latest of
   * `base` (followed when under way). The save shown: one started here, or
   * the user's latest of this kernel's image (a view reopened, or a page
   * reloaded, while it ran).
   */
  async load(base: string): Promise<void> {
    if (this.loaded || this.isDisposed) {
      return;
    }
    this.loaded = true;
    try {
      const found = await getSaves(this.serverSettings, this.trans);
      this.refusal = found.refusal;
      const mine = found.saves
        .filter(s => s.kind === 'save' && s.base === base)
        .sort((a, b) => b.started - a.started);
      if (!this.save && mine.length) {
        this.save = mine[0];
      }
    } catch (error) {
      // An older server without saves: nothing to offer.
      this.refusal = this.trans.__(
        'This server cannot save environments as images (%1).',
        error instanceof Error ? error.message : String(error)
      );
    }
    this.emit();
    this.follow();
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
    this.emit();
    try {
      this.save = await startSave(
        this.kernelId,
        this.name.trim(),
        this.serverSettings,
        this.trans
      );
    } catch (error) {
      this.error = error instanceof Error ? error.message : String(error);
    } finally {
      this.asking = false;
    }
    this.emit();
    this.follow();
  }
}
