/**
 * A pseudo-translation for the tests: every string that goes through it
 * comes out marked, `⟦domain:text⟧`, so a test sees what was translated and
 * in which domain.
 */
import {
  ITranslator,
  TranslationBundle,
  nullTranslator
} from '@jupyterlab/translation';

/**
 * The bundle of `domain`: English text, marked.
 */
export function pseudoBundle(
  domain = 'jupyter_gpu_containers'
): TranslationBundle {
  const english = nullTranslator.load(domain);
  const mark = (text: string): string => `⟦${domain}:${text}⟧`;
  return {
    __: (msgid, ...args) => mark(english.__(msgid, ...args)),
    _n: (msgid, plural, n, ...args) =>
      mark(english._n(msgid, plural, n, ...args)),
    _p: (context, msgid, ...args) =>
      mark(`${context}|${english._p(context, msgid, ...args)}`),
    _np: (context, msgid, plural, n, ...args) =>
      mark(`${context}|${english._np(context, msgid, plural, n, ...args)}`),
    gettext: (msgid, ...args) => mark(english.gettext(msgid, ...args)),
    ngettext: (msgid, plural, n, ...args) =>
      mark(english.ngettext(msgid, plural, n, ...args)),
    pgettext: (context, msgid, ...args) =>
      mark(`${context}|${english.pgettext(context, msgid, ...args)}`),
    npgettext: (context, msgid, plural, n, ...args) =>
      mark(
        `${context}|${english.npgettext(context, msgid, plural, n, ...args)}`
      ),
    dcnpgettext: (domainName, context, msgid, plural, n, ...args) =>
      mark(english.dcnpgettext(domainName, context, msgid, plural, n, ...args))
  };
}

/**
 * A translator that gives pseudo bundles.
 */
export function pseudoTranslator(): ITranslator & { load: jest.Mock } {
  return {
    languageCode: 'pseudo',
    load: jest.fn((domain: string) => pseudoBundle(domain))
  };
}
