import { ServerConnection } from '@jupyterlab/services';

import { ApiError } from '../api';
import { IPull } from '../imagetypes';
import {
  GpuContainersModel,
  IEventSourceLike,
  IModelOptions,
  messageOf,
  parseSnapshot
} from '../model';
import {
  makeCatalog,
  makeGpu,
  makeHolder,
  makePull,
  makeReport,
  makeRow,
  makeStatus
} from './fixtures';

const BASE = 'http://localhost:8888/lab/';
const settings = ServerConnection.makeSettings({
  baseUrl: BASE,
  token: 'secret token'
});

/**
 * An answer of the fake server: a function, so that every request gets a
 * fresh response (a body can be read only once).
 */
type Route = () => Response | Promise<Response>;

/**
 * Just what `requestAPI` reads of a response.
 */
function response(status: number, body: string): Response {
  return {
    ok: status >= 200 && status < 300,
    status,
    statusText: status < 300 ? 'OK' : 'Error',
    text: () => Promise.resolve(body)
  } as unknown as Response;
}

function ok(data: unknown, status = 200): Route {
  return () => response(status, JSON.stringify(data));
}

function fail(status: number, message: string): Route {
  return () => response(status, JSON.stringify({ message }));
}

function unreachable(): Route {
  return () => {
    throw new ServerConnection.NetworkError(new TypeError('Failed to fetch'));
  };
}

/**
 * A response that comes when the test says so.
 */
function deferred(): { route: Route; answer: (r: Response) => void } {
  let answer: (r: Response) => void = () => undefined;
  const promise = new Promise<Response>(resolve => {
    answer = resolve;
  });
  return { route: () => promise, answer };
}

/**
 * The fake server's routes, by `METHOD path` below `gpu-containers/`.
 */
let routes: Record<string, Route>;
let makeRequest: jest.SpyInstance;

/**
 * The requests the server saw, as `METHOD path`.
 */
function requests(key?: string): string[] {
  const all = makeRequest.mock.calls.map(
    ([url, init]: [string, RequestInit | undefined]) =>
      `${init?.method ?? 'GET'} ${url.slice(`${BASE}gpu-containers/`.length)}`
  );
  return key === undefined ? all : all.filter(k => k === key);
}

/**
 * The JSON body of the last `key` request.
 */
function lastBody(key: string): unknown {
  const calls = makeRequest.mock.calls.filter(
    ([url, init]: [string, RequestInit | undefined]) =>
      `${init?.method ?? 'GET'} ${url.slice(`${BASE}gpu-containers/`.length)}` ===
      key
  );
  const init = calls[calls.length - 1][1] as RequestInit;
  return JSON.parse(init.body as string);
}

/**
 * An event stream that the test drives.
 */
class FakeEventSource implements IEventSourceLike {
  constructor(readonly url: string) {}

  readyState = 1;
  closed = false;
  readonly listeners = new Map<string, Array<(e: { data?: string }) => void>>();

  addEventListener(
    type: string,
    listener: (event: { data?: string }) => void
  ): void {
    const list = this.listeners.get(type) ?? [];
    list.push(listener);
    this.listeners.set(type, list);
  }

  close(): void {
    this.closed = true;
    this.readyState = 2;
  }

  /**
   * Send an event named `type`, with a snapshot or raw data.
   */
  emit(type: string, data?: IPull | string): void {
    const text =
      data === undefined || typeof data === 'string'
        ? data
        : JSON.stringify(data);
    for (const listener of this.listeners.get(type) ?? []) {
      listener(text === undefined ? {} : { data: text });
    }
  }
}

let streams: FakeEventSource[];
let models: GpuContainersModel[];

function createModel(options: IModelOptions = {}): GpuContainersModel {
  const model = new GpuContainersModel({
    serverSettings: settings,
    openEvents: url => {
      const source = new FakeEventSource(url);
      streams.push(source);
      return source;
    },
    ...options
  });
  models.push(model);
  return model;
}

/**
 * Let pending promises settle (the fake server answers without any I/O).
 */
async function flush(): Promise<void> {
  for (let i = 0; i < 50; i++) {
    await Promise.resolve();
  }
}

const status = makeStatus();
const report = makeReport([makeGpu('0'), makeGpu('1')]);
const torch = makeRow();
const catalog = makeCatalog([torch]);
const eventsUrl = (id: string): string =>
  `${BASE}gpu-containers/pulls/${id}/events?token=secret%20token`;

beforeEach(() => {
  jest.useFakeTimers();
  streams = [];
  models = [];
  routes = {
    'GET status': ok(status),
    'GET gpus': ok(report),
    'GET images': ok(catalog)
  };
  makeRequest = jest
    .spyOn(ServerConnection, 'makeRequest')
    .mockImplementation(async (url: string, init: RequestInit = {}) => {
      const key = `${init.method ?? 'GET'} ${url.slice(`${BASE}gpu-containers/`.length)}`;
      const route = routes[key];
      return route
        ? route()
        : response(404, JSON.stringify({ message: `No route ${key}` }));
    });
});

afterEach(() => {
  for (const model of models) {
    model.dispose();
  }
  jest.clearAllTimers();
  jest.useRealTimers();
  jest.restoreAllMocks();
});

describe('messageOf', () => {
  it.each<[string, unknown, string]>([
    ['an ApiError', new ApiError('No free GPU.', 409), 'No free GPU.'],
    ['an Error', new TypeError('boom'), 'boom'],
    ['a string', 'plain words', 'plain words'],
    ['a number', 42, '42'],
    ['undefined', undefined, 'undefined']
  ])('gives the sentence of %s', (_, error, text) => {
    expect(messageOf(error)).toBe(text);
  });
});

describe('parseSnapshot', () => {
  it('parses a pull snapshot', () => {
    const pull = makePull();
    expect(parseSnapshot(JSON.stringify(pull))).toEqual(pull);
  });

  it.each<[string, string | undefined]>([
    ['no data', undefined],
    ['empty data', ''],
    ['text that is not JSON', 'keepalive'],
    ['null', 'null'],
    ['a number', '3'],
    ['an array', '[1, 2]'],
    ['an object without id', '{"state": "pulling"}'],
    ['an object without state', '{"id": "p-1"}'],
    ['an id that is not a string', '{"id": 1, "state": "pulling"}']
  ])('refuses %s', (_, data) => {
    expect(parseSnapshot(data)).toBeNull();
  });
});

