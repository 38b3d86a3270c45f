/**
 * The cluster's GPU node pools (Kubernetes), read with the GPUs.
 */
import type { ServerConnection } from '@jupyterlab/services';
import type { TranslationBundle } from '@jupyterlab/translation';

import { getCluster } from './api';
import { IClusterView } from './gputypes';
import { OptionalRoute } from './refresh';

export class ClusterModel {
  constructor(
    private readonly _settings: ServerConnection.ISettings,
    private readonly _trans: TranslationBundle
  ) {}

  /**
   * The node pools; `null` until read, or when the server does not say.
   */
  get cluster(): IClusterView | null {
    return this._cluster;
  }

  /**
   * Read the cluster's node pools. A Docker server says so once: its backend
   * does not change while it runs, so it is not asked again until `reset`.
   */
  async refresh(): Promise<void> {
    if (this._route.resting || this._cluster?.backend === 'docker') {
      return;
    }
    try {
      this._cluster = await getCluster(this._settings, this._trans);
    } catch (error) {
      this._cluster = null;
      this._route.note(error);
    }
  }

  /**
   * Ask again at the next refresh (a refresh someone asked for).
   */
  reset(): void {
    this._route.reset();
    if (this._cluster?.backend === 'docker') {
      this._cluster = null; // asked again (a Kubernetes one is just re-read)
    }
  }

  private _cluster: IClusterView | null = null;
  private _route = new OptionalRoute();
}
