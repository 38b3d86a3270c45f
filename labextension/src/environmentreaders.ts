/**
 * Reading what a notebook ran on (json.ts's policy): fields an older server
 * lacks, read field by field; a stamp that is not one reads as `null`.
 */
import { isObject, str } from './json';
import {
  IEnvironmentStamp,
  INotebookKernelState,
  INotebookKernelStateKernel,
  INotebookRetiredImage,
  INotebookStampCheck,
  StoredGpuRequest
} from './environmenttypes';

export function environmentStampOf(value: unknown): IEnvironmentStamp | null {
  if (!isObject(value) || !str(value.image) || !str(value.digest)) {
    return null;
  }
  const verdict = isObject(value.verdict)
    ? { outcome: str(value.verdict.outcome), reason: str(value.verdict.reason) }
    : null;
  return {
    image: str(value.image),
    digest: str(value.digest),
    framework: str(value.framework),
    framework_version: str(value.framework_version),
    cuda_version: str(value.cuda_version),
    python_version: str(value.python_version),
    gpus: Array.isArray(value.gpus)
      ? value.gpus.filter((g): g is string => typeof g === 'string')
      : [],
    driver_version: str(value.driver_version),
    verdict
  };
}

function stampCheckOf(value: unknown): INotebookStampCheck | null {
  if (!isObject(value)) {
    return null;
  }
  const recorded = environmentStampOf(value.recorded);
  if (!recorded) {
    return null;
  }
  return {
    recorded,
    pin: str(value.pin),
    tag_digest: str(value.tag_digest),
    moved: value.moved === true,
    recorded_present: value.recorded_present === true,
    pinnable: value.pinnable === true,
    pin_reference: str(value.pin_reference),
    compared: value.compared === true
  };
}

function retiredOf(value: unknown): INotebookRetiredImage | null {
  if (!isObject(value) || !str(value.image)) {
    return null;
  }
  return {
    state: value.state === 'retired' ? 'retired' : 'removed',
    image: str(value.image),
    message: str(value.message),
    redirect: str(value.redirect),
    redirect_kernel_name: str(value.redirect_kernel_name)
  };
}

function storedRequestOf(value: unknown): StoredGpuRequest {
  if (typeof value === 'number') {
    return value;
  }
  if (Array.isArray(value) && value.every(v => typeof v === 'string')) {
    return value as string[];
  }
  return null;
}

function kernelOf(value: unknown): INotebookKernelStateKernel | null {
  if (!isObject(value) || !str(value.id)) {
    return null;
  }
  return {
    id: str(value.id),
    name: str(value.name),
    image: str(value.image),
    display_name: str(value.display_name),
    gpus: Array.isArray(value.gpus)
      ? value.gpus.filter(isObject).map(g => ({
          uuid: str(g.uuid),
          index: typeof g.index === 'string' ? g.index : null
        }))
      : [],
    execution_state: str(value.execution_state),
    environment: environmentStampOf(value.environment),
    pinned: str(value.pinned)
  };
}

/**
 * `GET /gpu-containers/notebooks/kernel?path=…`.
 */
export function notebookKernelStateOf(
  value: unknown
): INotebookKernelState | null {
  if (!isObject(value) || typeof value.path !== 'string') {
    return null;
  }
  return {
    path: value.path,
    request: storedRequestOf(value.request),
    request_problem: str(value.request_problem),
    default: storedRequestOf(value.default),
    kernel: kernelOf(value.kernel),
    stamp: stampCheckOf(value.stamp),
    retired: retiredOf(value.retired)
  };
}
