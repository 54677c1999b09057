import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LabApi } from './api-client.js';

/**
 * The servers the lab starts (rackboot, dnsmasq, radvd, the baseline's HTTP server) as watched
 * processes: output recorded from the first byte, readiness awaited on a line or on the API, every
 * wait bounded.
 */

/** Waits for `promise` at most `ms`; the timer never outlives the wait. */
export async function withTimeout(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise, new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

export interface WatchedProcess {
  child: ChildProcess;
  /** Resolves once the output so far (or later) matches; rejects on exit or after `limitMs`. */
  waitFor(pattern: RegExp, limitMs: number): Promise<void>;
  /** The last few KB of output, for error messages. */
  recent(): string;
}

const WATCHED_OUTPUT_LIMIT = 256 * 1024;

/** Records a server's output from its first byte, so a readiness line printed early is not missed. */
export function watchProcess(
  child: ChildProcess,
  name: string,
  onLine: (line: string) => void,
): WatchedProcess {
  let output = '';
  const waiters = new Set<() => void>();
  for (const stream of [child.stdout, child.stderr]) {
    let partial = '';
    stream?.on('data', (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      output = (output + text).slice(-WATCHED_OUTPUT_LIMIT);
      const lines = (partial + text).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) if (line.trim() !== '') onLine(line);
      for (const waiter of waiters) waiter();
    });
  }
  const recent = () => output.slice(-3000);
  return {
    child,
    recent,
    waitFor(pattern, limitMs) {
      return new Promise((resolve, reject) => {
        const finish = (error?: Error) => {
          clearTimeout(timer);
          waiters.delete(check);
          child.off('exit', onExit);
          if (error) reject(error);
          else resolve();
        };
        const check = () => {
          if (pattern.test(output)) finish();
        };
        const onExit = (code: number | null) =>
          finish(new Error(`${name} exited (${code}) before it was ready:\n${recent()}`));
        const timer = setTimeout(
          () => finish(new Error(`${name} not ready within ${limitMs} ms:\n${recent()}`)),
          limitMs,
        );
        waiters.add(check);
        child.once('exit', onExit);
        check();
      });
    },
  };
}

/** rackboot is ready when its API answers; bounded, and fails at once if the process exits. */
export async function waitForApi(api: LabApi, rackboot: WatchedProcess, limitMs: number): Promise<void> {
  const { child } = rackboot;
  const deadline = Date.now() + limitMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `rackboot exited (${child.exitCode ?? child.signalCode}) at start:\n${rackboot.recent()}`,
      );
    }
    const answered = await api.get('/api/v1/machines').then(
      (response) => response.status === 200,
      () => false,
    );
    if (answered) return;
    await sleep(250);
  }
  throw new Error(`rackboot's API did not answer within ${limitMs} ms:\n${rackboot.recent()}`);
}
