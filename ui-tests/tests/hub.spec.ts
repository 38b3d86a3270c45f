/**
 * The multi-user demo (scripts/demo-multiuser.sh, started by start-hub.sh) in a real browser,
 * the way a class uses it: three students log in to JupyterHub with the demo's password (real
 * accounts, outside the docker group); their kernels run through the kernel service on the
 * demo's two declared GPUs, one per student at a time, with a queue to wait in.
 *
 * Nothing here uses galata's page fixture or the application object: the students' servers are
 * the demo's, configured as a person gets them, so the walk goes through what a person sees
 * and clicks.
 */
import * as path from 'path';

import {
  expect,
  test,
  type Browser,
  type BrowserContext,
  type Locator,
  type Page
} from '@playwright/test';

import { dismissNetworkChangeDialogs, ScriptProcess } from './helpers';

const HUB_URL = process.env.UI_TEST_HUB_URL ?? 'http://127.0.0.1:8891';
const PASSWORD = process.env.UI_TEST_HUB_PASSWORD ?? '';
const ALICE = 'jgc-demo-alice';
const BOB = 'jgc-demo-bob';
const CAROL = 'jgc-demo-carol';
const GPU_IMAGE = 'jgc/demo-cuda:12.2';
const SCREENSHOTS = path.resolve(__dirname, '..', '..', 'docs', 'screenshots');

test.describe.configure({ mode: 'serial' });
test.use({ viewport: { width: 1600, height: 1000 } });

/** A student's browser: logged in to the Hub, on their own JupyterLab. */
interface IStudent {
  name: string;
  context: BrowserContext;
  page: Page;
  /** The notebooks in the student's home before the test, left as they were. */
  before: Set<string>;
}

const students: IStudent[] = [];

async function logIn(browser: Browser, name: string): Promise<IStudent> {
  const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
  const page = await context.newPage();
  await dismissNetworkChangeDialogs(page);
  // ?reset: the layout of an earlier run is not restored (it would reopen its notebooks).
  const lab = `/user/${name}/lab?reset`;
  await page.goto(`${HUB_URL}/hub/login?next=${encodeURIComponent(lab)}`);
  await page.locator('#username_input').fill(name);
  await page.locator('#password_input').fill(PASSWORD);
  await page.locator('#login_submit').click();
  // The Hub's "Server not running" page (JupyterHub starts no server unasked): the student
  // launches it; the Hub spawns it (as the student), then sends the browser there.
  const launch = page.getByRole('button', { name: 'Launch Server' });
  const arrived = page.waitForURL(url => url.pathname.startsWith(`/user/${name}/lab`), {
    timeout: 90_000
  });
  await Promise.race([arrived, launch.waitFor({ timeout: 90_000 })]);
  if (await launch.isVisible()) {
    await launch.click();
  }
  await arrived;
  await expect(page.locator('#jupyterlab-splash')).toHaveCount(0, { timeout: 60_000 });
  const student: IStudent = { name, context, page, before: new Set() };
  student.before = new Set(await notebooks(student));
  students.push(student);
  return student;
}

/** JupyterLab's question about its news (a toast that comes some time after the page
 * loads), answered as most do when it is there; nothing is waited for. */
async function answerNewsQuestion(page: Page): Promise<void> {
  const no = page
    .locator('.Toastify__toast', { hasText: 'official Jupyter news' })
    .getByRole('button', { name: 'No', exact: true });
  if (await no.isVisible()) {
    await no.click();
  }
}

