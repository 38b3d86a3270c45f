import {
  FRAMEWORK_NAMES,
  ImageQueryTerm,
  matchesImageQuery,
  parseImageQuery,
  searchImages,
  versionMatches
} from '../imagequery';
import { IImageRow } from '../imagetypes';
import { makeRow } from './fixtures';

describe('parseImageQuery', () => {
  it.each<[string, ImageQueryTerm[]]>([
    ['', []],
    ['   ', []],
    ['cuda 12', [{ kind: 'cuda', version: '12' }]],
    ['CUDA 12.4', [{ kind: 'cuda', version: '12.4' }]],
    ['cuda 12.x', [{ kind: 'cuda', version: '12' }]],
    ['cuda12', [{ kind: 'cuda', version: '12' }]],
    ['cuda12.1', [{ kind: 'cuda', version: '12.1' }]],
    ['cuda=12.1', [{ kind: 'cuda', version: '12.1' }]],
    ['cuda:11.8', [{ kind: 'cuda', version: '11.8' }]],
    ['cu121', [{ kind: 'cuda', version: '12.1' }]],
    ['cu118', [{ kind: 'cuda', version: '11.8' }]],
    ['cu92', [{ kind: 'cuda', version: '9.2' }]],
    ['cuda', [{ kind: 'cuda', version: '' }]],
    ['pytorch 2.3', [{ kind: 'framework', key: 'pytorch', version: '2.3' }]],
    ['PyTorch v2.3', [{ kind: 'framework', key: 'pytorch', version: '2.3' }]],
    ['torch 2.3.1', [{ kind: 'framework', key: 'pytorch', version: '2.3.1' }]],
    ['torch2.3', [{ kind: 'framework', key: 'pytorch', version: '2.3' }]],
    ['tensorflow', [{ kind: 'framework', key: 'tensorflow', version: '' }]],
    ['tf 2.15', [{ kind: 'framework', key: 'tensorflow', version: '2.15' }]],
    ['tf2', [{ kind: 'framework', key: 'tensorflow', version: '2' }]],
    ['jax 0.4', [{ kind: 'framework', key: 'jax', version: '0.4' }]],
    ['caffe2', [{ kind: 'framework', key: 'caffe2', version: '' }]],
    ['paddlepaddle', [{ kind: 'framework', key: 'paddle', version: '' }]],
    ['python 3.11', [{ kind: 'python', version: '3.11' }]],
    ['py3.11', [{ kind: 'python', version: '3.11' }]],
    ['python3', [{ kind: 'python', version: '3' }]],
    // Alone, "python" is a word: the Python group, python:3.11-slim.
    ['python', [{ kind: 'word', text: 'python' }]],
    ['jupyter', [{ kind: 'word', text: 'jupyter' }]],
    ['2.15', [{ kind: 'word', text: '2.15' }]],
    ['nvcr.io/nvidia', [{ kind: 'word', text: 'nvcr.io/nvidia' }]],
    ['cu', [{ kind: 'word', text: 'cu' }]],
    // A version after a word that is no keyword stays a word.
    [
      'gpu 2.15',
      [
        { kind: 'word', text: 'gpu' },
        { kind: 'word', text: '2.15' }
      ]
    ],
    [
      '  pytorch   2.3 cuda 12  jupyter ',
      [
        { kind: 'framework', key: 'pytorch', version: '2.3' },
        { kind: 'cuda', version: '12' },
        { kind: 'word', text: 'jupyter' }
      ]
    ],
    [
      'cuda pytorch',
      [
        { kind: 'cuda', version: '' },
        { kind: 'framework', key: 'pytorch', version: '' }
      ]
    ],
    // A keyword takes one version; the next number is a word.
    [
      'cuda 12 4',
      [
        { kind: 'cuda', version: '12' },
        { kind: 'word', text: '4' }
      ]
    ]
  ])('reads %p', (query, terms) => {
    expect(parseImageQuery(query)).toEqual(terms);
  });

  it("reads the catalog's other framework names as frameworks", () => {
    expect(parseImageQuery('modulus 24.01', ['Modulus', ''])).toEqual([
      { kind: 'framework', key: 'modulus', version: '24.01' }
    ]);
    expect(parseImageQuery('modulus 24.01')).toEqual([
      { kind: 'word', text: 'modulus' },
      { kind: 'word', text: '24.01' }
    ]);
  });

  it('knows the frameworks the catalog names', () => {
    // catalog.py's _FRAMEWORKS, and the probe's package keys.
    for (const name of [
      'pytorch',
      'tensorflow',
      'jax',
      'mxnet',
      'cntk',
      'caffe',
      'caffe2',
      'keras',
      'chainer',
      'paddle',
      'torch',
      'paddlepaddle'
    ]) {
      expect(Object.values(FRAMEWORK_NAMES).flat()).toContain(name);
    }
  });
});

