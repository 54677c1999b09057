/**
 * Runs the DHCP server alone, for tests and the bench, inside the namespace it is started in:
 *   ip netns exec NS node --import tsx test/dhcp/launch.ts CONFIG.yaml [--events] [--close-after-acks N] [--thread] [--reload-at-start FILE]
 * Prints `READY` once the sockets are bound; with --events, one `EVENT <json>` line per recorded
 * event. On stdin, `stats` prints `STATS <json>`, `mac-for IP` prints `MAC-FOR <json>` (the MAC the
 * server binds that address to, or null). SIGTERM closes the server and exits 0. With
 * --close-after-acks, the server is closed as soon as the Nth ACK is decided, before its lease line
 * is synced, and `CLOSED` is printed once it is.
 * With --thread the server runs as `rackboot serve` runs it, on its own thread (dhcp/thread.ts), and
 * three more commands drive that: `block MS` keeps this main thread busy for MS ms (`BLOCKING`
 * before, `UNBLOCKED` after), `reload FILE` hands the thread that config (`RELOADED`), `kill-thread`
 * terminates the thread (`KILLED`).
 */
import { createInterface } from 'node:readline';
import type { Worker } from 'node:worker_threads';
import { startDhcpServer } from '../../src/dhcp/server.js';
import { startDhcpThread, startDhcpWorker } from '../../src/dhcp/thread.js';
import { createBootDecision } from '../../src/inventory/decision.js';
import { loadConfigFile } from '../../src/inventory/load.js';
import type { Config } from '../../src/inventory/schema.js';
import type { RecordEvent } from '../../src/lifecycle/events.js';
import { createRootLogger } from '../../src/log.js';

const [configFile, ...flags] = process.argv.slice(2);
if (!configFile) {
  process.stderr.write('usage: launch.ts CONFIG.yaml [--events]\n');
  process.exit(2);
}
const loaded = await loadConfigFile(configFile, { missingAssets: 'warn' });
if (!loaded.ok) {
  for (const problem of loaded.problems) {
    process.stderr.write(`${problem.file}:${problem.line}:${problem.col}: ${problem.message}\n`);
  }
  process.exit(1);
}
const config = loaded.config;
const printEvents = flags.includes('--events');
const closeAfterAcksFlag = flags.indexOf('--close-after-acks');
const closeAfterAcks = closeAfterAcksFlag === -1 ? undefined : Number(flags[closeAfterAcksFlag + 1]);
let acks = 0;
const logger = createRootLogger({
  level: process.env.RACKBOOT_LOG_LEVEL ?? 'warn',
  destination: process.stderr,
});

const record: RecordEvent = async (event) => {
  if (printEvents) process.stdout.write(`EVENT ${JSON.stringify(event)}\n`);
  if (event.type === 'dhcp-ack' && ++acks === closeAfterAcks) {
    void server.close().then(() => process.stdout.write('CLOSED\n'));
  }
};
const dhcpLogger = logger.child({ component: 'dhcp' });
let thread: Worker | undefined;
const threads: Worker[] = [];
const reloadListeners: ((config: Config) => void)[] = [];
// `--reload-at-start FILE`: a reload delivered, as the config watcher would, to the listeners
// subscribed at the moment the first thread is being started.
const reloadAtStartFlag = flags.indexOf('--reload-at-start');
const reloadAtStart =
  reloadAtStartFlag === -1
    ? undefined
    : await loadConfigFile(flags[reloadAtStartFlag + 1] ?? '', { missingAssets: 'warn' });
if (reloadAtStart && !reloadAtStart.ok) throw new Error(JSON.stringify(reloadAtStart.problems));
const server = flags.includes('--thread')
  ? await startDhcpThread({
      config,
      onConfigChange: (listener) => reloadListeners.push(listener),
      record,
      logger: dhcpLogger,
      startThread: (data) => {
        thread = startDhcpWorker(data);
        if (threads.length === 0 && reloadAtStart?.ok) {
          const next = reloadAtStart.config;
          queueMicrotask(() => {
            for (const listener of reloadListeners) listener(next);
          });
        }
        threads.push(thread);
        process.stdout.write(`THREAD-STARTING ${threads.length}\n`);
        return thread;
      },
    })
  : await startDhcpServer({
      config: () => config,
      decision: createBootDecision(
        () => config,
        () => undefined,
      ),
      record,
      logger: dhcpLogger,
    });
process.stdout.write('READY\n');

createInterface({ input: process.stdin }).on('line', async (line) => {
  const [command, argument] = line.trim().split(' ');
  if (command === 'stats') process.stdout.write(`STATS ${JSON.stringify(await server.stats())}\n`);
  if (command === 'mac-for')
    process.stdout.write(`MAC-FOR ${JSON.stringify(server.macForIp(argument ?? '') ?? null)}\n`);
  if (command === 'block') {
    process.stdout.write('BLOCKING\n');
    const until = performance.now() + Number(argument);
    while (performance.now() < until) {
      // Busy on purpose: the main thread answers nothing meanwhile.
    }
    process.stdout.write('UNBLOCKED\n');
  }
  if (command === 'reload') {
    const reloaded = await loadConfigFile(argument ?? '', { missingAssets: 'warn' });
    if (!reloaded.ok) throw new Error(JSON.stringify(reloaded.problems));
    for (const listener of reloadListeners) listener(reloaded.config);
    process.stdout.write('RELOADED\n');
  }
  if (command === 'close') {
    await server.close();
    // Threads still running once close() is done: none, or a restart outlived the shutdown.
    process.stdout.write(`CLOSED alive=${threads.filter((started) => started.threadId !== -1).length}\n`);
  }
  if (command === 'kill-thread') {
    await thread?.terminate();
    process.stdout.write('KILLED\n');
  }
});
process.on('SIGTERM', () => {
  server.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
});
