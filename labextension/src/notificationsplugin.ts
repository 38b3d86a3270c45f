/**
 * The notifications' plugin: how a waiting start ended, administrators'
 * notices and idle-GPU warnings, told once each whether or not the panel is
 * open; and a notebook whose kernel waits for a GPU, in the status bar and
 * when a cell runs meanwhile; once a waiting start's kernel runs, the page's
 * notebooks on it attach to it; a notebook's tab with no session takes up the
 * one the server lists for its notebook (a start that waits, asked for in
 * another tab).
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import {
  INotebookTracker,
  NotebookActions,
  NotebookPanel
} from '@jupyterlab/notebook';
import { Kernel, KernelAPI, Session } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ITranslator, TranslationBundle } from '@jupyterlab/translation';

import { translationBundle } from './i18n';
import { notify } from './notify';
import { reattachWhenRunning } from './reattach';
import {
  IFollowedTab,
  isTakingUp,
  sessionsToTakeUp,
  takeUpSession
} from './sessionfollow';
import {
  cellWhileWaitingText,
  defaultKeep,
  isStartUnderWay,
  keepLengthText,
  noticeText,
  outcomeMessage,
  reclaimText,
  waitingTicketOf
} from './sharing';
import { IGpuContainersModel, PLUGIN_ID } from './tokens';
import { WaitingStatus } from './waitstatus';
import { WaitToasts } from './waittoasts';

/**
 * Tell how waiting starts ended, administrators' notices and idle-GPU
 * warnings.
 */
function tellSharingNews(
  model: IGpuContainersModel,
  trans: TranslationBundle
): void {
  model.queueEnded.connect((_, end) => {
    const message = outcomeMessage(trans, end.ticket, end.outcome);
    if (end.outcome === 'started') {
      Notification.success(message, { autoClose: 8000 });
    } else if (end.outcome === 'cancelled') {
      // The user's own choice, from this page: news, not a problem to keep.
      Notification.info(message, { autoClose: 5000 });
    } else {
      Notification.warning(message, { autoClose: false });
    }
  });
  // An administrator released or shut down one of the user's kernels: said
  // once (the server keeps the notice a day; the panel's row keeps it too).
  model.noticeArrived.connect((_, notice) => {
    notify(
      trans,
      'warning',
      noticeText(trans, notice),
      trans.__('An administrator acted on your kernel')
    );
  });
  model.reclaimChanged.connect((_, notice) => {
    const what =
      notice.notebook.split('/').pop() ||
      trans.__('kernel %1', notice.kernelId.slice(0, 8));
    // A warning the user may answer: keep the GPUs a while, in one click.
    const offer =
      notice.reclaim.state === 'warned' ? notice.reclaim.keep : null;
    const actions: Notification.IAction[] = [];
    if (offer && offer.times_left > 0) {
      const minutes = defaultKeep(offer);
      actions.push({
        label: trans.__('Keep them for %1', keepLengthText(trans, minutes)),
        caption: trans.__(
          "I am still using them: don't give them back for %1",
          keepLengthText(trans, minutes)
        ),
        displayType: 'accent',
        callback: () => {
          model.keepGpus(notice.kernelId, minutes).then(
            kept =>
              Notification.success(
                trans._p(
                  'a notebook: what happens to its GPUs',
                  '%1: %2',
                  what,
                  reclaimText(trans, kept)
                ),
                { autoClose: 8000 }
              ),
            error =>
              notify(
                trans,
                'error',
                error instanceof Error ? error.message : String(error),
                trans.__('The GPUs of %1', what)
              )
          );
        }
      });
    }
    notify(
      trans,
      'warning',
      trans._p(
        'a notebook: what happens to its GPUs',
        '%1: %2',
        what,
        reclaimText(trans, notice.reclaim)
      ),
      trans.__('The GPUs of %1', what),
      { actions }
    );
  });
}

/**
 * How often, and how long, the page looks for a started kernel to run: its
 * container may start on a cluster's node after its job did.
 */
const RUNNING_LOOK_MS = 1000;
const RUNNING_LOOKS = 600;

/**
 * A start that waited got its GPUs: once its kernel runs, the notebooks on it
 * attach to it, also on a page loaded while it waited (whose cells run
 * meanwhile are sent then).
 */
