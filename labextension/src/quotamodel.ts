/**
 * The user's GPU-hour quota (and use), read with the images and after a
 * waiting start got its GPUs.
 */
import type { ServerConnection } from '@jupyterlab/services';
import type { TranslationBundle } from '@jupyterlab/translation';

import { getQuota } from './api';
import { OptionalRoute } from './refresh';
import { IGpuQuota } from './sharingtypes';

export class QuotaModel {
  constructor(
    private readonly _settings: ServerConnection.ISettings,
    private readonly _trans: TranslationBundle
  ) {}

  /**
   * The user's GPU-hour quota; `null` when the server does not say.
   */
  get quota(): IGpuQuota | null {
    return this._quota;
  }

  /**
   * Read the quota now. Never rejects.
   */
  async refresh(): Promise<void> {
    if (this._route.resting) {
      return;
    }
    try {
      this._quota = await getQuota(this._settings, this._trans);
    } catch (error) {
      this._quota = null;
      this._route.note(error);
    }
  }

  /**
   * Ask again at the next refresh, were the route missing.
   */
  reset(): void {
    this._route.reset();
  }

  private _quota: IGpuQuota | null = null;
  private _route = new OptionalRoute();
}
