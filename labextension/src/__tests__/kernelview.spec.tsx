import * as React from 'react';
import { ServerConnection } from '@jupyterlab/services';

import { formatBytes } from '../format';
import { translationBundle } from '../i18n';
import type { IEventSourceLike } from '../eventsource';
import { GpuUse, Sparkline, clockTime, sparklineSegments } from '../gpuuse';
import { KernelViewBody } from '../kernelview';
import { KernelViewModel } from '../kernelviewmodel';
import { IKeepState, KernelList } from '../yourkernels';
import {
  IKernelGpuUsage,
  IKernelList,
  IKernelSummary,
  IKernelView
} from '../kerneltypes';
import { by, findAll, findOne, textOf } from './elements';
import { pseudoBundle } from './pseudo';
import { slurmClusterView } from './fixtures';

// No DOM in the node test environment: a ReactWidget that only counts, a
// UseSignal that draws its children once.
jest.mock('@jupyterlab/ui-components', () => ({
  ReactWidget: class {
    isDisposed = false;
    addClass(): void {
      // nothing to style without a DOM
    }
    update(): void {
      // drawn by the tests themselves
    }
    dispose(): void {
      this.isDisposed = true;
    }
  },
  UseSignal: (props: { children: () => unknown }) => props.children()
}));

const trans = translationBundle();
const GiB = 1024 ** 3;
const KERNEL = '5f0c3b1e-2d4a-4f7e-9c1b-8a6e2d3f4b5c';
const CONTAINER = 'a'.repeat(64);
const settings = ServerConnection.makeSettings({
  baseUrl: 'http://localhost:8888/base/',
  token: 'secret'
});

function makeUsage(overrides: Partial<IKernelGpuUsage> = {}): IKernelGpuUsage {
  return {
    source: 'nvml',
    reason: '',
    interval: 5,
    since: 1_700_000_000,
    memory_total: 80 * GiB,
    samples: [
      { at: 1_700_000_100, memory_used: 2 * GiB, utilization: 10 },
      { at: 1_700_000_105, memory_used: 3 * GiB, utilization: 40 }
    ],
    ...overrides
  };
}

function makeView(overrides: Partial<IKernelView> = {}): IKernelView {
  return {
    kernel_id: KERNEL,
    kernel_name: 'gpuc-torch',
    notebook: 'train.ipynb',
    execution_state: 'idle',
    image: {
      pinned: '',
      reference: 'nvcr.io/nvidia/pytorch:24.05-py3',
      id: 'sha256:' + '1'.repeat(64),
      digest: 'nvcr.io/nvidia/pytorch@sha256:' + '2'.repeat(64),
      repo_digests: ['nvcr.io/nvidia/pytorch@sha256:' + '2'.repeat(64)]
    },
    container: {
      id: CONTAINER,
      name: 'jupyter-kernel-5f0c',
      status: 'running',
      created: 1_700_000_000,
      started_at: 1_700_000_000.5,
      finished_at: null,
      exit_code: 0,
      oom_killed: false
    },
    mounts: [
      {
        type: 'bind',
        source: '/home/alice/work',
        target: '/workspace',
        read_only: false
      },
      {
        type: 'bind',
        source: '/raid/datasets',
        target: '/data',
        read_only: true
      },
      {
        type: 'dataset',
        source: 'imagenet (claim imagenet)',
        target: '/datasets/imagenet',
        read_only: true
      },
      // A kernel service's own file: where it lies on the host is not said.
      {
        type: 'bind',
        source: '',
        target: '/opt/jgc/packages',
        read_only: false
      }
    ],
    tmpfs: ['/home/jupyter'],
    gpus: [{ uuid: 'GPU-0', index: '0', name: 'A100', memory_total: 80 * GiB }],
    launched_at: 1_699_999_999,
    phases: [
      { name: 'create', at: 1_700_000_000, seconds: 0.012 },
      { name: 'ready', at: 1_700_000_001, seconds: 0.646 }
    ],
    last_end: null,
    usage: makeUsage(),
    reclaim: null,
    environment: null,
    ...overrides
  };
}

/**
 * An event stream that the test drives.
 */
class FakeEventSource implements IEventSourceLike {
  constructor(readonly url: string) {}

  readyState = 1;
  closed = false;
  readonly listeners = new Map<string, Array<(e: { data?: string }) => void>>();

