import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  ICommandPalette,
  IToolbarWidgetRegistry,
  MainAreaWidget,
  Notification
} from '@jupyterlab/apputils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import {
  INotebookTracker,
  NotebookActions,
  NotebookPanel
} from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import {
  ITranslator,
  TranslationBundle,
  nullTranslator
} from '@jupyterlab/translation';
import type { IDisposable } from '@lumino/disposable';
import { PathExt } from '@jupyterlab/coreutils';

import { getStatus } from './api';
import { askRegistryLogin } from './credentials';
import { engineProblem } from './format';
import { translationBundle } from './i18n';
import { gpuContainersIcon } from './icon';
import { GpuContainersModel, messageOf } from './model';
import { GpuContainersPanel, IPanelActions } from './panel';
import {
  cellWhileWaitingText,
  noticeText,
  outcomeMessage,
  reclaimText,
  waitingTicketOf
} from './sharing';
import { describeStatus } from './status';
import { keepLauncherLabelsBreakable } from './launcherlabels';
import { notify } from './notify';
import { launchNotebook, switchNotebook } from './switching';
import { KernelImageItem } from './toolbar';
import { KernelViewModel, KernelViewWidget } from './kernelview';
import { WaitingStatus } from './waitstatus';
import { IImageRow } from './types';

/**
 * The plugin's id, also the key of its settings.
 */
export const PLUGIN_ID = 'jupyter-gpu-containers:plugin';

/**
 * The name of the notebook toolbar item, in the toolbar registry and in the
 * `jupyter.lab.toolbars` definition of the plugin's settings schema (where
 * its rank puts it right of the spacer, before the kernel name: JupyterLab's
 * overflow menu takes the last items first, and in a split pane this one,
 * in its compact form, stays). Users hide or move it in the Notebook Panel
 * settings, as any toolbar item.
 */
export const TOOLBAR_ITEM = 'gpuContainers';

/**
 * Command ids.
 */
export namespace CommandIDs {
  export const openPanel = 'gpu-containers:open-panel';
  export const switchImage = 'gpu-containers:switch-image';
  export const refreshImages = 'gpu-containers:refresh-images';
  export const openKernelView = 'gpu-containers:open-kernel-view';
}

/**
 * Ask the server for the container engine's status and tell people when the
 * engine cannot be used. Never rejects.
 */
async function reportStatus(
  app: JupyterFrontEnd,
  trans: TranslationBundle
): Promise<void> {
  try {
    const status = await getStatus(app.serviceManager.serverSettings, trans);
    const { level, text } = describeStatus(trans, status);
    if (level === 'warning') {
      Notification.warning(text, { autoClose: false });
    } else {
      console.log(text);
    }
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    Notification.error(trans.__('GPU containers: %1', message), {
      autoClose: false
    });
  }
}

/**
 * Pull an image and say how it ended; when the registry refuses the login,
 * ask for one and try again.
 */
async function pullImage(
  model: GpuContainersModel,
  row: IImageRow,
  trans: TranslationBundle
): Promise<void> {
  try {
    let final = await model.pull(row.reference);
    // 403: the registry refused the login (or none was given).
    while (final.state === 'error' && final.error_status === 403) {
      const login = await askRegistryLogin(row.registry, final.message, trans);
      if (!login) {
        return;
      }
      final = await model.pull(row.reference, login);
    }
    if (final.state === 'error') {
      pullFailed(trans, row.reference, final.message);
    } else if (final.state === 'done') {
      Notification.success(trans.__('%1 is pulled.', row.reference), {
        autoClose: 5000
      });
    }
  } catch (error) {
    pullFailed(trans, row.reference, messageOf(error));
  }
}

/**
 * A failed pull, said in full: the server's sentence behind "Details" when
 * JupyterLab would cut it.
 */
function pullFailed(
  trans: TranslationBundle,
  reference: string,
  sentence: string
): void {
  const what = trans.__('Pull of %1 failed', reference);
  notify(trans, 'error', trans.__('%1: %2', what, sentence), what);
}

