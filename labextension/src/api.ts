import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import type { TranslationBundle } from '@jupyterlab/translation';

import { notebookKernelStateOf } from './environmentreaders';
import { INotebookKernelState } from './environmenttypes';
import { IClusterView, IGpuReport, IStatus } from './gputypes';
import { translationBundle } from './i18n';
import {
  ICatalog,
  IPull,
  IPullRequest,
  IRegistryCredentials
} from './imagetypes';
import { Reader, isObject, parseJson } from './json';
import {
  GpuRequest,
  IKernelList,
  IKernelReclaim,
  IKernelView,
  INotebookKernelReply,
  INotebookKernelRequest
} from './kerneltypes';
import { packagesOf } from './packagereaders';
import { ISave, ISaves, saveOf, savesOf } from './savetypes';
import { IPackages } from './packagetypes';
import {
  adminActionReplyOf,
  catalogOf,
  clusterViewOf,
  gpuReportOf,
  kernelListOf,
  kernelViewOf,
  notebookKernelReplyOf,
  pullOf,
  statusOf
} from './readers';
import {
  adminViewOf,
  noticesOf,
  prePullsOf,
  queueOf,
  quotaOf,
  reclaimOf
} from './sharingreaders';
import {
  AdminAction,
  IAdminActionReply,
  IAdminNotice,
  IAdminView,
  IGpuQueue,
  IGpuQuota,
  IPrePulls
} from './sharingtypes';

/**
 * The URL namespace of the server extension's REST API.
 */
export const API_NAMESPACE = 'gpu-containers';

/**
 * A failed call to the server extension, with a message fit to show people.
 */
