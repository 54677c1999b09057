/**
 * The server side of bench/events, run inside the bench's server namespace:
 *   ip netns exec NS node --import tsx bench/events/server.ts CONFIG.yaml
 * The serve wiring minus TFTP (DHCP server, lifecycle store, HTTP app with the SSE stream), plus an
 * in-process event generator standing in for the servers' record() calls. Prints `READY`; on stdin,
 * `load MACHINES PER_SECOND SECONDS` records that many events and prints `LOADED <json>`.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { startDhcpThread } from '../../src/dhcp/thread.js';
import { buildApp } from '../../src/http/app.js';
import { openMachineSecrets } from '../../src/ignition/tokens.js';
import { createBootDecision } from '../../src/inventory/decision.js';
import { loadConfigFile } from '../../src/inventory/load.js';
import { type Mac, macFromBytes } from '../../src/inventory/mac.js';
import type { EventSource, MachineEventInput } from '../../src/lifecycle/events.js';
import { openLifecycle } from '../../src/lifecycle/store.js';
import { createRootLogger } from '../../src/log.js';

const configFile = process.argv[2];
if (!configFile) throw new Error('usage: server.ts CONFIG.yaml');
const loaded = await loadConfigFile(configFile, { missingAssets: 'warn' });
if (!loaded.ok) throw new Error(JSON.stringify(loaded.problems));
const config = () => loaded.config;
const logger = createRootLogger({ level: 'warn', destination: process.stderr });
const lifecycle = openLifecycle({
  stateDir: loaded.config.server.state,
  retention: loaded.config.events.retention,
  logger,
});
const decision = createBootDecision(config, lifecycle.stateOf);
const dhcp = await startDhcpThread({
  config: loaded.config,
  onConfigChange: () => {},
  record: lifecycle.record,
  logger,
});
const app = await buildApp({
  config,
  decision,
  record: lifecycle.record,
  logger,
  secrets: await openMachineSecrets(loaded.config.server.state),
  lifecycle,
  dhcpStats: () => dhcp.stats(),
});
await app.listen({ port: loaded.config.server.http.port, host: '0.0.0.0' });
process.stdout.write('READY\n');

/**
 * One install as the servers report it, ten events; the operator's reprovision starts it over. Each
 * detail is an object literal, as the servers build theirs: spreading a shared part in cost ~3 µs per
 * event on Node 20, a cost of this stand-in that no server pays.
 */
const STORY: [EventSource, string, (sentAt: number) => Record<string, unknown>][] = [
  ['dhcp', 'dhcp-offer', (sentAt) => ({ sentAt, firmware: 'bios-pxe', arch: 'x86_64' })],
  ['dhcp', 'dhcp-ack', (sentAt) => ({ sentAt, firmware: 'bios-pxe', arch: 'x86_64' })],
  ['tftp', 'tftp-transfer', (sentAt) => ({ sentAt, outcome: 'complete', bytes: 70_000 })],
  ['dhcp', 'dhcp-ack', (sentAt) => ({ sentAt, firmware: 'ipxe', arch: 'x86_64' })],
  ['http', 'ipxe-script', (sentAt) => ({ sentAt, script: 'install' })],
  ['http', 'asset-download', (sentAt) => ({ sentAt, file: 'kernel', status: 200 })],
  ['http', 'ignition-fetch', (sentAt) => ({ sentAt })],
  ['machine', 'progress', (sentAt) => ({ sentAt })],
  ['machine', 'installed', (sentAt) => ({ sentAt })],
  ['operator', 'reprovision', (sentAt) => ({ sentAt })],
];

function storyEvent(mac: Mac, step: number, sentAt: number): MachineEventInput {
  const [source, type, detail] = STORY[step % STORY.length] as (typeof STORY)[number];
  return { mac, source, type, detail: detail(sentAt) };
}

/** Records `perSecond` events spread over `machines` MACs for `seconds`, paced every 10 ms. */
async function load(machines: number, perSecond: number, seconds: number) {
  const macs = Array.from({ length: machines }, (_, index) =>
    macFromBytes(Buffer.from([0x52, 0x56, 0, (index >> 16) & 0xff, (index >> 8) & 0xff, index & 0xff])),
  );
  const loopDelay = monitorEventLoopDelay({ resolution: 5 });
  loopDelay.enable();
  const started = performance.now();
  let sent = 0;
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const elapsed = performance.now() - started;
      const due = Math.min(perSecond * seconds, Math.floor((perSecond * elapsed) / 1000));
      for (; sent < due; sent += 1) {
        const mac = macs[sent % machines] as Mac;
        const step = Math.floor(sent / machines);
        void lifecycle.record(storyEvent(mac, step, performance.timeOrigin + performance.now()));
      }
      if (sent >= perSecond * seconds) {
        clearInterval(timer);
        resolve();
      }
    }, 10);
  });
  loopDelay.disable();
  return {
    sent,
    durationMs: performance.now() - started,
    loopDelayMs: { p99: loopDelay.percentile(99) / 1e6, max: loopDelay.max / 1e6 },
  };
}

createInterface({ input: process.stdin }).on('line', (line) => {
  const [command, ...numbers] = line.trim().split(/\s+/);
  if (command !== 'load') return;
  const [machines = 1000, perSecond = 10_000, seconds = 30] = numbers.map(Number);
  void load(machines, perSecond, seconds).then((result) =>
    process.stdout.write(`LOADED ${JSON.stringify(result)}\n`),
  );
});
process.on('SIGTERM', () => {
  void (async () => {
    await app.close();
    await dhcp.close();
    await lifecycle.close();
    process.exit(0);
  })();
});
