/**
 * format.ts's byte sizes, and the words of every pure helper module (format.ts, imageformat.ts,
 * gpuformat.ts, gpuchoices.ts, status.ts) through the extension's translation bundle.
 */
import { formatBytes } from '../format';
import { gpuChoices } from '../gpuchoices';
import { describeNoGpus, gpuListLabel, holderLabel } from '../gpuformat';
import {
  frameworkLabel,
  launchBlocker,
  pullProgressText,
  verdictBadge
} from '../imageformat';
import { engineProblem } from '../status';
import {
  makeGpu,
  makeHolder,
  makePull,
  makeReport,
  makeRow,
  makeStatus
} from './fixtures';
import { pseudoBundle } from './pseudo';

describe('formatBytes', () => {
  it.each<[number | null | undefined, string]>([
    [null, '—'],
    [undefined, '—'],
    [NaN, '—'],
    [Infinity, '—'],
    [-Infinity, '—'],
    [-5, '0 B'],
    [0, '0 B'],
    [1, '1 B'],
    [1023, '1023 B'],
    [1024, '1 KiB'],
    [1536, '1.5 KiB'],
    [1264, '1.23 KiB'],
    [102_395, '100 KiB'],
    // Rounds to 1024 KiB: the next unit.
    [1_048_570, '1 MiB'],
    [1_048_576, '1 MiB'],
    [12_897_485, '12.3 MiB'],
    [300 * 2 ** 20, '300 MiB'],
    [300_000_000, '286 MiB'],
    [2 ** 30 - 1, '1 GiB'],
    [1.5 * 2 ** 30, '1.5 GiB'],
    // A 32 GiB card (a V100-SXM2-32GB): not "34.4 GB".
    [34_359_738_368, '32 GiB'],
    [80 * 2 ** 30, '80 GiB'],
    [80_000_000_000, '74.5 GiB'],
    [2 ** 40, '1 TiB'],
    [2 ** 50, '1024 TiB'],
    [1e15, '909 TiB']
  ])('formats %p as %p', (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });
});

describe('translation', () => {
  const pseudo = pseudoBundle();
  const t = (text: string) => `⟦jupyter_gpu_containers:${text}⟧`;

  it("writes people's words through the extension's bundle", () => {
    expect(verdictBadge(pseudo, 'native').label).toBe(t('verdict|Compatible'));
    expect(launchBlocker(pseudo, makeRow({ pulled: false }))).toBe(
      t('Not on this host yet: pull it first.')
    );
    expect(holderLabel(pseudo, makeHolder({ mine: true }))).toBe(
      t('Your kernel')
    );
    expect(gpuListLabel(pseudo, ['0', '1'])).toBe(t('GPUs 0,1'));
    expect(describeNoGpus(pseudo, null)).toBe(
      t(
        'GPUs are unknown: the server has not answered. CPU kernels still work.'
      )
    );
    // The server's reason is its own sentence, inside the translated one.
    expect(
      describeNoGpus(
        pseudo,
        makeReport([], { source: 'none', reason: 'No NVML.' })
      )
    ).toBe(t('No NVML. CPU kernels still work.'));
    expect(engineProblem(pseudo, makeStatus({ ok: false, message: '' }))).toBe(
      t('The container engine at unix:///var/run/docker.sock is unreachable.')
    );
    expect(pullProgressText(pseudo, makePull())).toBe(
      t('Downloading 114 MiB of 286 MiB (40%)')
    );
    const report = makeReport([makeGpu('0'), makeGpu('1', [makeHolder()])]);
    expect(
      gpuChoices(pseudo, report, makeRow()).map(c => [c.label, c.reason])
    ).toEqual([
      [t('No GPU'), ''],
      [t('1 GPU'), ''],
      [t('2 GPUs'), t('Only 1 GPU is free.')],
      [t('GPU 0 only (NVIDIA A100-SXM4-80GB)'), ''],
      [t('GPU 1 only (NVIDIA A100-SXM4-80GB)'), t('GPU 1 is taken.')]
    ]);
  });

  it("keeps the server's sentences, names and numbers as they are", () => {
    expect(
      launchBlocker(pseudo, makeRow({ allowed: false, allowed_reason: 'No.' }))
    ).toBe('No.');
    expect(holderLabel(pseudo, makeHolder({ user: 'bob' }))).toBe('bob');
    expect(
      pullProgressText(pseudo, makePull({ state: 'error', message: 'Gone.' }))
    ).toBe('Gone.');
    expect(formatBytes(1.5 * 2 ** 30)).toBe('1.5 GiB');
    expect(frameworkLabel(makeRow())).toBe('PyTorch 24.05 (2.4.0a0)');
  });
});
