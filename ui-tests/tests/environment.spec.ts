/**
 * A notebook that says what it ran on, and reopens on it (issue 31): a researcher's notebook
 * records its kernel's environment when the kernel starts; the course's tag is pushed again with
 * other content; reopened, the notebook asks which content to run, keeps its record while the
 * choice waits ("Decide Later", the toolbar's "Image changed"), and runs the recorded content
 * once chosen, pinned to it, after a reload of the page too.
 *
 * A real browser, server, engine and registry (ui-tests/moved_tag.py pushes the tag twice).
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';

import {
  DEBIAN_IMAGE,
  dismissNetworkChangeDialogs,
  imageRow,
  kernelNameFor,
  openPanel,
  putNotebook,
  savedMetadata,
  ScriptProcess,
  SERVER_HOME,
  stopAllKernels
} from './helpers';

test.use({
  autoGoto: true,
  kernels: null,
  sessions: null,
  viewport: { width: 1400, height: 900 }
});

const NOTEBOOK = 'course-stamp.ipynb';
const MARKER = "print('marker', open('/stamp-marker').read().strip())";

test.beforeEach(({ page }) => dismissNetworkChangeDialogs(page));

test.afterEach(async ({ page, tmpPath }) => {
  await stopAllKernels(page);
  await page.request.delete(`/api/contents/${tmpPath}/${NOTEBOOK}`);
});

/** The notebook's section of its saved metadata (galata opens files in the test's folder). */
async function savedSection(page: IJupyterLabPageFixture, folder: string): Promise<any> {
  return (await savedMetadata(`${folder}/${NOTEBOOK}`)).gpu_containers ?? {};
}

async function marker(page: IJupyterLabPageFixture): Promise<string> {
  await page.notebook.setCell(0, 'code', MARKER);
  await page.notebook.runCell(0);
  return (await page.notebook.getCellTextOutput(0))?.join('') ?? '';
}

/** Until the server offers the pulled image as a kernel spec (its image watcher). */
async function specFor(page: IJupyterLabPageFixture, ref: string): Promise<string> {
  let name = '';
  await expect
    .poll(
      async () => {
        name = await kernelNameFor(page.request, ref).catch(() => '');
        return name;
      },
      { timeout: 60_000 }
    )
    .not.toBe('');
  return name;
}