/** A request to the student's own server, as their page makes it (cookie and XSRF token). */
async function api(student: IStudent, method: string, route: string): Promise<any> {
  return student.page.evaluate(
    async ({ method, url }) => {
      const xsrf = document.cookie.match(/(?:^|; )_xsrf=([^;]*)/)?.[1] ?? '';
      // Never from the browser's cache: a listing read at login (whose directory had not
      // changed for a while) was served again at the end, so new notebooks were not seen.
      const ask = () =>
        fetch(url, {
          method,
          cache: 'no-store',
          headers: { 'X-XSRFToken': decodeURIComponent(xsrf) }
        });
      // Chromium fails the requests in flight when the host's network interfaces change (a
      // kernel's container going away as the previous test ended): "Failed to fetch", no
      // answer at all. Asked again, a few times; an answer of any status is kept.
      let response: Response | null = null;
      for (let attempt = 1; response === null; attempt++) {
        try {
          response = await ask();
        } catch (error) {
          if (attempt >= 5) {
            throw error;
          }
          await new Promise(resolve => setTimeout(resolve, 500));
        }
      }
      const text = await response.text();
      return { status: response.status, body: text ? JSON.parse(text) : null };
    },
    { method, url: `/user/${student.name}/${route}` }
  );
}

async function notebooks(student: IStudent): Promise<string[]> {
  const { body } = await api(student, 'GET', 'api/contents');
  return (body?.content ?? [])
    .filter((item: { type: string }) => item.type === 'notebook')
    .map((item: { path: string }) => item.path);
}

test.afterEach(async () => {
  // Each student's sessions end (their kernels with them) and the notebooks this test made go.
  for (const student of students.splice(0)) {
    try {
      const { body: sessions } = await api(student, 'GET', 'api/sessions');
      for (const session of sessions ?? []) {
        await api(student, 'DELETE', `api/sessions/${session.id}`);
      }
      for (const made of await notebooks(student)) {
        if (!student.before.has(made)) {
          await api(student, 'DELETE', `api/contents/${encodeURIComponent(made)}`);
        }
      }
    } finally {
      await student.context.close();
    }
  }
});

async function openPanel(page: Page): Promise<Locator> {
  const panel = page.locator('#jp-gpu-containers-panel');
  if (!(await panel.isVisible())) {
    await page.locator('.jp-SideBar [data-id="jp-gpu-containers-panel"]').click();
  }
  await expect(panel).toBeVisible();
  return panel;
}

function gpuImage(panel: Locator, image = GPU_IMAGE): Locator {
  return panel.locator(`.jgc-image[data-reference="${image}"]`);
}

function current(page: Page): Locator {
  return page.locator('.jp-NotebookPanel:not(.lm-mod-hidden)');
}

/** A new notebook on the GPU image (or `image`) with one GPU, from the panel, waiting if
 * `wait`. */
async function newGpuNotebook(page: Page, wait = false, image = GPU_IMAGE): Promise<void> {
  const row = gpuImage(await openPanel(page), image);
  // The service probes its images first (a short container each, the first time).
  await expect(row.locator('.jgc-gpu-count')).toBeEnabled({ timeout: 90_000 });
  if (wait) {
    await row.locator('.jgc-wait-checkbox').check();
  }
  await row.locator('.jgc-gpu-count').selectOption('count:1');
  const launch = row.locator('.jgc-launch-button');
  await expect(launch).toHaveText(wait ? 'New notebook that waits' : 'New notebook');
  await launch.click();
}

/** The panel's row of `image`, once its refresh button has read the images again (as a
 * person does after an administrator's new tag; it also comes at the next minute's look). */
async function refreshedRow(page: Page, image: string): Promise<void> {
  const panel = await openPanel(page);
  await expect(async () => {
    await panel.locator('.jgc-refresh').click();
    await expect(gpuImage(panel, image)).toBeVisible({ timeout: 5_000 });
  }).toPass({ timeout: 60_000 });
}

/** Run `code` in the current notebook's first cell, as a person types it. */
async function runFirstCell(page: Page, code: string): Promise<void> {
  const editor = current(page).locator('.jp-Cell .cm-content').first();
  await editor.click();
  await page.keyboard.type(code);
  await page.keyboard.press('Shift+Enter');
}

