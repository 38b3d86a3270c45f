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
import type { TranslationBundle } from '@jupyterlab/translation';
import type { Message } from '@lumino/messaging';
import * as React from 'react';

import { formatBytes } from './format';
import {
  IGpuChoice,
  defaultGpuChoice,
  gpuChoices,
  launchButton,
  noGpuWarning,
  offersWait
} from './gpuchoices';
import {
  describeNoGpus,
  gpuMemoryText,
  holderLabel,
  memoryFraction
} from './gpuformat';
import {
  IImageFilter,
  filterImages,
  frameworkLabel,
  groupByFramework,
  imageNames,
  launchBlocker,
  retiredText,
  pullProgressText,
  verdictBadge
} from './imageformat';
import { engineProblem, problemHeading } from './status';
import { Breakable } from './breakable';
import { ClusterSection, showsCluster } from './cluster';
import { GpuOptions } from './gpuoptions';
import { YourPackages } from './yourpackages';
import { YourKernels } from './yourkernels';
import type { IGpuContainersModel } from './tokens';
import { gpuContainersIcon } from './icon';
import {
  AdminSection,
  PrePullSchedule,
  QueueSection,
  QuotaLine
} from './sharingpanel';
import { IClusterView, IGpu, IGpuReport } from './gputypes';
import { IImageRow, IPull } from './imagetypes';
import { GpuRequest } from './kerneltypes';

/**
 * What the panel asks its host (the plugin) to do.
 */
export interface IPanelActions {
  /**
   * Open a new notebook on the image's kernel with `gpus`; with `wait`, its
   * kernel waits in the GPU queue for GPUs that are taken now.
   */
  launch(row: IImageRow, gpus: GpuRequest, wait?: boolean): Promise<void>;
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
  /**
   * Open a kernel's own view (its log and GPU use).
   */
  openKernelView?(kernelId: string): void;
  /**
   * Remove one of the user's saved images (after asking them).
   */
  removeSaved?(row: IImageRow): Promise<void>;
}

export class GpuContainersPanel extends ReactWidget {
  constructor(
    readonly model: IGpuContainersModel,
    private readonly _actions: IPanelActions,
    private readonly _trans: TranslationBundle
  ) {
    super();
    this.id = 'jp-gpu-containers-panel';
    this.addClass('jgc-panel');
    this.title.icon = gpuContainersIcon;
    this.title.caption = _trans.__('GPU Containers');
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => (
          <PanelBody
            model={this.model}
            actions={this._actions}
            trans={this._trans}
            readKernels={this._readKernels}
          />
        )}
      </UseSignal>
    );
  }

  /**
   * Read the user's kernels again now, and show none as "none" until then:
   * the page started or ended a kernel, or the panel was hidden (the list is
   * read only while it is shown).
   */
  readKernelsAgain(): void {
    this._readKernels += 1;
    this.update();
  }

  protected override onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.readKernelsAgain();
  }

  private _readKernels = 0;
}

function PanelBody(props: {
  model: IGpuContainersModel;
  actions: IPanelActions;
  trans: TranslationBundle;
  readKernels: number;
}): JSX.Element {
  const { model, actions, trans } = props;
  const problem = engineProblem(trans, model.status) || model.statusError;
  return (
    <div className="jgc-panel-body">
      <header className="jgc-header">
        <h2>{trans.__('GPU Containers')}</h2>
        <button
          className="jgc-icon-button jgc-refresh"
          title={trans.__('Refresh GPUs and images')}
          onClick={() => void model.refresh()}
        >
          <refreshIcon.react tag="span" />
        </button>
      </header>
      {problem && (
        <div className="jgc-banner jgc-banner-error" role="alert">
          <strong>
            {problemHeading(trans, model.status, model.cluster?.backend)}
          </strong>{' '}
          <span>{sentence(problem)}</span>{' '}
          <span>
            {trans.__(
              'Container kernels cannot start until it is back; other kernels still work.'
            )}
          </span>
        </div>
      )}
      {/* On a cluster whose login host has no GPUs of its own, the GPUs are
          the Cluster section's: a host section saying "no GPUs" misleads. */}
      {!(showsCluster(model.cluster) && model.gpus?.gpus.length === 0) && (
        <GpuSection model={model} actions={actions} trans={trans} />
      )}
      <ClusterSection model={model} trans={trans} />
      <QueueSection
        model={model}
        trans={trans}
        onOpen={path => actions.openNotebook(path)}
      />
      <YourKernels
        settings={model.serverSettings}
        trans={trans}
        open={actions.openKernelView}
        notices={model.notices}
        readAgain={props.readKernels}
        cluster={model.cluster}
        keep={(kernelId, minutes) => model.keepGpus(kernelId, minutes)}
      />
      <YourPackages
        settings={model.serverSettings}
        trans={trans}
        readAgain={props.readKernels}
      />
      <ImageSection
        model={model}
        actions={actions}
        engineProblem={problem}
        trans={trans}
      />
      <AdminSection model={model} trans={trans} />
    </div>
  );
}

