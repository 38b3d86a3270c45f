/**
 * The one policy for reading the server's JSON (json.ts): strict readers for
 * the documents the front end needs (readers.ts, through api.readAPI), lenient
 * ones for the routes an older server lacks (sharingreaders.ts), and events
 * that are not what their name says ignored.
 */
import { ServerConnection } from '@jupyterlab/services';

import {
  ApiError,
  getAdminNotices,
  getGpus,
  getImages,
  getKernelView,
  getQueue,
  getStatus,
  readAPI
} from '../api';
import { isObject, num, parseJson, readEvent, str, strOrNull } from '../json';
import {
  catalogOf,
  clusterViewOf,
  gpuReportOf,
  kernelListOf,
  logEventReaders,
  notebookKernelReplyOf,
  parseSnapshot,
  pullOf,
  statusOf
} from '../readers';
import {
  makeCatalog,
  makeGpu,
  makePull,
  makeReport,
  makeStatus
} from './fixtures';
import { pseudoBundle } from './pseudo';

const settings = ServerConnection.makeSettings({
  baseUrl: 'http://localhost:8888/'
});

function answer(body: unknown, status = 200): void {
  jest.spyOn(ServerConnection, 'makeRequest').mockResolvedValue(
    new Response(typeof body === 'string' ? body : JSON.stringify(body), {
      status
    })
  );
}

afterEach(() => {
  jest.restoreAllMocks();
});

describe('json.ts', () => {
  it('reads primitives, nothing guessed', () => {
    expect(isObject({})).toBe(true);
    expect(isObject([])).toBe(false);
    expect(isObject(null)).toBe(false);
    expect(str(3)).toBe('');
    expect(str('a')).toBe('a');
    expect(num(Number.NaN)).toBeNull();
    expect(num(2)).toBe(2);
    expect(strOrNull(1)).toBeNull();
  });

  it('parses JSON text, or says it is none', () => {
    expect(parseJson('{"a": 1}')).toEqual({ a: 1 });
    expect(parseJson('not JSON')).toBeUndefined();
    expect(parseJson('')).toBeUndefined();
    expect(parseJson(undefined)).toBeUndefined();
  });

  it("reads an event's data with its reader, ignoring what is not one", () => {
    const read = logEventReaders.shutdown;
    expect(readEvent('{"reason": "Shut down."}', read)).toEqual({
      reason: 'Shut down.'
    });
    expect(readEvent('{"reason": 3}', read)).toBeNull();
    expect(readEvent('keepalive', read)).toBeNull();
    expect(readEvent(undefined, read)).toBeNull();
  });
});

describe('readers of the documents the front end needs', () => {
  it('accept the documents as the server writes them, as they are', () => {
    const status = makeStatus();
    expect(statusOf(status)).toBe(status);
    const report = makeReport([makeGpu('0')]);
    expect(gpuReportOf(report)).toBe(report);
    const catalog = makeCatalog([]);
    expect(catalogOf(catalog)).toBe(catalog);
    const pull = makePull();
    expect(pullOf(pull)).toBe(pull);
    expect(clusterViewOf({ backend: 'docker', pools: [] })).not.toBeNull();
    expect(
      kernelListOf({ kernels: [{ kernel_id: 'k-1' }], reclaimed: [] })
    ).not.toBeNull();
    expect(notebookKernelReplyOf({ session: null, gpus: 0 })).not.toBeNull();
  });

  it('refuse what their users could not step into', () => {
    expect(statusOf({ kernelspecs: 1 })).toBeNull();
    expect(gpuReportOf({ gpus: [{ index: '0' }] })).toBeNull();
    expect(gpuReportOf([])).toBeNull();
    expect(catalogOf({ images: 'none' })).toBeNull();
    expect(pullOf({ id: 'p-1' })).toBeNull();
    expect(clusterViewOf({ backend: 'kubernetes' })).toBeNull();
    expect(kernelListOf({ kernels: [{}] })).toBeNull();
    expect(notebookKernelReplyOf({ session: 'yes' })).toBeNull();
    expect(logEventReaders.lines({ lines: 'x' })).toBeNull();
    expect(logEventReaders.container({})).toBeNull();
  });

  it("read a pull's event snapshot, or nothing", () => {
    const pull = makePull();
    expect(parseSnapshot(JSON.stringify(pull))).toEqual(pull);
    expect(parseSnapshot('{"id": "p-1"}')).toBeNull();
    expect(parseSnapshot('not JSON')).toBeNull();
  });
});

describe('readAPI', () => {
  it('resolves with the document its reader reads', async () => {
    const status = makeStatus();
    answer(status);
    await expect(getStatus(settings)).resolves.toEqual(status);
  });

  it('rejects an answer that is not the document, as one that is not JSON', async () => {
    answer({ images: null });
    const error = await getImages(settings).catch(e => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error.status).toBe(200);
    expect(error.message).toBe(
      "The server's answer to gpu-containers/images is not what this page expects."
    );
    answer('<html></html>');
    const notJson = await getGpus(settings).catch(e => e);
    expect(notJson).toBeInstanceOf(ApiError);
    expect(notJson.message).toBe(
      "The server's answer to gpu-containers/gpus is not JSON."
    );
  });

  it('says so in the user’s language', async () => {
    answer({});
    const error = await readAPI(
      'kernels/k-1',
      () => null,
      {},
      settings,
      pseudoBundle('jupyter_gpu_containers')
    ).catch(e => e);
    expect(error.message).toBe(
      "⟦jupyter_gpu_containers:The server's answer to gpu-containers/kernels/k-1 is not what this page expects.⟧"
    );
  });

  it('rejects a kernel view its details could not be drawn from', async () => {
    answer({ kernel_id: 'k-1' });
    await expect(getKernelView('k-1', settings)).rejects.toBeInstanceOf(
      ApiError
    );
  });
});

describe('the routes an older server lacks', () => {
  it('read an answer that is not their document as none, quietly', async () => {
    answer({ nonsense: true });
    await expect(getQueue(settings)).resolves.toBeNull();
    answer({ nonsense: true });
    await expect(getAdminNotices(settings)).resolves.toEqual([]);
  });
});