function attachStarted(
  model: IGpuContainersModel,
  notebooks: INotebookTracker
): void {
  model.queueEnded.connect((_, end) => {
    const kernelId = end.ticket.kernel_id ?? '';
    if (end.outcome !== 'started' || !kernelId) {
      return;
    }
    void reattachWhenRunning(kernelId, {
      isRunning: async id => {
        const found = await KernelAPI.getKernelModel(id, model.serverSettings);
        return found !== undefined && !isStartUnderWay(found.execution_state);
      },
      connections: () => {
        const kernels: (Kernel.IKernelConnection | null | undefined)[] = [];
        notebooks.forEach(panel =>
          kernels.push(panel.sessionContext.session?.kernel)
        );
        return kernels;
      },
      intervalMs: RUNNING_LOOK_MS,
      looks: RUNNING_LOOKS
    });
  });
}

/**
 * A notebook's tab with no session, asking for none, takes up the session the
 * server lists for its notebook (sessionfollow.ts), whenever the page's list
 * of sessions changes: a second tab of a notebook whose wait was asked for in
 * another, a tab whose own start was refused or cancelled before the notebook
 * waited again.
 */
function followSessions(
  model: IGpuContainersModel,
  sessions: Session.IManager,
  notebooks: INotebookTracker
): void {
  // A wait ended (started, cancelled from another tab, timed out): the page's
  // sessions are read now, not at JupyterLab's next poll, so that every tab
  // shows what became of it.
  model.queueEnded.connect(() => {
    void sessions.refreshRunning().catch(() => undefined);
  });
  const follow = (): void => {
    const tabs = new Map<IFollowedTab, NotebookPanel>();
    notebooks.forEach(panel => {
      const context = panel.sessionContext;
      const idle =
        !context.isDisposed &&
        context.isReady &&
        !context.session &&
        context.hasNoKernel &&
        !context.isTerminating &&
        !isTakingUp(context);
      tabs.set({ path: panel.context.localPath, idle }, panel);
    });
    for (const [tab, kernelId] of sessionsToTakeUp(
      tabs.keys(),
      sessions.running()
    )) {
      const panel = tabs.get(tab);
      if (!panel) {
        continue;
      }
      void takeUpSession(panel.sessionContext, kernelId);
    }
  };
  sessions.runningChanged.connect(follow);
}

/**
 * A notebook whose kernel waits for a GPU is no Idle one: the status bar
 * says so, and a cell run meanwhile is said to wait for the kernel.
 */
function tellWaits(
  model: IGpuContainersModel,
  notebooks: INotebookTracker,
  statusBar: IStatusBar | null,
  trans: TranslationBundle
): void {
  const waiting = new WaitingStatus(model, notebooks, trans);
  // The item's id as it was when one plugin did everything.
  statusBar?.registerStatusItem(`${PLUGIN_ID}:waiting`, {
    item: waiting,
    align: 'left',
    rank: 3,
    isActive: () => waiting.waiting,
    activeStateChanged: model.changed
  });
  // One wait: its kernel and its deadline.
  const told = new Set<string>();
  // Each wait's toast goes once the wait ends (waittoasts.ts).
  const toasts = new WaitToasts(id => Notification.dismiss(id));
  model.queueEnded.connect((_, end) =>
    toasts.ended(end.ticket.kernel_id ?? '')
  );
  NotebookActions.executionScheduled.connect((_, { notebook }) => {
    const panel = notebooks.find(p => p.content === notebook) ?? null;
    const ticket = waitingTicketOf(model.queue, panel);
    // Once per wait: a notebook run cell by cell says it once.
    const wait = `${ticket?.kernel_id}|${ticket?.deadline}`;
    if (!panel || !ticket || told.has(wait)) {
      return;
    }
    told.add(wait);
    const id = Notification.info(
      cellWhileWaitingText(
        trans,
        panel.context.localPath.split('/').pop() ?? '',
        ticket
      ),
      { autoClose: 8000 }
    );
    toasts.told(ticket.kernel_id ?? '', id);
  });
}

export const notificationsPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-gpu-containers:notifications',
  description:
    'Tells how waiting starts ended, administrators’ notices and idle-GPU warnings, shows a notebook waiting for a GPU in the status bar, and attaches notebooks to their kernels once a waiting start runs, and a notebook’s tab with no session to the one its notebook has.',
  autoStart: true,
  requires: [IGpuContainersModel],
  optional: [INotebookTracker, IStatusBar, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    model: IGpuContainersModel,
    notebooks: INotebookTracker | null,
    statusBar: IStatusBar | null,
    translator: ITranslator | null
  ): void => {
    const trans = translationBundle(translator);
    tellSharingNews(model, trans);
    if (notebooks) {
      tellWaits(model, notebooks, statusBar, trans);
      attachStarted(model, notebooks);
      followSessions(model, app.serviceManager.sessions, notebooks);
    }
  }
};
