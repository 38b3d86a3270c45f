import { describeStatus, engineProblem, problemHeading } from '../status';
import { translationBundle } from '../i18n';
import { IEngineStatus } from '../gputypes';
import { makeStatus } from './fixtures';
import { pseudoBundle } from './pseudo';

const trans = translationBundle();

const engine: IEngineStatus = {
  ok: true,
  message: 'Docker engine 27.3.1 answered.',
  version: '27.3.1',
  endpoint: 'unix:///var/run/docker.sock'
};

describe('describeStatus', () => {
  it('describes a reachable engine as info', () => {
    expect(describeStatus(trans, { engine, kernelspecs: 4 })).toEqual({
      level: 'info',
      text: 'jupyter-gpu-containers: engine 27.3.1, 4 container kernel specs'
    });
  });

  it('counts one kernel spec in the singular and none in the plural', () => {
    expect(describeStatus(trans, { engine, kernelspecs: 1 }).text).toBe(
      'jupyter-gpu-containers: engine 27.3.1, 1 container kernel spec'
    );
    expect(describeStatus(trans, { engine, kernelspecs: 0 }).text).toBe(
      'jupyter-gpu-containers: engine 27.3.1, 0 container kernel specs'
    );
  });

  it('copes with an engine that gave no version', () => {
    const { version, ...rest } = engine;
    expect(version).toBeDefined();
    expect(describeStatus(trans, { engine: rest, kernelspecs: 2 }).text).toBe(
      'jupyter-gpu-containers: engine of unknown version, 2 container kernel specs'
    );
  });

  it("warns with the server's message when the engine is unreachable", () => {
    const down: IEngineStatus = {
      ok: false,
      message:
        'Cannot connect to the Docker engine at unix:///var/run/docker.sock: is the daemon running?',
      endpoint: 'unix:///var/run/docker.sock'
    };
    expect(describeStatus(trans, { engine: down, kernelspecs: 0 })).toEqual({
      level: 'warning',
      text: down.message
    });
  });

  it('warns with the endpoint when the server gave no message', () => {
    const down: IEngineStatus = {
      ok: false,
      message: '',
      endpoint: 'tcp://gpu-box:2375'
    };
    expect(describeStatus(trans, { engine: down, kernelspecs: 0 })).toEqual({
      level: 'warning',
      text: 'The container engine at tcp://gpu-box:2375 is unreachable.'
    });
  });

  it("says it through the extension's bundle", () => {
    expect(
      describeStatus(pseudoBundle(), { engine, kernelspecs: 1 }).text
    ).toBe(
      '⟦jupyter_gpu_containers:jupyter-gpu-containers: engine 27.3.1, 1 container kernel spec⟧'
    );
  });
});

describe('engineProblem', () => {
  it.each<[string, ReturnType<typeof makeStatus> | null, string]>([
    ['no status yet', null, ''],
    ['a reachable engine', makeStatus(), ''],
    [
      'an unreachable engine, with its message',
      makeStatus({ ok: false, message: '  Docker is not running.  ' }),
      'Docker is not running.'
    ],
    [
      'an unreachable engine, without a message',
      makeStatus({ ok: false, message: ' ', endpoint: 'tcp://gpu-box:2375' }),
      'The container engine at tcp://gpu-box:2375 is unreachable.'
    ]
  ])('%s', (_, status, text) => {
    expect(engineProblem(trans, status)).toBe(text);
  });
});

describe('problemHeading', () => {
  const down = makeStatus({ ok: false });
  it.each<
    [string, ReturnType<typeof makeStatus> | null, string | undefined, string]
  >([
    [
      'a status that could not be read',
      null,
      'docker',
      'The server did not answer.'
    ],
    ['Docker, unreachable', down, 'docker', 'No Docker engine.'],
    [
      'an engine not known yet, unreachable',
      down,
      undefined,
      'No Docker engine.'
    ],
    [
      "Slurm's controller, unreachable",
      down,
      'slurm',
      'Slurm does not answer.'
    ],
    [
      'the Kubernetes API, unreachable',
      down,
      'kubernetes',
      'Kubernetes does not answer.'
    ]
  ])('%s', (_, status, backend, text) => {
    expect(problemHeading(trans, status, backend as any)).toBe(text);
  });
});
