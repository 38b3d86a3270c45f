/**
 * A notebook's tab with no session takes up the one the server lists for its
 * notebook, and only then (sessionfollow.ts).
 */
import type { Session } from '@jupyterlab/services';

import {
  IFollowedTab,
  isTakingUp,
  sessionsToTakeUp,
  takeUpSession
} from '../sessionfollow';

function listed(
  path: string,
  kernelId: string | null,
  type = 'notebook'
): Session.IModel {
  return {
    id: `session-of-${path}`,
    name: path.split('/').pop() ?? path,
    path,
    type,
    kernel: kernelId
      ? {
          id: kernelId,
          name: 'gpuc-demo',
          execution_state: 'waiting for a GPU'
        }
      : null
  } as unknown as Session.IModel;
}

describe('sessionsToTakeUp', () => {
  it("gives an idle tab its notebook's listed kernel", () => {
    const tab: IFollowedTab = { path: 'course/w.ipynb', idle: true };
    const found = sessionsToTakeUp([tab], [listed('course/w.ipynb', 'k1')]);
    expect([...found.entries()]).toEqual([[tab, 'k1']]);
  });

  it('leaves a tab that has a session, or asks for one, alone', () => {
    const busy: IFollowedTab = { path: 'course/w.ipynb', idle: false };
    expect(
      sessionsToTakeUp([busy], [listed('course/w.ipynb', 'k1')]).size
    ).toBe(0);
  });

  it("takes nothing of another notebook's, a console's, or a session without a kernel", () => {
    const tab: IFollowedTab = { path: 'course/w.ipynb', idle: true };
    const running = [
      listed('course/other.ipynb', 'k2'),
      listed('course/w.ipynb', 'k3', 'console'),
      listed('course/w.ipynb', null),
      listed('w.ipynb', 'k4')
    ];
    expect(sessionsToTakeUp([tab], running).size).toBe(0);
  });

  it('gives every idle tab of the notebook the same kernel', () => {
    const tabs: IFollowedTab[] = [
      { path: 'w.ipynb', idle: true },
      { path: 'w.ipynb', idle: true },
      { path: 'w.ipynb', idle: false }
    ];
    const found = sessionsToTakeUp(tabs, [listed('w.ipynb', 'k1')]);
    expect([...found.values()]).toEqual(['k1', 'k1']);
    expect(found.has(tabs[2])).toBe(false);
  });
});

describe('takeUpSession', () => {
  function contextWith(session: unknown) {
    let answer: () => void = () => undefined;
    const context = {
      isDisposed: false,
      session,
      changeKernel: jest.fn(
        () =>
          new Promise<void>(resolve => {
            answer = resolve;
          })
      )
    };
    return { context, answer: () => answer() };
  }

  it('makes one request per tab, however many ask while it is under way', async () => {
    // Two would end with JupyterLab shutting down "the previous session": the
    // same one, and the wait with it.
    const { context, answer } = contextWith(null);
    const first = takeUpSession(context as any, 'k1');
    const second = takeUpSession(context as any, 'k1');
    expect(isTakingUp(context as any)).toBe(true);
    answer();
    await Promise.all([first, second]);
    expect(context.changeKernel).toHaveBeenCalledTimes(1);
    expect(context.changeKernel).toHaveBeenCalledWith({ id: 'k1' });
    expect(isTakingUp(context as any)).toBe(false);
  });

  it('asks nothing of a tab on that kernel already', async () => {
    const { context } = contextWith({
      isDisposed: false,
      kernel: { id: 'k1' }
    });
    await takeUpSession(context as any, 'k1');
    expect(context.changeKernel).not.toHaveBeenCalled();
  });

  it('settles when JupyterLab refuses (it says why itself)', async () => {
    const context = {
      isDisposed: false,
      session: null,
      changeKernel: jest.fn().mockRejectedValue(new Error('gone'))
    };
    await expect(takeUpSession(context as any, 'k1')).resolves.toBeUndefined();
    expect(isTakingUp(context as any)).toBe(false);
  });
});
