/**
 * Pure helpers that turn the server's documents into what the panel and the
 * toolbar show. No DOM, no requests: everything here is unit-tested.
 *
 * Helpers that write words for people take the extension's translation
 * bundle (`trans`) first. Not translated: byte units (IEC symbols: KiB, MiB,
 * GiB), framework names and versions, and image references.
 */
import type { TranslationBundle } from '@jupyterlab/translation';

import { IGpu, IGpuReport, IHolder, IStatus, VerdictOutcome } from './gputypes';
import { searchImages } from './imagequery';
import { IImageRow, IPull } from './imagetypes';
import { GpuRequest } from './kerneltypes';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/**
 * A byte count for people, in binary units (powers of 1024, as GPU memory is
 * sold and as NVML and `nvidia-smi` count it): `1.5 GiB`, `300 MiB`, `0 B`; a
 * 32 GiB card reads `32 GiB`. `null` (unknown) is an em dash.
 */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) {
    return '—';
  }
  const rounded = (value: number, unit: number): number => {
    const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
    return Number(value.toFixed(digits));
  };
  let value = Math.max(0, bytes);
  let unit = 0;
  // Compare the rounded value: 1,048,575 B is `1 MiB`, not `1024 KiB`.
  while (rounded(value, unit) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${rounded(value, unit)} ${UNITS[unit]}`;
}

/**
 * How a verdict is shown: a short badge label and the CSS modifier that
 * colours it.
 */
export interface IVerdictBadge {
  label: string;
  tone: 'good' | 'warn' | 'bad' | 'neutral';
}

/**
 * The badges of the verdict outcomes.
 */
function badges(
  trans: TranslationBundle
): Record<VerdictOutcome, IVerdictBadge> {
  return {
    native: { label: trans._p('verdict', 'Compatible'), tone: 'good' },
    compat: { label: trans._p('verdict', 'Compat mode'), tone: 'warn' },
    'cannot-run': {
      label: trans._p('verdict', 'Cannot run here'),
      tone: 'bad'
    },
    'cpu-only': { label: trans._p('verdict', 'CPU build'), tone: 'neutral' },
    'no-gpus': { label: trans._p('verdict', 'No GPUs here'), tone: 'neutral' },
    unknown: { label: trans._p('verdict', 'Unknown'), tone: 'neutral' }
  };
}

/**
 * The badge for a verdict outcome (an unexpected outcome reads "Unknown").
 */
export function verdictBadge(
  trans: TranslationBundle,
  outcome: string
): IVerdictBadge {
  const known = badges(trans);
  return known[outcome as VerdictOutcome] ?? known.unknown;
}

/**
 * Whether an image may run on this host at all: everything but a driver
 * that is too old, and verdicts that cannot be known.
 */
export function isCompatible(row: IImageRow): boolean {
  const outcome = row.verdict.outcome;
  return outcome !== 'cannot-run' && outcome !== 'unknown';
}

/**
 * Whether a kernel can be started on the image now.
 */
export function isLaunchable(row: IImageRow): boolean {
  return (
    row.pulled && row.allowed && row.kernel_ready === true && !!row.kernel_name
  );
}

/**
 * Why an image cannot be launched, or `''` when it can.
 */
export function launchBlocker(
  trans: TranslationBundle,
  row: IImageRow
): string {
  if (!row.allowed) {
    return (
      row.allowed_reason ||
      trans.__('The administrator does not allow this image.')
    );
  }
  if (!row.pulled) {
    return trans.__('Not on this host yet: pull it first.');
  }
  if (row.kernel_ready === null) {
    return (
      row.kernel_ready_reason ||
      trans.__('Still checking whether it can run a kernel.')
    );
  }
  if (!row.kernel_ready) {
    return (
      row.kernel_ready_reason || trans.__('This image cannot run a kernel.')
    );
  }
  if (!row.kernel_name) {
    return trans.__('This image is not offered as a kernel on this server.');
  }
  return '';
}

/**
 * The short name of an image reference: the last path part with its tag
 * (`nvcr.io/nvidia/pytorch:24.05-py3` → `pytorch:24.05-py3`). A digest is
 * cut to 12 hex digits.
 */
export function shortImageName(reference: string): string {
  const [name, digest] = reference.split('@');
  const slash = name.lastIndexOf('/');
  const last = name.slice(slash + 1);
  if (digest) {
    const hex = digest.replace(/^sha256:/, '').slice(0, 12);
    return `${last}@${hex}`;
  }
  return last;
}

/**
 * The names that tell images apart: each reference's last path part with its
 * tag (`pytorch:24.05-py3`), with as many of the repository's parts before it
 * as it takes to differ from every other reference's name
 * (`nvidia/pytorch:24.05-py3` next to `pytorch:24.05-py3`). The tag is never
 * cut.
 */
export function imageNames(references: Iterable<string>): Map<string, string> {
  const parts = new Map<string, { path: string[]; digest: string }>();
  for (const reference of references) {
    const [name, digest] = reference.split('@');
    parts.set(reference, {
      path: name.split('/'),
      digest: digest ? `@${digest.replace(/^sha256:/, '').slice(0, 12)}` : ''
    });
  }
  const at = (reference: string, depth: number): string => {
    const { path, digest } = parts.get(reference)!;
    return path.slice(-depth).join('/') + digest;
  };
  const names = new Map<string, string>();
  for (const [reference, { path }] of parts) {
    let depth = 1;
    while (
      depth < path.length &&
      [...parts.keys()].some(
        other =>
          other !== reference && at(other, depth) === at(reference, depth)
      )
    ) {
      depth += 1;
    }
    // Two references that differ only in their digests' later digits.
    const name = at(reference, depth);
    const clash = [...parts.keys()].some(
      other => other !== reference && at(other, depth) === name
    );
    names.set(reference, clash ? reference : name);
  }
  return names;
}

/**
 * An image reference cut where a line may break: after `/`, `:` and `@`,
 * before `-` and `_` (`tensorflow:`, `2.15.0`, `-gpu`, `-jupyter`), never
 * inside a word or a version.
 */
export function referenceBreaks(reference: string): string[] {
  return reference.split(/(?<=[/:@])|(?=[-_])/).filter(Boolean);
}

/**
 * The label of an image's framework group: `PyTorch`, or `Python` for images
 * with no known framework.
 */
export function frameworkGroup(row: IImageRow): string {
  return row.framework || 'Python';
}

/**
 * The framework and its version in a few words: `PyTorch 24.05 (2.4.0a0)`,
 * `TensorFlow 2.16.1`, `Python 3.11`.
 */
export function frameworkLabel(row: IImageRow): string {
  if (row.framework) {
    const release = row.framework_release;
    const version = row.framework_version;
    if (release && version && release !== version) {
      return `${row.framework} ${release} (${version})`;
    }
    return `${row.framework} ${release || version}`.trim();
  }
  return row.python_version ? `Python ${row.python_version}` : 'Python';
}

/**
 * The filters the panel offers over the catalog.
 */
export interface IImageFilter {
  /**
   * A search (see imagequery.ts): facts such as `cuda 12`, `pytorch 2.3`,
   * `tensorflow`, and words of the reference, framework or description.
   */
  query: string;
  kernelReady: boolean;
  compatible: boolean;
  pulled: boolean;
}

/**
 * The rows that pass a filter.
 *
 * @param pullsRefused Whether the user's pulls cannot succeed here (the
 *   status's `pull_refusal`): only pulled images are offered then, as an
 *   image not pulled could only be asked of the administrator.
 */
export function filterImages(
  rows: IImageRow[],
  filter: IImageFilter,
  pullsRefused = false
): IImageRow[] {
  return searchImages(rows, filter.query).filter(row => {
    if (filter.kernelReady && row.kernel_ready !== true) {
      return false;
    }
    if (filter.compatible && !isCompatible(row)) {
      return false;
    }
    return !(filter.pulled || pullsRefused) || row.pulled;
  });
}

/**
 * Rows grouped by framework: groups in alphabetical order with `Python`
 * last, rows in the catalog's order.
 */
export function groupByFramework(
  rows: IImageRow[]
): Array<{ group: string; rows: IImageRow[] }> {
  const groups = new Map<string, IImageRow[]>();
  for (const row of rows) {
    const key = frameworkGroup(row);
    const list = groups.get(key) ?? [];
    list.push(row);
    groups.set(key, list);
  }
  return [...groups.entries()]
    .sort(([a], [b]) =>
      a === 'Python' ? 1 : b === 'Python' ? -1 : a.localeCompare(b)
    )
    .map(([group, list]) => ({ group, rows: list }));
}

/**
 * Who holds a GPU, in a few words, from this user's point of view.
 */
export function holderLabel(trans: TranslationBundle, holder: IHolder): string {
  if (holder.mine) {
    // A kernel started without a notebook (a console, the REST API).
    return holder.notebook
      ? trans.__('Your notebook %1', holder.notebook.split('/').pop() ?? '')
      : trans.__('Your kernel');
  }
  return holder.user ? `${holder.user}` : trans.__('Another user');
}

/**
 * Whether another kernel can still be placed on a GPU.
 */
export function hasRoom(gpu: IGpu, report: IGpuReport): boolean {
  const limit = report.policy === 'shared' ? report.max_kernels_per_gpu : 1;
  return gpu.holders.length < Math.max(1, limit);
}

/**
 * The GPUs a kernel could get now: those with room, plus those that
 * `kernelId` itself holds (a restart gives them back first).
 */
export function availableGpus(
  report: IGpuReport | null,
  kernelId = ''
): IGpu[] {
  if (!report) {
    return [];
  }
  return report.gpus.filter(
    gpu =>
      hasRoom(gpu, report) ||
      (kernelId !== '' && gpu.holders.some(h => h.kernel_id === kernelId))
  );
}

/**
 * The GPUs a kernel holds, by index (`['0', '1']`).
 */
export function gpusOfKernel(
  report: IGpuReport | null,
  kernelId: string
): string[] {
  if (!report || !kernelId) {
    return [];
  }
  return report.gpus
    .filter(gpu => gpu.holders.some(h => h.mine && h.kernel_id === kernelId))
    .map(gpu => gpu.index);
}

/**
 * The GPUs part of a label: `no GPU`, `GPU 0`, `GPUs 0,1`.
 */
export function gpuListLabel(
  trans: TranslationBundle,
  indexes: string[]
): string {
  if (indexes.length === 0) {
    return trans.__('no GPU');
  }
  return trans._n('GPU %2', 'GPUs %2', indexes.length, indexes.join(','));
}

/**
 * One choice in a GPU selector, and why it is disabled when it is.
 */
export interface IGpuChoice {
  /**
   * The select's value: `count:N` or `id:<uuid>`.
   */
  value: string;
  label: string;
  /**
   * The option's text: the label, and the reason when it is disabled
   * (select menus do not show tooltips everywhere).
   */
  option: string;
  request: GpuRequest;
  disabled: boolean;
  reason: string;
}

/**
 * The GPU choices for a launch of `row` (or a switch of a kernel that holds
 * GPUs, `kernelId`): counts from 0 to the host's GPUs, then each GPU that is
 * free on its own. Choices that cannot be met now are disabled with the
 * reason; with `wait` (the start waits in the GPU queue), only those that can
 * never be met are: the others say that they wait.
 */
export function gpuChoices(
  trans: TranslationBundle,
  report: IGpuReport | null,
  row: IImageRow | null,
  kernelId = '',
  wait = false
): IGpuChoice[] {
  const total = report ? report.gpus.length : 0;
  const free = availableGpus(report, kernelId);
  const noGpuReason = (): string => {
    if (!report || total === 0) {
      return describeNoGpus(trans, report);
    }
    if (row && !row.gpu) {
      return trans.__('This image is a CPU build: it cannot use GPUs.');
    }
    if (row && row.verdict.outcome === 'cannot-run') {
      return (
        row.verdict.reason.trim() ||
        trans.__(
          "This image's CUDA needs a newer NVIDIA driver than this host's."
        )
      );
    }
    return '';
  };
  const blocked = noGpuReason();
  // Only other users' GPUs free while a start waits (the server refuses a
  // wait for GPUs the user's own kernels hold): those cannot be waited for.
  const heldByMe = (gpu: IGpu): boolean =>
    gpu.holders.some(h => h.mine && h.kernel_id !== kernelId);
  const mineHeld = (report?.gpus ?? []).filter(heldByMe).length;
  // The administrator's cap per user (GPUAllocator.max_gpus_per_user): a
  // start past it is refused, waiting or not; only ending a kernel helps.
  const cap = report?.max_gpus_per_user ?? 0;
  const overCap = (n: number): string =>
    cap > 0 && mineHeld + n > cap
      ? trans._n(
          'Over your limit of %1 GPU per user (your other kernels hold %2): shut one down first.',
          'Over your limit of %1 GPUs per user (your other kernels hold %2): shut one down first.',
          cap,
          mineHeld
        )
      : '';
  const choice = (
    value: string,
    label: string,
    request: GpuRequest,
    reason: string,
    busy = false,
    ownHeld = false
  ): IGpuChoice => {
    // Busy GPUs can be waited for: the choice stays, and says it waits.
    const waits = wait && busy && reason !== '';
    const why = waits
      ? trans._p(
          'a busy choice — it waits',
          '%1 Waits for it in the queue.',
          reason
        )
      : wait && ownHeld && reason !== ''
        ? trans._p(
            'a choice that waiting cannot meet',
            '%1 Your own kernels hold the GPUs it needs: shut one down first.',
            reason
          )
        : reason;
    return {
      value,
      label,
      option: why
        ? trans._p('a choice — why it cannot be had', '%1 — %2', label, why)
        : label,
      request,
      disabled: reason !== '' && !waits,
      reason: why
    };
  };
  const choices: IGpuChoice[] = [choice('count:0', trans.__('No GPU'), 0, '')];
  for (let n = 1; n <= total; n++) {
    const capped = blocked ? '' : overCap(n);
    const reason =
      blocked ||
      capped ||
      (n > free.length
        ? free.length === 0
          ? trans.__('No free GPU: every GPU is taken.')
          : trans._n(
              'Only %1 GPU is free.',
              'Only %1 GPUs are free.',
              free.length
            )
        : '');
    const waitable = n <= total - mineHeld;
    choices.push(
      choice(
        `count:${n}`,
        trans._n('%1 GPU', '%1 GPUs', n),
        n,
        reason,
        !blocked && !capped && waitable,
        !blocked && !capped && !waitable
      )
    );
  }
  if (!blocked) {
    const capped = overCap(1);
    for (const gpu of report?.gpus ?? []) {
      const taken = !free.includes(gpu);
      choices.push(
        choice(
          `id:${gpu.uuid}`,
          trans.__('GPU %1 only (%2)', gpu.index, gpu.name),
          [gpu.uuid],
          capped || (taken ? trans.__('GPU %1 is taken.', gpu.index) : ''),
          !capped && !heldByMe(gpu),
          !capped && heldByMe(gpu)
        )
      );
    }
  }
  return choices;
}

/**
 * The default choice for a launch: 1 GPU for a GPU build when one is free,
 * else no GPU.
 */
export function defaultGpuChoice(
  choices: IGpuChoice[],
  row: IImageRow
): string {
  const one = choices.find(c => c.value === 'count:1');
  return row.gpu && one && !one.disabled ? one.value : 'count:0';
}

/**
 * What to say before a launch of a GPU image that would get no GPU because
 * none can be had now (every GPU taken, the user's limit, no GPU on this
 * host), or `''`: the panel never falls back to "No GPU" in silence.
 */
export function noGpuWarning(
  trans: TranslationBundle,
  choices: IGpuChoice[],
  row: IImageRow,
  selected: IGpuChoice | undefined
): string {
  const one = choices.find(c => c.value === 'count:1');
  const none = selected === undefined || selected.request === 0;
  if (!row.gpu || !none || (one !== undefined && !one.disabled)) {
    return '';
  }
  const reason = one?.reason || trans.__('This host has no GPUs.');
  return trans.__(
    '%1 A notebook started now runs without a GPU.',
    reason.replace(/\.?\s*$/, '.')
  );
}

/**
 * The reassurance the server's reasons end with (gpus.py's
 * `nvml_failure_reason`), in English as the server writes it.
 */
const SERVER_REASSURANCE = /\s*CPU kernels still work\.?\s*$/i;

/**
 * Why the host has no GPUs to offer, ending with the reassurance that CPU
 * kernels still work, said once: the server's reason may already carry it.
 */
export function describeNoGpus(
  trans: TranslationBundle,
  report: IGpuReport | null
): string {
  if (!report) {
    return trans.__(
      'GPUs are unknown: the server has not answered. CPU kernels still work.'
    );
  }
  if (report.source === 'static') {
    return trans.__(
      "The administrator's static GPU inventory is empty. CPU kernels still work."
    );
  }
  const reason = report.reason.replace(SERVER_REASSURANCE, '').trim();
  return reason
    ? trans.__(
        '%1 CPU kernels still work.',
        /[.!?]$/.test(reason) ? reason : `${reason}.`
      )
    : trans.__('This host has no GPUs. CPU kernels still work.');
}

/**
 * The sentence to show when the engine cannot be used, or `''` when it can.
 */
export function engineProblem(
  trans: TranslationBundle,
  status: IStatus | null
): string {
  if (!status || status.engine.ok) {
    return '';
  }
  return (
    status.engine.message.trim() ||
    trans.__(
      'The container engine at %1 is unreachable.',
      status.engine.endpoint
    )
  );
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
 * A pull's progress in a few words: `Downloading 120 MB of 300 MB (40%)`.
 */
export function pullProgressText(
  trans: TranslationBundle,
  pull: IPull
): string {
  switch (pull.state) {
    case 'queued':
      return trans.__('Waiting for another pull to finish…');
    case 'done':
      return trans.__('Pulled.');
    case 'cancelled':
      return trans.__('Cancelled.');
    case 'error':
      return pull.message || trans.__('The pull failed.');
    default:
      break;
  }
  if (pull.phase === 'resolving') {
    return trans.__('Asking the registry…');
  }
  if (
    pull.phase === 'extracting' &&
    pull.downloaded_bytes >= pull.total_bytes
  ) {
    return trans._n(
      'Extracting (%1 layer done)…',
      'Extracting (%1 layers done)…',
      pull.extracted_layers
    );
  }
  const percent = Math.round(Math.min(1, Math.max(0, pull.progress)) * 100);
  return trans.__(
    'Downloading %1 of %2 (%3%)',
    formatBytes(pull.downloaded_bytes),
    formatBytes(pull.total_bytes),
    percent
  );
}

/**
 * A GPU's memory use as a fraction, or `null` when either number is unknown.
 */
export function memoryFraction(gpu: IGpu): number | null {
  if (gpu.memory_used === null || !(gpu.memory_total > 0)) {
    return null;
  }
  return Math.min(1, Math.max(0, gpu.memory_used / gpu.memory_total));
}

/**
 * A GPU's memory for people: the text (`4 GiB / 80 GiB`, `— / 32 GiB`) and,
 * when a number is unknown, a title that says why.
 */
export interface IGpuMemoryText {
  text: string;
  title: string;
}

/**
 * How a GPU's memory is shown: used of total, with the unknown shown as
 * unknown (never as `0 B`), and why it is unknown.
 */
export function gpuMemoryText(
  trans: TranslationBundle,
  gpu: IGpu,
  source: IGpuReport['source']
): IGpuMemoryText {
  const known = gpu.memory_total > 0;
  const text = trans._p(
    'GPU memory used / total',
    '%1 / %2',
    formatBytes(gpu.memory_used),
    known ? formatBytes(gpu.memory_total) : '—'
  );
  if (gpu.memory_used !== null && known) {
    return {
      text,
      title: trans.__(
        '%1 of %2 GPU memory used',
        formatBytes(gpu.memory_used),
        formatBytes(gpu.memory_total)
      )
    };
  }
  const title =
    source === 'static'
      ? trans.__(
          "Memory use is unknown for GPUs listed in the server's configuration."
        )
      : trans.__("The NVIDIA driver does not report this GPU's memory.");
  return { text, title };
}

/**
 * The new-notebook button of an image's row in the panel: its words, and why
 * it is greyed when it is (a greyed control always says why, in a sentence
 * shown under it, never only in a tooltip).
 */
export interface ILaunchButton {
  label: string;
  disabled: boolean;
  /**
   * The sentence shown under a greyed button; `''` when it is not greyed.
   */
  reason: string;
  /**
   * Whether the notebook's kernel waits in the GPU queue for the chosen GPUs.
   */
  waits: boolean;
}

/**
 * What the panel's new-notebook button says and does for the chosen GPUs.
 *
 * @param blocker Why the image cannot be launched at all (`launchBlocker`,
 *   or the engine's problem), or `''`.
 * @param selected The chosen GPU choice (from `gpuChoices`, with `wait` when
 *   the user chose to wait for a free GPU).
 * @param withoutGpu `noGpuWarning`'s sentence: the notebook runs without a GPU.
 * @param wait Whether the user chose to wait for a free GPU.
 * @param busy Whether a launch of this row is under way.
 */
export function launchButton(
  trans: TranslationBundle,
  blocker: string,
  selected: IGpuChoice | undefined,
  withoutGpu: string,
  wait: boolean,
  busy: boolean
): ILaunchButton {
  if (blocker) {
    return {
      label: trans.__('New notebook'),
      disabled: true,
      reason: blocker,
      waits: false
    };
  }
  if (busy) {
    return {
      label: trans.__('Starting…'),
      disabled: true,
      reason: trans.__('A notebook on this image is being opened.'),
      waits: false
    };
  }
  if (!selected) {
    return {
      label: trans.__('New notebook'),
      disabled: true,
      reason: trans.__('Choose how many GPUs the notebook gets.'),
      waits: false
    };
  }
  if (selected.disabled) {
    // A choice that was free when chosen and has been taken since, or one
    // that can never be had.
    return {
      label: trans.__('New notebook'),
      disabled: true,
      reason: selected.reason,
      waits: false
    };
  }
  // An enabled choice with a reason is a busy one the start waits for.
  const waits = wait && selected.reason !== '' && selected.request !== 0;
  return {
    label: waits
      ? trans.__('New notebook that waits')
      : withoutGpu
        ? trans.__('New notebook without GPU')
        : trans.__('New notebook'),
    disabled: false,
    reason: '',
    waits
  };
}

/**
 * Whether the panel offers "Wait for a free GPU" for an image: the server has
 * a GPU queue, and a GPU choice cannot be had now but could be waited for
 * (its GPUs are taken, not missing, and the image can use them).
 */
export function offersWait(
  trans: TranslationBundle,
  queueOffered: boolean,
  report: IGpuReport | null,
  row: IImageRow
): boolean {
  if (!queueOffered || !row.gpu) {
    return false;
  }
  const now = gpuChoices(trans, report, row, '', false);
  const waiting = gpuChoices(trans, report, row, '', true);
  return now.some(
    (c, i) => c.disabled && waiting[i] !== undefined && !waiting[i].disabled
  );
}

/**
 * A GPU choice that still makes sense for `row`: the same value when it is
 * offered and can be had; else no GPU. The picker keeps no "1 GPU" for a CPU
 * image, which could only fail.
 */
export function keptChoice(choices: IGpuChoice[], value: string): string {
  const same = choices.find(c => c.value === value);
  return same && !same.disabled ? value : 'count:0';
}

/**
 * The one way the panel, the toolbar and the kernel's view write a time:
 * the time of day (`14:05`) when it is today, the day and time
 * (`Tue 14:05`) otherwise; `''` for a time that cannot be read.
 *
 * @param at A time: an ISO string, or milliseconds since the epoch.
 * @param now The current time (for tests).
 */
export function formatClock(
  at: string | number | null | undefined,
  now: number = Date.now()
): string {
  const ms = typeof at === 'number' ? at : Date.parse(at ?? '');
  if (!Number.isFinite(ms)) {
    return '';
  }
  const date = new Date(ms);
  const today = new Date(now);
  const sameDay =
    date.getFullYear() === today.getFullYear() &&
    date.getMonth() === today.getMonth() &&
    date.getDate() === today.getDate();
  return sameDay
    ? date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : date.toLocaleString([], {
        weekday: 'short',
        hour: '2-digit',
        minute: '2-digit'
      });
}

/**
 * A notification's text as JupyterLab can show it uncut: the text itself
 * when it fits (`details` null), else its first words, cut between words,
 * and the whole text as `details` (behind the notification's button).
 */
export function toastParts(
  trans: TranslationBundle,
  text: string
): { message: string; details: string | null } {
  if (text.length <= NOTIFICATION_MAX_LENGTH) {
    return { message: text, details: null };
  }
  const more = trans.__('(more under Details)');
  const room = NOTIFICATION_MAX_LENGTH - more.length - 2;
  const cut = text.slice(0, room);
  const space = cut.lastIndexOf(' ');
  const head = (space > room / 2 ? cut.slice(0, space) : cut).replace(
    /[\s,;:]+$/,
    ''
  );
  return {
    message: trans._p('the start of a long text', '%1… %2', head, more),
    details: text
  };
}

/**
 * The longest notification text JupyterLab shows uncut.
 */
const NOTIFICATION_MAX_LENGTH = 140;
