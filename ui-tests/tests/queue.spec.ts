/**
 * Fair GPU sharing in a real browser, server and engine: on a host with one GPU, where starts
 * wait for a GPU by default (GPUQueue.wait_by_default), a notebook opened while another
 * student's kernel holds the GPU waits in the queue, the page says so (the toolbar, the panel's
 * queue section), and its kernel starts when the other kernel ends, with a notification.
 *
 * The configuration is this test's own: it rewrites the server's JSON config (one static GPU,
 * waiting on) and restarts the server, and puts the config back and restarts it again after,
 * whether the test passed or not.
 */
import * as fs from 'fs';
import * as path from 'path';

import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import type { Page } from '@playwright/test';

import {
  dismissNetworkChangeDialogs,
  kernelNameFor,
  NGC_IMAGE,
  openPanel,
  OtherStudent,
  putNotebook,
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

test.beforeEach(({ page }) => dismissNetworkChangeDialogs(page));
test.describe.configure({ mode: 'serial' });

const CONFIG = path.join(SERVER_HOME, 'config', 'jupyter_server_config.json');

/** The config start-server.sh wrote, while this test runs on its own. */
let original: string | null = null;

async function useQueueConfig(page: IJupyterLabPageFixture, stateDir: string): Promise<void> {
  original = fs.readFileSync(CONFIG, 'utf8');
  const config = JSON.parse(original);
  // The host state directory the other student's server shares (queue, allocation lock).
  config.ContainerPolicy = { ...(config.ContainerPolicy ?? {}), state_dir: stateDir };
  // One GPU: the other student's kernel takes it.
  config.GPUInventory.static_gpus = config.GPUInventory.static_gpus.slice(0, 1);
  config.GPUQueue = { ...(config.GPUQueue ?? {}), wait_by_default: true, max_wait: 600 };
  fs.writeFileSync(CONFIG, JSON.stringify(config, null, 2));
  await restartServer(page);
}

/** The notebooks this test made: removed after it, so that no restored layout reopens them. */
const made: string[] = [];

let otherStudent: OtherStudent | null = null;

/** Every session and kernel the server has, and the notebooks this test made. */
async function stopEverything(page: IJupyterLabPageFixture): Promise<void> {
  await stopAllKernels(page);
  for (const path of made) {
    await page.request.delete(`/api/contents/${path}`);
  }
}

test.afterEach(async ({ page }) => {
  await stopEverything(page);
  if (original !== null) {
    fs.writeFileSync(CONFIG, original);
    original = null;
    await restartServer(page);
    // The page comes back with its saved layout, which may reopen this test's notebook (and
    // start its kernel, on a GPU the next test file needs): stop that too.
    await stopEverything(page);
  }
  // Last: its state directory was this server's until the restart above.
  await otherStudent?.close();
  otherStudent = null;
});

function toolbarButton(page: Page) {
  return page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jgc-toolbar-button');
}

test("a queued notebook starts when another student's kernel ends", async ({ page }) => {
  const config = JSON.parse(fs.readFileSync(CONFIG, 'utf8'));
  const gpu: string = config.GPUInventory.static_gpus[0].uuid;
  const kernelName = await kernelNameFor(page.request, NGC_IMAGE);

  // Another student's kernel holds the only GPU: their own server, as their own account, on
  // the same host state directory and engine (tests/test_gpu_queue.py checks the same across
  // users' servers without a browser).
  otherStudent = new OtherStudent(gpu, kernelName);
  const stateDir: string = (await otherStudent.next()).state_dir;
  await useQueueConfig(page, stateDir);
  expect((await otherStudent.next()).kernel).toBeTruthy();

  // This student's notebook asks for one GPU in its metadata; opening it starts its kernel the
  // stock way (POST /api/sessions), which waits for the GPU.
  const queued = 'queued.ipynb';
  made.push(queued);
  await putNotebook(page.request, queued, kernelName, { gpus: 1 });
  await page.evaluate(async p => {
    await (window as any).jupyterapp.commands.execute('docmanager:open', { path: p });
  }, queued);

  // The toolbar and the panel's queue section say it waits, and where it stands.
  await expect(toolbarButton(page)).toHaveAttribute('data-waiting', 'true', { timeout: 30_000 });
  await expect(toolbarButton(page)).toContainText('Waiting for a GPU (position 1)');
  const panel = await openPanel(page);
  const ticket = panel.locator('.jgc-queue-section .jgc-ticket.jgc-mine');
  await expect(ticket).toHaveCount(1);
  await expect(ticket).toContainText('Your notebook queued.ipynb');
  await expect(ticket).toContainText('position 1 of 1');
  await expect(ticket).toContainText('waits for 1 GPU');
  await expect(ticket).toContainText(/gives up at/);
  await expect(ticket.locator('.jgc-ticket-cancel')).toBeVisible();
  await panel.screenshot({ path: test.info().outputPath('queued.png') });
  await test.info().attach('queued.png', {
    path: test.info().outputPath('queued.png'),
    contentType: 'image/png'
  });

  // A second tab opens the same notebook from the file browser while it waits, and the first
  // tab is reloaded: each shows the one wait, without a dialog or a kernel picker, and no
  // second start joins the queue (JupyterLab asks for a session under a path of its own).
  // (In a workspace of its own: JupyterLab sends a second tab of an open workspace to a new
  // one, a navigation that may come after the page's application exists.)
  const second = await page.context().newPage();
  const ownWorkspace = page.url().replace(/\/lab([/?].*)?$/, '/lab/workspaces/second-tab?reset');
  expect(ownWorkspace).toContain('/lab/workspaces/second-tab');
  await openLab(second, ownWorkspace);
  await second.evaluate(async p => {
    await (window as any).jupyterapp.commands.execute('docmanager:open', { path: p });
  }, queued);
  await expect(toolbarButton(second)).toHaveAttribute('data-waiting', 'true', { timeout: 30_000 });
  await expect(toolbarButton(second)).toContainText('Waiting for a GPU (position 1)');
  await openLab(page, page.url());
  await page.evaluate(async p => {
    await (window as any).jupyterapp.commands.execute('docmanager:open', { path: p });
  }, queued);
  await expect(toolbarButton(page)).toHaveAttribute('data-waiting', 'true', { timeout: 30_000 });
  for (const tab of [page, second]) {
    await expect(tab.locator('.jp-Dialog')).toHaveCount(0);
  }
  const queue = await (await page.request.get('/gpu-containers/queue')).json();
  expect(queue.queue).toHaveLength(1);
  await second.screenshot({ path: test.info().outputPath('second-tab-waiting.png') });

  // The other student's kernel ends: the GPU goes to the waiting notebook.
  await otherStudent.endKernel();

  await expect(
    page.locator('.Toastify__toast', {
      hasText: 'A GPU is free: the kernel of queued.ipynb started with 1 GPU.'
    })
  ).toHaveCount(1, { timeout: 60_000 });
  await expect(toolbarButton(page)).not.toHaveAttribute('data-waiting', 'true');
  await expect(page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jgc-toolbar-label')).toHaveText(
    'ngc-like:24.05-py3 · GPU 0',
    { timeout: 30_000 }
  );
  await expect(panel.locator('.jgc-queue-section')).toHaveCount(0);
  await expect
    .poll(
      () =>
        page.evaluate(
          () =>
            (window as any).jupyterapp.shell.currentWidget?.sessionContext?.kernelDisplayStatus ??
            ''
        ),
      { timeout: 30_000 }
    )
    .toBe('idle');
  // Both tabs are on the one kernel, and each runs code in it, without a reload.
  for (const tab of [page, second]) {
    await expect(toolbarButton(tab)).not.toHaveAttribute('data-waiting', 'true', {
      timeout: 30_000
    });
    await expect(tab.locator('.jp-Dialog')).toHaveCount(0);
    expect(await sixTimesSeven(tab)).toBe('42');
  }
  const sessions = await (await page.request.get('/api/sessions')).json();
  expect(sessions).toHaveLength(1);
  await second.close();
});

/** JupyterLab at `url` in `tab` (loaded again when it is that tab's own), started and restored. */
async function openLab(tab: Page, url: string): Promise<void> {
  // Not galata's goto, which takes a path under the server and waits for a Launcher.
  await Promise.all([
    tab.waitForEvent('load'),
    tab.evaluate(u => {
      window.location.href = u;
    }, url)
  ]);
  // A navigation of JupyterLab's own (a workspace URL it rewrites) may replace the page under
  // these steps: they are taken again on the new one.
  for (let attempt = 1; ; attempt++) {
    try {
      await tab.waitForFunction(() => typeof (window as any).jupyterapp === 'object');
      await tab.evaluate(async () => {
        const app = (window as any).jupyterapp;
        await app.started;
        await app.restored;
      });
      return;
    } catch (error) {
      if (attempt >= 3 || !/context was destroyed|navigat/i.test(String(error))) {
        throw error;
      }
      await tab.waitForLoadState('load');
    }
  }
}
