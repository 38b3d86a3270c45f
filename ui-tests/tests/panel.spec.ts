/**
 * The panel and the toolbar as a class uses them (issue 27): "Wait for a free GPU" among the
 * panel's new-notebook choices, the toolbar item in a split pane and after an image switch, the
 * picker after a CPU image is chosen, "Your kernels" when the panel opens, new notebooks that
 * open unmodified, and no request for the admin view from a user who is no administrator.
 *
 * A real browser, server, engine and images; the server has two static GPUs. The waiting test
 * rewrites the server's config (one GPU, held by another student's server) and restarts it, and
 * puts the config back after, whether it passed or not (as queue.spec.ts does).
 */
import * as fs from 'fs';
import * as path from 'path';

import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import type { Locator } from '@playwright/test';

import {
  DEBIAN_IMAGE,
  dismissNetworkChangeDialogs,
  imageRow,
  kernelNameFor,
  NGC_IMAGE,
  openPanel,
  OtherStudent,
  restartServer,
  SERVER_HOME,
  sixTimesSeven,
  stopAllKernels
} from './helpers';

test.use({
  autoGoto: true,
  // This extension's server starts kernels itself, which the page must see.
  kernels: null,
  sessions: null,
  viewport: { width: 1600, height: 1000 }
});
test.describe.configure({ mode: 'serial' });

const SCREENSHOTS = path.resolve(__dirname, '..', '..', 'docs', 'screenshots');
const CONFIG = path.join(SERVER_HOME, 'config', 'jupyter_server_config.json');

/** The config start-server.sh wrote, while the waiting test runs on its own. */
let original: string | null = null;

let otherStudent: OtherStudent | null = null;

/** Every session and kernel the server has, and the notebooks the panel made (those open). */
async function stopEverything(page: IJupyterLabPageFixture): Promise<void> {
  for (const p of await stopAllKernels(page)) {
    await page.request.delete(`/api/contents/${p}`);
  }
}

test.afterEach(async ({ page }) => {
  await stopEverything(page);
  if (original !== null) {
    fs.writeFileSync(CONFIG, original);
    original = null;
    await restartServer(page);
    await stopEverything(page);
  }
  await otherStudent?.close();
  otherStudent = null;
});

/** A notebook panel in the main area, by its notebook's name (markPanels). */
function notebookPanel(page: IJupyterLabPageFixture, name: string): Locator {
  return page.locator(`.jp-NotebookPanel[data-jgc-path="${name}"]`);
}

/** Mark each notebook panel with its path, so that a test can find it (its id is random). */
async function markPanels(page: IJupyterLabPageFixture): Promise<void> {
  await page.evaluate(() => {
    const app = (window as any).jupyterapp;
    for (const widget of app.shell.widgets('main')) {
      const p = (widget as any).context?.path;
      if (p) {
        (widget as any).node.dataset.jgcPath = p.split('/').pop();
      }
    }
  });
}

/** The path of the current notebook, its model's `dirty`, and its kernel's language. */
async function currentState(
  page: IJupyterLabPageFixture
): Promise<{ path: string; dirty: boolean; language: string; status: string }> {
  return page.evaluate(() => {
    const widget = (window as any).jupyterapp.shell.currentWidget;
    return {
      path: widget?.context?.path ?? '',
      dirty: widget?.context?.model?.dirty ?? true,
      language: widget?.context?.model?.getMetadata('language_info')?.name ?? '',
      status: widget?.sessionContext?.kernelDisplayStatus ?? ''
    };
  });
}

/** A toolbar item is in the toolbar itself, not in JupyterLab's overflow menu ("⋯"). */
async function inToolbar(item: Locator): Promise<boolean> {
  return item.evaluate(
    node =>
      node.closest('.jp-Toolbar-responsive-popup') === null &&
      node.closest('.jp-NotebookPanel-toolbar') !== null
  );
}

test.beforeEach(({ page }) => dismissNetworkChangeDialogs(page));

