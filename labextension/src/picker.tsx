/**
 * The body of the "image and GPUs" dialog, shared by the notebook toolbar
 * (switch this notebook) and the palette command.
 */
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

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

export class ImagePicker extends ReactWidget {
  /**
   * @param rows The catalog's rows.
   * @param report The GPU report, for the GPU choices.
   * @param current The notebook's kernel spec name now ('' for none).
   * @param kernelId The notebook's kernel id: its GPUs count as free.
   * @param currentGpus The GPUs the kernel holds now (a count).
   */
  constructor(
    private readonly _rows: IImageRow[],
    private readonly _report: IGpuReport | null,
    current: string,
    private readonly _kernelId: string,
    currentGpus: number
  ) {
    super();
    this.addClass('jgc-picker');
    const start =
      _rows.find(r => r.kernel_name === current && isLaunchable(r)) ??
      _rows.find(isLaunchable);
    this._kernelName = start?.kernel_name ?? '';
    this._choice = `count:${currentGpus}`;
  }

  getValue(): IPickerValue {
    const row = this._rows.find(r => r.kernel_name === this._kernelName);
    if (!row) {
      return {
        kernelName: '',
        gpus: null,
        problem: 'Choose an image that can run a kernel.'
      };
    }
    const choices = gpuChoices(this._report, row, this._kernelId);
    const choice = choices.find(c => c.value === this._choice) ?? choices[0];
    return {
      kernelName: row.kernel_name,
      gpus: choice.request,
      problem: launchBlocker(row) || (choice.disabled ? choice.reason : '')
    };
  }

  render(): JSX.Element {
    return (
      <PickerForm
        rows={this._rows}
        report={this._report}
        kernelId={this._kernelId}
        kernelName={this._kernelName}
        choice={this._choice}
        onChange={(kernelName, choice) => {
          this._kernelName = kernelName;
          this._choice = choice;
          this.update();
        }}
      />
    );
  }

  private _kernelName: string;
  private _choice: string;
}

function PickerForm(props: {
  rows: IImageRow[];
  report: IGpuReport | null;
  kernelId: string;
  kernelName: string;
  choice: string;
  onChange: (kernelName: string, choice: string) => void;
}): JSX.Element {
  const { rows, report, kernelId, kernelName, choice, onChange } = props;
  const row = rows.find(r => r.kernel_name === kernelName) ?? null;
  const choices = gpuChoices(report, row, kernelId);
  const selected = choices.find(c => c.value === choice);
  const offered = rows.filter(r => r.pulled && r.kernel_name);
  return (
    <div className="jgc-picker-form">
      <label>
        Image
        <select
          className="jgc-picker-image"
          value={kernelName}
          onChange={event => onChange(event.target.value, choice)}
        >
          {offered.map(r => {
            const blocker = launchBlocker(r);
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
        GPUs
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
