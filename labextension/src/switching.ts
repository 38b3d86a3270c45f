/**
 * The switch workflow: a new notebook on an image, and switching a notebook
 * to another image or GPU count (kept in the notebook's metadata): the picker, the confirmation, the REST calls and
 * the error dialogs.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Dialog, Notification, showErrorMessage } from '@jupyterlab/apputils';
import { PathExt } from '@jupyterlab/coreutils';
import { NotebookPanel } from '@jupyterlab/notebook';
import { KernelSpec } from '@jupyterlab/services';
import type { TranslationBundle } from '@jupyterlab/translation';

import { messageOf, startNotebookKernel } from './api';
import { reattach } from './reattach';
import { refreshOnceIn } from './refresh';
import { confirmDialog, showFormDialog } from './dialogs';
import { showsCluster } from './cluster';
import { gpusOfKernel } from './gpuformat';
import { noGpuText } from './gpuwords';
import { shortImageName } from './imageformat';
import type { IGpuContainersModel } from './tokens';
import { ImagePicker } from './picker';
import { takeUpSession } from './sessionfollow';
import { ticketFor, waitingLabel } from './sharing';
import { IImageRow } from './imagetypes';
import { GpuRequest } from './kerneltypes';
import { GPU_METADATA_KEY, setInSection } from './metadatakeys';

/**
 * How long to wait for the page to see the kernel the server started.
 */
const ATTACH_TIMEOUT_MS = 15000;

/**
 * The image reference of a kernel spec, or `''` for a kernel that does not
 * run in a container.
 */
export function imageOfSpec(spec: KernelSpec.ISpecModel | undefined): string {
  const meta = spec?.metadata?.['gpu_containers'] as
    { image?: unknown } | undefined;
  return typeof meta?.image === 'string' ? meta.image : '';
}

/**
 * The kernel spec's model by name, from the page's kernel spec manager.
 */
export function specOf(
  app: JupyterFrontEnd,
  name: string
): KernelSpec.ISpecModel | undefined {
  return app.serviceManager.kernelspecs.specs?.kernelspecs[name] ?? undefined;
}

export { GPU_METADATA_KEY };

/**
 * A kernel spec's default GPU request (its provisioner's `gpus`), or `null`
 * when it has none (a native kernel).
 */
export function specGpuRequest(
  spec: KernelSpec.ISpecModel | undefined
): GpuRequest {
  const provisioner = spec?.metadata?.['kernel_provisioner'] as
    { config?: { gpus?: unknown } } | undefined;
  return notebookGpuRequest({ [GPU_METADATA_KEY]: provisioner?.config });
}

/**
 * How many GPUs a request asks for (ids count one each).
 */
export function requestedCount(gpus: GpuRequest): number {
  if (Array.isArray(gpus)) {
    return gpus.length;
  }
  return gpus ?? 0;
}

/**
 * Whether a kernel spec's image is a CPU build (the server's description of
 * it: no CUDA of its own, and no administrator's word that it is a GPU build).
 */
export function specIsCpuBuild(
  spec: KernelSpec.ISpecModel | undefined
): boolean {
  const own = spec?.metadata?.['gpu_containers'] as
    { gpu?: unknown } | undefined;
  return own?.gpu === false;
}

/**
 * How many GPUs a notebook's kernel asked for: the notebook's own request,
 * else its kernel spec's default. None on a CPU build: the server starts its
 * kernels without the GPUs a notebook saved while its tag named a GPU build.
 */
export function askedGpus(
  metadata: Record<string, unknown> | undefined,
  spec: KernelSpec.ISpecModel | undefined
): number {
  const own = notebookGpuRequest(metadata);
  if (own !== null && specIsCpuBuild(spec)) {
    return 0;
  }
  return requestedCount(own !== null ? own : specGpuRequest(spec));
}

/**
 * The GPU request a notebook's metadata holds, or `null` when it says
 * nothing (the kernel spec's default applies).
 */
export function notebookGpuRequest(
  metadata: Record<string, unknown> | undefined
): GpuRequest {
  const section = metadata?.[GPU_METADATA_KEY] as
    { gpus?: unknown } | undefined;
  const gpus = section?.gpus;
  if (typeof gpus === 'number' && Number.isInteger(gpus) && gpus >= 0) {
    return gpus;
  }
  if (Array.isArray(gpus) && gpus.every(g => typeof g === 'string')) {
    return gpus as string[];
  }
  return null;
}

