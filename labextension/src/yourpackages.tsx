/**
 * The panel's "Your packages" section: what the user installed in kernels
 * (`%pip install`), kept per image in their workspace, each image's folder
 * with its size and a Reset button. Read when the panel is shown or refreshed
 * (measuring walks the folders: no poll), and after a reset.
 */
import type { ServerConnection } from '@jupyterlab/services';
import type { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { ApiError, getPackages, messageOf, resetPackages } from './api';
import { confirmDialog } from './dialogs';
import { formatBytes } from './format';
import { shortImageName } from './imageformat';
import { IPackages, IPackagesFolder } from './packagetypes';

/**
 * What one folder holds, in a few words: "3 packages · 12 MiB".
 */
export function folderSummary(
  trans: TranslationBundle,
  folder: IPackagesFolder
): string {
  const size = folder.complete
    ? formatBytes(folder.bytes)
    : trans.__('over %1', formatBytes(folder.bytes));
  if (folder.packages === 0) {
    return trans.__('nothing installed · %1', size);
  }
  return trans._n('%1 package · %2', '%1 packages · %2', folder.packages, size);
}

/**
 * The folder's name for people: its image's short name, else its key.
 */
export function folderName(folder: IPackagesFolder): string {
  return folder.image ? shortImageName(folder.image) : folder.key;
}

/**
 * The list, with no state of its own.
 */
export function PackageList(props: {
  packages: IPackages | null;
  error: string;
  busy: string;
  trans: TranslationBundle;
  reset: (folder: IPackagesFolder) => void;
}): JSX.Element | null {
  const { packages, error, busy, trans, reset } = props;
  if (!packages && !error) {
    return null; // not read yet, or a server without the route
  }
  // A folder a kernel's start made, in which nothing was installed, is not worth a row.
  const folders = (packages?.folders ?? []).filter(
    f => f.packages > 0 || f.over_limit || !f.complete
  );
  return (
    <section className="jgc-section jgc-packages-section">
      <h3>{trans.__('Your packages')}</h3>
      {error && (
        <p className="jgc-note jgc-error" role="alert">
          {error}
        </p>
      )}
      {packages?.message && <p className="jgc-subtle">{packages.message}</p>}
      {packages &&
        packages.enabled &&
        packages.measured &&
        folders.length === 0 &&
        !packages.message && (
          <p className="jgc-subtle jgc-packages-none">
            {trans.__(
              'What you install in a container kernel (%pip install) is kept here, for its image, and is there at its next start.'
            )}
          </p>
        )}
      {folders.length > 0 && (
        <ul className="jgc-packages">
          {folders.map(folder => (
            <li
              key={folder.key}
              className="jgc-package-folder"
              data-key={folder.key}
              data-over-limit={folder.over_limit ? 'true' : undefined}
            >
              <div className="jgc-package-title">
                <span
                  className="jgc-package-image"
                  title={folder.image || folder.key}
                >
                  {folderName(folder)}
                </span>{' '}
                <span className="jgc-subtle jgc-package-size">
                  {folderSummary(trans, folder)}
                </span>
                <button
                  className="jp-mod-styled jgc-package-reset"
                  disabled={busy === folder.key}
                  title={trans.__(
                    'Remove what you installed for this image: its next kernels start with the image’s own packages'
                  )}
                  onClick={() => reset(folder)}
                >
                  {busy === folder.key
                    ? trans.__('Resetting…')
                    : trans.__('Reset')}
                </button>
              </div>
              {folder.over_limit && packages && (
                <div className="jgc-note jgc-error">
                  {trans.__(
                    'Over the administrator’s limit of %1: kernels of this image cannot install more until you reset it.',
                    formatBytes(packages.max_bytes)
                  )}
                </div>
              )}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

interface IYourPackagesState {
  packages: IPackages | null;
  error: string;
  /**
   * The key of the folder being reset, `''` for none.
   */
  busy: string;
}

/**
 * The section: reads the folders, and resets one once confirmed.
 */
export class YourPackages extends React.Component<
  {
    settings: ServerConnection.ISettings;
    trans: TranslationBundle;
    /**
     * A count the panel raises when it was shown again or refreshed: the
     * folders are read again.
     */
    readAgain?: number;
  },
  IYourPackagesState
> {
  override state: IYourPackagesState = { packages: null, error: '', busy: '' };

  override componentDidMount(): void {
    void this.refresh();
  }

  override componentDidUpdate(previous: { readAgain?: number }): void {
    if (previous.readAgain !== this.props.readAgain) {
      void this.refresh();
    }
  }

  override componentWillUnmount(): void {
    this._unmounted = true;
  }

  async refresh(): Promise<void> {
    try {
      const packages = await getPackages(this.props.settings, this.props.trans);
      this._set({ packages, error: '' });
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        this._set({ packages: null, error: '' }); // a server without the route
      } else if (error instanceof ApiError && error.status === 409) {
        return; // a reset under way: its end reads again
      } else {
        this._set({ error: messageOf(error) });
      }
    }
  }

  async reset(folder: IPackagesFolder): Promise<void> {
    const { trans } = this.props;
    const name = folderName(folder);
    const confirmed = await confirmDialog({
      title: trans.__('Reset your packages for %1?', name),
      body: trans.__(
        'What you installed for %1 (%2) is removed. Kernels running it now keep what they imported; its next kernels start with the image’s own packages.',
        name,
        folderSummary(trans, folder)
      ),
      action: trans.__('Reset')
    });
    if (!confirmed) {
      return;
    }
    this._set({ busy: folder.key, error: '' });
    let failure = '';
    try {
      await resetPackages(folder.key, this.props.settings, trans);
    } catch (error) {
      failure = messageOf(error);
    }
    await this.refresh();
    this._set({ busy: '', ...(failure ? { error: failure } : {}) });
  }

  override render(): JSX.Element | null {
    return (
      <PackageList
        packages={this.state.packages}
        error={this.state.error}
        busy={this.state.busy}
        trans={this.props.trans}
        reset={folder => void this.reset(folder)}
      />
    );
  }

  private _set(change: Partial<IYourPackagesState>): void {
    if (!this._unmounted) {
      this.setState(previous => ({ ...previous, ...change }));
    }
  }

  private _unmounted = false;
}
