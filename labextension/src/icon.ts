import { LabIcon } from '@jupyterlab/ui-components';

/**
 * A GPU board with a container outline: the panel's tab and the Launcher card.
 */
const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M3 6h16a2 2 0 0 1 2 2v7a2 2 0 0 1-2 2H9v2H7v-2H5v2H3V6zm2 2v7h14V8H5z"/>
    <path d="M7 9.5h4v4H7zM13 9.5h4v1.5h-4zM13 12h4v1.5h-4z"/>
  </g>
</svg>`;

export const gpuContainersIcon = new LabIcon({
  name: 'jupyter-gpu-containers:icon',
  svgstr: svg
});
