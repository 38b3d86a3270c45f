import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  ICommandPalette,
  IToolbarWidgetRegistry,
  Notification
} from '@jupyterlab/apputils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import type { IDisposable } from '@lumino/disposable';

import { getStatus } from './api';
import { askRegistryLogin } from './credentials';
import { engineProblem } from './format';
import { gpuContainersIcon } from './icon';
import { GpuContainersModel, messageOf } from './model';
import { GpuContainersPanel, IPanelActions } from './panel';
import { describeStatus } from './status';
import { launchNotebook, switchNotebook } from './switching';
import { KernelImageItem } from './toolbar';
import { IImageRow } from './types';

/**
 * The plugin's id, also the key of its settings.
 */
export const PLUGIN_ID = 'jupyter-gpu-containers:plugin';

/**
 * The name of the notebook toolbar item, in the toolbar registry and in the
 * `jupyter.lab.toolbars` definition of the plugin's settings schema (where
 * its rank puts it after the kernel name). Users hide or move it in the
 * Notebook Panel settings, as any toolbar item.
 */
export const TOOLBAR_ITEM = 'gpuContainers';

/**
 * Command ids.
 */
export namespace CommandIDs {
  export const openPanel = 'gpu-containers:open-panel';
  export const switchImage = 'gpu-containers:switch-image';
  export const refreshImages = 'gpu-containers:refresh-images';
}

/**
 * Ask the server for the container engine's status and tell people when the
 * engine cannot be used. Never rejects.
 */
async function reportStatus(app: JupyterFrontEnd): Promise<void> {
  try {
    const status = await getStatus(app.serviceManager.serverSettings);
    const { level, text } = describeStatus(status);
    if (level === 'warning') {
      Notification.warning(text, { autoClose: false });
    } else {
      console.log(text);
    }
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    Notification.error(`GPU containers: ${message}`, { autoClose: false });
  }
}

/**
 * Pull an image and say how it ended; when the registry refuses the login,
 * ask for one and try again.
 */
async function pullImage(
  model: GpuContainersModel,
  row: IImageRow
): Promise<void> {
  try {
    let final = await model.pull(row.reference);
    // 403: the registry refused the login (or none was given).
    while (final.state === 'error' && final.error_status === 403) {
      const login = await askRegistryLogin(row.registry, final.message);
      if (!login) {
        return;
      }
      final = await model.pull(row.reference, login);
    }
    if (final.state === 'error') {
      Notification.error(`Pull of ${row.reference} failed: ${final.message}`, {
        autoClose: false
      });
    } else if (final.state === 'done') {
      Notification.success(`${row.reference} is pulled.`, { autoClose: 5000 });
    }
  } catch (error) {
    Notification.error(messageOf(error), { autoClose: false });
  }
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
    IToolbarWidgetRegistry
  ],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    browser: IDefaultFileBrowser | null,
    launcher: ILauncher | null,
    restorer: ILayoutRestorer | null,
    notebooks: INotebookTracker | null,
    settingRegistry: ISettingRegistry | null,
    toolbarRegistry: IToolbarWidgetRegistry | null
  ): void => {
    void reportStatus(app);
    const model = new GpuContainersModel({
      serverSettings: app.serviceManager.serverSettings
    });

    const actions: IPanelActions = {
      launch: (row, gpus) =>
        launchNotebook(app, model, row, gpus, browser?.model.path ?? ''),
      pull: row => pullImage(model, row),
      cancel: async row => {
        try {
          await model.cancel(row.reference);
        } catch (error) {
          Notification.error(messageOf(error), { autoClose: false });
        }
      },
      openNotebook: path => {
        void app.commands.execute('docmanager:open', { path });
      }
    };
    const panel = new GpuContainersPanel(model, actions);
    app.shell.add(panel, 'left', { rank: 650 });
    restorer?.add(panel, 'gpu-containers');

    const { commands } = app;
    commands.addCommand(CommandIDs.openPanel, {
      label: () =>
        engineProblem(model.status)
          ? 'GPU Containers (no Docker engine)'
          : 'GPU Containers',
      caption: 'Show the GPUs, who holds them, and the container images',
      icon: args => (args['isPalette'] ? undefined : gpuContainersIcon),
      execute: () => app.shell.activateById(panel.id)
    });
    const currentNotebook = (): NotebookPanel | null => {
      const widget = notebooks?.currentWidget ?? null;
      return widget && widget === app.shell.currentWidget ? widget : null;
    };
    commands.addCommand(CommandIDs.switchImage, {
      label: 'Switch Notebook Image and GPUs…',
      caption: "Restart this notebook's kernel on another image or GPU count",
      isEnabled: () => currentNotebook() !== null,
      execute: async () => {
        const current = currentNotebook();
        if (current) {
          await switchNotebook(app, model, current);
        }
      }
    });
    commands.addCommand(CommandIDs.refreshImages, {
      label: 'Refresh GPU Container Images',
      caption: 'Read the image catalog and the GPUs again',
      execute: () => model.refresh()
    });
    for (const command of Object.values(CommandIDs)) {
      palette?.addItem({ command, category: 'GPU Containers' });
    }
    const addCard = (): IDisposable | null =>
      launcher?.add({
        command: CommandIDs.openPanel,
        category: 'Other',
        rank: 0
      }) ?? null;
    let card = addCard();
    // The card's label says when there is no engine: relabel it when that changes. A Launcher
    // draws a card's label once and does not follow commandChanged, and the first status often
    // arrives after a Launcher opened: the card is added again, which redraws every Launcher.
    let engineDown: boolean | null = null;
    model.changed.connect(() => {
      const down = engineProblem(model.status) !== '';
      if (down !== engineDown) {
        engineDown = down;
        commands.notifyCommandChanged(CommandIDs.openPanel);
        card?.dispose();
        card = addCard();
      }
    });

    // The notebook toolbar builds its items from the settings: the schema's
    // `jupyter.lab.toolbars` places this one, the registry makes it.
    toolbarRegistry?.addFactory<NotebookPanel>(
      'Notebook',
      TOOLBAR_ITEM,
      notebook => new KernelImageItem(app, model, notebook)
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
