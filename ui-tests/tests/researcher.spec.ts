/**
 * A researcher's day, as the walk-through found it: a GPU request that travels with the notebook
 * through a rename, a kernel whose status comes back to Idle after a GPU change, and a refusal
 * from the Launcher that can be read in full. A real browser, server, engine and images; the
 * server has two static GPUs.
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import type { Locator } from '@playwright/test';

import { imageRow, kernelNameFor, NGC_IMAGE, openPanel, dismissNetworkChangeDialogs } from './helpers';

test.use({
  autoGoto: true,
  // This extension's server starts kernels itself, which the page must see.
  kernels: null,
  sessions: null,
  viewport: { width: 1600, height: 1000 }
});

test.beforeEach(({ page }) => dismissNetworkChangeDialogs(page));
test.describe.configure({ mode: 'serial' });

function toolbar(page: IJupyterLabPageFixture): Locator {
  return page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jgc-toolbar-label');
}

/** The current notebook's kernel status, as its toolbar and the status bar show it. */
async function kernelStatus(page: IJupyterLabPageFixture): Promise<string> {
  return page.evaluate(
    () => (window as any).jupyterapp.shell.currentWidget?.sessionContext?.kernelDisplayStatus ?? ''
  );
}

async function currentPath(page: IJupyterLabPageFixture): Promise<string> {
  return page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.context.path);
}

/** Change the current notebook's GPU choice in the toolbar's picker (same image), and confirm. */
async function changeGpus(page: IJupyterLabPageFixture, gpus: string): Promise<void> {
  await page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jgc-toolbar-button').click();
  const picker = page.locator('.jgc-picker');
  await expect(picker).toBeVisible();
  await picker.locator('.jgc-picker-gpus').selectOption(gpus);
  await page.locator('.jp-Dialog-button.jp-mod-accept').click();
  await expect(page.locator('.jp-Dialog-header')).toContainText(/Restart/);
  await page.locator('.jp-Dialog-button.jp-mod-warn').click();
  await expect(page.locator('.jp-Dialog')).toHaveCount(0);
}

/** A new notebook on the NGC-like image with `gpus`, from the panel. */
async function launchFromPanel(page: IJupyterLabPageFixture, gpus: string): Promise<string> {
  const panel = await openPanel(page);
  const ngc = imageRow(panel, NGC_IMAGE);
  await ngc.locator('.jgc-gpu-count').selectOption(gpus);
  await ngc.locator('.jgc-launch-button').click();
  await expect(toolbar(page)).toHaveText(/^ngc-like:24\.05-py3 · GPUs? [01]/);
  return currentPath(page);
}

async function shutdownAll(page: IJupyterLabPageFixture): Promise<void> {
  await page.evaluate(async () => {
    const app = (window as any).jupyterapp;
    await app.serviceManager.sessions.shutdownAll();
    app.shell.closeAll();
  });
}

test.afterEach(async ({ page }) => {
  await shutdownAll(page);
});

test('the kernel is Idle after a GPU change on the same image, without running a cell', async ({
  page
}) => {
  await launchFromPanel(page, 'count:1');
  await expect.poll(() => kernelStatus(page), { timeout: 30_000 }).toBe('idle');
  await changeGpus(page, 'count:2');
  await expect(toolbar(page)).toHaveText('ngc-like:24.05-py3 · GPUs 0,1');
  await expect.poll(() => kernelStatus(page), { timeout: 30_000 }).toBe('idle');
});

test('a renamed notebook reopens with its GPU request', async ({ page }) => {
  const path = await launchFromPanel(page, 'count:2');
  await expect(toolbar(page)).toHaveText('ngc-like:24.05-py3 · GPUs 0,1');
  // The request is in the saved notebook, next to its kernel spec.
  const saved = await page.evaluate(
    async p => (await (window as any).jupyterapp.serviceManager.contents.get(p)).content.metadata,
    path
  );
  expect(saved.gpu_containers).toEqual({ gpus: 2 });

  // Close it (saved, its kernel shut down), rename it as the file browser does, open it again.
  await page.notebook.save();
  await shutdownAll(page);
  await expect(page.locator('.jp-NotebookPanel')).toHaveCount(0);
  const renamed = path.replace(/[^/]+\.ipynb$/, 'train.ipynb');
  await page.evaluate(
    async ([from, to]) => {
      await (window as any).jupyterapp.serviceManager.contents.rename(from, to);
    },
    [path, renamed]
  );
  await page.evaluate(async p => {
    await (window as any).jupyterapp.commands.execute('docmanager:open', { path: p });
  }, renamed);
  await expect(toolbar(page)).toHaveText('ngc-like:24.05-py3 · GPUs 0,1');
});

