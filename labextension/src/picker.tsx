/**
 * The body of the "image and GPUs" dialog, shared by the notebook toolbar
 * (switch this notebook) and the palette command.
 */
import type { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { FormDialogBody } from './dialogs';
import {
  frameworkLabel,
  gpuChoices,
  isLaunchable,
  launchBlocker,
  shortImageName
} from './format';
import { GpuOptions } from './gpuoptions';
import { GpuRequest, IGpuReport, IImageRow } from './types';

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
}

/**
 * The picker's state: the chosen kernel spec and GPU choice (a select's
 * value, `count:N` or `id:<uuid>`).
 */
export interface IPickerState {
  kernelName: string;
  choice: string;
}

export class ImagePicker extends FormDialogBody<IPickerState, IPickerValue> {
  /**
   * @param rows The catalog's rows.
   * @param report The GPU report, for the GPU choices.
   * @param current The notebook's kernel spec name now ('' for none).
   * @param kernelId The notebook's kernel id: its GPUs count as free.
   * @param currentGpus The GPUs the kernel holds now (a count).
   * @param trans The extension's translation bundle.
   */
  constructor(
    rows: IImageRow[],
    report: IGpuReport | null,
    current: string,
    kernelId: string,
    currentGpus: number,
    trans: TranslationBundle
  ) {
    const start =
      rows.find(r => r.kernel_name === current && isLaunchable(r)) ??
      rows.find(isLaunchable);
    super({
      className: 'jgc-picker',
      initial: {
        kernelName: start?.kernel_name ?? '',
        choice: `count:${currentGpus}`
      },
      render: ({ state, change }) => (
        <PickerForm
          rows={rows}
          report={report}
          kernelId={kernelId}
          kernelName={state.kernelName}
          choice={state.choice}
          onChange={(kernelName, choice) => change({ kernelName, choice })}
          trans={trans}
        />
      ),
      value: state => pickerValue(trans, rows, report, kernelId, state)
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
  state: IPickerState
): IPickerValue {
  const row = rows.find(r => r.kernel_name === state.kernelName);
  if (!row) {
    return {
      kernelName: '',
      gpus: null,
      problem: trans.__('Choose an image that can run a kernel.')
    };
  }
  const choices = gpuChoices(trans, report, row, kernelId);
  const choice = choices.find(c => c.value === state.choice) ?? choices[0];
  return {
    kernelName: row.kernel_name,
    gpus: choice.request,
    problem: launchBlocker(trans, row) || (choice.disabled ? choice.reason : '')
  };
}

export function PickerForm(props: {
  rows: IImageRow[];
  report: IGpuReport | null;
  kernelId: string;
  kernelName: string;
  choice: string;
  onChange: (kernelName: string, choice: string) => void;
  trans: TranslationBundle;
}): JSX.Element {
  const { rows, report, kernelId, kernelName, choice, onChange, trans } = props;
  const row = rows.find(r => r.kernel_name === kernelName) ?? null;
  const choices = gpuChoices(trans, report, row, kernelId);
  const selected = choices.find(c => c.value === choice);
  const offered = rows.filter(r => r.pulled && r.kernel_name);
  return (
    <div className="jgc-picker-form">
      <label>
        {trans.__('Image')}
        <select
          className="jgc-picker-image"
          value={kernelName}
          onChange={event => onChange(event.target.value, choice)}
        >
          {offered.map(r => {
            const blocker = launchBlocker(trans, r);
            return (
              <option
                key={r.kernel_name}
                value={r.kernel_name}
                disabled={blocker !== ''}
                title={blocker || r.verdict.reason}
              >
                {`${shortImageName(r.reference)} — ${frameworkLabel(r)}${blocker ? ` (${blocker})` : ''}`}
              </option>
            );
          })}
        </select>
      </label>
      {row && (
        <p className="jgc-subtle jgc-picker-verdict">{row.verdict.reason}</p>
      )}
      <label>
        {trans.__('GPUs')}
        <select
          className="jgc-picker-gpus"
          value={choice}
          onChange={event => onChange(kernelName, event.target.value)}
        >
          <GpuOptions choices={choices} />
        </select>
      </label>
      {selected?.disabled && (
        <p className="jgc-note jgc-error">{selected.reason}</p>
      )}
    </div>
  );
}
