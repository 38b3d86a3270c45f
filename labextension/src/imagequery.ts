/**
 * The image search of the panel and the picker: a query read as facts
 * (framework, version, CUDA, Python) where it names them, as words of the
 * reference elsewhere. `cuda 10` asks for CUDA 10.x, so it does not find
 * `pytorch:25.10` (CUDA 12.x), as a substring search did.
 *
 * Pure: no DOM, no translation (a query is matched, never shown).
 */
import { IImageRow } from './imagetypes';

/**
 * One condition of a query.
 *
 * - `framework`: the image has the framework (`key`, see FRAMEWORK_NAMES),
 *   at `version` when one is given (`''`: any version);
 * - `cuda`: the image's CUDA is `version` (`''`: the image has CUDA);
 * - `python`: the image's Python is `version`;
 * - `word`: the reference, framework label or description contains `text`.
 */
export type ImageQueryTerm =
  | { kind: 'framework'; key: string; version: string }
  | { kind: 'cuda'; version: string }
  | { kind: 'python'; version: string }
  | { kind: 'word'; text: string };

/**
 * The frameworks a query may name, each with the words that name it: the
 * catalog's names (catalog.py's `_FRAMEWORKS`) and the readiness probe's
 * package keys (`torch`, `paddlepaddle`), plus the usual short forms.
 */
export const FRAMEWORK_NAMES: Readonly<Record<string, readonly string[]>> = {
  pytorch: ['pytorch', 'torch'],
  tensorflow: ['tensorflow', 'tf'],
  jax: ['jax'],
  mxnet: ['mxnet'],
  paddle: ['paddle', 'paddlepaddle'],
  keras: ['keras'],
  cntk: ['cntk'],
  caffe: ['caffe'],
  caffe2: ['caffe2'],
  chainer: ['chainer'],
  rapids: ['rapids', 'rapidsai']
};

/**
 * A version as a query writes it: `12`, `12.4`, `v2.3`, `12.x`, `2.3.*`.
 */
const VERSION = /^v?(\d+(?:\.\d+)*)(?:\.[x*])?$/;

/**
 * A keyword glued to its version: `cuda12.4`, `cuda=12`, `torch2.3`,
 * `python3.11`, `py3.11`, `tf2`.
 */
const GLUED = /^([a-z][a-z0-9]*?)[=:]?v?(\d+(?:\.\d+)*)(?:\.[x*])?$/;

/**
 * PyTorch's wheel tag for a CUDA release: `cu121` is CUDA 12.1, `cu92` 9.2.
 */
const CU_TAG = /^cu(\d{1,2})(\d)$/;

/**
 * The framework key a word names, or `''`. `extra` are framework names the
 * catalog holds that FRAMEWORK_NAMES does not know (an NGC product name).
 */
function frameworkKey(word: string, extra: ReadonlySet<string>): string {
  for (const [key, names] of Object.entries(FRAMEWORK_NAMES)) {
    if (names.includes(word)) {
      return key;
    }
  }
  return extra.has(word) ? word : '';
}

/**
 * Read a query: `cuda 12`, `pytorch 2.3`, `tensorflow`, `python 3.11`, free
 * words, in any order and case; every term must hold for an image to match.
 *
 * @param query What was typed.
 * @param frameworks The framework names of the catalog's images, so that a
 *   framework this module does not list (`RAPIDS`) is still read as one.
 */
export function parseImageQuery(
  query: string,
  frameworks: Iterable<string> = []
): ImageQueryTerm[] {
  const extra = new Set<string>();
  for (const name of frameworks) {
    if (name.trim()) {
      extra.add(name.trim().toLowerCase());
    }
  }
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  const terms: ImageQueryTerm[] = [];
  const keyword = (
    word: string
  ): Exclude<ImageQueryTerm, { kind: 'word' }> | null => {
    if (word === 'cuda') {
      return { kind: 'cuda', version: '' };
    }
    if (word === 'python' || word === 'py') {
      return { kind: 'python', version: '' };
    }
    const key = frameworkKey(word, extra);
    return key ? { kind: 'framework', key, version: '' } : null;
  };
  for (let i = 0; i < words.length; i++) {
    const word = words[i];
    const term = keyword(word);
    if (term) {
      // A version in the next word belongs to the keyword: `cuda 12`.
      const next = VERSION.exec(words[i + 1] ?? '');
      if (next) {
        i += 1;
      }
      if (term.kind === 'python' && !next) {
        // "python" alone is as much a word as a fact: the `Python` group,
        // `python:3.11-slim`, `scipy-notebook`'s description.
        terms.push({ kind: 'word', text: word });
      } else {
        terms.push({ ...term, version: next ? next[1] : '' });
      }
      continue;
    }
    const wheel = CU_TAG.exec(word);
    if (wheel) {
      terms.push({ kind: 'cuda', version: `${wheel[1]}.${wheel[2]}` });
      continue;
    }
    const glued = GLUED.exec(word);
    const gluedTerm = glued ? keyword(glued[1]) : null;
    if (glued && gluedTerm) {
      terms.push({ ...gluedTerm, version: glued[2] });
      continue;
    }
    terms.push({ kind: 'word', text: word });
  }
  return terms;
}