test('three students, two GPUs: one each for two, the third waits and starts by itself once one frees', async ({
  browser
}) => {
  const alice = await logIn(browser, ALICE);
  const bob = await logIn(browser, BOB);
  const carol = await logIn(browser, CAROL);

  // Alice's GPU notebook gets a GPU.
  await newGpuNotebook(alice.page);
  const aliceLabel = current(alice.page).locator('.jgc-toolbar-label');
  await expect(aliceLabel).toHaveText(/^demo-cuda:12\.2 · GPU [01]$/, { timeout: 60_000 });
  const aliceGpu = (await aliceLabel.textContent())!.slice(-1);
  const otherGpu = aliceGpu === '0' ? '1' : '0';

  // Bob's panel shows her GPU held by another user, not by whom; his notebook gets the other.
  const bobPanel = await openPanel(bob.page);
  const held = bobPanel.locator(`.jgc-gpu[data-gpu-index="${aliceGpu}"]`);
  await expect(held).toHaveAttribute('data-state', 'held', { timeout: 30_000 });
  await expect(held.locator('.jgc-gpu-holder.jgc-other')).toHaveCount(1);
  await expect(held).not.toContainText(ALICE);
  await newGpuNotebook(bob.page);
  await expect(current(bob.page).locator('.jgc-toolbar-label')).toHaveText(
    `demo-cuda:12.2 · GPU ${otherGpu}`,
    { timeout: 60_000 }
  );

  // Alice may not take the second GPU (one per student): her panel says why, and offers no
  // wait, since only ending her own kernel could help.
  const alicePanel = await openPanel(alice.page);
  await expect(alicePanel.locator('.jgc-gpu[data-state="held"]')).toHaveCount(2, {
    timeout: 30_000
  });
  const aliceRow = gpuImage(alicePanel);
  await expect(aliceRow.locator('.jgc-wait-checkbox')).toHaveCount(0);
  // The option says it in a few words (a narrow select cut the sentence), its tooltip in full.
  const aliceOne = aliceRow.locator('option[value="count:1"]');
  await expect(aliceOne).toHaveText('1 GPU (over your limit)');
  await expect(aliceOne).toHaveAttribute('title', /^Over your limit of 1 GPU per user/);

  // Both GPUs are held by others: Carol's start waits in the queue, her notebook opens at once
  // and says so, and so does her panel.
  const carolPanel = await openPanel(carol.page);
  await expect(carolPanel.locator('.jgc-gpu[data-state="held"]')).toHaveCount(2, {
    timeout: 30_000
  });
  await newGpuNotebook(carol.page, true);
  await expect(current(carol.page).locator('.jgc-toolbar-label')).toHaveText(
    'Waiting for a GPU (position 1)',
    { timeout: 30_000 }
  );
  // Her choice reads whole in the select (a narrow one cut it: "1 GPU (all taken, wai").
  const carolSelect = gpuImage(carolPanel).locator('.jgc-gpu-count');
  await expect(carolSelect.locator('option:checked')).toHaveText('1 GPU (all taken, waits)');
  const fits = await carolSelect.evaluate((select: HTMLSelectElement) => {
    const style = getComputedStyle(select);
    const context = document.createElement('canvas').getContext('2d')!;
    context.font = style.font;
    const text = select.options[select.selectedIndex].text;
    // Its padding and the arrow take room beside the text.
    return context.measureText(text).width + 24 <= select.clientWidth;
  });
  expect(fits).toBe(true);
  const ticket = carolPanel.locator('.jgc-queue-section .jgc-ticket.jgc-mine');
  await expect(ticket).toHaveCount(1, { timeout: 30_000 });
  await expect(ticket).toContainText('position 1 of 1');
  // The others see someone waiting, not who.
  await expect(bobPanel.locator('.jgc-queue-section .jgc-ticket')).toHaveCount(1, {
    timeout: 30_000
  });
  await expect(bobPanel.locator('.jgc-queue-section')).not.toContainText(CAROL);
  await carolPanel.locator('.jgc-queue-section').scrollIntoViewIfNeeded();
  await answerNewsQuestion(carol.page);
  await carol.page.screenshot({ path: path.join(SCREENSHOTS, 'multiuser-waiting.png') });

  // Alice shuts her kernel down (Kernel › Shut Down Kernel): Carol's wait gets that GPU, and
  // her notebook opens on it; her cell runs as her.
  await alice.page.locator('.lm-MenuBar-item', { hasText: 'Kernel' }).click();
  await alice.page.locator('.lm-Menu-item', { hasText: 'Shut Down Kernel' }).click();
  await expect(ticket).toHaveCount(0, { timeout: 60_000 });
  await expect(current(carol.page).locator('.jgc-toolbar-label')).toHaveText(
    `demo-cuda:12.2 · GPU ${aliceGpu}`,
    { timeout: 60_000 }
  );
  await runFirstCell(carol.page, 'import getpass; print("ran as", getpass.getuser())');
  await expect(current(carol.page).locator('.jp-OutputArea-output').first()).toHaveText(
    `ran as ${CAROL}`,
    { timeout: 30_000 }
  );
  await expect(carol.page.locator('.jp-Dialog')).toHaveCount(0);
});

