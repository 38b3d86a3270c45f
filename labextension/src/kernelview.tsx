/**
 * The kernel's own view, in the main area: its container, image digest,
 * mounts, GPUs, start phases and last end; its container log as a live tail;
 * and its GPU use over the last minutes (its state: kernelviewmodel.ts).
 */
import type { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import {
  GpuUse,
  clockTime,
  describeEnd,
  gpusLabel,
  phaseLabel
} from './gpuuse';
import { IEnvironmentStamp } from './environmenttypes';
import { noGpuText } from './gpuwords';
import { IKernelView } from './kerneltypes';
import { KernelViewModel } from './kernelviewmodel';
import { ModelWidget } from './modelwidget';
import { formatBytes } from './format';
import { SaveModel } from './savemodel';
import { ISave } from './savetypes';
import { formatDuration } from './sharing';

/**
 * The body of a kernel's view (no state of its own: the model has it).
 */
export function KernelViewBody(props: {
  model: KernelViewModel;
  trans: TranslationBundle;
}): JSX.Element {
  const { model, trans } = props;
  const view = model.view;
  return (
    <div className="jgc-kernel-view">
      <header className="jgc-kernel-view-header">
        <h2>
          {view?.notebook
            ? trans.__('Kernel of %1', view.notebook)
            : trans.__('Kernel %1', model.kernelId)}
        </h2>
        {model.error && (
          <p className="jgc-banner jgc-banner-error" role="alert">
            {model.error}
          </p>
        )}
      </header>
      {view && <KernelDetails view={view} trans={trans} />}
      {view && <SaveSection model={model.saving} trans={trans} />}
      <section className="jgc-kernel-log-section">
        <h3>
          {trans.__('Container log')}{' '}
          <span className="jgc-note jgc-log-state">
            {model.following
              ? trans.__('(following)')
              : trans.__('(not following)')}
          </span>
        </h3>
        <p className="jgc-note">
          {trans.__(
            "What the kernel's process writes to its standard output and error (libraries, subprocesses); a cell's print() goes to the notebook."
          )}
        </p>
        <pre
          className="jgc-kernel-log"
          aria-live="polite"
          // A new function each drawing: React calls it after each, and the
          // log stays at its end while the reader has not scrolled up.
          ref={node => {
            if (node && model.atEnd) {
              node.scrollTop = node.scrollHeight;
            }
          }}
          onScroll={event => {
            const node = event.currentTarget;
            model.atEnd =
              node.scrollTop + node.clientHeight >= node.scrollHeight - 4;
          }}
        >
          {model.entries.map((entry, i) => (
            <div
              key={i}
              className={`jgc-log-${entry.kind}`}
              title={entry.time || undefined}
            >
              {entry.text}
            </div>
          ))}
        </pre>
      </section>
    </div>
  );
}

/**
 * Where a save is, in words.
 */
export function saveProgress(trans: TranslationBundle, save: ISave): string {
  switch (save.state) {
    case 'queued':
      return save.position > 0
        ? trans.__(
            'Waiting for a free slot: %1 in the queue (others are saving or building images)…',
            save.position
          )
        : trans.__('Waiting to start…');
    case 'copying':
      return trans.__(
        'Copying your packages: %1 files, %2…',
        save.files,
        formatBytes(save.bytes)
      );
    case 'building':
      return trans.__(
        'Building the image (%1 files, %2 of your packages)…',
        save.files,
        formatBytes(save.bytes)
      );
    case 'done':
      return trans.__(
        'Saved as %1. New notebooks can start on it from the Launcher; it is yours alone.',
        save.image
      );
    case 'cancelled':
      return trans.__('Cancelled: nothing was saved.');
    default:
      return save.message || trans.__('The save failed.');
  }
}

/**
 * "Save as image": the kernel's image and the user's packages for it, as an
 * image of their own.
 */
export function SaveSection(props: {
  model: SaveModel;
  trans: TranslationBundle;
}): JSX.Element {
  const { model, trans } = props;
  const save = model.save;
  const active = model.active;
  const failed = save?.state === 'error';
  return (
    <section className="jgc-kernel-save-section">
      <h3>{trans.__('Save as image')}</h3>
      <p className="jgc-note">
        {trans.__(
          "Saves this kernel's image with the packages you installed for it (%pip install) as a new image of your own, hidden from other users. Kernels on it have those packages without installing them again."
        )}
      </p>
      {model.refusal ? (
        <p className="jgc-note jgc-save-refusal">{model.refusal}</p>
      ) : (
        <form
          className="jgc-save-form"
          onSubmit={event => {
            event.preventDefault();
            void model.start();
          }}
        >
          <label>
            {trans.__('Name')}{' '}
            <input
              className="jp-mod-styled jgc-save-name"
              type="text"
              value={model.name}
              placeholder={trans.__("the image's own name")}
              maxLength={64}
              disabled={active || model.asking}
              onChange={event => model.setName(event.currentTarget.value)}
            />
          </label>{' '}
          <button
            type="submit"
            className="jp-mod-styled jp-mod-accept jgc-save-start"
            disabled={active || model.asking || !model.loaded}
          >
            {trans.__('Save as Image')}
          </button>
          {active && (
            <button
              type="button"
              className="jp-mod-styled jp-mod-warn jgc-save-cancel"
              disabled={model.asking}
              onClick={() => void model.cancel()}
            >
              {trans.__('Cancel')}
            </button>
          )}
        </form>
      )}
      {model.error && (
        <p className="jgc-banner jgc-banner-error" role="alert">
          {model.error}
        </p>
      )}
      {save && (
        <div
          className={`jgc-save-state jgc-save-${save.state}`}
          role={failed ? 'alert' : 'status'}
        >
          <p>{saveProgress(trans, save)}</p>
          {save.log.length > 0 && (active || failed) && (
            <pre className="jgc-save-log">{save.log.slice(-5).join('\n')}</pre>
          )}
        </div>
      )}
    </section>
  );
}

/**
 * What the kernel's notebook records of its environment, in a line: framework,
 * CUDA, Python and the verdict on its GPUs.
 */
function environmentLine(
  trans: TranslationBundle,
  stamp: IEnvironmentStamp
): string {
  const parts = [
    stamp.framework
      ? `${stamp.framework} ${stamp.framework_version}`.trim()
      : '',
    stamp.cuda_version ? trans.__('CUDA %1', stamp.cuda_version) : '',
    stamp.python_version ? trans.__('Python %1', stamp.python_version) : '',
    stamp.verdict ? stamp.verdict.reason : noGpuText(trans)
  ];
  return parts.filter(Boolean).join(' · ');
}

/**
 * The details of a kernel: GPU use, image, container, mounts, start phases,
 * last end.
 */
export function KernelDetails(props: {
  view: IKernelView;
  trans: TranslationBundle;
}): JSX.Element {
  const { view, trans } = props;
  const container = view.container;
  const rows: Array<[string, React.ReactNode]> = [
    [trans.__('Image'), view.image.reference],
    [
      trans.__('Image digest'),
      view.image.pinned
        ? trans.__(
            '%1 (pinned by its notebook: not what the tag names now)',
            view.image.digest || view.image.pinned
          )
        : view.image.digest || '—'
    ],
    ...(view.environment
      ? ([
          [trans.__('Environment'), environmentLine(trans, view.environment)]
        ] as Array<[string, React.ReactNode]>)
      : []),
    [
      trans.__('Container'),
      container
        ? trans.__('%1 (%2)', container.id, container.status)
        : trans.__('none (restarting)')
    ],
    [
      trans.__('Started'),
      container ? clockTime(container.started_at) : clockTime(null)
    ],
    [trans.__('GPUs'), gpusLabel(trans, view.gpus)]
  ];
  return (
    <div className="jgc-kernel-details">
      <section className="jgc-kernel-usage-section">
        <h3>{trans.__('GPU use')}</h3>
        <GpuUse
          usage={view.usage}
          holdsGpus={view.gpus.length > 0}
          trans={trans}
        />
      </section>
      <section>
        <h3>{trans.__('Container')}</h3>
        <table className="jgc-kernel-facts">
          <tbody>
            {rows.map(([label, value]) => (
              <tr key={label}>
                <th scope="row">{label}</th>
                <td>
                  <code>{value}</code>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
      <section>
        <h3>{trans.__('Mounts')}</h3>
        <ul className="jgc-kernel-mounts">
          {view.mounts.map(mount => (
            <li key={mount.target}>
              {mount.source ? (
                <>
                  <code>{mount.source}</code> →{' '}
                </>
              ) : (
                <span
                  className="jgc-note"
                  title={trans.__(
                    'On the host, where the kernel service keeps it'
                  )}
                >
                  {trans.__("the service's")} →{' '}
                </span>
              )}
              <code>{mount.target}</code>{' '}
              <span className="jgc-note">
                {mount.type === 'dataset'
                  ? mount.read_only
                    ? trans.__('dataset, read-only')
                    : trans.__('dataset, writable')
                  : mount.read_only
                    ? trans.__('read-only')
                    : trans.__('writable')}
              </span>
            </li>
          ))}
          {view.tmpfs.map(target => (
            <li key={`tmpfs:${target}`}>
              <code>{target}</code>{' '}
              <span className="jgc-note">{trans.__('temporary (tmpfs)')}</span>
            </li>
          ))}
        </ul>
      </section>
      <section>
        <h3>{trans.__('Start phases')}</h3>
        {view.phases.length === 0 ? (
          <p className="jgc-note">
            {trans.__(
              'Not recorded: this server reattached the kernel after a restart.'
            )}
          </p>
        ) : (
          <ol className="jgc-kernel-phases">
            {view.phases.map(phase => (
              <li key={phase.name}>
                {trans.__(
                  '%1 at %2 (%3)',
                  phaseLabel(trans, phase.name),
                  clockTime(phase.at),
                  formatDuration(trans, phase.seconds)
                )}
              </li>
            ))}
          </ol>
        )}
      </section>
      <section>
        <h3>{trans.__('Last end')}</h3>
        {view.last_end ? (
          <pre className="jgc-kernel-end">
            {describeEnd(trans, view.last_end)}
          </pre>
        ) : (
          <p className="jgc-note">
            {trans.__('No container of this kernel has ended.')}
          </p>
        )}
      </section>
    </div>
  );
}

/**
 * A kernel's view as a main-area widget. Closing it stops following the log.
 */
export class KernelViewWidget extends ModelWidget<KernelViewModel> {
  constructor(model: KernelViewModel, trans: TranslationBundle) {
    super(
      model,
      m => <KernelViewBody model={m} trans={trans} />,
      'jgc-kernel-view-widget'
    );
    model.start();
  }
}