  addEventListener(
    type: string,
    listener: (event: { data?: string }) => void
  ): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }

  close(): void {
    this.closed = true;
    this.readyState = 2;
  }

  emit(type: string, data?: unknown): void {
    for (const listener of this.listeners.get(type) ?? []) {
      listener(data === undefined ? {} : { data: JSON.stringify(data) });
    }
  }
}

describe('sparklines', () => {
  it('scales values to the box and breaks the line at unknown values', () => {
    // step 10, y = 11 - value / 100 * 10
    expect(sparklineSegments([0, 50, null, 100], 100, 30, 12)).toEqual([
      '0,11 10,6',
      '30,1 30,1'
    ]);
  });

  it('draws a lone value as a flat dash, and clamps to the maximum', () => {
    expect(sparklineSegments([5], 10, 40, 12)).toEqual(['0,6 40,6']);
    expect(sparklineSegments([200, -3], 100, 10, 12)).toEqual(['0,1 10,11']);
    expect(sparklineSegments([], 100, 10, 12)).toEqual([]);
  });

  it('is an SVG image with its label', () => {
    const svg = findOne(
      <Sparkline
        kind="memory"
        values={[1, 2, 3]}
        max={3}
        label="GPU memory over the last minute"
      />,
      by('svg', 'jgc-sparkline-memory')
    );
    expect(svg.props.role).toBe('img');
    expect(svg.props['aria-label']).toBe('GPU memory over the last minute');
    expect(findAll(svg, by('polyline'))).toHaveLength(1);
  });
});

describe('GPU use', () => {
  it('shows memory and utilisation now, their sparklines, and since when', () => {
    const node = <GpuUse usage={makeUsage()} holdsGpus trans={trans} />;
    const text = textOf(node);
    expect(text).toContain(
      `GPU memory ${formatBytes(3 * GiB)} of ${formatBytes(80 * GiB)}`
    );
    expect(text).toContain('utilisation 40%');
    expect(text).toContain(`since ${clockTime(1_700_000_000)}`);
    const lines = findAll(node, by('svg', 'jgc-sparkline'));
    expect(lines.map(svg => svg.props.className)).toEqual([
      'jgc-sparkline jgc-sparkline-memory',
      'jgc-sparkline jgc-sparkline-utilization'
    ]);
  });

  it('says unknown, and why, instead of showing zeros', () => {
    const reason =
      "This server's GPUs are declared by its administrator, not read from the NVIDIA driver, so their use per kernel is unknown.";
    const node = (
      <GpuUse
        usage={makeUsage({ source: 'static', reason, samples: [] })}
        holdsGpus
        trans={trans}
      />
    );
    expect(textOf(node)).toContain('GPU memory and utilisation: unknown');
    expect(textOf(node)).toContain(reason);
    expect(findAll(node, by('svg'))).toEqual([]);
  });

  it('says when a utilisation is not reported', () => {
    const usage = makeUsage({
      samples: [{ at: 1, memory_used: GiB, utilization: null }]
    });
    expect(textOf(<GpuUse usage={usage} holdsGpus trans={trans} />)).toContain(
      'utilisation unknown'
    );
  });
});

