/**
 * The kernel view's plugin: a kernel's own view (its container log, start,
 * image, mounts and GPU use) in a main-area tab per kernel, following its log
 * until closed. It reads the server itself and needs no shared model.
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget } from '@jupyterlab/apputils';
import { PathExt } from '@jupyterlab/coreutils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ITranslator, TranslationBundle } from '@jupyterlab/translation';

import { translationBundle } from './i18n';
import { gpuContainersIcon } from './icon';
import { KernelViewWidget } from './kernelview';
import { KernelViewModel } from './kernelviewmodel';
import { CommandIDs } from './tokens';

/**
 * A new tab of `kernelId`'s view, named after its notebook when one is open.
 */
function kernelViewTab(
  app: JupyterFrontEnd,
  kernelId: string,
  notebooks: INotebookTracker | null,
  trans: TranslationBundle
): MainAreaWidget<KernelViewWidget> {
  const content = new KernelViewWidget(
    new KernelViewModel({
      kernelId,
      serverSettings: app.serviceManager.serverSettings,
      trans,
      // A saved image is a new kernel spec: the Launcher shows it at once.
      onSaved: () => void app.serviceManager.kernelspecs.refreshSpecs()
    }),
    trans
  );
  const widget = new MainAreaWidget({ content });
  widget.id = `jgc-kernel-view-${kernelId}`;
  widget.title.label = trans.__('Kernel %1', kernelId.slice(0, 8));
  widget.title.icon = gpuContainersIcon;
  widget.title.closable = true;
  const path = notebooks?.find(
    panel => panel.sessionContext.session?.kernel?.id === kernelId
  )?.context.path;
  if (path) {
    widget.title.label = trans.__('Kernel of %1', PathExt.basename(path));
  }
  return widget;
}

export const kernelViewPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-gpu-containers:kernel-view',
  description:
    "A kernel's own view: its container log, start, image, mounts and GPU use.",
  autoStart: true,
  optional: [ICommandPalette, INotebookTracker, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    notebooks: INotebookTracker | null,
    translator: ITranslator | null
  ): void => {
    const trans = translationBundle(translator);
    const kernelViews = new Map<string, MainAreaWidget<KernelViewWidget>>();
    // Without a kernel id: the current notebook's kernel.
    const kernelOf = (args: Record<string, unknown>): string => {
      const given = args['kernelId'];
      if (typeof given === 'string' && given !== '') {
        return given;
      }
      return notebooks?.currentWidget?.sessionContext.session?.kernel?.id ?? '';
    };
    app.commands.addCommand(CommandIDs.openKernelView, {
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
          const tab = kernelViewTab(app, kernelId, notebooks, trans);
          kernelViews.set(kernelId, tab);
          tab.disposed.connect(() => kernelViews.delete(kernelId));
          app.shell.add(tab, 'main', { mode: 'split-right' });
          widget = tab;
        }
        app.shell.activateById(widget.id);
      }
    });
    palette?.addItem({
      command: CommandIDs.openKernelView,
      category: trans.__('GPU Containers')
    });
  }
};