describe('GpuContainersModel', () => {
  describe('before any answer', () => {
    it('knows nothing and has no errors', () => {
      const model = createModel();
      expect(model.serverSettings).toBe(settings);
      expect(model.status).toBeNull();
      expect(model.gpus).toBeNull();
      expect(model.catalog).toBeNull();
      expect(model.statusError).toBe('');
      expect(model.gpuError).toBe('');
      expect(model.catalogError).toBe('');
      expect(model.loadingImages).toBe(false);
      expect(model.pulls.size).toBe(0);
      expect(model.isDisposed).toBe(false);
      expect(requests()).toEqual([]);
    });

    it('uses the page settings by default', () => {
      const model = new GpuContainersModel();
      models.push(model);
      expect(model.serverSettings.baseUrl).toBe(
        ServerConnection.makeSettings().baseUrl
      );
    });
  });

  describe('refreshGpus', () => {
    it('reads the status and the GPUs, and says so once', async () => {
      const model = createModel();
      const changed = jest.fn();
      model.changed.connect(changed);
      await model.refreshGpus();
      // The queue, the admin view, the user's notices and the cluster too
      // (404 here: an older server).
      expect(requests().sort()).toEqual([
        'GET admin',
        'GET admin/notices',
        'GET cluster',
        'GET gpus',
        'GET queue',
        'GET status'
      ]);
      expect(makeRequest.mock.calls[0][2]).toBe(settings);
      expect(model.status).toEqual(status);
      expect(model.gpus).toEqual(report);
      expect(model.statusError).toBe('');
      expect(model.gpuError).toBe('');
      expect(changed).toHaveBeenCalledTimes(1);
    });

    it("puts the server's sentence in gpuError when the GPUs cannot be read", async () => {
      routes['GET gpus'] = fail(500, 'No free GPU: NVML is not answering.');
      const model = createModel();
      await expect(model.refreshGpus()).resolves.toBeUndefined();
      expect(model.gpus).toBeNull();
      expect(model.gpuError).toBe('No free GPU: NVML is not answering.');
      expect(model.status).toEqual(status);
      expect(model.statusError).toBe('');
    });

    it("puts the server's sentence in statusError when the status cannot be read", async () => {
      routes['GET status'] = fail(503, 'Docker engine lookup failed.');
      const model = createModel();
      await model.refreshGpus();
      expect(model.status).toBeNull();
      expect(model.statusError).toBe('Docker engine lookup failed.');
      expect(model.gpus).toEqual(report);
      expect(model.gpuError).toBe('');
    });

    it('says when the server cannot be reached', async () => {
      routes['GET status'] = unreachable();
      routes['GET gpus'] = unreachable();
      const model = createModel();
      await model.refreshGpus();
      const sentence = 'Could not reach the Jupyter server: Failed to fetch';
      expect(model.statusError).toBe(sentence);
      expect(model.gpuError).toBe(sentence);
    });

    it('clears an error once the server answers again', async () => {
      routes['GET gpus'] = fail(500, 'NVML failed.');
      const model = createModel();
      await model.refreshGpus();
      expect(model.gpuError).toBe('NVML failed.');
      routes['GET gpus'] = ok(report);
      await model.refreshGpus();
      expect(model.gpuError).toBe('');
      expect(model.gpus).toEqual(report);
    });

    it('forgets stale GPUs when they can no longer be read', async () => {
      const model = createModel();
      await model.refreshGpus();
      expect(model.gpus).toEqual(report);
      routes['GET gpus'] = fail(500, 'NVML failed.');
      await model.refreshGpus();
      expect(model.gpus).toBeNull();
    });
  });

  describe('refreshImages', () => {
    it('reads the catalog, saying when it is loading', async () => {
      const slow = deferred();
      routes['GET images'] = slow.route;
      const model = createModel();
      const seen: boolean[] = [];
      model.changed.connect(() => seen.push(model.loadingImages));
      const done = model.refreshImages();
      expect(model.loadingImages).toBe(true);
      expect(seen).toEqual([true]);
      slow.answer(response(200, JSON.stringify(catalog)));
      await done;
      expect(model.loadingImages).toBe(false);
      expect(seen).toEqual([true, false]);
      expect(model.catalog).toEqual(catalog);
      expect(model.catalogError).toBe('');
      // The quota and the pre-pull schedule with the catalog (404 here: an
      // older server).
      expect(requests().sort()).toEqual([
        'GET images',
        'GET prepull',
        'GET quota'
      ]);
    });

    it("puts the server's sentence in catalogError and keeps the last catalog", async () => {
      const model = createModel();
      await model.refreshImages();
      routes['GET images'] = fail(503, 'The Docker engine is not running.');
      await expect(model.refreshImages()).resolves.toBeUndefined();
      expect(model.catalogError).toBe('The Docker engine is not running.');
      expect(model.catalog).toEqual(catalog);
      expect(model.loadingImages).toBe(false);
      routes['GET images'] = ok(catalog);
      await model.refreshImages();
      expect(model.catalogError).toBe('');
    });

    // The catalog poll (every 10 min here) reads at once, then stays away.
    it('reads the catalog again while images are being probed, a bounded number of times', async () => {
      routes['GET images'] = ok(makeCatalog([makeRow({ kernel_ready: null })]));
      createModel({ imageInterval: 600 });
      await jest.advanceTimersByTimeAsync(1);
      expect(requests('GET images')).toHaveLength(1);
      await jest.advanceTimersByTimeAsync(1800);
      expect(requests('GET images')).toHaveLength(1);
      await jest.advanceTimersByTimeAsync(300);
      expect(requests('GET images')).toHaveLength(2);
      await jest.advanceTimersByTimeAsync(2000);
      expect(requests('GET images')).toHaveLength(3);
      // However long the probes take, the re-reads stop after ten.
      await jest.advanceTimersByTimeAsync(60_000);
      expect(requests('GET images')).toHaveLength(11);
    });

    it('reads a failed catalog again soon, a few times, then leaves it to the poll', async () => {
      // The first read after a server restart failed (the request was lost).
      routes['GET images'] = fail(503, 'The Docker engine is not running.');
      // The poll's own next tick after a failed first one is drawn at random
      // anywhere up to its interval (Lumino's backoff from an immediate tick):
      // pinned at half of it, so that only this model's retries come within
      // the minute and a half looked at here.
      jest.spyOn(Math, 'random').mockReturnValue(0.5);
      const model = createModel({ imageInterval: 600 });
      await jest.advanceTimersByTimeAsync(1);
      expect(requests('GET images')).toHaveLength(1);
      expect(model.catalogError).toBe('The Docker engine is not running.');
      await jest.advanceTimersByTimeAsync(2000);
      expect(requests('GET images')).toHaveLength(2);
      await jest.advanceTimersByTimeAsync(5000);
      expect(requests('GET images')).toHaveLength(3);
      await jest.advanceTimersByTimeAsync(10_000);
      expect(requests('GET images')).toHaveLength(4);
      // Three in a row: the poll's own schedule from here.
      await jest.advanceTimersByTimeAsync(60_000);
      expect(requests('GET images')).toHaveLength(4);
      // A read that succeeds ends the errors, and a later failure is retried soon again.
      routes['GET images'] = ok(catalog);
      await model.refreshImages();
      expect(model.catalog).toEqual(catalog);
      routes['GET images'] = fail(503, 'The Docker engine is not running.');
      await model.refreshImages();
      routes['GET images'] = ok(catalog);
      await jest.advanceTimersByTimeAsync(2000);
      expect(model.catalogError).toBe('');
      model.dispose();
    });

    it('stops re-reading once the probes are over', async () => {
      routes['GET images'] = ok(makeCatalog([makeRow({ kernel_ready: null })]));
      const model = createModel({ imageInterval: 600 });
      await jest.advanceTimersByTimeAsync(1);
      routes['GET images'] = ok(catalog);
      await jest.advanceTimersByTimeAsync(2100);
      expect(requests('GET images')).toHaveLength(2);
      expect(model.catalog).toEqual(catalog);
      await jest.advanceTimersByTimeAsync(30_000);
      expect(requests('GET images')).toHaveLength(2);
    });

    it('does not wait for images that are not pulled', async () => {
      routes['GET images'] = ok(
        makeCatalog([makeRow({ pulled: false, kernel_ready: null })])
      );
      createModel({ imageInterval: 600 });
      await jest.advanceTimersByTimeAsync(1);
      expect(requests('GET images')).toHaveLength(1);
      await jest.advanceTimersByTimeAsync(30_000);
      expect(requests('GET images')).toHaveLength(1);
    });
  });

  describe('polling', () => {
    it('reads everything at once, then the GPUs and the catalog at their own pace', async () => {
      createModel({ gpuInterval: 5, imageInterval: 60 });
      await jest.advanceTimersByTimeAsync(1);
      expect(requests('GET status')).toHaveLength(1);
      expect(requests('GET gpus')).toHaveLength(1);
      expect(requests('GET images')).toHaveLength(1);
      await jest.advanceTimersByTimeAsync(5000);
      expect(requests('GET gpus')).toHaveLength(2);
      expect(requests('GET status')).toHaveLength(2);
      expect(requests('GET images')).toHaveLength(1);
      await jest.advanceTimersByTimeAsync(55_000);
      expect(requests('GET gpus')).toHaveLength(13);
      expect(requests('GET images')).toHaveLength(2);
    });

    it('follows new intervals', async () => {
      const model = createModel({ gpuInterval: 5, imageInterval: 60 });
      await jest.advanceTimersByTimeAsync(1);
      model.setIntervals(10, 30);
      // The ticks already scheduled keep their time; then the new pace.
      await jest.advanceTimersByTimeAsync(5000);
      expect(requests('GET gpus')).toHaveLength(2);
      await jest.advanceTimersByTimeAsync(9000);
      expect(requests('GET gpus')).toHaveLength(2);
      await jest.advanceTimersByTimeAsync(1000);
      expect(requests('GET gpus')).toHaveLength(3);
      await jest.advanceTimersByTimeAsync(45_000);
      expect(requests('GET images')).toHaveLength(2);
      await jest.advanceTimersByTimeAsync(30_000);
      expect(requests('GET images')).toHaveLength(3);
    });

    it('accepts intervals longer than the back-off limits', async () => {
      const model = createModel();
      await jest.advanceTimersByTimeAsync(1);
      expect(() => model.setIntervals(120, 3600)).not.toThrow();
      await jest.advanceTimersByTimeAsync(5000); // the tick already scheduled
      expect(requests('GET gpus')).toHaveLength(2);
      await jest.advanceTimersByTimeAsync(119_000);
      expect(requests('GET gpus')).toHaveLength(2);
      await jest.advanceTimersByTimeAsync(1000);
      expect(requests('GET gpus')).toHaveLength(3);
      expect(() => createModel({ gpuInterval: 300 })).not.toThrow();
    });

    it('keeps intervals of at least 1 s for the GPUs and 5 s for the catalog', async () => {
      const model = createModel();
      await jest.advanceTimersByTimeAsync(1);
      model.setIntervals(0, 0);
      await jest.advanceTimersByTimeAsync(60_000);
      // 5 s, then every second; the catalog at 60 s, then every 5 s.
      expect(requests('GET gpus').length).toBeLessThanOrEqual(1 + 1 + 55);
      expect(requests('GET gpus').length).toBeGreaterThanOrEqual(50);
      await jest.advanceTimersByTimeAsync(10_000);
      expect(requests('GET images').length).toBeLessThanOrEqual(4);
    });

    it('backs off while the server does not answer, and recovers', async () => {
      // Lumino's back-off draws its intervals at random: fix the draw.
      jest.spyOn(Math, 'random').mockReturnValue(0.5);
      routes['GET status'] = unreachable();
      routes['GET gpus'] = unreachable();
      routes['GET images'] = unreachable();
      const model = createModel({ gpuInterval: 5, imageInterval: 60 });
      await jest.advanceTimersByTimeAsync(120_000);
      // Every 5 s would be 25 reads in 120 s.
      const failing = requests('GET gpus').length;
      expect(failing).toBeGreaterThan(1);
      expect(failing).toBeLessThan(10);
      expect(model.gpuError).toBe(
        'Could not reach the Jupyter server: Failed to fetch'
      );
      routes['GET status'] = ok(status);
      routes['GET gpus'] = ok(report);
      routes['GET images'] = ok(catalog);
      // At most a minute to the next try, then every 5 s again.
      await jest.advanceTimersByTimeAsync(60_000);
      expect(model.gpuError).toBe('');
      expect(model.gpus).toEqual(report);
      const recovered = requests('GET gpus').length;
      await jest.advanceTimersByTimeAsync(20_000);
      expect(requests('GET gpus').length - recovered).toBe(4);
    });

    it('refresh() reads everything again now and resolves once it is in', async () => {
      const model = createModel();
      await jest.advanceTimersByTimeAsync(1);
      expect(requests('GET gpus')).toHaveLength(1);
      const other = makeReport([makeGpu('0')]);
      routes['GET gpus'] = ok(other);
      const done = model.refresh();
      await jest.advanceTimersByTimeAsync(0);
      await done;
      expect(requests('GET gpus')).toHaveLength(2);
      expect(requests('GET images')).toHaveLength(2);
      expect(model.gpus).toEqual(other);
    });
  });

  describe('pull', () => {
    it('starts a pull and follows its events to the end', async () => {
      const model = createModel();
      const start = makePull({ state: 'queued', phase: 'resolving' });
      routes['POST pulls'] = ok(start, 202);
      const ended = jest.fn();
      model.pullEnded.connect((_, pull) => ended(pull));
      const changed = jest.fn();
      model.changed.connect(changed);

      const result = model.pull(torch.reference);
      await flush();
      expect(lastBody('POST pulls')).toEqual({ image: torch.reference });
      expect(model.pulls.get(torch.reference)).toEqual(start);
      expect(streams).toHaveLength(1);
      const stream = streams[0];
      expect(stream.url).toBe(eventsUrl('pull-1'));
      expect([...stream.listeners.keys()].sort()).toEqual([
        'cancelled',
        'done',
        'error',
        'progress'
      ]);

      const progress = makePull({ progress: 0.4 });
      changed.mockClear();
      stream.emit('progress', progress);
      expect(model.pulls.get(torch.reference)).toEqual(progress);
      expect(changed).toHaveBeenCalledTimes(1);
      const more = makePull({ downloaded_bytes: 240_000_000, progress: 0.8 });
      stream.emit('progress', more);
      expect(model.pulls.get(torch.reference)).toEqual(more);
      expect(stream.closed).toBe(false);
      expect(ended).not.toHaveBeenCalled();

      const done = makePull({ state: 'done', phase: 'complete', progress: 1 });
      stream.emit('done', done);
      expect(stream.closed).toBe(true);
      await expect(result).resolves.toEqual(done);
      expect(model.pulls.get(torch.reference)).toEqual(done);
      expect(ended).toHaveBeenCalledTimes(1);
      expect(ended).toHaveBeenCalledWith(done);

      // The catalog is read again: the image is now pulled.
      const before = requests('GET images').length;
      await jest.advanceTimersByTimeAsync(1);
      expect(requests('GET images').length).toBeGreaterThan(before);
    });

    it('sends the login for this pull', async () => {
      const model = createModel();
      routes['POST pulls'] = ok(makePull(), 202);
      void model.pull(torch.reference, {
        username: '$oauthtoken',
        password: 'key'
      });
      await flush();
      expect(lastBody('POST pulls')).toEqual({
        image: torch.reference,
        auth: { username: '$oauthtoken', password: 'key' }
      });
    });

    it.each<[string, Partial<IPull>]>([
      [
        'error',
        {
          state: 'error',
          message: 'unauthorized: authentication required',
          error_status: 403
        }
      ],
      ['cancelled', { state: 'cancelled' }]
    ])('ends on an %s event', async (name, final) => {
      const model = createModel();
      routes['POST pulls'] = ok(makePull(), 202);
      const ended = jest.fn();
      model.pullEnded.connect((_, pull) => ended(pull));
      const result = model.pull(torch.reference);
      await flush();
      const snapshot = makePull(final);
      streams[0].emit(name, snapshot);
      await expect(result).resolves.toEqual(snapshot);
      expect(streams[0].closed).toBe(true);
      expect(model.pulls.get(torch.reference)).toEqual(snapshot);
      expect(ended).toHaveBeenCalledWith(snapshot);
    });

    it('ignores events without a snapshot while the stream reconnects', async () => {
      const model = createModel();
      routes['POST pulls'] = ok(makePull(), 202);
      const settled = jest.fn();
      void model.pull(torch.reference).then(settled);
      await flush();
      const stream = streams[0];
      stream.readyState = 0; // CONNECTING: the browser tries again.
      stream.emit('error');
      stream.emit('progress', 'not JSON');
      stream.emit('progress', '{"id": "pull-1"}');
      await flush();
      expect(settled).not.toHaveBeenCalled();
      expect(stream.closed).toBe(false);
      expect(model.pulls.get(torch.reference)).toEqual(makePull());
    });

    it('gives up, with an error, when the stream fails for good', async () => {
      const model = createModel();
      routes['POST pulls'] = ok(makePull(), 202);
      const ended = jest.fn();
      model.pullEnded.connect((_, pull) => ended(pull));
      const result = model.pull(torch.reference);
      await flush();
      const stream = streams[0];
      const progress = makePull({ progress: 0.6 });
      stream.emit('progress', progress);
      stream.readyState = 2; // CLOSED: e.g. the server forgot the pull (404).
      stream.emit('error');
      const final = await result;
      expect(final.state).toBe('error');
      expect(final.id).toBe('pull-1');
      expect(final.progress).toBe(0.6);
      expect(final.message).toMatch(/pull/);
      expect(stream.closed).toBe(true);
      expect(model.pulls.get(torch.reference)).toEqual(final);
      expect(ended).toHaveBeenCalledWith(final);
      // The Pull button comes back: pulling again opens a new stream.
      routes['POST pulls'] = ok(makePull(), 202);
      void model.pull(torch.reference);
      await flush();
      expect(streams).toHaveLength(2);
    });

    it('resolves at once for a pull that has already ended', async () => {
      const model = createModel();
      const done = makePull({ state: 'done', phase: 'complete' });
      routes['POST pulls'] = ok(done);
      const ended = jest.fn();
      model.pullEnded.connect((_, pull) => ended(pull));
      await expect(model.pull(torch.reference)).resolves.toEqual(done);
      expect(streams).toHaveLength(0);
      expect(model.pulls.get(torch.reference)).toEqual(done);
      expect(ended).toHaveBeenCalledWith(done);
    });

    it('joins a pull it already follows, with one stream', async () => {
      const model = createModel();
      routes['POST pulls'] = ok(makePull(), 202);
      const first = model.pull(torch.reference);
      await flush();
      const second = model.pull(torch.reference);
      await flush();
      expect(requests('POST pulls')).toHaveLength(2);
      expect(streams).toHaveLength(1);
      const done = makePull({ state: 'done', phase: 'complete' });
      streams[0].emit('done', done);
      await expect(first).resolves.toEqual(done);
      await expect(second).resolves.toEqual(done);
    });

    it("rejects with the server's sentence when the pull is refused", async () => {
      const model = createModel();
      routes['POST pulls'] = fail(
        403,
        'The administrator does not allow docker.io images.'
      );
      const error = await model.pull('ubuntu:24.04').catch(e => e);
      expect(error).toBeInstanceOf(ApiError);
      expect(messageOf(error)).toBe(
        'The administrator does not allow docker.io images.'
      );
      expect(streams).toHaveLength(0);
      expect(model.pulls.size).toBe(0);
    });

    it('follows several pulls at once, each under its reference', async () => {
      const model = createModel();
      const tf = 'tensorflow/tensorflow:2.16.1-gpu';
      routes['POST pulls'] = ok(makePull({ id: 'p-a' }), 202);
      const a = model.pull(torch.reference);
      await flush();
      routes['POST pulls'] = ok(makePull({ id: 'p-b', image: tf }), 202);
      const b = model.pull(tf);
      await flush();
      expect(streams.map(s => s.url)).toEqual([
        eventsUrl('p-a'),
        eventsUrl('p-b')
      ]);
      const bDone = makePull({ id: 'p-b', image: tf, state: 'done' });
      streams[1].emit('done', bDone);
      await expect(b).resolves.toEqual(bDone);
      expect(model.pulls.get(tf)).toEqual(bDone);
      expect(model.pulls.get(torch.reference)?.state).toBe('pulling');
      expect(streams[0].closed).toBe(false);
      const aDone = makePull({ id: 'p-a', state: 'done' });
      streams[0].emit('done', aDone);
      await expect(a).resolves.toEqual(aDone);
    });
  });

  describe('cancel', () => {
    it('does nothing for an image it does not follow', async () => {
      const model = createModel();
      await model.cancel('nothing:latest');
      expect(requests()).toEqual([]);
    });

    it('deletes the pull and shows its final snapshot', async () => {
      const model = createModel();
      routes['POST pulls'] = ok(makePull({ id: 'p 7' }), 202);
      const result = model.pull(torch.reference);
      await flush();
      const cancelled = makePull({ id: 'p 7', state: 'cancelled' });
      routes['DELETE pulls/p%207'] = ok(cancelled);
      await model.cancel(torch.reference);
      expect(requests('DELETE pulls/p%207')).toHaveLength(1);
      expect(model.pulls.get(torch.reference)).toEqual(cancelled);
      streams[0].emit('cancelled', cancelled);
      await expect(result).resolves.toEqual(cancelled);
      expect(streams[0].closed).toBe(true);
    });

    it("rejects with the server's sentence", async () => {
      const model = createModel();
      routes['POST pulls'] = ok(makePull(), 202);
      void model.pull(torch.reference);
      await flush();
      routes['DELETE pulls/pull-1'] = fail(404, 'No pull pull-1.');
      await expect(model.cancel(torch.reference)).rejects.toThrow(
        'No pull pull-1.'
      );
      expect(model.pulls.get(torch.reference)?.state).toBe('pulling');
    });
  });

  describe('pulls started elsewhere', () => {
    const busy = makeRow({
      reference: 'nvcr.io/nvidia/tensorflow:24.05-tf2-py3',
      registry: 'nvcr.io',
      pulled: false,
      kernel_ready: null,
      pull_id: 'p-srv'
    });

    it('follows the pull of a catalog row with a pull_id', async () => {
      routes['GET images'] = ok(makeCatalog([torch, busy]));
      const model = createModel();
      const ended = jest.fn();
      model.pullEnded.connect((_, pull) => ended(pull));
      await model.refreshImages();
      expect(streams.map(s => s.url)).toEqual([eventsUrl('p-srv')]);
      expect(model.pulls.get(busy.reference)).toMatchObject({
        id: 'p-srv',
        image: busy.reference,
        registry: 'nvcr.io',
        state: 'queued'
      });
      expect(model.pulls.has(torch.reference)).toBe(false);

      const progress = makePull({ id: 'p-srv', image: busy.reference });
      streams[0].emit('progress', progress);
      expect(model.pulls.get(busy.reference)).toEqual(progress);

      // Reading the catalog again does not open a second stream.
      await model.refreshImages();
      expect(streams).toHaveLength(1);

      const done = makePull({
        id: 'p-srv',
        image: busy.reference,
        state: 'done'
      });
      streams[0].emit('done', done);
      await flush();
      expect(streams[0].closed).toBe(true);
      expect(ended).toHaveBeenCalledWith(done);

      // A catalog read before the pull ended still names it: not followed again.
      await model.refreshImages();
      expect(streams).toHaveLength(1);
      expect(model.pulls.get(busy.reference)).toEqual(done);
    });

    it('does not open a second stream for its own pull', async () => {
      const model = createModel();
      routes['POST pulls'] = ok(
        makePull({ id: 'p-srv', image: busy.reference }),
        202
      );
      void model.pull(busy.reference);
      await flush();
      routes['GET images'] = ok(makeCatalog([busy]));
      await model.refreshImages();
      expect(streams).toHaveLength(1);
    });

    it('follows a new pull of an image whose last pull ended', async () => {
      routes['GET images'] = ok(makeCatalog([busy]));
      const model = createModel();
      await model.refreshImages();
      streams[0].emit(
        'error',
        makePull({ id: 'p-srv', state: 'error', message: 'timeout' })
      );
      await flush();
      routes['GET images'] = ok(makeCatalog([{ ...busy, pull_id: 'p-new' }]));
      await model.refreshImages();
      expect(streams.map(s => s.url)).toEqual([
        eventsUrl('p-srv'),
        eventsUrl('p-new')
      ]);
      expect(model.pulls.get(busy.reference)?.id).toBe('p-new');
    });
  });

  describe('dispose', () => {
    it('stops the polls, the streams, the re-reads and the signals', async () => {
      routes['GET images'] = ok(
        makeCatalog([
          makeRow({ kernel_ready: null }),
          { ...torch, pull_id: 'p-srv', reference: 'x' }
        ])
      );
      routes['POST pulls'] = ok(makePull(), 202);
      const model = createModel();
      await jest.advanceTimersByTimeAsync(1);
      void model.pull(torch.reference);
      await flush();
      expect(streams).toHaveLength(2);
      const changed = jest.fn();
      model.changed.connect(changed);

      model.dispose();
      expect(model.isDisposed).toBe(true);
      expect(streams.every(s => s.closed)).toBe(true);
      const seen = requests().length;
      await jest.advanceTimersByTimeAsync(15 * 60 * 1000);
      expect(requests()).toHaveLength(seen);
      expect(jest.getTimerCount()).toBe(0);

      await model.refreshGpus();
      expect(changed).not.toHaveBeenCalled();
      model.dispose(); // twice is fine
      expect(model.isDisposed).toBe(true);
    });

    it('ignores answers that come after it', async () => {
      const slow = deferred();
      routes['GET gpus'] = slow.route;
      const model = createModel();
      const done = model.refreshGpus();
      model.dispose();
      slow.answer(response(200, JSON.stringify(report)));
      await done;
      expect(model.gpus).toBeNull();
      expect(model.status).toBeNull();
    });
  });
});

