/**
 * Runs the DHCP server alone, for tests and the bench, inside the namespace it is started in:
 *   ip netns exec NS node --import tsx test/dhcp/launch.ts CONFIG.yaml [--events] [--close-after-acks N]
 * Prints `READY` once the sockets are bound; with --events, one `EVENT <json>` line per recorded
 * event. On stdin, `stats` prints `STATS <json>`, `mac-for IP` prints `MAC-FOR <json>` (the MAC the
 * server binds that address to, or null). SIGTERM closes the server and exits 0. With
 * --close-after-acks, the server is closed as soon as the Nth ACK is decided, before its lease line
 * is synced, and `CLOSED` is printed once it is.
 */
import { createInterface } from 'node:readline';
import { startDhcpServer } from '../../src/dhcp/server.js';
import { createBootDecision } from '../../src/inventory/decision.js';
import { loadConfigFile } from '../../src/inventory/load.js';
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

const server = await startDhcpServer({
  config: () => config,
  decision: createBootDecision(
    () => config,
    () => undefined,
  ),
  record: async (event) => {
    if (printEvents) process.stdout.write(`EVENT ${JSON.stringify(event)}\n`);
    if (event.type === 'dhcp-ack' && ++acks === closeAfterAcks) {
      void server.close().then(() => process.stdout.write('CLOSED\n'));
    }
  },
  logger: logger.child({ component: 'dhcp' }),
});
process.stdout.write('READY\n');

createInterface({ input: process.stdin }).on('line', (line) => {
  const [command, argument] = line.trim().split(' ');
  if (command === 'stats') process.stdout.write(`STATS ${JSON.stringify(server.stats())}\n`);
  if (command === 'mac-for')
    process.stdout.write(`MAC-FOR ${JSON.stringify(server.macForIp(argument ?? '') ?? null)}\n`);
});
process.on('SIGTERM', () => {
  server.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
});
