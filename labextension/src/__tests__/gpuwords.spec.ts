/**
 * The words for "no GPU" (gpuwords.ts): one spelling everywhere, "No GPU" as
 * a label (an option, the toolbar, the kernel lists), "no GPU" inside a
 * sentence. The panel's options once said "No GPU" beside the toolbar's
 * "no GPU".
 */
import { gpuChoices } from '../gpuchoices';
import { gpuListLabel } from '../gpuformat';
import { gpusLabel } from '../gpuuse';
import { noGpuText } from '../gpuwords';
import { translationBundle } from '../i18n';
import { describeStamp } from '../stampformat';
import { makeReport, makeRow, slurmClusterView } from './fixtures';
import { pseudoBundle } from './pseudo';

const trans = translationBundle();

describe('noGpuText', () => {
  it('is "No GPU" as a label and "no GPU" inside a sentence', () => {
    expect(noGpuText(trans)).toBe('No GPU');
    expect(noGpuText(trans, 'label')).toBe('No GPU');
    expect(noGpuText(trans, 'sentence')).toBe('no GPU');
  });

  it('is what every label without a GPU says, through one translation', () => {
    for (const bundle of [trans, pseudoBundle()]) {
      const labels = [
        gpuChoices(bundle, makeReport([]), makeRow())[0].option,
        gpuChoices(bundle, null, makeRow(), '', false, slurmClusterView())[0]
          .option,
        gpusLabel(bundle, []),
        gpuListLabel(bundle, [])
      ];
      expect(labels).toEqual(labels.map(() => noGpuText(bundle)));
    }
  });

  it('is in lower case inside a sentence', () => {
    const stamp = {
      image: 'jgc/debian-ipykernel:bookworm',
      digest: '',
      framework: '',
      framework_version: '',
      cuda_version: '',
      python_version: '3.11.2',
      gpus: [],
      driver_version: '',
      verdict: null
    };
    expect(describeStamp(trans, stamp)).toMatch(/; no GPU$/);
    expect(gpuListLabel(trans, [], 'sentence')).toBe('no GPU');
  });
});
