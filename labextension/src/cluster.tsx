/**
 * The panel's "Cluster" section (Kubernetes and Slurm backends): GPU node
 * pools, which node and pod (or job) holds what, and each listed image's
 * verdict per pool, from `GET /gpu-containers/cluster`. Shown only when the
 * server says its backend is a cluster's.
 */
import type { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { formatBytes } from './format';
import {
  IClusterHolder,
  IClusterNode,
  IClusterView,
  INodePool
} from './gputypes';
import { verdictBadge } from './imageformat';
import { accountedLine, accountedTitle } from './sharing';
import type { IGpuContainersModel } from './tokens';

/**
 * GPUs of a pool (or a node), over all its GPU resources.
 */
export interface IGpuTotals {
  allocatable: number;
  held: number;
  free: number;
}

/**
 * Whether the Cluster section is shown: only on a cluster's backend
 * (Kubernetes, Slurm), whose scheduler places kernels and their GPUs.
 */
export function showsCluster(view: IClusterView | null): boolean {
  return !!view && view.backend !== 'docker';
}

/**
 * A node's GPUs, summed over its resources.
 */
export function nodeTotals(node: IClusterNode): IGpuTotals {
  return node.resources.reduce(
    (sum, r) => ({
      allocatable: sum.allocatable + r.allocatable,
      held: sum.held + r.held,
      free: sum.free + r.free
    }),
    { allocatable: 0, held: 0, free: 0 }
  );
}

/**
 * A pool's GPUs: its ready nodes' (a node that is not ready takes no pods).
 */
export function poolTotals(pool: INodePool): IGpuTotals {
  return pool.nodes
    .filter(node => node.ready)
    .map(nodeTotals)
    .reduce(
      (sum, t) => ({
        allocatable: sum.allocatable + t.allocatable,
        held: sum.held + t.held,
        free: sum.free + t.free
      }),
      { allocatable: 0, held: 0, free: 0 }
    );
}

/**
 * The pool's heading: its GPU, driver and CUDA, as far as its nodes say.
 */
export function poolTitle(trans: TranslationBundle, pool: INodePool): string {
  const gpu = pool.product || trans.__('Unknown GPU');
  const memory =
    pool.memory_total !== null ? ` · ${formatBytes(pool.memory_total)}` : '';
  if (!pool.driver_version) {
    return trans.__('%1%2 · driver unknown', gpu, memory);
  }
  return pool.cuda_driver_version
    ? trans.__(
        '%1%2 · driver %3 · CUDA %4',
        gpu,
        memory,
        pool.driver_version,
        pool.cuda_driver_version
      )
    : trans.__('%1%2 · driver %3', gpu, memory, pool.driver_version);
}

/**
 * "2 of 4 free", one text per resource (named when a node offers several).
 */
export function nodeGpusText(
  trans: TranslationBundle,
  node: IClusterNode
): string[] {
  if (!node.ready) {
    return [trans.__('not ready')];
  }
  if (node.resources.length === 0) {
    return [trans.__('no GPUs offered')];
  }
  const many = node.resources.length > 1;
  return node.resources.map(r =>
    many
      ? trans.__('%1: %2 of %3 free', r.resource, r.free, r.allocatable)
      : trans.__('%1 of %2 free', r.free, r.allocatable)
  );
}

/**
 * Who holds GPUs on a node: the user's own kernel by its notebook, another
 * user's by name where the server shows it, else anonymously.
 */
export function clusterHolderLabel(
  trans: TranslationBundle,
  holder: IClusterHolder
): string {
  const gpus =
    holder.gpus.length > 0
      ? trans._n('GPU %2', 'GPUs %2', holder.gpus.length, holder.gpus.join(','))
      : trans._n('%1 GPU', '%1 GPUs', holder.count);
  if (!holder.pod) {
    // What a Slurm node's other jobs hold together (anyone's batch work).
    return trans.__('Other jobs (%1)', gpus);
  }
  if (holder.mine) {
    return holder.notebook
      ? trans.__(
          'Your notebook %1 (%2)',
          holder.notebook.split('/').pop() ?? '',
          gpus
        )
      : trans.__('Your kernel (%1)', gpus);
  }
  return holder.user
    ? trans.__('%1 (%2)', holder.user, gpus)
    : trans.__('Another user (%1)', gpus);
}

/**
 * The engine's count of the user's GPU-hours (Slurm's accounting) in the
 * cluster section, or nothing where it does not say.
 */
export function AccountedLine(props: {
  model: IGpuContainersModel;
  trans: TranslationBundle;
}): JSX.Element | null {
  const { model, trans } = props;
  const text = accountedLine(trans, model.quota);
  if (!text) {
    return null;
  }
  return (
    <p
      className="jgc-subtle jgc-quota jgc-accounted"
      title={accountedTitle(trans, model.quota!)}
    >
      {text}
    </p>
  );
}

export function ClusterSection(props: {
  model: IGpuContainersModel;
  trans: TranslationBundle;
}): JSX.Element | null {
  const { model, trans } = props;
  const view = model.cluster;
  if (!view || !showsCluster(view)) {
    return null;
  }
  let body: JSX.Element;
  if (view.engine_error) {
    body = <p className="jgc-note">{view.engine_error}</p>;
  } else if (view.pools.length === 0) {
    body = (
      <p className="jgc-note">{trans.__('No GPU nodes in the cluster.')}</p>
    );
  } else {
    body = (
      <ul className="jgc-pools">
        {view.pools.map(pool => (
          <PoolRow
            key={pool.id}
            pool={pool}
            backend={view.backend}
            trans={trans}
          />
        ))}
      </ul>
    );
  }
  return (
    <section className="jgc-section jgc-cluster-section">
      <h3>{trans.__('Cluster')}</h3>
      <AccountedLine model={model} trans={trans} />
      {body}
    </section>
  );
}

/**
 * A holder's tooltip: its pod (Kubernetes) or job (Slurm) and its resource.
 */
export function holderTitle(
  trans: TranslationBundle,
  backend: IClusterView['backend'],
  holder: IClusterHolder
): string {
  if (!holder.pod) {
    return trans.__(
      "GPUs (%1) Slurm's other jobs on this node hold",
      holder.resource
    );
  }
  return backend === 'slurm'
    ? trans.__('Slurm job %1 (%2)', holder.pod, holder.resource)
    : trans.__('Pod %1 (%2)', holder.pod, holder.resource);
}

function PoolRow(props: {
  pool: INodePool;
  backend: IClusterView['backend'];
  trans: TranslationBundle;
}): JSX.Element {
  const { pool, backend, trans } = props;
  const totals = poolTotals(pool);
  return (
    <li className="jgc-pool" data-pool={pool.id}>
      <div className="jgc-pool-title">
        <strong>{poolTitle(trans, pool)}</strong>{' '}
        <span className="jgc-subtle">
          {trans.__('%1 of %2 GPUs free', totals.free, totals.allocatable)}
        </span>
      </div>
      <ul className="jgc-pool-nodes">
        {pool.nodes.map(node => (
          <li
            key={node.name}
            className="jgc-pool-node"
            data-ready={node.ready ? 'true' : 'false'}
          >
            <span className="jgc-pool-node-name">{node.name}</span>{' '}
            {nodeGpusText(trans, node).map((text, i) => (
              <span key={i} className="jgc-subtle jgc-pool-node-gpus">
                {text}
              </span>
            ))}
            <div className="jgc-gpu-holders">
              {pool.holders
                .filter(h => h.node === node.name)
                .map(holder => (
                  <span
                    key={`${holder.pod}|${holder.resource}`}
                    className={`jgc-gpu-holder ${holder.mine ? 'jgc-mine' : 'jgc-other'}`}
                    title={holderTitle(trans, backend, holder)}
                  >
                    {clusterHolderLabel(trans, holder)}
                  </span>
                ))}
            </div>
          </li>
        ))}
      </ul>
      {pool.verdicts.length > 0 && (
        <ul className="jgc-pool-verdicts" aria-label={trans.__('Images')}>
          {pool.verdicts.map(({ image, verdict }) => {
            const badge = verdictBadge(trans, verdict.outcome);
            return (
              <li key={image}>
                <span className="jgc-pool-image">{image}</span>{' '}
                <span
                  className={`jgc-verdict jgc-verdict-${badge.tone}`}
                  data-outcome={verdict.outcome}
                  title={verdict.reason}
                >
                  {badge.label}
                </span>
              </li>
            );
          })}
        </ul>
      )}
    </li>
  );
}