/**
 * A kernel of the user's warned by the idle-GPU policy, as a real server
 * sends its state.
 */
function warnedReclaim() {
  return {
    kernel_id: 'k-1',
    state: 'warned',
    idle_since: '2999-01-01T00:00:00Z',
    release_at: '2999-01-01T00:30:00Z',
    reclaimed_at: null,
    action: 'shutdown',
    message: '',
    gpus: ['GPU-0'],
    user: 'alice',
    notebook: 'work/train.ipynb'
  };
}

/**
 * `GET kernels` answering with that kernel (its state `reclaim`) and
 * `reclaimed`.
 */
function kernels(reclaim: unknown, reclaimed: unknown[] = []): Route {
  return ok({
    kernels: [{ kernel_id: 'k-1', notebook: 'work/train.ipynb', reclaim }],
    reclaimed,
    engine_error: ''
  });
}

describe('fair sharing', () => {
  const waiting = {
    kernel_id: 'k-1',
    yours: true,
    user: 'alice',
    notebook: 'work/train.ipynb',
    gpus: 1,
    position: 1,
    waited: 4,
    deadline: '2999-01-01T00:00:00Z'
  };
  const queueOf = (...tickets: unknown[]) =>
    ok({
      queue: tickets,
      length: tickets.length,
      wait_by_default: true,
      max_wait: 3600
    });

  it('tells how a waiting start that left the queue ended: it runs', async () => {
    routes['GET queue'] = queueOf(waiting);
    const kernelState = jest.fn().mockResolvedValue('idle');
    const model = createModel({ kernelState });
    const ended = jest.fn();
    model.queueEnded.connect((_, end) => ended(end));
    await model.refreshGpus();
    expect(model.queue?.queue.map(t => t.kernel_id)).toEqual(['k-1']);
    expect(model.queue?.wait_by_default).toBe(true);

    routes['GET queue'] = queueOf();
    await model.refreshGpus();
    await flush();
    expect(kernelState).toHaveBeenCalledWith('k-1');
    expect(ended).toHaveBeenCalledTimes(1);
    expect(ended.mock.calls[0][0].outcome).toBe('started');
    expect(ended.mock.calls[0][0].ticket.notebook).toBe('work/train.ipynb');
  });

  it('tells a start that left the queue once, however many reads saw it leave', async () => {
    routes['GET queue'] = queueOf(waiting);
    const model = createModel({
      kernelState: jest.fn().mockResolvedValue('idle')
    });
    const ended = jest.fn();
    model.queueEnded.connect((_, end) => ended(end.outcome));
    await model.refreshGpus();
    routes['GET queue'] = queueOf();
    // The poll and a refresh read the queue at the same time.
    await Promise.all([model.refreshGpus(), model.refreshGpus()]);
    await flush();
    expect(ended.mock.calls).toEqual([['started']]);
  });

  it('looks again while the kernel still comes up', async () => {
    routes['GET queue'] = queueOf(waiting);
    const kernelState = jest
      .fn()
      .mockResolvedValueOnce('starting')
      .mockResolvedValue('idle');
    const model = createModel({ kernelState, departurePollMs: 1000 });
    const ended = jest.fn();
    model.queueEnded.connect((_, end) => ended(end.outcome));
    await model.refreshGpus();
    routes['GET queue'] = queueOf();
    await model.refreshGpus();
    await flush();
    expect(ended).not.toHaveBeenCalled();
    await jest.advanceTimersByTimeAsync(1000);
    expect(ended).toHaveBeenCalledWith('started');
  });

  it('cancels a waiting start, and says it was cancelled', async () => {
    routes['GET queue'] = queueOf(waiting);
    routes['DELETE queue/k-1'] = () => response(204, '');
    const model = createModel({
      kernelState: jest.fn().mockResolvedValue(null)
    });
    const ended = jest.fn();
    model.queueEnded.connect((_, end) => ended(end.outcome));
    await model.refreshGpus();
    routes['GET queue'] = queueOf();
    await model.cancelWaiting('k-1');
    await flush();
    expect(requests('DELETE queue/k-1')).toHaveLength(1);
    expect(ended).toHaveBeenCalledWith('cancelled');
  });

  it('says a cancelled restart was cancelled, though its kernel stays listed', async () => {
    // A restart waits under the kernel's own id: cancelled, the kernel is still there (idle),
    // which is no GPU that "is free" and no start.
    routes['GET queue'] = queueOf(waiting);
    routes['DELETE queue/k-1'] = () => response(204, '');
    const kernelState = jest.fn().mockResolvedValue('idle');
    const model = createModel({ kernelState });
    const ended = jest.fn();
    model.queueEnded.connect((_, end) => ended(end.outcome));
    await model.refreshGpus();
    routes['GET queue'] = queueOf();
    const before = Date.now();
    await model.cancelWaiting('k-1', 'work/train.ipynb');
    await flush();
    expect(ended.mock.calls).toEqual([['cancelled']]);
    expect(kernelState).not.toHaveBeenCalled();
    // The notebook's start, failing now, is known as the user's own cancel.
    expect(model.cancelledSince('work/train.ipynb', before)).toBe(true);
    expect(model.cancelledSince('work/train.ipynb', Date.now() + 1)).toBe(
      false
    );
    expect(model.cancelledSince('work/other.ipynb', before)).toBe(false);
  });

  it("rejects a cancel with the server's sentence", async () => {
    routes['DELETE queue/k-1'] = fail(404, 'No start of yours waits as k-1.');
    const model = createModel();
    await expect(model.cancelWaiting('k-1')).rejects.toThrow(
      'No start of yours waits as k-1.'
    );
  });

  it('leaves a server without a queue, quota or admin view alone quietly', async () => {
    const model = createModel();
    await model.refreshGpus();
    await model.refreshQuota();
    expect(model.queue).toBeNull();
    expect(model.quota).toBeNull();
    expect(model.admin).toBeNull();
    expect(model.gpuError).toBe('');
    // Not asked again for a while...
    await model.refreshGpus();
    await model.refreshQuota();
    expect(requests('GET queue')).toHaveLength(1);
    expect(requests('GET quota')).toHaveLength(1);
    expect(requests('GET admin')).toHaveLength(1);
    // ...but at once when the user asks for a refresh.
    const done = model.refresh();
    await jest.advanceTimersByTimeAsync(0);
    await done;
    expect(requests('GET queue')).toHaveLength(2);
  });

  it('never asks for the admin view when the status says the user is no admin', async () => {
    // Each ask would be a 403 in the server's log and the page's console.
    routes['GET status'] = ok({ ...makeStatus(), admin: false });
    const model = createModel();
    await model.refreshGpus();
    const done = model.refresh();
    await jest.advanceTimersByTimeAsync(0);
    await done;
    expect(requests('GET status').length).toBeGreaterThanOrEqual(2);
    expect(requests('GET admin')).toEqual([]);
    expect(model.admin).toBeNull();
  });

  it('asks no admin view while the status cannot be read, and keeps the last one', async () => {
    // The browser drops requests in flight when a container's network comes
    // up: a status that failed says nothing of who the user is.
    routes['GET status'] = ok({ ...makeStatus(), admin: false });
    const model = createModel();
    await model.refreshGpus();
    routes['GET status'] = unreachable();
    await model.refreshGpus();
    expect(model.statusError).not.toBe('');
    expect(requests('GET admin')).toEqual([]);
    // An administrator's view stays while the status is unreadable, and is
    // not asked for again until the status says who the user is.
    routes['GET status'] = ok({ ...makeStatus(), admin: true });
    routes['GET admin'] = ok({
      holders: [],
      gpus: [],
      queue: { queue: [], length: 0 },
      reclaim: [],
      quotas: null,
      engine_error: '',
      source: 'static'
    });
    await model.refreshGpus();
    expect(model.admin?.source).toBe('static');
    routes['GET status'] = unreachable();
    await model.refreshGpus();
    expect(requests('GET admin')).toHaveLength(1);
    expect(model.admin?.source).toBe('static');
  });

  it('asks a Docker server for its cluster once, a Kubernetes one each time', async () => {
    routes['GET cluster'] = ok({
      backend: 'docker',
      pools: [],
      engine_error: ''
    });
    const model = createModel();
    await model.refreshGpus();
    await model.refreshGpus();
    expect(model.cluster?.backend).toBe('docker');
    expect(requests('GET cluster')).toHaveLength(1);
    // A refresh asks again; a Kubernetes backend is then read with the GPUs.
    const pools = {
      backend: 'kubernetes',
      pools: [],
      engine_error: 'The Kubernetes API did not answer.'
    };
    routes['GET cluster'] = ok(pools);
    const done = model.refresh();
    await jest.advanceTimersByTimeAsync(0);
    await done;
    await model.refreshGpus();
    expect(model.cluster).toEqual(pools);
    expect(requests('GET cluster').length).toBeGreaterThanOrEqual(3);
  });

  it('reads the quota and, for an admin, the admin view', async () => {
    routes['GET quota'] = ok({
      enabled: true,
      period: 'week',
      limit_hours: 10,
      used_hours: 6.5,
      left_hours: 3.5,
      resets_at: '2999-01-01T00:00:00Z',
      group: null
    });
    routes['GET admin'] = ok({
      holders: [
        {
          kernel_id: 'k-7',
          container_id: 'c-7',
          user: 'bob',
          uid: '1002',
          notebook: 'b.ipynb',
          image: 'img',
          server_id: '0-abc',
          since: '2030-01-01T10:00:00+00:00',
          held_seconds: 60,
          gpus: [{ uuid: 'GPU-0', index: '0', name: 'T4' }],
          activity: null,
          reclaim: null,
          here: false,
          server_alive: true
        }
      ],
      gpus: [],
      queue: { queue: [], length: 0 },
      reclaim: [],
      quotas: null,
      engine_error: '',
      source: 'static'
    });
    const model = createModel();
    await model.refreshGpus();
    await model.refreshQuota();
    expect(model.quota?.left_hours).toBe(3.5);
    expect(
      model.admin?.holders.map(h => [h.user, h.gpus.map(g => g.index)])
    ).toEqual([['bob', ['0']]]);
    const notice = {
      kernel_id: 'k-7',
      user: 'bob',
      action: 'release',
      reason: 'Lab starts.',
      by: 'teacher',
      at: '2030-01-01T10:01:00+00:00',
      message: 'teacher released its GPUs: Lab starts.'
    };
    routes['POST admin/kernels/k-7'] = ok(
      { ...notice, state: 'requested', server_id: '0-abc' },
      202
    );
    const reply = await model.adminAction('k-7', 'release', 'Lab starts.');
    expect(reply.state).toBe('requested');
    expect(reply.server_id).toBe('0-abc');
    expect(lastBody('POST admin/kernels/k-7')).toEqual({
      action: 'release',
      reason: 'Lab starts.'
    });
  });

  it('tells each administrator’s notice once, across page loads', async () => {
    const notice = {
      kernel_id: 'k-7',
      user: 'alice',
      action: 'shutdown',
      reason: 'Lab is over.',
      by: 'teacher',
      at: '2030-01-01T10:01:00+00:00',
      message: 'teacher shut it down: Lab is over.'
    };
    routes['GET admin/notices'] = ok({ notices: [notice] });
    const stored = new Map<string, string>();
    const noticeStore = {
      getItem: (key: string) => stored.get(key) ?? null,
      setItem: (key: string, value: string) => void stored.set(key, value)
    };
    const told: string[] = [];
    const first = createModel({ noticeStore });
    first.noticeArrived.connect((_, n) => told.push(n.reason));
    await first.refreshGpus();
    await first.refreshGpus();
    expect(told).toEqual(['Lab is over.']);
    expect(first.notices.map(n => n.kernel_id)).toEqual(['k-7']);
    // A new page (the same browser): not told again, but still listed.
    const second = createModel({ noticeStore });
    second.noticeArrived.connect((_, n) => told.push(n.reason));
    await second.refreshGpus();
    expect(told).toEqual(['Lab is over.']);
    expect(second.notices).toHaveLength(1);
    // A new notice is told.
    routes['GET admin/notices'] = ok({
      notices: [notice, { ...notice, at: '2030-01-01T11:00:00+00:00' }]
    });
    await second.refreshGpus();
    expect(told).toEqual(['Lab is over.', 'Lab is over.']);
  });

  it('reads the pre-pull schedule with the images', async () => {
    routes['GET prepull'] = ok({
      schedule: [
        {
          image: 'jgc/course:1',
          at: '02:00',
          every_hours: null,
          last_run: null,
          next_run: '2030-01-02T02:00:00+00:00',
          pull: null
        }
      ],
      running: true,
      check_interval: 60,
      time_zone: 'UTC',
      pruning: {
        enabled: false,
        after_days: 0,
        interval_hours: 6,
        last_run: null,
        next_run: null
      }
    });
    const model = createModel();
    expect(model.prePulls).toBeNull();
    await model.refreshImages();
    expect(model.prePulls?.schedule.map(e => e.image)).toEqual([
      'jgc/course:1'
    ]);
  });

  it('warns once per warning of a kernel that holds GPUs, and of one reclaimed', async () => {
    routes['GET gpus'] = ok(
      makeReport([makeGpu('0', [makeHolder({ mine: true, kernel_id: 'k-1' })])])
    );
    const warned = warnedReclaim();
    routes['GET kernels'] = kernels(warned);
    const model = createModel();
    const notices = jest.fn();
    model.reclaimChanged.connect((_, n) =>
      notices(n.kernelId, n.notebook, n.reclaim.state)
    );
    await model.refreshGpus();
    await model.refreshGpus();
    expect(notices.mock.calls).toEqual([['k-1', 'work/train.ipynb', 'warned']]);
    expect(model.reclaims.get('k-1')?.state).toBe('warned');

    // It was shut down: it holds no GPU, and the list says why once.
    routes['GET gpus'] = ok(makeReport([makeGpu('0')]));
    routes['GET kernels'] = kernels(null, [
      { ...warned, state: 'reclaimed', reclaimed_at: '2999-01-01T00:30:00Z' }
    ]);
    await model.refreshGpus();
    await model.refreshGpus();
    expect(notices.mock.calls[1]).toEqual([
      'k-1',
      'work/train.ipynb',
      'reclaimed'
    ]);
    expect(notices).toHaveBeenCalledTimes(2);
    // Nothing is read of kernels that hold no GPU and were not warned.
    const reads = requests('GET kernels').length;
    await model.refreshGpus();
    expect(requests('GET kernels')).toHaveLength(reads);
  });

  it('keeps a warned kernel’s GPUs at its user’s word, which is no news to tell', async () => {
    routes['GET gpus'] = ok(
      makeReport([makeGpu('0', [makeHolder({ mine: true, kernel_id: 'k-1' })])])
    );
    const warned = {
      ...warnedReclaim(),
      kept_until: null,
      keeps: 0,
      keep: { min_minutes: 15, max_minutes: 120, times_left: 2 }
    };
    routes['GET kernels'] = kernels(warned);
    const model = createModel();
    const notices = jest.fn();
    model.reclaimChanged.connect((_, n) =>
      notices(n.kernelId, n.reclaim.state)
    );
    await model.refreshGpus();
    expect(notices).toHaveBeenCalledTimes(1);
    const kept = {
      ...warned,
      release_at: '2999-01-01T01:30:00Z',
      kept_until: '2999-01-01T01:30:00Z',
      keeps: 1,
      keep: { ...warned.keep, times_left: 1 }
    };
    routes['POST kernels/k-1/keep'] = ok(kept);
    routes['GET kernels'] = kernels(kept);
    const state = await model.keepGpus('k-1', 60);
    expect(lastBody('POST kernels/k-1/keep')).toEqual({ minutes: 60 });
    expect(state.kept_until).toBe('2999-01-01T01:30:00Z');
    expect(model.reclaims.get('k-1')?.kept_until).toBe('2999-01-01T01:30:00Z');
    // Its new release time is its user's own doing: not told again.
    await model.refreshGpus();
    expect(notices).toHaveBeenCalledTimes(1);
    // A refusal is the server's sentence.
    routes['POST kernels/k-1/keep'] = fail(409, 'Kept as often as allowed.');
    await expect(model.keepGpus('k-1', 60)).rejects.toThrow(
      'Kept as often as allowed.'
    );
  });
});