describe('versionMatches', () => {
  it.each<[string, string, boolean]>([
    ['', '', true],
    ['', '12.4', true],
    ['12', '12.4', true],
    ['12', '12.4.1', true],
    ['12', '12', true],
    ['12.4', '12.4.1', true],
    ['12.4', '12.4', true],
    ['12.4.1', '12.4', false],
    ['10', '12.8', false],
    ['1', '12.8', false],
    ['2.3', '2.3.1', true],
    ['2.3', '2.30.0', false],
    ['2.3', '2.4.0', false],
    ['2.4', '2.4.0a0', true],
    ['2.4.0', '2.4.0a0', true],
    ['2.4.0', '2.4.0+cu121', true],
    ['2.3.1', '2.3.1+cu121', true],
    ['2.3', 'v2.3.0', true],
    ['24.05', '24.05', true],
    ['24', '24.05', true],
    ['12', '', false],
    ['12', '   ', false]
  ])('%p names %p: %p', (wanted, actual, expected) => {
    expect(versionMatches(wanted, actual)).toBe(expected);
  });
});

/**
 * A catalog like the one of the walk-through.
 */
function image(
  reference: string,
  facts: Partial<IImageRow>
): [string, IImageRow] {
  return [
    reference,
    makeRow({
      reference,
      description: '',
      framework: '',
      framework_version: '',
      framework_release: '',
      cuda_version: '',
      python_version: '',
      frameworks: {},
      ...facts
    })
  ];
}

const catalog = new Map<string, IImageRow>([
  image('nvcr.io/nvidia/pytorch:25.10-py3', {
    framework: 'PyTorch',
    framework_release: '25.10',
    framework_version: '2.9.0a0',
    cuda_version: '13.0.2',
    python_version: '3.12',
    frameworks: { torch: '2.9.0a0' }
  }),
  image('nvcr.io/nvidia/pytorch:24.05-py3', {
    framework: 'PyTorch',
    framework_release: '24.05',
    framework_version: '2.4.0a0',
    cuda_version: '12.4.1',
    python_version: '3.10',
    frameworks: { torch: '2.4.0a0' }
  }),
  image('pytorch/pytorch:2.3.1-cuda12.1-cudnn8-runtime', {
    framework: 'PyTorch',
    framework_version: '2.3.1',
    cuda_version: '12.1',
    python_version: '3.10',
    frameworks: { torch: '2.3.1+cu121' }
  }),
  image('tensorflow/tensorflow:2.15.0-gpu', {
    framework: 'TensorFlow',
    framework_version: '2.15.0',
    cuda_version: '12.2',
    python_version: '3.11',
    frameworks: { tensorflow: '2.15.0', keras: '2.15.0' }
  }),
  image('tensorflow/tensorflow:2.15.0-gpu-jupyter', {
    framework: 'TensorFlow',
    framework_version: '2.15.0',
    cuda_version: '12.2',
    python_version: '3.11',
    description: 'TensorFlow with Jupyter',
    frameworks: { tensorflow: '2.15.0', keras: '2.15.0' }
  }),
  // Listed, not pulled: the server knows only what the reference says.
  image('nvcr.io/nvidia/tensorflow:24.05-tf2-py3', {
    pulled: false,
    framework: 'TensorFlow',
    cuda_version: '12.4',
    description: 'NVIDIA TensorFlow'
  }),
  image('tensorflow/tensorflow:2.16.1', {
    pulled: false,
    framework: 'TensorFlow',
    gpu: false
  }),
  image('ghcr.io/nvidia/jax:jax-2024-05', {
    framework: 'JAX',
    framework_version: '0.4.28',
    cuda_version: '12.4',
    python_version: '3.10',
    frameworks: { jax: '0.4.28' }
  }),
  image('nvcr.io/nvidia/rapidsai/base:24.04-cuda12.2-py3.11', {
    framework: 'RAPIDS',
    framework_release: '24.04',
    cuda_version: '12.2',
    python_version: '3.11'
  }),
  image('nvidia/cuda:10.2-cudnn7-runtime-ubuntu18.04', {
    cuda_version: '10.2',
    python_version: '3.6'
  }),
  image('python:3.11-slim', { python_version: '3.11', gpu: false }),
  // A PyTorch image with TensorFlow installed as well.
  image('quay.io/lab/ml-all:2024', {
    framework: 'PyTorch',
    framework_version: '2.2.0',
    cuda_version: '11.8',
    python_version: '3.11',
    frameworks: { torch: '2.2.0', tensorflow: '2.14.1' }
  })
]);
const rows = [...catalog.values()];

