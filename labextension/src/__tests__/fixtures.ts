/**
 * Documents as the server sends them, for the unit tests: each factory gives
 * a complete, valid document that a test overrides field by field.
 */
import { IClusterView, IGpu, IGpuReport, IHolder, IStatus } from '../gputypes';
import { ICatalog, IImageRow, IPull } from '../imagetypes';

export function makeRow(overrides: Partial<IImageRow> = {}): IImageRow {
  return {
    reference: 'nvcr.io/nvidia/pytorch:24.05-py3',
    registry: 'nvcr.io',
    listed: true,
    description: 'NVIDIA PyTorch',
    allowed: true,
    allowed_reason: '',
    pull_id: '',
    retired: null,
    saved_from: null,
    pulled: true,
    id: 'sha256:1111111111111111111111111111111111111111111111111111111111111111',
    digest:
      'nvcr.io/nvidia/pytorch@sha256:2222222222222222222222222222222222222222222222222222222222222222',
    size: 9_800_000_000,
    shared_size: 300_000_000,
    unique_size: 9_500_000_000,
    containers: 0,
    created: '2024-05-20T10:00:00Z',
    framework: 'PyTorch',
    framework_version: '2.4.0a0',
    framework_release: '24.05',
    cuda_version: '12.4',
    gpu: true,
    verdict: {
      outcome: 'native',
      reason: 'The driver supports CUDA 12.4.',
      needed_driver: '550.54'
    },
    kernel_name: 'gpu-pytorch-24.05',
    kernel_ready: true,
    kernel_ready_reason: '',
    python: '/usr/bin/python3',
    python_version: '3.10',
    ipykernel_version: '6.29.4',
    frameworks: { torch: '2.4.0a0' },
    ...overrides
  };
}

export function makeHolder(overrides: Partial<IHolder> = {}): IHolder {
  return {
    mine: false,
    kernel_id: '',
    user: '',
    notebook: '',
    image: '',
    since: 1_700_000_000,
    memory_used: null,
    ...overrides
  };
}

export function makeGpu(
  index: string,
  holders: IHolder[] = [],
  overrides: Partial<IGpu> = {}
): IGpu {
  return {
    index,
    uuid: `GPU-${index}`,
    name: 'NVIDIA A100-SXM4-80GB',
    brand: 'tesla',
    compute_capability: '8.0',
    memory_total: 80_000_000_000,
    memory_used: 1_000_000_000,
    utilization: 0,
    mig_enabled: false,
    mig_instances: [],
    parent_uuid: '',
    holders,
    ...overrides
  };
}

export function makeReport(
  gpus: IGpu[],
  overrides: Partial<IGpuReport> = {}
): IGpuReport {
  return {
    source: 'nvml',
    reason: '',
    driver_version: '550.54.15',
    cuda_driver_version: '12.4',
    policy: 'exclusive',
    max_kernels_per_gpu: 1,
    max_gpus_per_user: 0,
    gpus,
    engine_error: '',
    ledger_scope: 'host',
    ...overrides
  };
}

export function makePull(overrides: Partial<IPull> = {}): IPull {
  return {
    id: 'pull-1',
    image: 'nvcr.io/nvidia/pytorch:24.05-py3',
    registry: 'nvcr.io',
    state: 'pulling',
    phase: 'downloading',
    message: '',
    error_status: 0,
    layers: [],
    total_bytes: 300_000_000,
    downloaded_bytes: 120_000_000,
    extracted_layers: 0,
    progress: 0.4,
    digest: '',
    started: 1_700_000_000,
    finished: 0,
    ...overrides
  };
}

export function makeStatus(
  overrides: Partial<IStatus['engine']> = {}
): IStatus {
  return {
    engine: {
      ok: true,
      message: 'Docker engine 27.3.1 answered.',
      version: '27.3.1',
      endpoint: 'unix:///var/run/docker.sock',
      ...overrides
    },
    kernelspecs: 2
  };
}

export function makeCatalog(images: IImageRow[]): ICatalog {
  return {
    images,
    disk: {
      images: images.length,
      layers_bytes: 9_800_000_000,
      images_bytes: 9_800_000_000,
      unused_images: images.length,
      reclaimable_bytes: 9_500_000_000
    },
    engine_error: '',
    host: {
      gpus: 2,
      driver_version: '550.54.15',
      cuda_driver_version: '12.4',
      reason: '',
      source: 'nvml'
    }
  };
}

