/**
 * The GPU choices of a launch or a switch (the panel's image rows and the
 * picker), each disabled with its reason or marked as waiting in the GPU
 * queue, and what the panel's new-notebook button says for the chosen one.
 * No DOM, no requests: everything here is unit-tested.
 *
 * Helpers that write words for people take the extension's translation
 * bundle (`trans`) first.
 */
import type { TranslationBundle } from '@jupyterlab/translation';

import { availableGpus, describeNoGpus } from './gpuformat';
import { IClusterView, IGpu, IGpuReport } from './gputypes';
import { noGpuText } from './gpuwords';
import { IImageRow } from './imagetypes';
import { GpuRequest } from './kerneltypes';

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
   * The option's text: the label, and the reason in a few words when there is
   * one ("1 GPU (over your limit)"). Select menus do not show tooltips
   * everywhere, and a narrow select cut the whole sentence mid-word.
   */
  option: string;
  /**
   * The option's whole text for assistive technology: the label and the whole
   * reason, as `reason` says it.
   */
  ariaLabel: string;
  request: GpuRequest;
  disabled: boolean;
  /**
   * Why the choice cannot be had, or that it waits: a whole sentence (the
   * option's tooltip, and the note under the select when it is chosen).
   */
  reason: string;
}

/**
 * A reason for a GPU choice: its whole sentence, and the few words the
 * option's text holds.
 */
interface IChoiceReason {
  sentence: string;
  words: string;
}

/**
 * No reason: the choice can be had.
 */
const NO_REASON: IChoiceReason = { sentence: '', words: '' };

/**
 * The text of an option: `label` with the few words of its reason.
 */
function optionText(
  trans: TranslationBundle,
  label: string,
  words: string
): string {
  return words
    ? trans._p(
        'a GPU choice (why it cannot be had, in a few words)',
        '%1 (%2)',
        label,
        words
      )
    : label;
}

/**
 * What assistive technology says of an option: `label` and the whole
 * `sentence` of its reason.
 */
function ariaText(
  trans: TranslationBundle,
  label: string,
  sentence: string
): string {
  return sentence
    ? trans._p('a choice — why it cannot be had', '%1 — %2', label, sentence)
    : label;
}

/**
 * Why no GPU choice can be had for an image: a CPU build, or one whose CUDA
 * the driver cannot run (`driverReason`: the sentence when the verdict has
 * none); `null` when the image can have GPUs.
 */
function imageReason(
  trans: TranslationBundle,
  row: IImageRow | null,
  driverReason: string
): IChoiceReason | null {
  if (row && !row.gpu) {
    return {
      sentence: trans.__('This image is a CPU build: it cannot use GPUs.'),
      words: trans._p(
        'why a GPU choice cannot be had, in a few words',
        'CPU build'
      )
    };
  }
  if (row && row.verdict.outcome === 'cannot-run') {
    return {
      sentence: row.verdict.reason.trim() || driverReason,
      words: trans._p(
        'why a GPU choice cannot be had, in a few words',
        'cannot run here'
      )
    };
  }
  return null;
}

/**
 * The GPU choices for a launch of `row` (or a switch of a kernel that holds
 * GPUs, `kernelId`): counts from 0 to the host's GPUs, then each GPU that is
 * free on its own. Choices that cannot be met now are disabled with the
 * reason; with `wait` (the start waits in the GPU queue), only those that can
 * never be met are: the others say that they wait.
 *
 * On a cluster (`cluster`: Kubernetes, Slurm) whose GPUs are its nodes', not
 * this host's: counts from 0 to the most a node has, which its scheduler
 * gives when it can (a start waits in its queue meanwhile).
 */
