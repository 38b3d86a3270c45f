/**
 * The whole flow in a real browser against a real server, engine and images: the panel shows the
 * GPUs and images; a notebook opens on an image with one GPU; a cell sees its container and GPU;
 * the panel shows the GPU held; the toolbar switches the notebook to another image (and another
 * notebook to another GPU count); both come back that way after a server restart; a shutdown
 * frees the GPUs.
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import type { Locator } from '@playwright/test';

import { DEBIAN_IMAGE, imageRow, NGC_IMAGE, openPanel, restartServer, dismissNetworkChangeDialogs } from './helpers';

test.use({
  autoGoto: true,
  // galata hides the sessions and kernels a test did not start through the page from the page's
  // own listings; this extension's server starts kernels itself, which the page must see.
  kernels: null,
  sessions: null,
  // Wide enough for the notebook toolbar to show every item, ours included, without overflow.
  viewport: { width: 1600, height: 1000 }
});

test.beforeEach(({ page }) => dismissNetworkChangeDialogs(page));
test.describe.configure({ mode: 'serial' });

const PROBE =
  "import os, socket; print(socket.gethostname(), os.environ.get('NVIDIA_VISIBLE_DEVICES'))";

/** The path of the notebook in the main area's current tab. */
async function currentPath(page: IJupyterLabPageFixture): Promise<string> {
  return page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.context.path);
}

/** Run the probe cell and give its output: `<hostname> <NVIDIA_VISIBLE_DEVICES>`. */
async function runProbe(page: IJupyterLabPageFixture): Promise<[string, string]> {
  await page.notebook.setCell(0, 'code', PROBE);
  await page.notebook.runCell(0, true);
  const output = ((await page.notebook.getCellTextOutput(0)) ?? []).join('').trim();
  const [host, devices] = output.split(/\s+/);
  expect(host, `cell output: ${output}`).toMatch(/^[0-9a-f]{12}$/);
  return [host, devices];
}

function toolbar(page: IJupyterLabPageFixture): Locator {
  return page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jgc-toolbar-label');
}

/** Pick an image and a GPU choice in the toolbar's dialog, and confirm. */
async function switchTo(
  page: IJupyterLabPageFixture,
  reference: string,
  gpus: string,
  screenshot?: string
): Promise<void> {
  await page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jgc-toolbar-button').click();
  const picker = page.locator('.jgc-picker');
  await expect(picker).toBeVisible();
  const kernelName = await page
    .locator(`#jp-gpu-containers-panel .jgc-image[data-reference="${reference}"]`)
    .getAttribute('data-kernel-name');
  await picker.locator('.jgc-picker-image').selectOption(kernelName!);
  await picker.locator('.jgc-picker-gpus').selectOption(gpus);
  if (screenshot) {
    const dialog = page.locator('.jp-Dialog-content');
    await dialog.screenshot({ path: test.info().outputPath(screenshot) });
    await test.info().attach(screenshot, {
      path: test.info().outputPath(screenshot),
      contentType: 'image/png'
    });
  }
  await page.locator('.jp-Dialog-button.jp-mod-accept').click();
  if (await page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jgc-toolbar-button').getAttribute('data-image')) {
    // Discarding a running kernel's state is confirmed first.
    await expect(page.locator('.jp-Dialog-header')).toContainText(/Switch the image|Restart/);
    await page.locator('.jp-Dialog-button.jp-mod-warn').click();
  }
  await expect(page.locator('.jp-Dialog')).toHaveCount(0);
}

test('the panel lists the GPUs and the images with their verdicts', async ({ page }) => {
  const panel = await openPanel(page);
  const gpus = panel.locator('.jgc-gpu');
  await expect(gpus).toHaveCount(2);
  await expect(gpus.nth(0)).toContainText('Tesla T4 (static)');
  await expect(panel.locator('.jgc-gpu[data-state="free"]')).toHaveCount(2);

  const ngc = imageRow(panel, NGC_IMAGE);
  await expect(ngc).toBeVisible();
  await expect(ngc.locator('.jgc-verdict')).toHaveAttribute('data-outcome', 'native');
  await expect(ngc).toContainText('PyTorch 24.05');
  await expect(ngc).toContainText('Kernel-ready');
  const debian = imageRow(panel, DEBIAN_IMAGE);
  await expect(debian.locator('.jgc-verdict')).toHaveAttribute('data-outcome', 'cpu-only');
  // The image without ipykernel is listed, and says why it cannot start a kernel.
  const broken = imageRow(panel, 'jgc-test/no-ipykernel:latest');
  await expect(broken).toContainText('Not kernel-ready');
  await expect(broken.locator('.jgc-launch-button')).toBeDisabled();

  // The filter and the search narrow the list (to the images named so: test images another
  // session left or is building may be some of them).
  await panel.locator('.jgc-search-input').fill('ngc-like');
  await expect(debian).toHaveCount(0);
  await expect(ngc).toBeVisible();
  const found = await panel.locator('.jgc-image').evaluateAll(rows =>
    rows.map(row => row.getAttribute('data-reference') ?? '')
  );
  expect(found.length).toBeGreaterThan(0);
  for (const reference of found) {
    expect(reference).toContain('ngc-like');
  }
  await panel.locator('.jgc-search-input').fill('');
  await panel.locator('input[name="kernelReady"]').check();
  await expect(broken).toHaveCount(0);
  await panel.locator('input[name="kernelReady"]').uncheck();

  await panel.screenshot({ path: test.info().outputPath('panel.png') });
  await test.info().attach('panel.png', {
    path: test.info().outputPath('panel.png'),
    contentType: 'image/png'
  });
});

