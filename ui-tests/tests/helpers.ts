/**
 * Helpers shared by the UI tests.
 */
import { ChildProcessWithoutNullStreams, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import type { IJupyterLabPageFixture } from '@jupyterlab/galata';
import { expect } from '@jupyterlab/galata';
import type { APIRequestContext, Locator, Page } from '@playwright/test';

/** Where start-server.sh keeps the server's home (playwright.config.ts sets it). */
export const SERVER_HOME = process.env.UI_TEST_HOME ?? '/tmp/jgc-ui-tests-8888';
export const SERVER_URL = `http://127.0.0.1:${process.env.UI_TEST_PORT ?? '8888'}`;

export const DEBIAN_IMAGE = 'jgc/debian-ipykernel:bookworm';
export const NGC_IMAGE = 'jgc-test/ngc-like:24.05-py3';

const SERVER_LOG = path.join(SERVER_HOME, 'logs', 'server.log');
// The extension logs it once the server has reattached or swept the kernel containers of earlier
// servers (tests/servers.py waits for it too).
const READY_LINE = 'Kernel containers at start';

function sleep(ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms));
}

function serverPid(): number | null {
  try {
    const pid = parseInt(fs.readFileSync(path.join(SERVER_HOME, 'server.pid'), 'utf8'), 10);
    return Number.isNaN(pid) ? null : pid;
  } catch {
    return null;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function readyCount(): number {
  try {
    return fs.readFileSync(SERVER_LOG, 'utf8').split(READY_LINE).length - 1;
  } catch {
    return 0;
  }
}

async function until(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs: number
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (log: ${SERVER_LOG})`);
    }
    await sleep(200);
  }
}

async function answers(url: string): Promise<boolean> {
  try {
    return (await fetch(url)).ok;
  } catch {
    return false;
  }
}

/**
 * Restart the Jupyter server as a user would: stop it, start it again on the same home, config
 * and workspace (start-server.sh does), and reload JupyterLab. Returns once the new server has
 * checked the kernel containers of the old one and the page has restored its layout (documents
 * that were open are open again).
 *
 * SIGTERM (default) is a clean stop: the server shuts its kernels down. SIGKILL leaves their
 * containers running, for the new server to reattach.
 */
export async function restartServer(
  page: IJupyterLabPageFixture,
  options: { signal?: NodeJS.Signals; timeoutMs?: number } = {}
): Promise<void> {
  const { signal = 'SIGTERM', timeoutMs = 90_000 } = options;
  const old = serverPid();
  if (old === null || !alive(old)) {
    throw new Error(`no running server in ${SERVER_HOME}/server.pid`);
  }
  const readyBefore = readyCount();
  const target = page.url();
  await layoutSaved(page);
  // Off JupyterLab while no server answers: galata's request mocks fetch on the page's behalf,
  // and a refused connection there fails the test.
  await leave(page, 'about:blank', url => url.protocol === 'about:');
  process.kill(old, signal);
  await until('the old server to exit', () => !alive(old), timeoutMs);
  await until(
    'a new server',
    () => {
      const pid = serverPid();
      return pid !== null && pid !== old && alive(pid);
    },
    timeoutMs
  );
  await until('the new server to answer', () => answers(`${SERVER_URL}/api`), timeoutMs);
  // Not fatal if the line never comes (its wording may change): the server answers already.
  await until('the extension to start', () => readyCount() > readyBefore, 15_000).catch(
    () => undefined
  );
  await leave(page, target, url => url.protocol.startsWith('http'));
  // Not galata's readiness check (an active Launcher): the restored layout is whatever the page
  // last saved, and the Launcher may not be in it.
  await page.waitForFunction(() => typeof (window as any).jupyterapp === 'object');
  await page.evaluate(async () => {
    const app = (window as any).jupyterapp;
    await app.started;
    await app.restored;
    // Restored documents are still loading: a notebook shows an empty cell until then.
    const widgets: any[] = Array.from(app.shell.widgets('main'));
    await Promise.all(widgets.map(widget => widget.context?.ready));
  });
}

/**
 * Wait until the server holds the page's layout with every open document in it. JupyterLab
 * saves the workspace half a second after its last change, so a page left sooner (a user
 * closing the tab right after saving) restores the layout saved before: the restart would
 * test what was open a moment earlier, not what the user left open.
 */
async function layoutSaved(page: IJupyterLabPageFixture): Promise<void> {
  // Polled from here: waitForFunction does not wait for a predicate's promise.
  await until(
    'the workspace to hold the open documents',
    () =>
      page.evaluate(async () => {
        const app = (window as any).jupyterapp;
        const config = document.getElementById('jupyter-config-data')?.textContent ?? '{}';
        const workspace: string = JSON.parse(config).workspace ?? 'default';
        const paths: string[] = Array.from(app.shell.widgets('main'))
          .map((widget: any) => widget.context?.path)
          .filter((path: unknown): path is string => typeof path === 'string');
        const saved = await app.serviceManager.workspaces.fetch(workspace);
        const layout = JSON.stringify(saved?.data?.['layout-restorer:data']?.main ?? {});
        return paths.every(path => layout.includes(JSON.stringify(path).slice(1, -1)));
      }),
    30_000
  );
}

// Navigation without galata's goto, which waits for an active Launcher.
async function leave(
  page: IJupyterLabPageFixture,
  url: string,
  arrived: (url: URL) => boolean
): Promise<void> {
  await Promise.all([
    page.waitForURL(arrived, { waitUntil: 'domcontentloaded' }),
    page.evaluate(href => {
      window.location.href = href;
    }, url)
  ]);
}

/**
 * The metadata of the notebook at `notebook` (a path under the server's root), as saved: read
 * from its file, again while a save is under way. Not through the contents API: jupyter_server
 * saves a notebook in place, and its read of a notebook being saved "recovers" it (moves the
 * file being written aside as .invalid), which can lose the notebook when the save ends
 * meanwhile; a read between its moves answered 400 "Unreadable Notebook" (a CI run failed so).
 */
export async function savedMetadata(notebook: string): Promise<any> {
  const file = path.join(SERVER_HOME, 'work', ...notebook.split('/'));
  let metadata: any = null;
  await expect
    .poll(
      () => {
        try {
          metadata = JSON.parse(fs.readFileSync(file, 'utf8')).metadata;
          return 'read';
        } catch (e) {
          return `${file}: ${e}`; // empty or half-written while the page saves it
        }
      },
      { timeout: 30_000 }
    )
    .toBe('read');
  return metadata;
}

/**
 * A notebook saved at `path` on the kernel spec `kernel`, with `section` as its
 * `gpu_containers` metadata (a GPU request, a stamp), as JupyterLab saves one.
 */
export async function putNotebook(
  request: APIRequestContext,
  path: string,
  kernel: string,
  section: object = {}
): Promise<void> {
  const saved = await request.put(`/api/contents/${path}`, {
    data: {
      type: 'notebook',
      format: 'json',
      content: {
        cells: [],
        metadata: {
          kernelspec: { name: kernel, display_name: kernel, language: 'python' },
          gpu_containers: section
        },
        nbformat: 4,
        nbformat_minor: 5
      }
    }
  });
  expect(saved.ok(), `PUT /api/contents/${path}: ${saved.status()}`).toBe(true);
}

/** The name of the kernel spec of an image: the server lists one per local image. */
export async function kernelNameFor(request: APIRequestContext, image: string): Promise<string> {
  const response = await request.get('/api/kernelspecs');
  if (!response.ok()) {
    throw new Error(`GET /api/kernelspecs: ${response.status()}`);
  }
  const specs: Record<string, { spec: { metadata?: any } }> = (await response.json())
    .kernelspecs;
  const found = Object.entries(specs).find(
    ([name, { spec }]) =>
      name.startsWith('gpuc-') &&
      (spec.metadata?.gpu_containers?.image ??
        spec.metadata?.kernel_provisioner?.config?.image) === image
  );
  if (!found) {
    throw new Error(`no kernel spec for ${image} among ${Object.keys(specs).join(', ')}`);
  }
  return found[0];
}

/**
 * A kernel container's start adds a network interface on this host (docker's veth), and Chromium
 * then fails the requests in flight (net::ERR_NETWORK_CHANGED): JupyterLab takes that for a lost
 * server and puts up its dialog over the page ("Server Connection Error"; behind JupyterHub,
 * "Server unavailable or unreachable"), whose clicks it then intercepts. Not the product's
 * doing, and only where the browser runs on the engine's host: dismissed when it shows, but only
 * after the browser reported such a change. Each failed request may put up a dialog of its own
 * (one change failed three requests, and a second dialog came as the first was dismissed): each
 * dialog takes one of the failures seen. Without one left the dialog means what it says, and the
 * test fails on it. Each spec calls it in a beforeEach (hub.spec.ts: for each student's page).
 */
export async function dismissNetworkChangeDialogs(page: Page): Promise<void> {
  const changes: string[] = [];
  page.on('requestfailed', request => {
    if (request.failure()?.errorText === 'net::ERR_NETWORK_CHANGED') {
      changes.push(request.url());
    }
  });
  const lost = page
    .locator('.jp-Dialog')
    .filter({ hasText: /Server Connection Error|Server unavailable or unreachable/ });
  await page.addLocatorHandler(lost, async dialog => {
    if (changes.length === 0) {
      const said = (await dialog.textContent()) ?? '';
      throw new Error(`JupyterLab lost its server, with no network change in the browser: ${said}`);
    }
    changes.shift();
    await dialog.locator('.jp-Dialog-footer button').last().click();
  });
}

/**
 * What the page knows of its visible notebook's kernel and first cell (its connection, the
 * kernel's status, the cell's source, execution count and outputs), as JSON: the server's log
 * tells its own side only.
 */
export async function notebookState(page: Page): Promise<string> {
  return page.evaluate(() => {
    const app = (window as any).jupyterapp;
    const panel = Array.from(app.shell.widgets('main') as Iterable<any>).find(
      w => w.hasClass('jp-NotebookPanel') && w.isVisible
    );
    const kernel = panel?.sessionContext?.session?.kernel;
    const cell = panel?.content?.widgets?.[0]?.model;
    return JSON.stringify({
      kernel: kernel
        ? { id: kernel.id, connection: kernel.connectionStatus, status: kernel.status }
        : null,
      cell: cell
        ? {
            source: cell.sharedModel.getSource(),
            executionCount: cell.executionCount ?? null,
            outputs: cell.outputs?.toJSON() ?? null
          }
        : null
    });
  });
}

/**
 * `check`, whose failure also says what the page knew of its notebook then (notebookState).
 */
export async function withNotebookState<T>(page: Page, check: Promise<T>): Promise<T> {
  try {
    return await check;
  } catch (error) {
    const state = await notebookState(page).catch(e => `unknown (${String(e)})`);
    if (error instanceof Error) {
      error.message += `\nThe page's notebook then: ${state}`;
      throw error;
    }
    throw new Error(`${String(error)}\nThe page's notebook then: ${state}`);
  }
}

