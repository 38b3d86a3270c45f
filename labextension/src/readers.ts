/**
 * Readers of the documents the front end cannot work without (json.ts says
 * the policy): each checks the shape that the model and the views rely on
 * (the objects and arrays they step into) and hands the document on as the
 * server wrote it. A request whose answer fails its reader fails (api.ts).
 */
import { IClusterView, IGpuReport, IStatus } from './gputypes';
import { ICatalog, IPull } from './imagetypes';
import {
  Json,
  Reader,
  guarded,
  isObject,
  isObjectArray,
  parseJson
} from './json';
import {
  IKernelList,
  IKernelLogContainer,
  IKernelLogEnded,
  IKernelLogLines,
  IKernelLogShutdown,
  IKernelView,
  INotebookKernelReply
} from './kerneltypes';
import { IAdminActionReply } from './sharingtypes';

function hasString(value: Json, key: string): boolean {
  return typeof value[key] === 'string';
}

/**
 * `GET /gpu-containers/status`.
 */
export const statusOf: Reader<IStatus> = guarded(
  (value): value is IStatus => isObject(value) && isObject(value.engine)
);

/**
 * `GET /gpu-containers/gpus`: each GPU with its holders.
 */
export const gpuReportOf: Reader<IGpuReport> = guarded(
  (value): value is IGpuReport =>
    isObject(value) &&
    isObjectArray(value.gpus) &&
    value.gpus.every(gpu => Array.isArray(gpu.holders))
);

/**
 * `GET /gpu-containers/cluster`.
 */
export const clusterViewOf: Reader<IClusterView> = guarded(
  (value): value is IClusterView =>
    isObject(value) && hasString(value, 'backend') && isObjectArray(value.pools)
);

/**
 * `GET /gpu-containers/images`: the catalog's rows.
 */
export const catalogOf: Reader<ICatalog> = guarded(
  (value): value is ICatalog => isObject(value) && isObjectArray(value.images)
);

/**
 * A pull's snapshot: the answer of `POST /gpu-containers/pulls` and of a
 * cancel, and each event of a pull's stream.
 */
export const pullOf: Reader<IPull> = guarded(
  (value): value is IPull =>
    isObject(value) && hasString(value, 'id') && hasString(value, 'state')
);

/**
 * A pull snapshot from an event's data, or `null` when it is not one.
 */
export function parseSnapshot(data: string | undefined): IPull | null {
  const value = parseJson(data);
  // Not JSON, or no snapshot: ignored, the next event carries a whole one.
  return value === undefined ? null : pullOf(value);
}

/**
 * `GET /gpu-containers/kernels`: the user's kernels with their GPU use.
 */
export const kernelListOf: Reader<IKernelList> = guarded(
  (value): value is IKernelList =>
    isObject(value) &&
    isObjectArray(value.kernels) &&
    value.kernels.every(kernel => hasString(kernel, 'kernel_id'))
);

/**
 * `GET /gpu-containers/kernels/{id}`: one kernel's own view.
 */
export const kernelViewOf: Reader<IKernelView> = guarded(
  (value): value is IKernelView =>
    isObject(value) &&
    hasString(value, 'kernel_id') &&
    Array.isArray(value.gpus) &&
    isObject(value.usage) &&
    Array.isArray(value.usage.samples) &&
    isObject(value.image) &&
    Array.isArray(value.mounts) &&
    Array.isArray(value.tmpfs) &&
    Array.isArray(value.phases)
);

/**
 * `POST /gpu-containers/notebooks/kernel`.
 */
export const notebookKernelReplyOf: Reader<INotebookKernelReply> = guarded(
  (value): value is INotebookKernelReply =>
    isObject(value) && (value.session === null || isObject(value.session))
);

/**
 * `POST /gpu-containers/admin/kernels/{id}`.
 */
export const adminActionReplyOf: Reader<IAdminActionReply> = guarded(
  (value): value is IAdminActionReply =>
    isObject(value) && hasString(value, 'state')
);

/**
 * The events of a kernel's log stream (`GET .../kernels/{id}/log`), by name.
 */
export interface ILogEvents {
  container: IKernelLogContainer;
  lines: IKernelLogLines;
  ended: IKernelLogEnded;
  shutdown: IKernelLogShutdown;
}

/**
 * The reader of each event of a kernel's log stream.
 */
export const logEventReaders: {
  [K in keyof ILogEvents]: Reader<ILogEvents[K]>;
} = {
  container: guarded(
    (value): value is IKernelLogContainer =>
      isObject(value) && hasString(value, 'container_id')
  ),
  lines: guarded(
    (value): value is IKernelLogLines =>
      isObject(value) && isObjectArray(value.lines)
  ),
  ended: guarded(
    (value): value is IKernelLogEnded =>
      isObject(value) && hasString(value, 'reason')
  ),
  shutdown: guarded(
    (value): value is IKernelLogShutdown =>
      isObject(value) && hasString(value, 'reason')
  )
};
