/**
 * Every word the extension shows goes through JupyterLab's translator: the
 * panel, the picker and the login form are drawn (to HTML, without a DOM)
 * with a pseudo-translation that marks what it translates, and every text
 * and tooltip they show must be one whole translated sentence (no sentence
 * glued to another or to a word outside the translator), or the server's own
 * data (references, names, versions, the server's sentences), or
 * punctuation.
 */
import * as React from 'react';
import { renderToStaticMarkup } from 'react-dom/server';

import { IPanelActions, GpuContainersPanel } from '../panel';
import { LoginFields } from '../credentials';
import { PickerForm } from '../picker';
import { formatBytes } from '../format';
import { imageNames, shortImageName } from '../imageformat';
import type { GpuContainersModel } from '../model';
import { IClusterView, IGpuReport, IStatus } from '../gputypes';
import { ICatalog, IPull } from '../imagetypes';
import {
  clusterView,
  makeCatalog,
  makeGpu,
  makeHolder,
  makePull,
  makeReport,
  makeRow,
  makeStatus
} from './fixtures';
import { pseudoBundle } from './pseudo';

jest.mock('@jupyterlab/ui-components', () => {
  const icon = { react: () => null };
  return {
    ReactWidget: class {
      title: Record<string, unknown> = {};
      addClass(): void {
        // Nothing to style without a DOM.
      }
    },
    UseSignal: (props: { children: () => unknown }) => props.children(),
    refreshIcon: icon,
    searchIcon: icon
  };
});
jest.mock('@jupyterlab/apputils', () => ({}));
jest.mock('../icon', () => ({ gpuContainersIcon: { react: () => null } }));
// The kernels section reads the server when it is mounted; its own tests
// cover its words.
jest.mock('../yourkernels', () => ({ YourKernels: () => null }));

const DOMAIN = 'jupyter_gpu_containers';
const trans = pseudoBundle(DOMAIN);

/**
 * What a page shows of some HTML: its texts and the tooltips and labels
 * people read (`<wbr>` joins the parts of a name, as on the page).
 */
export function shownTexts(html: string): string[] {
  const page = html.replace(/<wbr\/?>/g, '');
  const decode = (text: string): string =>
    text
      .replace(/&lt;/g, '<')
      .replace(/&gt;/g, '>')
      .replace(/&quot;/g, '"')
      .replace(/&#x27;/g, "'")
      .replace(/&#39;/g, "'")
      .replace(/&amp;/g, '&');
  const texts: string[] = [];
  for (const match of page.matchAll(
    /\s(?:title|aria-label|placeholder|aria-valuetext|alt)="([^"]*)"/g
  )) {
    texts.push(decode(match[1]));
  }
  for (const match of page.matchAll(/>([^<]+)</g)) {
    texts.push(decode(match[1]));
  }
  return texts.map(text => text.trim()).filter(Boolean);
}

/**
 * Whether `text` is one whole translated string: a mark from the first
 * character to the last.
 */
function isOneMark(text: string): boolean {
  if (!text.startsWith(`⟦${DOMAIN}:`) || !text.endsWith('⟧')) {
    return false;
  }
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    depth += text[i] === '⟦' ? 1 : text[i] === '⟧' ? -1 : 0;
    if (depth === 0 && i < text.length - 1) {
      return false;
    }
  }
  return depth === 0;
}

/**
 * The texts of `html` that are neither one translated string nor data and
 * punctuation alone.
 */
export function untranslated(html: string, data: string[]): string[] {
  // Longest first: a reference before the name inside it.
  const known = [...new Set(data.filter(d => d.trim().length > 1))].sort(
    (a, b) => b.length - a.length
  );
  return shownTexts(html).filter(text => {
    if (isOneMark(text)) {
      return false;
    }
    let rest = text;
    for (const value of known) {
      rest = rest.split(value).join(' ');
    }
    // Nothing but numbers, units and punctuation left. A mark left here was
    // glued to something else.
    return !/^(?:[\s\d.,:;·—–()/%+\-@_|]|KiB|MiB|GiB|TiB|B)*$/.test(rest);
  });
}

