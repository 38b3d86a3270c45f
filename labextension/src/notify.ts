/**
 * Notifications that are never cut off. JupyterLab shows at most 140
 * characters of a notification's text: a longer sentence (a refusal, an
 * administrator's reason) shows its first words and a "Details" button
 * that opens the whole of it.
 */
import { Notification, showErrorMessage } from '@jupyterlab/apputils';
import type { TranslationBundle } from '@jupyterlab/translation';

import { toastParts } from './format';

/**
 * Tell `text` in a notification of `kind`, the whole of it one click away
 * when JupyterLab would cut it.
 *
 * @param title The title of the details dialog (what the text is about).
 */
export function notify(
  trans: TranslationBundle,
  kind: 'error' | 'warning' | 'info',
  text: string,
  title: string,
  options: {
    autoClose?: number | false;
    /**
     * What the user may do about it, first (a "Details" button follows).
     */
    actions?: Notification.IAction[];
  } = {}
): void {
  const { message, details } = toastParts(trans, text);
  const autoClose = options.autoClose ?? false;
  const actions = [...(options.actions ?? [])];
  if (details) {
    actions.push({
      label: trans.__('Details'),
      callback: () => void showErrorMessage(title, details)
    });
  }
  Notification[kind](
    message,
    actions.length ? { autoClose, actions } : { autoClose }
  );
}