/**
 * The metadata entry for `gpus`, or `undefined` for `null` (the default:
 * the notebook says nothing).
 */
function gpuMetadata(
  gpus: GpuRequest
): { gpus: number | string[] } | undefined {
  return gpus === null ? undefined : { gpus };
}

/**
 * Keep `gpus` in the notebook's metadata (`null`: remove it).
 */
export function setNotebookGpuRequest(
  panel: NotebookPanel,
  gpus: GpuRequest
): void {
  // Its own key only: the environment stamp and pin (environment.ts) stay.
  setInSection(panel.model, 'gpus', gpus);
}

/**
 * The notebook content a new notebook on `kernelName` starts with: the
 * kernel spec and the GPU request in its metadata, so it reopens on the same
 * image with the same GPUs.
 */
function emptyNotebook(
  kernelName: string,
  spec: KernelSpec.ISpecModel | undefined,
  gpus: GpuRequest
): Record<string, unknown> {
  const entry = gpuMetadata(gpus);
  return {
    // The empty cell JupyterLab would add on opening (which marked the new
    // notebook modified before anything of the user's changed).
    cells: [
      {
        cell_type: 'code',
        id: cellId(),
        metadata: {},
        source: '',
        outputs: [],
        execution_count: null
      }
    ],
    metadata: {
      kernelspec: {
        name: kernelName,
        display_name: spec?.display_name ?? kernelName,
        language: spec?.language ?? 'python'
      },
      ...(entry ? { [GPU_METADATA_KEY]: entry } : {})
    },
    nbformat: 4,
    nbformat_minor: 5
  };
}

/**
 * A new cell's id (nbformat 4.5): random, as JupyterLab makes them.
 */
