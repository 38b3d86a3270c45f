import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';

import { getStatus } from './api';
import { describeStatus } from './status';

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
 * The jupyter-gpu-containers front end: reports the container engine's status.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-gpu-containers:plugin',
  description:
    'Runs Jupyter kernels inside Docker containers; reports the container engine status.',
  autoStart: true,
  activate: (app: JupyterFrontEnd): void => {
    void reportStatus(app);
  }
};

export default plugin;
