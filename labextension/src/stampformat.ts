/**
 * What a notebook ran on, in words (environment.ts keeps it in the notebook).
 */
import type { TranslationBundle } from '@jupyterlab/translation';

import { IEnvironmentStamp } from './environmenttypes';
import { noGpuText } from './gpuwords';

/**
 * The content part of a digest, 12 hex digits: `sha256:0123456789ab`.
 */
export function shortDigest(digest: string): string {
  const content = digest.slice(digest.lastIndexOf('@') + 1);
  const match = /^(sha256:)?([0-9a-f]{12})/.exec(content);
  return match ? `sha256:${match[2]}` : content;
}

/**
 * The stamp in a line: "jgc/x:1 (sha256:0123456789ab): PyTorch 24.05, CUDA
 * 12.4, Python 3.10; on NVIDIA H100: runs natively…".
 */
export function describeStamp(
  trans: TranslationBundle,
  stamp: IEnvironmentStamp
): string {
  const parts: string[] = [];
  if (stamp.framework) {
    parts.push(`${stamp.framework} ${stamp.framework_version}`.trim());
  }
  if (stamp.cuda_version) {
    parts.push(trans.__('CUDA %1', stamp.cuda_version));
  }
  if (stamp.python_version) {
    parts.push(trans.__('Python %1', stamp.python_version));
  }
  const image = trans.__('%1 (%2)', stamp.image, shortDigest(stamp.digest));
  const versions = parts.length
    ? trans.__('%1: %2', image, parts.join(', '))
    : image;
  if (!stamp.gpus.length) {
    return trans._p(
      'what a notebook ran on: its versions; no GPU',
      '%1; %2',
      versions,
      noGpuText(trans, 'sentence')
    );
  }
  const gpus = stamp.gpus.join(', ');
  return stamp.verdict
    ? trans.__('%1; on %2: %3', versions, gpus, stamp.verdict.reason)
    : trans.__('%1; on %2', versions, gpus);
}
