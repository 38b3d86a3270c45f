/**
 * The panel's compact "Your kernels" section: the user's kernels with their
 * GPU use, read on a Poll while the section is shown.
 */
import type { ServerConnection } from '@jupyterlab/services';
import type { TranslationBundle } from '@jupyterlab/translation';
import { Poll } from '@lumino/polling';
import * as React from 'react';

import { getKernels } from './api';
import { gpuListLabel, gpusOfKernel } from './gpuformat';
import { IClusterView } from './gputypes';
import { GpuUse, gpusLabel } from './gpuuse';
import { shortImageName } from './imageformat';
import { shortDigest } from './stampformat';
import { IKernelDataset, IKernelList, IKernelReclaim } from './kerneltypes';
import {
  defaultKeep,
  keepChoices,
  keepLengthText,
  noticeText,
  reclaimText
} from './sharing';
import { reclaimOf } from './sharingreaders';
import { IAdminNotice } from './sharingtypes';

/**
 * Where one kernel's "Keep my GPUs" stands: the length chosen (`null`: the
 * default), a keep under way, the server's sentence when it failed.
 */
export interface IKeepState {
  minutes: number | null;
  busy: boolean;
  error: string;
}

/**
 * The kernels' keeps, and what the list's controls do (YourKernels holds
 * the state: the list has none).
 */
export interface IKeeping {
  states: ReadonlyMap<string, IKeepState>;
  choose: (kernelId: string, minutes: number) => void;
  keep: (kernelId: string, minutes: number) => void;
}

/**
 * A warned kernel's "Keep my GPUs": how long, within the administrator's
 * bounds, and the server's sentence when it cannot be kept.
 */
export function KeepControl(props: {
  kernelId: string;
  reclaim: IKernelReclaim;
  trans: TranslationBundle;
  keeping: IKeeping;
}): JSX.Element | null {
  const { reclaim, trans, keeping, kernelId } = props;
  const offer = reclaim.keep;
  if (!offer) {
    return null;
  }
  if (offer.times_left <= 0) {
    return (
      <div className="jgc-note jgc-keep-none">
        {trans.__(
          'You kept them as often as the administrator allows; only GPU use keeps them now.'
        )}
      </div>
    );
  }
  const state = keeping.states.get(kernelId);
  const choices = keepChoices(offer);
  const chosen =
    state?.minutes !== null &&
    state?.minutes !== undefined &&
    choices.includes(state.minutes)
      ? state.minutes
      : defaultKeep(offer);
  const busy = state?.busy ?? false;
  return (
    <div className="jgc-keep">
      <label>
        {trans.__('Still using them? Keep them for')}{' '}
        <select
          className="jgc-keep-minutes"
          value={String(chosen)}
          disabled={busy}
          onChange={e =>
            keeping.choose(kernelId, Number(e.currentTarget.value))
          }
        >
          {choices.map(m => (
            <option key={m} value={String(m)}>
              {keepLengthText(trans, m)}
            </option>
          ))}
        </select>
      </label>{' '}
      <button
        className="jp-mod-styled jp-mod-accept jgc-keep-button"
        disabled={busy}
        title={trans._n(
          'You may keep them %1 more time while it stays idle',
          'You may keep them %1 more times while it stays idle',
          offer.times_left
        )}
        onClick={() => keeping.keep(kernelId, chosen)}
      >
        {trans.__('Keep my GPUs')}
      </button>
      {state?.error && (
        <div className="jgc-note jgc-error" role="alert">
          {state.error}
        </div>
      )}
    </div>
  );
}

/**
 * The data a kernel sees, in a line: "imagenet at /datasets/imagenet
 * (read-only), scratch at /data/scratch".
 */
export function datasetsText(
  trans: TranslationBundle,
  datasets: readonly IKernelDataset[]
): string {
  return datasets
    .map(d =>
      d.read_only
        ? trans.__('%1 at %2 (read-only)', d.name, d.target)
        : trans.__('%1 at %2', d.name, d.target)
    )
    .join(', ');
}

/**
 * The list of the user's kernels for the panel (no state of its own).
 */