/**
 * Close every main-area widget and end every session and kernel the server has, whether the page
 * knew of it or not. Returns the paths of the documents that were open.
 */
export async function stopAllKernels(page: IJupyterLabPageFixture): Promise<string[]> {
  const open: string[] = await page.evaluate(async () => {
    const app = (window as any).jupyterapp;
    const paths = Array.from(app.shell.widgets('main'))
      .map((w: any) => w.context?.path)
      .filter(Boolean);
    app.shell.closeAll();
    await app.serviceManager.sessions.shutdownAll();
    await app.serviceManager.kernels.shutdownAll();
    return paths;
  });
  const kernels = await page.request.get('/api/kernels');
  for (const kernel of (await kernels.json()) as { id: string }[]) {
    await page.request.delete(`/api/kernels/${kernel.id}`);
  }
  return open;
}

/**
 * Open the GPU Containers panel (through its command: a click on its tab would toggle it), once
 * JupyterLab has restored its layout: a page reached with `page.goto` (not galata's, which waits
 * for that) may still be restoring, and the restored layout's sidebar (the File Browser) then
 * replaces the panel the command showed. Asked again while it is not shown.
 */
export async function openPanel(page: Page): Promise<Locator> {
  const panel = page.locator('#jp-gpu-containers-panel');
  await expect(async () => {
    await page.evaluate(async () => {
      const app = (window as any).jupyterapp;
      await app.restored;
      await app.commands.execute('gpu-containers:open-panel');
    });
    await expect(panel).toBeVisible({ timeout: 2_000 });
  }).toPass({ timeout: 30_000 });
  return panel;
}