test('the panel as a student first sees it: kernels, clean notebooks, a split pane, the picker', async ({
  page
}) => {
  // Requests for the admin view, from the page as it loads again: this user is no admin.
  const admin: string[] = [];
  let statuses = 0;
  page.on('request', request => {
    const url = new URL(request.url());
    if (url.pathname.endsWith('/gpu-containers/admin')) {
      admin.push(url.pathname);
    }
    if (url.pathname.endsWith('/gpu-containers/status')) {
      statuses += 1;
    }
  });
  // The panel closed, as on a first visit; a kernel starts meanwhile (another tab, a console).
  await page.evaluate(() => (window as any).jupyterapp.shell.collapseLeft());
  await page.reload();
  await page.waitForFunction(() => typeof (window as any).jupyterapp === 'object');
  await page.evaluate(async () => {
    const app = (window as any).jupyterapp;
    await app.restored;
    app.shell.collapseLeft();
  });
  const kernelName = await kernelNameFor(page.request, NGC_IMAGE);
  const holder = await page.request.post('/api/contents', { data: { type: 'notebook' } });
  const holderPath: string = (await holder.json()).path;
  const started = await page.request.post('/gpu-containers/notebooks/kernel', {
    data: { path: holderPath, kernel_name: kernelName, gpus: 0 }
  });
  expect(started.status()).toBe(200);
  const kernelId: string = (await started.json()).session.kernel.id;

  // "Your kernels" never says none while it has not read them since the panel opened.
  await page.evaluate(() => {
    (window as any).jgcSawNone = false;
    new MutationObserver(() => {
      const section = document.querySelector('.jgc-kernels-section');
      if (section?.textContent?.includes('You have no container kernel running.')) {
        (window as any).jgcSawNone = true;
      }
    }).observe(document.body, { childList: true, subtree: true, characterData: true });
  });
  const panel = await openPanel(page);
  await expect(
    panel.locator(`.jgc-kernels-section .jgc-your-kernel-name[title="${kernelId}"]`)
  ).toHaveCount(1, { timeout: 30_000 });
  expect(await page.evaluate(() => (window as any).jgcSawNone)).toBe(false);
  await page.request.delete(`/api/contents/${holderPath}`);

  // A GPU notebook from the panel opens unmodified once its kernel runs.
  const ngc = imageRow(panel, NGC_IMAGE);
  await ngc.locator('.jgc-gpu-count').selectOption('count:1');
  await ngc.locator('.jgc-launch-button').click();
  await expect
    .poll(() => currentState(page), { timeout: 60_000 })
    .toMatchObject({ status: 'idle', language: 'python', dirty: false });
  const gpuNotebook = (await currentState(page)).path.split('/').pop()!;
  // And a CPU one beside it: the two side by side (a split pane).
  const debian = imageRow(panel, DEBIAN_IMAGE);
  await debian.locator('.jgc-launch-button').click();
  const another = async () => {
    const state = await currentState(page);
    return state.path.endsWith(gpuNotebook) ? null : state;
  };
  await expect
    .poll(another, { timeout: 60_000 })
    .toMatchObject({ status: 'idle', language: 'python', dirty: false });
  const cpuNotebook = (await currentState(page)).path.split('/').pop()!;
  await page.evaluate(name => {
    const app = (window as any).jupyterapp;
    const widgets: any[] = Array.from(app.shell.widgets('main'));
    const cpu = widgets.find(w => w.context?.path?.endsWith(name));
    const other = widgets.find(w => w !== cpu && w.context);
    app.shell.add(cpu, 'main', { mode: 'split-right', ref: other.id });
  }, cpuNotebook);
  await markPanels(page);
  const gpuPanel = notebookPanel(page, gpuNotebook);
  const cpuPanel = notebookPanel(page, cpuNotebook);
  for (const [notebook, gpus] of [
    [gpuPanel, 'GPU 0'],
    [cpuPanel, 'No GPU']
  ] as const) {
    const item = notebook.locator('.jgc-toolbar-button');
    await expect(item).toBeVisible();
    // The compact form: the GPUs, the image in its title.
    await expect(item.locator('.jgc-toolbar-compact-label')).toBeVisible();
    await expect(item.locator('.jgc-toolbar-compact-label')).toHaveText(gpus);
    await expect.poll(() => inToolbar(item)).toBe(true);
  }
  // The admin view was never asked for: the status (read twice by now) says this user is none.
  await expect.poll(() => statuses, { timeout: 30_000 }).toBeGreaterThanOrEqual(2);
  expect(admin).toEqual([]);
  await panel.evaluate(node => node.scrollTo(0, 0));
  await page.screenshot({ path: path.join(SCREENSHOTS, 'split-pane.png') });

  // The picker, on the GPU notebook: a CPU image chosen drops its GPU choice to none, and says
  // why, so the switch goes through.
  await gpuPanel.locator('.jgc-toolbar-button').click();
  const picker = page.locator('.jgc-picker');
  await expect(picker).toBeVisible();
  await expect(picker.locator('.jgc-picker-gpus')).toHaveValue('count:1');
  const debianOption = picker
    .locator('.jgc-picker-image option')
    .filter({ hasText: 'debian-ipykernel:bookworm' });
  await picker
    .locator('.jgc-picker-image')
    .selectOption((await debianOption.getAttribute('value'))!);
  await expect(picker.locator('.jgc-picker-gpus')).toHaveValue('count:0');
  await expect(picker.locator('.jgc-picker-cpu')).toHaveText(
    'This image is a CPU build: it runs without GPUs.'
  );
  // Its checkbox on the line of its words.
  const wait = picker.locator('.jgc-picker-wait');
  if ((await wait.count()) > 0) {
    const [box, words] = await Promise.all([
      wait.locator('input').boundingBox(),
      wait.boundingBox()
    ]);
    expect(box!.height).toBeGreaterThan(words!.height / 2);
  }
  await page.screenshot({ path: path.join(SCREENSHOTS, 'picker-cpu-image.png') });
  await page.locator('.jp-Dialog-button.jp-mod-accept').click();
  await expect(page.locator('.jp-Dialog-header')).toContainText(/Switch/);
  await page.locator('.jp-Dialog-button.jp-mod-warn').click();
  await expect(page.locator('.jp-Dialog')).toHaveCount(0);
  // Switched, and the item is still in the toolbar (not in "⋯"), in its compact form.
  const item = gpuPanel.locator('.jgc-toolbar-button');
  await expect(item).toHaveAttribute('data-image', DEBIAN_IMAGE, { timeout: 60_000 });
  await expect(item.locator('.jgc-toolbar-compact-label')).toHaveText('No GPU');
  await expect(item).toBeVisible();
  await expect.poll(() => inToolbar(item)).toBe(true);
  // Full width again (the other notebook closed): the full form, in the toolbar.
  await page.evaluate(name => {
    const app = (window as any).jupyterapp;
    const widgets: any[] = Array.from(app.shell.widgets('main'));
    widgets.find(w => w.context?.path?.endsWith(name))?.close();
  }, cpuNotebook);
  await expect(item.locator('.jgc-toolbar-label')).toBeVisible();
  await expect(item.locator('.jgc-toolbar-label')).toHaveText('debian-ipykernel:bookworm · No GPU');
  await expect.poll(() => inToolbar(item)).toBe(true);
});

