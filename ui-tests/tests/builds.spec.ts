/**
 * "Build Image…" as a researcher uses it (issue 31, item 4): a Dockerfile of the workspace,
 * right-clicked in the file browser, built into an image of their own in a tab that shows its log
 * as it grows and its end; the Launcher's new card and the panel's note on it. A slow build
 * followed again after a reload (the same build, not a second one) and cancelled from its tab. A
 * Dockerfile that reaches past its build refused in a dialog that names the line.
 *
 * A real browser, server and engine; the images it builds are removed as it ends.
 */
import { expect, IJupyterLabPageFixture, JupyterLabPage, test } from '@jupyterlab/galata';
import type { APIRequestContext } from '@playwright/test';

import { DEBIAN_IMAGE, dismissNetworkChangeDialogs, openPanel, ScriptProcess } from './helpers';

test.use({
  autoGoto: true,
  kernels: null,
  sessions: null,
  viewport: { width: 1400, height: 900 }
});

const FOLDERS = ['env-ui', 'slow-ui', 'bad-ui'];

async function put(request: APIRequestContext, path: string, body: object): Promise<void> {
  const response = await request.put(`/api/contents/${path}`, { data: body });
  expect(response.ok()).toBe(true);
}

async function writeFolder(
  request: APIRequestContext,
  folder: string,
  files: Record<string, string>
): Promise<void> {
  await put(request, folder, { type: 'directory' });
  for (const [name, content] of Object.entries(files)) {
    await put(request, `${folder}/${name}`, { type: 'file', format: 'text', content });
  }
}

/** Right-click `name` in `folder` of the file browser and choose "Build Image…". */
async function buildFromMenu(
  page: IJupyterLabPageFixture,
  folder: string,
  name = 'Dockerfile'
): Promise<void> {
  await page.filebrowser.openDirectory(folder);
  const item = page.locator('.jp-DirListing-item', {
    has: page.locator('.jp-DirListing-itemText', { hasText: new RegExp(`^${name}$`) })
  });
  await item.click({ button: 'right' });
  const entry = page.locator('.lm-Menu-item', { hasText: 'Build Image…' });
  await expect(entry).toBeVisible();
  await entry.click();
}

test.beforeEach(({ page }) => dismissNetworkChangeDialogs(page));

test.afterEach(async ({ page }) => {
  for (const folder of FOLDERS) {
    await page.request.delete(`/api/contents/${folder}`);
  }
});

test('a Dockerfile of the workspace is built into an image of its own, its log shown as it grows', async ({
  page
}, testInfo) => {
  test.setTimeout(300_000);
  const built = new ScriptProcess('saved_images.py');
  try {
    expect((await built.next()).ready).toBe(true);
    await writeFolder(page.request, 'env-ui', {
      Dockerfile: [
        `FROM ${DEBIAN_IMAGE}`,
        'COPY notes.txt /opt/notes.txt',
        'RUN for i in 1 2 3 4 5; do echo step-$i; sleep 1; done'
      ].join('\n'),
      'notes.txt': 'from the workspace\n'
    });
    await buildFromMenu(page, 'env-ui');
    const dialog = page.locator('.jp-Dialog');
    await expect(dialog).toContainText('Build an Image from Dockerfile');
    await expect(dialog).toContainText('Builds env-ui/Dockerfile as a new image of your own');
    await dialog.locator('.jgc-build-name').fill('ui-built');
    await dialog.screenshot({ path: testInfo.outputPath('build-dialog.png') });
    await dialog.locator('.jp-Dialog-button.jp-mod-accept').click();

    // Its tab: the log grows while it runs, then the end.
    const view = page.locator('.jgc-build-view-widget:not(.lm-mod-hidden)');
    await expect(view.locator('h2')).toHaveText('Build of env-ui/Dockerfile');
    await expect(view.locator('.jgc-build-log')).toContainText('step-1', { timeout: 120_000 });
    await view.screenshot({ path: testInfo.outputPath('build-running.png') });
    const progress = view.locator('.jgc-build-progress');
    await expect(progress).toContainText(
      /Built localhost\/jupyter-gpu-containers\/saved\/u\d+\/ui-built:\d{8}-\d{6}\./,
      { timeout: 180_000 }
    );
    await expect(view.locator('.jgc-build-log')).toContainText('step-5');
    await expect(view.locator('.jgc-build-cancel')).toHaveCount(0);
    await view.screenshot({ path: testInfo.outputPath('build-done.png') });
    const image = ((await progress.textContent()) ?? '').match(/Built (\S+?)\. /)![1];

    // The Launcher offers it at once; the panel says what it was built from.
    await page.evaluate(async () => {
      await (window as any).jupyterapp.commands.execute('launcher:create');
    });
    await expect(
      page
        .locator('.jp-Launcher:visible .jp-LauncherCard[data-category="Notebook"]')
        .filter({ hasText: 'ui-built' })
        .first()
    ).toBeVisible({ timeout: 60_000 });
    await page.screenshot({ path: testInfo.outputPath('build-launcher.png') });
    const panel = await openPanel(page);
    await panel.locator('.jgc-refresh').first().click();
    await expect(
      panel.locator(`.jgc-image[data-reference="${image}"] .jgc-saved-from`)
    ).toHaveText(`Your own image, built from env-ui/Dockerfile on ${DEBIAN_IMAGE}.`, {
      timeout: 60_000
    });
  } finally {
    await built.close();
  }
});