/**
 * Whether `actual` is the version `wanted` names: each of `wanted`'s parts
 * equals `actual`'s part in that place, so `12` is 12.x, `2.3` is 2.3.x
 * but not 2.30, and `2.4.0` is `2.4.0a0` and `2.4.0+cu121` (a part compares
 * by its leading number when the query's part is a number).
 */
export function versionMatches(wanted: string, actual: string): boolean {
  if (!wanted) {
    return true;
  }
  const want = wanted.split('.');
  const have = actual.trim().toLowerCase().replace(/^v/, '').split('.');
  if (!actual.trim() || have.length < want.length) {
    return false;
  }
  return want.every((part, i) => {
    if (have[i] === part) {
      return true;
    }
    const lead = /^\d+/.exec(have[i]);
    return /^\d+$/.test(part) && lead !== null && lead[0] === part;
  });
}

/**
 * The versions a tag names (`2.15.0-gpu-jupyter` → `2.15.0`): what an
 * image's framework version is known by when its facts do not say.
 */
function tagVersions(reference: string): string[] {
  const name = reference.split('@')[0];
  const last = name.slice(name.lastIndexOf('/') + 1);
  const colon = last.indexOf(':');
  if (colon < 0) {
    return [];
  }
  return last
    .slice(colon + 1)
    .split(/[-_]/)
    .filter(part => VERSION.test(part))
    .map(part => part.replace(/^v/, ''));
}

/**
 * Whether a framework name (the catalog's `PyTorch`, the probe's `torch`)
 * names the framework `key`.
 */
function namesFramework(name: string, key: string): boolean {
  const word = name.trim().toLowerCase();
  return word !== '' && (FRAMEWORK_NAMES[key] ?? [key]).includes(word);
}

function matchesFramework(
  row: IImageRow,
  key: string,
  version: string
): boolean {
  const versions: string[] = [];
  let has = false;
  if (namesFramework(row.framework, key)) {
    has = true;
    versions.push(row.framework_version, row.framework_release);
  }
  for (const [name, installed] of Object.entries(row.frameworks ?? {})) {
    if (namesFramework(name, key)) {
      has = true;
      versions.push(installed);
    }
  }
  if (!has) {
    return false;
  }
  if (!version) {
    return true;
  }
  const known = versions.filter(v => v && v.trim());
  // An image not pulled yet is known by its tag alone.
  const candidates = known.length ? known : tagVersions(row.reference);
  return candidates.some(v => versionMatches(version, v));
}

/**
 * What a free word is looked for in.
 */
function haystack(row: IImageRow): string {
  const framework = row.framework
    ? `${row.framework} ${row.framework_release} ${row.framework_version}`
    : `python ${row.python_version}`;
  return `${row.reference} ${framework} ${row.description}`.toLowerCase();
}

/**
 * Whether an image matches every term of a query.
 */
export function matchesImageQuery(
  row: IImageRow,
  terms: readonly ImageQueryTerm[]
): boolean {
  return terms.every(term => {
    switch (term.kind) {
      case 'cuda':
        return (
          !!row.cuda_version && versionMatches(term.version, row.cuda_version)
        );
      case 'python':
        return (
          !!row.python_version &&
          versionMatches(term.version, row.python_version)
        );
      case 'framework':
        return matchesFramework(row, term.key, term.version);
      default:
        return haystack(row).includes(term.text);
    }
  });
}

/**
 * The rows that match a query, in their order.
 */
export function searchImages(rows: IImageRow[], query: string): IImageRow[] {
  const terms = parseImageQuery(
    query,
    rows.map(row => row.framework)
  );
  return terms.length
    ? rows.filter(row => matchesImageQuery(row, terms))
    : rows;
}
