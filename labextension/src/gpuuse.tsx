/**
 * A kernel's GPU use as the kernel view and the panel's "Your kernels" show
 * it (memory and utilisation now, sparklines over the last minutes), and the
 * words both use for a kernel's GPUs, start phases and last end.
 */
import type { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { formatBytes, formatClock } from './format';
import { noGpuText } from './gpuwords';
import { IKernelEnd, IKernelGpu, IKernelGpuUsage } from './kerneltypes';

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
      return trans.__(
        'GPUs booked (a wait in the queue included), container planned'
      );
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
 * The label of a kernel's GPUs: "GPU 0, GPU 1", or "No GPU".
 */
export function gpusLabel(
  trans: TranslationBundle,
  gpus: IKernelGpu[]
): string {
  if (gpus.length === 0) {
    return noGpuText(trans);
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
