/**
 * The panel's fair-sharing parts: the GPU wait queue (the user's waiting
 * starts, with a cancel button), the quota line, the administrator's pre-pull
 * schedule, and the admin view (holders with release and shut-down buttons,
 * the queue, everyone's GPU-hours). Each part is absent when the server does
 * not offer it.
 */
import { Notification, showErrorMessage } from '@jupyterlab/apputils';
import type { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

import { FormDialogBody, showFormDialog } from './dialogs';
import { notify } from './notify';
import { shortImageName } from './imageformat';
import { messageOf } from './api';
import type { IGpuContainersModel } from './tokens';
import {
  activityText,
  deadlineText,
  formatHours,
  formatWait,
  holderGpus,
  positionText,
  prePullLast,
  prePullNext,
  prePullRule,
  pruningText,
  quotaLine,
  quotaTitle,
  keptText,
  reclaimText,
  waitsFor
} from './sharing';
import { AdminAction, IAdminHolder, IQueuedStart } from './sharingtypes';

/**
 * The quota line under the GPUs' heading, or nothing when quotas are off.
 */
export function QuotaLine(props: {
  model: IGpuContainersModel;
  trans: TranslationBundle;
}): JSX.Element | null {
  const { model, trans } = props;
  const text = quotaLine(trans, model.quota);
  if (!text) {
    return null;
  }
  const quota = model.quota!;
  return (
    <p
      className="jgc-subtle jgc-quota"
      data-used-up={quota.left_hours <= 0 ? 'true' : undefined}
      title={quotaTitle(trans, quota)}
    >
      {text}
    </p>
  );
}

/**
 * One waiting start in a list.
 */
function TicketRow(props: {
  ticket: IQueuedStart;
  length: number;
  trans: TranslationBundle;
  onCancel?: (ticket: IQueuedStart) => void;
  onOpen?: (notebook: string) => void;
}): JSX.Element {
  const { ticket, length, trans, onCancel, onOpen } = props;
  const deadline = deadlineText(trans, ticket);
  const who = ticket.yours
    ? ticket.notebook
      ? trans.__('Your notebook %1', ticket.notebook.split('/').pop() ?? '')
      : trans.__('Your kernel')
    : ticket.user
      ? ticket.notebook
        ? trans._p('user: notebook', '%1: %2', ticket.user, ticket.notebook)
        : ticket.user
      : trans.__('Another user');
  return (
    <li
      className={`jgc-ticket ${ticket.yours ? 'jgc-mine' : 'jgc-other'}`}
      data-kernel-id={ticket.kernel_id ?? undefined}
      data-position={ticket.position}
    >
      <div className="jgc-ticket-head">
        {ticket.yours && ticket.notebook && onOpen ? (
          <button
            className="jgc-link-button jgc-ticket-who jgc-ticket-open"
            title={trans.__('Open %1', ticket.notebook)}
            onClick={() => onOpen(ticket.notebook ?? '')}
          >
            {who}
          </button>
        ) : (
          <span className="jgc-ticket-who" title={ticket.notebook ?? ''}>
            {who}
          </span>
        )}{' '}
        <span className="jgc-ticket-position">
          {positionText(trans, ticket, length)}
        </span>
        {onCancel && ticket.yours && ticket.kernel_id && (
          <button
            className="jgc-link-button jgc-ticket-cancel"
            title={trans.__('Stop waiting: the kernel does not start')}
            onClick={() => onCancel(ticket)}
          >
            {trans.__('Cancel')}
          </button>
        )}
      </div>
      <div className="jgc-subtle jgc-ticket-facts">
        <span>{trans.__('waits for %1', waitsFor(trans, ticket.gpus))}</span>
        <span>{trans.__('waited %1', formatWait(trans, ticket.waited))}</span>
        {deadline && (
          <span
            title={trans.__(
              'When a GPU frees cannot be known; this is the longest it waits.'
            )}
          >
            {deadline}
          </span>
        )}
      </div>
    </li>
  );
}

/**
 * The queue section: shown while starts wait for GPUs.
 */
export function QueueSection(props: {
  model: IGpuContainersModel;
  trans: TranslationBundle;
  /**
   * Open one of the user's notebooks (a waiting start's name opens it).
   */
  onOpen?: (notebook: string) => void;
}): JSX.Element | null {
  const { model, trans, onOpen } = props;
  const queue = model.queue;
  if (!queue || queue.queue.length === 0) {
    return null;
  }
  const length = Math.max(queue.length, queue.queue.length);
  const yours = queue.queue.filter(t => t.yours);
  const cancel = (ticket: IQueuedStart): void => {
    void model
      .cancelWaiting(ticket.kernel_id ?? '', ticket.notebook)
      .catch(error =>
        notify(
          trans,
          'error',
          messageOf(error),
          trans.__('Could not cancel the wait')
        )
      );
  };
  return (
    <section className="jgc-section jgc-queue-section">
      <h3>
        {trans.__('Waiting for GPUs')}{' '}
        <span className="jgc-subtle">
          {trans._n('%1 start waits', '%1 starts wait', length)}
        </span>
      </h3>
      {yours.length === 0 && (
        <p className="jgc-note">
          {trans.__(
            'None of them is yours: GPUs go to them first as they free.'
          )}
        </p>
      )}
      <ul className="jgc-queue">
        {queue.queue.map((ticket, i) => (
          <TicketRow
            key={ticket.kernel_id ?? `other-${ticket.position}-${i}`}
            ticket={ticket}
            length={length}
            trans={trans}
            onCancel={cancel}
            onOpen={onOpen}
          />
        ))}
      </ul>
    </section>
  );
}

/**
 * Ask the admin why (the user is told), then release or shut down.
 */
async function actOnHolder(
  model: IGpuContainersModel,
  holder: IAdminHolder,
  action: AdminAction,
  trans: TranslationBundle
): Promise<void> {
  const what = holder.notebook || holder.kernel_id.slice(0, 8);
  const body = new FormDialogBody<{ reason: string }, string>({
    className: 'jgc-admin-reason',
    initial: {
      reason:
        action === 'release'
          ? trans.__('Its GPUs were given back for other students.')
          : trans.__('It was shut down for other students.')
    },
    render: ({ state, change }) => (
      <label>
        {trans.__('Why (%1 is told):', holder.user || trans.__('its user'))}
        <textarea
          className="jp-mod-styled jgc-admin-reason-text"
          rows={3}
          value={state.reason}
          onChange={event => change({ reason: event.target.value })}
        />
      </label>
    ),
    value: state => state.reason.trim()
  });
  const reason = await showFormDialog({
    title:
      action === 'release'
        ? trans.__('Release the GPUs of %1?', what)
        : trans.__('Shut down the kernel of %1?', what),
    body,
    accept: action === 'release' ? trans.__('Release') : trans.__('Shut down'),
    focusNodeSelector: 'textarea'
  });
  if (reason === null) {
    return;
  }
  if (!reason) {
    await showErrorMessage(
      trans.__('A reason is needed'),
      trans.__('Say why: the user is told.')
    );
    return;
  }
  try {
    const reply = await model.adminAction(holder.kernel_id, action, reason);
    if (reply.state === 'requested') {
      // Another user's server carries it out when it next looks.
      Notification.info(
        trans.__(
          'Asked the server of %1 to do it: it does within a few seconds. %1 is told: %2',
          holder.user || trans.__('its user'),
          reply.message
        ),
        { autoClose: 8000 }
      );
    }
  } catch (error) {
    await showErrorMessage(
      action === 'release'
        ? trans.__('Could not release the GPUs of %1', what)
        : trans.__('Could not shut down the kernel of %1', what),
      messageOf(error)
    );
  }
}

/**
 * The admin section: shown only to users the server grants the admin view.
 */
export function AdminSection(props: {
  model: IGpuContainersModel;
  trans: TranslationBundle;
}): JSX.Element | null {
  const { model, trans } = props;
  const admin = model.admin;
  if (!admin) {
    return null;
  }
  return (
    <section className="jgc-section jgc-admin-section">
      <h3>{trans.__('Administration')}</h3>
      <h4>{trans.__('Holders')}</h4>
      {admin.holders.length === 0 ? (
        <p className="jgc-note">{trans.__('No kernel holds a GPU.')}</p>
      ) : (
        <ul className="jgc-admin-holders">
          {admin.holders.map(holder => {
            // Not "you": the administrator reads whether its user kept it.
            const reclaim =
              keptText(trans, holder.reclaim) ||
              reclaimText(trans, holder.reclaim);
            const activity = activityText(trans, holder.activity);
            return (
              <li
                key={holder.kernel_id}
                className="jgc-admin-holder"
                data-kernel-id={holder.kernel_id}
              >
                <div className="jgc-admin-holder-head">
                  <span className="jgc-admin-user">{holder.user}</span>{' '}
                  <span className="jgc-subtle" title={holder.notebook}>
                    {holder.notebook.split('/').pop() ||
                      holder.kernel_id.slice(0, 8)}
                  </span>
                  {!holder.server_alive && (
                    <span
                      className="jgc-note jgc-admin-orphan"
                      title={trans.__(
                        'The server this kernel belongs to is not running: an action removes its container.'
                      )}
                    >
                      {' '}
                      {trans.__('(its server is gone)')}
                    </span>
                  )}
                </div>
                <div className="jgc-subtle jgc-admin-holder-facts">
                  <span title={holder.image}>
                    {shortImageName(holder.image)}
                  </span>
                  <span>
                    {trans._n(
                      'GPU %2',
                      'GPUs %2',
                      holder.gpus.length,
                      holderGpus(holder)
                    )}
                  </span>
                  {holder.held_seconds !== null && (
                    <span>
                      {trans.__(
                        'held %1',
                        formatWait(trans, holder.held_seconds)
                      )}
                    </span>
                  )}
                  {activity && (
                    <span className="jgc-admin-activity">{activity}</span>
                  )}
                </div>
                {reclaim && (
                  <div className="jgc-note jgc-reclaim">{reclaim}</div>
                )}
                <div className="jgc-actions">
                  <button
                    className="jp-mod-styled jgc-admin-release"
                    onClick={() =>
                      void actOnHolder(model, holder, 'release', trans)
                    }
                  >
                    {trans.__('Release GPUs')}
                  </button>
                  <button
                    className="jp-mod-styled jp-mod-warn jgc-admin-shutdown"
                    onClick={() =>
                      void actOnHolder(model, holder, 'shutdown', trans)
                    }
                  >
                    {trans.__('Shut down')}
                  </button>
                </div>
              </li>
            );
          })}
        </ul>
      )}
      <h4>{trans.__('Queue')}</h4>
      {admin.queue.queue.length === 0 ? (
        <p className="jgc-note">{trans.__('No start waits for a GPU.')}</p>
      ) : (
        <ul className="jgc-queue jgc-admin-queue">
          {admin.queue.queue.map(ticket => (
            <TicketRow
              key={ticket.kernel_id ?? `${ticket.position}`}
              ticket={ticket}
              length={admin.queue.length}
              trans={trans}
            />
          ))}
        </ul>
      )}
      <h4>{trans.__('GPU-hours')}</h4>
      {!admin.quotas || admin.quotas.users.length === 0 ? (
        <p className="jgc-note">
          {trans.__('No GPU-hours used this period yet.')}
        </p>
      ) : (
        <table className="jgc-admin-quotas">
          <tbody>
            {admin.quotas.users.map(q => (
              <tr key={q.uid} data-user={q.user}>
                <td>
                  {q.group
                    ? trans._p('user (group)', '%1 (%2)', q.user, q.group)
                    : q.user}
                </td>
                <td title={quotaTitle(trans, q)}>
                  {q.limit_hours > 0
                    ? trans.__(
                        '%1 of %2 GPU-hours',
                        formatHours(q.used_hours),
                        formatHours(q.limit_hours)
                      )
                    : trans.__('%1 GPU-hours', formatHours(q.used_hours))}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

/**
 * The administrator's pre-pull schedule, in the images section: each image
 * with its rule, last run and next run, and pruning's summary. Nothing when
 * no image is scheduled and pruning is off.
 */
export function PrePullSchedule(props: {
  model: IGpuContainersModel;
  trans: TranslationBundle;
}): JSX.Element | null {
  const { model, trans } = props;
  const prePulls = model.prePulls;
  if (!prePulls) {
    return null;
  }
  const pruning = pruningText(trans, prePulls.pruning);
  if (prePulls.schedule.length === 0 && !pruning) {
    return null;
  }
  return (
    <div className="jgc-prepull">
      {prePulls.schedule.length > 0 && (
        <>
          <h4>{trans.__('Pulled ahead of time')}</h4>
          <ul className="jgc-prepull-schedule">
            {prePulls.schedule.map(entry => {
              const next = prePullNext(trans, entry);
              const failed =
                entry.last_run?.state === 'error' ||
                entry.last_run?.state === 'interrupted';
              return (
                <li
                  key={entry.image}
                  className="jgc-prepull-entry"
                  data-image={entry.image}
                  data-state={entry.last_run?.state ?? 'none'}
                >
                  <span className="jgc-prepull-image" title={entry.image}>
                    {shortImageName(entry.image)}
                  </span>{' '}
                  <span className="jgc-subtle jgc-prepull-facts">
                    {[
                      prePullRule(trans, entry, prePulls.time_zone),
                      prePullLast(trans, entry.last_run),
                      next
                    ]
                      .filter(Boolean)
                      .join(' · ')}
                  </span>
                  {failed && entry.last_run?.message && (
                    <div className="jgc-note jgc-prepull-error">
                      {entry.last_run.message}
                    </div>
                  )}
                </li>
              );
            })}
          </ul>
        </>
      )}
      {pruning && <p className="jgc-subtle jgc-pruning">{pruning}</p>}
    </div>
  );
}