function cellId(): string {
  const bytes = new Uint8Array(16);
  if (globalThis.crypto?.getRandomValues) {
    globalThis.crypto.getRandomValues(bytes);
  } else {
    bytes.forEach((_, i) => (bytes[i] = Math.floor(Math.random() * 256)));
  }
  return Array.from(bytes, b => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Create a notebook in `directory` and start its kernel on the image with
 * `gpus`, then open it. A refused start (no free GPU, image cannot run here)
 * is shown with the server's sentence and leaves no notebook behind.
 *
 * With `wait`, a start whose GPUs are taken waits for them in the GPU queue:
 * the notebook opens as soon as the server lists its session (waiting for a
 * GPU), and the page attaches to the kernel once it runs. On a cluster whose
 * scheduler queues the start (Slurm keeps its job pending) it opens so too.
 */
export async function launchNotebook(
  app: JupyterFrontEnd,
  model: IGpuContainersModel,
  row: IImageRow,
  gpus: GpuRequest,
  directory: string,
  trans: TranslationBundle,
  wait?: boolean
): Promise<void> {
  const contents = app.serviceManager.contents;
  const sessions = app.serviceManager.sessions;
  const spec = specOf(app, row.kernel_name);
  let path = '';
  let started: Promise<unknown> = Promise.resolve();
  const since = Date.now();
  // Whether the notebook opens while its start may still wait: a wait in the
  // GPU queue, or in a cluster's scheduler.
  const early = wait === true || showsCluster(model.cluster);
  try {
    const created = await contents.newUntitled({
      path: directory,
      type: 'notebook'
    });
    path = created.path;
    await contents.save(path, {
      type: 'notebook',
      format: 'json',
      content: emptyNotebook(row.kernel_name, spec, gpus)
    });
    started = startNotebookKernel(
      path,
      row.kernel_name,
      gpus,
      model.serverSettings,
      true,
      trans,
      wait
    );
    if (early) {
      // The queue shows the wait once the server has it: read it soon.
      refreshOnceIn(500, 'gpu-containers:launch-wait', () =>
        model.refreshGpus()
      );
      await untilListed(sessions, path, started);
    } else {
      await started;
    }
  } catch (error) {
    if (path) {
      await contents.delete(path).catch(() => undefined);
    }
    // The user cancelled its wait (a cluster's scheduler queued it): the
    // queue's notification says so, once.
    if (!path || !model.cancelledSince(path, since)) {
      await showErrorMessage(
        trans.__(
          'Could not start a kernel on %1',
          shortImageName(row.reference)
        ),
        messageOf(error)
      );
    }
    return;
  }
  // The page must know the session before the notebook opens: a notebook that
  // finds none for its path starts one of its own (a second kernel).
  await retried(() => sessions.refreshRunning());
  const widget = await openNotebook(app, path, row.kernel_name);
  void model.refreshGpus();
  if (!widget?.sessionContext || !widget.context) {
    return;
  }
  if (early) {
    void keepClean(widget, false).catch(() => undefined);
  }
  // A waiting start ends later: how is told by the queue's notification.
  void started
    .then(
      async () => {
        await retried(() => sessions.refreshRunning()).catch(() => undefined);
        // The page tried the kernel while it waited, and may have given up.
        if (early) {
          await reattach(widget.sessionContext.session?.kernel);
        }
        void model.refreshGpus();
        await keepClean(widget);
      },
      () => undefined
    )
    .catch(error => {
      console.warn(`GPU Containers: ${messageOf(error)}`);
    });
}

/**
 * Open the notebook at `path`, and open it again, up to three times in all,
 * when its first read failed but the file reads now: the kernel's container
 * that started just before adds a network interface on the engine's host,
 * and a browser on that host then fails the requests in flight
 * (net::ERR_NETWORK_CHANGED). JupyterLab would show "File Load Error", close
 * the tab, and ask whether to save the empty notebook it never read, beside
 * a running kernel; the user's file is fine, so the error is closed and the
 * notebook read again. A read that fails again (the file is gone, or
 * forbidden) is left as JupyterLab shows it.
 */
async function openNotebook(
  app: JupyterFrontEnd,
  path: string,
  kernelName: string
): Promise<NotebookPanel | undefined> {
  const name = PathExt.basename(path);
  for (let attempt = 1; ; attempt++) {
    // The tab this attempt opens, once docmanager:open has answered.
    const tab: { widget?: NotebookPanel } = {};
    const failed = loadErrorOf(name, () => {
      // JupyterLab closes a tab whose read failed: nothing of the user's is
      // in it, so it closes without asking to save.
      const model = tab.widget?.context?.model;
      if (model) {
        model.dirty = false;
      }
    });
    const opened = (await app.commands.execute('docmanager:open', {
      path,
      factory: 'Notebook',
      kernel: { name: kernelName }
    })) as NotebookPanel | undefined;
    tab.widget = opened;
    if (!opened?.context) {
      failed.stop();
      return opened;
    }
    // JupyterLab's context says a failed read only by its dialog: its
    // `ready` stays pending.
    const dialog = await Promise.race([
      opened.context.ready.then(() => null),
      new Promise<null>(resolve =>
        opened.disposed.connect(() => resolve(null))
      ),
      failed.dialog
    ]).finally(() => failed.stop());
    if (dialog === null || attempt >= 3) {
      if (attempt > 1 && dialog === null && !opened.isDisposed) {
        // The failed tab's closing made another one current.
        app.shell.activateById(opened.id);
      }
      return opened;
    }
    // A pause before the next read, as after any failed step: not a refresh.
    await new Promise(resolve => setTimeout(resolve, 500 * attempt));
    const readable = await app.serviceManager.contents
      .get(path, { content: false })
      .then(
        () => true,
        () => false
      );
    if (!readable) {
      return opened;
    }
    dialog.reject();
    // JupyterLab closes the failed tab by itself, once it asked nothing (above);
    // it must be gone before the next open, which would otherwise find it.
    opened.dispose();
  }
}

/**
 * The error dialog JupyterLab puts up when its read of the document named
 * `name` fails, once it shows (`dialog`; `shown` is called as it is made),
 * until `stop`. Its title is JupyterLab's own sentence, in JupyterLab's own
 * translation: the dialog's accessible name begins with it as the dialog is
 * made (its header is drawn later, by React).
 */
function loadErrorOf(
  name: string,
  shown: () => void
): {
  dialog: Promise<Dialog<unknown>>;
  stop: () => void;
} {
  const title = Dialog.translator
    .load('jupyterlab')
    .__('File Load Error for %1', name);
  const isLoadError = (dialog: Dialog<unknown>): boolean => {
    const label = dialog.node.getAttribute('aria-label') ?? '';
    return label === title || label.startsWith(`${title} `);
  };
  let onAdded: (_: unknown, dialog: Dialog<unknown>) => void = () => undefined;
  const dialog = new Promise<Dialog<unknown>>(resolve => {
    onAdded = (_, added) => {
      if (isLoadError(added)) {
        shown();
        resolve(added);
      }
    };
    Dialog.tracker.widgetAdded.connect(onAdded);
  });
  return {
    dialog,
    stop: () => {
      Dialog.tracker.widgetAdded.disconnect(onAdded);
    }
  };
}

/**
 * Resolve once the server lists a session for `path` (its kernel waits for
 * a GPU, or runs already); reject when the start fails first.
 */
async function untilListed(
  sessions: JupyterFrontEnd['serviceManager']['sessions'],
  path: string,
  started: Promise<unknown>
): Promise<void> {
  let settled = false;
  let failure: { error: unknown } | null = null;
  started.then(
    () => (settled = true),
    error => {
      settled = true;
      failure = { error };
    }
  );
  for (;;) {
    // A read that fails (the network blinked) is read again at the next turn.
    await sessions.refreshRunning().catch(() => undefined);
    if (failure !== null) {
      throw (failure as { error: unknown }).error;
    }
    if (settled) {
      return;
    }
    for (const session of sessions.running()) {
      if (session.path === path) {
        return;
      }
    }
    // A pause between two looks at the page's own session list (which
    // JupyterLab keeps current): a wait for a condition, not a refresh.
    await new Promise(resolve => setTimeout(resolve, 300));
  }
}

/**
 * A new notebook opens unmodified: JupyterLab writes its kernel's language
 * and spec into its metadata once the kernel answers, which marks it
 * modified though nothing of the user's changed (the file holds the same
 * notebook, and JupyterLab writes the same again at its next save). While it
 * is untouched, that is not a change to keep: it is marked unmodified, with
 * no request (a save the network drops would put up JupyterLab's error).
 */
async function keepClean(
  widget: NotebookPanel,
  withInfo = true
): Promise<void> {
  await widget.context.ready;
  await widget.sessionContext.ready;
  const kernel = widget.sessionContext.session?.kernel;
  if (kernel) {
    // A kernel that waits for a GPU answers no info yet; its spec, JupyterLab
    // writes at once.
    if (withInfo) {
      await kernel.info.catch(() => undefined);
    }
    await kernel.spec.catch(() => undefined);
  }
  // JupyterLab's own handlers of the same answers run first (a yield to
  // them, not a refresh).
  await new Promise(resolve => setTimeout(resolve, 0));
  const model = widget.model;
  if (!model || widget.isDisposed || !model.dirty) {
    return;
  }
  const cells = model.sharedModel.cells;
  if (cells.length <= 1 && cells.every(cell => cell.getSource() === '')) {
    model.dirty = false;
  }
}

/**
 * `step` again, up to three times in all, when it fails: a request the
 * browser dropped as the host's network changed (a container's start adds
 * an interface) would otherwise leave the page behind the server.
 */
async function retried<T>(step: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await step();
    } catch (error) {
      if (attempt >= 3) {
        throw error;
      }
      // A pause before trying a failed step again, not a refresh.
      await new Promise(resolve => setTimeout(resolve, 500 * attempt));
    }
  }
}

