/**
 * Saving a kernel's environment as an image, from the kernel's view: the
 * readers, the model's start, following, cancel and failures, and what the
 * section says at each step.
 */
import * as React from 'react';
import { ServerConnection } from '@jupyterlab/services';

import { removeSavedImage } from '../api';
import { translationBundle } from '../i18n';
import { SaveSection, saveProgress } from '../kernelview';
import { SaveModel } from '../savemodel';
import { ISave, saveOf, savesOf } from '../savetypes';
import { by, findAll, findOne, textOf } from './elements';

// No DOM in the node test environment (as in kernelview.spec.tsx).
jest.mock('@jupyterlab/ui-components', () => ({
  ReactWidget: class {},
  UseSignal: (props: { children: () => unknown }) => props.children()
}));

const trans = translationBundle();
const KERNEL = '5f0c3b1e-2d4a-4f7e-9c1b-8a6e2d3f4b5c';
const BASE = 'nvcr.io/nvidia/pytorch:24.05-py3';
const settings = ServerConnection.makeSettings({
  baseUrl: 'http://localhost:8888/base/',
  token: 'secret'
});

function makeSave(overrides: Partial<ISave> = {}): ISave {
  return {
    id: 'a'.repeat(32),
    kind: 'save',
    recipe: '',
    base: BASE,
    image:
      'localhost/jupyter-gpu-containers/saved/u1000/pytorch:20261127-120000',
    state: 'copying',
    message: '',
    error_status: 0,
    files: 12,
    bytes: 2048,
    log: [],
    image_id: '',
    started: 100,
    finished: 0,
    position: 0,
    ...overrides
  };
}

function reply(body: unknown, status = 200): Response {
  return new Response(status === 204 ? null : JSON.stringify(body), { status });
}

describe('the readers', () => {
  it('read a save and the list, and leave out what is not one', () => {
    expect(saveOf(makeSave())).toEqual(makeSave());
    expect(saveOf({ ...makeSave(), state: 'exploded' })).toBeNull();
    expect(saveOf({ id: 'x' })).toBeNull();
    expect(
      savesOf({ saves: [makeSave(), { id: 1 }], refusal: '' })?.saves
    ).toEqual([makeSave()]);
    expect(savesOf({ refusal: '' })).toBeNull();
  });
});

describe('the save model', () => {
  let request: jest.SpyInstance;

  beforeEach(() => {
    jest.useFakeTimers();
  });

  afterEach(() => {
    jest.useRealTimers();
    jest.restoreAllMocks();
  });

  function answer(...bodies: Array<[unknown, number?]>): void {
    request = jest.spyOn(ServerConnection, 'makeRequest');
    for (const [body, status] of bodies) {
      request.mockImplementationOnce(async () => reply(body, status));
    }
  }

  it('picks up the latest save of the kernel’s image, and follows it to its end', async () => {
    const older = makeSave({ id: 'b'.repeat(32), started: 50, state: 'done' });
    const other = makeSave({ id: 'c'.repeat(32), base: 'ubuntu:24.04' });
    const done = makeSave({ state: 'done', image_id: 'sha256:1' });
    answer(
      [{ saves: [older, other, makeSave()], refusal: '' }],
      [makeSave({ state: 'building', log: ['Step 1/4 : FROM sha256:…'] })],
      [done]
    );
    const saved = jest.fn();
    const model = new SaveModel({
      kernelId: KERNEL,
      serverSettings: settings,
      trans,
      onDone: saved
    });
    await model.load(BASE);
    expect(String(request.mock.calls[0][0])).toBe(
      'http://localhost:8888/base/gpu-containers/saves'
    );
    expect(model.save?.id).toBe('a'.repeat(32));
    expect(model.active).toBe(true);
    await jest.advanceTimersByTimeAsync(1000);
    expect(model.save?.state).toBe('building');
    expect(saved).not.toHaveBeenCalled();
    await jest.advanceTimersByTimeAsync(1000);
    expect(model.save).toEqual(done);
    expect(saved).toHaveBeenCalledTimes(1);
    await jest.advanceTimersByTimeAsync(5000);
    expect(request).toHaveBeenCalledTimes(3); // ended: read no more
    model.dispose();
  });

  it('starts a save under the typed name, and cancels it', async () => {
    answer(
      [{ saves: [], refusal: '' }],
      [makeSave(), 202],
      [makeSave({ state: 'cancelled' })]
    );
    const model = new SaveModel({
      kernelId: KERNEL,
      serverSettings: settings,
      trans
    });
    await model.load(BASE);
    expect(model.save).toBeNull();
    model.setName(' nlp ');
    await model.start();
    const [url, init] = request.mock.calls[1];
    expect(String(url)).toBe(
      `http://localhost:8888/base/gpu-containers/kernels/${KERNEL}/save`
    );
    expect(init).toMatchObject({
      method: 'POST',
      body: JSON.stringify({ name: 'nlp' })
    });
    expect(model.active).toBe(true);
    await model.cancel();
    expect(request.mock.calls[2][1]).toMatchObject({ method: 'DELETE' });
    expect(String(request.mock.calls[2][0])).toBe(
      `http://localhost:8888/base/gpu-containers/saves/${'a'.repeat(32)}`
    );
    expect(model.save?.state).toBe('cancelled');
    expect(model.active).toBe(false);
    model.dispose();
  });

  it('removes a saved image by its reference, and says why not in the server’s words', async () => {
    const image = makeSave().image;
    answer([null, 204], [{ message: 'x is not an image you saved.' }, 403]);
    await removeSavedImage(image, settings, trans);
    const [url, init] = request.mock.calls[0];
    expect(String(url)).toBe(
      `http://localhost:8888/base/gpu-containers/saved-images?image=${encodeURIComponent(image)}`
    );
    expect(init).toMatchObject({ method: 'DELETE' });
    await expect(removeSavedImage('x', settings, trans)).rejects.toThrow(
      'x is not an image you saved.'
    );
  });

  it('says in the server’s words why a save is refused, and what an older server cannot do', async () => {
    answer(
      [{ saves: [], refusal: '' }],
      [
        {
          message:
            'There are no packages of yours for nvcr.io/nvidia/pytorch:24.05-py3 to save.'
        },
        409
      ]
    );
    const model = new SaveModel({
      kernelId: KERNEL,
      serverSettings: settings,
      trans
    });
    await model.load(BASE);
    await model.start();
    expect(model.error).toBe(
      'There are no packages of yours for nvcr.io/nvidia/pytorch:24.05-py3 to save.'
    );
    expect(model.save).toBeNull();
    expect(model.asking).toBe(false);

    answer([{ message: 'Not Found' }, 404]);
    const old = new SaveModel({
      kernelId: KERNEL,
      serverSettings: settings,
      trans
    });
    await old.load(BASE);
    expect(old.refusal).toContain('This server cannot save environments');
  });
});

