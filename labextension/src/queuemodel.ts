/**
 * The host-wide GPU wait queue, and how the user's waiting starts end: a
 * start that leaves the queue is looked at until it runs or is gone, and
 * told once (`queueEnded`).
 */
import type { ServerConnection } from '@jupyterlab/services';
import type { TranslationBundle } from '@jupyterlab/translation';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { cancelQueued, getQueue } from './api';
import { OptionalRoute } from './refresh';
import { QueueOutcome, departedTickets, departureOutcome } from './sharing';
import { IGpuQueue, IQueuedStart } from './sharingtypes';

/**
 * How a waiting start of the user's ended (the `queueEnded` signal).
 */
export interface IQueueEnd {
  ticket: IQueuedStart;
  outcome: QueueOutcome;
}

/**
 * How many times a start that left the queue is looked at before it counts
 * as gone.
 */
const DEPARTURE_LOOKS = 60;

/**
 * How many looks a start that left the queue, and that the server does not
 * know, may still be launching before it counts as gone.
 */
const GONE_AFTER_LOOKS = 20;

export interface IQueueModelOptions {
  serverSettings: ServerConnection.ISettings;
  trans: TranslationBundle;
  /**
   * A kernel's execution state, or `null` when the server does not know it.
   */
  kernelState: (kernelId: string) => Promise<string | null>;
  /**
   * Milliseconds between two looks at a start that left the queue.
   */
  departurePollMs: number;
  /**
   * Whether the user's kernel holds GPUs now (the GPUs as last read).
   */
  holdsGpus: (kernelId: string) => boolean;
  /**
   * Called when a waiting start got its GPUs (its hours start to count).
   */
  onStarted: () => void;
}

export class QueueModel {
  constructor(options: IQueueModelOptions) {
    this._options = options;
  }

  /**
   * The queue; `null` when the server has none (an older server) or it
   * could not be read.
   */
  get queue(): IGpuQueue | null {
    return this._queue;
  }

  /**
   * Emitted when one of the user's waiting starts leaves the queue, with how
   * it ended.
   */
  get queueEnded(): ISignal<this, IQueueEnd> {
    return this._queueEnded;
  }

  /**
   * Read the queue, and follow the user's starts that left it.
   */
  async refresh(): Promise<void> {
    if (this._route.resting) {
      return;
    }
    const before = this._queue;
    try {
      const { serverSettings, trans } = this._options;
      this._queue = await getQueue(serverSettings, trans);
    } catch (error) {
      // Quietly: the panel shows no queue rather than an error.
      this._route.note(error);
      return;
    }
    for (const ticket of departedTickets(before, this._queue)) {
      // Told once per kernel: two reads under way at once (the poll, a
      // refresh) both see the start leave, and a read that answers late can
      // bring back a queue from before it left.
      const kernelId = ticket.kernel_id ?? '';
      if (!this._departed.has(kernelId)) {
        this._departed.add(kernelId);
        void this._followDeparture(ticket);
      }
    }
  }

  /**
   * Cancel one of the user's waiting starts (its start fails). Rejects with
   * the server's sentence.
   */
  async cancel(kernelId: string, notebook?: string | null): Promise<void> {
    this._cancelledHere.add(kernelId);
    try {
      const { serverSettings, trans } = this._options;
      await cancelQueued(kernelId, serverSettings, trans);
    } catch (error) {
      this._cancelledHere.delete(kernelId);
      throw error;
    }
    if (notebook) {
      this._cancelledNotebooks.set(notebook, Date.now());
    }
  }

  /**
   * Whether the user cancelled, from this page, a wait for a GPU of the
   * notebook at `path` at `since` (ms since the epoch) or later.
   */
  cancelledSince(path: string, since: number): boolean {
    const at = this._cancelledNotebooks.get(path);
    return at !== undefined && at >= since;
  }

  /**
   * Ask again at the next refresh, were the route missing.
   */
  reset(): void {
    this._route.reset();
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    for (const looks of this._departures) {
      looks.dispose();
    }
    this._departures.clear();
    Signal.clearData(this);
  }

  /**
   * Find out how a start that left the queue ended: it holds its GPUs or
   * runs (started), or its kernel is gone (timed out, cancelled). The first
   * look is now, the next ones on a poll of their own.
   */
  private async _followDeparture(ticket: IQueuedStart): Promise<void> {
    let look = 0;
    const looks = new Poll({
      auto: false,
      factory: async () => {
        look += 1;
        if (await this._look(ticket, look)) {
          looks.dispose();
        }
      },
      frequency: { interval: this._options.departurePollMs, backoff: false },
      name: 'gpu-containers:departure',
      standby: 'never'
    });
    this._departures.add(looks);
    looks.disposed.connect(() => this._departures.delete(looks));
    if (await this._look(ticket, look)) {
      looks.dispose();
    } else {
      void looks.schedule({
        interval: this._options.departurePollMs,
        phase: 'started'
      });
    }
  }

  /**
   * Look at a start that left the queue, for the `look`th time (from 0).
   * Resolves `true` once its end is told (or the model is gone).
   */
  private async _look(ticket: IQueuedStart, look: number): Promise<boolean> {
    const kernelId = ticket.kernel_id ?? '';
    if (this._isDisposed) {
      return true;
    }
    if (look >= DEPARTURE_LOOKS) {
      this._end(ticket, 'gone');
      return true;
    }
    let state: string | null;
    try {
      // Cancelled here and holding no GPU: whatever runs now (a restart's
      // kernel stays listed) did not start on the GPUs it waited for.
      state = this._options.holdsGpus(kernelId)
        ? 'idle'
        : this._cancelledHere.has(kernelId)
          ? null
          : await this._options.kernelState(kernelId);
    } catch {
      state = 'starting'; // not known yet: look again
    }
    const outcome = departureOutcome(
      ticket,
      state,
      this._cancelledHere.has(kernelId),
      Date.now()
    );
    // Unknown to the server: gone, or granted and still launching (the
    // kernels API lists a kernel only once it runs). Give it a while: longer
    // for a cluster's job, whose container starts on its node after the job.
    const launching =
      outcome === 'gone' &&
      look < (ticket.scheduler ? DEPARTURE_LOOKS - 1 : GONE_AFTER_LOOKS);
    if (outcome === undefined || launching) {
      return false;
    }
    this._end(ticket, outcome);
    if (outcome === 'started') {
      this._options.onStarted();
    }
    return true;
  }

  private _end(ticket: IQueuedStart, outcome: QueueOutcome): void {
    this._cancelledHere.delete(ticket.kernel_id ?? '');
    this._queueEnded.emit({ ticket, outcome });
  }

  private _options: IQueueModelOptions;
  private _queue: IGpuQueue | null = null;
  private _route = new OptionalRoute();
  private _cancelledHere = new Set<string>();
  private _cancelledNotebooks = new Map<string, number>();
  private _departed = new Set<string>();
  private _departures = new Set<Poll>();
  private _queueEnded = new Signal<this, IQueueEnd>(this);
  private _isDisposed = false;
}