test("a notebook records what it ran on, and asks when its image's tag moved", async ({
  page,
  tmpPath
}, testInfo) => {
  test.setTimeout(240_000);
  const tag = new ScriptProcess('moved_tag.py', [SERVER_HOME]);
  try {
    const made = await tag.next();
    const kernel = await specFor(page, made.ref);
    // The page reads the kernel specs on a slow poll: as a reload would, it reads them now.
    await page.evaluate(() => (window as any).jupyterapp.serviceManager.kernelspecs.refreshSpecs());
    await putNotebook(page.request, `${tmpPath}/${NOTEBOOK}`, kernel);

    // Opened, its kernel starts, and the notebook records the content it runs.
    await page.notebook.open(NOTEBOOK);
    expect(await marker(page)).toContain(`marker ${made.first}`);
    const button = page.locator('.jgc-toolbar-button');
    await expect(button).toHaveAttribute('title', /This notebook last ran on/);
    await page.notebook.save();
    const first = await savedSection(page, tmpPath);
    expect(first.environment.digest).toBe(made.first_digest);
    expect(first.environment.python_version).toMatch(/^3\./);
    expect(first.image_digest).toBeUndefined();
    await page.notebook.close(true);
    await stopAllKernels(page);

    // Next term: the tag is pushed again. Reopened, the notebook asks.
    expect((await tag.send('move')).moved).toBe(true);
    await page.notebook.open(NOTEBOOK);
    const dialog = page.locator('.jp-Dialog');
    await expect(dialog).toContainText("This Notebook's Image Has Changed");
    await expect(dialog).toContainText(made.ref);
    await page.screenshot({ path: testInfo.outputPath('moved-tag-dialog.png') });
    // Later: the kernel JupyterLab started runs the new content, and the record stays.
    await dialog.getByRole('button', { name: 'Decide Later' }).click();
    await expect(dialog).toHaveCount(0);
    const changed = page.locator('.jgc-toolbar-image-changed');
    await expect(changed).toBeVisible();
    expect(await marker(page)).toContain(`marker ${made.second}`);
    await page.notebook.save();
    expect((await savedSection(page, tmpPath)).environment.digest).toBe(made.first_digest);
    await page
      .locator('.jp-NotebookPanel-toolbar')
      .screenshot({ path: testInfo.outputPath('image-changed-toolbar.png') });

    // Asked again from the toolbar: the recorded content. The notebook is pinned to it, and
    // its kernel starts again on it.
    await changed.click();
    await dialog.getByRole('button', { name: 'Run the Recorded Content' }).click();
    await expect(changed).toHaveCount(0);
    await expect(page.locator('.jgc-toolbar-pinned')).toHaveText('(pinned)');
    await expect.poll(async () => (await savedSection(page, tmpPath)).image_digest).toBe(made.first_digest);
    await expect
      .poll(async () => marker(page), { timeout: 60_000 })
      .toContain(`marker ${made.first}`);
    await page
      .locator('.jp-NotebookPanel-toolbar')
      .screenshot({ path: testInfo.outputPath('pinned-toolbar.png') });

    // A reload: the pinned notebook opens without asking, on the recorded content.
    // (Not galata's reload, which waits for a Launcher the restored layout does not have.)
    await Promise.all([
      page.waitForEvent('load'),
      page.evaluate(() => window.location.reload())
    ]);
    await page.waitForFunction(() => typeof (window as any).jupyterapp === 'object');
    await page.evaluate(async () => {
      const app = (window as any).jupyterapp;
      await app.started;
      await app.restored;
    });
    if (!(await page.notebook.isOpen(NOTEBOOK))) {
      await page.notebook.open(NOTEBOOK);
    }
    expect(await page.notebook.activate(NOTEBOOK)).toBe(true);
    await expect(page.locator('.jgc-toolbar-pinned')).toHaveText('(pinned)');
    expect(await marker(page)).toContain(`marker ${made.first}`);
    await expect(page.locator('.jp-Dialog')).toHaveCount(0);
  } finally {
    await stopAllKernels(page);
    await tag.close();
  }
});

test("a course image built again on the server: a CPU build never keeps the notebook's GPU, and the recorded content runs again", async ({
  page,
  tmpPath
}, testInfo) => {
  test.setTimeout(240_000);
  // No registry: the tag is built on this host, first as a GPU build, then as a CPU build.
  const tag = new ScriptProcess('moved_tag.py', ['--local']);
  try {
    const made = await tag.next();
    const kernel = await specFor(page, made.ref);
    await page.evaluate(() => (window as any).jupyterapp.serviceManager.kernelspecs.refreshSpecs());
    await putNotebook(page.request, `${tmpPath}/${NOTEBOOK}`, kernel, { gpus: 1 });
    await page.notebook.open(NOTEBOOK);
    expect(await marker(page)).toContain(`marker ${made.first}`);
    const label = page.locator('.jgc-toolbar-label');
    await expect(label).toHaveText(/ · GPU [01]$/, { timeout: 30_000 });
    await page.notebook.save();
    expect((await savedSection(page, tmpPath)).environment.digest).toBe(made.first_digest);
    await page.notebook.close(true);
    await stopAllKernels(page);

    // The administrator builds the tag again, a CPU build now. Reopened, the notebook asks,
    // and offers the content it ran on: the server still has it, and recorded it as the tag's.
    expect((await tag.send('move')).moved).toBe(true);
    await page.notebook.open(NOTEBOOK);
    const dialog = page.locator('.jp-Dialog');
    await expect(dialog).toContainText("This Notebook's Image Has Changed");
    await expect(dialog.getByRole('button', { name: 'Run the Recorded Content' })).toBeVisible();
    await page.screenshot({ path: testInfo.outputPath('local-moved-tag-dialog.png') });
    await dialog.getByRole('button', { name: 'Decide Later' }).click();
    // The new content, a CPU build: its kernel holds no GPU, and the toolbar says so plainly,
    // not "fewer GPUs than asked", though the notebook still asks for one.
    expect(await marker(page)).toContain(`marker ${made.second}`);
    await expect(label).toHaveText(/ · No GPU$/, { timeout: 30_000 });
    await expect(page.locator('.jgc-toolbar-short')).toHaveCount(0);
    expect((await savedSection(page, tmpPath)).gpus).toBe(1);
    await page
      .locator('.jp-NotebookPanel-toolbar')
      .screenshot({ path: testInfo.outputPath('cpu-build-toolbar.png') });

    // Back to the recorded content: pinned by the server's own words, on its GPU again.
    await page.locator('.jgc-toolbar-image-changed').click();
    await dialog.getByRole('button', { name: 'Run the Recorded Content' }).click();
    await expect(page.locator('.jgc-toolbar-pinned')).toHaveText('(pinned)');
    await expect
      .poll(async () => (await savedSection(page, tmpPath)).image_digest)
      .toBe(`${made.ref.split(':')[0]}@${made.first_digest}`);
    await expect
      .poll(async () => marker(page), { timeout: 60_000 })
      .toContain(`marker ${made.first}`);
    await expect(label).toHaveText(/ · GPU [01]$/, { timeout: 30_000 });
    await expect(page.locator('.jp-Dialog')).toHaveCount(0);
  } finally {
    await stopAllKernels(page);
    await tag.close();
  }
});

