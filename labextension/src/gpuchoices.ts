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
  // More than the cap itself: no kernel shut down helps, and the user's other
  // kernels (maybe none) are beside the point.
  const overCap = (n: number): string =>
    cap <= 0 || mineHeld + n <= cap
      ? ''
      : n > cap
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
          );
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
  const blocked =
    total === 0
      ? cluster.engine_error || trans.__('No node of the cluster offers GPUs.')
      : row && !row.gpu
        ? trans.__('This image is a CPU build: it cannot use GPUs.')
        : row && row.verdict.outcome === 'cannot-run'
          ? row.verdict.reason.trim() ||
            trans.__(
              "This image's CUDA needs a newer NVIDIA driver than the cluster's."
            )
          : '';
  const cap = report?.max_gpus_per_user ?? 0;
  const choices: IGpuChoice[] = [
    {
      value: 'count:0',
      label: trans.__('No GPU'),
      option: trans.__('No GPU'),
      request: 0,
      disabled: false,
      reason: ''
    }
  ];
  for (let n = 1; n <= total; n++) {
    const label = trans._n('%1 GPU', '%1 GPUs', n);
    const reason =
      blocked ||
      (cap > 0 && n > cap
        ? trans._n(
            'Over your limit of %1 GPU per user.',
            'Over your limit of %1 GPUs per user.',
            cap
          )
        : '');
    choices.push({
      value: `count:${n}`,
      label,
      option: reason
        ? trans._p('a choice — why it cannot be had', '%1 — %2', label, reason)
        : label,
      request: n,
      disabled: reason !== '',
      reason
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
