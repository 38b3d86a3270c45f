/**
 * The Cluster section's logic (cluster.tsx): which backend shows it, the
 * pools' and nodes' GPU counts, and how holders and pools are named.
 */
import { nullTranslator } from '@jupyterlab/translation';

import {
  clusterHolderLabel,
  holderTitle,
  nodeGpusText,
  nodeTotals,
  poolTitle,
  poolTotals,
  showsCluster
} from '../cluster';
import { gpuChoices, largestNodeGpus } from '../gpuchoices';
import { gpuListLabel, gpusOfKernel } from '../gpuformat';
import { clusterView, makeReport, makeRow, slurmClusterView } from './fixtures';

const trans = nullTranslator.load('jupyter_gpu_containers');

describe('the Cluster section', () => {
  it("is shown only for a cluster's backend (Kubernetes, Slurm)", () => {
    expect(showsCluster(clusterView())).toBe(true);
    expect(showsCluster(slurmClusterView())).toBe(true);
    expect(
      showsCluster({ backend: 'docker', pools: [], engine_error: '' })
    ).toBe(false);
    expect(showsCluster(null)).toBe(false);
  });

  it('counts a pool over its ready nodes and every GPU resource', () => {
    const [a100, h100] = clusterView().pools;
    // gpu-a-1 is not ready: its 4 free GPUs take no pods.
    expect(poolTotals(a100)).toEqual({ allocatable: 4, held: 3, free: 1 });
    expect(nodeTotals(a100.nodes[1])).toEqual({
      allocatable: 4,
      held: 0,
      free: 4
    });
    expect(poolTotals(h100)).toEqual({ allocatable: 9, held: 1, free: 8 });
  });

  it('says what is free on a node, per resource when there are several', () => {
    const [a100, h100] = clusterView().pools;
    expect(nodeGpusText(trans, a100.nodes[0])).toEqual(['1 of 4 free']);
    expect(nodeGpusText(trans, a100.nodes[1])).toEqual(['not ready']);
    expect(nodeGpusText(trans, h100.nodes[0])).toEqual([
      'nvidia.com/gpu: 2 of 2 free',
      'nvidia.com/mig-1g.10gb: 6 of 7 free'
    ]);
    expect(
      nodeGpusText(trans, { name: 'cpu', ready: true, resources: [] })
    ).toEqual(['no GPUs offered']);
  });

  it("names the user's own kernels, and others only as far as shown", () => {
    const [a100, h100] = clusterView().pools;
    const [mine, other] = a100.holders;
    expect(clusterHolderLabel(trans, mine)).toBe(
      'Your notebook train.ipynb (2 GPUs)'
    );
    expect(clusterHolderLabel(trans, { ...mine, notebook: '' })).toBe(
      'Your kernel (2 GPUs)'
    );
    expect(clusterHolderLabel(trans, other)).toBe('Another user (1 GPU)');
    expect(clusterHolderLabel(trans, h100.holders[0])).toBe('bob (1 GPU)');
  });

  it('titles a pool with what its nodes publish', () => {
    const [a100, h100] = clusterView().pools;
    expect(poolTitle(trans, a100)).toBe(
      'NVIDIA-A100-SXM4-80GB · 80 GiB · driver 550.54.15 · CUDA 12.4'
    );
    expect(poolTitle(trans, h100)).toBe(
      'NVIDIA-H100-80GB-HBM3 · driver 535.104.05'
    );
    expect(poolTitle(trans, { ...h100, product: '', driver_version: '' })).toBe(
      'Unknown GPU · driver unknown'
    );
  });

  it("names a Slurm job's GPUs, and what other jobs hold", () => {
    const [mine, others] = slurmClusterView().pools[0].holders;
    expect(clusterHolderLabel(trans, mine)).toBe(
      'Your notebook train.ipynb (GPU 2)'
    );
    expect(clusterHolderLabel(trans, others)).toBe('Other jobs (2 GPUs)');
    expect(holderTitle(trans, 'slurm', mine)).toBe('Slurm job 42 (gpu:t4)');
    expect(holderTitle(trans, 'slurm', others)).toBe(
      "GPUs (gpu:t4) Slurm's other jobs on this node hold"
    );
    const pod = clusterView().pools[0].holders[0];
    expect(holderTitle(trans, 'kubernetes', pod)).toBe(
      'Pod jupyter-kernel-1a2b3c4d-0f0f0f (nvidia.com/gpu)'
    );
  });
});

describe("a kernel's GPUs on a cluster", () => {
  it('are the ones its job holds (Slurm says which)', () => {
    const cluster = slurmClusterView();
    expect(gpusOfKernel(null, 'k-slurm', cluster)).toEqual(['2']);
    expect(gpusOfKernel(null, 'someone-else', cluster)).toEqual([]);
    expect(gpuListLabel(trans, gpusOfKernel(null, 'k-slurm', cluster))).toBe(
      'GPU 2'
    );
  });

  it('are counted where the scheduler does not say which (Kubernetes)', () => {
    const held = gpusOfKernel(null, 'k-1', clusterView());
    expect(held).toEqual(['', '']);
    expect(gpuListLabel(trans, held)).toBe('2 GPUs');
  });
});

describe('the GPU choices on a cluster', () => {
  it("go up to the largest ready node's GPUs, taken ones included", () => {
    const cluster = slurmClusterView();
    // node-2 (8 GPUs) is not ready: no job starts there.
    expect(largestNodeGpus(cluster)).toBe(4);
    const choices = gpuChoices(trans, null, makeRow(), '', false, cluster);
    expect(choices.map(c => c.value)).toEqual([
      'count:0',
      'count:1',
      'count:2',
      'count:3',
      'count:4'
    ]);
    // Three are taken now: the scheduler queues a start that asks for more.
    expect(choices.every(c => !c.disabled)).toBe(true);
  });

  it('rule out GPUs for a CPU build, and past the per-user limit', () => {
    const cluster = slurmClusterView();
    const cpu = gpuChoices(
      trans,
      null,
      makeRow({ gpu: false }),
      '',
      false,
      cluster
    );
    expect(cpu[1].disabled).toBe(true);
    expect(cpu[1].reason).toBe(
      'This image is a CPU build: it cannot use GPUs.'
    );
    const capped = gpuChoices(
      trans,
      makeReport([], { max_gpus_per_user: 2 }),
      makeRow(),
      '',
      false,
      cluster
    );
    expect(capped.filter(c => !c.disabled).map(c => c.value)).toEqual([
      'count:0',
      'count:1',
      'count:2'
    ]);
    expect(capped[3].reason).toBe('Over your limit of 2 GPUs per user.');
    // The reason in a few words in the option's text, whole in its aria label.
    expect(capped[3].option).toBe('3 GPUs (over your limit)');
    expect(capped[3].ariaLabel).toBe(
      '3 GPUs — Over your limit of 2 GPUs per user.'
    );
    // No GPU node: no GPU to choose.
    expect(
      gpuChoices(trans, null, makeRow(), '', false, {
        ...cluster,
        pools: []
      }).map(c => c.option)
    ).toEqual(['No GPU']);
  });
});