/**
 * Whether restarting or switching a kernel in this display status discards state, and so is
 * confirmed first. Only a dead kernel has none left: 'unknown' is what a page shows after any
 * reconnect (a restart, a network blip, a laptop waking up) until a cell runs, and the kernel
 * may hold hours of work by then.
 */
export function switchDiscardsState(kernelDisplayStatus: string): boolean {
  return kernelDisplayStatus !== 'dead';
}

/**
 * Ask for an image and GPUs for the notebook, confirm when that discards a
 * running kernel, then restart or switch its kernel.
 */
export async function switchNotebook(
  app: JupyterFrontEnd,
  model: IGpuContainersModel,
  panel: NotebookPanel,
  trans: TranslationBundle
): Promise<void> {
  const context = panel.sessionContext;
  if (!model.catalog) {
    await model.refreshImages();
  }
  if (!model.catalog) {
    await showErrorMessage(
      trans.__('Images unavailable'),
      model.catalogError || trans.__('The image list could not be read.')
    );
    return;
  }
  const kernel = context.session?.kernel ?? null;
  const held = kernel
    ? gpusOfKernel(model.gpus, kernel.id, model.cluster).length
    : 0;
  // Waiting for busy GPUs is offered where the server has a GPU queue.
  const picker = new ImagePicker(
    model.catalog.images,
    model.gpus,
    kernel?.name ?? '',
    kernel?.id ?? '',
    held,
    trans,
    {
      offered: !!model.queue,
      byDefault: model.queue?.wait_by_default ?? false
    },
    model.cluster
  );
  const choice = await showFormDialog({
    title: trans.__(
      'Image and GPUs for %1',
      panel.context.localPath.split('/').pop() ?? ''
    ),
    body: picker,
    accept: trans.__('Switch'),
    focusNodeSelector: 'select'
  });
  if (!choice) {
    return;
  }
  const { kernelName, gpus, problem, wait } = choice;
  if (problem) {
    await showErrorMessage(trans.__('Cannot switch'), problem);
    return;
  }
  if (kernel && switchDiscardsState(context.kernelDisplayStatus)) {
    const sameImage = kernel.name === kernelName;
    const confirmed = await confirmDialog({
      title: sameImage
        ? trans.__('Restart the kernel?')
        : trans.__('Switch the image?'),
      body: sameImage
        ? trans.__(
            'The kernel will restart in a new container: its variables and everything else in its memory are lost. The notebook stays open and keeps its cells and outputs.'
          )
        : trans.__(
            'The kernel will restart in a new container of the chosen image: its variables and everything else in its memory are lost. The notebook stays open and keeps its cells and outputs.'
          ),
      action: sameImage ? trans.__('Restart') : trans.__('Switch')
    });
    if (!confirmed) {
      return;
    }
  }
  await applyKernelChoice(app, model, panel, kernelName, gpus, trans, wait);
}

