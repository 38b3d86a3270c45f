/**
 * A user's JupyterLab on a shared host: an account outside the docker group whose kernels live
 * behind the kernel service (`jupyter gpu-containers serve`, as root), reached with the stock
 * gateway client (ui-tests/start-service.sh). The Launcher offers the service's images, the GPU
 * Containers panel shows its GPUs (two static ones) and images, a notebook's cells run in a
 * container as the user, in the user's workspace, and the toolbar switches a notebook's image.
 * A real browser, servers, engine and images.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import type { Locator } from '@playwright/test';

import { DEBIAN_IMAGE, imageRow, kernelNameFor, NGC_IMAGE, openPanel, dismissNetworkChangeDialogs } from './helpers';

/** playwright.config.ts sets them (start-service.sh's port and home). */
const SERVICE_URL =
  process.env.UI_TEST_SERVICE_URL ??
  `http://127.0.0.1:${process.env.UI_TEST_SERVICE_PORT ?? '8890'}`;
const SERVICE_HOME = process.env.UI_TEST_SERVICE_HOME ?? '/tmp/jgc-ui-tests-8890';
const USER = process.env.JGC_TEST_OUTSIDER ?? 'jgc-outsider';
/** The user's workspace: UserDirectory.workspace_template, and their JupyterLab's root_dir. */
const WORKSPACE = path.join(SERVICE_HOME, 'ws', USER);
const USER_UID = Number(execFileSync('id', ['-u', USER], { encoding: 'utf8' }).trim());

// Kernel starts go through two servers to a container, on a machine that may have 2 cores.
const KERNEL_START_MS = 90_000;
// The service probes every local image once at its start, one after another: on a loaded machine
// a verdict can take a minute or more to come.
const PROBE_MS = 150_000;

test.use({
  baseURL: SERVICE_URL,
  autoGoto: true,
  // The extension's servers start kernels themselves, which the page must see.
  kernels: null,
  sessions: null,
  // Wide enough for the notebook toolbar to show every item, ours included, without overflow.
  viewport: { width: 1600, height: 1000 }
});

test.beforeEach(({ page }) => dismissNetworkChangeDialogs(page));
test.describe.configure({ mode: 'serial' });

/** What the probe cell prints, and the file it writes in its working directory. */
interface IProbe {
  uid: number;
  gid: number;
  host: string;
  cwd: string;
  devices: string | null;
}
const WRITTEN = 'written-by-kernel.txt';
const PROBE =
  'import os, socket, json; ' +
  `open('${WRITTEN}', 'w').write(socket.gethostname()); ` +
  'print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "host": socket.gethostname(), ' +
  '"cwd": os.getcwd(), "devices": os.environ.get("NVIDIA_VISIBLE_DEVICES")}))';

async function runProbe(page: IJupyterLabPageFixture): Promise<IProbe> {
  await page.notebook.setCell(0, 'code', PROBE);
  await page.notebook.runCell(0, true);
  const output = ((await page.notebook.getCellTextOutput(0)) ?? []).join('').trim();
  let probe: IProbe;
  try {
    probe = JSON.parse(output);
  } catch {
    throw new Error(`the probe cell printed no JSON: ${output}`);
  }
  // A container's host name: its short id.
  expect(probe.host, `cell output: ${output}`).toMatch(/^[0-9a-f]{12}$/);
  return probe;
}

function toolbar(page: IJupyterLabPageFixture): Locator {
  return page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jgc-toolbar-label');
}

async function currentPath(page: IJupyterLabPageFixture): Promise<string> {
  return page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.context.path);
}

/** Pick an image and a GPU choice in the notebook toolbar's picker, and confirm the restart. */
async function switchTo(
  page: IJupyterLabPageFixture,
  reference: string,
  gpus: string
): Promise<void> {
  const kernelName = await kernelNameFor(page.request, reference);
  await page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jgc-toolbar-button').click();
  const picker = page.locator('.jgc-picker');
  await expect(picker).toBeVisible();
  await picker.locator('.jgc-picker-image').selectOption(kernelName);
  await picker.locator('.jgc-picker-gpus').selectOption(gpus);
  await page.locator('.jp-Dialog-button.jp-mod-accept').click();
  // The kernel runs: discarding its state is confirmed first.
  await expect(page.locator('.jp-Dialog-header')).toContainText(/Switch the image|Restart/);
  await page.locator('.jp-Dialog-button.jp-mod-warn').click();
  await expect(page.locator('.jp-Dialog')).toHaveCount(0);
}

