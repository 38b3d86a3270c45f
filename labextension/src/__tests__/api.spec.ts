import { ServerConnection } from '@jupyterlab/services';

import {
  ApiError,
  cancelPull,
  errorMessage,
  getGpus,
  getImages,
  getStatus,
  kernelLogUrl,
  pullEventsUrl,
  streamCredentials,
  putRegistryCredentials,
  requestAPI,
  startNotebookKernel,
  startPull
} from '../api';
import { IStatus } from '../gputypes';
import { GpuRequest, INotebookKernelReply } from '../kerneltypes';
import {
  makeCatalog,
  makeGpu,
  makePull,
  makeReport,
  makeRow
} from './fixtures';
import { pseudoBundle } from './pseudo';

const settings = ServerConnection.makeSettings({
  baseUrl: 'http://localhost:8888/lab-base/'
});

/**
 * Make `ServerConnection.makeRequest` answer `body` with `status`.
 */
function answer(
  body: string,
  status = 200,
  statusText = 'OK'
): jest.SpyInstance {
  return jest
    .spyOn(ServerConnection, 'makeRequest')
    .mockResolvedValue(new Response(body, { status, statusText }));
}

/**
 * The error `promise` rejects with, which must be an ApiError.
 */
async function failure(promise: Promise<unknown>): Promise<ApiError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(ApiError);
    return error as ApiError;
  }
  throw new Error('the request did not fail');
}

afterEach(() => {
  jest.restoreAllMocks();
});

describe('requestAPI', () => {
  it('calls the endpoint below the server base URL and parses JSON', async () => {
    const spy = answer('{"answer": 42}');
    const data = await requestAPI('things/1', { method: 'GET' }, settings);
    expect(data).toEqual({ answer: 42 });
    expect(spy).toHaveBeenCalledTimes(1);
    const [url, init, used] = spy.mock.calls[0];
    expect(url).toBe('http://localhost:8888/lab-base/gpu-containers/things/1');
    expect(init).toEqual({ method: 'GET' });
    expect(used).toBe(settings);
  });

  it('returns undefined for an empty body', async () => {
    answer('');
    await expect(requestAPI('things', {}, settings)).resolves.toBeUndefined();
  });

  it('uses the server message of a JSON error', async () => {
    answer(
      JSON.stringify({
        message: 'No such image: pytorch:latest',
        reason: 'Not Found'
      }),
      404,
      'Not Found'
    );
    const error = await failure(requestAPI('images/x', {}, settings));
    expect(error.message).toBe('No such image: pytorch:latest');
    expect(error.status).toBe(404);
    expect(error.name).toBe('ApiError');
  });

  it('falls back to the reason when the JSON error has no message', async () => {
    answer(
      JSON.stringify({ reason: 'Docker engine unreachable' }),
      503,
      'Service Unavailable'
    );
    const error = await failure(requestAPI('status', {}, settings));
    expect(error.message).toBe('Docker engine unreachable');
    expect(error.status).toBe(503);
  });

  it('falls back to the status text for a body that is not JSON', async () => {
    answer('<html><body>Bad gateway</body></html>', 502, 'Bad Gateway');
    const error = await failure(requestAPI('status', {}, settings));
    expect(error.message).toBe('Bad Gateway (HTTP 502)');
    expect(error.message).not.toContain('<html>');
    expect(error.status).toBe(502);
  });

  it('never shows a JSON body without message or reason', async () => {
    answer('{"traceback": "..."}', 500, '');
    const error = await failure(requestAPI('status', {}, settings));
    expect(error.message).toBe('HTTP error 500');
  });

  it('throws an ApiError when an OK answer is not JSON', async () => {
    answer('<html></html>');
    const error = await failure(requestAPI('status', {}, settings));
    expect(error.message).toBe(
      "The server's answer to gpu-containers/status is not JSON."
    );
  });

  it('throws an ApiError when the server cannot be reached', async () => {
    jest
      .spyOn(ServerConnection, 'makeRequest')
      .mockRejectedValue(
        new ServerConnection.NetworkError(new TypeError('Failed to fetch'))
      );
    const error = await failure(requestAPI('status', {}, settings));
    expect(error.message).toBe(
      'Could not reach the Jupyter server: Failed to fetch'
    );
    expect(error.status).toBeUndefined();
  });
});