/** An image's row in the panel. */
export function imageRow(panel: Locator, reference: string): Locator {
  return panel.locator(`.jgc-image[data-reference="${reference}"]`);
}

/** What ui-tests/private_registry.py wrote: the private image and the registry's login. */
export function privateRegistry(): {
  ref: string;
  host: string;
  username: string;
  password: string;
} {
  return JSON.parse(fs.readFileSync(path.join(SERVER_HOME, 'registry.json'), 'utf8'));
}

/** A helper script of the UI tests (ui-tests/<script>.py) that prints one JSON line per step and
 * reads one command per line on its standard input; the end of its input stops it, and it removes
 * what it made. */
export class ScriptProcess {
  private lines: string[] = [];
  private waiting: ((line: string) => void) | null = null;
  readonly process: ChildProcessWithoutNullStreams;

  constructor(private readonly script: string, args: string[] = []) {
    this.process = spawn('python', [path.join(__dirname, '..', script), ...args]);
    let partial = '';
    this.process.stdout.on('data', (chunk: Buffer) => {
      partial += chunk.toString();
      let end: number;
      while ((end = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, end);
        partial = partial.slice(end + 1);
        if (this.waiting) {
          const resolve = this.waiting;
          this.waiting = null;
          resolve(line);
        } else {
          this.lines.push(line);
        }
      }
    });
    this.process.stderr.on('data', (chunk: Buffer) => process.stderr.write(chunk));
  }

