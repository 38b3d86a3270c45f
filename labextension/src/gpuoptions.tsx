import * as React from 'react';

import { IGpuChoice } from './gpuchoices';

/**
 * The options of a GPU selector: a disabled choice carries its reason, in
 * the label (select menus do not show tooltips everywhere) and as tooltip.
 */
export function GpuOptions(props: { choices: IGpuChoice[] }): JSX.Element {
  return (
    <>
      {props.choices.map(c => (
        <option
          key={c.value}
          value={c.value}
          disabled={c.disabled}
          title={c.reason}
        >
          {c.option}
        </option>
      ))}
    </>
  );
}
