/**
 * A notebook's tab with no session takes up the one the server lists for its
 * notebook. A notebook's waiting start is the notebook's, not one tab's: the
 * server lists it under the notebook's path, and a request for the notebook's
 * session joins it (waiting_sessions.py). JupyterLab looks for a listed session
 * only when it opens a tab, so a tab that had none then (its start was refused
 * or cancelled, "No Kernel" was chosen, or another tab asked for the wait
 * since) would stay "No Kernel" beside a notebook that waits, and then runs.
 */
import type { ISessionContext } from '@jupyterlab/apputils';
import type { Session } from '@jupyterlab/services';

/**
 * A notebook's tab, as the follower sees it.
 */
export interface IFollowedTab {
  /**
   * The notebook's path, as the sessions API names it.
   */
  readonly path: string;
  /**
   * Whether the tab has no session and asks for none now: JupyterLab's own
   * start, a kernel change or a shutdown under way are left alone.
   */
  readonly idle: boolean;
}

/**
 * The kernel id each idle tab should take up: that of the session the server
 * lists for its notebook, if any.
 */
export function sessionsToTakeUp(
  tabs: Iterable<IFollowedTab>,
  running: Iterable<Session.IModel>
): Map<IFollowedTab, string> {
  const byPath = new Map<string, string>();
  for (const session of running) {
    const kernelId = session.kernel?.id;
    if (session.type === 'notebook' && kernelId) {
      byPath.set(session.path, kernelId);
    }
  }
  const found = new Map<IFollowedTab, string>();
  for (const tab of tabs) {
    const kernelId = tab.idle ? byPath.get(tab.path) : undefined;
    if (kernelId) {
      found.set(tab, kernelId);
    }
  }
  return found;
}

const takingUp = new WeakMap<ISessionContext, Promise<void>>();

/**
 * Have a tab take up the listed session of kernel `kernelId` (JupyterLab's
 * own request for a session on that kernel, which the server answers with
 * the notebook's session). One at a time per tab, whoever asks (the follower,
 * a kernel choice): a second request while the first is under way would end
 * with JupyterLab shutting down "the previous session", which is the same
 * one, and so the wait. Resolves when the tab has it, or the request failed
 * (JupyterLab says why).
 */
export function takeUpSession(
  context: ISessionContext,
  kernelId: string
): Promise<void> {
  const under = takingUp.get(context);
  if (under) {
    return under;
  }
  const session = context.session;
  if (
    context.isDisposed ||
    (session && !session.isDisposed && session.kernel?.id === kernelId)
  ) {
    return Promise.resolve();
  }
  const taking = context
    .changeKernel({ id: kernelId })
    .then(
      () => undefined,
      () => undefined
    )
    .finally(() => takingUp.delete(context));
  takingUp.set(context, taking);
  return taking;
}

/**
 * Whether the tab is taking up a session now (takeUpSession).
 */
export function isTakingUp(context: ISessionContext): boolean {
  return takingUp.has(context);
}