test('with every GPU taken, the panel says so before, and the Launcher refuses in full', async ({
  page
}) => {
  // Both GPUs held by a notebook that another page started (the panel here chose nothing yet).
  const kernelName = await kernelNameFor(page.request, NGC_IMAGE);
  const holder = await page.request.post('/api/contents', { data: { type: 'notebook' } });
  const started = await page.request.post('/gpu-containers/notebooks/kernel', {
    data: { path: (await holder.json()).path, kernel_name: kernelName, gpus: 2 }
  });
  expect(started.status()).toBe(200);

  // The panel's default choice for the GPU image falls back to no GPU, and says so.
  const ngc = imageRow(await openPanel(page), NGC_IMAGE);
  await expect(ngc.locator('.jgc-without-gpu')).toContainText(
    'A notebook started now runs without a GPU.'
  );
  await expect(ngc.locator('.jgc-launch-button')).toHaveText('New notebook without GPU');

  // The Launcher's card for the GPU image asks for one more: refused, in a readable sentence.
  await page.evaluate(async () => {
    await (window as any).jupyterapp.commands.execute('launcher:create');
  });
  await page
    .locator('.jp-LauncherCard[data-category="Notebook"]:visible')
    .filter({ hasText: 'ngc-like:24.05-py3' })
    .click();
  // (Its status through the stock sessions API, 409, is tests/test_notebook_requests.py's.)

  const dialog = page.locator('.jp-Dialog-content');
  await expect(dialog).toContainText('Error Starting Kernel');
  const sentence = dialog.locator('pre').first();
  await expect(sentence).toContainText('No free GPU');
  // Readable in full: nothing cut off at the right edge.
  const clipped = await sentence.evaluate(e => e.scrollWidth > e.clientWidth + 1);
  expect(clipped).toBe(false);
  await dialog.screenshot({ path: test.info().outputPath('refusal.png') });
  await test.info().attach('refusal.png', {
    path: test.info().outputPath('refusal.png'),
    contentType: 'image/png'
  });
  // JupyterLab then offers to select another kernel: decline.
  while ((await page.locator('.jp-Dialog').count()) > 0) {
    await page.keyboard.press('Escape');
  }
});

test("the Launcher's cards carry framework icons, and their labels break only between parts", async ({
  page
}) => {
  await page.evaluate(async () => {
    await (window as any).jupyterapp.commands.execute('launcher:create');
  });
  const card = page
    .locator('.jp-LauncherCard[data-category="Notebook"]:visible')
    .filter({ hasText: 'ngc-like' });
  await expect(card).toHaveCount(1);
  // The PyTorch image's card: PyTorch's icon (the spec's logo-svg), not the generic one.
  const icon = await card.locator('img').getAttribute('src');
  expect(icon).toMatch(/\/kernelspecs\/gpuc-[^/]+\/logo-svg\.svg/);
  const svg = await (await page.request.get(icon!)).text();
  expect(svg).toContain('PyTorch');

  // Where each line of every visible card label starts: only after a space, a break point or a
  // hyphen (where browsers break too), never inside a word.
  const labels = await page
    .locator('.jp-LauncherCard:visible .jp-LauncherCard-label p')
    .evaluateAll(paragraphs =>
      paragraphs.map(p => {
        const text = p.firstChild as Text;
        const starts: number[] = [];
        let top: number | null = null;
        for (let i = 0; i < text.data.length; i++) {
          const range = document.createRange();
          range.setStart(text, i);
          range.setEnd(text, i + 1);
          const rect = range.getBoundingClientRect();
          if (rect.width === 0) {
            continue; // a break point
          }
          if (top !== null && rect.top > top + 1) {
            starts.push(i);
          }
          top = rect.top;
        }
        return { text: text.data, starts };
      })
    );
  expect(labels.length).toBeGreaterThan(3);
  for (const { text, starts } of labels) {
    for (const i of starts) {
      expect([' ', '\u200b', '-'], `${JSON.stringify(text)} breaks at ${i}`).toContain(
        text[i - 1]
      );
    }
  }
  await card.screenshot({ path: test.info().outputPath('launcher-card.png') });
});