describe('searchImages', () => {
  it.each<[string, string[]]>([
    // The issue: "cuda 10" matched pytorch:25.10 (CUDA 13) by substring.
    ['cuda 10', ['nvidia/cuda:10.2-cudnn7-runtime-ubuntu18.04']],
    [
      'cuda 12',
      [
        'nvcr.io/nvidia/pytorch:24.05-py3',
        'pytorch/pytorch:2.3.1-cuda12.1-cudnn8-runtime',
        'tensorflow/tensorflow:2.15.0-gpu',
        'tensorflow/tensorflow:2.15.0-gpu-jupyter',
        'nvcr.io/nvidia/tensorflow:24.05-tf2-py3',
        'ghcr.io/nvidia/jax:jax-2024-05',
        'nvcr.io/nvidia/rapidsai/base:24.04-cuda12.2-py3.11'
      ]
    ],
    ['cuda 13', ['nvcr.io/nvidia/pytorch:25.10-py3']],
    ['cuda 12.1', ['pytorch/pytorch:2.3.1-cuda12.1-cudnn8-runtime']],
    ['cu121', ['pytorch/pytorch:2.3.1-cuda12.1-cudnn8-runtime']],
    ['cuda 11', ['quay.io/lab/ml-all:2024']],
    ['cuda 1', []],
    [
      'pytorch 2.3',
      // Its PyTorch is 2.3.1, not 25.10's 2.9 or 24.05's 2.4.
      ['pytorch/pytorch:2.3.1-cuda12.1-cudnn8-runtime']
    ],
    ['pytorch 2.4', ['nvcr.io/nvidia/pytorch:24.05-py3']],
    ['torch 2.4.0', ['nvcr.io/nvidia/pytorch:24.05-py3']],
    // NGC's release numbers name the framework too.
    ['pytorch 25.10', ['nvcr.io/nvidia/pytorch:25.10-py3']],
    [
      'pytorch 2',
      [
        'nvcr.io/nvidia/pytorch:25.10-py3',
        'nvcr.io/nvidia/pytorch:24.05-py3',
        'pytorch/pytorch:2.3.1-cuda12.1-cudnn8-runtime',
        'quay.io/lab/ml-all:2024'
      ]
    ],
    [
      'tensorflow',
      [
        'tensorflow/tensorflow:2.15.0-gpu',
        'tensorflow/tensorflow:2.15.0-gpu-jupyter',
        'nvcr.io/nvidia/tensorflow:24.05-tf2-py3',
        'tensorflow/tensorflow:2.16.1',
        // TensorFlow is installed in it too.
        'quay.io/lab/ml-all:2024'
      ]
    ],
    [
      'tf 2.15',
      [
        'tensorflow/tensorflow:2.15.0-gpu',
        'tensorflow/tensorflow:2.15.0-gpu-jupyter'
      ]
    ],
    // An image not pulled yet is known by its tag.
    ['tensorflow 2.16', ['tensorflow/tensorflow:2.16.1']],
    ['tensorflow 24.05', ['nvcr.io/nvidia/tensorflow:24.05-tf2-py3']],
    ['tensorflow 2.14', ['quay.io/lab/ml-all:2024']],
    ['tensorflow 2.15 jupyter', ['tensorflow/tensorflow:2.15.0-gpu-jupyter']],
    ['jax', ['ghcr.io/nvidia/jax:jax-2024-05']],
    ['jax 0.4', ['ghcr.io/nvidia/jax:jax-2024-05']],
    ['jax 0.5', []],
    ['rapids', ['nvcr.io/nvidia/rapidsai/base:24.04-cuda12.2-py3.11']],
    ['rapids 24.04', ['nvcr.io/nvidia/rapidsai/base:24.04-cuda12.2-py3.11']],
    [
      'python 3.11',
      [
        'tensorflow/tensorflow:2.15.0-gpu',
        'tensorflow/tensorflow:2.15.0-gpu-jupyter',
        'nvcr.io/nvidia/rapidsai/base:24.04-cuda12.2-py3.11',
        'python:3.11-slim',
        'quay.io/lab/ml-all:2024'
      ]
    ],
    ['python 3.6', ['nvidia/cuda:10.2-cudnn7-runtime-ubuntu18.04']],
    ['pytorch cuda 11', ['quay.io/lab/ml-all:2024']],
    ['pytorch 2.3 cuda 12', ['pytorch/pytorch:2.3.1-cuda12.1-cudnn8-runtime']],
    ['pytorch 2.3 cuda 11', []],
    // Free words still match the reference, the framework and the
    // description.
    ['slim', ['python:3.11-slim']],
    ['quay.io/lab', ['quay.io/lab/ml-all:2024']],
    ['gpu-jupyter', ['tensorflow/tensorflow:2.15.0-gpu-jupyter']],
    [
      '24.05',
      [
        'nvcr.io/nvidia/pytorch:24.05-py3',
        'nvcr.io/nvidia/tensorflow:24.05-tf2-py3'
      ]
    ],
    ['NVIDIA tensorflow', ['nvcr.io/nvidia/tensorflow:24.05-tf2-py3']],
    [
      'python',
      ['nvidia/cuda:10.2-cudnn7-runtime-ubuntu18.04', 'python:3.11-slim']
    ],
    ['nothing-like-it', []]
  ])('%p finds %p', (query, references) => {
    expect(searchImages(rows, query).map(row => row.reference)).toEqual(
      references
    );
  });

  it('keeps every row, in order, for an empty query', () => {
    expect(searchImages(rows, '')).toEqual(rows);
    expect(searchImages(rows, '  \t ')).toEqual(rows);
    expect(searchImages([], 'cuda 12')).toEqual([]);
  });

  it('needs every term to hold', () => {
    const row = catalog.get('tensorflow/tensorflow:2.15.0-gpu')!;
    expect(
      matchesImageQuery(row, [
        { kind: 'framework', key: 'tensorflow', version: '2.15' },
        { kind: 'cuda', version: '12' }
      ])
    ).toBe(true);
    expect(
      matchesImageQuery(row, [
        { kind: 'framework', key: 'tensorflow', version: '2.15' },
        { kind: 'cuda', version: '11' }
      ])
    ).toBe(false);
    expect(matchesImageQuery(row, [])).toBe(true);
  });

  it('finds no CUDA in a CPU image, whatever its tag says', () => {
    const cpu = makeRow({
      reference: 'example/cuda-tools:12',
      cuda_version: '',
      gpu: false
    });
    expect(searchImages([cpu], 'cuda 12')).toEqual([]);
    expect(searchImages([cpu], 'cuda')).toEqual([]);
    expect(searchImages([cpu], 'cuda-tools')).toEqual([cpu]);
  });
});
