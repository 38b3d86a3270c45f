/**
 * Building an image from the workspace: which files can be built, the
 * build's model (following it to its end, its cancel, a server that forgot
 * it), what its tab says at each step, and the form that starts one.
 */
import * as React from 'react';
import { renderToStaticMarkup } from 'react-dom/server';
import { ServerConnection } from '@jupyterlab/services';

import { startBuild } from '../api';
import { BuildModel, recipeKind } from '../buildmodel';
import { BuildForm, BuildViewBody, buildProgress } from '../buildview';
import { translationBundle } from '../i18n';
import { ISave, saveOf, savesOf } from '../savetypes';

jest.mock('@jupyterlab/ui-components', () => ({
  ReactWidget: class {},
  UseSignal: (props: { children: () => unknown }) => props.children()
}));

const trans = translationBundle();
const settings = ServerConnection.makeSettings({
  baseUrl: 'http://localhost:8888/base/',
  token: 'secret'
});

function makeBuild(overrides: Partial<ISave> = {}): ISave {
  return {
    id: 'b'.repeat(32),
    kind: 'build',
    recipe: 'envs/nlp/Dockerfile',
    base: 'jgc/debian-ipykernel:bookworm',
    image: 'localhost/jupyter-gpu-containers/saved/u1000/nlp:20261127-120000',
    state: 'building',
    message: '',
    error_status: 0,
    files: 3,
    bytes: 4096,
    log: ['Step 1/3 : FROM jgc/debian-ipykernel:bookworm'],
    image_id: '',
    started: 100,
    finished: 0,
    position: 0,
    ...overrides
  };
}

function reply(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status });
}

describe('what can be built', () => {
  it('is a Dockerfile or a requirements.txt, as the server says', () => {
    expect(recipeKind('Dockerfile')).toBe('dockerfile');
    expect(recipeKind('Dockerfile.gpu')).toBe('dockerfile');
    expect(recipeKind('nlp.Dockerfile')).toBe('dockerfile');
    expect(recipeKind('requirements.txt')).toBe('requirements');
    for (const other of [
      'notes.txt',
      'dockerfile.md',
      'requirements-dev.txt',
      ''
    ]) {
      expect(recipeKind(other)).toBe('');
    }
  });

  it('reads a build and the list’s refusal', () => {
    expect(saveOf(makeBuild())).toEqual(makeBuild());
    expect(saveOf({ ...makeBuild(), kind: undefined })?.kind).toBe('save');
    expect(
      savesOf({ saves: [], refusal: '', build_refusal: 'Not here.' })
        ?.build_refusal
    ).toBe('Not here.');
  });
});

describe('the build model', () => {
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

  it('starts a build with its path, name and base', async () => {
    answer([makeBuild(), 202]);
    const started = await startBuild(
      'reqs/requirements.txt',
      'tiny',
      'a/b:1',
      settings,
      trans
    );
    expect(started.id).toBe('b'.repeat(32));
    const [url, init] = request.mock.calls[0];
    expect(String(url)).toBe(
      'http://localhost:8888/base/gpu-containers/builds'
    );
    expect(JSON.parse(init.body)).toEqual({
      path: 'reqs/requirements.txt',
      name: 'tiny',
      base: 'a/b:1'
    });
  });

  it('follows a build to its end, its log growing, and says so once', async () => {
    const longer = makeBuild({ log: ['Step 1/3', 'Step 2/3', 'hello'] });
    const done = makeBuild({
      state: 'done',
      log: [...longer.log, 'Successfully built']
    });
    answer([longer], [done]);
    const built = jest.fn();
    const model = new BuildModel({
      build: makeBuild(),
      serverSettings: settings,
      trans,
      onDone: built
    });
    await jest.advanceTimersByTimeAsync(1000);
    expect(model.build.log).toEqual(['Step 1/3', 'Step 2/3', 'hello']);
    expect(built).not.toHaveBeenCalled();
    await jest.advanceTimersByTimeAsync(1000);
    expect(model.active).toBe(false);
    expect(built).toHaveBeenCalledTimes(1);
    await jest.advanceTimersByTimeAsync(5000);
    expect(request).toHaveBeenCalledTimes(2); // ended: read no more
    model.dispose();
  });

  it('cancels a build, and one the server forgot is no longer under way', async () => {
    answer([
      makeBuild({ state: 'cancelled', message: 'The build … was cancelled.' })
    ]);
    const model = new BuildModel({
      build: makeBuild(),
      serverSettings: settings,
      trans,
      interval: 60_000
    });
    await model.cancel();
    expect(String(request.mock.calls[0][0])).toBe(
      `http://localhost:8888/base/gpu-containers/saves/${'b'.repeat(32)}`
    );
    expect(request.mock.calls[0][1].method).toBe('DELETE');
    expect(model.build.state).toBe('cancelled');
    model.dispose();

    answer([{ message: 'There is no save of yours.' }, 404]);
    const forgotten = new BuildModel({
      build: makeBuild(),
      serverSettings: settings,
      trans
    });
    await jest.advanceTimersByTimeAsync(1000);
    expect(forgotten.build.state).toBe('error');
    expect(forgotten.error).toContain('There is no save of yours.');
    forgotten.dispose();
  });
});

