/**
 * Smoke tests: the labextension loads, the image kernels reach the Launcher, a notebook runs on
 * a container kernel, and the server-restart machinery works.
 */
import * as os from 'os';

import { expect, test } from '@jupyterlab/galata';
import type { APIRequestContext } from '@playwright/test';

import { DEBIAN_IMAGE, kernelNameFor, restartServer, dismissNetworkChangeDialogs } from './helpers';

test.beforeEach(({ page }) => dismissNetworkChangeDialogs(page));

const EXTENSION = 'jupyter-gpu-containers';

const PRINT_HOST = [
  'import os, socket',
  "print('host', socket.gethostname())",
  "print('devices', os.environ.get('NVIDIA_VISIBLE_DEVICES'))"
].join('\n');

test('the labextension is loaded and its plugins are active', async ({ page }) => {
  const loaded = await page.evaluate((name: string) => {
    const data = document.getElementById('jupyter-config-data')?.textContent ?? '{}';
    const federated: { name: string }[] = JSON.parse(data).federated_extensions ?? [];
    const app = (window as any).jupyterapp;
    const plugins: string[] = app
      .listPlugins()
      .filter((id: string) => id.startsWith(`${name}:`));
    return {
      federated: federated.some(extension => extension.name === name),
      plugins,
      active: plugins.filter(id => app.isPluginActivated(id))
    };
  }, EXTENSION);
  expect(loaded.federated).toBe(true);
  expect(loaded.plugins.length).toBeGreaterThan(0);
  expect(loaded.active.length).toBeGreaterThan(0);
});

test('the Launcher offers a notebook on the PyTorch 24.05 image', async ({ page }) => {
  const card = page.locator('.jp-LauncherCard[data-category="Notebook"]', {
    hasText: 'PyTorch 24.05'
  });
  await expect(card.first()).toBeVisible();
});

test('a notebook runs on a container kernel', async ({ page, request, tmpPath }) => {
  const kernel = await kernelNameFor(request, DEBIAN_IMAGE);
  // Named by JupyterLab: a rename behind its back (createNew's name argument renames through
  // the REST API) leaves the old path in its session and workspace.
  const name = await page.notebook.createNew(undefined, { kernel });
  expect(name).toMatch(/\.ipynb$/);

  await page.notebook.setCell(0, 'code', PRINT_HOST);
  await page.notebook.runCell(0);
  const output = (await page.notebook.getCellTextOutput(0))?.join('') ?? '';
  const host = /host (\S+)/.exec(output)?.[1];
  expect(host, output).toBeTruthy();
  // Run in a container, not on this machine.
  expect(host).not.toBe(os.hostname());
  // CPU kernels get "void", so that legacy CUDA images do not default to every GPU.
  expect(output).toContain('devices void');

  const session = await sessionOf(request, `${tmpPath}/${name}`);
  expect(session.kernel.name).toBe(kernel);
  await page.kernel.shutdownAll();
  await expect
    .poll(async () => {
      const kernels: { id: string }[] = await (await request.get('/api/kernels')).json();
      return kernels.map(k => k.id);
    })
    .not.toContain(session.kernel.id);
});

test('a notebook runs again after a server restart', async ({ page, request, tmpPath }) => {
  const kernel = await kernelNameFor(request, DEBIAN_IMAGE);
  const name = await page.notebook.createNew(undefined, { kernel });
  expect(name).toMatch(/\.ipynb$/);
  await page.notebook.setCell(0, 'code', "print('before', 6 * 7)");
  await page.notebook.runCell(0);
  expect((await page.notebook.getCellTextOutput(0))?.join('')).toContain('before 42');
  expect(await page.notebook.save()).toBe(true);

  // Left open, as a user would: the reloaded page reopens it and starts its kernel again.
  await restartServer(page);

  expect(await page.notebook.activate(name!)).toBe(true);
  await page.notebook.setCell(0, 'code', "print('after', 6 * 7)");
  await page.notebook.runCell(0);
  expect((await page.notebook.getCellTextOutput(0))?.join('')).toContain('after 42');
  const session = await sessionOf(request, `${tmpPath}/${name}`);
  expect(session.kernel.name).toBe(kernel);
});

async function sessionOf(
  request: APIRequestContext,
  path: string
): Promise<{ kernel: { id: string; name: string } }> {
  let found: any = undefined;
  await expect
    .poll(async () => {
      const sessions: any[] = await (await request.get('/api/sessions')).json();
      found = sessions.find(session => session.path === path);
      return found !== undefined;
    })
    .toBe(true);
  return found;
}