test.afterEach(async ({ page }) => {
  await page.evaluate(async () => {
    const app = (window as any).jupyterapp;
    await app.serviceManager.sessions.shutdownAll();
    app.shell.closeAll();
  });
});

test("the Launcher offers the kernel service's images", async ({ page }) => {
  const cards = page.locator('.jp-LauncherCard[data-category="Notebook"]:visible');
  const ngc = cards.filter({ hasText: 'ngc-like:24.05-py3' });
  await expect(ngc).toHaveCount(1);
  await expect(cards.filter({ hasText: 'debian-ipykernel:bookworm' })).toHaveCount(1);
  // The user's server has no kernel of its own: every spec is the service's (a container's).
  const names = await page.evaluate(async () => {
    const specs = (window as any).jupyterapp.serviceManager.kernelspecs;
    await specs.refreshSpecs();
    return Object.keys(specs.specs.kernelspecs);
  });
  expect(names.length).toBeGreaterThan(1);
  for (const name of names) {
    expect(name).toMatch(/^gpuc-/);
  }
  // The card's icon is a resource of the service's kernel spec, fetched through the user's
  // server: the PyTorch image's own logo.
  const icon = await ngc.locator('img').getAttribute('src');
  expect(icon).toMatch(/\/kernelspecs\/gpuc-[^/]+\/logo-svg\.svg/);
  const svg = await page.request.get(icon!);
  expect(svg.status()).toBe(200);
  expect(await svg.text()).toContain('PyTorch');
});

test("the panel shows the service's GPUs and images with their verdicts", async ({ page }) => {
  test.setTimeout(240_000);
  const panel = await openPanel(page);
  const gpus = panel.locator('.jgc-gpu');
  await expect(gpus).toHaveCount(2);
  await expect(gpus.nth(0)).toContainText('Tesla T4 (static)');
  await expect(panel.locator('.jgc-gpu[data-state="free"]')).toHaveCount(2);

  const ngc = imageRow(panel, NGC_IMAGE);
  await expect(ngc.locator('.jgc-verdict')).toHaveAttribute('data-outcome', 'native');
  await expect(ngc).toContainText('PyTorch 24.05');
  await expect(ngc).toContainText('Kernel-ready', { timeout: PROBE_MS });
  await expect(ngc.locator('.jgc-launch-button')).toBeEnabled();
  const debian = imageRow(panel, DEBIAN_IMAGE);
  await expect(debian.locator('.jgc-verdict')).toHaveAttribute('data-outcome', 'cpu-only');
  const broken = imageRow(panel, 'jgc-test/no-ipykernel:latest');
  await expect(broken).toContainText('Not kernel-ready', { timeout: PROBE_MS });
  await expect(broken.locator('.jgc-launch-button')).toBeDisabled();

  await panel.screenshot({ path: test.info().outputPath('service-panel.png') });
  await test.info().attach('service-panel.png', {
    path: test.info().outputPath('service-panel.png'),
    contentType: 'image/png'
  });
});

