/**
 * Images the administrator retired (issue 31, item 5): a notebook whose
 * image is retired, or no longer on the server, opens with the
 * administrator's message and a one-click move to the image they redirect
 * to. The move is the reader's choice, never silent, and the notebook records
 * it (`metadata.gpu_containers.moved`: from, to, why), next to the
 * environment stamp its new kernel writes.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { NotebookPanel } from '@jupyterlab/notebook';
import type { TranslationBundle } from '@jupyterlab/translation';

import { messageOf } from './api';
import { INotebookRetiredImage } from './environmenttypes';
import { setInSection } from './metadatakeys';
import { notify } from './notify';
import type { IGpuContainersModel } from './tokens';

/**
 * The move's key under the notebook's `gpu_containers`.
 */
export const MOVED_KEY = 'moved';

/**
 * What a notebook records of its move off a retired or removed image.
 */
export interface IMoveRecord {
  from: string;
  to: string;
  /**
   * `retired`: the administrator retired it; `removed`: it was gone.
   */
  reason: INotebookRetiredImage['state'];
  /**
   * The administrator's message, as it was then (`''`: none).
   */
  message: string;
}

/**
 * What the reader chose.
 */
export type RetiredChoice = 'move' | 'later';

/**
 * How many times the kernel specs are read again after the redirect's pull,
 * two seconds apart, for its kernel spec (the server offers it once its
 * short readiness probe answered).
 */
const SPEC_READS = 30;

/**
 * Ask whether a notebook on a retired or removed image moves to the
 * administrator's redirect.
 */
export async function askRetired(
  trans: TranslationBundle,
  retired: INotebookRetiredImage
): Promise<RetiredChoice> {
  const body = [
    retired.state === 'retired'
      ? trans.__(
          'The administrator retired %1, the image this notebook runs on.',
          retired.image
        )
      : trans.__(
          '%1, the image this notebook last ran on, is no longer on this server.',
          retired.image
        ),
    retired.message ? trans.__('Their message: %1', retired.message) : '',
    retired.redirect
      ? retired.redirect_kernel_name
        ? trans.__(
            'Its notebooks move to %1: the kernel starts again on it.',
            retired.redirect
          )
        : trans.__(
            'Its notebooks move to %1, which is pulled first: then the kernel starts again on it.',
            retired.redirect
          )
      : trans.__(
          'There is no image to move to: choose another with Kernel › Change Kernel….'
        ),
    retired.state === 'retired'
      ? trans.__('Until you move it, the notebook keeps its image.')
      : ''
  ]
    .filter(Boolean)
    .join(' ');
  const buttons = [
    Dialog.cancelButton({
      label: retired.redirect ? trans.__('Not Now') : trans.__('Close')
    }),
    ...(retired.redirect
      ? [
          Dialog.okButton({
            label: trans.__('Move to %1', retired.redirect),
            actions: ['move']
          })
        ]
      : [])
  ];
  const result = await showDialog({
    title:
      retired.state === 'retired'
        ? trans.__("This Notebook's Image Is Retired")
        : trans.__("This Notebook's Image Is Gone"),
    body,
    buttons,
    defaultButton: buttons.length - 1
  });
  return result.button.accept && result.button.actions.includes('move')
    ? 'move'
    : 'later';
}

/**
 * JupyterLab's own question for a notebook whose kernel spec is gone ("Select
 * Kernel", put up as the notebook opens): the move's question answers it (and
 * once moved, a click on its default would start another kernel over the
 * moved one), so it goes. Found through the dialog tracker: a dialog whose
 * kernel selector names this notebook (its text quotes the session's name).
 */
export function dismissKernelSelection(panel: NotebookPanel): void {
  const name = `"${panel.sessionContext.name}"`;
  Dialog.tracker.forEach(dialog => {
    const node = dialog.node;
    if (
      node.querySelector('select') &&
      (node.textContent ?? '').includes(name)
    ) {
      dialog.reject();
    }
  });
}

/**
 * The move a notebook's metadata records, or `null`.
 */
export function moveRecordOf(
  section: Record<string, unknown>
): IMoveRecord | null {
  const found = section[MOVED_KEY];
  if (typeof found !== 'object' || found === null || Array.isArray(found)) {
    return null;
  }
  const record = found as Record<string, unknown>;
  const text = (key: string) =>
    typeof record[key] === 'string' ? (record[key] as string) : '';
  if (!text('from') || !text('to')) {
    return null;
  }
  return {
    from: text('from'),
    to: text('to'),
    reason: text('reason') === 'removed' ? 'removed' : 'retired',
    message: text('message')
  };
}

/**
 * Move the notebook to the redirect: pulled first when the server lacks it,
 * the move recorded in the notebook (its pin of the old image dropped), the
 * notebook saved, and its kernel started on the redirect's kernel spec.
 * Returns whether it moved; says why not in a notification.
 */
export async function moveNotebook(
  panel: NotebookPanel,
  model: IGpuContainersModel,
  trans: TranslationBundle,
  retired: INotebookRetiredImage,
  pinKey: string,
  wait: (ms: number) => Promise<void> = ms =>
    new Promise(resolve => setTimeout(resolve, ms))
): Promise<boolean> {
  const target = retired.redirect;
  const failed = (message: string) => {
    notify(
      trans,
      'error',
      message,
      trans.__('The notebook did not move to %1', target)
    );
    return false;
  };
  let name = retired.redirect_kernel_name;
  if (!name) {
    try {
      const pull = await model.pull(target);
      if (pull.state !== 'done') {
        return failed(pull.message);
      }
    } catch (e) {
      return failed(messageOf(e));
    }
    const specs = panel.sessionContext.specsManager;
    for (let read = 0; read < SPEC_READS && !name; read++) {
      if (read > 0) {
        await wait(2000);
      }
      await specs.refreshSpecs();
      const found = Object.entries(specs.specs?.kernelspecs ?? {}).find(
        ([, spec]) =>
          (spec?.metadata?.gpu_containers as { image?: string } | undefined)
            ?.image === target
      );
      name = found?.[0] ?? '';
    }
    if (!name) {
      return failed(
        trans.__(
          '%1 was pulled, but the server offers no kernel for it: it may not be able to run one (the Images list says why).',
          target
        )
      );
    }
  }
  const record: IMoveRecord = {
    from: retired.image,
    to: target,
    reason: retired.state,
    message: retired.message
  };
  setInSection(panel.model, MOVED_KEY, record);
  setInSection(panel.model, pinKey, null);
  try {
    // Saved before the start, which reads the notebook (its GPU request), and after it: the
    // file then names the redirect's kernel spec, and reopens on it without asking again.
    await panel.context.save();
    const kernel = await panel.sessionContext.changeKernel({ name });
    const spec = await kernel?.spec;
    if (spec && panel.model) {
      panel.model.setMetadata('kernelspec', {
        name: spec.name,
        display_name: spec.display_name,
        language: spec.language
      });
    }
    await panel.context.save();
  } catch (e) {
    return failed(messageOf(e));
  }
  dismissKernelSelection(panel);
  return true;
}