describe('the kernel view', () => {
  let streams: FakeEventSource[];
  let request: jest.SpyInstance;

  beforeEach(() => {
    jest.useFakeTimers();
    streams = [];
    request = jest
      .spyOn(ServerConnection, 'makeRequest')
      .mockImplementation(
        async () => new Response(JSON.stringify(makeView()), { status: 200 })
      );
  });

  afterEach(() => {
    jest.useRealTimers();
    jest.restoreAllMocks();
  });

  function createModel(): KernelViewModel {
    return new KernelViewModel({
      kernelId: KERNEL,
      serverSettings: settings,
      trans,
      tail: 50,
      refreshSeconds: 5,
      openEvents: url => {
        const source = new FakeEventSource(url);
        streams.push(source);
        return source;
      }
    });
  }

  it('reads the details and follows the log', async () => {
    const model = createModel();
    model.start();
    await jest.runOnlyPendingTimersAsync();
    expect(String(request.mock.calls[0][0])).toBe(
      `http://localhost:8888/base/gpu-containers/kernels/${KERNEL}`
    );
    expect(model.view?.container?.id).toBe(CONTAINER);
    const [stream] = streams;
    expect(stream.url).toBe(
      `http://localhost:8888/base/gpu-containers/kernels/${KERNEL}/log?tail=50&token=secret`
    );
    expect(model.following).toBe(true);

    stream.emit('container', {
      container_id: CONTAINER,
      started_at: 1,
      last_end: {
        container_id: 'b'.repeat(64),
        exit_code: 137,
        oom_killed: true,
        reason: 'The kernel ran out of memory.',
        at: 1_700_000_000,
        routine: false
      }
    });
    stream.emit('lines', {
      container_id: CONTAINER,
      lines: [
        { time: '2026-11-23T01:00:00.1Z', text: 'NCCL INFO ready' },
        { time: '2026-11-23T01:00:00.2Z', text: 'kv-out' }
      ],
      skipped: 0
    });
    expect(model.entries.map(e => [e.kind, e.text])).toEqual([
      [
        'end',
        `The previous container ended at ${clockTime(1_700_000_000)}: The kernel ran out of memory.`
      ],
      ['line', 'NCCL INFO ready'],
      ['line', 'kv-out']
    ]);

    // A reconnect sends the same container's tail again: in place, not twice.
    stream.emit('container', {
      container_id: CONTAINER,
      started_at: 1,
      last_end: null
    });
    stream.emit('lines', {
      container_id: CONTAINER,
      lines: [{ time: '', text: 'kv-out' }],
      skipped: 2
    });
    expect(model.entries.map(e => e.text)).toEqual([
      `The previous container ended at ${clockTime(1_700_000_000)}: The kernel ran out of memory.`,
      '… 2 lines skipped (the log came faster than it could be shown) …',
      'kv-out'
    ]);

    stream.emit('ended', {
      container_id: CONTAINER,
      exit_code: 3,
      oom_killed: false,
      finished_at: 2,
      reason: 'The container ended with code 3.'
    });
    stream.emit('container', {
      container_id: 'c'.repeat(64),
      started_at: 3,
      last_end: null
    });
    const texts = model.entries.map(e => e.text);
    expect(texts.slice(-2)).toEqual([
      'The container ended with code 3.',
      'The kernel restarted in a new container (cccccccccccc).'
    ]);
    expect(model.entries.slice(-2).map(e => e.kind)).toEqual(['end', 'note']);
    // A restart someone asked for is news, not trouble.
    stream.emit('ended', {
      container_id: 'c'.repeat(64),
      exit_code: 0,
      oom_killed: false,
      finished_at: 4,
      reason: 'The container was stopped for the restart you asked for.',
      routine: true
    });
    expect(model.entries[model.entries.length - 1]).toMatchObject({
      kind: 'note',
      text: 'The container was stopped for the restart you asked for.'
    });

    stream.emit('shutdown', { reason: 'The kernel was shut down.' });
    expect(model.following).toBe(false);
    expect(stream.closed).toBe(true);
    model.dispose();
  });

  it('shows a restart someone asked for as news, not as trouble', async () => {
    const model = createModel();
    model.start();
    await jest.runOnlyPendingTimersAsync();
    streams[0].emit('container', {
      container_id: CONTAINER,
      started_at: 1,
      last_end: {
        container_id: 'b'.repeat(64),
        exit_code: 143,
        oom_killed: false,
        reason:
          'The kernel was restarted: its previous container ended with code 143.',
        at: 1_700_000_000,
        routine: true
      }
    });
    expect(model.entries.map(e => e.kind)).toEqual(['note']);
    model.dispose();
  });

  it('stops following and reading when closed', async () => {
    const model = createModel();
    model.start();
    await jest.runOnlyPendingTimersAsync();
    const reads = request.mock.calls.length;
    model.dispose();
    expect(streams[0].closed).toBe(true);
    await jest.advanceTimersByTimeAsync(60_000);
    expect(request.mock.calls.length).toBe(reads);
    expect(model.following).toBe(false);
  });

  it('says when the stream is gone for good', async () => {
    const model = createModel();
    model.start();
    streams[0].emit('open');
    streams[0].readyState = 2;
    streams[0].emit('error');
    expect(model.following).toBe(false);
    expect(model.entries.map(e => e.text)).toEqual([
      'The log is no longer followed.'
    ]);
    model.dispose();
  });

  it("says why when the stream is refused before it begins, in the server's words", async () => {
    const sentence = 'You may read the log of your own kernels only.';
    const model = createModel();
    model.start();
    request.mockImplementation(async (url: RequestInfo | URL) =>
      String(url).includes('/log?')
        ? new Response(JSON.stringify({ message: sentence }), { status: 403 })
        : new Response(JSON.stringify(makeView()), { status: 200 })
    );
    streams[0].readyState = 2;
    streams[0].emit('error');
    expect(model.following).toBe(false);
    await jest.advanceTimersByTimeAsync(0);
    const asked = request.mock.calls
      .map(call => String(call[0]))
      .filter(url => url.includes('/log?'));
    expect(asked).toEqual([
      `${settings.baseUrl}gpu-containers/kernels/${KERNEL}/log?tail=0&token=secret`
    ]);
    expect(model.entries.map(e => e.text)).toEqual([
      `The log could not be read: ${sentence}`
    ]);
    model.dispose();
  });

  it('shows the digest, container, mounts, phases and last end', async () => {
    request.mockImplementation(
      async () =>
        new Response(
          JSON.stringify(
            makeView({
              last_end: {
                container_id: 'b'.repeat(64),
                exit_code: 3,
                oom_killed: false,
                reason: "The kernel's container exited with code 3.",
                at: 1_700_000_000,
                routine: false
              }
            })
          ),
          { status: 200 }
        )
    );
    const model = createModel();
    await model.refresh();
    const text = textOf(<KernelViewBody model={model} trans={trans} />);
    expect(text).toContain('Kernel of train.ipynb');
    expect(text).toContain('nvcr.io/nvidia/pytorch@sha256:' + '2'.repeat(64));
    expect(text).toContain(`${CONTAINER} (running)`);
    expect(text).toContain('/home/alice/work → /workspace writable');
    expect(text).toContain('/raid/datasets → /data read-only');
    // A cluster's dataset (KubernetesBackend.datasets) says it is one.
    expect(text).toContain(
      'imagenet (claim imagenet) → /datasets/imagenet dataset, read-only'
    );
    expect(text).toContain("the service's → /opt/jgc/packages writable");
    expect(text).toContain('/home/jupyter temporary (tmpfs)');
    expect(text).toContain('GPU 0');
    expect(text).toContain(
      `Container created at ${clockTime(1_700_000_000)} (0.01 s)`
    );
    expect(text).toContain(
      `Kernel answered at ${clockTime(1_700_000_001)} (0.65 s)`
    );
    expect(text).toContain("The kernel's container exited with code 3.");
    model.dispose();
  });

  it('shows what the kernel runs on, and when its notebook pins it', async () => {
    const digest = 'nvcr.io/nvidia/pytorch@sha256:' + '2'.repeat(64);
    request.mockImplementation(
      async () =>
        new Response(
          JSON.stringify(
            makeView({
              image: { ...makeView().image, pinned: digest },
              environment: {
                image: 'nvcr.io/nvidia/pytorch:24.05-py3',
                digest,
                framework: 'PyTorch',
                framework_version: '24.05',
                cuda_version: '12.4.1',
                python_version: '3.10.12',
                gpus: ['Tesla T4'],
                driver_version: '535.104.05',
                verdict: { outcome: 'native', reason: 'runs natively' }
              }
            })
          ),
          { status: 200 }
        )
    );
    const model = createModel();
    await model.refresh();
    const text = textOf(<KernelViewBody model={model} trans={trans} />);
    expect(text).toContain(
      `${digest} (pinned by its notebook: not what the tag names now)`
    );
    expect(text).toContain(
      'PyTorch 24.05 · CUDA 12.4.1 · Python 3.10.12 · runs natively'
    );
    model.dispose();
  });

  it('says "No GPU" in its line as the rest of the extension does', async () => {
    request.mockImplementation(
      async () =>
        new Response(
          JSON.stringify(
            makeView({
              gpus: [],
              environment: {
                image: 'jgc/debian-ipykernel:bookworm',
                digest: '',
                framework: '',
                framework_version: '',
                cuda_version: '',
                python_version: '3.11.2',
                gpus: [],
                driver_version: '',
                verdict: null
              }
            })
          ),
          { status: 200 }
        )
    );
    const model = createModel();
    await model.refresh();
    const text = textOf(<KernelViewBody model={model} trans={trans} />);
    expect(text).toContain('Python 3.11.2 · No GPU');
    expect(text).not.toContain('no GPU');
    model.dispose();
  });

  it('says why the details cannot be read', async () => {
    request.mockImplementation(
      async () =>
        new Response(
          JSON.stringify({
            message:
              'There is no such container kernel of yours on this server.'
          }),
          { status: 404 }
        )
    );
    const model = createModel();
    await model.refresh();
    const alert = findOne(
      <KernelViewBody model={model} trans={trans} />,
      by('p', 'jgc-banner-error')
    );
    expect(textOf(alert)).toBe(
      'There is no such container kernel of yours on this server.'
    );
  });

  it('translates what it shows', async () => {
    const model = createModel();
    await model.refresh();
    const pseudo = pseudoBundle();
    const text = textOf(<KernelViewBody model={model} trans={pseudo} />);
    for (const phrase of [
      'Container log',
      'Mounts',
      'Start phases',
      'GPU use'
    ]) {
      expect(text).toContain(`⟦jupyter_gpu_containers:${phrase}⟧`);
    }
    model.dispose();
  });
});

