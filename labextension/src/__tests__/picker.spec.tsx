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
      choice: 'count:1',
      query: ''
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
        choice: 'count:0',
        query: ''
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
    // Each option's tooltip is the full reference, and why it cannot run.
    expect(findAll(images, by('option')).map(o => o.props.title)).toEqual([
      `${torch.reference}\n${torch.verdict.reason}`,
      `${debian.reference}\n${debian.verdict.reason}`,
      `${broken.reference}\nNo ipykernel in the image.`
    ]);
    expect(textOf(findOne(tree, by('p', 'jgc-picker-verdict')))).toBe(
      torch.verdict.reason
    );
    // The chosen image's whole reference, under the list.
    expect(textOf(findOne(tree, by('p', 'jgc-picker-ref')))).toBe(
      torch.reference
    );
    expect(
      findAll(tree, by('label')).map(label => textOf(label).split('\n')[0])
    ).toEqual([
      expect.stringMatching(/^Search/),
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
      ['count:2', '2 GPUs (only 1 free)'],
      ['id:GPU-0', 'GPU 0 only (NVIDIA A100-SXM4-80GB, taken)'],
      ['id:GPU-1', 'GPU 1 only (NVIDIA A100-SXM4-80GB)']
    ]);
    expect(textOf(findOne(tree, by('p', 'jgc-error')))).toBe(
      'Only 1 GPU is free.'
    );
    // The whole reason, in the chosen one's and each option's tooltip, and
    // to assistive technology.
    expect(gpus.props.title).toBe('Only 1 GPU is free.');
    expect(
      findAll(gpus, by('option')).map(option => [
        option.props.title,
        option.props['aria-label']
      ])
    ).toEqual([
      ['', 'No GPU'],
      ['', '1 GPU'],
      ['Only 1 GPU is free.', '2 GPUs — Only 1 GPU is free.'],
      [
        'GPU 0 is taken.',
        'GPU 0 only (NVIDIA A100-SXM4-80GB) — GPU 0 is taken.'
      ],
      ['', 'GPU 1 only (NVIDIA A100-SXM4-80GB)']
    ]);
  });

  it("keeps a long reason out of the option's text, whole in its tooltip", () => {
    // A narrow select cut "1 GPU — Over your limit of 1 GPU per user." at
    // "1 GPU — Over your l".
    const capped = makeReport([makeGpu('0', [mine]), makeGpu('1')], {
      max_gpus_per_user: 1
    });
    const gpus = findOne(
      <PickerForm
        rows={rows}
        report={capped}
        kernelId=""
        kernelName={torch.kernel_name}
        choice="count:1"
        onChange={jest.fn()}
        trans={trans}
      />,
      by('select', 'jgc-picker-gpus')
    );
    const one = findAll(gpus, by('option'))[1];
    const sentence =
      'Over your limit of 1 GPU per user (your other kernels hold 1): shut one down first.';
    expect(textOf(one)).toBe('1 GPU (over your limit)');
    expect(one.props.title).toBe(sentence);
    expect(one.props['aria-label']).toBe(`1 GPU — ${sentence}`);
    expect(gpus.props.title).toBe(sentence);
  });

  it('reports each change with the other choice', () => {
    const onChange = jest.fn();
    const tree = form(torch.kernel_name, 'count:1', onChange);
    findOne(tree, by('select', 'jgc-picker-gpus')).props.onChange({
      target: { value: 'count:0' }
    });
    expect(onChange.mock.calls).toEqual([[torch.kernel_name, 'count:0']]);
  });

  it('drops to no GPU when a CPU image is chosen, and says why', () => {
    // "1 GPU" kept for a CPU build could only fail when the switch is made.
    const onChange = jest.fn();
    const tree = form(torch.kernel_name, 'count:1', onChange);
    findOne(tree, by('select', 'jgc-picker-image')).props.onChange({
      target: { value: 'gpuc-debian' }
    });
    expect(onChange.mock.calls).toEqual([['gpuc-debian', 'count:0']]);
    const cpu = form('gpuc-debian', 'count:0');
    expect(textOf(findOne(cpu, by('p', 'jgc-picker-cpu')))).toBe(
      'This image is a CPU build: it runs without GPUs.'
    );
    expect(
      pickerValue(trans, rows, report, '', {
        kernelName: 'gpuc-debian',
        choice: 'count:0'
      }).problem
    ).toBe('');
  });

  it('keeps the GPU choice when another GPU image can have it', () => {
    const other = makeRow({
      reference: 'nvcr.io/nvidia/pytorch:25.10-py3',
      kernel_name: 'gpuc-ngc'
    });
    const onChange = jest.fn();
    const tree = (
      <PickerForm
        rows={[torch, other]}
        report={report}
        kernelId=""
        kernelName={torch.kernel_name}
        choice="count:1"
        onChange={onChange}
        trans={trans}
      />
    );
    findOne(tree, by('select', 'jgc-picker-image')).props.onChange({
      target: { value: 'gpuc-ngc' }
    });
    expect(onChange.mock.calls).toEqual([['gpuc-ngc', 'count:1']]);
  });
});