const RETIRED = 'jgc/ui-retired:2024'; // ui-tests/server_config.py retires it
const RETIRED_MESSAGE = 'The course moved to the bookworm image in March.';
const RETIRED_NOTEBOOK = 'course-retired.ipynb';
const GONE_NOTEBOOK = 'course-gone.ipynb';

test("a retired image: hidden in the Launcher, and its notebooks move to the redirect at the reader's word", async ({
  page,
  tmpPath
}, testInfo) => {
  test.setTimeout(240_000);
  const retired = new ScriptProcess('retired_image.py');
  try {
    expect((await retired.next()).ref).toBe(RETIRED);
    const oldKernel = await specFor(page, RETIRED);
    const newKernel = await kernelNameFor(page.request, DEBIAN_IMAGE);
    await page.evaluate(() => (window as any).jupyterapp.serviceManager.kernelspecs.refreshSpecs());

    // The Launcher offers the redirect, not the retired image (its spec stays: see below).
    await page.evaluate(async () => {
      await (window as any).jupyterapp.commands.execute('launcher:create');
    });
    // (The page's first Launcher is behind this one: the cards of this one, which shows.)
    const launcher = page.locator('.jp-Launcher:visible');
    const cards = launcher.locator('.jp-LauncherCard[data-category="Notebook"]');
    await expect(cards.filter({ hasText: 'debian-ipykernel' })).toBeVisible();
    await expect(cards.filter({ hasText: 'ui-retired' })).toHaveCount(1);
    await expect(cards.filter({ hasText: 'ui-retired' })).toBeHidden();
    await expect(
      launcher.locator('.jp-LauncherCard[data-category="Console"]').filter({ hasText: 'ui-retired' })
    ).toBeHidden();
    await page.screenshot({ path: testInfo.outputPath('retired-launcher.png') });
    // The panel says why, and what to use instead; nothing new starts there.
    // (Refreshed as a person would: the panel reads the images on a slow poll.)
    const panel = await openPanel(page);
    await panel.locator('.jgc-refresh').first().click();
    const row = imageRow(panel, RETIRED);
    await row.scrollIntoViewIfNeeded();
    await expect(row.locator('.jgc-retired')).toHaveText(
      `Retired by the administrator: ${RETIRED_MESSAGE} Use ${DEBIAN_IMAGE} instead.`
    );
    await expect(row.locator('.jgc-launch-button')).toBeDisabled();
    await row.screenshot({ path: testInfo.outputPath('retired-panel-row.png') });

    // A notebook on it opens with the message and the move; "Not Now" keeps it as it is.
    await putNotebook(page.request, `${tmpPath}/${RETIRED_NOTEBOOK}`, oldKernel);
    await page.sidebar.openTab('filebrowser');
    expect(await page.notebook.open(RETIRED_NOTEBOOK)).toBe(true);
    const dialog = page.locator('.jp-Dialog');
    await expect(dialog).toContainText("This Notebook's Image Is Retired");
    await expect(dialog).toContainText(RETIRED_MESSAGE);
    await page.screenshot({ path: testInfo.outputPath('retired-dialog.png') });
    await dialog.getByRole('button', { name: 'Not Now' }).click();
    await expect(dialog).toHaveCount(0);
    const label = page.locator('.jgc-toolbar-label');
    await expect(label).toContainText('ui-retired:2024', { timeout: 60_000 });
    const note = page.locator('.jgc-toolbar-image-retired');
    await expect(note).toHaveText('Image retired');

    // Asked again from the toolbar: moved. Its kernel runs on the redirect, and the notebook
    // records the move.
    await note.click();
    await dialog.getByRole('button', { name: `Move to ${DEBIAN_IMAGE}` }).click();
    await expect(note).toHaveCount(0);
    await expect(label).toContainText('debian-ipykernel:bookworm', { timeout: 60_000 });
    await expect
      .poll(async () => {
        const metadata = await savedMetadata(`${tmpPath}/${RETIRED_NOTEBOOK}`);
        return { kernel: metadata.kernelspec.name, moved: metadata.gpu_containers?.moved };
      })
      .toEqual({
        kernel: newKernel,
        moved: { from: RETIRED, to: DEBIAN_IMAGE, reason: 'retired', message: RETIRED_MESSAGE }
      });
    await expect(page.locator('.jgc-toolbar-button')).toHaveAttribute(
      'title',
      new RegExp(`It moved from ${RETIRED.replace(/[.:/]/g, '\\$&')}, which the administrator retired`)
    );
    await page
      .locator('.jp-NotebookPanel-toolbar')
      .screenshot({ path: testInfo.outputPath('retired-moved-toolbar.png') });
    await page.notebook.close(true);
    await stopAllKernels(page);

    // The administrator removes the image: a notebook that last ran on it is told so, with the
    // same move.
    const stamp = { image: RETIRED, digest: `sha256:${'ab'.repeat(32)}` };
    await putNotebook(page.request, `${tmpPath}/${GONE_NOTEBOOK}`, oldKernel, { environment: stamp });
    expect((await retired.send('remove')).removed).toBe(true);
    await expect
      .poll(async () => kernelNameFor(page.request, RETIRED).catch(() => ''), { timeout: 60_000 })
      .toBe('');
    await page.evaluate(() => (window as any).jupyterapp.serviceManager.kernelspecs.refreshSpecs());
    expect(await page.notebook.open(GONE_NOTEBOOK)).toBe(true);
    const gone = page.locator('.jp-Dialog', { hasText: "This Notebook's Image Is Gone" });
    await expect(gone).toBeVisible({ timeout: 30_000 });
    // One question at a time: JupyterLab's own (no kernel spec of that name) was answered by
    // this one, not left under it.
    await expect(page.locator('.jp-Dialog')).toHaveCount(1);
    await page.screenshot({ path: testInfo.outputPath('gone-dialog.png') });
    await gone.getByRole('button', { name: `Move to ${DEBIAN_IMAGE}` }).click();
    await expect(gone).toHaveCount(0);
    await expect(label).toContainText('debian-ipykernel:bookworm', { timeout: 60_000 });
    await expect(page.locator('.jp-Dialog')).toHaveCount(0);
    await expect(page.locator('.jgc-toolbar-image-retired')).toHaveCount(0);
    await page.screenshot({ path: testInfo.outputPath('gone-moved.png') });
  } finally {
    await stopAllKernels(page);
    await page.request.delete(`/api/contents/${tmpPath}/${RETIRED_NOTEBOOK}`);
    await page.request.delete(`/api/contents/${tmpPath}/${GONE_NOTEBOOK}`);
    await retired.close();
  }
});
