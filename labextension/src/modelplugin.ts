/**
 * The model's plugin: it reports the engine's status once, makes the one
 * model every view shares (IGpuContainersModel), and applies the refresh
 * intervals of the settings. Its id is the settings' key.
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ITranslator, TranslationBundle } from '@jupyterlab/translation';

import { getStatus, messageOf } from './api';
import { translationBundle } from './i18n';
import { GpuContainersModel } from './model';
import { SpecFollower } from './specfollow';
import { describeStatus } from './status';
import { IGpuContainersModel, PLUGIN_ID } from './tokens';

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
    Notification.error(trans.__('GPU containers: %1', messageOf(error)), {
      autoClose: false
    });
  }
}

/**
 * Follow the settings' refresh intervals (seconds).
 */
function applyIntervals(
  settingRegistry: ISettingRegistry,
  model: IGpuContainersModel
): void {
  void settingRegistry
    .load(PLUGIN_ID)
    .then(settings => {
      const seconds = (key: string): number => {
        // The schema makes both numbers (read without a cast all the same).
        const value = settings.get(key).composite;
        return typeof value === 'number' ? value : Number(value);
      };
      const apply = (): void => {
        model.setIntervals(
          seconds('gpuRefreshInterval'),
          seconds('imageRefreshInterval')
        );
      };
      apply();
      settings.changed.connect(apply);
    })
    .catch(error => {
      console.warn(`GPU Containers: settings not loaded: ${messageOf(error)}`);
    });
}

export const modelPlugin: JupyterFrontEndPlugin<IGpuContainersModel> = {
  id: PLUGIN_ID,
  description:
    'Runs Jupyter kernels inside GPU framework containers: the shared state of GPUs, images, pulls and the GPU queue, and its settings.',
  autoStart: true,
  provides: IGpuContainersModel,
  optional: [ISettingRegistry, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    settingRegistry: ISettingRegistry | null,
    translator: ITranslator | null
  ): IGpuContainersModel => {
    void reportStatus(app, translationBundle(translator));
    const model = new GpuContainersModel({
      serverSettings: app.serviceManager.serverSettings,
      translator
    });
    if (settingRegistry) {
      applyIntervals(settingRegistry, model);
    }
    // A kernel spec the catalog names and the page does not know yet (a new
    // tag): the page reads the specs now, not at its next poll.
    const specs = app.serviceManager.kernelspecs;
    const follower = new SpecFollower(
      () => specs.refreshSpecs(),
      () => model.catalog,
      () => specs.specs?.kernelspecs
    );
    model.changed.connect(() => follower.follow());
    return model;
  }
};