export function KernelList(props: {
  list: IKernelList | null;
  error: string;
  trans: TranslationBundle;
  open?: (kernelId: string) => void;
  /**
   * Why an administrator released or shut down the user's kernels: each is
   * said in its kernel's row, or in a row of its own once the kernel is gone.
   */
  notices?: readonly IAdminNotice[];
  /**
   * The cluster's GPU nodes, where its scheduler gave the kernels' GPUs (the
   * host's ledger, which the list reads, holds none of them).
   */
  cluster?: IClusterView | null;
  /**
   * Keeps of warned kernels' GPUs (a row offers one when the administrator
   * allows).
   */
  keeping?: IKeeping;
}): JSX.Element {
  const { list, trans } = props;
  // The latest notice of each kernel.
  const noticeOf = new Map<string, IAdminNotice>();
  for (const notice of props.notices ?? []) {
    noticeOf.set(notice.kernel_id, notice);
  }
  const listed = new Set(list?.kernels.map(k => k.kernel_id) ?? []);
  const ended = [...noticeOf.values()].filter(n => !listed.has(n.kernel_id));
  const endedRows =
    list && ended.length > 0 ? (
      <ul className="jgc-your-kernels jgc-ended-kernels">
        {ended.map(notice => (
          <li
            key={notice.kernel_id}
            className="jgc-your-kernel jgc-ended-kernel"
            data-kernel-id={notice.kernel_id}
          >
            <div className="jgc-note jgc-admin-notice" role="status">
              {noticeText(trans, notice)}
            </div>
          </li>
        ))}
      </ul>
    ) : null;
  let body: React.ReactNode;
  if (props.error && !list) {
    body = <p className="jgc-note">{props.error}</p>;
  } else if (!list) {
    body = <p className="jgc-note">{trans.__('Reading your kernels…')}</p>;
  } else if (list.kernels.length === 0) {
    body = (
      <p className="jgc-note">
        {trans.__('You have no container kernel running.')}
      </p>
    );
  } else {
    body = (
      <ul className="jgc-your-kernels">
        {list.kernels.map(kernel => {
          // The idle-GPU policy's word on it (an older server sends none).
          const reclaim = reclaimOf(kernel.reclaim);
          const warning = reclaimText(trans, reclaim);
          const notice = noticeOf.get(kernel.kernel_id);
          const scheduled =
            kernel.gpus.length === 0
              ? gpusOfKernel(null, kernel.kernel_id, props.cluster ?? null)
              : [];
          return (
            <li
              key={kernel.kernel_id}
              className="jgc-your-kernel"
              data-reclaim={reclaim?.state}
            >
              <div className="jgc-your-kernel-head">
                <span className="jgc-your-kernel-name" title={kernel.kernel_id}>
                  {kernel.notebook || kernel.kernel_id.slice(0, 8)}
                </span>{' '}
                <span className="jgc-note" title={kernel.image}>
                  {shortImageName(kernel.image)} ·{' '}
                  {scheduled.length > 0
                    ? gpuListLabel(trans, scheduled)
                    : gpusLabel(trans, kernel.gpus)}
                </span>
                {props.open && (
                  <button
                    className="jgc-link-button"
                    title={trans.__("Open this kernel's log and GPU use")}
                    onClick={() => props.open?.(kernel.kernel_id)}
                  >
                    {trans.__('Log and GPU use')}
                  </button>
                )}
              </div>
              {kernel.pinned && (
                <div
                  className="jgc-note jgc-kernel-pinned"
                  title={kernel.pinned}
                >
                  {trans.__(
                    'Pinned by its notebook to %1, not what the tag names now',
                    shortDigest(kernel.pinned)
                  )}
                </div>
              )}
              {(kernel.datasets ?? []).length > 0 && (
                <div className="jgc-note jgc-kernel-datasets">
                  {trans.__('Data: %1', datasetsText(trans, kernel.datasets))}
                </div>
              )}
              {warning && (
                <div className="jgc-note jgc-reclaim" role="status">
                  {warning}
                </div>
              )}
              {reclaim?.state === 'warned' && props.keeping && (
                <KeepControl
                  kernelId={kernel.kernel_id}
                  reclaim={reclaim}
                  trans={trans}
                  keeping={props.keeping}
                />
              )}
              {notice && (
                <div className="jgc-note jgc-admin-notice" role="status">
                  {noticeText(trans, notice)}
                </div>
              )}
              <GpuUse
                usage={kernel.usage}
                holdsGpus={kernel.gpus.length > 0 || scheduled.length > 0}
                trans={trans}
                compact
              />
            </li>
          );
        })}
      </ul>
    );
  }
  return (
    <section className="jgc-section jgc-kernels-section">
      <h3>{trans.__('Your kernels')}</h3>
      {body}
      {endedRows}
    </section>
  );
}