test('with every GPU taken, the panel opens a GPU notebook that waits, and it starts by itself', async ({
  page
}) => {
  const other = await oneGpuHeldByAnother(page);

  const panel = await openPanel(page);
  const ngc = imageRow(panel, NGC_IMAGE);
  await expect(panel.locator('.jgc-gpu[data-state="held"]')).toHaveCount(1);
  // Every GPU taken: the panel offers to wait, besides a notebook without GPU.
  const waitBox = ngc.locator('.jgc-wait-checkbox');
  await expect(waitBox).toBeVisible();
  await expect(waitBox).not.toBeChecked();
  await expect(ngc.locator('.jgc-launch-button')).toHaveText('New notebook without GPU');
  await waitBox.check();
  await expect(ngc.locator('.jgc-gpu-count')).toHaveValue('count:1');
  const launch = ngc.locator('.jgc-launch-button');
  await expect(launch).toHaveText('New notebook that waits');
  await expect(launch).toBeEnabled();
  await expect(ngc.locator('.jgc-launch-waits')).toBeVisible();
  await panel.screenshot({ path: path.join(SCREENSHOTS, 'panel-wait-offer.png') });
  await launch.click();

  // The notebook is open while its kernel waits; the toolbar and the queue say where it stands.
  const toolbarButton = page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jgc-toolbar-button');
  await expect(toolbarButton).toHaveAttribute('data-waiting', 'true', { timeout: 30_000 });
  await expect(toolbarButton).toContainText('Waiting for a GPU (position 1)');
  await expect(toolbarButton).not.toHaveAttribute('data-without-gpu', 'true');
  // Open unmodified while it waits: nothing of the user's has changed.
  await expect.poll(async () => (await currentState(page)).dirty).toBe(false);
  const ticket = panel.locator('.jgc-queue-section .jgc-ticket.jgc-mine');
  await expect(ticket).toHaveCount(1);
  await expect(ticket).toContainText('position 1 of 1');
  // Its facts apart, not run together ("waits for 1 GPUwaited 9 s").
  const facts = ticket.locator('.jgc-ticket-facts > span');
  await expect(facts.nth(0)).toHaveText('waits for 1 GPU');
  await expect(facts.nth(1)).toHaveText(/^waited \d+ s$/);
  await expect(facts.nth(2)).toHaveText(/^gives up at /);
  const separators = await facts.evaluateAll(spans =>
    spans.map(span => getComputedStyle(span, '::before').content)
  );
  expect(separators.slice(1)).toEqual(['" · "', '" · "']);
  // The status bar says so too, beside JupyterLab's own kernel status (which cannot).
  const waitingStatus = page.locator('.jgc-waiting-status-text');
  await expect(waitingStatus).toHaveText('Waiting for a GPU (position 1) · waits for 1 GPU');
  // A cell run meanwhile is said to wait for the kernel, once (and runs once it starts).
  await page.evaluate(async () => {
    const app = (window as any).jupyterapp;
    app.shell.currentWidget.content.activeCell.model.sharedModel.setSource(
      "print('ran after the wait')"
    );
    // Not awaited: the cell runs once the kernel has started.
    void app.commands.execute('notebook:run-cell');
  });
  const told = page
    .locator('.Toastify__toast')
    .filter({ hasText: 'is waiting for a GPU (position 1): the cell runs once it starts' });
  await expect(told).toHaveCount(1);
  await expect(told).toBeVisible();
  await page.screenshot({ path: path.join(SCREENSHOTS, 'waiting-notebook.png') });

  // The GPU frees: the kernel starts, and the open page attaches to it by itself.
  await other.endKernel();
  await expect(toolbarButton).not.toHaveAttribute('data-waiting', 'true', { timeout: 60_000 });
  await expect(waitingStatus).toHaveCount(0);
  await expect(
    page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jgc-toolbar-label')
  ).toHaveText('ngc-like:24.05-py3 · GPU 0', { timeout: 30_000 });
  await expect
    .poll(() => currentState(page), { timeout: 60_000 })
    .toMatchObject({ status: 'idle', language: 'python' });
  // The cell run while it waited ran in the new kernel, and its output is in the notebook.
  await expect(
    page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output').first()
  ).toHaveText('ran after the wait', { timeout: 30_000 });
  // The page's own connection runs code in it (galata's notebook helpers do not survive the
  // server restart's navigation).
  expect(await sixTimesSeven(page)).toBe('42');
});