test("a notebook's cells run in a container as the user, in the user's workspace", async ({
  page
}) => {
  test.setTimeout(240_000);
  const panel = await openPanel(page);
  const ngc = imageRow(panel, NGC_IMAGE);
  await ngc.locator('.jgc-gpu-count').selectOption('count:1');
  await ngc.locator('.jgc-launch-button').click();
  await expect(toolbar(page)).toHaveText(/^ngc-like:24\.05-py3 · GPU [01]$/, {
    timeout: KERNEL_START_MS
  });
  const notebook = await currentPath(page);

  const probe = await runProbe(page);
  // The service ran the kernel as the authenticated user, never as root or as anyone else.
  expect(probe.uid).toBe(USER_UID);
  expect(probe.devices).toMatch(/^GPU-ui-[01]$/);

  // Its working directory is the notebook's, in the user's workspace: the file it wrote is
  // there on the host, and the user's.
  const written = path.join(WORKSPACE, path.dirname(notebook), WRITTEN);
  await expect.poll(() => fs.existsSync(written), { message: written }).toBe(true);
  expect(fs.readFileSync(written, 'utf8')).toBe(probe.host);
  expect(fs.statSync(written).uid).toBe(USER_UID);
  // And the user's server shows it, as any file of theirs.
  const listed = await page.request.get(`/api/contents/${path.dirname(notebook)}`);
  const names = ((await listed.json()).content as { name: string }[]).map(c => c.name);
  expect(names).toContain(WRITTEN);

  // The panel shows the GPU held, by this notebook.
  const held = panel.locator('.jgc-gpu[data-state="held"]');
  await expect(held).toHaveCount(1);
  await expect(held.locator('.jgc-mine')).toContainText(path.basename(notebook));
  await page.screenshot({ path: test.info().outputPath('service-notebook.png') });
  await test.info().attach('service-notebook.png', {
    path: test.info().outputPath('service-notebook.png'),
    contentType: 'image/png'
  });
});

test("the toolbar switches a notebook's image: its kernel restarts on the other one", async ({
  page
}) => {
  test.setTimeout(240_000);
  const panel = await openPanel(page);
  await imageRow(panel, DEBIAN_IMAGE).locator('.jgc-launch-button').click();
  await expect(toolbar(page)).toHaveText('debian-ipykernel:bookworm · No GPU', {
    timeout: KERNEL_START_MS
  });
  const notebook = await currentPath(page);
  const before = await runProbe(page);
  expect(before.uid).toBe(USER_UID);
  expect(before.devices ?? '').not.toMatch(/GPU-ui-/);

  // JupyterLab polls the kernels and sessions (every 10 s), so a switch, which takes seconds,
  // often meets a poll. Here they are polled throughout (4 times a second), so that it always
  // does: the switch must hold up against a page that looks meanwhile.
  let switching = true;
  const polls = (async () => {
    while (switching) {
      await page.request.get('/api/kernels');
      await page.request.get('/api/sessions');
      await new Promise(resolve => setTimeout(resolve, 250));
    }
  })();
  try {
    await switchTo(page, NGC_IMAGE, 'count:1');
    await expect(toolbar(page)).toHaveText(/^ngc-like:24\.05-py3 · GPU [01]$/, {
      timeout: KERNEL_START_MS
    });
  } finally {
    switching = false;
    await polls;
  }
  const after = await runProbe(page);
  // Another container, of the same user, with the GPU.
  expect(after.host).not.toBe(before.host);
  expect(after.uid).toBe(USER_UID);
  expect(after.devices).toMatch(/^GPU-ui-[01]$/);
  await expect(panel.locator('.jgc-gpu[data-state="held"]')).toHaveCount(1);

  // The notebook keeps its image and GPU request: reopened later, it comes back on them.
  await page.notebook.save();
  const kernelName = await kernelNameFor(page.request, NGC_IMAGE);
  const saved = await page.evaluate(
    async p => (await (window as any).jupyterapp.serviceManager.contents.get(p)).content.metadata,
    notebook
  );
  expect(saved.kernelspec.name).toBe(kernelName);
  expect(saved.gpu_containers.gpus).toBe(1);
  // And what it ran on, as the service's view of its kernel says (issue 31's stamp).
  expect(saved.gpu_containers.environment).toMatchObject({
    image: NGC_IMAGE,
    framework: 'PyTorch',
    gpus: ['Tesla T4 (static)']
  });
  // One kernel for it on the service: the old one is gone.
  const kernels = await page.evaluate(async () => {
    const app = (window as any).jupyterapp;
    await app.serviceManager.kernels.refreshRunning();
    return Array.from(app.serviceManager.kernels.running()).map((k: any) => k.name);
  });
  expect(kernels).toEqual([kernelName]);
});
