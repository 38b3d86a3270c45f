/**
 * Words about GPUs that several views say, kept in one place so that they
 * say them alike.
 */
import type { TranslationBundle } from '@jupyterlab/translation';

/**
 * Where the words stand: on their own or first in a label, an option, a
 * table cell or one part of a `·` line (`label`), or inside a sentence
 * (`sentence`).
 */
export type WordsPlace = 'label' | 'sentence';

/**
 * A kernel, a request or a choice without a GPU: "No GPU" as a label,
 * "no GPU" inside a sentence. The panel's options, the toolbar and the kernel
 * lists once spelt it each their own way ("no GPU" beside "No GPU").
 */
export function noGpuText(
  trans: TranslationBundle,
  place: WordsPlace = 'label'
): string {
  return place === 'label' ? trans.__('No GPU') : trans.__('no GPU');
}
