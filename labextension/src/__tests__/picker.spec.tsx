import * as React from 'react';

import { translationBundle } from '../i18n';
import { ImagePicker, PickerForm, pickerValue } from '../picker';
import { by, findAll, findOne, textOf } from './elements';
import { makeGpu, makeHolder, makeReport, makeRow } from './fixtures';

// The JupyterLab UI packages need a DOM, which the node test environment does
// not have.
jest.mock('@jupyterlab/ui-components', () => ({
  ReactWidget: class {
    addClass(): void {
      // Nothing to style in node.
    }
  }
}));
jest.mock('@jupyterlab/apputils', () => ({}));

const trans = translationBundle();

const torch = makeRow();
const debian = makeRow({
  reference: 'jgc/debian-ipykernel:bookworm',
  framework: '',
  framework_release: '',
  framework_version: '',
  python_version: '3.11',
  gpu: false,
  verdict: { outcome: 'cpu-only', reason: 'A CPU build.', needed_driver: '' },
  kernel_name: 'gpuc-debian'
});
const broken = makeRow({
  reference: 'jgc-test/no-ipykernel:latest',
  kernel_name: 'gpuc-broken',
  kernel_ready: false,
  kernel_ready_reason: 'No ipykernel in the image.'
});
const remote = makeRow({
  reference: 'nvcr.io/nvidia/tensorflow:24.05-tf2-py3',
  pulled: false,
  kernel_name: ''
});
const rows = [torch, debian, broken, remote];
const mine = makeHolder({ mine: true, kernel_id: 'k-1' });
const report = makeReport([makeGpu('0', [mine]), makeGpu('1')]);

describe('ImagePicker', () => {
  it("starts on the notebook's image and its GPU count", () => {
    const picker = new ImagePicker(
      rows,
      report,
      'gpuc-debian',
      'k-1',
      1,
      trans
    );
    expect(picker.state).toEqual({
      kernelName: 'gpuc-debian',
      choice: 'count:1'
    });
    expect(picker.getValue()).toEqual({
      kernelName: 'gpuc-debian',
      gpus: 1,
      problem: 'This image is a CPU build: it cannot use GPUs.'
    });
  });

  it('starts on the first image that can run a kernel otherwise', () => {
    for (const current of ['', 'gpuc-broken', 'gone']) {
      const picker = new ImagePicker(rows, report, current, '', 0, trans);
      expect(picker.state).toEqual({
        kernelName: torch.kernel_name,
        choice: 'count:0'
      });
    }
    expect(
      new ImagePicker([broken], null, '', '', 0, trans).state.kernelName
    ).toBe('');
  });
});

describe('pickerValue', () => {
  it('gives the kernel and the GPU request', () => {
    expect(
      pickerValue(trans, rows, report, 'k-1', {
        kernelName: torch.kernel_name,
        choice: 'count:2'
      })
    ).toEqual({ kernelName: torch.kernel_name, gpus: 2, problem: '' });
    expect(
      pickerValue(trans, rows, report, 'k-1', {
        kernelName: torch.kernel_name,
        choice: 'id:GPU-1'
      })
    ).toEqual({ kernelName: torch.kernel_name, gpus: ['GPU-1'], problem: '' });
  });

  it('says why a choice cannot be made', () => {
    expect(
      pickerValue(trans, rows, report, '', {
        kernelName: 'gone',
        choice: 'count:0'
      })
    ).toEqual({
      kernelName: '',
      gpus: null,
      problem: 'Choose an image that can run a kernel.'
    });
    // Without the notebook's kernel, its GPU is not free.
    expect(
      pickerValue(trans, rows, report, '', {
        kernelName: torch.kernel_name,
        choice: 'count:2'
      }).problem
    ).toBe('Only 1 GPU is free.');
    expect(
      pickerValue(trans, rows, report, '', {
        kernelName: 'gpuc-broken',
        choice: 'count:0'
      }).problem
    ).toBe('No ipykernel in the image.');
  });

  it('falls back to no GPU for a choice that is not offered', () => {
    expect(
      pickerValue(trans, rows, report, 'k-1', {
        kernelName: torch.kernel_name,
        choice: 'id:GPU-9'
      })
    ).toEqual({ kernelName: torch.kernel_name, gpus: 0, problem: '' });
  });
});

describe('PickerForm', () => {
  function form(kernelName: string, choice: string, onChange = jest.fn()) {
    return (
      <PickerForm
        rows={rows}
        report={report}
        kernelId=""
        kernelName={kernelName}
        choice={choice}
        onChange={onChange}
        trans={trans}
      />
    );
  }

  it('offers the pulled images, those that cannot run disabled with why', () => {
    const tree = form(torch.kernel_name, 'count:1');
    const images = findOne(tree, by('select', 'jgc-picker-image'));
    expect(images.props.value).toBe(torch.kernel_name);
    expect(
      findAll(images, by('option')).map(option => [
        option.props.value,
        option.props.disabled,
        textOf(option)
      ])
    ).toEqual([
      [torch.kernel_name, false, 'pytorch:24.05-py3 — PyTorch 24.05 (2.4.0a0)'],
      ['gpuc-debian', false, 'debian-ipykernel:bookworm — Python 3.11'],
      [
        'gpuc-broken',
        true,
        'no-ipykernel:latest — PyTorch 24.05 (2.4.0a0) (No ipykernel in the image.)'
      ]
    ]);
    expect(textOf(findOne(tree, by('p', 'jgc-picker-verdict')))).toBe(
      torch.verdict.reason
    );
    expect(
      findAll(tree, by('label')).map(label => textOf(label).split('\n')[0])
    ).toEqual([
      expect.stringMatching(/^Image/),
      expect.stringMatching(/^GPUs/)
    ]);
  });

  it('offers the GPU choices, and says why the chosen one cannot be had', () => {
    const tree = form(torch.kernel_name, 'count:2');
    const gpus = findOne(tree, by('select', 'jgc-picker-gpus'));
    expect(gpus.props.value).toBe('count:2');
    expect(
      findAll(gpus, by('option')).map(option => [
        option.props.value,
        textOf(option)
      ])
    ).toEqual([
      ['count:0', 'No GPU'],
      ['count:1', '1 GPU'],
      ['count:2', '2 GPUs — Only 1 GPU is free.'],
      ['id:GPU-0', 'GPU 0 only (NVIDIA A100-SXM4-80GB) — GPU 0 is taken.'],
      ['id:GPU-1', 'GPU 1 only (NVIDIA A100-SXM4-80GB)']
    ]);
    expect(textOf(findOne(tree, by('p', 'jgc-error')))).toBe(
      'Only 1 GPU is free.'
    );
  });

  it('reports each change with the other choice', () => {
    const onChange = jest.fn();
    const tree = form(torch.kernel_name, 'count:1', onChange);
    findOne(tree, by('select', 'jgc-picker-image')).props.onChange({
      target: { value: 'gpuc-debian' }
    });
    findOne(tree, by('select', 'jgc-picker-gpus')).props.onChange({
      target: { value: 'count:0' }
    });
    expect(onChange.mock.calls).toEqual([
      ['gpuc-debian', 'count:1'],
      [torch.kernel_name, 'count:0']
    ]);
  });
});