export class ApiError extends Error {
  /**
   * @param message A sentence for people, never a raw response body.
   * @param status The HTTP status, or `undefined` when no response came back.
   */
  constructor(
    message: string,
    readonly status?: number
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/**
 * The sentence of an error, whatever was thrown.
 */
export function messageOf(error: unknown): string {
  if (error instanceof ApiError || error instanceof Error) {
    return error.message;
  }
  return String(error);
}

/**
 * Pick the sentence to show for an error response.
 *
 * The server answers errors as JSON `{"message": ..., "reason": ...}`
 * (jupyter_server's style): prefer `message`, then `reason`, then the HTTP
 * status text. A body that is not such JSON is never shown as it is.
 *
 * @param body The response body, as text.
 * @param status The HTTP status code.
 * @param statusText The HTTP status text (empty over HTTP/2).
 * @param trans The extension's translation bundle; English by default.
 */
export function errorMessage(
  body: string,
  status: number,
  statusText: string,
  trans: TranslationBundle = translationBundle()
): string {
  const parsed = parseJson(body);
  const fields = isObject(parsed) ? parsed : null;
  for (const key of ['message', 'reason']) {
    const value = fields?.[key];
    if (typeof value === 'string' && value.trim() !== '') {
      // The option that decided it: the server names it to administrators only.
      const setting = fields?.setting;
      return typeof setting === 'string' && setting.trim() !== ''
        ? trans.__('%1 (setting: %2)', value.trim(), setting.trim())
        : value.trim();
    }
  }
  const text = statusText.trim();
  return text !== ''
    ? trans.__('%1 (HTTP %2)', text, status)
    : trans.__('HTTP error %1', status);
}

/**
 * Call the server extension's REST API.
 *
 * @param endPoint The path below `/gpu-containers/`, e.g. `status`.
 * @param init Options of the request (method, body, ...).
 * @param settings The server connection; the page's own by default.
 * @param trans The extension's translation bundle; English by default.
 * @returns The response body, parsed as JSON (`undefined` when empty), not
 *   yet read: `readAPI` reads it (json.ts).
 * @throws {ApiError} When the server cannot be reached, answers an error
 *   status, or answers something that is not JSON.
 */
export async function requestAPI(
  endPoint: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings(),
  trans: TranslationBundle = translationBundle()
): Promise<unknown> {
  return (await fetchJson(endPoint, init, settings, trans)).value;
}

/**
 * Call the REST API and read its answer with `read` (json.ts).
 *
 * @throws {ApiError} As `requestAPI`, and when the answer is not the
 *   document `read` reads (with the response's status, as for an answer
 *   that is not JSON).
 */
export async function readAPI<T>(
  endPoint: string,
  read: Reader<T>,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings(),
  trans: TranslationBundle = translationBundle()
): Promise<T> {
  const { value, status } = await fetchJson(endPoint, init, settings, trans);
  const document = read(value);
  if (document === null) {
    throw new ApiError(
      trans.__(
        "The server's answer to %1 is not what this page expects.",
        `${API_NAMESPACE}/${endPoint}`
      ),
      status
    );
  }
  return document;
}

async function fetchJson(
  endPoint: string,
  init: RequestInit,
  settings: ServerConnection.ISettings,
  trans: TranslationBundle
): Promise<{ value: unknown; status: number }> {
  const url = URLExt.join(settings.baseUrl, API_NAMESPACE, endPoint);

  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    throw new ApiError(
      trans.__('Could not reach the Jupyter server: %1', detail)
    );
  }

  const body = await response.text();
  if (!response.ok) {
    throw new ApiError(
      errorMessage(body, response.status, response.statusText, trans),
      response.status
    );
  }
  if (body.trim() === '') {
    return { value: undefined, status: response.status };
  }
  try {
    return { value: JSON.parse(body), status: response.status };
  } catch {
    throw new ApiError(
      trans.__(
        "The server's answer to %1 is not JSON.",
        `${API_NAMESPACE}/${endPoint}`
      ),
      response.status
    );
  }
}

/**
 * Fetch the container engine's status and the number of container kernel specs.
 */
export function getStatus(
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<IStatus> {
  return readAPI('status', statusOf, { method: 'GET' }, settings, trans);
}

/**
 * Fetch the host's GPUs and who holds them.
 */
export function getGpus(
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<IGpuReport> {
  return readAPI('gpus', gpuReportOf, { method: 'GET' }, settings, trans);
}

/**
 * Fetch the cluster's GPU node pools (Kubernetes; on Docker no pools).
 */
export function getCluster(
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<IClusterView> {
  return readAPI('cluster', clusterViewOf, { method: 'GET' }, settings, trans);
}

/**
 * Fetch the image catalog. Readiness probes of new images run in the
 * background: their rows say `kernel_ready: null` until a later fetch.
 */
export function getImages(
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<ICatalog> {
  return readAPI('images', catalogOf, { method: 'GET' }, settings, trans);
}

/**
 * Start a pull of `image`, or join the one under way.
 *
 * @param auth Credentials for this pull only; the stored ones when omitted.
 */
export function startPull(
  image: string,
  auth?: IRegistryCredentials,
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<IPull> {
  const request: IPullRequest = auth ? { image, auth } : { image };
  return readAPI(
    'pulls',
    pullOf,
    { method: 'POST', body: JSON.stringify(request) },
    settings,
    trans
  );
}

/**
 * Cancel a pull; resolves with its final snapshot.
 */
export function cancelPull(
  pullId: string,
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<IPull> {
  return readAPI(
    `pulls/${encodeURIComponent(pullId)}`,
    pullOf,
    { method: 'DELETE' },
    settings,
    trans
  );
}

/**
 * Store the user's own login for a registry in the server's memory.
 */
export function putRegistryCredentials(
  registry: string,
  username: string,
  password: string,
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<void> {
  const login: IRegistryCredentials = { username, password };
  return requestAPI(
    `registries/${encodeURIComponent(registry)}/credentials`,
    { method: 'PUT', body: JSON.stringify(login) },
    settings,
    trans
  ).then(nothing);
}

/**
 * Give a notebook a kernel of `kernelName` with `gpus`, remembered for it:
 * starts one when it has none, restarts it for a new GPU request, or switches
 * it to another image (the old kernel is shut down). With `start` false the
 * request is only checked and stored, for the next start of the notebook's
 * kernel.
 */
export function startNotebookKernel(
  path: string,
  kernelName: string | null,
  gpus: GpuRequest,
  settings?: ServerConnection.ISettings,
  start = true,
  trans?: TranslationBundle,
  wait?: boolean
): Promise<INotebookKernelReply> {
  // `wait`: queue for busy GPUs rather than be refused (left out: the
  // server's default, GPUQueue.wait_by_default).
  const request: INotebookKernelRequest = {
    path,
    kernel_name: kernelName,
    gpus,
    start,
    ...(wait === undefined ? {} : { wait })
  };
  return readAPI(
    'notebooks/kernel',
    notebookKernelReplyOf,
    { method: 'POST', body: JSON.stringify(request) },
    settings,
    trans
  );
}

/**
 * What a notebook's kernel runs on now, and its saved environment stamp
 * against the server's images (whether its image's tag moved since).
 */
export function getNotebookKernelState(
  path: string,
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<INotebookKernelState> {
  return readAPI(
    `notebooks/kernel?path=${encodeURIComponent(path)}`,
    notebookKernelStateOf,
    { method: 'GET' },
    settings,
    trans
  );
}

/**
 * What an event stream's URL carries for the server to let it through:
 * `EventSource` cannot send headers, so the token, when the page has one,
 * goes in the query, and so does the page's XSRF cookie, as JupyterLab's own
 * download URLs carry it. Both: JupyterHub 5 ignores a token in a URL
 * (`allow_token_in_url`), and a GET that its cookie authenticates must name
 * the XSRF cookie, or is refused with 403; a plain Jupyter server takes the
 * token.
 */
export function streamCredentials(
  settings: ServerConnection.ISettings,
  cookie: string = documentCookie()
): string[] {
  const found: string[] = [];
  if (settings.token) {
    found.push(`token=${encodeURIComponent(settings.token)}`);
  }
  const xsrf = cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
  // The cookie's value as the server reads it back (the query is decoded once).
  if (xsrf) {
    found.push(`_xsrf=${encodeURIComponent(xsrf[1])}`);
  }
  return found;
}

/**
 * The page's cookies, or `''` where none can be read (a sandbox, a test).
 */
function documentCookie(): string {
  try {
    return typeof document === 'undefined' ? '' : document.cookie;
  } catch {
    return '';
  }
}

/**
 * The URL of a pull's server-sent event stream (streamCredentials).
 */
export function pullEventsUrl(
  pullId: string,
  settings: ServerConnection.ISettings = ServerConnection.makeSettings(),
  cookie?: string
): string {
  const url = URLExt.join(
    settings.baseUrl,
    API_NAMESPACE,
    'pulls',
    encodeURIComponent(pullId),
    'events'
  );
  const query = streamCredentials(settings, cookie);
  return query.length ? `${url}?${query.join('&')}` : url;
}

/**
 * Fetch the user's container kernels, with their GPU use over the last
 * minutes.
 */
export function getKernels(
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<IKernelList> {
  return readAPI('kernels', kernelListOf, { method: 'GET' }, settings, trans);
}

/**
 * Keep the GPUs of one of the user's kernels that the idle-GPU policy warned,
 * for `minutes` from now (within its state's `keep`): its new reclaim state.
 *
 * @throws {ApiError} With the server's sentence when it cannot be kept now.
 */
export function keepKernelGpus(
  kernelId: string,
  minutes: number,
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<IKernelReclaim> {
  return readAPI(
    `kernels/${encodeURIComponent(kernelId)}/keep`,
    reclaimOf,
    { method: 'POST', body: JSON.stringify({ minutes }) },
    settings,
    trans
  );
}

/**
 * Fetch one kernel's own view: container, image digest, mounts, GPUs, start
 * phases, last end and GPU use.
 */
export function getKernelView(
  kernelId: string,
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<IKernelView> {
  return readAPI(
    `kernels/${encodeURIComponent(kernelId)}`,
    kernelViewOf,
    { method: 'GET' },
    settings,
    trans
  );
}

/**
 * The URL of a kernel's container log as server-sent events: the last `tail`
 * lines, then new ones. As for pulls, the token goes in the query.
 */
export function kernelLogUrl(
  kernelId: string,
  tail: number,
  settings: ServerConnection.ISettings = ServerConnection.makeSettings(),
  cookie?: string
): string {
  const url = URLExt.join(
    settings.baseUrl,
    API_NAMESPACE,
    'kernels',
    encodeURIComponent(kernelId),
    'log'
  );
  const query = [`tail=${tail}`, ...streamCredentials(settings, cookie)];
  return `${url}?${query.join('&')}`;
}

/**
 * Why a kernel's log stream was refused, asked after an `EventSource` closed
 * for good before it said anything (a browser's event stream tells no
 * status): the server's sentence, or `''` when the stream opens now.
 */
export async function logStreamRefusal(
  kernelId: string,
  settings: ServerConnection.ISettings = ServerConnection.makeSettings(),
  trans: TranslationBundle = translationBundle()
): Promise<string> {
  const url = kernelLogUrl(kernelId, 0, settings);
  const controller = new AbortController();
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(
      url,
      { method: 'GET', signal: controller.signal },
      settings
    );
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    return trans.__('Could not reach the Jupyter server: %1', detail);
  }
  if (response.ok) {
    controller.abort(); // an open stream: nothing to read from it here
    return '';
  }
  const body = await response.text().catch(() => '');
  return errorMessage(body, response.status, response.statusText, trans);
}

/**
 * Fetch the host-wide GPU wait queue; `null` when the answer is none.
 */
export function getQueue(
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<IGpuQueue | null> {
  return requestAPI('queue', { method: 'GET' }, settings, trans).then(queueOf);
}

/**
 * Cancel one of the user's waiting starts: the start fails with "GPU wait
 * cancelled".
 */
export function cancelQueued(
  kernelId: string,
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<void> {
  return requestAPI(
    `queue/${encodeURIComponent(kernelId)}`,
    { method: 'DELETE' },
    settings,
    trans
  ).then(nothing);
}

/**
 * Fetch the user's GPU-hour quota; `null` when the answer is none.
 */
export function getQuota(
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<IGpuQuota | null> {
  return requestAPI('quota', { method: 'GET' }, settings, trans).then(quotaOf);
}

/**
 * Fetch the user's own packages folders (one per image, in their workspace).
 */
export function getPackages(
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<IPackages> {
  return readAPI('packages', packagesOf, { method: 'GET' }, settings, trans);
}

/**
 * Reset one image's packages: its folder, named by its key, is removed.
 */
export function resetPackages(
  key: string,
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<void> {
  return requestAPI(
    `packages/${encodeURIComponent(key)}`,
    { method: 'DELETE' },
    settings,
    trans
  ).then(nothing);
}

/**
 * Remove one of the user's saved images (only theirs).
 */
export function removeSavedImage(
  reference: string,
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<void> {
  return requestAPI(
    `saved-images?image=${encodeURIComponent(reference)}`,
    { method: 'DELETE' },
    settings,
    trans
  ).then(nothing);
}

/**
 * Start saving one of the user's kernels' environment (its image and their
 * packages for it) as an image of their own, named `name` ('' for the
 * image's name): the save, under way.
 *
 * @throws {ApiError} With the server's sentence when it cannot be made.
 */
export function startSave(
  kernelId: string,
  name: string,
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<ISave> {
  return readAPI(
    `kernels/${encodeURIComponent(kernelId)}/save`,
    saveOf,
    { method: 'POST', body: JSON.stringify(name ? { name } : {}) },
    settings,
    trans
  );
}

/**
 * Start building the recipe at `path` of the user's workspace (a Dockerfile,
 * or a requirements.txt installed into `base`) as an image of their own.
 */
export function startBuild(
  path: string,
  name: string,
  base: string,
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<ISave> {
  return readAPI(
    'builds',
    saveOf,
    {
      method: 'POST',
      body: JSON.stringify({
        path,
        ...(name ? { name } : {}),
        ...(base ? { base } : {})
      })
    },
    settings,
    trans
  );
}

/**
 * The user's saves, and why none can be made here.
 */
export function getSaves(
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<ISaves> {
  return readAPI('saves', savesOf, { method: 'GET' }, settings, trans);
}

/**
 * One save of the user's, now.
 */
export function getSave(
  saveId: string,
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<ISave> {
  return readAPI(
    `saves/${encodeURIComponent(saveId)}`,
    saveOf,
    { method: 'GET' },
    settings,
    trans
  );
}

/**
 * Cancel a save; it answers once the save has ended.
 */
export function cancelSave(
  saveId: string,
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<ISave> {
  return readAPI(
    `saves/${encodeURIComponent(saveId)}`,
    saveOf,
    { method: 'DELETE' },
    settings,
    trans
  );
}

/**
 * Fetch the admin view; 403 for others, `null` when the answer is none.
 */
export function getAdminView(
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<IAdminView | null> {
  return requestAPI('admin', { method: 'GET' }, settings, trans).then(
    adminViewOf
  );
}

/**
 * As an admin, release a kernel's GPUs or shut it down; `reason` is what its
 * user is told.
 */
export function adminKernelAction(
  kernelId: string,
  action: AdminAction,
  reason: string,
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<IAdminActionReply> {
  return readAPI(
    `admin/kernels/${encodeURIComponent(kernelId)}`,
    adminActionReplyOf,
    { method: 'POST', body: JSON.stringify({ action, reason }) },
    settings,
    trans
  );
}

/**
 * Fetch why administrators released or shut down the user's kernels, oldest
 * first (none when the answer is not a list of them).
 */
export function getAdminNotices(
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<IAdminNotice[]> {
  return requestAPI('admin/notices', { method: 'GET' }, settings, trans).then(
    noticesOf
  );
}

/**
 * Fetch the administrator's pre-pull schedule and pruning; readable by every
 * user, `null` when the answer is none.
 */
export function getPrePulls(
  settings?: ServerConnection.ISettings,
  trans?: TranslationBundle
): Promise<IPrePulls | null> {
  return requestAPI('prepull', { method: 'GET' }, settings, trans).then(
    prePullsOf
  );
}

/**
 * A request whose answer is no document (204, or one that is not used).
 */
function nothing(): void {
  return undefined;
}