/**
 * Start, restart or switch the notebook's kernel through the server, attach
 * the page to the new kernel, and save the kernel spec and the GPU request in
 * the notebook, so that it reopens on them wherever it goes.
 */
export async function applyKernelChoice(
  app: JupyterFrontEnd,
  model: IGpuContainersModel,
  panel: NotebookPanel,
  kernelName: string,
  gpus: GpuRequest,
  trans: TranslationBundle,
  wait?: boolean
): Promise<void> {
  const context = panel.sessionContext;
  const image = imageOfSpec(specOf(app, kernelName)) || kernelName;
  const what = trans.__(
    '%1 with %2',
    shortImageName(image),
    gpuCountLabel(trans, gpus)
  );
  const id = Notification.emit(trans.__('Starting %1…', what), 'in-progress', {
    autoClose: false
  });
  const since = Date.now();
  // While the start waits in the GPU queue, the notification says so (and
  // where it stands) rather than spin "Starting…" for the whole wait.
  let told = '';
  const onQueue = (): void => {
    const ticket = ticketFor(
      model.queue,
      panel.context.localPath,
      context.session?.kernel?.id ?? ''
    );
    const message = ticket
      ? trans.__('%1: %2…', what, waitingLabel(trans, ticket))
      : '';
    if (message && message !== told) {
      told = message;
      Notification.update({
        id,
        message,
        type: 'in-progress',
        autoClose: false
      });
    }
  };
  model.changed.connect(onQueue);
  try {
    const spec = specOf(app, kernelName);
    const remember = (): void => {
      panel.model?.setMetadata('kernelspec', {
        name: kernelName,
        display_name: spec?.display_name ?? kernelName,
        language: spec?.language ?? 'python'
      });
      setNotebookGpuRequest(panel, gpus);
    };
    // A start that may wait is the server's own, with or without a session:
    // the page's own start (below) would not wait, and the notebook's wait
    // is listed as its session, which the page takes up.
    if (context.session || wait) {
      // While it waits for busy GPUs the answer comes when the kernel runs;
      // the panel and the toolbar show its place meanwhile.
      if (wait) {
        refreshOnceIn(1000, 'gpu-containers:switch-wait', () =>
          model.refreshGpus()
        );
      }
      const sessions = app.serviceManager.sessions;
      const started = startNotebookKernel(
        panel.context.path,
        kernelName,
        gpus,
        model.serverSettings,
        true,
        trans,
        wait
      );
      // The page may have no session by now (a restart whose wait was
      // cancelled shut its kernel down): it takes the one the server lists
      // for the waiting kernel, so that it shows the wait.
      const adopted = wait
        ? untilListed(sessions, panel.context.localPath, started)
            .then(() => adoptListedSession(panel, sessions))
            .catch(() => undefined)
        : Promise.resolve();
      const reply = await started;
      await adopted;
      // The server changed the session's kernel: have the page see it now
      // rather than at the next poll of the sessions.
      await retried(() => sessions.refreshRunning());
      await adoptListedSession(panel, sessions);
      await waitForKernel(panel, reply.session?.kernel.id ?? '', trans);
      // The page tried the kernel while it waited, and may have given up.
      if (wait) {
        await reattach(context.session?.kernel);
      }
      remember();
      await panel.context.save();
    } else {
      // No session: the server checks that the GPUs can be had, and the page
      // starts the kernel its own way (a session made by the server would be
      // a second), which reads the request from the saved notebook.
      await startNotebookKernel(
        panel.context.path,
        kernelName,
        gpus,
        model.serverSettings,
        false,
        trans,
        wait
      );
      remember();
      await panel.context.save();
      await context.changeKernel({ name: kernelName });
      if (panel.model?.dirty) {
        await panel.context.save(); // the kernel spec, as JupyterLab wrote it
      }
    }
    Notification.update({
      id,
      message: trans.__('Running on %1.', what),
      type: 'success',
      autoClose: 3000
    });
  } catch (error) {
    Notification.dismiss(id);
    // The user cancelled its wait: the queue's notification says so, once.
    if (!model.cancelledSince(panel.context.localPath, since)) {
      await showErrorMessage(
        trans.__('Could not start %1', what),
        messageOf(error)
      );
    }
  } finally {
    model.changed.disconnect(onQueue);
    void model.refreshGpus();
  }
}