function GpuSection(props: {
  model: IGpuContainersModel;
  actions: IPanelActions;
  trans: TranslationBundle;
}): JSX.Element {
  const { model, actions, trans } = props;
  const report = model.gpus;
  let body: JSX.Element;
  if (model.gpuError && !report) {
    body = <p className="jgc-note">{model.gpuError}</p>;
  } else if (!report) {
    body = <p className="jgc-note">{trans.__('Reading the GPUs…')}</p>;
  } else if (report.gpus.length === 0) {
    body = (
      <p className="jgc-note jgc-no-gpus">{describeNoGpus(trans, report)}</p>
    );
  } else {
    body = (
      <>
        {report.engine_error && (
          <p className="jgc-note">
            {trans.__('Who holds the GPUs is unknown without the engine.')}
          </p>
        )}
        {report.ledger_scope === 'user' && (
          <p className="jgc-note jgc-own-ledger">
            {trans.__(
              "GPUs are booked among your own kernels only: your container engine shows you only your own containers, so other users' kernels on this host may hold the same GPUs unseen."
            )}
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
              trans={trans}
            />
          ))}
        </ul>
      </>
    );
  }
  const driver = !report?.driver_version
    ? ''
    : report.cuda_driver_version
      ? trans.__(
          'driver %1 · CUDA %2',
          report.driver_version,
          report.cuda_driver_version
        )
      : trans.__('driver %1', report.driver_version);
  return (
    <section className="jgc-section jgc-gpu-section">
      <h3>
        {trans.__('GPUs')} <span className="jgc-subtle">{driver}</span>
      </h3>
      <QuotaLine model={model} trans={trans} />
      {body}
    </section>
  );
}

function GpuRow(props: {
  gpu: IGpu;
  report: IGpuReport;
  holdersUnknown: boolean;
  openNotebook: (path: string) => void;
  trans: TranslationBundle;
}): JSX.Element {
  const { gpu, report, holdersUnknown, openNotebook, trans } = props;
  const fraction = memoryFraction(gpu);
  const memory = gpuMemoryText(trans, gpu, report.source);
  return (
    <li
      className="jgc-gpu"
      data-gpu-index={gpu.index}
      data-state={
        holdersUnknown ? 'unknown' : gpu.holders.length ? 'held' : 'free'
      }
    >
      <div className="jgc-gpu-title">
        <span className="jgc-gpu-index">{trans.__('GPU %1', gpu.index)}</span>{' '}
        <span className="jgc-gpu-name">{gpu.name}</span>
      </div>
      {fraction === null ? (
        // Unknown is not empty: no meter that would read 0%.
        <div
          className="jgc-bar jgc-bar-unknown"
          aria-hidden="true"
          title={memory.title}
        />
      ) : (
        <div
          className="jgc-bar"
          role="meter"
          aria-label={trans.__('GPU %1 memory', gpu.index)}
          aria-valuemin={0}
          aria-valuemax={100}
          aria-valuenow={Math.round(fraction * 100)}
          title={memory.title}
        >
          <div
            className="jgc-bar-fill"
            style={{ width: `${Math.round(fraction * 100)}%` }}
          />
        </div>
      )}
      <div className="jgc-subtle jgc-gpu-facts">
        <span
          className="jgc-gpu-memory"
          data-known={fraction === null ? 'false' : 'true'}
          title={memory.title}
        >
          {memory.text}
        </span>
        {gpu.utilization !== null && (
          <span className="jgc-gpu-busy">
            {trans.__('%1% busy', gpu.utilization)}
          </span>
        )}
      </div>
      <div className="jgc-gpu-holders">
        {holdersUnknown ? (
          <span className="jgc-gpu-holder">{trans.__('Holders unknown')}</span>
        ) : gpu.holders.length === 0 ? (
          <span className="jgc-gpu-holder jgc-free">
            {trans._p('GPU', 'Free')}
          </span>
        ) : (
          gpu.holders.map((holder, i) =>
            holder.mine && holder.notebook ? (
              <a
                key={i}
                href="#"
                className="jgc-gpu-holder jgc-mine"
                title={trans.__(
                  'Open %1 (image %2)',
                  holder.notebook,
                  holder.image
                )}
                onClick={event => {
                  event.preventDefault();
                  openNotebook(holder.notebook);
                }}
              >
                {holderLabel(trans, holder)}
              </a>
            ) : (
              <span
                key={i}
                className={`jgc-gpu-holder ${holder.mine ? 'jgc-mine' : 'jgc-other'}`}
              >
                {holderLabel(trans, holder)}
              </span>
            )
          )
        )}
      </div>
    </li>
  );
}