describe('PickerForm: finding an image', () => {
  const tf = makeRow({
    reference: 'tensorflow/tensorflow:2.15.0-gpu',
    framework: 'TensorFlow',
    framework_release: '',
    framework_version: '2.15.0',
    cuda_version: '12.2',
    frameworks: { tensorflow: '2.15.0' },
    kernel_name: 'gpuc-tf'
  });
  const tfJupyter = makeRow({
    ...tf,
    reference: 'tensorflow/tensorflow:2.15.0-gpu-jupyter',
    kernel_name: 'gpuc-tf-jupyter'
  });
  const ngc = makeRow({
    reference: 'nvcr.io/nvidia/pytorch:25.10-py3',
    framework_release: '25.10',
    framework_version: '2.9.0a0',
    cuda_version: '13.0',
    kernel_name: 'gpuc-ngc'
  });
  const mirror = makeRow({
    reference: 'registry.example/mirror/pytorch:25.10-py3',
    framework_release: '25.10',
    framework_version: '2.9.0a0',
    cuda_version: '13.0',
    kernel_name: 'gpuc-mirror'
  });
  const cpu = makeRow({ ...debian, cuda_version: '', frameworks: {} });
  const old = makeRow({ ...broken, cuda_version: '11.8' });
  const all = [tf, tfJupyter, ngc, mirror, cpu, old];

  function form(
    kernelName: string,
    query: string,
    onSearch = jest.fn(),
    catalog = all
  ) {
    return (
      <PickerForm
        rows={catalog}
        report={report}
        kernelId=""
        kernelName={kernelName}
        choice="count:0"
        query={query}
        onChange={jest.fn()}
        onSearch={onSearch}
        trans={trans}
      />
    );
  }

  const options = (tree: JSX.Element) =>
    findAll(findOne(tree, by('select', 'jgc-picker-image')), by('option'));

  it('tells images apart by their tags and repositories', () => {
    const texts = options(form('gpuc-tf', '')).map(
      option => textOf(option).split(' — ')[0]
    );
    expect(texts).toEqual([
      'tensorflow:2.15.0-gpu',
      'tensorflow:2.15.0-gpu-jupyter',
      'nvidia/pytorch:25.10-py3',
      'mirror/pytorch:25.10-py3',
      'debian-ipykernel:bookworm',
      'no-ipykernel:latest'
    ]);
    expect(new Set(texts).size).toBe(texts.length);
  });

  it('names the repositories of images whose short names look alike', () => {
    // "ngc-like:1" and "ngc-like:24.05-py3" looked like two tags of one image.
    const first = makeRow({
      reference: 'registry.example/a/ngc-like:1',
      kernel_name: 'gpuc-a'
    });
    const second = makeRow({
      reference: 'other/ngc-like:24.05-py3',
      kernel_name: 'gpuc-other'
    });
    const shown = options(form('gpuc-a', '', jest.fn(), [first, second, tf]));
    // The tooltip's first line: the full reference, before the verdict.
    expect(
      shown.map(option => [
        textOf(option).split(' — ')[0],
        option.props.title.split('\n')[0]
      ])
    ).toEqual([
      ['a/ngc-like:1', 'registry.example/a/ngc-like:1'],
      ['other/ngc-like:24.05-py3', 'other/ngc-like:24.05-py3'],
      ['tensorflow:2.15.0-gpu', tf.reference]
    ]);
  });

  it('offers the images the search finds, by facts', () => {
    const values = (query: string, chosen = '') =>
      options(form(chosen, query)).map(option => option.props.value);
    expect(values('cuda 12')).toEqual(['gpuc-tf', 'gpuc-tf-jupyter']);
    // "cuda 10" is not a substring search: 25.10 has CUDA 13.
    expect(values('cuda 10')).toEqual([]);
    expect(values('pytorch 2.9')).toEqual(['gpuc-ngc', 'gpuc-mirror']);
    expect(values('tensorflow jupyter')).toEqual(['gpuc-tf-jupyter']);
    expect(values('mirror')).toEqual(['gpuc-mirror']);
    expect(values('')).toEqual(all.map(r => r.kernel_name));
    // The chosen image stays listed (a select shows its value), first.
    expect(values('cuda 12', 'gpuc-ngc')).toEqual([
      'gpuc-ngc',
      'gpuc-tf',
      'gpuc-tf-jupyter'
    ]);
  });

  it('says when the search finds nothing', () => {
    expect(
      textOf(findOne(form('gpuc-tf', 'cuda 10'), by('p', 'jgc-picker-none')))
    ).toBe('No image matches.');
    expect(
      findAll(form('gpuc-tf', 'cuda 12'), by('p', 'jgc-picker-none'))
    ).toEqual([]);
    expect(findAll(form('gpuc-tf', ''), by('p', 'jgc-picker-none'))).toEqual(
      []
    );
  });

  it('chooses the first image the search finds that can run a kernel', () => {
    const onSearch = jest.fn();
    const input = (tree: JSX.Element) =>
      findOne(tree, by('input', 'jgc-picker-search'));
    // The chosen one matches: it stays chosen.
    input(form('gpuc-tf-jupyter', '', onSearch)).props.onChange({
      target: { value: 'tensorflow' }
    });
    // It does not: the first match.
    input(form('gpuc-ngc', '', onSearch)).props.onChange({
      target: { value: 'tensorflow' }
    });
    // Only an image that cannot run a kernel matches: the choice stays.
    input(form('gpuc-ngc', '', onSearch)).props.onChange({
      target: { value: 'pytorch 24.05' }
    });
    // Nothing matches: the choice stays.
    input(form('gpuc-ngc', '', onSearch)).props.onChange({
      target: { value: 'cuda 10' }
    });
    expect(onSearch.mock.calls).toEqual([
      ['tensorflow', 'gpuc-tf-jupyter'],
      ['tensorflow', 'gpuc-tf'],
      ['pytorch 24.05', 'gpuc-ngc'],
      ['cuda 10', 'gpuc-ngc']
    ]);
    // The first match that can run a kernel, past one that cannot.
    const launchable = makeRow({
      ...old,
      kernel_name: 'gpuc-fine',
      kernel_ready: true
    });
    input(form('gpuc-tf', '', onSearch, [tf, old, launchable])).props.onChange({
      target: { value: 'pytorch' }
    });
    expect(onSearch.mock.calls[4]).toEqual(['pytorch', 'gpuc-fine']);
  });
});