/** One GPU, held by another student's server on the same host state directory; starts do not
 * wait unless asked. Returns the other student (the afterEach closes it and the config). */
async function oneGpuHeldByAnother(page: IJupyterLabPageFixture): Promise<OtherStudent> {
  const config = JSON.parse(fs.readFileSync(CONFIG, 'utf8'));
  const gpu: string = config.GPUInventory.static_gpus[0].uuid;
  const kernelName = await kernelNameFor(page.request, NGC_IMAGE);
  otherStudent = new OtherStudent(gpu, kernelName);
  const stateDir: string = (await otherStudent.next()).state_dir;
  original = fs.readFileSync(CONFIG, 'utf8');
  config.ContainerPolicy = { ...(config.ContainerPolicy ?? {}), state_dir: stateDir };
  config.GPUInventory.static_gpus = config.GPUInventory.static_gpus.slice(0, 1);
  config.GPUQueue = { ...(config.GPUQueue ?? {}), wait_by_default: false, max_wait: 600 };
  fs.writeFileSync(CONFIG, JSON.stringify(config, null, 2));
  await restartServer(page);
  expect((await otherStudent.next()).kernel).toBeTruthy();
  return otherStudent;
}

/** Ask for 1 GPU in the current notebook's picker, waiting for it, and confirm the restart. */
async function restartWaitingForOneGpu(page: IJupyterLabPageFixture): Promise<void> {
  await page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jgc-toolbar-button').click();
  const picker = page.locator('.jgc-picker');
  await expect(picker).toBeVisible();
  await picker.locator('.jgc-picker-wait input').check();
  await picker.locator('.jgc-picker-gpus').selectOption('count:1');
  await expect(picker.locator('.jgc-picker-waits')).toBeVisible();
  await page.locator('.jp-Dialog-button.jp-mod-accept').click();
  const confirm = page.locator('.jp-Dialog-header', { hasText: 'Restart the kernel?' });
  if (await confirm.isVisible({ timeout: 5_000 }).catch(() => false)) {
    await page.locator('.jp-Dialog-button.jp-mod-warn').click();
  }
  await expect(page.locator('.jp-Dialog')).toHaveCount(0);
}