function ImageSection(props: {
  model: IGpuContainersModel;
  actions: IPanelActions;
  engineProblem: string;
  trans: TranslationBundle;
}): JSX.Element {
  const { model, actions, engineProblem, trans } = props;
  const [filter, setFilter] = React.useState<IImageFilter>({
    query: '',
    kernelReady: false,
    compatible: false,
    pulled: false
  });
  const catalog = model.catalog;
  // Pulls that are the administrator's: said once, no Pull button, and only
  // the images here listed (one not pulled could only be asked for).
  const pullRefusal = model.status?.pull_refusal ?? '';
  const rows = catalog
    ? filterImages(catalog.images, filter, pullRefusal !== '')
    : [];
  // The engine's own totals for every image on the host, each shared layer
  // once (never the listed rows' sizes summed: images share their base layers,
  // and a sum counted them again and again).
  const disk = catalog?.disk ?? null;
  // Named against every image, so that a name does not change as the search
  // narrows the list.
  const names = imageNames(catalog?.images.map(row => row.reference) ?? []);
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
          (model.loadingImages
            ? trans.__('Reading the images…')
            : trans.__('No images yet.'))}
      </p>
    );
  } else if (rows.length === 0) {
    body = (
      <p className="jgc-note">
        {catalog.images.length === 0
          ? trans.__('No images on this host, and none listed for pulling.')
          : trans.__('No image matches.')}
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
                  name={names.get(row.reference) ?? row.reference}
                  pull={model.pulls.get(row.reference)}
                  report={model.gpus}
                  cluster={model.cluster}
                  actions={actions}
                  engineProblem={engineProblem}
                  queueOffered={model.queue !== null}
                  waitByDefault={model.queue?.wait_by_default ?? false}
                  pullRefusal={pullRefusal}
                  trans={trans}
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
      <h3>
        {trans.__('Images')}{' '}
        {disk !== null && (
          <span
            className="jgc-subtle jgc-images-disk"
            title={trans._n(
              'The %1 image on this host takes %2 on disk, each shared layer once (the list below has those offered to you).',
              'The %1 images on this host take %2 on disk, each shared layer once (the list below has those offered to you).',
              disk.images,
              formatBytes(disk.layers_bytes)
            )}
          >
            {trans.__('%1 on this host', formatBytes(disk.layers_bytes))}
          </span>
        )}
      </h3>
      {catalog && model.catalogError && (
        <p className="jgc-note jgc-error">{model.catalogError}</p>
      )}
      {pullRefusal && (
        <p className="jgc-note jgc-pull-refusal">{pullRefusal}</p>
      )}
      <div className="jgc-search">
        <searchIcon.react tag="span" className="jgc-search-icon" />
        <input
          type="search"
          className="jgc-search-input"
          placeholder={trans.__('Search: pytorch, cuda 12')}
          aria-label={trans.__('Search images')}
          title={trans.__(
            'Search images by framework and version (pytorch 2.3, tensorflow), CUDA (cuda 12), Python (python 3.11) or any word of the name.'
          )}
          value={filter.query}
          onChange={event =>
            setFilter({ ...filter, query: event.target.value })
          }
        />
      </div>
      <div className="jgc-filters">
        {toggle('kernelReady', trans.__('Kernel-ready'))}
        {toggle('compatible', trans.__('Compatible'))}
        {toggle('pulled', trans.__('Pulled'))}
      </div>
      {body}
      <PrePullSchedule model={model} trans={trans} />
    </section>
  );
}

