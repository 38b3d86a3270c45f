/**
 * A notebook's tab with no session takes up the one the server lists for its
 * notebook, and only then (sessionfollow.ts).
 */
import type { Session } from '@jupyterlab/services';

import { IFollowedTab, sessionsToTakeUp } from '../sessionfollow';

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
