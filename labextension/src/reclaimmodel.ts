/**
 * The idle-GPU policy's word on the user's kernels: which are warned that
 * their GPUs will be given back, and which lost them.
 */
import type { ServerConnection } from '@jupyterlab/services';
import type { TranslationBundle } from '@jupyterlab/translation';
import { ISignal, Signal } from '@lumino/signaling';

import { getKernels, keepKernelGpus } from './api';
import { IKernelList, IKernelReclaim } from './kerneltypes';
import { warningKey } from './sharing';
import { reclaimOf } from './sharingreaders';

/**
 * A kernel of the user's that the idle-GPU policy warned or reclaimed (the
 * `reclaimChanged` signal): once per warning.
 */
export interface IReclaimNotice {
  kernelId: string;
  /**
   * Its notebook's path; '' without one.
   */
  notebook: string;
  reclaim: IKernelReclaim;
}

export class ReclaimModel {
  constructor(
    private readonly _settings: ServerConnection.ISettings,
    private readonly _trans: TranslationBundle
  ) {}

  /**
   * The reclaim state of the user's warned kernels, by kernel id.
   */
  get reclaims(): ReadonlyMap<string, IKernelReclaim> {
    return this._reclaims;
  }

  /**
   * Emitted once per warning (or reclaim) of one of the user's kernels.
   */
  get reclaimChanged(): ISignal<this, IReclaimNotice> {
    return this._reclaimChanged;
  }

  /**
   * Read the reclaim state of the user's kernels, while they hold GPUs
   * (`holding`; only those can be reclaimed, and reading the kernels keeps
   * the server sampling).
   */
  async refresh(holding: boolean): Promise<void> {
    if (!holding && this._reclaims.size === 0) {
      return;
    }
    let list: IKernelList;
    try {
      list = await getKernels(this._settings, this._trans);
    } catch {
      return;
    }
    const notice = (kernelId: string, notebook: string, value: unknown) => {
      const reclaim = reclaimOf(value);
      // A kept kernel's new release time is its user's own doing: no news.
      const kept = reclaim?.state === 'warned' && reclaim.kept_until !== null;
      if (
        reclaim &&
        !kept &&
        (reclaim.state === 'warned' || reclaim.state === 'reclaimed')
      ) {
        const key = warningKey(kernelId, reclaim);
        if (!this._noticed.has(key)) {
          this._noticed.add(key);
          this._reclaimChanged.emit({ kernelId, notebook, reclaim });
        }
      }
      return reclaim;
    };
    // Only kernels that hold GPUs, or were warned, are read again.
    const now = new Map<string, IKernelReclaim>();
    for (const kernel of list.kernels) {
      const reclaim = notice(kernel.kernel_id, kernel.notebook, kernel.reclaim);
      if (reclaim && reclaim.state === 'warned') {
        now.set(kernel.kernel_id, reclaim);
      }
    }
    // Kernels shut down because their GPUs were reclaimed (the last hour).
    for (const gone of list.reclaimed ?? []) {
      if (gone) {
        notice(gone.kernel_id, gone.notebook, gone);
      }
    }
    this._reclaims = now;
  }

  /**
   * Keep a warned kernel's GPUs for `minutes` from now: its new state (the
   * server's sentence when it cannot be kept).
   */
  async keep(kernelId: string, minutes: number): Promise<IKernelReclaim> {
    const state = await keepKernelGpus(
      kernelId,
      minutes,
      this._settings,
      this._trans
    );
    if (state.state === 'warned') {
      this._reclaims = new Map(this._reclaims).set(kernelId, state);
    }
    return state;
  }

  dispose(): void {
    Signal.clearData(this);
  }

  private _reclaims = new Map<string, IKernelReclaim>();
  private _noticed = new Set<string>();
  private _reclaimChanged = new Signal<this, IReclaimNotice>(this);
}
