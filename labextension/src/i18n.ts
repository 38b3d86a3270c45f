/**
 * The extension's translations: every sentence it shows goes through the
 * bundle of its domain, which JupyterLab's translator (ITranslator) gives.
 */
import {
  ITranslator,
  TranslationBundle,
  nullTranslator
} from '@jupyterlab/translation';

/**
 * The extension's translation domain: its Python package's name.
 */
export const TRANSLATION_DOMAIN = 'jupyter_gpu_containers';

/**
 * The extension's bundle from `translator`, or the English one without.
 */
export function translationBundle(
  translator?: ITranslator | null
): TranslationBundle {
  return (translator ?? nullTranslator).load(TRANSLATION_DOMAIN);
}