/**
 * Attach the notebook's page to the session the server lists for its path,
 * when the page has none or an older one: a session the server made while
 * the page's was gone (the kernel it named was shut down) is never adopted
 * by JupyterLab by itself, and the page would say "No kernel" beside a
 * running one. Asking the sessions API for a session of a path that has one
 * answers that session (no second kernel starts).
 */
async function adoptListedSession(
  panel: NotebookPanel,
  sessions: JupyterFrontEnd['serviceManager']['sessions']
): Promise<void> {
  const context = panel.sessionContext;
  let listed: { id: string; kernel: { id: string } | null } | undefined;
  for (const session of sessions.running()) {
    if (session.path === panel.context.localPath) {
      listed = session;
    }
  }
  if (!listed?.kernel || context.isDisposed) {
    return;
  }
  const mine = context.session;
  if (mine && !mine.isDisposed && mine.id === listed.id) {
    return;
  }
  await takeUpSession(context, listed.kernel.id);
}

/**
 * Resolve once the notebook's session runs kernel `kernelId`.
 */
function waitForKernel(
  panel: NotebookPanel,
  kernelId: string,
  trans: TranslationBundle
): Promise<void> {
  const context = panel.sessionContext;
  if (context.session?.kernel?.id === kernelId) {
    return Promise.resolve();
  }
  return new Promise((resolve, reject) => {
    const check = (): void => {
      if (context.session?.kernel?.id === kernelId) {
        done();
        resolve();
      }
    };
    // A deadline, not a refresh.
    const timer = setTimeout(() => {
      done();
      reject(
        new Error(
          trans.__(
            'The kernel started, but this page did not attach to it: reload the page.'
          )
        )
      );
    }, ATTACH_TIMEOUT_MS);
    const done = (): void => {
      clearTimeout(timer);
      context.kernelChanged.disconnect(check);
    };
    context.kernelChanged.connect(check);
  });
}

/**
 * A GPU request in a few words: `2 GPUs`, `1 chosen GPU`, `its default GPUs`.
 */
function gpuCountLabel(trans: TranslationBundle, gpus: GpuRequest): string {
  if (Array.isArray(gpus)) {
    return trans._n('%1 chosen GPU', '%1 chosen GPUs', gpus.length);
  }
  if (gpus === null) {
    return trans.__('its default GPUs');
  }
  return gpus === 0
    ? noGpuText(trans, 'sentence')
    : trans._n('%1 GPU', '%1 GPUs', gpus);
}