describe('errorMessage', () => {
  it('prefers message, then reason, then the status text', () => {
    expect(errorMessage('{"message": "m", "reason": "r"}', 400, 'Bad')).toBe(
      'm'
    );
    expect(errorMessage('{"message": "  ", "reason": "r"}', 400, 'Bad')).toBe(
      'r'
    );
    expect(errorMessage('{"message": 3}', 400, 'Bad Request')).toBe(
      'Bad Request (HTTP 400)'
    );
    expect(errorMessage('["message"]', 400, 'Bad Request')).toBe(
      'Bad Request (HTTP 400)'
    );
    expect(errorMessage('', 500, '')).toBe('HTTP error 500');
  });

  it('names the option that decided it when the server gives it (to administrators only)', () => {
    const body = JSON.stringify({
      message: 'Pulling images is turned off on this server.',
      setting: 'ContainerPolicy.allow_user_pulls'
    });
    expect(errorMessage(body, 403, 'Forbidden')).toBe(
      'Pulling images is turned off on this server. (setting: ContainerPolicy.allow_user_pulls)'
    );
    expect(
      errorMessage('{"message": "No.", "setting": ""}', 403, 'Forbidden')
    ).toBe('No.');
  });

  it("writes its own sentences through the extension's bundle", async () => {
    const pseudo = pseudoBundle();
    expect(errorMessage('', 500, '', pseudo)).toBe(
      '⟦jupyter_gpu_containers:HTTP error 500⟧'
    );
    expect(errorMessage('{"message": "No."}', 500, '', pseudo)).toBe('No.');
    answer('<html>', 200);
    const error = await failure(requestAPI('status', {}, settings, pseudo));
    expect(error.message).toBe(
      "⟦jupyter_gpu_containers:The server's answer to gpu-containers/status is not JSON.⟧"
    );
  });
});

describe('getStatus', () => {
  it('GETs gpu-containers/status', async () => {
    const status: IStatus = {
      engine: {
        ok: true,
        message: 'Docker engine 27.3.1 answered.',
        version: '27.3.1',
        endpoint: 'unix:///var/run/docker.sock'
      },
      kernelspecs: 3
    };
    const spy = answer(JSON.stringify(status));
    await expect(getStatus(settings)).resolves.toEqual(status);
    const [url, init] = spy.mock.calls[0];
    expect(url).toBe('http://localhost:8888/lab-base/gpu-containers/status');
    expect(init).toEqual({ method: 'GET' });
  });
});

/**
 * The URL, method and parsed JSON body of the one request `spy` saw.
 */
function sent(spy: jest.SpyInstance): {
  url: string;
  method: string | undefined;
  body: unknown;
} {
  expect(spy).toHaveBeenCalledTimes(1);
  const [url, init, used] = spy.mock.calls[0] as [
    string,
    RequestInit,
    ServerConnection.ISettings
  ];
  expect(used).toBe(settings);
  const body =
    typeof init.body === 'string' ? JSON.parse(init.body) : init.body;
  return { url, method: init.method, body };
}

const base = 'http://localhost:8888/lab-base/gpu-containers';

describe('getGpus', () => {
  it('GETs gpu-containers/gpus', async () => {
    const report = makeReport([makeGpu('0'), makeGpu('1')]);
    const spy = answer(JSON.stringify(report));
    await expect(getGpus(settings)).resolves.toEqual(report);
    expect(sent(spy)).toEqual({
      url: `${base}/gpus`,
      method: 'GET',
      body: undefined
    });
  });

  it("rejects with the server's sentence", async () => {
    answer(
      JSON.stringify({ message: 'NVML failed: driver/library mismatch.' }),
      500,
      'Internal Server Error'
    );
    const error = await failure(getGpus(settings));
    expect(error.message).toBe('NVML failed: driver/library mismatch.');
    expect(error.status).toBe(500);
  });

  it("uses the page's server settings by default", async () => {
    const spy = answer(JSON.stringify(makeReport([])));
    await getGpus();
    const [url, , used] = spy.mock.calls[0];
    const defaults = ServerConnection.makeSettings();
    expect(url).toBe(`${defaults.baseUrl}gpu-containers/gpus`);
    expect((used as ServerConnection.ISettings).baseUrl).toBe(defaults.baseUrl);
  });
});

