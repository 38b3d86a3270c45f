/**
 * The build plugin: "Build Image…" on a Dockerfile or a requirements.txt of
 * the workspace (the file browser's context menu, or the command with a
 * `path`), its form, and a tab per build that follows it to its end. A build
 * already under way for the same file (a page reloaded meanwhile) is followed
 * again instead of started twice.
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  ICommandPalette,
  MainAreaWidget,
  showErrorMessage
} from '@jupyterlab/apputils';
import { PathExt } from '@jupyterlab/coreutils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ITranslator, TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { getImages, getSaves, messageOf, startBuild } from './api';
import { BuildModel, recipeKind } from './buildmodel';
import { BuildForm, BuildViewWidget, IBuildForm } from './buildview';
import { FormDialogBody, showFormDialog } from './dialogs';
import { translationBundle } from './i18n';
import { gpuContainersIcon } from './icon';
import { ISave, saveActive } from './savetypes';
import { CommandIDs } from './tokens';

/**
 * The images a requirements.txt can be installed into: those here that the
 * user may start kernels on, the kernel-ready first.
 */
async function basesHere(
  app: JupyterFrontEnd,
  trans: TranslationBundle
): Promise<string[]> {
  const catalog = await getImages(app.serviceManager.serverSettings, trans);
  return catalog.images
    .filter(row => row.pulled && row.allowed && row.retired === null)
    .sort(
      (a, b) =>
        Number(b.kernel_ready === true) - Number(a.kernel_ready === true)
    )
    .map(row => row.reference);
}

class BuildFormBody extends FormDialogBody<IBuildForm, IBuildForm> {
  constructor(
    recipe: string,
    bases: string[] | null,
    trans: TranslationBundle
  ) {
    super({
      className: 'jgc-build-dialog',
      initial: { name: '', base: bases?.[0] ?? '' },
      render: props => (
        <BuildForm
          {...props}
          recipe={recipe}
          requirements={bases !== null}
          bases={bases ?? []}
          trans={trans}
        />
      ),
      value: state => ({ name: state.name.trim(), base: state.base })
    });
  }
}

export const buildPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-gpu-containers:build',
  description:
    'Build an image of your own from a Dockerfile or a requirements.txt of your workspace.',
  autoStart: true,
  optional: [IDefaultFileBrowser, ICommandPalette, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    browser: IDefaultFileBrowser | null,
    palette: ICommandPalette | null,
    translator: ITranslator | null
  ): void => {
    const trans = translationBundle(translator);
    const settings = app.serviceManager.serverSettings;
    const tabs = new Map<string, MainAreaWidget<BuildViewWidget>>();

    // The file the command is about: its `path`, or the one selected in the file browser.
    const pathOf = (args: Record<string, unknown>): string => {
      const given = args['path'];
      if (typeof given === 'string' && given !== '') {
        return given;
      }
      const selected = browser ? Array.from(browser.selectedItems()) : [];
      return selected.length === 1 && selected[0].type !== 'directory'
        ? selected[0].path
        : '';
    };

    const follow = (build: ISave): void => {
      let tab = tabs.get(build.id);
      if (!tab || tab.isDisposed) {
        const model = new BuildModel({
          build,
          serverSettings: settings,
          trans,
          // The new image is a new kernel spec: the Launcher shows it at once.
          onDone: () => void app.serviceManager.kernelspecs.refreshSpecs()
        });
        const created = new MainAreaWidget({
          content: new BuildViewWidget(model, trans)
        });
        created.id = `jgc-build-${build.id}`;
        created.title.label = trans.__(
          'Build of %1',
          PathExt.basename(build.recipe)
        );
        created.title.caption = build.recipe;
        created.title.icon = gpuContainersIcon;
        created.title.closable = true;
        tabs.set(build.id, created);
        created.disposed.connect(() => tabs.delete(build.id));
        app.shell.add(created, 'main', { mode: 'split-right' });
        tab = created;
      }
      app.shell.activateById(tab.id);
    };

    const failed = (error: unknown): void => {
      void showErrorMessage(
        trans.__('Cannot Build the Image'),
        messageOf(error)
      );
    };

    app.commands.addCommand(CommandIDs.buildImage, {
      label: trans.__('Build Image…'),
      caption: trans.__(
        'Build an image of your own from this Dockerfile or requirements.txt'
      ),
      icon: args => (args['isPalette'] ? undefined : gpuContainersIcon),
      isVisible: args => recipeKind(PathExt.basename(pathOf(args))) !== '',
      execute: async args => {
        const path = pathOf(args);
        const kind = recipeKind(PathExt.basename(path));
        if (!kind) {
          return;
        }
        try {
          const known = await getSaves(settings, trans);
          const underway = known.saves.find(
            s => s.kind === 'build' && s.recipe === path && saveActive(s)
          );
          if (underway) {
            follow(underway);
            return;
          }
          if (known.build_refusal) {
            failed(new Error(known.build_refusal));
            return;
          }
          const bases =
            kind === 'requirements' ? await basesHere(app, trans) : null;
          const form = await showFormDialog({
            title: trans.__('Build an Image from %1', PathExt.basename(path)),
            body: new BuildFormBody(path, bases, trans),
            accept: trans.__('Build'),
            focusNodeSelector: '.jgc-build-name'
          });
          if (!form) {
            return;
          }
          follow(await startBuild(path, form.name, form.base, settings, trans));
        } catch (error) {
          failed(error);
        }
      }
    });

    // In the palette it builds the file selected in the file browser.
    palette?.addItem({
      command: CommandIDs.buildImage,
      category: trans.__('GPU Containers')
    });
    app.contextMenu.addItem({
      command: CommandIDs.buildImage,
      selector: '.jp-DirListing-item[data-isdir="false"]',
      rank: 12
    });
  }
};
