/**
 * A student's JupyterLab on a Slurm cluster (ui-tests/slurm_lab.py: a real single-node Slurm of
 * four GPUs, the student's own server with ContainerEngine.backend = "slurm", their kernels jobs
 * they submit, in containers of their rootless Podman). The panel's GPUs are Slurm's; while
 * another job holds every GPU a notebook opens at once, its start queued in Slurm, and says why,
 * its Cancel cancels the job, and once the GPUs free the kernel starts on the GPU Slurm gave its
 * job, which the toolbar and the panel name, also after a reload. A real browser, Slurm and Podman.
 */
import { expect, test, type Locator, type Page } from '@playwright/test';

import {
  DEBIAN_IMAGE,
  dismissNetworkChangeDialogs,
  imageRow,
  openPanel,
  ScriptProcess,
  withNotebookState
} from './helpers';

// A job's start waits for Slurm's next scheduling pass, and its container for rootless Podman on
// a machine that may have 2 cores.
const KERNEL_START_MS = 120_000;

interface ILab {
  url: string;
  token: string;
  workspace: string;
  devices: string;
}

function toolbar(page: Page): Locator {
  return page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jgc-toolbar-button');
}

async function refreshPanel(panel: Locator): Promise<void> {
  await panel.locator('.jgc-refresh').first().click();
}

/**
 * JupyterLab at the lab's server; if the browser cannot open it, the test fails with what the lab
 * knows of its server: whether it runs, answers, and the end of its log.
 */
async function openLab(page: Page, lab: ScriptProcess, info: ILab): Promise<void> {
  try {
    await page.goto(`${info.url}/lab?token=${info.token}`);
  } catch (error) {
    const status = await lab.send('status').catch(e => `no answer (${String(e)})`);
    throw new Error(`${String(error)}\nthe lab's server then: ${JSON.stringify(status, null, 1)}`);
  }
}

test.use({ viewport: { width: 1600, height: 1000 } });

