/**
 * The notebook toolbar item's plugin: the item that shows and switches a
 * notebook's image and GPUs, and the same switch as a command.
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, IToolbarWidgetRegistry } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ITranslator } from '@jupyterlab/translation';

import { environmentOf } from './environment';
import { translationBundle } from './i18n';
import { switchNotebook } from './switching';
import { KernelImageItem } from './toolbar';
import { CommandIDs, IGpuContainersModel, TOOLBAR_ITEM } from './tokens';

export const toolbarPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-gpu-containers:toolbar',
  description:
    "The notebook toolbar's image and GPU item, the command that switches a notebook's image and GPUs, and each notebook's environment stamp.",
  autoStart: true,
  requires: [IGpuContainersModel],
  optional: [
    ICommandPalette,
    INotebookTracker,
    IToolbarWidgetRegistry,
    ITranslator
  ],
  activate: (
    app: JupyterFrontEnd,
    model: IGpuContainersModel,
    palette: ICommandPalette | null,
    notebooks: INotebookTracker | null,
    toolbarRegistry: IToolbarWidgetRegistry | null,
    translator: ITranslator | null
  ): void => {
    const trans = translationBundle(translator);
    const currentNotebook = (): NotebookPanel | null => {
      const widget = notebooks?.currentWidget ?? null;
      return widget && widget === app.shell.currentWidget ? widget : null;
    };
    app.commands.addCommand(CommandIDs.switchImage, {
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
    palette?.addItem({
      command: CommandIDs.switchImage,
      category: trans.__('GPU Containers')
    });
    // The notebook toolbar builds its items from the settings: the schema's
    // `jupyter.lab.toolbars` places this one, the registry makes it.
    toolbarRegistry?.addFactory<NotebookPanel>(
      'Notebook',
      TOOLBAR_ITEM,
      notebook => new KernelImageItem(app, model, notebook, trans)
    );
    // Each notebook records what its kernel runs on, and asks when its image's
    // tag moved (environment.ts), toolbar item or not.
    notebooks?.widgetAdded.connect((_, panel) => {
      environmentOf(panel, model, trans);
    });
  }
};
