/**
 * The one way the panel, the toolbar, the kernel's view and the notifications
 * write sizes and times, and cut a long text for a notification. No DOM, no
 * requests: everything here is unit-tested. The words about images are in
 * imageformat.ts, about GPUs in gpuformat.ts and gpuchoices.ts, about fair
 * sharing in sharing.ts.
 *
 * Helpers that write words for people take the extension's translation
 * bundle (`trans`) first. Not translated: byte units (IEC symbols: KiB, MiB,
 * GiB).
 */
import type { TranslationBundle } from '@jupyterlab/translation';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/**
 * A byte count for people, in binary units (powers of 1024, as GPU memory is
 * sold and as NVML and `nvidia-smi` count it): `1.5 GiB`, `300 MiB`, `0 B`; a
 * 32 GiB card reads `32 GiB`. `null` (unknown) is an em dash.
 */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) {
    return '—';
  }
  const rounded = (value: number, unit: number): number => {
    const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
    return Number(value.toFixed(digits));
  };
  let value = Math.max(0, bytes);
  let unit = 0;
  // Compare the rounded value: 1,048,575 B is `1 MiB`, not `1024 KiB`.
  while (rounded(value, unit) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${rounded(value, unit)} ${UNITS[unit]}`;
}

/**
 * The one way the panel, the toolbar and the kernel's view write a time:
 * the time of day (`14:05`) when it is today, the day and time
 * (`Tue 14:05`) otherwise; `''` for a time that cannot be read.
 *
 * @param at A time: an ISO string, or milliseconds since the epoch.
 * @param now The current time (for tests).
 */
export function formatClock(
  at: string | number | null | undefined,
  now: number = Date.now()
): string {
  const ms = typeof at === 'number' ? at : Date.parse(at ?? '');
  if (!Number.isFinite(ms)) {
    return '';
  }
  const date = new Date(ms);
  const today = new Date(now);
  const sameDay =
    date.getFullYear() === today.getFullYear() &&
    date.getMonth() === today.getMonth() &&
    date.getDate() === today.getDate();
  return sameDay
    ? date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : date.toLocaleString([], {
        weekday: 'short',
        hour: '2-digit',
        minute: '2-digit'
      });
}

/**
 * A notification's text as JupyterLab can show it uncut: the text itself
 * when it fits (`details` null), else its first words, cut between words,
 * and the whole text as `details` (behind the notification's button).
 */
export function toastParts(
  trans: TranslationBundle,
  text: string
): { message: string; details: string | null } {
  if (text.length <= NOTIFICATION_MAX_LENGTH) {
    return { message: text, details: null };
  }
  const more = trans.__('(more under Details)');
  const room = NOTIFICATION_MAX_LENGTH - more.length - 2;
  const cut = text.slice(0, room);
  const space = cut.lastIndexOf(' ');
  const head = (space > room / 2 ? cut.slice(0, space) : cut).replace(
    /[\s,;:]+$/,
    ''
  );
  return {
    message: trans._p('the start of a long text', '%1… %2', head, more),
    details: text
  };
}

/**
 * The longest notification text JupyterLab shows uncut.
 */
const NOTIFICATION_MAX_LENGTH = 140;
