/**
 * An image reference that wraps only where a line may break in it.
 */
import * as React from 'react';

import { referenceBreaks } from './imageformat';

/**
 * `text` (an image reference) with a line-break opportunity (`<wbr>`) after
 * `/`, `:` and `@` and before `-` and `_`: a narrow sidebar wraps it there,
 * never in the middle of a word or of the tag.
 */
export function Breakable(props: { text: string }): JSX.Element {
  return (
    <>
      {referenceBreaks(props.text).map((part, i) => (
        <React.Fragment key={i}>
          {i > 0 && <wbr />}
          {part}
        </React.Fragment>
      ))}
    </>
  );
}