/**
 * The panel's "Your kernels" section: reads the user's kernels and their GPU
 * use every few seconds while it is shown.
 */
export class YourKernels extends React.Component<
  {
    settings: ServerConnection.ISettings;
    trans: TranslationBundle;
    open?: (kernelId: string) => void;
    intervalSeconds?: number;
    /**
     * Why an administrator released or shut down the user's kernels.
     */
    notices?: readonly IAdminNotice[];
    /**
     * A count the panel raises when the list may be stale (the panel was
     * shown again: the list is read only while shown; the page started or
     * ended a kernel): each time, the list is read again, and an empty one
     * is not believed until then.
     */
    readAgain?: number;
    /**
     * The cluster's GPU nodes (Kubernetes, Slurm), for the kernels' GPUs.
     */
    cluster?: IClusterView | null;
    /**
     * Keep a warned kernel's GPUs (the model's, so that every view learns of
     * it); the list is read again once kept.
     */
    keep?: (kernelId: string, minutes: number) => Promise<unknown>;
  },
  {
    list: IKernelList | null;
    error: string;
    stale: boolean;
    keeps: ReadonlyMap<string, IKeepState>;
  }
> {
  override state = {
    list: null as IKernelList | null,
    error: '',
    stale: false,
    keeps: new Map<string, IKeepState>() as ReadonlyMap<string, IKeepState>
  };

  override componentDidUpdate(previous: { readAgain?: number }): void {
    if (previous.readAgain !== this.props.readAgain) {
      this.setState({ stale: true });
      void this.refresh();
    }
  }

  override componentDidMount(): void {
    void this.refresh();
    this._poll = new Poll({
      auto: false,
      factory: () => this.refresh(),
      frequency: {
        interval: (this.props.intervalSeconds ?? 5) * 1000,
        backoff: false
      },
      name: 'gpu-containers:your-kernels',
      // Only while shown: reading the kernels keeps the server sampling.
      standby: () => {
        const node = this._node.current;
        return (
          (typeof document !== 'undefined' && document.hidden) ||
          (node !== null && node.offsetParent === null)
        );
      }
    });
    void this._poll.schedule({
      interval: this._poll.frequency.interval,
      phase: 'started'
    });
  }

  override componentWillUnmount(): void {
    this._unmounted = true;
    this._poll?.dispose();
  }

  async refresh(): Promise<void> {
    try {
      const list = await getKernels(this.props.settings, this.props.trans);
      if (!this._unmounted) {
        this.setState({ list, error: '', stale: false });
      }
    } catch (error) {
      if (!this._unmounted) {
        this.setState({
          error: error instanceof Error ? error.message : String(error)
        });
      }
    }
  }

  override render(): JSX.Element {
    return (
      <div ref={this._node}>
        <KernelList
          list={
            this.state.stale && this.state.list?.kernels.length === 0
              ? null
              : this.state.list
          }
          error={this.state.error}
          trans={this.props.trans}
          open={this.props.open}
          notices={this.props.notices}
          cluster={this.props.cluster}
          keeping={this.props.keep ? this._keeping() : undefined}
        />
      </div>
    );
  }

  private _keeping(): IKeeping {
    return {
      states: this.state.keeps,
      choose: (kernelId, minutes) =>
        this._setKeep(kernelId, { minutes, error: '' }),
      keep: (kernelId, minutes) => void this._keep(kernelId, minutes)
    };
  }

  private _setKeep(kernelId: string, change: Partial<IKeepState>): void {
    if (this._unmounted) {
      return;
    }
    this.setState(previous => {
      const keeps = new Map(previous.keeps);
      const was = keeps.get(kernelId) ?? {
        minutes: null,
        busy: false,
        error: ''
      };
      keeps.set(kernelId, { ...was, ...change });
      return { keeps };
    });
  }

  private async _keep(kernelId: string, minutes: number): Promise<void> {
    this._setKeep(kernelId, { busy: true, error: '' });
    try {
      await this.props.keep?.(kernelId, minutes);
      this._setKeep(kernelId, { busy: false });
      await this.refresh();
    } catch (e) {
      this._setKeep(kernelId, {
        busy: false,
        error: e instanceof Error ? e.message : String(e)
      });
    }
  }

  private _node = React.createRef<HTMLDivElement>();
  private _poll: Poll | null = null;
  private _unmounted = false;
}
