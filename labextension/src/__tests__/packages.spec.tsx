import * as React from 'react';
import { ServerConnection } from '@jupyterlab/services';

import { ApiError, getPackages, resetPackages } from '../api';
import { confirmDialog } from '../dialogs';
import { translationBundle } from '../i18n';
import { packagesOf } from '../packagereaders';
import { IPackages, IPackagesFolder } from '../packagetypes';
import {
  PackageList,
  YourPackages,
  folderName,
  folderSummary
} from '../yourpackages';
import { by, findAll, findOne, textOf } from './elements';

jest.mock('../api', () => ({
  ...jest.requireActual('../api'),
  getPackages: jest.fn(),
  resetPackages: jest.fn()
}));
jest.mock('../dialogs', () => ({ confirmDialog: jest.fn() }));

const trans = translationBundle();
const MiB = 1024 ** 2;
const settings = ServerConnection.makeSettings({
  baseUrl: 'http://localhost:8888/',
  token: 'secret'
});

function folder(overrides: Partial<IPackagesFolder> = {}): IPackagesFolder {
  return {
    key: 'pytorch-24.05-py3-6091a8a22516',
    image: 'nvcr.io/nvidia/pytorch:24.05-py3',
    bytes: 12 * MiB,
    entries: 40,
    packages: 3,
    complete: true,
    modified: 1_700_000_000,
    over_limit: false,
    ...overrides
  };
}

function packages(overrides: Partial<IPackages> = {}): IPackages {
  return {
    enabled: true,
    dir: '.jupyter-gpu-containers/packages',
    max_bytes: 0,
    measured: true,
    folders: [folder()],
    message: '',
    ...overrides
  };
}

describe('packagesOf', () => {
  it('reads the document, and leaves out a folder that is not one', () => {
    const read = packagesOf({
      ...packages(),
      folders: [folder(), { key: '' }, 'x', { key: 'k-000000000000' }]
    });
    expect(read?.folders.map(f => f.key)).toEqual([
      'pytorch-24.05-py3-6091a8a22516',
      'k-000000000000'
    ]);
    expect(read?.folders[1]).toMatchObject({ image: '', bytes: 0 });
    expect(packagesOf({ folders: [] })).toBeNull();
    expect(packagesOf([])).toBeNull();
  });
});

describe('a folder in words', () => {
  it('says how many packages and how much space, and its image', () => {
    expect(folderSummary(trans, folder())).toBe('3 packages · 12 MiB');
    expect(folderSummary(trans, folder({ packages: 1 }))).toBe(
      '1 package · 12 MiB'
    );
    expect(folderSummary(trans, folder({ packages: 0, bytes: 8192 }))).toBe(
      'nothing installed · 8 KiB'
    );
    expect(folderSummary(trans, folder({ complete: false }))).toBe(
      '3 packages · over 12 MiB'
    );
    expect(folderName(folder())).toBe('pytorch:24.05-py3');
    expect(folderName(folder({ image: '' }))).toBe(
      'pytorch-24.05-py3-6091a8a22516'
    );
  });
});

