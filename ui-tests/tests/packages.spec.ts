/**
 * "Your packages" as a researcher uses it (issue 31): a package installed in a notebook
 * (`%pip install` of a wheel the cell itself makes: no index, no network) still imports after the
 * kernel is restarted from the Kernel menu; the panel lists it under its image; a reset, asked and
 * confirmed in a dialog, removes it, and the kernel restarted next has the image's packages only.
 *
 * A real browser, server, engine and image (the NGC-like one, whose pip installs as NGC's does).
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';

import {
  dismissNetworkChangeDialogs,
  kernelNameFor,
  NGC_IMAGE,
  openPanel,
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
 * A cell that makes a one-module wheel in /tmp and installs it as a notebook does. No indented
 * block: the editor indents what is typed into it, as it would a person's typing.
 */
const INSTALL = [
  'import base64, hashlib, zipfile',
  "dist = 'jgc_tiny-1.0.dist-info'",
  "files = {'jgc_tiny.py': 'VERSION = \"1.0\"\\n', dist + '/METADATA': 'Metadata-Version: 2.1\\nName: jgc_tiny\\nVersion: 1.0\\n', dist + '/WHEEL': 'Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n'}",
  "digest = lambda text: base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()",
  "files[dist + '/RECORD'] = ''.join('%s,sha256=%s,%d\\n' % (n, digest(t), len(t)) for n, t in files.items()) + dist + '/RECORD,,\\n'",
  "wheel = zipfile.ZipFile('/tmp/jgc_tiny-1.0-py3-none-any.whl', 'w')",
  'written = [wheel.writestr(n, t) for n, t in files.items()]',
  'wheel.close()',
  '%pip install --no-index --disable-pip-version-check /tmp/jgc_tiny-1.0-py3-none-any.whl'
].join('\n');

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
  request
}, testInfo) => {
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
