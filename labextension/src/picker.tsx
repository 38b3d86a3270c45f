/**
 * The body of the "image and GPUs" dialog, shared by the notebook toolbar
 * (switch this notebook) and the palette command.
 */
import type { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { Breakable } from './breakable';
import { FormDialogBody } from './dialogs';
import { gpuChoices, keptChoice } from './gpuchoices';
import { GpuOptions } from './gpuoptions';
import { IClusterView, IGpuReport } from './gputypes';
import {
  frameworkLabel,
  imageNames,
  isLaunchable,
  launchBlocker
} from './imageformat';
import { searchImages } from './imagequery';
import { IImageRow } from './imagetypes';
import { GpuRequest } from './kerneltypes';

/**
 * What the dialog gives back.
 */
export interface IPickerValue {
  kernelName: string;
  gpus: GpuRequest;
  /**
   * Why the choice cannot be made, or `''`.
   */
  problem: string;
  /**
   * Whether the start waits for busy GPUs; absent where the server has no
   * GPU queue.
   */
  wait?: boolean;
}

/**
 * The picker's state: the chosen kernel spec and GPU choice (a select's
 * value, `count:N` or `id:<uuid>`), and the search over the images.
 */
export interface IPickerState {
  kernelName: string;
  choice: string;
  query: string;
  /**
   * "Wait for a free GPU", where the server has a GPU queue.
   */
  wait?: boolean;
}

/**
 * The picker's "wait for a free GPU" box: whether to offer it, and whether
 * it starts ticked (the server's default).
 */
export interface IWaitOption {
  offered: boolean;
  byDefault: boolean;
}

export class ImagePicker extends FormDialogBody<IPickerState, IPickerValue> {
  /**
   * @param rows The catalog's rows.
   * @param report The GPU report, for the GPU choices.
   * @param current The notebook's kernel spec name now ('' for none).
   * @param kernelId The notebook's kernel id: its GPUs count as free.
   * @param currentGpus The GPUs the kernel holds now (a count).
   * @param trans The extension's translation bundle.
   * @param waitOption Whether to offer waiting for busy GPUs.
   * @param cluster The cluster's GPU nodes, where its scheduler places GPUs.
   */
  constructor(
    rows: IImageRow[],
    report: IGpuReport | null,
    current: string,
    kernelId: string,
    currentGpus: number,
    trans: TranslationBundle,
    waitOption: IWaitOption = { offered: false, byDefault: false },
    cluster: IClusterView | null = null
  ) {
    const start =
      rows.find(r => r.kernel_name === current && isLaunchable(r)) ??
      rows.find(isLaunchable);
    super({
      className: 'jgc-picker',
      initial: {
        kernelName: start?.kernel_name ?? '',
        choice: `count:${currentGpus}`,
        query: '',
        wait: waitOption.offered ? waitOption.byDefault : undefined
      },
      render: ({ state, change }) => (
        <PickerForm
          rows={rows}
          report={report}
          cluster={cluster}
          kernelId={kernelId}
          kernelName={state.kernelName}
          choice={state.choice}
          query={state.query}
          wait={state.wait}
          onWait={wait => change({ wait })}
          onChange={(kernelName, choice) => change({ kernelName, choice })}
          onSearch={(query, kernelName) => change({ query, kernelName })}
          trans={trans}
        />
      ),
      value: state => pickerValue(trans, rows, report, kernelId, state, cluster)
    });
  }
}

/**
 * What the picker gives back for a state.
 */
export function pickerValue(
  trans: TranslationBundle,
  rows: IImageRow[],
  report: IGpuReport | null,
  kernelId: string,
  state: Pick<IPickerState, 'kernelName' | 'choice' | 'wait'>,
  cluster: IClusterView | null = null
): IPickerValue {
  const row = rows.find(r => r.kernel_name === state.kernelName);
  if (!row) {
    return {
      kernelName: '',
      gpus: null,
      problem: trans.__('Choose an image that can run a kernel.')
    };
  }
  const choices = gpuChoices(
    trans,
    report,
    row,
    kernelId,
    state.wait === true,
    cluster
  );
  const choice = choices.find(c => c.value === state.choice) ?? choices[0];
  return {
    kernelName: row.kernel_name,
    gpus: choice.request,
    problem:
      launchBlocker(trans, row) || (choice.disabled ? choice.reason : ''),
    ...(state.wait === undefined ? {} : { wait: state.wait })
  };
}

/**
 * The images the picker offers for a search: the pulled images with a kernel
 * that match it, and the chosen one always (a select shows its value).
 */
export function offeredImages(
  rows: IImageRow[],
  query: string,
  kernelName: string
): IImageRow[] {
  const offered = rows.filter(r => r.pulled && r.kernel_name);
  const found = searchImages(offered, query);
  const chosen = offered.find(r => r.kernel_name === kernelName);
  return chosen && !found.includes(chosen) ? [chosen, ...found] : found;
}

export function PickerForm(props: {
  rows: IImageRow[];
  report: IGpuReport | null;
  /**
   * The cluster's GPU nodes, where its scheduler places GPUs.
   */
  cluster?: IClusterView | null;
  kernelId: string;
  kernelName: string;
  choice: string;
  query?: string;
  onChange: (kernelName: string, choice: string) => void;
  /**
   * A new search, and the image to choose with it: the first one it finds
   * that can run a kernel when the chosen one is not among them.
   */
  onSearch?: (query: string, kernelName: string) => void;
  /**
   * "Wait for a free GPU": shown when defined.
   */
  wait?: boolean;
  onWait?: (wait: boolean) => void;
  trans: TranslationBundle;
}): JSX.Element {
  const { rows, report, kernelId, kernelName, choice, onChange, trans } = props;
  const query = props.query ?? '';
  const row = rows.find(r => r.kernel_name === kernelName) ?? null;
  const cluster = props.cluster ?? null;
  const choices = gpuChoices(
    trans,
    report,
    row,
    kernelId,
    props.wait === true,
    cluster
  );
  const selected = choices.find(c => c.value === choice);
  const offered = offeredImages(rows, query, kernelName);
  const pulled = rows.filter(r => r.pulled && r.kernel_name);
  const found = searchImages(pulled, query);
  // Named against every image offered, so that names do not change as the
  // search narrows the list.
  const names = imageNames(pulled.map(r => r.reference));
  // Another image: the GPU choice stays only where that image can have it
  // (a CPU build gets no GPU, rather than a switch that can only fail).
  const choiceFor = (name: string): string => {
    const next = rows.find(r => r.kernel_name === name) ?? null;
    return keptChoice(
      gpuChoices(trans, report, next, kernelId, props.wait === true, cluster),
      choice
    );
  };
  const search = (text: string): void => {
    const matches = searchImages(pulled, text);
    const next = matches.some(r => r.kernel_name === kernelName)
      ? kernelName
      : (matches.find(isLaunchable)?.kernel_name ?? kernelName);
    if (next !== kernelName) {
      onChange(next, choiceFor(next));
    }
    props.onSearch?.(text, next);
  };
  return (
    <div className="jgc-picker-form">
      <label>
        {trans.__('Search')}
        <input
          type="search"
          className="jp-mod-styled jgc-picker-search"
          placeholder={trans.__('pytorch 2.3, cuda 12, a name')}
          title={trans.__(
            'Search images by framework and version (pytorch 2.3, tensorflow), CUDA (cuda 12), Python (python 3.11) or any word of the name.'
          )}
          value={query}
          onChange={event => search(event.target.value)}
        />
      </label>
      <label>
        {trans.__('Image')}
        <select
          className="jgc-picker-image"
          value={kernelName}
          onChange={event =>
            onChange(event.target.value, choiceFor(event.target.value))
          }
        >
          {offered.map(r => {
            const blocker = launchBlocker(trans, r);
            const name = names.get(r.reference) ?? r.reference;
            return (
              <option
                key={r.kernel_name}
                value={r.kernel_name}
                disabled={blocker !== ''}
                title={
                  blocker || r.verdict.reason
                    ? trans._p(
                        'an image, and why it cannot run or its verdict',
                        '%1\n%2',
                        r.reference,
                        blocker || r.verdict.reason
                      )
                    : r.reference
                }
              >
                {blocker
                  ? trans._p(
                      'image — framework (why it cannot run)',
                      '%1 — %2 (%3)',
                      name,
                      frameworkLabel(r),
                      blocker
                    )
                  : trans._p(
                      'image — framework',
                      '%1 — %2',
                      name,
                      frameworkLabel(r)
                    )}
              </option>
            );
          })}
        </select>
      </label>
      {query.trim() !== '' && found.length === 0 && (
        <p className="jgc-note jgc-picker-none">
          {trans.__('No image matches.')}
        </p>
      )}
      {row && (
        <p className="jgc-subtle jgc-picker-ref">
          <Breakable text={row.reference} />
        </p>
      )}
      {row && (
        <p className="jgc-subtle jgc-picker-verdict">{row.verdict.reason}</p>
      )}
      <label>
        {trans.__('GPUs')}
        <select
          className="jgc-picker-gpus"
          value={choice}
          title={selected?.reason || undefined}
          onChange={event => onChange(kernelName, event.target.value)}
        >
          <GpuOptions choices={choices} />
        </select>
      </label>
      {props.wait !== undefined && (
        <label className="jgc-picker-wait">
          <input
            type="checkbox"
            checked={props.wait}
            onChange={event => props.onWait?.(event.target.checked)}
          />{' '}
          {trans.__('Wait for a free GPU')}
        </label>
      )}
      {row && !row.gpu && (
        <p className="jgc-note jgc-picker-cpu">
          {trans.__('This image is a CPU build: it runs without GPUs.')}
        </p>
      )}
      {selected?.disabled && (
        <p className="jgc-note jgc-error">{selected.reason}</p>
      )}
      {!selected?.disabled && props.wait && selected?.reason && (
        <p className="jgc-note jgc-picker-waits">
          {trans.__(
            'The kernel waits in the GPU queue: the panel shows its place, and you are told when it starts.'
          )}
        </p>
      )}
    </div>
  );
}
