/**
 * The administrator's pre-pull schedule and pruning, read with the images.
 */
import type { ServerConnection } from '@jupyterlab/services';
import type { TranslationBundle } from '@jupyterlab/translation';

import { getPrePulls } from './api';
import { OptionalRoute } from './refresh';
import { IPrePulls } from './sharingtypes';

export class PrePullModel {
  constructor(
    private readonly _settings: ServerConnection.ISettings,
    private readonly _trans: TranslationBundle
  ) {}

  /**
   * The schedule and pruning; `null` on a server without them.
   */
  get prePulls(): IPrePulls | null {
    return this._prePulls;
  }

  /**
   * Read them now. Never rejects.
   */
  async refresh(): Promise<void> {
    if (this._route.resting) {
      return;
    }
    try {
      this._prePulls = await getPrePulls(this._settings, this._trans);
    } catch (error) {
      this._prePulls = null;
      this._route.note(error);
    }
  }

  /**
   * Ask again at the next refresh, were the route missing.
   */
  reset(): void {
    this._route.reset();
  }

  private _prePulls: IPrePulls | null = null;
  private _route = new OptionalRoute();
}
