/**
 * "Your packages" as a researcher uses it (issue 31): a package installed in a notebook
 * (`%pip install` of a wheel the cell itself makes: no index, no network) still imports after the
 * kernel is restarted from the Kernel menu; the panel lists it under its image; a reset, asked and
 * confirmed in a dialog, removes it, and the kernel restarted next has the image's packages only.
 *
 * Then the environment saved as an image from the kernel's view: the save's progress and its end,
 * the view reopened after a reload still telling it, the Launcher's new card, and a new notebook
 * on the saved image that imports the package without installing it.
 *
 * A real browser, server, engine and image (the NGC-like one, whose pip installs as NGC's does).
 */
import { expect, IJupyterLabPageFixture, JupyterLabPage, test } from '@jupyterlab/galata';

import {
  dismissNetworkChangeDialogs,
  kernelNameFor,
  NGC_IMAGE,
  openPanel,
  ScriptProcess,
  stopAllKernels
} from './helpers';

test.use({
  autoGoto: true,
  // This extension's server starts kernels itself, which the page must see.
  kernels: null,
  sessions: null,
  viewport: { width: 1400, height: 900 }
});

/**
 * A script that makes a one-module wheel in /tmp (no index, no network), which the test puts in
 * the notebook's folder as a person's own file: typed into a cell, its 700 characters took more
 * than the 20 s an action may on the loaded two-core CI machine (one key press at a time).
 */
const MAKE_WHEEL = [
  'import base64, hashlib, zipfile',
  "dist = 'jgc_tiny-1.0.dist-info'",
  "files = {'jgc_tiny.py': 'VERSION = \"1.0\"\\n', dist + '/METADATA': 'Metadata-Version: 2.1\\nName: jgc_tiny\\nVersion: 1.0\\n', dist + '/WHEEL': 'Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n'}",
  "digest = lambda text: base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()",
  "files[dist + '/RECORD'] = ''.join('%s,sha256=%s,%d\\n' % (n, digest(t), len(t)) for n, t in files.items()) + dist + '/RECORD,,\\n'",
  "with zipfile.ZipFile('/tmp/jgc_tiny-1.0-py3-none-any.whl', 'w') as wheel:",
  '    for n, t in files.items():',
  '        wheel.writestr(n, t)',
  ''
].join('\n');

/** The cell that makes the wheel and installs it as a notebook does. */
const INSTALL = [
  '%run make_tiny_wheel.py',
  '%pip install --no-index --disable-pip-version-check /tmp/jgc_tiny-1.0-py3-none-any.whl'
].join('\n');

/** Put the wheel's script beside the notebooks, as a file of the user's own. */
async function putWheelScript(page: IJupyterLabPageFixture, tmpPath: string): Promise<void> {
  expect(await page.contents.uploadContent(MAKE_WHEEL, 'text', `${tmpPath}/make_tiny_wheel.py`)).toBe(
    true
  );
}

const IMPORT =
  "import importlib.util; print('kept', __import__('jgc_tiny').VERSION) if importlib.util.find_spec('jgc_tiny') else print('absent')";

/** Restart the notebook's kernel as a user does: the Kernel menu, then the dialog's Restart. */
async function restartKernel(page: IJupyterLabPageFixture): Promise<void> {
  await page.menu.clickMenuItem('Kernel>Restart Kernel…');
  const dialog = page.locator('.jp-Dialog');
  await expect(dialog).toContainText('Restart');
  await dialog.locator('.jp-Dialog-button.jp-mod-accept').click();
  await expect(dialog).toHaveCount(0);
}

async function runImport(page: IJupyterLabPageFixture): Promise<string> {
  await page.notebook.setCell(0, 'code', IMPORT);
  await page.notebook.runCell(0);
  return (await page.notebook.getCellTextOutput(0))?.join('') ?? '';
}

test.beforeEach(({ page }) => dismissNetworkChangeDialogs(page));

test.afterEach(async ({ page }) => {
  for (const p of await stopAllKernels(page)) {
    await page.request.delete(`/api/contents/${p}`);
  }
});

test('a package installed in a notebook is kept for its image, listed, and reset', async ({
  page,
  request,
  tmpPath
}, testInfo) => {
  await putWheelScript(page, tmpPath);
  const kernel = await kernelNameFor(request, NGC_IMAGE);
  const name = await page.notebook.createNew(undefined, { kernel });
  expect(name).toMatch(/\.ipynb$/);
  await page.notebook.setCell(0, 'code', INSTALL);
  await page.notebook.runCell(0);
  const installed = (await page.notebook.getCellTextOutput(0))?.join('') ?? '';
  expect(installed).toMatch(/Successfully installed jgc[-_]tiny-1\.0/);

  await restartKernel(page);
  expect(await runImport(page)).toContain('kept 1.0');

  const panel = await openPanel(page);
  const section = panel.locator('.jgc-packages-section');
  const row = section.locator('.jgc-package-folder', { hasText: 'ngc-like:24.05-py3' });
  await expect(row).toContainText('1 package');
  await section.screenshot({ path: testInfo.outputPath('your-packages.png') });

  // A reset is asked first; cancelled, nothing goes.
  await row.locator('.jgc-package-reset').click();
  const dialog = page.locator('.jp-Dialog');
  await expect(dialog).toContainText('Reset your packages for ngc-like:24.05-py3?');
  await page.screenshot({ path: testInfo.outputPath('reset-dialog.png') });
  await dialog.locator('.jp-Dialog-button.jp-mod-reject').click();
  await expect(row).toContainText('1 package');

  await row.locator('.jgc-package-reset').click();
  await dialog.locator('.jp-Dialog-button.jp-mod-warn').click();
  await expect(row).toHaveCount(0);

  // The running kernel keeps what it imported; the next one has the image's packages only.
  expect(await page.notebook.activate(name!)).toBe(true);
  await restartKernel(page);
  expect(await runImport(page)).toContain('absent');
});

