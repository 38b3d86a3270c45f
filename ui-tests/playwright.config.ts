/**
 * Playwright configuration of the UI tests: galata's base configuration, this machine's Chromium
 * (no browser is ever downloaded), and four servers: the JupyterLab that start-server.sh runs,
 * a second one as on Binder (no engine), a user's JupyterLab behind the kernel service
 * (start-service.sh), and the multi-user demo (start-hub.sh).
 *
 * The values the tests share with the server travel in the environment: workers inherit it from
 * the runner, which evaluates this file first.
 */
import { randomBytes } from 'crypto';
import * as path from 'path';

import { defineConfig, type PlaywrightTestConfig } from '@playwright/test';

// The module declares no types (its .d.ts is empty); galata's own documentation requires it.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const baseConfig: PlaywrightTestConfig = require('@jupyterlab/galata/lib/playwright-config');

const port = (process.env.UI_TEST_PORT ??= '8888');
// One per port: two servers on one port cannot run anyway, and start-server.sh wipes it at start.
process.env.UI_TEST_HOME ??= `/tmp/jgc-ui-tests-${port}`;
// scripts/test.sh sets it, so that its leak check looks for this run's containers.
process.env.JGC_TEST_RUN ??= `ui-${Date.now()}`;

const baseURL = `http://127.0.0.1:${port}`;
// A second server as on Binder: no Docker engine (tests/binder.spec.ts).
const noEnginePort = (process.env.UI_TEST_NO_ENGINE_PORT ??= String(
  Number(port) + 1
));
const noEngineURL =
  (process.env.UI_TEST_NO_ENGINE_URL ??= `http://127.0.0.1:${noEnginePort}`);
// A third as on a shared host: a user's JupyterLab (an account outside the docker group) whose
// kernels live behind the kernel service (start-service.sh; tests/service.spec.ts).
const servicePort = (process.env.UI_TEST_SERVICE_PORT ??= String(
  Number(port) + 2
));
const serviceURL =
  (process.env.UI_TEST_SERVICE_URL ??= `http://127.0.0.1:${servicePort}`);
const serviceHome =
  (process.env.UI_TEST_SERVICE_HOME ??= `/tmp/jgc-ui-tests-${servicePort}`);
// A fourth: the multi-user demo itself (scripts/demo-multiuser.sh through start-hub.sh):
// JupyterHub, its two students and the kernel service with two declared GPUs
// (tests/hub.spec.ts).
const hubPort = (process.env.UI_TEST_HUB_PORT ??= String(Number(port) + 3));
process.env.UI_TEST_HUB_SERVICE_PORT ??= String(Number(port) + 4);
const hubURL = (process.env.UI_TEST_HUB_URL ??= `http://127.0.0.1:${hubPort}`);
// The labs the tests start themselves (slurm_lab.py, reclaim_lab.py: tests/servers.py) remove
// their servers' homes as they end: they keep a copy of each server's log here, which the
// failure reporter reads.
process.env.JGC_KEEP_SERVER_LOGS ??= path.join(
  __dirname,
  'test-results',
  'lab-logs'
);
process.env.UI_TEST_HUB_PASSWORD ??= randomBytes(12).toString('hex');

/**
 * A server that `script` (start-server.sh unless said) runs on `url` (its settings in `env`), its
 * logs kept under test-results/server-logs (one folder per port).
 */
function server(
  url: string,
  env: Record<string, string>,
  script = 'start-server.sh'
): Extract<
  NonNullable<PlaywrightTestConfig['webServer']>,
  { command: string }
> {
  return {
    command: `bash ${script}`,
    url: `${url}/api`,
    timeout: 120_000,
    reuseExistingServer: false,
    // Without it playwright SIGKILLs the process group, and the supervisor could not remove the
    // test containers.
    gracefulShutdown: { signal: 'SIGTERM', timeout: 60_000 },
    stdout: 'pipe',
    stderr: 'pipe',
    env: {
      ...env,
      UI_TEST_LOG_DIR: path.join(
        __dirname,
        'test-results',
        'server-logs',
        env.UI_TEST_PORT ?? port
      )
    }
  };
}

export default defineConfig({
  ...baseConfig,
  testDir: './tests',
  outputDir: './test-results',
  // One server, one GPU ledger: tests that allocate GPUs must not overlap.
  workers: 1,
  fullyParallel: false,
  forbidOnly: !!process.env.CI,
  retries: 0,
  // Kernels start in containers (1-3 s each, more on a loaded 2-core machine), and some tests
  // restart the server.
  timeout: 120_000,
  expect: { timeout: 20_000 },
  reporter: [
    ['list'],
    ['html', { open: 'never', outputFolder: 'playwright-report' }],
    // What the servers logged during each failed test, in the output CI keeps.
    ['./failure-logs-reporter.ts']
  ],
  use: {
    ...baseConfig.use,
    baseURL,
    actionTimeout: 20_000,
    navigationTimeout: 60_000,
    // A trace records every test (screencast frames, DOM snapshots) to keep a failed one's: a
    // cost in CPU that a 2-core CI machine pays on every test, for files CI does not keep (it
    // keeps the output, where the failure reporter writes the servers' logs). Kept for runs on
    // a developer's machine.
    trace: process.env.CI ? 'off' : 'retain-on-failure',
    screenshot: 'only-on-failure',
    // Recording needs playwright's own ffmpeg, which is never downloaded.
    video: 'off',
    launchOptions: {
      executablePath: process.env.UI_TEST_CHROMIUM ?? '/usr/bin/chromium'
    }
  },
  webServer: [
    server(baseURL, {}),
    server(noEngineURL, {
      UI_TEST_PORT: noEnginePort,
      UI_TEST_HOME: `/tmp/jgc-ui-tests-${noEnginePort}`,
      UI_TEST_NO_ENGINE: '1'
    }),
    server(
      serviceURL,
      {
        UI_TEST_PORT: servicePort,
        UI_TEST_HOME: serviceHome
      },
      'start-service.sh'
    ),
    {
      // The Hub answers on /hub/api. The demo prepares the machine first (quick once the
      // test command has run it).
      ...server(`${hubURL}/hub`, { UI_TEST_PORT: hubPort }, 'start-hub.sh'),
      timeout: 300_000
    }
  ]
});
