/**
 * How the front end reads the server again: every refresh is a `Poll` of
 * `@lumino/polling`, which pauses while the page is hidden (where asked) and
 * backs off while the server does not answer. A cadence is a plain Poll;
 * `ScheduledRefresh` is a Poll that ticks only when told (a retry soon, a
 * re-read while probes run); `OptionalRoute` says when a route an older
 * server lacks is left alone.
 */
import { IPoll, Poll } from '@lumino/polling';

import { ApiError } from './api';

/**
 * How long a route the server does not have (404) is left alone (ms): a
 * server upgraded meanwhile is noticed without a reload.
 */
export const MISSING_ROUTE_RETRY_MS = 60 * 1000;

/**
 * A poll's frequency for a refresh every `seconds` (at least `least`),
 * backing off up to `max` ms on failures. A Poll throws for an interval above
 * its max: a longer interval raises the max with it.
 */
export function frequency(
  seconds: number,
  least: number,
  max: number
): IPoll.Frequency {
  const interval = Math.min(Math.max(least, seconds) * 1000, Poll.MAX_INTERVAL);
  return { interval, backoff: true, max: Math.max(max, interval) };
}

/**
 * Reject a poll's tick when a read failed (`message` is not empty), so that
 * the poll backs off while the server does not answer.
 */
export function failed(message: string): void {
  if (message) {
    throw new Error(message);
  }
}

/**
 * A refresh at a time of the caller's choosing, not on a cadence: a Poll
 * that never ticks by itself. Scheduling it again replaces the time before;
 * it runs while the page is hidden too (as the timer it replaces did).
 */
export class ScheduledRefresh {
  constructor(name: string, refresh: () => Promise<void>) {
    this._poll = new Poll({
      auto: false,
      factory: refresh,
      frequency: { interval: Poll.NEVER, backoff: false, max: Poll.NEVER },
      name,
      standby: 'never'
    });
  }

  /**
   * Refresh once, `ms` from now (and not at the time scheduled before).
   */
  schedule(ms: number): void {
    void this._poll.schedule({ interval: ms, phase: 'refreshed' });
  }

  /**
   * Forget the refresh scheduled, if any.
   */
  cancel(): void {
    void this._poll.stop();
  }

  dispose(): void {
    this._poll.dispose();
  }

  private _poll: Poll;
}

/**
 * A route that an older server lacks, or that is not this user's: after a
 * 404, 403 or 405 it is quietly left alone for a while.
 */
export class OptionalRoute {
  /**
   * Whether the route is being left alone now.
   */
  get resting(): boolean {
    return Date.now() < this._until;
  }

  /**
   * Note a failed read: the route rests when the server said it is not
   * there (or not this user's).
   */
  note(error: unknown): void {
    const status = error instanceof ApiError ? error.status : undefined;
    if (status === 404 || status === 403 || status === 405) {
      this._until = Date.now() + MISSING_ROUTE_RETRY_MS;
    }
  }

  /**
   * Ask again at the next read (a refresh someone asked for).
   */
  reset(): void {
    this._until = 0;
  }

  private _until = 0;
}

/**
 * Refresh once, `ms` from now (a read soon after an action whose effect the
 * server shows shortly), on a ScheduledRefresh of its own that goes away
 * after its tick.
 */
export function refreshOnceIn(
  ms: number,
  name: string,
  refresh: () => Promise<void>
): void {
  const once: ScheduledRefresh = new ScheduledRefresh(name, async () => {
    try {
      await refresh();
    } finally {
      once.dispose();
    }
  });
  once.schedule(ms);
}
