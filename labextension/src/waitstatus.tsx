/**
 * A notebook whose kernel waits in the GPU queue, told as it is wherever the
 * user looks: the status bar says "Waiting for a GPU (position k)" for the
 * current notebook (JupyterLab's own kernel status cannot say it), and a
 * cell run meanwhile is said to wait for the kernel rather than run.
 */
import type { INotebookTracker } from '@jupyterlab/notebook';
import type { TranslationBundle } from '@jupyterlab/translation';
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import * as React from 'react';

import { gpuContainersIcon } from './icon';
import type { IGpuContainersModel } from './tokens';
import { waitingStatusText, waitingTicketOf } from './sharing';
import { IQueuedStart } from './sharingtypes';

/**
 * The status bar item: shown only while the current notebook's kernel
 * waits (its `isActive`).
 */
export class WaitingStatus extends ReactWidget {
  constructor(
    private readonly _model: IGpuContainersModel,
    private readonly _tracker: INotebookTracker,
    private readonly _trans: TranslationBundle
  ) {
    super();
    this.addClass('jgc-waiting-status');
    _tracker.currentChanged.connect(() => this.update());
  }

  /**
   * Whether the current notebook's kernel waits for a GPU.
   */
  get waiting(): boolean {
    return this.ticket !== null;
  }

  get ticket(): IQueuedStart | null {
    return waitingTicketOf(this._model.queue, this._tracker.currentWidget);
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this._model.changed}>
        {() => {
          const ticket = this.ticket;
          if (!ticket) {
            return <span />;
          }
          return (
            <span
              className="jgc-waiting-status-text"
              data-position={ticket.position}
              title={
                ticket.scheduler
                  ? this._trans.__(
                      "This notebook's kernel has not started: its job waits in %1's queue. The GPU Containers panel shows the wait and can cancel it.",
                      ticket.scheduler
                    )
                  : this._trans.__(
                      "This notebook's kernel has not started: it waits in the GPU queue until the GPUs it asks for are free. The GPU Containers panel shows the queue and can cancel the wait."
                    )
              }
            >
              <gpuContainersIcon.react
                tag="span"
                className="jgc-waiting-status-icon"
              />
              {waitingStatusText(this._trans, ticket)}
            </span>
          );
        }}
      </UseSignal>
    );
  }
}