test('a notebook queued in Slurm says why, cancels, and runs on the GPU Slurm gave it', async ({
  page
}, testInfo) => {
  test.setTimeout(600_000);
  await dismissNetworkChangeDialogs(page);
  // ui-tests/slurm_lab.py: the cluster and the student's lab; closed, it stops both (the
  // kernel's job ends) and removes their files.
  const lab = new ScriptProcess('slurm_lab.py');
  try {
    const info: ILab = await lab.next();
    await openLab(page, lab, info);
    await page.waitForSelector('.jp-SideBar [data-id="jp-gpu-containers-panel"]', {
      timeout: 90_000
    });
    const panel = await openPanel(page);

    // The cluster's GPUs, as Slurm counts them; the login host's own (none) are not listed.
    const cluster = panel.locator('.jgc-cluster-section');
    await expect(cluster).toContainText('4 of 4 GPUs free', { timeout: 60_000 });
    await expect(panel.locator('.jgc-gpu-section')).toHaveCount(0);
    // The student's GPU-hours, as Slurm's accounting counts them (no quota of the server's).
    await expect(cluster.locator('.jgc-accounted')).toHaveText(
      /^\d+(\.\d+)? GPU-hours used this week, as Slurm counts them$/
    );
    const row = imageRow(panel, DEBIAN_IMAGE);
    await expect(row.locator('.jgc-gpu-count option')).toHaveText([
      'No GPU',
      '1 GPU',
      '2 GPUs',
      '3 GPUs',
      '4 GPUs'
    ]);

    // Another student's batch job takes every GPU: the panel shows them held by other jobs, and
    // a GPU choice stays open (Slurm queues the start).
    await lab.send('hold');
    await refreshPanel(panel);
    await expect(cluster).toContainText('0 of 4 GPUs free');
    await expect(cluster.locator('.jgc-gpu-holder')).toHaveText(['Other jobs (4 GPUs)']);
    await row.locator('.jgc-gpu-count').selectOption('count:1');
    await expect(row.locator('.jgc-launch-button')).toBeEnabled();
    await row.locator('.jgc-launch-button').click();

    // Queued in Slurm: the notebook opens at once, and its toolbar and the panel say why it
    // waits, in Slurm's words; Cancel cancels the job and the start, and nothing else starts.
    const queue = panel.locator('.jgc-queue-section');
    const label = toolbar(page).locator('.jgc-toolbar-label');
    await expect(queue).toContainText('queued in Slurm: Resources', { timeout: 60_000 });
    await expect(label).toHaveText('Queued in Slurm (Resources)', { timeout: 60_000 });
    await page.screenshot({ path: testInfo.outputPath('slurm-1-queued.png') });
    await queue.locator('button', { hasText: 'Cancel' }).click();
    await expect(queue).toHaveCount(0, { timeout: 60_000 });
    await expect(label).toHaveText('Choose an image', { timeout: 60_000 });
    await expect(page.locator('.jp-Dialog')).toHaveCount(0);
    await page.screenshot({ path: testInfo.outputPath('slurm-2-cancelled.png') });
    // Closed, as its user would: JupyterLab reopens the notebooks that were open after a
    // reload, and starts their kernels. (Once the layout without it is saved.)
    const saved = page.waitForResponse(
      response =>
        response.url().includes('/lab/api/workspaces') && response.request().method() === 'PUT'
    );
    await page.evaluate(async () => {
      const app = (window as any).jupyterapp;
      const notebook = Array.from(app.shell.widgets('main') as Iterable<any>).find(w =>
        w.hasClass('jp-NotebookPanel')
      );
      notebook.context.model.dirty = false;
      notebook.close();
    });
    await expect(page.locator('.jp-NotebookPanel')).toHaveCount(0);
    await saved;

    // Again. A reload while it waits keeps the wait; a cell run meanwhile runs once the kernel
    // starts; then the GPUs free: the kernel starts on the GPU its job got.
    await row.locator('.jgc-gpu-count').selectOption('count:1');
    await row.locator('.jgc-launch-button').click();
    await expect(label).toHaveText('Queued in Slurm (Resources)', { timeout: 60_000 });
    await page.reload();
    await expect(label).toHaveText('Queued in Slurm (Resources)', { timeout: 90_000 });
    await openPanel(page);
    const cell = page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell').first();
    await cell.locator('.jp-InputArea-editor').click();
    const code = `import os; print(sorted(os.listdir(${JSON.stringify(info.devices)})))`;
    await page.keyboard.type(code);
    await expect(cell.locator('.jp-InputArea-editor')).toHaveText(code);
    await page.keyboard.press('Shift+Enter');
    await lab.send('free');
    await expect(queue).toHaveCount(0, { timeout: KERNEL_START_MS });
    await expect(label).toHaveText(/^debian-ipykernel:bookworm · GPU [0-3]$/, {
      timeout: KERNEL_START_MS
    });
    await expect(toolbar(page)).not.toHaveAttribute('data-short', 'true');
    const index = ((await label.textContent()) ?? '').replace(/^.* · GPU /, '');
    await refreshPanel(panel);
    await expect(cluster.locator('.jgc-gpu-holder.jgc-mine')).toHaveText(
      new RegExp(`^Your notebook Untitled\\d*\\.ipynb \\(GPU ${index}\\)$`)
    );
    await expect(panel.locator('.jgc-your-kernel')).toContainText(
      `debian-ipykernel:bookworm · GPU ${index}`
    );

    // The cell ran then, and its code sees exactly that GPU's device.
    await withNotebookState(
      page,
      expect(cell.locator('.jp-OutputArea-output')).toHaveText(`['nvidia${index}']`, {
        timeout: KERNEL_START_MS
      })
    );
    await page.screenshot({ path: testInfo.outputPath('slurm-3-running.png') });

    // After a reload the page says the same.
    await page.reload();
    await expect(toolbar(page).locator('.jgc-toolbar-label')).toHaveText(
      `debian-ipykernel:bookworm · GPU ${index}`,
      { timeout: 90_000 }
    );
  } finally {
    await lab.close();
  }
});
