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
 *
 * The cards of retired images (ImageCatalog.deprecated_images: their kernel
 * specs say `metadata.gpu_containers.retired`) are hidden: their specs stay,
 * so that the notebooks on them still start and offer their move, but no new
 * notebook or console is started on them from the Launcher. JupyterLab's
 * notebook and console plugins add a card for every spec, and the Launcher's
 * registry has no way to leave one out: the card is found by its title, which
 * for a kernel's card is its spec's display name.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import type { KernelSpec } from '@jupyterlab/services';

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
 * The class of a hidden card (the stylesheet's `display: none`).
 */
export const RETIRED_CARD_CLASS = 'jgc-retired-card';

/**
 * The display names of the kernel specs of retired images.
 */
export function retiredDisplayNames(
  specs: KernelSpec.ISpecModels | null | undefined
): Set<string> {
  const names = new Set<string>();
  for (const spec of Object.values(specs?.kernelspecs ?? {})) {
    const own = spec?.metadata?.gpu_containers as
      { retired?: unknown } | undefined;
    if (spec && typeof own?.retired === 'object' && own.retired !== null) {
      names.add(spec.display_name);
    }
  }
  return names;
}

/**
 * Hide the cards under `root` whose title is in `retired`, and show again
 * those no longer in it (idempotent).
 */
export function hideRetiredCards(root: ParentNode, retired: Set<string>): void {
  root.querySelectorAll('.jp-LauncherCard').forEach(card => {
    const hide = retired.has(card.getAttribute('title') ?? '');
    if (card.classList.contains(RETIRED_CARD_CLASS) !== hide) {
      card.classList.toggle(RETIRED_CARD_CLASS, hide);
    }
  });
}

/**
 * Tend the cards of every Launcher the page opens, as JupyterLab renders and
 * re-renders them (kernel specs come and go with images): labels breakable,
 * retired images' cards hidden.
 */
export function tendLauncherCards(app: JupyterFrontEnd): void {
  const retired = () =>
    retiredDisplayNames(app.serviceManager.kernelspecs.specs);
  app.commands.commandExecuted.connect((_, executed) => {
    if (executed.id !== 'launcher:create') {
      return;
    }
    void executed.result.then((widget: unknown) => {
      const node = (widget as { node?: unknown } | undefined)?.node;
      if (!(node instanceof HTMLElement)) {
        return;
      }
      const tend = () => {
        breakLauncherLabels(node);
        hideRetiredCards(node, retired());
      };
      tend();
      const observer = new MutationObserver(tend);
      observer.observe(node, {
        childList: true,
        subtree: true,
        characterData: true,
        attributes: true,
        attributeFilter: ['title']
      });
      (
        widget as { disposed?: { connect(f: () => void): void } }
      ).disposed?.connect(() => observer.disconnect());
    });
  });
}
