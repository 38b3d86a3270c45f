/**
 * The panel's plugin: the GPU Containers panel in the left area, its
 * commands (open it, refresh) and its Launcher card, and what the panel's
 * buttons do (launch, pull, cancel, open, remove a saved image).
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import {
  ITranslator,
  TranslationBundle,
  nullTranslator
} from '@jupyterlab/translation';
import type { IDisposable } from '@lumino/disposable';

import { messageOf, removeSavedImage } from './api';
import { askRegistryLogin } from './credentials';
import { confirmDialog } from './dialogs';
import { translationBundle } from './i18n';
import { gpuContainersIcon } from './icon';
import { IImageRow } from './imagetypes';
import { tendLauncherCards } from './launcherlabels';
import { notify } from './notify';
import { GpuContainersPanel, IPanelActions } from './panel';
import { engineProblem } from './status';
import { launchNotebook } from './switching';
import { CommandIDs, IGpuContainersModel } from './tokens';

/**
 * Pull an image and say how it ended; when the registry refuses the login,
 * ask for one and try again.
 */
async function pullImage(
  model: IGpuContainersModel,
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
 * Remove one of the user's saved images, once they said so.
 */
async function removeSaved(
  app: JupyterFrontEnd,
  model: IGpuContainersModel,
  row: IImageRow,
  trans: TranslationBundle
): Promise<void> {
  const confirmed = await confirmDialog({
    title: trans.__('Remove your saved image?'),
    body: trans.__(
      '%1 is removed from this host. Notebooks on it can move to another image. Shut down the kernels running on it first: it is kept while one runs.',
      row.reference
    ),
    action: trans.__('Remove')
  });
  if (!confirmed) {
    return;
  }
  try {
    await removeSavedImage(
      row.reference,
      app.serviceManager.serverSettings,
      trans
    );
    Notification.success(trans.__('%1 is removed.', row.reference), {
      autoClose: 5000
    });
  } catch (error) {
    notify(
      trans,
      'error',
      messageOf(error),
      trans.__('Remove %1', row.reference)
    );
  }
  await model.refreshImages();
  void app.serviceManager.kernelspecs.refreshSpecs();
}

/**
 * What the panel's buttons do.
 */
function panelActions(
  app: JupyterFrontEnd,
  model: IGpuContainersModel,
  browser: IDefaultFileBrowser | null,
  trans: TranslationBundle
): IPanelActions {
  return {
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
    removeSaved: row => removeSaved(app, model, row, trans),
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
}

/**
 * The panel's command and Launcher card, whose label says when there is no
 * engine.
 */
function addOpenCommand(
  app: JupyterFrontEnd,
  model: IGpuContainersModel,
  panel: GpuContainersPanel,
  launcher: ILauncher | null,
  translator: ITranslator | null,
  trans: TranslationBundle
): void {
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
}

export const panelPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-gpu-containers:panel',
  description:
    'The GPU Containers panel: GPUs and who holds them, images, pulls, the GPU queue; its commands and Launcher card.',
  autoStart: true,
  requires: [IGpuContainersModel],
  optional: [
    ICommandPalette,
    IDefaultFileBrowser,
    ILauncher,
    ILayoutRestorer,
    ITranslator
  ],
  activate: (
    app: JupyterFrontEnd,
    model: IGpuContainersModel,
    palette: ICommandPalette | null,
    browser: IDefaultFileBrowser | null,
    launcher: ILauncher | null,
    restorer: ILayoutRestorer | null,
    translator: ITranslator | null
  ): void => {
    const trans = translationBundle(translator);
    tendLauncherCards(app);
    const actions = panelActions(app, model, browser, trans);
    const panel = new GpuContainersPanel(model, actions, trans);
    // A kernel this page started or ended: "Your kernels" reads again now
    // rather than at its next poll (it said "none" meanwhile).
    const readAgain = () => panel.readKernelsAgain();
    app.serviceManager.sessions.runningChanged.connect(readAgain);
    app.serviceManager.kernels.runningChanged.connect(readAgain);
    app.shell.add(panel, 'left', { rank: 650 });
    restorer?.add(panel, 'gpu-containers');
    addOpenCommand(app, model, panel, launcher, translator, trans);
    app.commands.addCommand(CommandIDs.refreshImages, {
      label: trans.__('Refresh GPU Container Images'),
      caption: trans.__('Read the image catalog and the GPUs again'),
      execute: () => model.refresh()
    });
    for (const command of [CommandIDs.openPanel, CommandIDs.refreshImages]) {
      palette?.addItem({ command, category: trans.__('GPU Containers') });
    }
  }
};
