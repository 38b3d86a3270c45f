/**
 * The Cluster section's logic (cluster.tsx): which backend shows it, the
 * pools' and nodes' GPU counts, and how holders and pools are named.
 */
import { nullTranslator } from '@jupyterlab/translation';

import {
  clusterHolderLabel,
  nodeGpusText,
  nodeTotals,
  poolTitle,
  poolTotals,
  showsCluster
} from '../cluster';
import { clusterView } from './fixtures';

const trans = nullTranslator.load('jupyter_gpu_containers');

describe('the Cluster section', () => {
  it('is shown only for a Kubernetes backend', () => {
    expect(showsCluster(clusterView())).toBe(true);
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
});