/**
 * Every string of a document, and what the panel makes of references and
 * numbers: the data a page may show untranslated.
 */
function dataOf(...documents: unknown[]): string[] {
  const out: string[] = [];
  const walk = (value: unknown): void => {
    if (typeof value === 'string') {
      out.push(value);
    } else if (typeof value === 'number') {
      out.push(formatBytes(value));
    } else if (Array.isArray(value)) {
      value.forEach(walk);
    } else if (value && typeof value === 'object') {
      Object.values(value).forEach(walk);
    }
  };
  documents.forEach(walk);
  const references = out.filter(text => /[:/]/.test(text));
  out.push(...references.map(shortImageName));
  out.push(...imageNames(references).values());
  // A framework's name, and `Python` for the images without one.
  out.push('Python');
  return out;
}

const torch = makeRow();
const torchMirror = makeRow({
  reference: 'registry.example/mirror/pytorch:24.05-py3',
  kernel_name: 'gpuc-mirror'
});
const cpu = makeRow({
  reference: 'jgc/debian-ipykernel:bookworm',
  framework: '',
  framework_release: '',
  framework_version: '',
  frameworks: {},
  cuda_version: '',
  python_version: '3.11',
  gpu: false,
  verdict: { outcome: 'cpu-only', reason: 'A CPU build.', needed_driver: '' },
  kernel_name: 'gpuc-debian'
});
const checking = makeRow({
  reference: 'example/checking:1',
  kernel_ready: null,
  kernel_name: 'gpuc-checking'
});
const broken = makeRow({
  reference: 'jgc-test/no-ipykernel:latest',
  kernel_name: 'gpuc-broken',
  kernel_ready: false,
  kernel_ready_reason: ''
});
const notPulled = makeRow({
  reference: 'nvcr.io/nvidia/tensorflow:24.05-tf2-py3',
  framework: 'TensorFlow',
  pulled: false,
  size: null,
  kernel_name: '',
  kernel_ready: null
});
const pulling = makeRow({
  reference: 'tensorflow/tensorflow:2.15.0-gpu',
  pulled: false,
  kernel_name: ''
});
const failed = makeRow({
  reference: 'tensorflow/tensorflow:2.15.0-gpu-jupyter',
  pulled: false,
  kernel_name: ''
});
const refused = makeRow({
  reference: 'docker.io/library/forbidden:1',
  allowed: false,
  allowed_reason: '',
  kernel_name: ''
});
const tooNew = makeRow({
  reference: 'nvcr.io/nvidia/pytorch:25.10-py3',
  verdict: {
    outcome: 'cannot-run',
    reason: 'CUDA 13.0 needs driver 580.',
    needed_driver: '580'
  },
  kernel_name: 'gpuc-new'
});
const images = [
  torch,
  torchMirror,
  cpu,
  checking,
  broken,
  notPulled,
  pulling,
  failed,
  refused,
  tooNew
];

const pulls = new Map<string, IPull>([
  [pulling.reference, makePull({ image: pulling.reference })],
  [
    failed.reference,
    makePull({ image: failed.reference, state: 'error', message: '' })
  ],
  ['queued/image:1', makePull({ image: 'queued/image:1', state: 'queued' })]
]);