describe('the build’s tab', () => {
  it('says where the build is, shows its whole log and offers a cancel while it runs', () => {
    jest.spyOn(ServerConnection, 'makeRequest');
    const lines = Array.from({ length: 300 }, (_, i) => `line ${i}`);
    const model = new BuildModel({
      build: makeBuild({ log: lines }),
      serverSettings: settings,
      trans,
      interval: 60_000
    });
    const html = renderToStaticMarkup(
      <BuildViewBody model={model} trans={trans} />
    );
    expect(html).toContain('Build of envs/nlp/Dockerfile');
    expect(html).toContain('line 0\nline 1');
    expect(html).toContain('line 299');
    expect(html).toContain('Cancel Build');
    model.build = makeBuild({ state: 'done', log: lines });
    const after = renderToStaticMarkup(
      <BuildViewBody model={model} trans={trans} />
    );
    expect(after).not.toContain('Cancel Build');
    expect(after).toContain('New notebooks can start on it from the Launcher');
    model.dispose();
    jest.restoreAllMocks();
  });

  it('words each state', () => {
    expect(buildProgress(trans, makeBuild({ state: 'queued' }))).toBe(
      'Waiting to start…'
    );
    // All of the server's slots busy: its place in the queue.
    expect(
      buildProgress(trans, makeBuild({ state: 'queued', position: 2 }))
    ).toBe(
      'Waiting for a free slot: 2 in the queue (others are saving or building images)…'
    );
    expect(buildProgress(trans, makeBuild({ state: 'copying' }))).toContain(
      '3 files'
    );
    expect(buildProgress(trans, makeBuild({ state: 'cancelled' }))).toBe(
      'Cancelled: nothing was kept.'
    );
    expect(
      buildProgress(
        trans,
        makeBuild({ state: 'error', message: 'Line 2 (ADD): no.' })
      )
    ).toBe('Line 2 (ADD): no.');
  });

  it('asks a requirements.txt for its base, a Dockerfile only for a name', () => {
    const state = { name: '', base: 'a/b:1' };
    const reqs = renderToStaticMarkup(
      <BuildForm
        state={state}
        change={() => undefined}
        recipe="reqs/requirements.txt"
        requirements={true}
        bases={['a/b:1', 'c/d:2']}
        trans={trans}
      />
    );
    expect(reqs).toContain('<option value="c/d:2">c/d:2</option>');
    expect(reqs).toContain('Install into');
    const docker = renderToStaticMarkup(
      <BuildForm
        state={state}
        change={() => undefined}
        recipe="envs/Dockerfile"
        requirements={false}
        bases={[]}
        trans={trans}
      />
    );
    expect(docker).not.toContain('<select');
    expect(docker).toContain(
      'Builds envs/Dockerfile as a new image of your own'
    );
  });
});