test("a kernel's environment saved as an image starts new notebooks with its packages", async ({
  page,
  request,
  tmpPath
}, testInfo) => {
  test.setTimeout(300_000);
  await putWheelScript(page, tmpPath);
  const saved = new ScriptProcess('saved_images.py');
  try {
    expect((await saved.next()).ready).toBe(true);
    const kernel = await kernelNameFor(request, NGC_IMAGE);
    await page.notebook.createNew(undefined, { kernel });
    const notebook = page.locator('.jp-NotebookPanel:not(.lm-mod-hidden)');
    await page.notebook.setCell(0, 'code', INSTALL);
    await page.notebook.runCell(0);
    expect((await page.notebook.getCellTextOutput(0))?.join('') ?? '').toMatch(
      /Successfully installed jgc[-_]tiny-1\.0/
    );

    // The kernel's view: a name typed, the save started, its progress, its end.
    await notebook.locator('.jgc-toolbar-kernel-view').click();
    const view = page.locator('.jgc-kernel-view-widget:not(.lm-mod-hidden)');
    const section = view.locator('.jgc-kernel-save-section');
    await section.scrollIntoViewIfNeeded();
    await expect(section.locator('.jgc-save-start')).toBeEnabled({ timeout: 30_000 });
    await section.locator('.jgc-save-name').fill('ui-tiny');
    await section.locator('.jgc-save-start').click();
    const state = section.locator('.jgc-save-state');
    await expect(state).toContainText(
      /Saved as localhost\/jupyter-gpu-containers\/saved\/u\d+\/ui-tiny:\d{8}-\d{6}\./,
      { timeout: 180_000 }
    );
    await section.screenshot({ path: testInfo.outputPath('saved-as-image.png') });
    const image = ((await state.textContent()) ?? '').match(/Saved as (\S+?)\. /)![1];

    // Reloaded, the view reopened says it still (the server's record of the user's saves).
    // (Without galata's readiness wait, which looks for a Launcher the restored layout lacks.)
    await (page as unknown as JupyterLabPage).reload({ waitForIsReady: false });
    await page.waitForSelector('.jp-NotebookPanel .jgc-toolbar-kernel-view');
    await page
      .locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jgc-toolbar-kernel-view')
      .click();
    await expect(
      page.locator('.jgc-kernel-view-widget:not(.lm-mod-hidden) .jgc-save-state')
    ).toContainText(`Saved as ${image}.`, { timeout: 30_000 });

    // The Launcher offers it; a new notebook on it imports the package from the image.
    await page.evaluate(async () => {
      await (window as any).jupyterapp.commands.execute('launcher:create');
    });
    const launcher = page.locator('.jp-Launcher:visible');
    await expect(
      launcher
        .locator('.jp-LauncherCard[data-category="Notebook"]')
        .filter({ hasText: 'ui-tiny' })
    ).toBeVisible({ timeout: 60_000 });
    await page.screenshot({ path: testInfo.outputPath('saved-image-launcher.png') });
    const savedKernel = await kernelNameFor(request, image);
    await page.notebook.createNew(undefined, { kernel: savedKernel });
    await page.notebook.setCell(
      0,
      'code',
      "import jgc_tiny; print('from', jgc_tiny.__file__)"
    );
    await page.notebook.runCell(0);
    expect((await page.notebook.getCellTextOutput(0))?.join('') ?? '').toContain(
      'from /opt/jupyter-gpu-containers/saved-packages/lib/python3'
    );

    // The panel marks it as the user's own, and what it was saved from.
    const panel = await openPanel(page);
    await panel.locator('.jgc-refresh').first().click();
    await expect(
      panel.locator(`.jgc-image[data-reference="${image}"] .jgc-saved-from`)
    ).toHaveText(`Your own image, saved from ${NGC_IMAGE} with your packages for it.`, {
      timeout: 60_000
    });

    // Removed from the panel, after a confirmation: refused while a kernel runs on it (said in
    // a notification), done once its kernels are shut down.
    const row = panel.locator(`.jgc-image[data-reference="${image}"]`);
    const removeIt = async (): Promise<void> => {
      await row.locator('.jgc-remove-saved').click();
      const dialog = page.locator('.jp-Dialog');
      await expect(dialog).toContainText('Remove your saved image?');
      await dialog.locator('.jp-Dialog-button.jp-mod-warn').click();
    };
    await removeIt();
    await expect(page.getByText(/is in use by a kernel/).first()).toBeVisible();
    await page.screenshot({ path: testInfo.outputPath('saved-image-in-use.png') });
    for (const kernel of (await (await page.request.get('/api/kernels')).json()) as {
      id: string;
    }[]) {
      await page.request.delete(`/api/kernels/${kernel.id}`);
    }
    await removeIt();
    await expect(row).toHaveCount(0, { timeout: 60_000 });
  } finally {
    for (const p of await stopAllKernels(page)) {
      await page.request.delete(`/api/contents/${p}`);
    }
    await saved.close();
  }
});