test("behind the Hub, the kernel's own view follows the kernel's log", async ({ browser }) => {
  const alice = await logIn(browser, ALICE);
  await newGpuNotebook(alice.page);
  await expect(current(alice.page).locator('.jgc-toolbar-label')).toHaveText(
    /^demo-cuda:12\.2 · GPU [01]$/,
    { timeout: 60_000 }
  );
  // What reaches the process's own standard output is the container's log.
  const marker = `hub-log-${Date.now()}`;
  await runFirstCell(alice.page, `import os; os.write(1, b"${marker} from the kernel\\n")`);
  await current(alice.page).locator('.jgc-toolbar-kernel-view').click();
  const view = alice.page.locator('.jgc-kernel-view-widget:not(.lm-mod-hidden)');
  await expect(view.locator('.jgc-kernel-log')).toContainText(`${marker} from the kernel`, {
    timeout: 30_000
  });
  await expect(view.locator('.jgc-log-state')).toHaveText('(following)');
  await expect(view.locator('.jgc-kernel-facts')).toContainText(GPU_IMAGE);
  await answerNewsQuestion(alice.page);
  await alice.page.screenshot({ path: path.join(SCREENSHOTS, 'multiuser-kernel-log.png') });
});

/** JupyterLab in another tab of the student's browser, in a workspace of its own (two tabs
 * of one workspace would each rewrite the other's layout). */
async function secondTab(student: IStudent): Promise<Page> {
  const tab = await student.context.newPage();
  await dismissNetworkChangeDialogs(tab);
  await tab.goto(`${HUB_URL}/user/${student.name}/lab/workspaces/second-tab?reset`);
  await expect(tab.locator('#jupyterlab-splash')).toHaveCount(0, { timeout: 60_000 });
  return tab;
}

/** Open `notebook` from the file browser, as a person does: a double click on its name. */
async function openFromFileBrowser(tab: Page, notebook: string): Promise<void> {
  // Its tab toggles it (a click on the open file browser closes it), and the layout's restore
  // may close it again just after a click: clicked until it stays open.
  const browser = tab.locator('#filebrowser');
  await expect(async () => {
    if (!(await browser.isVisible())) {
      await tab.locator('.jp-SideBar [data-id="filebrowser"]').click();
    }
    await expect(browser).toBeVisible({ timeout: 2_000 });
  }).toPass({ timeout: 30_000 });
  const item = tab.locator('.jp-DirListing-item', {
    has: tab.locator('.jp-DirListing-itemText', { hasText: notebook })
  });
  await item.first().dblclick({ timeout: 30_000 });
}

