/**
 * The kernel's own view, in the main area: its container, image digest,
 * mounts, GPUs, start phases and last end; its container log as a live tail;
 * and its GPU use over the last minutes (sparklines). Also the panel's
 * compact "Your kernels" section.
 */
import type { ServerConnection } from '@jupyterlab/services';
import type { TranslationBundle } from '@jupyterlab/translation';
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';
import * as React from 'react';

import {
  getKernelView,
  getKernels,
  kernelLogUrl,
  logStreamRefusal
} from './api';
import { formatBytes, formatClock, shortImageName } from './format';
import {
  IEventSourceLike,
  STREAM_CLOSED,
  openEventSource
} from './eventsource';
import { Reader, readEvent } from './json';
import { ILogEvents, logEventReaders } from './readers';
import { noticeText, reclaimText } from './sharing';
import { reclaimOf } from './sharingreaders';
import {
  IAdminNotice,
  IKernelEnd,
  IKernelGpu,
  IKernelGpuUsage,
  IKernelList,
  IKernelView
} from './types';

/**
 * One entry of the log as the view shows it: a line of the container's log,
 * or a note of the view's own (a new container, why one ended).
 */
export interface ILogEntry {
  kind: 'line' | 'note' | 'end';
  text: string;
  time: string;
}

/**
 * Options of a kernel's view model.
 */
export interface IKernelViewOptions {
  kernelId: string;
  serverSettings: ServerConnection.ISettings;
  trans: TranslationBundle;
  /**
   * Opens an event stream; the browser's `EventSource` by default.
   */
  openEvents?: (url: string) => IEventSourceLike;
  /**
   * Lines of the log read when the view opens.
   */
  tail?: number;
  /**
   * Lines kept on screen; older ones are dropped.
   */
  maxEntries?: number;
  /**
   * Seconds between two reads of the details and GPU use.
   */
  refreshSeconds?: number;
}

/**
 * What one kernel's view shows, kept up to date while it is open: the details
 * (read every few seconds) and the log (a server-sent event stream).
 */
export class KernelViewModel {
  constructor(options: IKernelViewOptions) {
    this.kernelId = options.kernelId;
    this._settings = options.serverSettings;
    this._trans = options.trans;
    this._tail = options.tail ?? 500;
    this._maxEntries = options.maxEntries ?? 5000;
    this._openEvents = options.openEvents ?? openEventSource;
    // Read while the view is open, hidden or not (as before: a tab in the
    // background still follows its log); `refresh` never rejects.
    this._poll = new Poll({
      auto: false,
      factory: () => this.refresh(),
      frequency: {
        interval: (options.refreshSeconds ?? 5) * 1000,
        backoff: false
      },
      name: 'gpu-containers:kernel-view',
      standby: 'never'
    });
  }

  readonly kernelId: string;

  /**
   * The kernel's details; `null` until read.
   */
  view: IKernelView | null = null;

  /**
   * Why the details could not be read; empty when they could.
   */
  error = '';

  /**
   * The log on screen, oldest first.
   */
  entries: ILogEntry[] = [];

  /**
   * Whether new lines of the log still come.
   */
  following = false;

  /**
   * Whether the reader is at the end of the log (which then stays in view as
   * lines come).
   */
  atEnd = true;

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /**
   * Read the details, open the log, and keep both current.
   */
  start(): void {
    if (this._started || this._isDisposed) {
      return;
    }
    this._started = true;
    void this.refresh();
    void this._poll.schedule({
      interval: this._poll.frequency.interval,
      phase: 'started'
    });
    this._follow();
  }

  /**
   * Read the kernel's details (and GPU use) again.
   */
  async refresh(): Promise<void> {
    try {
      const view = await getKernelView(
        this.kernelId,
        this._settings,
        this._trans
      );
      if (this._isDisposed) {
        return;
      }
      this.view = view;
      this.error = '';
    } catch (error) {
      if (this._isDisposed) {
        return;
      }
      this.error = error instanceof Error ? error.message : String(error);
    }
    this._changed.emit();
  }

