/**
 * The notebook toolbar item: the kernel's image and GPUs; a click opens the
 * switch workflow.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { NotebookPanel } from '@jupyterlab/notebook';
import type { TranslationBundle } from '@jupyterlab/translation';
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import * as React from 'react';

import {
  NotebookEnvironment,
  describeStamp,
  environmentOf,
  notebookPin,
  notebookStamp,
  shortDigest
} from './environment';
import { sectionOf } from './metadatakeys';
import { moveRecordOf } from './retired';
import { describeNoGpus, gpuListLabel, gpusOfKernel } from './gpuformat';
import { shortImageName } from './imageformat';
import { gpuContainersIcon } from './icon';
import type { IGpuContainersModel } from './tokens';
import { ticketFor, waitingLabel } from './sharing';
import {
  askedGpus,
  imageOfSpec,
  requestedCount,
  specGpuRequest,
  specOf,
  switchNotebook
} from './switching';

/**
 * The command that opens a kernel's own view (registered by the plugin).
 */
const KERNEL_VIEW_COMMAND = 'gpu-containers:open-kernel-view';

/**
 * The toolbar item: the kernel's image (short name) and its GPUs; a click
 * opens the picker.
 */
export class KernelImageItem extends ReactWidget {
  constructor(
    private readonly _app: JupyterFrontEnd,
    private readonly _model: IGpuContainersModel,
    private readonly _panel: NotebookPanel,
    private readonly _trans: TranslationBundle
  ) {
    super();
    this.addClass('jgc-toolbar-item');
    const context = _panel.sessionContext;
    // What the notebook ran on, and whether its image's tag moved since.
    this._environment = environmentOf(_panel, _model, _trans);
    this._environment.changed.connect(this._rerender, this);
    _panel.model?.metadataChanged.connect(this._rerender, this);
    // A new kernel (start, restart, switch): its GPUs are worth reading now.
    context.kernelChanged.connect(this._onKernelChanged, this);
    context.statusChanged.connect(this._onStatus, this);
    // The label follows the session as it comes, changes and goes.
    context.sessionChanged.connect(this._rerender, this);
    context.kernelChanged.connect(this._rerender, this);
    // A kernel spec read since (a new image's): its image is known now.
    _app.serviceManager.kernelspecs.specsChanged.connect(this._rerender, this);
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this._model.changed}>
        {() => this._renderButton()}
      </UseSignal>
    );
  }

  private _renderButton(): JSX.Element {
    const context = this._panel.sessionContext;
    const kernel = context.session?.kernel ?? null;
    const image = kernel ? imageOfSpec(specOf(this._app, kernel.name)) : '';
    const gpus = kernel
      ? gpusOfKernel(this._model.gpus, kernel.id, this._model.cluster)
      : [];
    const trans = this._trans;
    // A start of this notebook's kernel that waits in the GPU queue (its
    // session may not exist yet: the stock start returns once it runs).
    const waiting = ticketFor(
      this._model.queue,
      this._panel.context.path,
      kernel?.id ?? ''
    );
    // Whether the GPU report says what the kernel holds: the kernel runs, and
    // the report came after it came up (one read during its start knows none
    // of its GPUs yet, and "No GPU" would be said for a second or two).
    const status = context.kernelDisplayStatus;
    const stale =
      this._staleReport !== null &&
      this._staleReport.kernelId === (kernel?.id ?? '') &&
      this._staleReport.report === this._model.gpus;
    const settled = (status === 'idle' || status === 'busy') && !stale;
    const gpusLabel =
      gpus.length > 0 || settled
        ? gpuListLabel(trans, gpus)
        : trans._p(
            'toolbar: a kernel whose GPUs are not known yet',
            'starting'
          );
    const label = waiting
      ? waitingLabel(trans, waiting)
      : !kernel
        ? trans.__('Choose an image')
        : image
          ? trans._p(
              'toolbar: kernel image · its GPUs',
              '%1 · %2',
              shortImageName(image),
              gpusLabel
            )
          : trans.__('Not in a container');
    // Its compact form, in a narrow toolbar (a split pane): the GPUs alone
    // (the title names the image), so that the item keeps its place rather
    // than go into JupyterLab's overflow menu ("⋯").
    const compact = !waiting && kernel && image ? gpusLabel : label;
    // Fewer GPUs than the notebook (or its spec) asks for: never in silence. A
    // start that cannot get them is refused; this is a host without GPUs, where
    // a GPU image's default runs on the CPU.
    const asked =
      kernel && image && this._model.gpus
        ? askedGpus(this._panel.model?.metadata, specOf(this._app, kernel.name))
        : 0;
    // (A start that waits for its GPUs is not short of them: it says so.)
    const short = !waiting && settled && asked > gpus.length;
    const shortNote = short
      ? trans._n(
          'This notebook asks for %1 GPU, but its kernel has %2. %3',
          'This notebook asks for %1 GPUs, but its kernel has %2. %3',
          asked,
          gpus.length,
          describeNoGpus(trans, this._model.gpus)
        )
      : '';
    // A GPU image's kernel running without a GPU because its notebook asks for
    // none (chosen when every GPU was taken, say): said, not only implied.
    const spec = kernel ? specOf(this._app, kernel.name) : undefined;
    const cpuOnly =
      !short &&
      !waiting &&
      settled &&
      kernel !== null &&
      image !== '' &&
      this._model.gpus !== null &&
      gpus.length === 0 &&
      requestedCount(specGpuRequest(spec)) > 0;
    const metadata = this._panel.model?.metadata;
    const stamp = notebookStamp(metadata);
    const pin = notebookPin(metadata);
    const undecided = this._environment.undecided;
    const retired = this._environment.retired;
    const move = moveRecordOf(sectionOf(metadata));
    const movedFrom = move
      ? move.reason === 'retired'
        ? trans.__(
            'It moved from %1, which the administrator retired.',
            move.from
          )
        : trans.__('It moved from %1, which was gone.', move.from)
      : '';
    const ranOn = stamp
      ? trans.__('This notebook last ran on %1.', describeStamp(trans, stamp))
      : '';
    const pinned = pin
      ? trans.__(
          'Its image is pinned to the content %1, whatever its tag names now.',
          shortDigest(pin)
        )
      : '';
    const title = [
      image
        ? trans.__(
            'Kernel image %1, %2. Click to switch the image or the GPUs.',
            image,
            gpuListLabel(trans, gpus, 'sentence')
          )
        : trans.__('Click to run this notebook in a container image.'),
      ranOn,
      pinned,
      movedFrom
    ]
      .filter(Boolean)
      .join(' ');
    return (
      <>
        <button
          className="jp-ToolbarButtonComponent jgc-toolbar-button"
          data-image={image}
          data-gpus={gpus.join(',')}
          data-short={short ? 'true' : undefined}
          data-without-gpu={cpuOnly ? 'true' : undefined}
          data-waiting={waiting ? 'true' : undefined}
          title={
            short
              ? trans._p('two sentences in a row', '%1 %2', shortNote, title)
              : title
          }
          onClick={() =>
            void switchNotebook(this._app, this._model, this._panel, trans)
          }
        >
          <gpuContainersIcon.react tag="span" className="jgc-toolbar-icon" />
          <span
            className={
              compact !== label
                ? 'jgc-toolbar-label jgc-toolbar-has-compact'
                : 'jgc-toolbar-label'
            }
          >
            {label}
          </span>
          {compact !== label && (
            <span className="jgc-toolbar-compact-label">{compact}</span>
          )}
          {short && (
            <span className="jgc-toolbar-short" aria-label={shortNote}>
              {trans.__('(fewer GPUs than asked)')}
            </span>
          )}
          {pin && kernel && image && (
            <span className="jgc-toolbar-pinned" title={pinned}>
              {trans.__('(pinned)')}
            </span>
          )}
          {cpuOnly && (
            <span
              className="jgc-toolbar-short"
              title={trans.__(
                'This GPU image runs without a GPU: its notebook asks for none. Click to choose GPUs.'
              )}
            >
              {trans.__('(CPU only)')}
            </span>
          )}
        </button>
        {undecided && (
          <button
            className="jp-ToolbarButtonComponent jgc-toolbar-image-changed"
            title={trans.__(
              '%1 names other content now than this notebook last ran on. Click to choose which to run.',
              undecided.recorded.image
            )}
            onClick={() => void this._environment.decide()}
          >
            {trans.__('Image changed')}
          </button>
        )}
        {retired && (
          <button
            className="jp-ToolbarButtonComponent jgc-toolbar-image-retired"
            title={
              retired.redirect
                ? trans.__(
                    '%1 is retired or gone. Click to move this notebook to %2.',
                    retired.image,
                    retired.redirect
                  )
                : trans.__('%1 is retired or gone.', retired.image)
            }
            onClick={() => void this._environment.decideRetired()}
          >
            {retired.state === 'retired'
              ? trans.__('Image retired')
              : trans.__('Image gone')}
          </button>
        )}
        {kernel && image && (
          <button
            className="jp-ToolbarButtonComponent jgc-toolbar-kernel-view"
            title={trans.__(
              "Kernel log and GPU use: the kernel's container log, start, image, mounts and GPU use"
            )}
            onClick={() =>
              void this._app.commands.execute(KERNEL_VIEW_COMMAND, {
                kernelId: kernel.id
              })
            }
          >
            <span className="jgc-toolbar-long">
              {trans.__('Log and GPU use')}
            </span>
            <span className="jgc-toolbar-compact">
              {trans._p('toolbar', 'Log')}
            </span>
          </button>
        )}
      </>
    );
  }

  override dispose(): void {
    if (this.isDisposed) {
      return;
    }
    const context = this._panel.sessionContext;
    context.kernelChanged.disconnect(this._onKernelChanged, this);
    context.statusChanged.disconnect(this._onStatus, this);
    context.sessionChanged.disconnect(this._rerender, this);
    context.kernelChanged.disconnect(this._rerender, this);
    this._app.serviceManager.kernelspecs.specsChanged.disconnect(
      this._rerender,
      this
    );
    this._environment.changed.disconnect(this._rerender, this);
    this._panel.model?.metadataChanged.disconnect(this._rerender, this);
    super.dispose();
  }

  private _rerender(): void {
    this.update();
  }

  private _refreshGpus(): void {
    void this._model.refreshGpus();
  }

  private _onStatus(): void {
    // The GPUs change when a kernel comes up (after a start or restart).
    const status = this._panel.sessionContext.kernelDisplayStatus;
    if (
      this._lastStatus !== 'idle' &&
      this._lastStatus !== 'busy' &&
      status === 'idle'
    ) {
      this._markReportStale();
      this._refreshGpus();
    }
    this._lastStatus = status;
    this.update();
  }

  private _onKernelChanged(): void {
    this._markReportStale();
    this._refreshGpus();
  }

  /**
   * The GPU report now predates the kernel's start: what it says of the
   * kernel's GPUs waits for the next one.
   */
  private _markReportStale(): void {
    const kernelId = this._panel.sessionContext.session?.kernel?.id ?? '';
    this._staleReport = kernelId
      ? { kernelId, report: this._model.gpus }
      : null;
  }

  private _staleReport: {
    kernelId: string;
    report: IGpuContainersModel['gpus'];
  } | null = null;

  private _lastStatus = '';
  private readonly _environment: NotebookEnvironment;
}
