import { ServerConnection } from '@jupyterlab/services';

import { ApiError, errorMessage, getStatus, requestAPI } from '../api';
import { IStatus } from '../types';

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
    const data = await requestAPI<{ answer: number }>(
      'things/1',
      { method: 'GET' },
      settings
    );
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