  /**
   * Stop following the log and reading the details.
   */
  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._stopFollowing();
    this._poll.dispose();
    Signal.clearData(this);
  }

  private _follow(): void {
    const source = this._openEvents(
      kernelLogUrl(this.kernelId, this._tail, this._settings)
    );
    this._source = source;
    this.following = true;
    // Whether the stream ever answered: one that closes before it says
    // anything was refused (or never reached), which is not "no longer".
    let answered = false;
    source.addEventListener('open', () => (answered = true));
    const on = <K extends keyof ILogEvents>(
      name: K,
      handle: (data: ILogEvents[K]) => void
    ): void => {
      source.addEventListener(name, event => {
        answered = true;
        const read: Reader<ILogEvents[K]> = logEventReaders[name];
        const data = readEvent(event.data, read);
        if (data && !this._isDisposed) {
          handle(data);
          this._changed.emit();
        }
      });
    };
    on('container', data => this._onContainer(data));
    on('lines', data => {
      if (data.skipped > 0) {
        this._note(
          this._trans._n(
            '… %1 line skipped (the log came faster than it could be shown) …',
            '… %1 lines skipped (the log came faster than it could be shown) …',
            data.skipped
          )
        );
      }
      for (const line of data.lines) {
        this._push({ kind: 'line', text: line.text, time: line.time });
      }
    });
    on('ended', data => {
      this._push({
        kind: 'end',
        text: this._trans.__('The container ended: %1', data.reason),
        time: ''
      });
      void this.refresh();
    });
    on('shutdown', data => {
      this._push({ kind: 'end', text: data.reason, time: '' });
      this._stopFollowing();
    });
    source.addEventListener('error', () => {
      // The browser reconnects by itself, unless the stream failed for good.
      if (source.readyState === STREAM_CLOSED && !this._isDisposed) {
        this._stopFollowing();
        if (answered) {
          this._note(this._trans.__('The log is no longer followed.'));
          this._changed.emit();
        } else {
          void this._sayWhyNotRead();
        }
      }
    });
  }

  /**
   * The stream was refused before it began: say so, with the server's
   * sentence, rather than that it is "no longer" followed.
   */
  private async _sayWhyNotRead(): Promise<void> {
    const why = await logStreamRefusal(
      this.kernelId,
      this._settings,
      this._trans
    );
    if (this._isDisposed) {
      return;
    }
    this._note(
      why
        ? this._trans.__('The log could not be read: %1', why)
        : this._trans.__(
            'The log could not be read: its stream closed before it began. Close this view and open it again to retry.'
          )
    );
    this._changed.emit();
  }

  private _onContainer(data: ILogEvents['container']): void {
    if (data.container_id === this._container) {
      // The stream reconnected: its tail comes again, in place of what was shown.
      this.entries = this.entries.slice(0, this._containerStart);
    } else {
      if (this._container === '' && data.last_end) {
        this._push({
          // A restart someone asked for is news; a container that ended on
          // its own (an exit, a crash, out of memory) is trouble.
          kind: data.last_end.routine ? 'note' : 'end',
          text: describeEnd(this._trans, data.last_end),
          time: ''
        });
      }
      if (this._container !== '') {
        this._note(
          this._trans.__(
            'The kernel restarted in a new container (%1).',
            data.container_id.slice(0, 12)
          )
        );
      }
      this._container = data.container_id;
    }
    this._containerStart = this.entries.length;
    void this.refresh();
  }

  private _note(text: string): void {
    this._push({ kind: 'note', text, time: '' });
  }

  private _push(entry: ILogEntry): void {
    this.entries.push(entry);
    const over = this.entries.length - this._maxEntries;
    if (over > 0) {
      this.entries.splice(0, over);
      this._containerStart = Math.max(0, this._containerStart - over);
    }
  }

  private _stopFollowing(): void {
    this._source?.close();
    this._source = null;
    this.following = false;
  }

  private _settings: ServerConnection.ISettings;
  private _trans: TranslationBundle;
  private _tail: number;
  private _maxEntries: number;
  private _poll: Poll;
  private _openEvents: (url: string) => IEventSourceLike;
  private _source: IEventSourceLike | null = null;
  private _container = '';
  private _containerStart = 0;
  private _started = false;
  private _isDisposed = false;
  private _changed = new Signal<this, void>(this);
}