describe('getImages', () => {
  it('GETs gpu-containers/images', async () => {
    const catalog = makeCatalog([makeRow(), makeRow({ reference: 'b' })]);
    const spy = answer(JSON.stringify(catalog));
    await expect(getImages(settings)).resolves.toEqual(catalog);
    expect(sent(spy)).toEqual({
      url: `${base}/images`,
      method: 'GET',
      body: undefined
    });
  });
});

describe('startPull', () => {
  it('POSTs the image alone when no login is given', async () => {
    const pull = makePull({ state: 'queued' });
    const spy = answer(JSON.stringify(pull), 202, 'Accepted');
    await expect(startPull(pull.image, undefined, settings)).resolves.toEqual(
      pull
    );
    expect(sent(spy)).toEqual({
      url: `${base}/pulls`,
      method: 'POST',
      body: { image: 'nvcr.io/nvidia/pytorch:24.05-py3' }
    });
  });

  it('POSTs the login for this pull when one is given', async () => {
    const spy = answer(JSON.stringify(makePull()), 202, 'Accepted');
    await startPull(
      'nvcr.io/nvidia/pytorch:24.05-py3',
      { username: '$oauthtoken', password: 's3cr3t' },
      settings
    );
    expect(sent(spy).body).toEqual({
      image: 'nvcr.io/nvidia/pytorch:24.05-py3',
      auth: { username: '$oauthtoken', password: 's3cr3t' }
    });
  });

  it("rejects with the server's sentence when the pull is refused", async () => {
    answer(
      JSON.stringify({
        message: 'The administrator does not allow docker.io images.'
      }),
      403,
      'Forbidden'
    );
    const error = await failure(startPull('ubuntu', undefined, settings));
    expect(error.message).toBe(
      'The administrator does not allow docker.io images.'
    );
    expect(error.status).toBe(403);
  });
});

describe('cancelPull', () => {
  it('DELETEs the pull', async () => {
    const pull = makePull({ id: 'p-42', state: 'cancelled' });
    const spy = answer(JSON.stringify(pull));
    await expect(cancelPull('p-42', settings)).resolves.toEqual(pull);
    expect(sent(spy)).toEqual({
      url: `${base}/pulls/p-42`,
      method: 'DELETE',
      body: undefined
    });
  });

  it('encodes the pull id as one path segment', async () => {
    const spy = answer(JSON.stringify(makePull()));
    await cancelPull('a/b c?#', settings);
    expect(sent(spy).url).toBe(`${base}/pulls/a%2Fb%20c%3F%23`);
  });

  it("rejects with the server's sentence for an unknown pull", async () => {
    answer(JSON.stringify({ message: 'No pull p-9.' }), 404, 'Not Found');
    const error = await failure(cancelPull('p-9', settings));
    expect(error.message).toBe('No pull p-9.');
    expect(error.status).toBe(404);
  });
});

describe('putRegistryCredentials', () => {
  it('PUTs the login below the encoded registry name', async () => {
    const spy = jest
      .spyOn(ServerConnection, 'makeRequest')
      .mockResolvedValue(new Response(null, { status: 204 }));
    await expect(
      putRegistryCredentials('localhost:5000', 'me', 'pa ss', settings)
    ).resolves.toBeUndefined();
    expect(sent(spy)).toEqual({
      url: `${base}/registries/localhost%3A5000/credentials`,
      method: 'PUT',
      body: { username: 'me', password: 'pa ss' }
    });
  });

  it('keeps a plain registry name as it is', async () => {
    const spy = answer('');
    await putRegistryCredentials('nvcr.io', '$oauthtoken', 'key', settings);
    expect(sent(spy).url).toBe(`${base}/registries/nvcr.io/credentials`);
  });

  it("rejects with the server's sentence", async () => {
    answer(
      JSON.stringify({ message: 'The registry refused this login.' }),
      401,
      'Unauthorized'
    );
    const error = await failure(
      putRegistryCredentials('nvcr.io', 'me', 'wrong', settings)
    );
    expect(error.message).toBe('The registry refused this login.');
    expect(error.status).toBe(401);
  });
});

