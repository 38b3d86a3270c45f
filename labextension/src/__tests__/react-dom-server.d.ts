// react-dom's server renderer, which the tests use to draw components to HTML
// without a DOM (react-dom comes with JupyterLab; its types do not).
declare module 'react-dom/server' {
  import type { ReactElement } from 'react';
  export function renderToStaticMarkup(element: ReactElement): string;
}