test('notebooks launch on an image with a GPU, switch, and come back after a restart', async ({
  page
}) => {
  const panel = await openPanel(page);

  // A notebook on the GPU image with 1 GPU, from the panel.
  const ngc = imageRow(panel, NGC_IMAGE);
  await ngc.locator('.jgc-gpu-count').selectOption('count:1');
  await ngc.locator('.jgc-launch-button').click();
  await expect(toolbar(page)).toHaveText(/^ngc-like:24\.05-py3 · GPU [01]$/);
  const switched = await currentPath(page);
  const [firstHost, firstDevices] = await runProbe(page);
  expect(firstDevices).toMatch(/^GPU-ui-[01]$/);
  await page.screenshot({ path: test.info().outputPath('notebook-on-gpu.png') });
  await test.info().attach('notebook-on-gpu.png', {
    path: test.info().outputPath('notebook-on-gpu.png'),
    contentType: 'image/png'
  });

  // The panel shows the GPU held by this notebook.
  const held = panel.locator(`.jgc-gpu[data-state="held"]`);
  await expect(held).toHaveCount(1);
  await expect(held.locator('.jgc-mine')).toContainText(switched.split('/').pop()!);
  await panel.screenshot({ path: test.info().outputPath('panel-held.png') });
  await test.info().attach('panel-held.png', {
    path: test.info().outputPath('panel-held.png'),
    contentType: 'image/png'
  });

  // Switch it to the CPU image: the toolbar and the cell output change, the GPU is freed.
  await switchTo(page, DEBIAN_IMAGE, 'count:0', 'picker.png');
  await expect(toolbar(page)).toHaveText('debian-ipykernel:bookworm · No GPU');
  const [secondHost, secondDevices] = await runProbe(page);
  expect(secondHost).not.toBe(firstHost);
  expect(secondDevices).not.toMatch(/GPU-ui-/);
  await expect(panel.locator('.jgc-gpu[data-state="free"]')).toHaveCount(2);

  // A second notebook on the GPU image, whose GPU count changes from 1 to 2 in place.
  await ngc.locator('.jgc-gpu-count').selectOption('count:1');
  await ngc.locator('.jgc-launch-button').click();
  await expect(toolbar(page)).toHaveText(/^ngc-like:24\.05-py3 · GPU [01]$/);
  const resized = await currentPath(page);
  expect(resized).not.toBe(switched);
  await switchTo(page, NGC_IMAGE, 'count:2');
  await expect(toolbar(page)).toHaveText('ngc-like:24.05-py3 · GPUs 0,1');
  const [, bothDevices] = await runProbe(page);
  expect(bothDevices.split(',').sort()).toEqual(['GPU-ui-0', 'GPU-ui-1']);
  await page.notebook.save();
  await page.notebook.activate(switched.split('/').pop()!);
  await page.notebook.save();

  // A server restart (a clean stop shuts every kernel down), then reopen both notebooks.
  await restartServer(page);
  for (const path of [switched, resized]) {
    await page.evaluate(async p => {
      await (window as any).jupyterapp.commands.execute('docmanager:open', { path: p });
    }, path);
  }
  await page.notebook.activate(switched.split('/').pop()!);
  await expect(toolbar(page)).toHaveText('debian-ipykernel:bookworm · No GPU');
  const [, afterDevices] = await runProbe(page);
  expect(afterDevices).not.toMatch(/GPU-ui-/);

  await page.notebook.activate(resized.split('/').pop()!);
  await expect(toolbar(page)).toHaveText('ngc-like:24.05-py3 · GPUs 0,1');
  const [, afterBoth] = await runProbe(page);
  expect(afterBoth.split(',').sort()).toEqual(['GPU-ui-0', 'GPU-ui-1']);
  const panelAfter = await openPanel(page);
  await expect(panelAfter.locator('.jgc-gpu[data-state="held"]')).toHaveCount(2);

  // Shutting the kernel down frees its GPUs.
  await page.evaluate(async () => {
    await (window as any).jupyterapp.shell.currentWidget.sessionContext.shutdown();
  });
  await expect(panelAfter.locator('.jgc-gpu[data-state="free"]')).toHaveCount(2);
  await expect(toolbar(page)).toHaveText('Choose an image');

  // With no kernel, the picker starts one (nothing to confirm): the page's own session, with
  // the request the server kept for the notebook.
  await switchTo(page, NGC_IMAGE, 'count:1');
  await expect(toolbar(page)).toHaveText(/^ngc-like:24\.05-py3 · GPU [01]$/);
  const [, restartedDevices] = await runProbe(page);
  expect(restartedDevices).toMatch(/^GPU-ui-[01]$/);
  const sessions = await page.evaluate(async (p: string) => {
    const app = (window as any).jupyterapp;
    await app.serviceManager.sessions.refreshRunning();
    return Array.from(app.serviceManager.sessions.running()).filter((s: any) => s.path === p)
      .length;
  }, resized);
  expect(sessions).toBe(1);
  await page.evaluate(async () => {
    await (window as any).jupyterapp.serviceManager.sessions.shutdownAll();
  });
});