describe('PackageList', () => {
  it('lists each folder with a Reset button', () => {
    const reset = jest.fn();
    const node = (
      <PackageList
        packages={packages()}
        error=""
        busy=""
        trans={trans}
        reset={reset}
      />
    );
    expect(textOf(node)).toContain('Your packages');
    expect(textOf(node)).toContain('pytorch:24.05-py3 3 packages · 12 MiB');
    findOne(node, by('button', 'jgc-package-reset')).props.onClick();
    expect(reset).toHaveBeenCalledWith(folder());
  });

  it('says what the section is for before anything is installed', () => {
    // The folders kernels' starts made, empty, are no rows.
    const node = (
      <PackageList
        packages={packages({ folders: [folder({ packages: 0, bytes: 8192 })] })}
        error=""
        busy=""
        trans={trans}
        reset={jest.fn()}
      />
    );
    expect(textOf(node)).toContain('%pip install');
    expect(findAll(node, by('button'))).toHaveLength(0);
  });

  it("says the server's sentence where it measures nothing", () => {
    const message = 'Your packages are kept in your workspace volume.';
    const node = (
      <PackageList
        packages={packages({ folders: [], measured: false, message })}
        error=""
        busy=""
        trans={trans}
        reset={jest.fn()}
      />
    );
    expect(textOf(node)).toContain(message);
    expect(textOf(node)).not.toContain('%pip install');
  });

  it("warns of a folder over the administrator's limit", () => {
    const node = (
      <PackageList
        packages={packages({
          max_bytes: 10 * MiB,
          folders: [folder({ over_limit: true })]
        })}
        error=""
        busy=""
        trans={trans}
        reset={jest.fn()}
      />
    );
    expect(textOf(node)).toContain(
      'Over the administrator’s limit of 10 MiB: kernels of this image cannot install more until you reset it.'
    );
  });

  it('disables the button of the folder being reset', () => {
    const node = (
      <PackageList
        packages={packages()}
        error=""
        busy={folder().key}
        trans={trans}
        reset={jest.fn()}
      />
    );
    const button = findOne(node, by('button', 'jgc-package-reset'));
    expect(button.props.disabled).toBe(true);
    expect(textOf(button)).toBe('Resetting…');
  });

  it('shows nothing for a server without the route', () => {
    const node = (
      <PackageList
        packages={null}
        error=""
        busy=""
        trans={trans}
        reset={jest.fn()}
      />
    );
    expect(textOf(node)).toBe('');
  });
});

/**
 * A YourPackages whose state changes at once (no DOM to mount it in).
 */
function section(): YourPackages {
  const made = new YourPackages({ settings, trans });
  made.setState = ((change: any) => {
    made.state = {
      ...made.state,
      ...(typeof change === 'function' ? change(made.state) : change)
    };
  }) as YourPackages['setState'];
  return made;
}

describe('YourPackages', () => {
  beforeEach(() => {
    jest.mocked(getPackages).mockReset();
    jest.mocked(resetPackages).mockReset();
    jest.mocked(confirmDialog).mockReset();
  });

  it('resets a folder once confirmed, then reads the folders again', async () => {
    const made = section();
    jest.mocked(getPackages).mockResolvedValueOnce(packages());
    await made.refresh();
    expect(made.state.packages?.folders).toHaveLength(1);

    jest.mocked(confirmDialog).mockResolvedValueOnce(true);
    jest.mocked(resetPackages).mockResolvedValueOnce(undefined);
    jest.mocked(getPackages).mockResolvedValueOnce(packages({ folders: [] }));
    await made.reset(folder());
    expect(jest.mocked(confirmDialog).mock.calls[0][0]).toMatchObject({
      title: 'Reset your packages for pytorch:24.05-py3?',
      action: 'Reset'
    });
    expect(jest.mocked(confirmDialog).mock.calls[0][0].body).toContain(
      '3 packages · 12 MiB'
    );
    expect(resetPackages).toHaveBeenCalledWith(
      'pytorch-24.05-py3-6091a8a22516',
      settings,
      trans
    );
    expect(made.state).toMatchObject({ busy: '', error: '' });
    expect(made.state.packages?.folders).toEqual([]);
  });

  it('resets nothing when cancelled', async () => {
    const made = section();
    jest.mocked(confirmDialog).mockResolvedValueOnce(false);
    await made.reset(folder());
    expect(resetPackages).not.toHaveBeenCalled();
  });

  it("keeps the server's sentence when a reset is refused", async () => {
    const made = section();
    jest.mocked(confirmDialog).mockResolvedValueOnce(true);
    jest
      .mocked(resetPackages)
      .mockRejectedValueOnce(
        new ApiError('The packages folder … is a symbolic link.', 400)
      );
    jest.mocked(getPackages).mockResolvedValueOnce(packages());
    await made.reset(folder());
    expect(made.state).toMatchObject({
      busy: '',
      error: 'The packages folder … is a symbolic link.'
    });
  });

  it('shows nothing where the server has no such route', async () => {
    const made = section();
    jest
      .mocked(getPackages)
      .mockRejectedValueOnce(new ApiError('Not Found', 404));
    await made.refresh();
    expect(made.state).toMatchObject({ packages: null, error: '' });
    jest
      .mocked(getPackages)
      .mockRejectedValueOnce(new ApiError('Could not reach the server.'));
    await made.refresh();
    expect(made.state.error).toBe('Could not reach the server.');
  });
});
