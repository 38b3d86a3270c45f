/**
 * The kernel's own view in a real browser against a real server and engine: a notebook on the
 * GPU image; a cell writes to its process's standard output; the toolbar's "Log and GPU use"
 * opens the kernel's view, whose live log shows that line, and whose details show the image
 * digest, the container, the mounts, the start phases and the GPU use (unknown on this server's
 * static GPUs, which the view says). The panel lists the kernel under "Your kernels".
 */
import * as path from 'path';

import { expect, test } from '@jupyterlab/galata';

import { NGC_IMAGE, imageRow, openPanel, dismissNetworkChangeDialogs } from './helpers';

test.use({
  autoGoto: true,
  // This extension's server starts kernels itself, which the page must see.
  kernels: null,
  sessions: null,
  viewport: { width: 1600, height: 1000 }
});

test.beforeEach(({ page }) => dismissNetworkChangeDialogs(page));

const SCREENSHOTS = path.resolve(__dirname, '..', '..', 'docs', 'screenshots');

test('the toolbar opens the kernel log and GPU use, which follows what the kernel prints', async ({
  page
}) => {
  const panel = await openPanel(page);
  const ngc = imageRow(panel, NGC_IMAGE);
  // A fresh server probes its images first (a short container each).
  await expect(ngc.locator('.jgc-gpu-count')).toBeEnabled({ timeout: 90_000 });
  await ngc.locator('.jgc-gpu-count').selectOption('count:1');
  await ngc.locator('.jgc-launch-button').click();
  const notebook = page.locator('.jp-NotebookPanel:not(.lm-mod-hidden)');
  await expect(notebook.locator('.jgc-toolbar-label')).toHaveText(
    /^ngc-like:24\.05-py3 · GPU [01]$/
  );
  const notebookPath: string = await page.evaluate(
    () => (window as any).jupyterapp.shell.currentWidget.context.path
  );

  // What reaches the process's own stdout (libraries, subprocesses) is the container's log.
  const marker = `kernel-view-${Date.now()}`;
  await page.notebook.setCell(
    0,
    'code',
    `import os, subprocess\nos.write(1, b"${marker} from the kernel\\n")\n` +
      `subprocess.run(["echo", "${marker} from a subprocess"])`
  );
  await page.notebook.runCell(0, true);

  await notebook.locator('.jgc-toolbar-kernel-view').click();
  const view = page.locator('.jgc-kernel-view-widget:not(.lm-mod-hidden)');
  const log = view.locator('.jgc-kernel-log');
  await expect(log).toContainText(`${marker} from the kernel`, { timeout: 30_000 });
  await expect(log).toContainText(`${marker} from a subprocess`);
  await expect(view.locator('.jgc-log-state')).toHaveText('(following)');
  await expect(view.locator('.jgc-kernel-facts')).toContainText(NGC_IMAGE);
  await expect(view.locator('.jgc-kernel-facts')).toContainText(/sha256:[0-9a-f]{64}/);
  await expect(view.locator('.jgc-kernel-mounts')).toContainText('/workspace');
  await expect(view.locator('.jgc-kernel-phases')).toContainText('Kernel answered');

  // A line written while the view is open (through the notebook's kernel, the view staying in
  // front) arrives by itself.
  await page.evaluate(
    async ([where, code]: string[]) => {
      const app = (window as any).jupyterapp;
      const notebook = (Array.from(app.shell.widgets('main')) as any[]).find(
        widget => widget.context?.path === where
      );
      await notebook.sessionContext.session.kernel.requestExecute({ code }).done;
    },
    [notebookPath, `import os\nos.write(2, b"${marker} later\\n")`]
  );
  await expect(log).toContainText(`${marker} later`, { timeout: 30_000 });

  await log.scrollIntoViewIfNeeded();
  await view.screenshot({ path: path.join(SCREENSHOTS, 'kernel-log.png') });

  // GPU use: static GPUs here, so unknown, and the view says why instead of drawing zeros.
  const usage = view.locator('.jgc-kernel-usage-section');
  await usage.scrollIntoViewIfNeeded();
  await expect(usage).toContainText('GPU memory and utilisation: unknown');
  // (In the user's words: the option's name is the administrator's, in the server's log.)
  await expect(usage).toContainText('declared by its administrator');
  await expect(usage.locator('.jgc-usage-since')).toContainText('since');
  // The panel's own list of the user's kernels, with the same numbers.
  const mine = panel.locator('.jgc-kernels-section .jgc-your-kernel');
  await expect(mine).toHaveCount(1);
  await expect(mine).toContainText('ngc-like:24.05-py3 · GPU');
  await page.screenshot({ path: path.join(SCREENSHOTS, 'kernel-gpu-use.png') });

  // Closing the view stops following; the kernel is shut down (its GPU freed for the next test).
  await page.evaluate(async () => {
    const app = (window as any).jupyterapp;
    for (const widget of Array.from(app.shell.widgets('main')) as any[]) {
      if (String(widget.id).startsWith('jgc-kernel-view-')) {
        widget.close();
      }
    }
  });
  await expect(page.locator('.jgc-kernel-view-widget')).toHaveCount(0);
  await page.evaluate(async (where: string) => {
    const sessions = (window as any).jupyterapp.serviceManager.sessions;
    const found = await sessions.findByPath(where);
    if (found) {
      await sessions.shutdown(found.id);
    }
  }, notebookPath);
  await expect(panel.locator('.jgc-kernels-section .jgc-your-kernel')).toHaveCount(0, {
    timeout: 30_000
  });
});
