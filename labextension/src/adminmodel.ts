/**
 * The admin view (every holder, the queue, quotas) and the administrator's
 * actions on kernels; only for users the server grants the admin scope.
 */
import type { ServerConnection } from '@jupyterlab/services';
import type { TranslationBundle } from '@jupyterlab/translation';

import { adminKernelAction, getAdminView } from './api';
import { IStatus } from './gputypes';
import { OptionalRoute } from './refresh';
import { AdminAction, IAdminActionReply, IAdminView } from './sharingtypes';

export class AdminModel {
  constructor(
    private readonly _settings: ServerConnection.ISettings,
    private readonly _trans: TranslationBundle
  ) {}

  /**
   * The admin view; `null` unless the server grants this user the admin
   * scope.
   */
  get admin(): IAdminView | null {
    return this._admin;
  }

  /**
   * Read the admin view, unless `status` says the user is no administrator.
   */
  async refresh(status: IStatus | null): Promise<void> {
    // The server's status says whether this user is an administrator: a
    // route that can only answer 403 is not asked (read first, each poll).
    if (status?.admin === false) {
      this._admin = null;
      return;
    }
    // A status that could not be read (the server restarting, a request the
    // browser dropped when a container's network came up) says nothing of
    // who the user is: the last answer stands until one is read.
    if (this._route.resting || status === null) {
      return;
    }
    try {
      this._admin = await getAdminView(this._settings, this._trans);
    } catch (error) {
      this._admin = null;
      this._route.note(error);
    }
  }

  /**
   * Release a kernel's GPUs or shut it down, telling its user `reason`.
   * Rejects with the server's sentence.
   */
  act(
    kernelId: string,
    action: AdminAction,
    reason: string
  ): Promise<IAdminActionReply> {
    return adminKernelAction(
      kernelId,
      action,
      reason,
      this._settings,
      this._trans
    );
  }

  /**
   * Ask again at the next refresh, were the route missing.
   */
  reset(): void {
    this._route.reset();
  }

  private _admin: IAdminView | null = null;
  private _route = new OptionalRoute();
}