  /** Its next JSON line; an error once it has exited (also when it had before the call). */
  async next(): Promise<any> {
    const line =
      this.lines.shift() ??
      (await new Promise<string>((resolve, reject) => {
        const exited = (): Error =>
          new Error(`${this.script} exited (${this.process.exitCode ?? this.process.signalCode})`);
        if (this.process.exitCode !== null || this.process.signalCode !== null) {
          reject(exited());
          return;
        }
        this.waiting = resolve;
        this.process.once('exit', () => reject(exited()));
      }));
    return JSON.parse(line);
  }

  /** One command, and its answer (an error, not a write to a closed pipe, once it has exited). */
  async send(command: string): Promise<any> {
    if (this.process.exitCode === null && this.process.signalCode === null) {
      this.process.stdin.write(`${command}\n`);
    }
    return this.next();
  }

  /** Ends its input, and waits for it to have removed what it made. */
  async close(): Promise<void> {
    if (this.process.exitCode !== null) {
      return;
    }
    const exited = new Promise(resolve => this.process.once('exit', resolve));
    this.process.stdin.end();
    await exited;
  }
}

/** Another student (ui-tests/other_student.py): a server of another local account, sharing this
 * server's host state directory, whose kernel holds the host's one GPU. The queue counts GPUs
 * per user, and a user who holds the only GPU may not wait for it: the holder must be someone
 * else. Closed, it stops its server and removes its home and the state directory. */
export class OtherStudent extends ScriptProcess {
  constructor(gpuUuid: string, kernelName: string) {
    super('other_student.py', [gpuUuid, kernelName]);
  }

  async endKernel(): Promise<void> {
    expect(await this.send('end')).toEqual({ ended: true });
  }
}

/** What the current notebook's page itself prints for `6 * 7`, through its own connection; or,
 * when no answer comes within 45 s, what the page knows of its kernel then (for the failure). */
export async function sixTimesSeven(page: Page): Promise<string> {
  return page.evaluate(async () => {
    const widget = (window as any).jupyterapp.shell.currentWidget;
    const kernel = widget.sessionContext.session.kernel;
    const future = kernel.requestExecute({ code: 'print(6 * 7)' });
    let out = '';
    future.onIOPub = (msg: any) => {
      if (msg.header.msg_type === 'stream') {
        out += msg.content.text;
      }
    };
    const answered = await Promise.race([
      future.done.then(() => true),
      new Promise<boolean>(resolve => setTimeout(() => resolve(false), 45_000))
    ]);
    if (answered) {
      return out.trim();
    }
    const now = widget.sessionContext.session?.kernel;
    return (
      `no answer in 45 s from kernel ${kernel.id} (${kernel.connectionStatus}, ` +
      `${kernel.status}, disposed: ${kernel.isDisposed}); the page's kernel now: ` +
      `${now?.id} (${now?.connectionStatus}, ${now?.status}); output so far: ${JSON.stringify(out)}`
    );
  });
}