function ImageRow(props: {
  row: IImageRow;
  name: string;
  pull: IPull | undefined;
  report: IGpuReport | null;
  /**
   * The cluster's GPU nodes, where its scheduler places GPUs.
   */
  cluster: IClusterView | null;
  actions: IPanelActions;
  engineProblem: string;
  /**
   * Whether the server has a GPU queue (a start may wait for taken GPUs).
   */
  queueOffered: boolean;
  waitByDefault: boolean;
  /**
   * Why the user's pulls cannot succeed here, or `''`.
   */
  pullRefusal: string;
  trans: TranslationBundle;
}): JSX.Element {
  const { row, name, pull, report, actions, engineProblem, trans } = props;
  const badge = verdictBadge(trans, row.verdict.outcome);
  const pulling = pull && (pull.state === 'queued' || pull.state === 'pulling');
  const blocker = engineProblem || launchBlocker(trans, row);
  // A retired image's note says it (once: not again as the launch's blocker).
  const retiredNote = row.retired ? retiredText(trans, row.retired) : '';
  // "Wait for a free GPU": offered while a GPU choice is taken but could be
  // waited for; null follows the server's default.
  const canWait = offersWait(trans, props.queueOffered, report, row);
  const [waitChoice, setWait] = React.useState<boolean | null>(null);
  const wait = canWait && (waitChoice ?? props.waitByDefault);
  const choices = gpuChoices(trans, report, row, '', wait, props.cluster);
  // null: the default, which follows the GPUs as they free up or get taken.
  const [picked, setChoice] = React.useState<string | null>(null);
  const choice = picked ?? defaultGpuChoice(choices, row);
  const [busy, setBusy] = React.useState(false);
  const selected: IGpuChoice | undefined = choices.find(
    c => c.value === choice
  );
  const withoutGpu = noGpuWarning(trans, choices, row, selected);
  const button = launchButton(trans, blocker, selected, withoutGpu, wait, busy);
  const ready =
    row.kernel_ready === true
      ? trans.__('Kernel-ready')
      : row.kernel_ready === false
        ? trans.__('Not kernel-ready')
        : row.pulled
          ? trans.__('Checking…')
          : '';
  return (
    <li
      className="jgc-image"
      data-reference={row.reference}
      data-kernel-name={row.kernel_name}
    >
      <div className="jgc-image-title">
        <span className="jgc-image-name" title={row.reference}>
          <Breakable text={name} />
        </span>
        <span
          className={`jgc-verdict jgc-verdict-${badge.tone}`}
          data-outcome={row.verdict.outcome}
          title={row.verdict.reason}
        >
          {badge.label}
        </span>
      </div>
      {/* One fact a span; the stylesheet puts the separators between. */}
      <div className="jgc-subtle jgc-image-facts">
        <span>{frameworkLabel(row)}</span>
        {row.cuda_version && (
          <span>{trans.__('CUDA %1', row.cuda_version)}</span>
        )}
        <span>
          {row.pulled ? formatBytes(row.size) : trans.__('not pulled')}
        </span>
        {ready && (
          <span
            className="jgc-ready"
            title={
              row.kernel_ready_reason || trans.__('Python and ipykernel found')
            }
          >
            {ready}
          </span>
        )}
      </div>
      <div className="jgc-subtle jgc-image-ref">
        <Breakable text={row.reference} />
      </div>
      {!row.allowed && (
        <div className="jgc-note jgc-error">{row.allowed_reason}</div>
      )}
      {retiredNote && <div className="jgc-note jgc-retired">{retiredNote}</div>}
      {row.saved_from && (
        <div className="jgc-note jgc-saved-from">
          {row.saved_from.recipe
            ? trans.__(
                'Your own image, built from %1 on %2.',
                row.saved_from.recipe,
                row.saved_from.image
              )
            : trans.__(
                'Your own image, saved from %1 with your packages for it.',
                row.saved_from.image
              )}
        </div>
      )}
      {pull && (pulling || pull.state === 'error') && (
        <div className="jgc-pull" data-state={pull.state}>
          {pulling && (
            <div
              className="jgc-bar"
              role="progressbar"
              aria-label={trans.__('Pull of %1', row.reference)}
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
            {pullProgressText(trans, pull)}
          </div>
        </div>
      )}
      <div className="jgc-actions">
        {!row.pulled &&
          row.allowed &&
          !row.retired &&
          !pulling &&
          !props.pullRefusal && (
            <button
              className="jp-mod-styled jp-mod-accept jgc-pull-button"
              disabled={engineProblem !== ''}
              title={
                engineProblem ||
                trans.__('Pull %1 onto this host', row.reference)
              }
              onClick={() => void actions.pull(row)}
            >
              {trans.__('Pull')}
            </button>
          )}
        {pulling && (
          <button
            className="jp-mod-styled jp-mod-warn jgc-cancel-button"
            onClick={() => void actions.cancel(row)}
          >
            {trans.__('Cancel')}
          </button>
        )}
        {row.pulled && (
          <>
            <select
              className="jgc-gpu-count"
              aria-label={trans.__('GPUs for %1', row.reference)}
              value={choice}
              disabled={blocker !== ''}
              title={selected?.reason || trans.__('GPUs for the new notebook')}
              onChange={event => setChoice(event.target.value)}
            >
              <GpuOptions choices={choices} />
            </select>
            <button
              className="jp-mod-styled jp-mod-accept jgc-launch-button"
              disabled={button.disabled}
              data-waits={button.waits ? 'true' : undefined}
              title={
                button.reason ||
                (button.waits
                  ? trans.__(
                      'Open a new notebook whose kernel waits in the GPU queue'
                    )
                  : trans.__('Open a new notebook'))
              }
              onClick={() => {
                if (!selected) {
                  return;
                }
                setBusy(true);
                void actions
                  .launch(row, selected.request, button.waits || undefined)
                  .finally(() => setBusy(false));
              }}
            >
              {button.label}
            </button>
          </>
        )}
        {row.pulled && row.saved_from && actions.removeSaved && (
          <button
            className="jp-mod-styled jp-mod-warn jgc-remove-saved"
            title={trans.__('Remove your saved image %1', row.reference)}
            onClick={() => void actions.removeSaved?.(row)}
          >
            {trans.__('Remove')}
          </button>
        )}
      </div>
      {row.pulled && canWait && !blocker && (
        <label className="jgc-wait-option">
          <input
            type="checkbox"
            className="jgc-wait-checkbox"
            checked={wait}
            onChange={event => {
              setWait(event.target.checked);
              setChoice(null); // the default for the new choices
            }}
          />
          <span>{trans.__('Wait for a free GPU')}</span>
        </label>
      )}
      {row.pulled && button.waits && (
        <div className="jgc-note jgc-launch-waits">
          {trans.__(
            'Every GPU it asks for is taken: the notebook opens now, and its kernel waits in the GPU queue until one frees (the panel shows its place).'
          )}
        </div>
      )}
      {row.pulled && button.disabled && !blocker && button.reason && (
        <div className="jgc-note jgc-launch-reason">{button.reason}</div>
      )}
      {row.pulled && !blocker && withoutGpu && !button.disabled && (
        <div className="jgc-note jgc-without-gpu">{withoutGpu}</div>
      )}
      {row.pulled && blocker && blocker !== retiredNote && (
        <div className="jgc-subtle jgc-blocker">{blocker}</div>
      )}
    </li>
  );
}

/**
 * `text` ending with a full stop (a sentence followed by another): the
 * server's English sentences may lack one. A translated sentence keeps its
 * own ending (`。`, or none): a stop is added only after a Latin letter, a
 * digit or a closing bracket or quote.
 */
function sentence(text: string): string {
  const trimmed = text.trim();
  return /[A-Za-z0-9)\]"']$/.test(trimmed) ? `${trimmed}.` : trimmed;
}
