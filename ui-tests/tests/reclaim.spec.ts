/**
 * Idle GPUs given back, with a word back (ui-tests/reclaim_lab.py: a real server on the NVML
 * double's GPUs, where a GPU kernel is idle from its start; warned after 6 s, its GPUs go 30 s
 * later; its user may keep them 30 s or 1 minute, twice). A student's GPU notebook is warned; the
 * notification's "Keep them for 1 minute" keeps them; after a reload the panel says until when
 * and keeps them once more, then says no more keeps are left; the keep ends idle, and the kernel
 * restarts without its GPU, as the panel says. A real browser, engine and server.
 */
import { expect, test, type Locator } from '@playwright/test';

import { dismissNetworkChangeDialogs, imageRow, NGC_IMAGE, openPanel, ScriptProcess } from './helpers';

interface ILab {
  url: string;
  token: string;
}

test.use({ viewport: { width: 1600, height: 1000 } });

function kernelRow(panel: Locator): Locator {
  return panel.locator('.jgc-kernels-section .jgc-your-kernel').first();
}

test('a warned GPU notebook is kept at its user’s word, then loses its GPU once the keep ends idle', async ({
  page
}, testInfo) => {
  test.setTimeout(300_000);
  await dismissNetworkChangeDialogs(page);
  const lab = new ScriptProcess('reclaim_lab.py');
  try {
    const info: ILab = await lab.next();
    await page.goto(`${info.url}/lab?token=${info.token}`);
    await page.waitForSelector('.jp-SideBar [data-id="jp-gpu-containers-panel"]', {
      timeout: 90_000
    });
    let panel = await openPanel(page);
    const ngc = imageRow(panel, NGC_IMAGE);
    await expect(ngc).toHaveCount(1, { timeout: 60_000 });
    await ngc.locator('.jgc-gpu-count').selectOption('count:1');
    await ngc.locator('.jgc-launch-button').click();
    await expect(kernelRow(panel)).toContainText(/ngc-like:24\.05-py3 · GPU \d/, {
      timeout: 90_000
    });

    // Idle on its GPU: the warning comes as a notification the user can answer.
    const warning = page.locator('.Toastify__toast', {
      hasText: 'Its GPUs have been idle since'
    });
    await expect(warning).toHaveCount(1, { timeout: 60_000 });
    const keep = warning.getByRole('button', { name: 'Keep them for 1 minute' });
    await expect(keep).toBeVisible();
    await page.screenshot({ path: testInfo.outputPath('reclaim-1-warned.png') });
    await keep.click();
    await expect(
      page.locator('.Toastify__toast', { hasText: 'You kept its idle GPUs until' })
    ).toHaveCount(1, { timeout: 30_000 });
    const row = kernelRow(panel);
    await expect(row.locator('.jgc-reclaim')).toContainText('You kept its idle GPUs until', {
      timeout: 30_000
    });
    await page.screenshot({ path: testInfo.outputPath('reclaim-2-kept.png') });

    // A reload: the keep is the server's, and the panel offers one more, within the bounds.
    await page.reload();
    await page.waitForSelector('.jp-SideBar [data-id="jp-gpu-containers-panel"]', {
      timeout: 90_000
    });
    panel = await openPanel(page);
    const again = kernelRow(panel);
    await expect(again.locator('.jgc-reclaim')).toContainText('You kept its idle GPUs until', {
      timeout: 60_000
    });
    const minutes = again.locator('.jgc-keep-minutes');
    await expect(minutes.locator('option')).toHaveText(['30 seconds', '1 minute']);
    await minutes.selectOption({ label: '30 seconds' });
    await again.locator('.jgc-keep-button').click();
    await expect(again.locator('.jgc-keep-none')).toHaveText(
      'You kept them as often as the administrator allows; only GPU use keeps them now.',
      { timeout: 30_000 }
    );
    await expect(again.locator('.jgc-keep-button')).toHaveCount(0);
    // The page was not told again of a release time its user chose.
    await expect(
      page.locator('.Toastify__toast', { hasText: 'Its GPUs have been idle since' })
    ).toHaveCount(0);
    await page.screenshot({ path: testInfo.outputPath('reclaim-3-kept-again.png') });

    // Still idle when the keep ends: the GPU goes, the kernel restarts without it.
    await expect(again.locator('.jgc-reclaim')).toContainText(
      'Its GPUs were given back after a long idle time: it restarted without GPUs.',
      { timeout: 120_000 }
    );
    await expect(again).toContainText('ngc-like:24.05-py3 · No GPU', { timeout: 30_000 });
    await page.screenshot({ path: testInfo.outputPath('reclaim-4-reclaimed.png') });
  } finally {
    await lab.close();
  }
});
