/**
 * The "GPU Containers" sidebar: the host's GPUs and who holds them, the image
 * catalog with verdicts and pulls, and a launcher for a notebook on an image.
 */
import {
  ReactWidget,
  UseSignal,
  refreshIcon,
  searchIcon
} from '@jupyterlab/ui-components';
import * as React from 'react';

import {
  IImageFilter,
  IGpuChoice,
  defaultGpuChoice,
  describeNoGpus,
  engineProblem,
  filterImages,
  formatBytes,
  frameworkLabel,
  gpuChoices,
  groupByFramework,
  holderLabel,
  launchBlocker,
  memoryFraction,
  pullProgressText,
  shortImageName,
  verdictBadge
} from './format';
import { GpuOptions } from './gpuoptions';
import { GpuContainersModel } from './model';
import { gpuContainersIcon } from './icon';
import { GpuRequest, IGpu, IGpuReport, IImageRow, IPull } from './types';

/**
 * What the panel asks its host (the plugin) to do.
 */
export interface IPanelActions {
  /**
   * Open a new notebook on the image's kernel with `gpus`.
   */
  launch(row: IImageRow, gpus: GpuRequest): Promise<void>;
  /**
   * Pull the image (asking for credentials when the registry wants them).
   */
  pull(row: IImageRow): Promise<void>;
  /**
   * Cancel the image's pull.
   */
  cancel(row: IImageRow): Promise<void>;
  /**
   * Open one of the user's notebooks.
   */
  openNotebook(path: string): void;
}

export class GpuContainersPanel extends ReactWidget {
  constructor(
    readonly model: GpuContainersModel,
    private readonly _actions: IPanelActions
  ) {
    super();
    this.id = 'jp-gpu-containers-panel';
    this.addClass('jgc-panel');
    this.title.icon = gpuContainersIcon;
    this.title.caption = 'GPU Containers';
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => <PanelBody model={this.model} actions={this._actions} />}
      </UseSignal>
    );
  }
}

function PanelBody(props: {
  model: GpuContainersModel;
  actions: IPanelActions;
}): JSX.Element {
  const { model, actions } = props;
  const problem = engineProblem(model.status) || model.statusError;
  return (
    <div className="jgc-panel-body">
      <header className="jgc-header">
        <h2>GPU Containers</h2>
        <button
          className="jgc-icon-button jgc-refresh"
          title="Refresh GPUs and images"
          onClick={() => void model.refresh()}
        >
          <refreshIcon.react tag="span" />
        </button>
      </header>
      {problem && (
        <div className="jgc-banner jgc-banner-error" role="alert">
          <strong>No Docker engine.</strong> {sentence(problem)} Container
          kernels cannot start until it is back; other kernels still work.
        </div>
      )}
      <GpuSection model={model} actions={actions} />
      <ImageSection model={model} actions={actions} engineProblem={problem} />
    </div>
  );
}

function GpuSection(props: {
  model: GpuContainersModel;
  actions: IPanelActions;
}): JSX.Element {
  const { model, actions } = props;
  const report = model.gpus;
  let body: JSX.Element;
  if (model.gpuError && !report) {
    body = <p className="jgc-note">{model.gpuError}</p>;
  } else if (!report) {
    body = <p className="jgc-note">Reading the GPUs…</p>;
  } else if (report.gpus.length === 0) {
    body = <p className="jgc-note jgc-no-gpus">{describeNoGpus(report)}</p>;
  } else {
    body = (
      <>
        {report.engine_error && (
          <p className="jgc-note">
            Who holds the GPUs is unknown without the engine.
          </p>
        )}
        <ul className="jgc-gpus">
          {report.gpus.map(gpu => (
            <GpuRow
              key={gpu.uuid}
              gpu={gpu}
              report={report}
              holdersUnknown={report.engine_error !== ''}
              openNotebook={actions.openNotebook}
            />
          ))}
        </ul>
      </>
    );
  }
  const driver = report?.driver_version
    ? `driver ${report.driver_version}${report.cuda_driver_version ? ` · CUDA ${report.cuda_driver_version}` : ''}`
    : '';
  return (
    <section className="jgc-section jgc-gpu-section">
      <h3>
        GPUs <span className="jgc-subtle">{driver}</span>
      </h3>
      {body}
    </section>
  );
}