test('a restart that waits, cancelled, then waiting again: the hand-over reconnects the page', async ({
  page
}) => {
  // Two server restarts and four kernel starts, each step with its own bound: the test's own
  // bound is theirs, so that a step that hangs fails on its own words (sixTimesSeven says what
  // the page knew), not on the test's time.
  test.setTimeout(240_000);
  const other = await oneGpuHeldByAnother(page);
  // A notebook without GPU, from the panel, running.
  const panel = await openPanel(page);
  const ngc = imageRow(panel, NGC_IMAGE);
  await expect(ngc.locator('.jgc-launch-button')).toHaveText('New notebook without GPU');
  await ngc.locator('.jgc-launch-button').click();
  await expect
    .poll(() => currentState(page), { timeout: 60_000 })
    .toMatchObject({ status: 'idle', language: 'python' });
  expect(await sixTimesSeven(page)).toBe('42');

  const toolbarButton = page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jgc-toolbar-button');
  const ticket = panel.locator('.jgc-queue-section .jgc-ticket.jgc-mine');
  // Its restart on 1 GPU waits; the user cancels that wait in the panel.
  await restartWaitingForOneGpu(page);
  await expect(toolbarButton).toHaveAttribute('data-waiting', 'true', { timeout: 30_000 });
  await expect(ticket).toHaveCount(1);
  await ticket.locator('.jgc-ticket-cancel').click();
  await expect(ticket).toHaveCount(0, { timeout: 30_000 });
  await expect(toolbarButton).not.toHaveAttribute('data-waiting', 'true', { timeout: 30_000 });
  // Cancelled, said once; no error dialog for a cancel the user chose, no "started".
  await expect(page.locator('.Toastify__toast', { hasText: /cancelled/i })).toHaveCount(1, {
    timeout: 30_000
  });
  await expect(page.locator('.jp-Dialog')).toHaveCount(0);
  await expect(page.locator('.Toastify__toast', { hasText: 'A GPU is free' })).toHaveCount(0);
  // The kernel is back as it was, without GPU (the start's notification ends when it is), and
  // this page still runs code in it.
  await expect(page.locator('.Toastify__toast', { hasText: 'Starting ' })).toHaveCount(0, {
    timeout: 30_000
  });
  await expect(
    page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jgc-toolbar-label')
  ).toHaveText('ngc-like:24.05-py3 · No GPU', { timeout: 30_000 });
  await expect
    .poll(() => currentState(page), { timeout: 60_000 })
    .toMatchObject({ status: 'idle', language: 'python' });
  expect(await sixTimesSeven(page)).toBe('42');

  // Wait again; the other student's kernel ends; the page attaches to the new kernel by itself.
  await restartWaitingForOneGpu(page);
  await expect(toolbarButton).toHaveAttribute('data-waiting', 'true', { timeout: 30_000 });
  await expect(ticket).toHaveCount(1);
  await other.endKernel();
  await expect(toolbarButton).not.toHaveAttribute('data-waiting', 'true', { timeout: 60_000 });
  await expect(
    page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jgc-toolbar-label')
  ).toHaveText('ngc-like:24.05-py3 · GPU 0', { timeout: 30_000 });
  await expect
    .poll(() => currentState(page), { timeout: 60_000 })
    .toMatchObject({ status: 'idle', language: 'python' });
  expect(await sixTimesSeven(page)).toBe('42');
  await expect(page.locator('.jp-Dialog')).toHaveCount(0);
});

test('a new notebook whose first read fails for the network opens all the same', async ({
  page
}) => {
  // As a browser on the engine's host does when the kernel's container adds its interface
  // (net::ERR_NETWORK_CHANGED): the page's first read of the new notebook fails.
  let failed = 0;
  await page.route(
    url => /\/api\/contents\/.*Untitled[^/]*\.ipynb$/.test(url.pathname),
    async route => {
      const reads = route.request().method() === 'GET' && route.request().url().includes('content=1');
      if (reads && failed === 0) {
        failed += 1;
        await route.abort('internetdisconnected');
      } else {
        await route.fallback();
      }
    }
  );
  const panel = await openPanel(page);
  const ngc = imageRow(panel, NGC_IMAGE);
  await ngc.locator('.jgc-launch-button').click();
  // The notebook opens, attached to the kernel its launch started, with no error left up. The
  // launch ends (its button is back), and the notebook's tab is the current one.
  await expect(ngc.locator('.jgc-launch-button')).toBeEnabled({ timeout: 60_000 });
  await expect(page.locator('.jp-NotebookPanel')).toHaveCount(1);
  await expect
    .poll(() => currentState(page), { timeout: 60_000 })
    .toMatchObject({ status: 'idle', language: 'python', dirty: false });
  expect(failed).toBe(1);
  await expect(page.locator('.jp-Dialog')).toHaveCount(0);
  await expect(page.locator('.jp-NotebookPanel')).toHaveCount(1);
  expect(await sixTimesSeven(page)).toBe('42');
  const sessions = await (await page.request.get('/api/sessions')).json();
  expect(sessions).toHaveLength(1);
});
