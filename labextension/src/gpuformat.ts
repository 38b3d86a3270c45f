/**
 * Pure helpers that turn the GPU report into what the panel and the toolbar
 * show: who holds a GPU, which GPUs a kernel could get or holds, a GPU's
 * memory, and why the host has no GPUs to offer. No DOM, no requests:
 * everything here is unit-tested.
 *
 * Helpers that write words for people take the extension's translation
 * bundle (`trans`) first. Not translated: byte units (IEC symbols: KiB, MiB,
 * GiB).
 */
import type { TranslationBundle } from '@jupyterlab/translation';

import { formatBytes } from './format';
import { IClusterView, IGpu, IGpuReport, IHolder } from './gputypes';
import { noGpuText, WordsPlace } from './gpuwords';

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
  kernelId: string,
  cluster: IClusterView | null = null
): string[] {
  if (!kernelId) {
    return [];
  }
  const onHost = (report?.gpus ?? [])
    .filter(gpu => gpu.holders.some(h => h.mine && h.kernel_id === kernelId))
    .map(gpu => gpu.index);
  if (onHost.length > 0 || !cluster) {
    return onHost;
  }
  // On a cluster the scheduler gave them: their indices on the kernel's node
  // where it says (Slurm), else as many unnamed ones ('') as it holds.
  return cluster.pools
    .flatMap(pool => pool.holders)
    .filter(h => h.mine && h.kernel_id === kernelId)
    .flatMap(h =>
      h.gpus.length > 0 ? h.gpus : Array.from({ length: h.count }, () => '')
    );
}

/**
 * The GPUs part of a label: `No GPU`, `GPU 0`, `GPUs 0,1`; `no GPU` in
 * `place` `sentence`.
 */
export function gpuListLabel(
  trans: TranslationBundle,
  indexes: string[],
  place: WordsPlace = 'label'
): string {
  if (indexes.length === 0) {
    return noGpuText(trans, place);
  }
  if (indexes.every(index => index === '')) {
    // A cluster's scheduler placed them and does not say which.
    return trans._n('%1 GPU', '%1 GPUs', indexes.length);
  }
  return trans._n('GPU %2', 'GPUs %2', indexes.length, indexes.join(','));
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