function GpuRow(props: {
  gpu: IGpu;
  report: IGpuReport;
  holdersUnknown: boolean;
  openNotebook: (path: string) => void;
}): JSX.Element {
  const { gpu, holdersUnknown, openNotebook } = props;
  const fraction = memoryFraction(gpu);
  const memory =
    gpu.memory_total > 0
      ? `${formatBytes(gpu.memory_used)} / ${formatBytes(gpu.memory_total)}`
      : 'memory unknown';
  const utilization =
    gpu.utilization === null ? '' : ` · ${gpu.utilization}% busy`;
  return (
    <li
      className="jgc-gpu"
      data-gpu-index={gpu.index}
      data-state={
        holdersUnknown ? 'unknown' : gpu.holders.length ? 'held' : 'free'
      }
    >
      <div className="jgc-gpu-title">
        <span className="jgc-gpu-index">GPU {gpu.index}</span>{' '}
        <span className="jgc-gpu-name">{gpu.name}</span>
      </div>
      <div
        className="jgc-bar"
        role="meter"
        aria-label={`GPU ${gpu.index} memory`}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={Math.round(fraction * 100)}
      >
        <div
          className="jgc-bar-fill"
          style={{ width: `${Math.round(fraction * 100)}%` }}
        />
      </div>
      <div className="jgc-subtle">
        {memory}
        {utilization}
      </div>
      <div className="jgc-gpu-holders">
        {holdersUnknown ? (
          <span className="jgc-gpu-holder">Holders unknown</span>
        ) : gpu.holders.length === 0 ? (
          <span className="jgc-gpu-holder jgc-free">Free</span>
        ) : (
          gpu.holders.map((holder, i) =>
            holder.mine && holder.notebook ? (
              <a
                key={i}
                href="#"
                className="jgc-gpu-holder jgc-mine"
                title={`Open ${holder.notebook} (image ${holder.image})`}
                onClick={event => {
                  event.preventDefault();
                  openNotebook(holder.notebook);
                }}
              >
                {holderLabel(holder)}
              </a>
            ) : (
              <span
                key={i}
                className={`jgc-gpu-holder ${holder.mine ? 'jgc-mine' : 'jgc-other'}`}
              >
                {holderLabel(holder)}
              </span>
            )
          )
        )}
      </div>
    </li>
  );
}

function ImageSection(props: {
  model: GpuContainersModel;
  actions: IPanelActions;
  engineProblem: string;
}): JSX.Element {
  const { model, actions, engineProblem } = props;
  const [filter, setFilter] = React.useState<IImageFilter>({
    query: '',
    kernelReady: false,
    compatible: false,
    pulled: false
  });
  const catalog = model.catalog;
  const rows = catalog ? filterImages(catalog.images, filter) : [];
  const toggle = (
    key: 'kernelReady' | 'compatible' | 'pulled',
    label: string
  ) => (
    <label className="jgc-filter">
      <input
        type="checkbox"
        name={key}
        checked={filter[key]}
        onChange={event =>
          setFilter({ ...filter, [key]: event.target.checked })
        }
      />{' '}
      {label}
    </label>
  );
  let body: JSX.Element;
  if (!catalog) {
    body = (
      <p className="jgc-note">
        {model.catalogError ||
          (model.loadingImages ? 'Reading the images…' : 'No images yet.')}
      </p>
    );
  } else if (rows.length === 0) {
    body = (
      <p className="jgc-note">
        {catalog.images.length === 0
          ? 'No images on this host, and none listed for pulling.'
          : 'No image matches.'}
      </p>
    );
  } else {
    body = (
      <>
        {groupByFramework(rows).map(({ group, rows: members }) => (
          <div className="jgc-group" key={group} data-group={group}>
            <h4>{group}</h4>
            <ul className="jgc-images">
              {members.map(row => (
                <ImageRow
                  key={row.reference}
                  row={row}
                  pull={model.pulls.get(row.reference)}
                  report={model.gpus}
                  actions={actions}
                  engineProblem={engineProblem}
                />
              ))}
            </ul>
          </div>
        ))}
      </>
    );
  }
  return (
    <section className="jgc-section jgc-image-section">
      <h3>Images</h3>
      {catalog && model.catalogError && (
        <p className="jgc-note jgc-error">{model.catalogError}</p>
      )}
      <div className="jgc-search">
        <searchIcon.react tag="span" className="jgc-search-icon" />
        <input
          type="search"
          className="jgc-search-input"
          placeholder="Search images"
          aria-label="Search images"
          value={filter.query}
          onChange={event =>
            setFilter({ ...filter, query: event.target.value })
          }
        />
      </div>
      <div className="jgc-filters">
        {toggle('kernelReady', 'Kernel-ready')}
        {toggle('compatible', 'Compatible')}
        {toggle('pulled', 'Pulled')}
      </div>
      {body}
    </section>
  );
}