test('a build followed again after a reload is the same build, and its tab cancels it', async ({
  page
}, testInfo) => {
  test.setTimeout(300_000);
  const built = new ScriptProcess('saved_images.py');
  try {
    expect((await built.next()).ready).toBe(true);
    await writeFolder(page.request, 'slow-ui', {
      Dockerfile: `FROM ${DEBIAN_IMAGE}\nRUN echo slow-start && sleep 240\n`
    });
    await buildFromMenu(page, 'slow-ui');
    await page.locator('.jp-Dialog .jp-Dialog-button.jp-mod-accept').click();
    let view = page.locator('.jgc-build-view-widget:not(.lm-mod-hidden)');
    await expect(view.locator('.jgc-build-log')).toContainText('slow-start', {
      timeout: 120_000
    });

    // Reloaded: asking again follows the build under way (no form, no second build).
    await (page as unknown as JupyterLabPage).reload({ waitForIsReady: false });
    await page.waitForSelector('.jp-DirListing-item');
    await buildFromMenu(page, 'slow-ui');
    await expect(page.locator('.jp-Dialog')).toHaveCount(0);
    view = page.locator('.jgc-build-view-widget:not(.lm-mod-hidden)');
    await expect(view.locator('.jgc-build-log')).toContainText('slow-start');
    await expect(view.locator('.jgc-build-progress')).toContainText('Building');
    await view.screenshot({ path: testInfo.outputPath('build-after-reload.png') });
    await view.locator('.jgc-build-cancel').click();
    await expect(view.locator('.jgc-build-progress')).toHaveText(
      'Cancelled: nothing was kept.',
      { timeout: 60_000 }
    );
    await expect(view.locator('.jgc-build-cancel')).toHaveCount(0);
  } finally {
    await built.close();
  }
});

test('a Dockerfile that reaches past its build is refused in a sentence naming its line', async ({
  page
}, testInfo) => {
  await writeFolder(page.request, 'bad-ui', {
    Dockerfile: `FROM ${DEBIAN_IMAGE}\nADD http://127.0.0.1:1/secret /secret\n`
  });
  await buildFromMenu(page, 'bad-ui');
  await page.locator('.jp-Dialog .jp-Dialog-button.jp-mod-accept').click();
  const refusal = page.locator('.jp-Dialog', { hasText: 'Cannot Build the Image' });
  await expect(refusal).toContainText('Line 2 (ADD)');
  await expect(refusal).toContainText("from this host's network");
  await refusal.screenshot({ path: testInfo.outputPath('build-refused.png') });
  await refusal.locator('.jp-Dialog-button').last().click();
  await expect(page.locator('.jp-Dialog')).toHaveCount(0);
  // Not offered on a file that is no recipe.
  await put(page.request, 'bad-ui/notes.txt', { type: 'file', format: 'text', content: 'x' });
  await page.filebrowser.refresh();
  const notes = page.locator('.jp-DirListing-item', {
    has: page.locator('.jp-DirListing-itemText', { hasText: /^notes\.txt$/ })
  });
  await notes.click({ button: 'right' });
  await expect(page.locator('.lm-Menu-item', { hasText: 'Open With' }).first()).toBeVisible();
  await expect(page.locator('.lm-Menu-item', { hasText: 'Build Image…' })).toBeHidden();
  await page.keyboard.press('Escape');
});
