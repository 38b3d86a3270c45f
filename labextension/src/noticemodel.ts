/**
 * Why administrators released or shut down the user's kernels (the server
 * keeps each notice a day): read with the GPUs, each told once per browser.
 */
import type { ServerConnection } from '@jupyterlab/services';
import type { TranslationBundle } from '@jupyterlab/translation';
import { ISignal, Signal } from '@lumino/signaling';

import { getAdminNotices } from './api';
import { OptionalRoute } from './refresh';
import { noticeKey } from './sharing';
import { IAdminNotice } from './sharingtypes';

/**
 * The local storage key of the administrator's notices already told.
 */
const TOLD_NOTICES_KEY = 'jupyter-gpu-containers:told-admin-notices';

/**
 * Where the keys of the notices already told are kept.
 */
export type NoticeStore = Pick<Storage, 'getItem' | 'setItem'>;

export class NoticeModel {
  /**
   * @param store Where the notices already told are kept, so that each is
   *   told once, not again on each page load; `null`: this page's memory.
   */
  constructor(
    private readonly _settings: ServerConnection.ISettings,
    private readonly _trans: TranslationBundle,
    private readonly _store: NoticeStore | null
  ) {
    this._told = new Set(this._readTold());
  }

  /**
   * The user's notices, oldest first; empty on an older server.
   */
  get notices(): readonly IAdminNotice[] {
    return this._notices;
  }

  /**
   * Emitted once per notice, the first time this browser sees it.
   */
  get noticeArrived(): ISignal<this, IAdminNotice> {
    return this._noticeArrived;
  }

  /**
   * Read the user's notices, and tell the new ones.
   */
  async refresh(): Promise<void> {
    if (this._route.resting) {
      return;
    }
    try {
      this._notices = await getAdminNotices(this._settings, this._trans);
    } catch (error) {
      this._route.note(error);
      return;
    }
    const fresh = this._notices.filter(n => !this._told.has(noticeKey(n)));
    if (fresh.length === 0) {
      return;
    }
    for (const notice of fresh) {
      this._told.add(noticeKey(notice));
    }
    // Only the notices the server still keeps are remembered.
    const kept = new Set(this._notices.map(noticeKey));
    this._told = new Set([...this._told].filter(key => kept.has(key)));
    this._writeTold();
    for (const notice of fresh) {
      this._noticeArrived.emit(notice);
    }
  }

  /**
   * Ask again at the next refresh, were the route missing.
   */
  reset(): void {
    this._route.reset();
  }

  dispose(): void {
    Signal.clearData(this);
  }

  private _readTold(): string[] {
    try {
      // The browser's own storage, not the server's JSON.
      const stored: unknown = JSON.parse(
        this._store?.getItem(TOLD_NOTICES_KEY) ?? '[]'
      );
      return Array.isArray(stored)
        ? stored.filter((k): k is string => typeof k === 'string')
        : [];
    } catch {
      return [];
    }
  }

  private _writeTold(): void {
    try {
      this._store?.setItem(TOLD_NOTICES_KEY, JSON.stringify([...this._told]));
    } catch {
      // Storage full or refused: told once per page load instead.
    }
  }

  private _notices: IAdminNotice[] = [];
  private _told: Set<string>;
  private _noticeArrived = new Signal<this, IAdminNotice>(this);
  private _route = new OptionalRoute();
}
