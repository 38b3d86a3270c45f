import type { TranslationBundle } from '@jupyterlab/translation';

import { IClusterView, IStatus } from './gputypes';

/**
 * What to tell people about a status reply.
 */
export interface IStatusDescription {
  /**
   * `info` when all is well (logged), `warning` when people should be told.
   */
  level: 'info' | 'warning';

  /**
   * The sentence to log or show.
   */
  text: string;
}

/**
 * Describe a `GET /gpu-containers/status` reply in one sentence.
 */
export function describeStatus(
  trans: TranslationBundle,
  status: IStatus
): IStatusDescription {
  const { engine, kernelspecs } = status;
  if (!engine.ok) {
    const text =
      engine.message.trim() ||
      trans.__('The container engine at %1 is unreachable.', engine.endpoint);
    return { level: 'warning', text };
  }
  const version = engine.version || trans.__('of unknown version');
  return {
    level: 'info',
    text: trans._n(
      'jupyter-gpu-containers: engine %2, %1 container kernel spec',
      'jupyter-gpu-containers: engine %2, %1 container kernel specs',
      kernelspecs,
      version
    )
  };
}

/**
 * The sentence to show when the engine cannot be used, or `''` when it can.
 */
/**
 * The heading of the panel's banner for a problem: the engine's, by the name
 * its users know (`backend`: the cluster view's, "docker" on a host), or the
 * server's own when its status could not be read at all (the engine may be
 * fine).
 */
export function problemHeading(
  trans: TranslationBundle,
  status: IStatus | null,
  backend: IClusterView['backend'] | undefined
): string {
  if (!engineProblem(trans, status)) {
    return trans.__('The server did not answer.');
  }
  switch (backend) {
    case 'slurm':
      return trans.__('Slurm does not answer.');
    case 'kubernetes':
      return trans.__('Kubernetes does not answer.');
    default:
      return trans.__('No Docker engine.');
  }
}

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
