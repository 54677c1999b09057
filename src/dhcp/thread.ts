import type { Worker } from 'node:worker_threads';
import type { LevelWithSilentOrString } from 'pino';
import type { Config } from '../inventory/schema.js';
import type { MachineEventInput, RecordEvent } from '../lifecycle/events.js';
import type { Logger } from '../log.js';
import { StateError } from '../state-error.js';
import { revivedLogArguments, startModuleWorker } from '../worker-thread.js';
import { AddressBook, type AddressNews } from './address-book.js';
import type { DhcpServer, DhcpStats } from './server.js';

/**
 * The DHCP server on a thread of its own. On the main thread it shared one event loop with the HTTP
 * server, the SSE streams and the history: every event recorded and every script served delayed the
 * DHCP answers behind it (bench/events: 10,000 events a second cost 15–28 % of the DORAs a second,
 * and their p99 doubled). The thread runs server.ts as it is; this side forwards config reloads,
 * records its events, logs its lines and keeps a copy of its AddressBook for the TFTP and HTTP
 * servers' macForIp.
 */

export interface DhcpThreadData {
  config: Config;
  logLevel: LevelWithSilentOrString;
}

export type ToDhcpThread =
  | { kind: 'config'; config: Config }
  | { kind: 'stats'; id: number }
  | { kind: 'close' };

export type FromDhcpThread =
  | { kind: 'ready' }
  | { kind: 'failed'; error: ThreadStartError }
  | { kind: 'news'; events: MachineEventInput[]; addresses: AddressNews[] }
  | { kind: 'log'; level: number; args: unknown[] }
  | { kind: 'stats'; id: number; stats: DhcpStats }
  | { kind: 'closed' };

/** What a failed start reports: enough for rackboot.ts to name the config key of a port in use. */
interface ThreadStartError {
  message: string;
  code?: string | undefined;
  syscall?: string | undefined;
  address?: string | undefined;
  port?: number | undefined;
  /** A StateError on the thread (a lease log it cannot open): serve prints it as one line. */
  state: boolean;
}

export interface DhcpThreadOptions {
  config: Config;
  /** Subscribes to config reloads; each new snapshot is sent to the thread. */
  onConfigChange: (listener: (config: Config) => void) => void;
  record: RecordEvent;
  logger: Logger;
  /** For tests: how the thread is started (startDhcpWorker, wrapped). */
  startThread?: (data: DhcpThreadData) => Worker;
}

/** Starts dhcp/worker.ts, compiled or from source like this module. */
export function startDhcpWorker(data: DhcpThreadData): Worker {
  return startModuleWorker('worker', import.meta.url, data);
}

/**
 * A thread that ends unasked is started again after this long (the lease log keeps its leases); a
 * start that fails waits twice as long as the one before, up to a minute.
 */
const RESTART_DELAY_MS = 1000;
const RESTART_DELAY_MAX_MS = 60_000;

