/**
 * Pure helpers that turn the image catalog and pulls into what the panel, the
 * picker and the toolbar show: compatibility verdicts, whether and why an
 * image can be launched, image names, frameworks, the catalog's filters and
 * groups, a pull's progress. No DOM, no requests: everything here is
 * unit-tested.
 *
 * Helpers that write words for people take the extension's translation
 * bundle (`trans`) first. Not translated: byte units (IEC symbols: KiB, MiB,
 * GiB), framework names and versions, and image references.
 */
import type { TranslationBundle } from '@jupyterlab/translation';

import { formatBytes } from './format';
import { VerdictOutcome } from './gputypes';
import { searchImages } from './imagequery';
import { IImageRetirement, IImageRow, IPull } from './imagetypes';

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
    row.pulled &&
    row.allowed &&
    !row.retired &&
    row.kernel_ready === true &&
    !!row.kernel_name
  );
}

/**
 * What the panel says of a retired image: the administrator's message, and
 * the image to use instead.
 */
export function retiredText(
  trans: TranslationBundle,
  retired: IImageRetirement
): string {
  const said = retired.message
    ? trans.__('Retired by the administrator: %1', retired.message)
    : trans.__('Retired by the administrator.');
  return retired.redirect
    ? `${said} ${trans.__('Use %1 instead.', retired.redirect)}`
    : said;
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
  if (row.retired) {
    return retiredText(trans, row.retired);
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
 * The repository of an image reference, as written (`a/b:1`, `a/b@sha256:…`:
 * `a/b`; a registry's port is no tag: `host:5000/b`).
 */
export function repositoryOf(ref: string): string {
  const at = ref.indexOf('@');
  const name = at >= 0 ? ref.slice(0, at) : ref;
  const colon = name.lastIndexOf(':');
  return colon > name.lastIndexOf('/') ? name.slice(0, colon) : name;
}

/**
 * The names that tell images apart: each reference's last path part with its
 * tag (`pytorch:24.05-py3`), with as many of the repository's parts before it
 * as it takes to tell it from every other reference: from another's name
 * (`nvidia/pytorch:24.05-py3` next to `pytorch:24.05-py3`), and from another
 * repository of the same last part, whatever the tags (`a/ngc-like:1` next
 * to `other/ngc-like:24.05-py3`, which `ngc-like:1` and
 * `ngc-like:24.05-py3` would not tell apart). The tag is never cut.
 */
export function imageNames(references: Iterable<string>): Map<string, string> {
  const parts = new Map<
    string,
    { path: string[]; repository: string[]; digest: string }
  >();
  for (const reference of references) {
    const [name, digest] = reference.split('@');
    parts.set(reference, {
      path: name.split('/'),
      repository: repositoryOf(reference).split('/'),
      digest: digest ? `@${digest.replace(/^sha256:/, '').slice(0, 12)}` : ''
    });
  }
  const at = (reference: string, depth: number): string => {
    const { path, digest } = parts.get(reference)!;
    return path.slice(-depth).join('/') + digest;
  };
  const repositoryAt = (reference: string, depth: number): string =>
    parts.get(reference)!.repository.slice(-depth).join('/');
  const names = new Map<string, string>();
  for (const [reference, { path }] of parts) {
    const others = [...parts.keys()].filter(other => other !== reference);
    // Another repository that the shown parts would not tell from this one.
    const lookalike = (other: string, depth: number): boolean =>
      repositoryAt(other, depth) === repositoryAt(reference, depth) &&
      repositoryOf(other) !== repositoryOf(reference);
    let depth = 1;
    while (
      depth < path.length &&
      others.some(
        other =>
          at(other, depth) === at(reference, depth) || lookalike(other, depth)
      )
    ) {
      depth += 1;
    }
    // Two references that differ only in their digests' later digits.
    const name = at(reference, depth);
    const clash = others.some(other => at(other, depth) === name);
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