const reports: Array<[string, IGpuReport | null]> = [
  ['no report yet', null],
  [
    'NVML GPUs, held by me, by a kernel of mine and by others',
    makeReport([
      makeGpu('0', [
        makeHolder({
          mine: true,
          kernel_id: 'k-1',
          notebook: 'work/train.ipynb',
          image: torch.reference
        })
      ]),
      makeGpu('1', [makeHolder({ mine: true, kernel_id: 'k-2' })]),
      makeGpu('2', [makeHolder(), makeHolder({ user: 'bob' })], {
        utilization: null,
        memory_used: null
      }),
      makeGpu('3', [], { memory_total: 0, memory_used: null })
    ])
  ],
  [
    'a static inventory',
    makeReport(
      [
        makeGpu('0', [], {
          memory_total: 34_359_738_368,
          memory_used: null,
          utilization: null
        })
      ],
      { source: 'static', cuda_driver_version: '' }
    )
  ],
  [
    'holders unknown without the engine',
    makeReport([makeGpu('0')], { engine_error: 'No engine.' })
  ],
  [
    'no GPUs, with the reason',
    makeReport([], {
      source: 'none',
      reason:
        'No NVIDIA driver library (libnvidia-ml.so) on this host, so no GPUs are listed. CPU kernels still work.',
      driver_version: ''
    })
  ],
  [
    "booked among the user's own kernels (rootless Podman)",
    makeReport([makeGpu('0', [makeHolder({ mine: true })])], {
      ledger_scope: 'user'
    })
  ],
  ['no GPUs, no reason', makeReport([], { source: 'none', reason: '' })],
  ['an empty static inventory', makeReport([], { source: 'static' })]
];

function model(state: {
  status?: IStatus | null;
  statusError?: string;
  gpus?: IGpuReport | null;
  gpuError?: string;
  catalog?: ICatalog | null;
  catalogError?: string;
  loadingImages?: boolean;
  cluster?: IClusterView | null;
}): GpuContainersModel {
  return {
    status: makeStatus(),
    statusError: '',
    gpus: null,
    gpuError: '',
    catalog: null,
    catalogError: '',
    loadingImages: false,
    cluster: null,
    pulls,
    serverSettings: {},
    changed: {},
    ...state
  } as unknown as GpuContainersModel;
}

const actions: IPanelActions = {
  launch: jest.fn(),
  pull: jest.fn(),
  cancel: jest.fn(),
  openNotebook: jest.fn()
};

function drawPanel(state: Parameters<typeof model>[0]): string {
  const panel = new GpuContainersPanel(model(state), actions, trans);
  return renderToStaticMarkup(panel.render());
}

describe('the pseudo-translation check', () => {
  it('finds words outside the translator, and sentences glued together', () => {
    const t = (text: string) => `⟦${DOMAIN}:${text}⟧`;
    expect(
      untranslated(
        `<p>Hello world</p><p>${t('Fine.')}</p><b title="Untranslated tip">${t('x')}</b>` +
          `<i>${t('One.')} ${t('Two.')}</i><i>${t('GPUs')}: 4</i><i>nvcr.io/x:1 · 4 GiB</i>` +
          `<i>${t('Outer %1').replace('%1', t('inner'))}</i><s>pytorch:<wbr/>24.05</s>`,
        ['nvcr.io/x:1', 'pytorch:24.05']
      )
    ).toEqual([
      'Untranslated tip',
      'Hello world',
      `${t('One.')} ${t('Two.')}`,
      `${t('GPUs')}: 4`
    ]);
  });

  it('reads a rendered component as the page shows it', () => {
    expect(
      shownTexts(
        renderToStaticMarkup(
          <div title={'a "quoted" <tip> & more'}>
            {'one'}
            {'two'}
            <wbr />
            {'three'}
          </div>
        )
      )
    ).toEqual(['a "quoted" <tip> & more', 'onetwothree']);
  });
});

