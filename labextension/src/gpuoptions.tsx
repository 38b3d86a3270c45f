import * as React from 'react';

import { IGpuChoice } from './gpuchoices';

/**
 * The options of a GPU selector. A choice with a reason says it in a few
 * words in its text (select menus do not show tooltips everywhere, and a
 * narrow select cut a whole sentence mid-word), and the whole sentence in its
 * tooltip and to assistive technology.
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
          aria-label={c.ariaLabel}
        >
          {c.option}
        </option>
      ))}
    </>
  );
}
