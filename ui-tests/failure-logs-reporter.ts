/**
 * A reporter that prints, for each test that failed, what the servers logged while it ran: CI
 * keeps only the runner's output, and the servers' logs (test-results/server-logs) are copied
 * only as the servers stop, so a failure that does not happen again on another machine would
 * otherwise be read from the browser's side alone.
 *
 * The logs are those of the servers this run started (their homes come from
 * playwright.config.ts, through the environment), of the labs the tests start themselves (the
 * copies tests/servers.py keeps in JGC_KEEP_SERVER_LOGS) and of the multi-user demo (its own
 * folder under /tmp). Lines are chosen by their timestamp (the Jupyter and JupyterHub log format,
 * `[I 2026-11-25 23:02:51.547 ServerApp] ...`, local time); a line without one (a traceback)
 * goes with the line before it.
 */
import * as fs from 'fs';
import * as path from 'path';

import type {
  FullResult,
  Reporter,
  TestCase,
  TestResult
} from '@playwright/test/reporter';

// Lines printed per log at most: the last ones, nearest the failure.
const MAX_LINES = 200;
// Lines logged shortly before the test began (its server's restart) are its own too.
const BEFORE_MS = 2_000;
const AFTER_MS = 1_000;
const STAMP = /^\[[A-Z] (\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d\.\d{3}) /;

/** The log files of this run's servers, as they are while they run. */
function logFiles(): string[] {
  const folders = [
    process.env.UI_TEST_HOME,
    process.env.UI_TEST_SERVICE_HOME,
    process.env.UI_TEST_NO_ENGINE_PORT
      ? `/tmp/jgc-ui-tests-${process.env.UI_TEST_NO_ENGINE_PORT}`
      : undefined
  ]
    .filter((home): home is string => !!home)
    .map(home => path.join(home, 'logs'));
  // The servers of the labs the tests start themselves (tests/servers.py keeps their logs).
  if (process.env.JGC_KEEP_SERVER_LOGS) {
    folders.push(process.env.JGC_KEEP_SERVER_LOGS);
  }
  // The multi-user demo's folder has a random name; its logs are read by their lines' times.
  for (const name of safeList('/tmp')) {
    if (name.startsWith('jgc-demo-multiuser.')) {
      folders.push(path.join('/tmp', name));
    }
  }
  const files: string[] = [];
  for (const folder of folders) {
    for (const name of safeList(folder)) {
      if (name.endsWith('.log')) {
        files.push(path.join(folder, name));
      }
    }
  }
  return files;
}

function safeList(folder: string): string[] {
  try {
    return fs.readdirSync(folder);
  } catch {
    return [];
  }
}

/** The lines of `file` logged between `from` and `to` (ms since the epoch). */
export function linesBetween(text: string, from: number, to: number): string[] {
  const chosen: string[] = [];
  let inside = false;
  for (const line of text.split('\n')) {
    const stamp = STAMP.exec(line);
    if (stamp) {
      const at = new Date(`${stamp[1]}T${stamp[2]}`).getTime();
      inside = at >= from && at <= to;
    }
    if (inside) {
      chosen.push(line);
    }
  }
  return chosen;
}

export default class FailureLogsReporter implements Reporter {
  onTestEnd(test: TestCase, result: TestResult): void {
    if (result.status === test.expectedStatus || result.status === 'skipped') {
      return;
    }
    const from = result.startTime.getTime() - BEFORE_MS;
    const to = result.startTime.getTime() + result.duration + AFTER_MS;
    const out: string[] = [
      '',
      `── the servers' logs while "${test.title}" ran (${result.status}) ──`
    ];
    for (const file of logFiles()) {
      let text: string;
      try {
        text = fs.readFileSync(file, 'utf8');
      } catch {
        continue;
      }
      const lines = linesBetween(text, from, to);
      if (lines.length === 0) {
        continue;
      }
      const shown = lines.slice(-MAX_LINES);
      const cut = lines.length - shown.length;
      out.push(
        `── ${file}${cut ? ` (its last ${shown.length} lines of ${lines.length})` : ''}:`
      );
      out.push(...shown);
    }
    out.push(`── end of the servers' logs for "${test.title}" ──`, '');
    process.stdout.write(out.join('\n') + '\n');
  }

  onEnd(_result: FullResult): void {
    // Nothing to add: each failure's logs were printed as it ended.
  }

  printsToStdio(): boolean {
    return true;
  }
}
