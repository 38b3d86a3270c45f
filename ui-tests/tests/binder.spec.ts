/**
 * Binder's situation, for real: a server with binder/jupyter_server_config.json and no Docker
 * engine (playwright.config.ts starts it beside the main one). The panel and the Launcher say
 * so, and nothing is broken: the native kernel still runs.
 */
import { expect, test } from '@playwright/test';

const URL = process.env.UI_TEST_NO_ENGINE_URL!;

test.use({ viewport: { width: 1400, height: 1000 } });

test('without an engine the panel and the Launcher say so, and native kernels work', async ({
  page
}) => {
  // A fresh workspace: a notebook an earlier run left open would ask for a kernel first.
  await page.goto(`${URL}/lab?reset`);
  await page.waitForFunction(() => typeof (window as any).jupyterapp === 'object');
  await page.evaluate(async () => {
    const app = (window as any).jupyterapp;
    await app.restored;
    await app.commands.execute('launcher:create');
    await app.commands.execute('gpu-containers:open-panel');
  });

  const panel = page.locator('#jp-gpu-containers-panel');
  const banner = panel.locator('.jgc-banner-error');
  await expect(banner).toContainText('No Docker engine.');
  await expect(banner).toContainText('no-engine.sock');
  // The status notification carries the same sentence.
  await expect(page.locator('.Toastify__toast', { hasText: 'no-engine.sock' })).toHaveCount(1);

  // Binder's demo GPUs are listed, with no holders known; listed images cannot be pulled.
  await expect(panel.locator('.jgc-gpu')).toHaveCount(2);
  await expect(panel.locator('.jgc-gpu-section')).toContainText('unknown without the engine');
  await expect(panel.locator('.jgc-gpu[data-state="unknown"]')).toHaveCount(2);
  const pulls = panel.locator('.jgc-pull-button');
  expect(await pulls.count()).toBeGreaterThan(0);
  for (const button of await pulls.all()) {
    await expect(button).toBeDisabled();
  }
  await expect(panel.locator('.jgc-launch-button')).toHaveCount(0);

  // The Launcher: the panel's card says there is no engine; only the native kernel is offered.
  const launcher = page.locator('.jp-Launcher');
  await expect(launcher.locator('.jp-LauncherCard-label', { hasText: 'GPU Containers' })).toHaveText(
    'GPU Containers (no Docker engine)'
  );
  const notebookCards = launcher
    .locator('.jp-Launcher-section', { hasText: 'Notebook' })
    .locator('.jp-LauncherCard');
  await expect(notebookCards).toHaveCount(1);
  await expect(notebookCards.first()).toContainText('Python 3 (ipykernel)');
  await panel.screenshot({ path: test.info().outputPath('binder-panel.png') });
  await test.info().attach('binder-panel.png', {
    path: test.info().outputPath('binder-panel.png'),
    contentType: 'image/png'
  });

  // Nothing is broken: a native notebook runs.
  await notebookCards.first().click();
  // Run only once the kernel has answered: a cell run before that is silently not executed.
  await page.waitForFunction(() => {
    const widget = (window as any).jupyterapp.shell.currentWidget;
    return widget?.sessionContext?.session?.kernel !== undefined;
  });
  await page.evaluate(async () => {
    const context = (window as any).jupyterapp.shell.currentWidget.sessionContext;
    await context.ready;
    await context.session.kernel.info;
  });
  const cell = page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .cm-content').first();
  await cell.click();
  await page.keyboard.type('print(6 * 7)');
  await page.keyboard.press('Shift+Enter');
  await expect(page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output').first()).toHaveText(
    '42'
  );
  await page.evaluate(async () => {
    await (window as any).jupyterapp.shell.currentWidget.sessionContext.shutdown();
  });
});
