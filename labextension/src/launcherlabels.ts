/**
 * Launcher card labels that wrap only where an image reference may break.
 *
 * A kernel spec's display name ends with its image reference
 * ("PyTorch 24.05 · nvcr.io/nvidia/pytorch:24.05-py3"), a long word for a
 * 120-pixel card: JupyterLab's card breaks it anywhere ("bookw|orm"). The
 * display name itself must stay as it is (JupyterLab writes it into every
 * notebook's metadata), and the card is JupyterLab's, so the break points go
 * into the text the card shows: a zero-width space after `/`, `:` and `@` and
 * before `-` and `_` (the places the panel breaks references at too). Only
 * the card's text node changes; its title, the Launcher's search and the
 * kernel spec keep the plain name.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';

import { referenceBreaks } from './imageformat';

/**
 * The break point put into labels (U+200B: no width, a line may break there).
 */
export const BREAK = '\u200b';

/**
 * `label` with a break point at each place a word of it may break.
 */
export function withBreakPoints(label: string): string {
  return label
    .split(' ')
    .map(word => referenceBreaks(word.split(BREAK).join('')).join(BREAK))
    .join(' ');
}

/**
 * Give the card labels under `root` their break points (idempotent).
 */
export function breakLauncherLabels(root: ParentNode): void {
  root.querySelectorAll('.jp-LauncherCard-label').forEach(label => {
    const walker = document.createTreeWalker(label, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const text = node as Text;
      const broken = withBreakPoints(text.data);
      if (broken !== text.data) {
        text.data = broken; // React keeps the same node; a later render replaces the text
      }
    }
  });
}

/**
 * Keep the labels of every Launcher the page opens breakable, as JupyterLab
 * renders and re-renders its cards (kernel specs come and go with images).
 */
export function keepLauncherLabelsBreakable(app: JupyterFrontEnd): void {
  app.commands.commandExecuted.connect((_, executed) => {
    if (executed.id !== 'launcher:create') {
      return;
    }
    void executed.result.then((widget: unknown) => {
      const node = (widget as { node?: unknown } | undefined)?.node;
      if (!(node instanceof HTMLElement)) {
        return;
      }
      breakLauncherLabels(node);
      const observer = new MutationObserver(() => breakLauncherLabels(node));
      observer.observe(node, {
        childList: true,
        subtree: true,
        characterData: true
      });
      (
        widget as { disposed?: { connect(f: () => void): void } }
      ).disposed?.connect(() => observer.disconnect());
    });
  });
}
