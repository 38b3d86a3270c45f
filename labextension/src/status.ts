import { IStatus } from './types';

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
export function describeStatus(status: IStatus): IStatusDescription {
  const { engine, kernelspecs } = status;
  if (!engine.ok) {
    const text =
      engine.message.trim() ||
      `The container engine at ${engine.endpoint} is unreachable.`;
    return { level: 'warning', text };
  }
  const version = engine.version || 'of unknown version';
  const specs = kernelspecs === 1 ? 'spec' : 'specs';
  return {
    level: 'info',
    text: `jupyter-gpu-containers: engine ${version}, ${kernelspecs} container kernel ${specs}`
  };
}