describe('every string of the panel goes through the translator', () => {
  it.each(reports)('GPUs: %s', (_, gpus) => {
    const html = drawPanel({ gpus, catalog: makeCatalog(images) });
    expect(
      untranslated(html, dataOf(gpus, images, [...pulls.values()]))
    ).toEqual([]);
    // It did draw the GPUs' part.
    expect(html).toContain('jgc-gpu-section');
  });

  it.each<[string, Parameters<typeof model>[0]]>([
    [
      'the engine unreachable',
      { status: makeStatus({ ok: false, message: '' }) }
    ],
    [
      "the engine's own sentence",
      { status: makeStatus({ ok: false, message: 'Docker is down' }) }
    ],
    ['the status unreadable', { statusError: 'The server is gone.' }],
    ['a GPU error, no report', { gpuError: 'GPUs unreadable.' }],
    ['reading the images', { loadingImages: true }],
    ['no images yet', {}],
    ['a catalog error', { catalogError: 'No catalog.' }],
    [
      'a catalog and an error',
      { catalog: makeCatalog(images), catalogError: 'Stale.' }
    ],
    ['an empty catalog', { catalog: makeCatalog([]) }],
    [
      'a catalog without an engine',
      {
        catalog: { ...makeCatalog(images), engine_error: 'No engine.' },
        status: makeStatus({ ok: false, message: '' }),
        gpus: reports[1][1]
      }
    ]
  ])('%s', (_, state) => {
    const html = drawPanel(state);
    expect(
      untranslated(
        html,
        dataOf(
          state,
          images,
          [...pulls.values()],
          [
            'Docker is down',
            'The server is gone.',
            'GPUs unreadable.',
            'No catalog.',
            'Stale.'
          ]
        )
      )
    ).toEqual([]);
  });
});

describe("the GPUs' part says whose kernels it counts", () => {
  it("says so where the ledger is the user's own kernels only, and only there", () => {
    const own = reports.find(([name]) => name.includes('own kernels'));
    expect(own).toBeDefined();
    expect(drawPanel({ gpus: own![1] })).toContain('jgc-own-ledger');
    expect(drawPanel({ gpus: reports[1][1] })).not.toContain('jgc-own-ledger');
  });
});

describe('every string of the Cluster section goes through the translator', () => {
  it.each<[string, IClusterView]>([
    ['pools, holders and verdicts', clusterView()],
    ['no GPU nodes', { ...clusterView(), pools: [] }],
    [
      'the API unreachable',
      { ...clusterView(), pools: [], engine_error: 'The API is down.' }
    ]
  ])('%s', (_, cluster) => {
    const html = drawPanel({ cluster });
    expect(html).toContain('jgc-cluster-section');
    expect(untranslated(html, dataOf(cluster, images))).toEqual([]);
  });

  it('is not drawn on Docker', () => {
    const html = drawPanel({
      cluster: { backend: 'docker', pools: [], engine_error: '' }
    });
    expect(html).not.toContain('jgc-cluster-section');
  });
});

describe('every string of the picker goes through the translator', () => {
  const offered = [torch, torchMirror, cpu, checking, broken, tooNew];
  it.each<[string, string, string, IGpuReport | null]>([
    ['a GPU image, GPUs free', torch.kernel_name, 'count:1', reports[1][1]],
    [
      'a choice that cannot be had',
      torch.kernel_name,
      'count:4',
      reports[1][1]
    ],
    ['a CPU image', cpu.kernel_name, 'count:0', reports[1][1]],
    ['no GPUs', torch.kernel_name, 'count:0', reports[4][1]],
    ['no report', torch.kernel_name, 'count:0', null],
    ['nothing chosen', '', 'count:0', reports[2][1]]
  ])('%s', (_, kernelName, choice, report) => {
    for (const query of ['', 'cuda 12', 'nothing-like-it']) {
      const html = renderToStaticMarkup(
        <PickerForm
          rows={offered}
          report={report}
          kernelId=""
          kernelName={kernelName}
          choice={choice}
          query={query}
          onChange={jest.fn()}
          onSearch={jest.fn()}
          trans={trans}
        />
      );
      expect(untranslated(html, dataOf(offered, report, query))).toEqual([]);
    }
  });
});

describe('every string of the login form goes through the translator', () => {
  it.each(['nvcr.io', 'registry.example'])('for %s', registry => {
    const html = renderToStaticMarkup(
      <LoginFields
        registry={registry}
        reason="unauthorized: authentication required"
        trans={trans}
        state={{ username: 'me', password: 'secret', remember: true }}
        change={jest.fn()}
      />
    );
    expect(
      untranslated(html, [
        registry,
        'unauthorized: authentication required',
        'me'
      ])
    ).toEqual([]);
  });
});