export async function startDhcpThread(options: DhcpThreadOptions): Promise<DhcpServer> {
  const { logger } = options;
  const startThread = options.startThread ?? startDhcpWorker;
  let config = options.config;
  /** The thread that last became ready (it may have died since); none before the first start. */
  let thread: Worker | undefined;
  /** A start in progress: close() waits for it, so no thread comes up after close() is done. */
  let starting: Promise<void> | undefined;
  let addresses = new AddressBook();
  let closing = false;
  let closed: Promise<void> | undefined;
  let nextStatsId = 0;
  let restartDelayMs = RESTART_DELAY_MS;
  /**
   * Counts of the threads that died, as last reported, and of the running one: a new thread counts
   * from 0, so without the dead ones' the totals on /metrics would fall back.
   */
  let countsOfDeadThreads: DhcpCounts = { messages: [], malformed: [] };
  let lastCounts: DhcpCounts = { messages: [], malformed: [] };
  const statsWaiters = new Map<
    number,
    { resolve: (stats: DhcpStats) => void; reject: (error: Error) => void }
  >();

  const recordAll = (events: MachineEventInput[]) => {
    for (const event of events) {
      // A record() that throws synchronously is caught as a rejection, as on the DHCP thread before.
      void (async () => options.record(event))().catch((error: unknown) =>
        logger.warn({ err: error }, 'recording a DHCP event failed'),
      );
    }
  };

  const levelNames = logger.levels.labels;
  const log = (level: number, args: unknown[]) => {
    const method = levelNames[level] as 'info';
    (logger[method] as (...logArgs: unknown[]) => void)(...args);
  };

  /** Starts a thread; resolves once its sockets are bound, rejects with its start error. */
  const launch = () =>
    new Promise<void>((resolve, reject) => {
      const launchedWith = config;
      const started = startThread({ config: launchedWith, logLevel: logger.level });
      const book = new AddressBook();
      let ready = false;
      let failure: Error | undefined;
      started.on('message', (message: FromDhcpThread) => {
        switch (message.kind) {
          case 'ready':
            ready = true;
            restartDelayMs = RESTART_DELAY_MS;
            thread = started;
            book.inheritLearned(addresses);
            addresses = book;
            // A reload while the thread was starting had no thread to go to.
            if (config !== launchedWith)
              started.postMessage({ kind: 'config', config } satisfies ToDhcpThread);
            resolve();
            break;
          case 'failed':
            failure = Object.assign(
              message.error.state ? new StateError(message.error.message) : new Error(message.error.message),
              message.error,
            );
            break;
          case 'news':
            for (const news of message.addresses) book.take(news);
            recordAll(message.events);
            break;
          case 'log':
            log(message.level, revivedLogArguments(message.args));
            break;
          case 'stats':
            lastCounts = message.stats;
            statsWaiters
              .get(message.id)
              ?.resolve({ ...message.stats, ...addedCounts(countsOfDeadThreads, message.stats) });
            statsWaiters.delete(message.id);
            break;
          case 'closed':
            break;
        }
      });
      started.on('error', (error) => {
        failure ??= error;
      });
      started.once('exit', (code) => {
        for (const waiter of statsWaiters.values()) waiter.reject(new Error('the DHCP thread ended'));
        statsWaiters.clear();
        if (!ready) {
          reject(
            failure ?? new Error(`the DHCP thread exited with code ${code} before its sockets were bound`),
          );
          return;
        }
        if (closing) return;
        countsOfDeadThreads = addedCounts(countsOfDeadThreads, lastCounts);
        lastCounts = { messages: [], malformed: [] };
        logger.error(
          { err: failure, code, restartInMs: RESTART_DELAY_MS },
          'the DHCP thread died; starting another (its leases are in the lease log)',
        );
        setTimeout(relaunch, RESTART_DELAY_MS).unref();
      });
    });

  const relaunch = () => {
    if (closing) return;
    starting = launch();
    starting.catch((error: unknown) => {
      if (closing) return;
      restartDelayMs = Math.min(restartDelayMs * 2, RESTART_DELAY_MAX_MS);
      logger.error(
        { err: error, restartInMs: restartDelayMs },
        'the DHCP thread could not start again; DHCP is down until it does',
      );
      setTimeout(relaunch, restartDelayMs).unref();
    });
  };

  // Subscribed before the first start: a reload while the thread starts is sent to it once ready.
  options.onConfigChange((next) => {
    config = next;
    if (!closing) thread?.postMessage({ kind: 'config', config: next } satisfies ToDhcpThread);
  });
  starting = launch();
  await starting;

  return {
    close() {
      closing = true;
      closed ??= (async () => {
        await starting?.catch(() => undefined);
        const current = thread;
        if (!current || current.threadId === -1) return;
        await new Promise<void>((resolve) => {
          current.once('exit', () => resolve());
          current.postMessage({ kind: 'close' } satisfies ToDhcpThread);
        });
      })();
      return closed;
    },
    macForIp: (ip) => addresses.macForIp(ip, Date.now()),
    stats() {
      return new Promise((resolve, reject) => {
        if (!thread || thread.threadId === -1) {
          reject(new Error('the DHCP thread is being started again'));
          return;
        }
        const id = nextStatsId++;
        statsWaiters.set(id, { resolve, reject });
        thread.postMessage({ kind: 'stats', id } satisfies ToDhcpThread);
      });
    },
  };
}

type DhcpCounts = Pick<DhcpStats, 'messages' | 'malformed'>;

/** `a` and `b` summed count by count (a message type and decision, a drop reason). */
function addedCounts(a: DhcpCounts, b: DhcpCounts): DhcpCounts {
  const sum = <Row extends { count: number }>(rows: Row[], keyOf: (row: Row) => string): Row[] => {
    const totals = new Map<string, Row>();
    for (const row of rows) {
      const key = keyOf(row);
      const total = totals.get(key);
      totals.set(key, total ? { ...total, count: total.count + row.count } : row);
    }
    return [...totals.values()];
  };
  return {
    messages: sum([...a.messages, ...b.messages], (row) => `${row.type}|${row.decision}`),
    malformed: sum([...a.malformed, ...b.malformed], (row) => row.reason),
  };
}