/**
 * The jupyter-gpu-containers front end: the GPU Containers panel, the
 * notebook toolbar item, commands, settings and a Launcher card.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'Runs Jupyter kernels inside GPU framework containers: GPUs, images, pulls and per-notebook images.',
  autoStart: true,
  optional: [
    ICommandPalette,
    IDefaultFileBrowser,
    ILauncher,
    ILayoutRestorer,
    INotebookTracker,
    ISettingRegistry,
    IToolbarWidgetRegistry,
    ITranslator,
    IStatusBar
  ],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    browser: IDefaultFileBrowser | null,
    launcher: ILauncher | null,
    restorer: ILayoutRestorer | null,
    notebooks: INotebookTracker | null,
    settingRegistry: ISettingRegistry | null,
    toolbarRegistry: IToolbarWidgetRegistry | null,
    translator: ITranslator | null,
    statusBar: IStatusBar | null
  ): void => {
    const trans = translationBundle(translator);
    void reportStatus(app, trans);
    keepLauncherLabelsBreakable(app);
    const model = new GpuContainersModel({
      serverSettings: app.serviceManager.serverSettings,
      translator
    });

    const actions: IPanelActions = {
      launch: (row, gpus, wait) =>
        launchNotebook(
          app,
          model,
          row,
          gpus,
          browser?.model.path ?? '',
          trans,
          wait
        ),
      pull: row => pullImage(model, row, trans),
      cancel: async row => {
        try {
          await model.cancel(row.reference);
        } catch (error) {
          notify(
            trans,
            'error',
            messageOf(error),
            trans.__('Pull of %1', row.reference)
          );
        }
      },
      openNotebook: path => {
        void app.commands.execute('docmanager:open', { path });
      },
      openKernelView: kernelId => {
        void app.commands.execute(CommandIDs.openKernelView, { kernelId });
      }
    };
    // Fair sharing: how a waiting start ended, and idle-GPU warnings, told
    // once each whether or not the panel is open.
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
      notify(
        trans,
        'warning',
        trans._p(
          'a notebook: what happens to its GPUs',
          '%1: %2',
          what,
          reclaimText(trans, notice.reclaim)
        ),
        trans.__('The GPUs of %1', what)
      );
    });
    const panel = new GpuContainersPanel(model, actions, trans);
    // A kernel this page started or ended: "Your kernels" reads again now
    // rather than at its next poll (it said "none" meanwhile).
    app.serviceManager.sessions.runningChanged.connect(() =>
      panel.readKernelsAgain()
    );
    app.serviceManager.kernels.runningChanged.connect(() =>
      panel.readKernelsAgain()
    );
    app.shell.add(panel, 'left', { rank: 650 });
    restorer?.add(panel, 'gpu-containers');

    const { commands } = app;
    commands.addCommand(CommandIDs.openPanel, {
      label: () =>
        engineProblem(trans, model.status)
          ? trans.__('GPU Containers (no Docker engine)')
          : trans.__('GPU Containers'),
      caption: trans.__(
        'Show the GPUs, who holds them, and the container images'
      ),
      icon: args => (args['isPalette'] ? undefined : gpuContainersIcon),
      execute: () => app.shell.activateById(panel.id)
    });
    const currentNotebook = (): NotebookPanel | null => {
      const widget = notebooks?.currentWidget ?? null;
      return widget && widget === app.shell.currentWidget ? widget : null;
    };
    commands.addCommand(CommandIDs.switchImage, {
      label: trans.__('Switch Notebook Image and GPUs…'),
      caption: trans.__(
        "Restart this notebook's kernel on another image or GPU count"
      ),
      isEnabled: () => currentNotebook() !== null,
      execute: async () => {
        const current = currentNotebook();
        if (current) {
          await switchNotebook(app, model, current, trans);
        }
      }
    });
    commands.addCommand(CommandIDs.refreshImages, {
      label: trans.__('Refresh GPU Container Images'),
      caption: trans.__('Read the image catalog and the GPUs again'),
      execute: () => model.refresh()
    });
    // The kernel's own view: one main-area tab per kernel, following its log
    // until closed. Without a kernel id: the current notebook's kernel.
    const kernelViews = new Map<string, MainAreaWidget<KernelViewWidget>>();
    const kernelOf = (args: Record<string, unknown>): string => {
      const given = args['kernelId'];
      if (typeof given === 'string' && given !== '') {
        return given;
      }
      return notebooks?.currentWidget?.sessionContext.session?.kernel?.id ?? '';
    };
    commands.addCommand(CommandIDs.openKernelView, {
      label: trans.__('Kernel Log and GPU Use'),
      caption: trans.__(
        "Show the kernel's container log, start, image, mounts and GPU use"
      ),
      isEnabled: args => kernelOf(args) !== '',
      execute: args => {
        const kernelId = kernelOf(args);
        if (!kernelId) {
          return;
        }
        let widget = kernelViews.get(kernelId);
        if (!widget || widget.isDisposed) {
          const content = new KernelViewWidget(
            new KernelViewModel({
              kernelId,
              serverSettings: app.serviceManager.serverSettings,
              trans
            }),
            trans
          );
          widget = new MainAreaWidget({ content });
          widget.id = `jgc-kernel-view-${kernelId}`;
          widget.title.label = trans.__('Kernel %1', kernelId.slice(0, 8));
          widget.title.icon = gpuContainersIcon;
          widget.title.closable = true;
          const path = notebooks?.find(
            panel => panel.sessionContext.session?.kernel?.id === kernelId
          )?.context.path;
          if (path) {
            widget.title.label = trans.__(
              'Kernel of %1',
              PathExt.basename(path)
            );
          }
          kernelViews.set(kernelId, widget);
          widget.disposed.connect(() => kernelViews.delete(kernelId));
          app.shell.add(widget, 'main', { mode: 'split-right' });
        }
        app.shell.activateById(widget.id);
      }
    });
    for (const command of Object.values(CommandIDs)) {
      palette?.addItem({ command, category: trans.__('GPU Containers') });
    }
    // JupyterLab's own cards name this Launcher section in its own domain.
    const other = (translator ?? nullTranslator).load('jupyterlab').__('Other');
    const addCard = (): IDisposable | null =>
      launcher?.add({
        command: CommandIDs.openPanel,
        category: other,
        rank: 0
      }) ?? null;
    let card = addCard();
    // The card's label says when there is no engine: relabel it when that changes. A Launcher
    // draws a card's label once and does not follow commandChanged, and the first status often
    // arrives after a Launcher opened: the card is added again, which redraws every Launcher.
    let engineDown: boolean | null = null;
    model.changed.connect(() => {
      const down = engineProblem(trans, model.status) !== '';
      if (down !== engineDown) {
        engineDown = down;
        commands.notifyCommandChanged(CommandIDs.openPanel);
        card?.dispose();
        card = addCard();
      }
    });

    // A notebook whose kernel waits for a GPU is no Idle one: the status bar
    // says so, and a cell run meanwhile is said to wait for the kernel.
    if (notebooks) {
      const waiting = new WaitingStatus(model, notebooks, trans);
      statusBar?.registerStatusItem(`${PLUGIN_ID}:waiting`, {
        item: waiting,
        align: 'left',
        rank: 3,
        isActive: () => waiting.waiting,
        activeStateChanged: model.changed
      });
      // One wait: its kernel and its deadline.
      const told = new Set<string>();
      NotebookActions.executionScheduled.connect((_, { notebook }) => {
        const panel = notebooks.find(p => p.content === notebook) ?? null;
        const ticket = waitingTicketOf(model.queue, panel);
        // Once per wait: a notebook run cell by cell says it once.
        const wait = `${ticket?.kernel_id}|${ticket?.deadline}`;
        if (!panel || !ticket || told.has(wait)) {
          return;
        }
        told.add(wait);
        Notification.info(
          cellWhileWaitingText(
            trans,
            panel.context.localPath.split('/').pop() ?? '',
            ticket
          ),
          { autoClose: 8000 }
        );
      });
    }

    // The notebook toolbar builds its items from the settings: the schema's
    // `jupyter.lab.toolbars` places this one, the registry makes it.
    toolbarRegistry?.addFactory<NotebookPanel>(
      'Notebook',
      TOOLBAR_ITEM,
      notebook => new KernelImageItem(app, model, notebook, trans)
    );

    if (settingRegistry) {
      void settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          const apply = (): void => {
            model.setIntervals(
              settings.get('gpuRefreshInterval').composite as number,
              settings.get('imageRefreshInterval').composite as number
            );
          };
          apply();
          settings.changed.connect(apply);
        })
        .catch(error => {
          console.warn(
            `GPU Containers: settings not loaded: ${messageOf(error)}`
          );
        });
    }
  }
};

export default plugin;