/**
 * `GET /gpu-containers/cluster` on Kubernetes: an A100 pool of two nodes
 * (one not ready) with the user's kernel and another user's, and an H100 pool
 * whose driver is too old for the CUDA 12.4 image.
 */
export function clusterView(): IClusterView {
  const gpu = (allocatable: number, held: number) => ({
    resource: 'nvidia.com/gpu',
    allocatable,
    held,
    free: allocatable - held
  });
  return {
    backend: 'kubernetes',
    engine_error: '',
    pools: [
      {
        id: 'NVIDIA-A100-SXM4-80GB, driver 550.54.15, compute 8.0, 81920 MiB',
        product: 'NVIDIA-A100-SXM4-80GB',
        driver_version: '550.54.15',
        cuda_driver_version: '12.4',
        compute_capability: '8.0',
        memory_total: 81920 * 1024 * 1024,
        nodes: [
          { name: 'gpu-a-0', ready: true, resources: [gpu(4, 3)] },
          { name: 'gpu-a-1', ready: false, resources: [gpu(4, 0)] }
        ],
        holders: [
          {
            node: 'gpu-a-0',
            pod: 'jupyter-kernel-1a2b3c4d-0f0f0f',
            count: 2,
            resource: 'nvidia.com/gpu',
            mine: true,
            kernel_id: 'k-1',
            user: 'alice',
            notebook: 'work/train.ipynb',
            gpus: []
          },
          {
            node: 'gpu-a-0',
            pod: 'jupyter-kernel-5e6f7a8b-1e1e1e',
            count: 1,
            resource: 'nvidia.com/gpu',
            mine: false,
            kernel_id: '',
            user: '',
            notebook: '',
            gpus: []
          }
        ],
        verdicts: [
          {
            image: 'nvidia/cuda:12.4.1-base-ubuntu22.04',
            verdict: {
              outcome: 'native',
              reason: 'runs natively: driver 550.54.15 supports CUDA 12.4',
              needed_driver: ''
            }
          }
        ]
      },
      {
        id: 'NVIDIA-H100-80GB-HBM3, driver 535.104.05, compute 9.0',
        product: 'NVIDIA-H100-80GB-HBM3',
        driver_version: '535.104.05',
        cuda_driver_version: '',
        compute_capability: '9.0',
        memory_total: null,
        nodes: [
          {
            name: 'gpu-h-0',
            ready: true,
            resources: [
              gpu(2, 0),
              {
                resource: 'nvidia.com/mig-1g.10gb',
                allocatable: 7,
                held: 1,
                free: 6
              }
            ]
          }
        ],
        holders: [
          {
            node: 'gpu-h-0',
            pod: 'jupyter-kernel-99aa88bb-2d2d2d',
            count: 1,
            resource: 'nvidia.com/mig-1g.10gb',
            mine: false,
            kernel_id: '',
            user: 'bob',
            notebook: 'bob/x.ipynb',
            gpus: []
          }
        ],
        verdicts: [
          {
            image: 'nvidia/cuda:12.4.1-base-ubuntu22.04',
            verdict: {
              outcome: 'cannot-run',
              reason: 'the NVIDIA runtime refuses the container',
              needed_driver: '550.54.15'
            }
          }
        ]
      }
    ]
  };
}

/**
 * `GET /gpu-containers/cluster` on Slurm: one node of four GPUs typed "t4",
 * the user's kernel's job on GPU 2, and two GPUs that other jobs hold.
 */
export function slurmClusterView(): IClusterView {
  return {
    backend: 'slurm',
    engine_error: '',
    pools: [
      {
        id: 't4, driver unknown',
        product: 't4',
        driver_version: '',
        cuda_driver_version: '',
        compute_capability: '',
        memory_total: null,
        nodes: [
          {
            name: 'node-1',
            ready: true,
            resources: [
              { resource: 'gpu:t4', allocatable: 4, held: 3, free: 1 }
            ]
          },
          {
            name: 'node-2',
            ready: false,
            resources: [
              { resource: 'gpu:t4', allocatable: 8, held: 0, free: 8 }
            ]
          }
        ],
        holders: [
          {
            node: 'node-1',
            pod: '42',
            count: 1,
            resource: 'gpu:t4',
            mine: true,
            kernel_id: 'k-slurm',
            user: 'alice',
            notebook: 'train.ipynb',
            gpus: ['2']
          },
          {
            node: 'node-1',
            pod: '',
            count: 2,
            resource: 'gpu:t4',
            mine: false,
            kernel_id: '',
            user: '',
            notebook: '',
            gpus: []
          }
        ],
        verdicts: []
      }
    ]
  };
}