async function yourTickets(student: IStudent): Promise<unknown[]> {
  const { status, body } = await api(student, 'GET', 'gpu-containers/queue');
  expect(status).toBe(200);
  return body.queue.filter((t: { yours: boolean }) => t.yours);
}

test("behind the Hub, a waiting notebook is one wait in each of its tabs, and each gets the GPU", async ({
  browser
}) => {
  test.setTimeout(300_000);
  const alice = await logIn(browser, ALICE);
  const bob = await logIn(browser, BOB);
  const carol = await logIn(browser, CAROL);
  for (const holder of [alice, bob]) {
    await newGpuNotebook(holder.page);
    await expect(current(holder.page).locator('.jgc-toolbar-label')).toHaveText(
      /^demo-cuda:12\.2 · GPU [01]$/,
      { timeout: 60_000 }
    );
  }
  const aliceGpu = (await current(alice.page).locator('.jgc-toolbar-label').textContent())!.slice(
    -1
  );

  // Carol's "New notebook that waits" opens the notebook now, waiting, in the toolbar and the
  // status bar.
  await newGpuNotebook(carol.page, true);
  const waiting = 'Waiting for a GPU (position 1)';
  const first = carol.page;
  await expect(current(first).locator('.jgc-toolbar-label')).toHaveText(waiting, {
    timeout: 30_000
  });
  await expect(first.locator('.jgc-waiting-status-text')).toContainText('Waiting for a GPU');
  const { body: sessions } = await api(carol, 'GET', 'api/sessions');
  expect(sessions).toHaveLength(1);
  const notebook: string = sessions[0].path;

  // A second tab opens it from the file browser: the same wait, no error, no kernel picker; a
  // cell run there waits for the kernel.
  const second = await secondTab(carol);
  await openFromFileBrowser(second, notebook.split('/').pop()!);
  await expect(current(second).locator('.jgc-toolbar-label')).toHaveText(waiting, {
    timeout: 30_000
  });
  await runFirstCell(second, 'print("queued", 6 * 7)');
  await expect(current(second).locator('.jp-InputPrompt').first()).toContainText('[*]');

  // The first tab is loaded again (a reload, the notebook's own address): still the one wait.
  await first.goto(`${HUB_URL}/user/${CAROL}/lab/tree/${notebook}`);
  await expect(first.locator('#jupyterlab-splash')).toHaveCount(0, { timeout: 60_000 });
  await expect(current(first).locator('.jgc-toolbar-label')).toHaveText(waiting, {
    timeout: 30_000
  });
  for (const tab of [first, second]) {
    await expect(tab.locator('.jp-Dialog')).toHaveCount(0);
  }
  expect(await yourTickets(carol)).toHaveLength(1);
  await answerNewsQuestion(second);
  await second.screenshot({ path: path.join(SCREENSHOTS, 'multiuser-second-tab-waiting.png') });

  // Cancelled from the second tab's panel: neither tab waits any more. Waiting again from the
  // first tab's toolbar: both tabs wait again, on the one new start.
  const ticket = (await openPanel(second)).locator('.jgc-queue-section .jgc-ticket.jgc-mine');
  await ticket.locator('.jgc-ticket-cancel').click();
  await expect(ticket).toHaveCount(0, { timeout: 30_000 });
  for (const tab of [first, second]) {
    await expect(current(tab).locator('.jgc-toolbar-label')).toHaveText('Choose an image', {
      timeout: 30_000
    });
  }
  await current(first).locator('.jgc-toolbar-button').click();
  const picker = first.locator('.jgc-picker');
  await expect(picker).toBeVisible();
  await picker.locator('.jgc-picker-wait input').check();
  await picker.locator('.jgc-picker-gpus').selectOption('count:1');
  await first.locator('.jp-Dialog-button.jp-mod-accept').click();
  for (const tab of [first, second]) {
    await expect(current(tab).locator('.jgc-toolbar-label')).toHaveText(waiting, {
      timeout: 30_000
    });
  }
  expect(await yourTickets(carol)).toHaveLength(1);

  // Alice shuts her kernel down: both tabs are on the GPU, without a reload, and each runs code.
  await alice.page.locator('.lm-MenuBar-item', { hasText: 'Kernel' }).click();
  await alice.page.locator('.lm-Menu-item', { hasText: 'Shut Down Kernel' }).click();
  for (const tab of [first, second]) {
    await expect(current(tab).locator('.jgc-toolbar-label')).toHaveText(
      `demo-cuda:12.2 · GPU ${aliceGpu}`,
      { timeout: 60_000 }
    );
    // The cell as a person types it again (the one run while waiting went with the cancel).
    const who = tab === first ? 'the first tab' : 'the second tab';
    await current(tab).locator('.jp-Cell .cm-content').first().click();
    await tab.keyboard.press('Control+A');
    await tab.keyboard.type(`print("from ${who}:", 6 * 7)`);
    await tab.keyboard.press('Shift+Enter');
    await expect(current(tab).locator('.jp-OutputArea-output').first()).toHaveText(
      `from ${who}: 42`,
      { timeout: 30_000 }
    );
    await expect(tab.locator('.jp-Dialog')).toHaveCount(0);
  }
  const { body: after } = await api(carol, 'GET', 'api/sessions');
  expect(after.filter((s: { path: string }) => s.path === notebook)).toHaveLength(1);
  await second.close();
});

