/**
 * The panel's queue section: a waiting start of the user's names its notebook,
 * which opens it; others' starts name nobody's notebook to click.
 */
import * as React from 'react';

import { translationBundle } from '../i18n';
import { QueueSection } from '../sharingpanel';
import type { IGpuContainersModel } from '../tokens';
import { by, findAll, textOf } from './elements';

jest.mock('@jupyterlab/apputils', () => ({}));
jest.mock('@jupyterlab/ui-components', () => ({
  ReactWidget: class {}
}));

const trans = translationBundle();

function modelWith(queue: unknown[]): IGpuContainersModel {
  return {
    queue: {
      queue,
      length: queue.length,
      wait_by_default: false,
      max_wait: 600
    },
    cancelWaiting: jest.fn().mockResolvedValue(undefined)
  } as unknown as IGpuContainersModel;
}

describe('QueueSection', () => {
  it("opens the user's waiting notebook from its name", () => {
    const onOpen = jest.fn();
    const section = (
      <QueueSection
        model={modelWith([
          { yours: false, gpus: 1, position: 1, waited: 30, deadline: '' },
          {
            kernel_id: 'k-9',
            yours: true,
            notebook: 'course/w.ipynb',
            gpus: 1,
            position: 2,
            waited: 5,
            deadline: ''
          }
        ])}
        trans={trans}
        onOpen={onOpen}
      />
    );
    const links = findAll(section, by('button', 'jgc-ticket-open'));
    expect(links.map(textOf)).toEqual(['Your notebook w.ipynb']);
    links[0].props.onClick();
    expect(onOpen).toHaveBeenCalledWith('course/w.ipynb');
    // Another user's start is text, nothing to click.
    expect(findAll(section, by('span', 'jgc-ticket-who')).map(textOf)).toEqual([
      'Another user'
    ]);
  });
});