describe("the panel's kernels", () => {
  function summary(overrides: Partial<IKernelSummary> = {}): IKernelSummary {
    return {
      kernel_id: KERNEL,
      kernel_name: 'gpuc-torch',
      image: 'nvcr.io/nvidia/pytorch:24.05-py3',
      pinned: '',
      notebook: 'train.ipynb',
      execution_state: 'busy',
      container_id: CONTAINER,
      gpus: [{ uuid: 'GPU-0', index: '0', name: 'A100' }],
      datasets: [],
      usage: makeUsage(),
      reclaim: null,
      ...overrides
    };
  }

  it('says what data each kernel sees, and nothing where it sees none', () => {
    const list: IKernelList = {
      kernels: [
        summary({
          datasets: [
            {
              name: 'imagenet',
              target: '/datasets/imagenet',
              read_only: true,
              source: 'claim imagenet'
            },
            {
              name: 'scratch',
              target: '/data/scratch',
              read_only: false,
              source: '/raid/scratch'
            }
          ]
        }),
        summary({ kernel_id: 'k-2', notebook: 'b.ipynb' })
      ],
      reclaimed: [],
      engine_error: ''
    };
    const node = <KernelList list={list} error="" trans={trans} />;
    const lines = findAll(node, by('div', 'jgc-kernel-datasets'));
    expect(lines.map(line => textOf(line))).toEqual([
      'Data: imagenet at /datasets/imagenet (read-only), scratch at /data/scratch'
    ]);
  });

  it('says which kernels run the content their notebook pins, not the tag', () => {
    const pinned = 'nvcr.io/nvidia/pytorch@sha256:' + 'ab'.repeat(32);
    const list: IKernelList = {
      kernels: [summary({ pinned }), summary({ kernel_id: 'k-2' })],
      reclaimed: [],
      engine_error: ''
    };
    const node = <KernelList list={list} error="" trans={trans} />;
    const lines = findAll(node, by('div', 'jgc-kernel-pinned'));
    expect(lines.map(line => textOf(line))).toEqual([
      'Pinned by its notebook to sha256:abababababab, not what the tag names now'
    ]);
    expect(lines[0].props.title).toBe(pinned);
  });

  it('lists each kernel with its GPU use and opens its view', () => {
    const open = jest.fn();
    const list: IKernelList = {
      kernels: [summary()],
      reclaimed: [],
      engine_error: ''
    };
    const node = <KernelList list={list} error="" trans={trans} open={open} />;
    const text = textOf(node);
    expect(text).toContain('Your kernels');
    expect(text).toContain('train.ipynb');
    expect(text).toContain('pytorch:24.05-py3 · GPU 0');
    expect(findAll(node, by('svg'))).toHaveLength(2);
    findOne(node, by('button', 'jgc-link-button')).props.onClick();
    expect(open).toHaveBeenCalledWith(KERNEL);
  });

  it('names the GPUs a cluster gave a kernel, which the host ledger does not hold', () => {
    const cluster = slurmClusterView();
    const node = (
      <KernelList
        list={{
          kernels: [summary({ kernel_id: 'k-slurm', gpus: [] })],
          reclaimed: [],
          engine_error: ''
        }}
        error=""
        trans={trans}
        cluster={cluster}
      />
    );
    expect(textOf(node)).toContain('pytorch:24.05-py3 · GPU 2');
    expect(textOf(node)).not.toContain('Holds no GPU.');
  });

  it("says an administrator's notice in its kernel's row, or in a row of its own", () => {
    const notice = (kernel_id: string, action: 'release' | 'shutdown') => ({
      kernel_id,
      user: 'alice',
      action,
      reason: 'The lab needs the GPU.',
      by: 'teacher',
      at: '2030-01-01T10:00:00+00:00',
      message: 'In English.'
    });
    const node = (
      <KernelList
        list={{ kernels: [summary()], reclaimed: [], engine_error: '' }}
        error=""
        trans={trans}
        notices={[
          notice(KERNEL, 'release'),
          notice('gone-kernel-0000', 'shutdown')
        ]}
      />
    );
    const rows = findAll(node, by('li', 'jgc-your-kernel'));
    expect(rows).toHaveLength(2);
    expect(textOf(rows[0])).toContain(
      `teacher gave back the GPUs of your kernel ${KERNEL.slice(0, 8)}, which restarted without GPUs (its variables are lost): The lab needs the GPU.`
    );
    expect(rows[1].props['data-kernel-id']).toBe('gone-kernel-0000');
    expect(textOf(rows[1])).toBe(
      'teacher shut down your kernel gone-ker: The lab needs the GPU.'
    );
  });

  it("offers a warned kernel's user to keep its GPUs, within the bounds, and says why not", () => {
    const warned = (times_left: number) =>
      summary({
        reclaim: {
          kernel_id: KERNEL,
          state: 'warned',
          idle_since: '2030-01-01T10:00:00Z',
          release_at: '2030-01-01T10:40:00Z',
          reclaimed_at: null,
          action: 'restart-without-gpus',
          message: '',
          gpus: ['GPU-0'],
          user: 'alice',
          notebook: 'train.ipynb',
          kept_until: null,
          keeps: 2 - times_left,
          keep: { min_minutes: 15, max_minutes: 120, times_left }
        }
      });
    const keep = jest.fn();
    const choose = jest.fn();
    const list = (
      times_left: number,
      states = new Map<string, IKeepState>()
    ) => (
      <KernelList
        list={{
          kernels: [warned(times_left)],
          reclaimed: [],
          engine_error: ''
        }}
        error=""
        trans={trans}
        keeping={{ states, choose, keep }}
      />
    );
    const node = list(2);
    const select = findOne(node, by('select', 'jgc-keep-minutes'));
    expect(findAll(select, by('option')).map(textOf)).toEqual([
      '15 minutes',
      '30 minutes',
      '1 hour',
      '2 hours'
    ]);
    expect(select.props.value).toBe('30');
    select.props.onChange({ currentTarget: { value: '60' } });
    expect(choose).toHaveBeenCalledWith(KERNEL, 60);
    findOne(node, by('button', 'jgc-keep-button')).props.onClick();
    expect(keep).toHaveBeenCalledWith(KERNEL, 30);
    // The length chosen, a keep under way, the server's refusal.
    const chosen = list(
      2,
      new Map([[KERNEL, { minutes: 120, busy: true, error: 'Too late.' }]])
    );
    expect(findOne(chosen, by('select', 'jgc-keep-minutes')).props.value).toBe(
      '120'
    );
    expect(
      findOne(chosen, by('button', 'jgc-keep-button')).props.disabled
    ).toBe(true);
    expect(textOf(findOne(chosen, by('div', 'jgc-error')))).toBe('Too late.');
    // Kept as often as allowed: said, not offered.
    const spent = list(0);
    expect(findAll(spent, by('button', 'jgc-keep-button'))).toHaveLength(0);
    expect(textOf(spent)).toContain(
      'You kept them as often as the administrator allows; only GPU use keeps them now.'
    );
    // Without a keep offer (keeps off, or an older server): nothing.
    const none = (
      <KernelList
        list={{
          kernels: [
            summary({ reclaim: { ...warned(1).reclaim!, keep: null } })
          ],
          reclaimed: [],
          engine_error: ''
        }}
        error=""
        trans={trans}
        keeping={{ states: new Map(), choose, keep }}
      />
    );
    expect(findAll(none, by('div', 'jgc-keep'))).toHaveLength(0);
    expect(textOf(none)).not.toContain('as often as');
  });

  it('says when there is none, or why they are unknown', () => {
    expect(
      textOf(
        <KernelList
          list={{ kernels: [], reclaimed: [], engine_error: '' }}
          error=""
          trans={trans}
        />
      )
    ).toContain('You have no container kernel running.');
    expect(
      textOf(<KernelList list={null} error="No server." trans={trans} />)
    ).toContain('No server.');
  });
});
