/**
 * The jupyter-gpu-containers front end, as JupyterLab plugins that share one
 * model through the IGpuContainersModel token: the model and its settings
 * (modelplugin.ts), the GPU Containers panel, its commands and Launcher card
 * (panelplugin.ts), the notebook toolbar item (toolbarplugin.ts), a kernel's
 * own view (kernelviewplugin.ts), builds of images from the workspace
 * (buildplugin.tsx), and the notifications and status bar item
 * (notificationsplugin.ts).
 */
import type { JupyterFrontEndPlugin } from '@jupyterlab/application';

import { buildPlugin } from './buildplugin';
import { kernelViewPlugin } from './kernelviewplugin';
import { modelPlugin } from './modelplugin';
import { notificationsPlugin } from './notificationsplugin';
import { panelPlugin } from './panelplugin';
import { toolbarPlugin } from './toolbarplugin';

export {
  CommandIDs,
  IGpuContainersModel,
  PLUGIN_ID,
  TOOLBAR_ITEM
} from './tokens';
export {
  buildPlugin,
  kernelViewPlugin,
  modelPlugin,
  notificationsPlugin,
  panelPlugin,
  toolbarPlugin
};

const plugins: JupyterFrontEndPlugin<unknown>[] = [
  modelPlugin,
  panelPlugin,
  toolbarPlugin,
  kernelViewPlugin,
  buildPlugin,
  notificationsPlugin
];

export default plugins;