describe('startNotebookKernel', () => {
  const reply: INotebookKernelReply = {
    session: {
      id: 's-1',
      path: 'work/train.ipynb',
      name: 'train.ipynb',
      type: 'notebook',
      kernel: { id: 'k-1', name: 'gpu-pytorch-24.05' }
    },
    gpus: 1
  };

  it.each<[string, string | null, GpuRequest]>([
    ['a GPU count', 'gpu-pytorch-24.05', 2],
    ['no GPU', 'gpu-pytorch-24.05', 0],
    ['specific GPUs', 'gpu-pytorch-24.05', ['GPU-0', 'MIG-1']],
    ["the image's default GPUs", 'gpu-pytorch-24.05', null],
    ["the notebook's own image", null, 1]
  ])('POSTs the path, kernel and %s', async (_, kernelName, gpus) => {
    const spy = answer(JSON.stringify(reply));
    await expect(
      startNotebookKernel('work/train.ipynb', kernelName, gpus, settings)
    ).resolves.toEqual(reply);
    expect(sent(spy)).toEqual({
      url: `${base}/notebooks/kernel`,
      method: 'POST',
      body: {
        path: 'work/train.ipynb',
        kernel_name: kernelName,
        gpus,
        start: true
      }
    });
  });

  it('only stores the request when told not to start', async () => {
    const spy = answer(JSON.stringify({ session: null, gpus: 2 }));
    await expect(
      startNotebookKernel('a.ipynb', 'gpu-pytorch-24.05', 2, settings, false)
    ).resolves.toEqual({ session: null, gpus: 2 });
    expect(sent(spy).body).toEqual({
      path: 'a.ipynb',
      kernel_name: 'gpu-pytorch-24.05',
      gpus: 2,
      start: false
    });
  });

  it("rejects with the server's sentence", async () => {
    answer(
      JSON.stringify({ message: 'No free GPU: every GPU is taken.' }),
      409,
      'Conflict'
    );
    const error = await failure(
      startNotebookKernel('a.ipynb', 'gpu-pytorch-24.05', 1, settings)
    );
    expect(error.message).toBe('No free GPU: every GPU is taken.');
    expect(error.status).toBe(409);
  });
});

describe('pullEventsUrl', () => {
  it('is below the server base URL, without a token', () => {
    expect(pullEventsUrl('p-1', settings)).toBe(`${base}/pulls/p-1/events`);
  });

  it('carries the token, encoded, in the query', () => {
    const withToken = ServerConnection.makeSettings({
      baseUrl: 'http://localhost:8888/lab-base/',
      token: 'a b&c=d/+'
    });
    expect(pullEventsUrl('p-1', withToken)).toBe(
      `${base}/pulls/p-1/events?token=a%20b%26c%3Dd%2F%2B`
    );
  });

  it("carries the page's XSRF cookie where there is no token (JupyterHub's GET check)", () => {
    const cookie = 'theme=dark; _xsrf=2|8a1f|c0ffee=|1700000000; other=1';
    expect(pullEventsUrl('p-1', settings, cookie)).toBe(
      `${base}/pulls/p-1/events?_xsrf=2%7C8a1f%7Cc0ffee%3D%7C1700000000`
    );
    expect(streamCredentials(settings, '_xsrf=abc')).toEqual(['_xsrf=abc']);
    // Not a cookie whose name merely ends in _xsrf.
    expect(streamCredentials(settings, 'not_xsrf=abc')).toEqual([]);
    const withToken = ServerConnection.makeSettings({
      baseUrl: 'http://localhost:8888/lab-base/',
      token: 't'
    });
    // Both: behind JupyterHub 5 the token in a URL is ignored, and the cookie counts.
    expect(streamCredentials(withToken, '_xsrf=abc')).toEqual([
      'token=t',
      '_xsrf=abc'
    ]);
    expect(streamCredentials(withToken, '')).toEqual(['token=t']);
    expect(kernelLogUrl('k-1', 50, settings, '_xsrf=abc')).toBe(
      `${base}/kernels/k-1/log?tail=50&_xsrf=abc`
    );
  });

  it('encodes the pull id as one path segment', () => {
    expect(pullEventsUrl('a/b c?#%', settings)).toBe(
      `${base}/pulls/a%2Fb%20c%3F%23%25/events`
    );
  });

  it("uses the page's server settings by default", () => {
    const defaults = ServerConnection.makeSettings();
    const url = pullEventsUrl('p-1');
    expect(url.startsWith(defaults.baseUrl)).toBe(true);
    expect(url.split('?')[0]).toBe(
      `${defaults.baseUrl}gpu-containers/pulls/p-1/events`
    );
  });
});