function ImageRow(props: {
  row: IImageRow;
  pull: IPull | undefined;
  report: IGpuReport | null;
  actions: IPanelActions;
  engineProblem: string;
}): JSX.Element {
  const { row, pull, report, actions, engineProblem } = props;
  const badge = verdictBadge(row.verdict.outcome);
  const pulling = pull && (pull.state === 'queued' || pull.state === 'pulling');
  const blocker = engineProblem || launchBlocker(row);
  const choices = gpuChoices(report, row);
  // null: the default, which follows the GPUs as they free up or get taken.
  const [picked, setChoice] = React.useState<string | null>(null);
  const choice = picked ?? defaultGpuChoice(choices, row);
  const [busy, setBusy] = React.useState(false);
  const selected: IGpuChoice | undefined = choices.find(
    c => c.value === choice
  );
  const ready =
    row.kernel_ready === true
      ? 'Kernel-ready'
      : row.kernel_ready === false
        ? 'Not kernel-ready'
        : row.pulled
          ? 'Checking…'
          : '';
  return (
    <li
      className="jgc-image"
      data-reference={row.reference}
      data-kernel-name={row.kernel_name}
    >
      <div className="jgc-image-title" title={row.reference}>
        <span className="jgc-image-name">{shortImageName(row.reference)}</span>
        <span
          className={`jgc-verdict jgc-verdict-${badge.tone}`}
          data-outcome={row.verdict.outcome}
          title={row.verdict.reason}
        >
          {badge.label}
        </span>
      </div>
      <div className="jgc-subtle jgc-image-facts">
        {frameworkLabel(row)}
        {row.cuda_version ? ` · CUDA ${row.cuda_version}` : ''}
        {' · '}
        {row.pulled ? formatBytes(row.size) : 'not pulled'}
        {ready && (
          <>
            {' · '}
            <span
              className="jgc-ready"
              title={row.kernel_ready_reason || 'Python and ipykernel found'}
            >
              {ready}
            </span>
          </>
        )}
      </div>
      <div className="jgc-subtle jgc-image-ref">{row.reference}</div>
      {!row.allowed && (
        <div className="jgc-note jgc-error">{row.allowed_reason}</div>
      )}
      {pull && (pulling || pull.state === 'error') && (
        <div className="jgc-pull" data-state={pull.state}>
          {pulling && (
            <div
              className="jgc-bar"
              role="progressbar"
              aria-label={`Pull of ${row.reference}`}
              aria-valuemin={0}
              aria-valuemax={100}
              aria-valuenow={Math.round(pull.progress * 100)}
            >
              <div
                className="jgc-bar-fill"
                style={{ width: `${Math.round(pull.progress * 100)}%` }}
              />
            </div>
          )}
          <div
            className={`jgc-subtle ${pull.state === 'error' ? 'jgc-error' : ''}`}
          >
            {pullProgressText(pull)}
          </div>
        </div>
      )}
      <div className="jgc-actions">
        {!row.pulled && row.allowed && !pulling && (
          <button
            className="jp-mod-styled jp-mod-accept jgc-pull-button"
            disabled={engineProblem !== ''}
            title={engineProblem || `Pull ${row.reference} onto this host`}
            onClick={() => void actions.pull(row)}
          >
            Pull
          </button>
        )}
        {pulling && (
          <button
            className="jp-mod-styled jp-mod-warn jgc-cancel-button"
            onClick={() => void actions.cancel(row)}
          >
            Cancel
          </button>
        )}
        {row.pulled && (
          <>
            <select
              className="jgc-gpu-count"
              aria-label={`GPUs for ${row.reference}`}
              value={choice}
              disabled={blocker !== ''}
              title={selected?.reason || 'GPUs for the new notebook'}
              onChange={event => setChoice(event.target.value)}
            >
              <GpuOptions choices={choices} />
            </select>
            <button
              className="jp-mod-styled jp-mod-accept jgc-launch-button"
              disabled={
                blocker !== '' || busy || !selected || selected.disabled
              }
              title={blocker || selected?.reason || 'Open a new notebook'}
              onClick={() => {
                if (!selected) {
                  return;
                }
                setBusy(true);
                void actions
                  .launch(row, selected.request)
                  .finally(() => setBusy(false));
              }}
            >
              {busy ? 'Starting…' : 'New notebook'}
            </button>
          </>
        )}
      </div>
      {row.pulled && blocker && (
        <div className="jgc-subtle jgc-blocker">{blocker}</div>
      )}
    </li>
  );
}

/**
 * `text` ending with a full stop (a sentence followed by another).
 */
function sentence(text: string): string {
  const trimmed = text.trim();
  return /[.!?]$/.test(trimmed) ? trimmed : `${trimmed}.`;
}
