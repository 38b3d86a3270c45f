/**
 * The notebook metadata key of this extension's section, next to
 * `kernelspec`: the GPU request (switching.ts), the environment stamp and
 * the pinned digest (environment.ts) travel with the notebook (renamed,
 * copied, uploaded, shared), and the server reads them whenever a kernel
 * starts for it.
 */
export const GPU_METADATA_KEY = 'gpu_containers';