describe('the section', () => {
  function section(model: SaveModel): React.ReactElement {
    return <SaveSection model={model} trans={trans} />;
  }

  function modelWith(save: ISave | null, refusal = ''): SaveModel {
    const model = new SaveModel({
      kernelId: KERNEL,
      serverSettings: settings,
      trans
    });
    model.save = save;
    model.refusal = refusal;
    model.loaded = true;
    return model;
  }

  it('says where a save is, at each step', () => {
    expect(
      saveProgress(trans, makeSave({ state: 'queued', position: 1 }))
    ).toBe(
      'Waiting for a free slot: 1 in the queue (others are saving or building images)…'
    );
    expect(saveProgress(trans, makeSave())).toBe(
      'Copying your packages: 12 files, 2 KiB…'
    );
    expect(saveProgress(trans, makeSave({ state: 'building' }))).toContain(
      'Building the image'
    );
    expect(saveProgress(trans, makeSave({ state: 'done' }))).toBe(
      `Saved as ${makeSave().image}. New notebooks can start on it from the Launcher; it is yours alone.`
    );
    expect(saveProgress(trans, makeSave({ state: 'cancelled' }))).toBe(
      'Cancelled: nothing was saved.'
    );
    expect(
      saveProgress(
        trans,
        makeSave({ state: 'error', message: 'The disk is full.' })
      )
    ).toBe('The disk is full.');
  });

  it('offers a cancel while a save runs, and a new save once it ended', () => {
    const running = section(
      modelWith(makeSave({ state: 'building', log: ['Step 2/4'] }))
    );
    expect(
      findOne(running, by('button', 'jgc-save-start')).props.disabled
    ).toBe(true);
    expect(findAll(running, by('button', 'jgc-save-cancel'))).toHaveLength(1);
    expect(textOf(findOne(running, by('pre', 'jgc-save-log')))).toBe(
      'Step 2/4'
    );

    const ended = section(modelWith(makeSave({ state: 'done' })));
    expect(findOne(ended, by('button', 'jgc-save-start')).props.disabled).toBe(
      false
    );
    expect(findAll(ended, by('button', 'jgc-save-cancel'))).toHaveLength(0);
    expect(findAll(ended, by('pre', 'jgc-save-log'))).toHaveLength(0);
  });

  it('says why no save can be made, instead of the form', () => {
    const refused = section(
      modelWith(
        null,
        'Saving an environment as an image is turned off on this server.'
      )
    );
    expect(findAll(refused, by('form', 'jgc-save-form'))).toHaveLength(0);
    expect(textOf(refused)).toContain('turned off on this server');
  });
});
