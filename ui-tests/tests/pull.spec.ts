/**
 * A pull from a real private registry (docker-registry with htpasswd on 127.0.0.1, started by
 * start-server.sh): the registry refuses, the panel asks for a login, a wrong one is refused and
 * asked again, the right one pulls with progress, and the image becomes kernel-ready.
 */
import { expect, test } from '@jupyterlab/galata';

import { imageRow, openPanel, privateRegistry, dismissNetworkChangeDialogs } from './helpers';

test.use({ autoGoto: true, viewport: { width: 1400, height: 1000 } });

test.beforeEach(({ page }) => dismissNetworkChangeDialogs(page));

test('a private image is pulled after a login, with progress', async ({ page }) => {
  const { ref, host, username, password } = privateRegistry();
  const panel = await openPanel(page);
  const row = imageRow(panel, ref);
  await expect(row).toContainText('not pulled');

  await row.locator('.jgc-pull-button').click();
  const dialog = page.locator('.jp-Dialog');
  await expect(dialog.locator('.jp-Dialog-header')).toHaveText(`Log in to ${host}`);
  await expect(dialog.locator('.jgc-login')).toContainText('Authorization failed');

  // A wrong password: refused by the registry, and asked again with the registry's sentence.
  await dialog.locator('input[type="text"]').fill(username);
  await dialog.locator('input[type="password"]').fill('not-the-password');
  await dialog.locator('input[type="checkbox"]').uncheck();
  await dialog.locator('.jp-Dialog-button.jp-mod-accept').click();
  await expect(dialog.locator('.jgc-login')).toContainText(`refused the login of '${username}'`);

  // Watch the row for a progress bar: the pull is quick, the bar shows only while it runs.
  await page.evaluate(() => {
    (window as any).sawPullProgress = false;
    new MutationObserver(() => {
      if (document.querySelector('.jgc-pull [role="progressbar"]')) {
        (window as any).sawPullProgress = true;
      }
    }).observe(document.body, { subtree: true, childList: true, attributes: true });
  });
  await dialog.locator('input[type="text"]').fill(username);
  await dialog.locator('input[type="password"]').fill(password);
  await dialog.locator('.jp-Dialog-button.jp-mod-accept').click();

  await expect(page.locator('.Toastify__toast', { hasText: `${ref} is pulled.` })).toHaveCount(1, {
    timeout: 60_000
  });
  expect(await page.evaluate(() => (window as any).sawPullProgress)).toBe(true);
  // Pulled, probed, and offered as a kernel.
  await expect(row.locator('.jgc-launch-button')).toBeEnabled({ timeout: 60_000 });
  await expect(row).toContainText('Kernel-ready');
  // The password never reaches the page's text.
  expect(await page.locator('body').innerText()).not.toContain(password);
});