/**
 * A clock time for a unix time (seconds), in the browser's locale.
 */
export function clockTime(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) {
    return '—';
  }
  return formatClock(seconds * 1000);
}

/**
 * How a kernel's last container ended, in a sentence.
 */
export function describeEnd(trans: TranslationBundle, end: IKernelEnd): string {
  return trans.__(
    'The previous container ended at %1: %2',
    clockTime(end.at),
    end.reason
  );
}

/**
 * The label of a launch phase (the server's names).
 */
export function phaseLabel(trans: TranslationBundle, name: string): string {
  switch (name) {
    case 'prepare':
      return trans.__('Prepared (checks, connection files)');
    case 'image':
      return trans.__('Image admitted');
    case 'gpus':
      return trans.__('GPUs booked, container planned');
    case 'create':
      return trans.__('Container created');
    case 'start':
      return trans.__('Container started');
    case 'ready':
      return trans.__('Kernel answered');
    case 'handover':
      return trans.__('Warm container taken');
    case 'pool':
      return trans.__('Warm container refused, starting a new one');
    default:
      return name;
  }
}

/**
 * The label of a kernel's GPUs: "GPU 0, GPU 1".
 */
export function gpusLabel(
  trans: TranslationBundle,
  gpus: IKernelGpu[]
): string {
  if (gpus.length === 0) {
    return trans.__('No GPU');
  }
  return gpus
    .map(gpu =>
      gpu.index !== null
        ? trans.__('GPU %1', gpu.index)
        : trans.__('GPU %1', gpu.uuid)
    )
    .join(', ');
}

/**
 * An inline SVG sparkline of `values` (oldest first) between 0 and `max`;
 * `null` values (unknown) break the line.
 */
export function Sparkline(props: {
  values: Array<number | null>;
  max: number;
  label: string;
  kind: 'memory' | 'utilization';
  width?: number;
  height?: number;
}): JSX.Element {
  const width = props.width ?? 120;
  const height = props.height ?? 24;
  const segments = sparklineSegments(props.values, props.max, width, height);
  return (
    <svg
      className={`jgc-sparkline jgc-sparkline-${props.kind}`}
      width={width}
      height={height}
      viewBox={`0 0 ${width} ${height}`}
      role="img"
      aria-label={props.label}
    >
      <title>{props.label}</title>
      <line
        className="jgc-sparkline-base"
        x1={0}
        y1={height - 0.5}
        x2={width}
        y2={height - 0.5}
      />
      {segments.map((points, i) => (
        <polyline key={i} className="jgc-sparkline-line" points={points} />
      ))}
    </svg>
  );
}

/**
 * The `points` of each unbroken run of `values` in a `width` × `height` box
 * (a lone value is a short flat dash).
 */
export function sparklineSegments(
  values: Array<number | null>,
  max: number,
  width: number,
  height: number
): string[] {
  const top = max > 0 ? max : 1;
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const y = (value: number): number =>
    round(
      height - 1 - (Math.min(Math.max(value, 0), top) / top) * (height - 2)
    );
  const segments: string[] = [];
  let run: string[] = [];
  values.forEach((value, i) => {
    if (value === null) {
      if (run.length) {
        segments.push(run.join(' '));
      }
      run = [];
      return;
    }
    const x = round(i * step);
    run.push(`${x},${y(value)}`);
    if (values.length === 1) {
      run.push(`${round(width)},${y(value)}`);
    }
  });
  if (run.length) {
    segments.push(run.join(' '));
  }
  return segments.map(points =>
    points.includes(' ') ? points : `${points} ${points}`
  );
}

function round(value: number): number {
  return Math.round(value * 10) / 10;
}

/**
 * A kernel's GPU use: memory and utilisation now, their sparklines over the
 * last minutes, and since when it holds its GPUs. Unknown numbers say why.
 */