export function gpuChoices(
  trans: TranslationBundle,
  report: IGpuReport | null,
  row: IImageRow | null,
  kernelId = '',
  wait = false,
  cluster: IClusterView | null = null
): IGpuChoice[] {
  if (cluster && cluster.backend !== 'docker' && !report?.gpus.length) {
    return clusterGpuChoices(trans, cluster, row, report);
  }
  const total = report ? report.gpus.length : 0;
  const free = availableGpus(report, kernelId);
  const noGpuReason = (): IChoiceReason => {
    if (!report || total === 0) {
      return {
        sentence: describeNoGpus(trans, report),
        words: trans._p(
          'why a GPU choice cannot be had, in a few words',
          'no GPUs here'
        )
      };
    }
    return (
      imageReason(
        trans,
        row,
        trans.__(
          "This image's CUDA needs a newer NVIDIA driver than this host's."
        )
      ) ?? NO_REASON
    );
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
  // More than the cap itself: no kernel shut down helps, and the user's other
  // kernels (maybe none) are beside the point.
  const overCap = (n: number): IChoiceReason =>
    cap <= 0 || mineHeld + n <= cap
      ? NO_REASON
      : {
          sentence:
            n > cap
              ? trans._n(
                  'Over your limit of %1 GPU per user.',
                  'Over your limit of %1 GPUs per user.',
                  cap
                )
              : trans._n(
                  'Over your limit of %1 GPU per user (your other kernels hold %2): shut one down first.',
                  'Over your limit of %1 GPUs per user (your other kernels hold %2): shut one down first.',
                  cap,
                  mineHeld
                ),
          words: trans._p(
            'why a GPU choice cannot be had, in a few words',
            'over your limit'
          )
        };
  const choice = (
    value: string,
    label: string,
    request: GpuRequest,
    reason: IChoiceReason,
    busy = false,
    ownHeld = false,
    option: (words: string) => string = words => optionText(trans, label, words)
  ): IGpuChoice => {
    // Busy GPUs can be waited for: the choice stays, and says it waits.
    const waits = wait && busy && reason.sentence !== '';
    const why: IChoiceReason = waits
      ? {
          sentence: trans._p(
            'a busy choice — it waits',
            '%1 Waits for it in the queue.',
            reason.sentence
          ),
          words: trans._p(
            'a busy choice, in a few words — it waits',
            '%1, waits',
            reason.words
          )
        }
      : wait && ownHeld && reason.sentence !== ''
        ? {
            sentence: trans._p(
              'a choice that waiting cannot meet',
              '%1 Your own kernels hold the GPUs it needs: shut one down first.',
              reason.sentence
            ),
            words: trans._p(
              'why a GPU choice cannot be had, in a few words',
              'held by your kernels'
            )
          }
        : reason;
    return {
      value,
      label,
      option: option(why.words),
      ariaLabel: ariaText(trans, label, why.sentence),
      request,
      disabled: reason.sentence !== '' && !waits,
      reason: why.sentence
    };
  };
  const choices: IGpuChoice[] = [
    choice('count:0', noGpuText(trans), 0, NO_REASON)
  ];
  for (let n = 1; n <= total; n++) {
    const capped = blocked.sentence ? NO_REASON : overCap(n);
    const short: IChoiceReason =
      n <= free.length
        ? NO_REASON
        : free.length === 0
          ? {
              sentence: trans.__('No free GPU: every GPU is taken.'),
              words: trans._p(
                'why a GPU choice cannot be had, in a few words',
                'all taken'
              )
            }
          : {
              sentence: trans._n(
                'Only %1 GPU is free.',
                'Only %1 GPUs are free.',
                free.length
              ),
              words: trans._np(
                'why a GPU choice cannot be had, in a few words',
                'only %1 free',
                'only %1 free',
                free.length
              )
            };
    const reason = blocked.sentence
      ? blocked
      : capped.sentence
        ? capped
        : short;
    const waitable = n <= total - mineHeld;
    choices.push(
      choice(
        `count:${n}`,
        trans._n('%1 GPU', '%1 GPUs', n),
        n,
        reason,
        !blocked.sentence && !capped.sentence && waitable,
        !blocked.sentence && !capped.sentence && !waitable
      )
    );
  }
  if (!blocked.sentence) {
    const capped = overCap(1);
    for (const gpu of report?.gpus ?? []) {
      const taken = !free.includes(gpu);
      const reason = capped.sentence
        ? capped
        : taken
          ? {
              sentence: trans.__('GPU %1 is taken.', gpu.index),
              words: trans._p(
                'why a GPU choice cannot be had, in a few words',
                'taken'
              )
            }
          : NO_REASON;
      choices.push(
        choice(
          `id:${gpu.uuid}`,
          trans.__('GPU %1 only (%2)', gpu.index, gpu.name),
          [gpu.uuid],
          reason,
          !capped.sentence && !heldByMe(gpu),
          !capped.sentence && heldByMe(gpu),
          // Its reason inside its own brackets, not a second pair after them.
          words =>
            words
              ? trans.__('GPU %1 only (%2, %3)', gpu.index, gpu.name, words)
              : trans.__('GPU %1 only (%2)', gpu.index, gpu.name)
        )
      );
    }
  }
  return choices;
}

/**
 * The most GPUs one kernel can get on a cluster: the most a ready node has (a
 * kernel runs on one node); 0 without GPU nodes.
 */
export function largestNodeGpus(cluster: IClusterView): number {
  const sizes = cluster.pools.flatMap(pool =>
    pool.nodes
      .filter(node => node.ready)
      .map(node => node.resources.reduce((n, r) => n + r.allocatable, 0))
  );
  return Math.max(0, ...sizes);
}

/**
 * The choices on a cluster: counts up to its largest node's GPUs, each
 * enabled unless the image or the user's limit rules it out. Taken GPUs do not
 * disable a choice: the scheduler queues the start until they free.
 */
function clusterGpuChoices(
  trans: TranslationBundle,
  cluster: IClusterView,
  row: IImageRow | null,
  report: IGpuReport | null
): IGpuChoice[] {
  const total = largestNodeGpus(cluster);
  const blocked: IChoiceReason =
    total === 0
      ? {
          sentence:
            cluster.engine_error ||
            trans.__('No node of the cluster offers GPUs.'),
          words: trans._p(
            'why a GPU choice cannot be had, in a few words',
            'no GPU nodes'
          )
        }
      : (imageReason(
          trans,
          row,
          trans.__(
            "This image's CUDA needs a newer NVIDIA driver than the cluster's."
          )
        ) ?? NO_REASON);
  const cap = report?.max_gpus_per_user ?? 0;
  const none = noGpuText(trans);
  const choices: IGpuChoice[] = [
    {
      value: 'count:0',
      label: none,
      option: none,
      ariaLabel: none,
      request: 0,
      disabled: false,
      reason: ''
    }
  ];
  for (let n = 1; n <= total; n++) {
    const label = trans._n('%1 GPU', '%1 GPUs', n);
    const reason: IChoiceReason = blocked.sentence
      ? blocked
      : cap > 0 && n > cap
        ? {
            sentence: trans._n(
              'Over your limit of %1 GPU per user.',
              'Over your limit of %1 GPUs per user.',
              cap
            ),
            words: trans._p(
              'why a GPU choice cannot be had, in a few words',
              'over your limit'
            )
          }
        : NO_REASON;
    choices.push({
      value: `count:${n}`,
      label,
      option: optionText(trans, label, reason.words),
      ariaLabel: ariaText(trans, label, reason.sentence),
      request: n,
      disabled: reason.sentence !== '',
      reason: reason.sentence
    });
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