test('behind the Hub, an image tagged a minute ago is a kernel at once, named as its tag', async ({
  browser
}) => {
  test.setTimeout(180_000);
  const alice = await logIn(browser, ALICE);
  await openPanel(alice.page);
  // The administrator tags the course's image under a new name while the class is logged in.
  // (A tag of the demo's course repository: the demo offers those only.)
  const ref = `jgc/demo-cuda:v2-${Date.now().toString(36)}`;
  const tag = new ScriptProcess('new_tag.py', [GPU_IMAGE, ref]);
  try {
    expect((await tag.next()).ref).toBe(ref);
    // The panel lists it once refreshed (its button; no reload); a notebook on it opens on its
    // GPU, named as the tag, with no kernel picker.
    await refreshedRow(alice.page, ref);
    await newGpuNotebook(alice.page, false, ref);
    const label = current(alice.page).locator('.jgc-toolbar-label');
    const short = ref.split('/').pop()!;
    await expect(label).toHaveText(new RegExp(`^${short.replace('.', '\\.')} · GPU [01]$`), {
      timeout: 60_000
    });
    await expect(alice.page.locator('.jp-Dialog')).toHaveCount(0);
    await expect(current(alice.page).locator('.jgc-toolbar-button')).toHaveAttribute(
      'title',
      new RegExp(ref.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&'))
    );
    // Loaded again, the notebook reopens on its kernel: no "Select Kernel", no host kernel.
    const { body: sessions } = await api(alice, 'GET', 'api/sessions');
    const notebook: string = sessions[0].path;
    await alice.page.goto(`${HUB_URL}/user/${ALICE}/lab/tree/${notebook}`);
    await expect(alice.page.locator('#jupyterlab-splash')).toHaveCount(0, { timeout: 60_000 });
    await expect(current(alice.page).locator('.jgc-toolbar-label')).toHaveText(
      new RegExp(`^${short.replace('.', '\\.')} · GPU [01]$`),
      { timeout: 60_000 }
    );
    await expect(alice.page.locator('.jp-Dialog')).toHaveCount(0);
  } finally {
    // Its kernel first (afterEach would end it after the tag is gone).
    const { body: sessions } = await api(alice, 'GET', 'api/sessions');
    for (const session of sessions ?? []) {
      await api(alice, 'DELETE', `api/sessions/${session.id}`);
    }
    await tag.close();
  }
});

test("behind the Hub, a course image built again as a CPU build runs without the notebook's GPU, and the recorded content runs again on it", async ({
  browser
}) => {
  test.setTimeout(240_000);
  const alice = await logIn(browser, ALICE);
  // The administrator builds the course's image on the host (no registry): a GPU build first.
  const ref = `jgc/demo-cuda:course-${Date.now().toString(36)}`;
  const tag = new ScriptProcess('moved_tag.py', ['--local', ref]);
  const marker = "print('marker', open('/stamp-marker').read().strip())";
  const label = () => current(alice.page).locator('.jgc-toolbar-label');
  const short = ref.split('/').pop()!;
  try {
    const made = await tag.next();
    await refreshedRow(alice.page, ref);
    await newGpuNotebook(alice.page, false, ref);
    await expect(label()).toHaveText(new RegExp(`^${short} · GPU [01]$`), { timeout: 60_000 });
    await runFirstCell(alice.page, marker);
    const output = () => current(alice.page).locator('.jp-OutputArea-output').first();
    await expect(output()).toHaveText(`marker ${made.first}`, { timeout: 30_000 });
    await alice.page.keyboard.press('Control+S');
    const { body: sessions } = await api(alice, 'GET', 'api/sessions');
    const notebook: string = sessions[0].path;
    await expect
      .poll(async () => {
        const { body } = await api(alice, 'GET', `api/contents/${notebook}?content=1`);
        return body?.content?.metadata?.gpu_containers?.environment?.digest ?? '';
      })
      .toBe(made.first_digest);
    await api(alice, 'DELETE', `api/sessions/${sessions[0].id}`);

    // Built again, a CPU build now. The notebook loaded again asks; the reader decides later.
    expect((await tag.send('move')).moved).toBe(true);
    await alice.page.goto(`${HUB_URL}/user/${ALICE}/lab/tree/${notebook}`);
    await expect(alice.page.locator('#jupyterlab-splash')).toHaveCount(0, { timeout: 60_000 });
    const dialog = alice.page.locator('.jp-Dialog');
    await expect(dialog).toContainText("This Notebook's Image Has Changed", { timeout: 60_000 });
    await expect(dialog.getByRole('button', { name: 'Run the Recorded Content' })).toBeVisible();
    await dialog.getByRole('button', { name: 'Decide Later' }).click();
    // On the CPU build the kernel holds no GPU, said plainly (not "fewer GPUs than asked").
    await expect(label()).toHaveText(`${short} · No GPU`, { timeout: 60_000 });
    await expect(current(alice.page).locator('.jgc-toolbar-short')).toHaveCount(0);
    await answerNewsQuestion(alice.page);
    await alice.page
      .locator('.jp-NotebookPanel-toolbar')
      .first()
      .screenshot({ path: path.join(SCREENSHOTS, 'multiuser-cpu-build-toolbar.png') });

    // The recorded content, which the service kept: pinned, on a GPU again, its marker.
    await current(alice.page).locator('.jgc-toolbar-image-changed').click();
    await dialog.getByRole('button', { name: 'Run the Recorded Content' }).click();
    await expect(current(alice.page).locator('.jgc-toolbar-pinned')).toHaveText('(pinned)');
    await expect(label()).toHaveText(new RegExp(`^${short} · GPU [01]$`), { timeout: 60_000 });
    await current(alice.page).locator('.jp-Cell .cm-content').first().click();
    await alice.page.keyboard.press('Shift+Enter');
    await expect(output()).toHaveText(`marker ${made.first}`, { timeout: 30_000 });
    await expect(dialog).toHaveCount(0);
  } finally {
    const { body: sessions } = await api(alice, 'GET', 'api/sessions');
    for (const session of sessions ?? []) {
      await api(alice, 'DELETE', `api/sessions/${session.id}`);
    }
    await tag.close();
  }
});