export function GpuUse(props: {
  usage: IKernelGpuUsage;
  holdsGpus: boolean;
  trans: TranslationBundle;
  compact?: boolean;
}): JSX.Element {
  const { usage, trans } = props;
  const since =
    usage.since !== null ? (
      <span className="jgc-usage-since">
        {trans.__('since %1', clockTime(usage.since))}
      </span>
    ) : null;
  if (!props.holdsGpus && usage.samples.length === 0) {
    return (
      <div className="jgc-usage">
        <span className="jgc-note">{trans.__('Holds no GPU.')}</span>
      </div>
    );
  }
  if (usage.reason) {
    return (
      <div className="jgc-usage jgc-usage-unknown">
        <span className="jgc-usage-value">
          {trans.__('GPU memory and utilisation: unknown')}
        </span>{' '}
        {since}
        {!props.compact && <p className="jgc-note">{usage.reason}</p>}
      </div>
    );
  }
  const samples = usage.samples;
  if (samples.length === 0) {
    return (
      <div className="jgc-usage">
        <span className="jgc-note">{trans.__('No sample yet.')}</span> {since}
      </div>
    );
  }
  const last = samples[samples.length - 1];
  const memoryTop =
    usage.memory_total ?? Math.max(...samples.map(s => s.memory_used), 1);
  const minutes = Math.max(
    1,
    Math.round((last.at - samples[0].at) / 60 + usage.interval / 60)
  );
  const memoryText =
    usage.memory_total !== null
      ? trans.__(
          'GPU memory %1 of %2',
          formatBytes(last.memory_used),
          formatBytes(usage.memory_total)
        )
      : trans.__('GPU memory %1', formatBytes(last.memory_used));
  const utilText =
    last.utilization === null
      ? trans.__('utilisation unknown')
      : trans.__('utilisation %1%', last.utilization);
  const width = props.compact ? 80 : 160;
  return (
    <div
      className={props.compact ? 'jgc-usage jgc-usage-compact' : 'jgc-usage'}
    >
      <div className="jgc-usage-row">
        <Sparkline
          kind="memory"
          values={samples.map(s => s.memory_used)}
          max={memoryTop}
          width={width}
          label={trans._n(
            'GPU memory over the last minute',
            'GPU memory over the last %1 minutes',
            minutes
          )}
        />
        <span className="jgc-usage-value">{memoryText}</span>
      </div>
      <div className="jgc-usage-row">
        <Sparkline
          kind="utilization"
          values={samples.map(s => s.utilization)}
          max={100}
          width={width}
          label={trans._n(
            'GPU utilisation over the last minute',
            'GPU utilisation over the last %1 minutes',
            minutes
          )}
        />
        <span className="jgc-usage-value">{utilText}</span>
      </div>
      {since}
    </div>
  );
}

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
    [trans.__('Image digest'), view.image.digest || '—'],
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
              <code>{mount.source}</code> → <code>{mount.target}</code>{' '}
              <span className="jgc-note">
                {mount.read_only ? trans.__('read-only') : trans.__('writable')}
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
                  '%1 at %2 (%3 s)',
                  phaseLabel(trans, phase.name),
                  clockTime(phase.at),
                  phase.seconds.toFixed(3)
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
export class KernelViewWidget extends ReactWidget {
  constructor(
    readonly model: KernelViewModel,
    private readonly _trans: TranslationBundle
  ) {
    super();
    this.addClass('jgc-kernel-view-widget');
    model.start();
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => <KernelViewBody model={this.model} trans={this._trans} />}
      </UseSignal>
    );
  }

  override dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.model.dispose();
    super.dispose();
  }
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
                  {gpusLabel(trans, kernel.gpus)}
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
              {warning && (
                <div className="jgc-note jgc-reclaim" role="status">
                  {warning}
                </div>
              )}
              {notice && (
                <div className="jgc-note jgc-admin-notice" role="status">
                  {noticeText(trans, notice)}
                </div>
              )}
              <GpuUse
                usage={kernel.usage}
                holdsGpus={kernel.gpus.length > 0}
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
  },
  { list: IKernelList | null; error: string; stale: boolean }
> {
  override state = {
    list: null as IKernelList | null,
    error: '',
    stale: false
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
        />
      </div>
    );
  }

  private _node = React.createRef<HTMLDivElement>();
  private _poll: Poll | null = null;
  private _unmounted = false;
}
