/**
 * How long a restart after a crash takes to fold the events recorded after the last snapshot of the
 * machine records (store.ts `SNAPSHOT_INTERVAL_MS` bounds how many there are):
 *   node --import tsx bench/events/replay.ts [--events 100000] [--machines 1000]
 * Records the events with snapshots held off, as a process that died before its next snapshot, then
 * times opening the same state directory. No network; the state goes to a temporary directory.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { macFromBytes } from '../../src/inventory/mac.js';
import type { EventSource } from '../../src/lifecycle/events.js';
import { openLifecycle } from '../../src/lifecycle/store.js';
import { numberOption } from '../plumbing.js';

const EVENTS = numberOption('events', 100_000);
const MACHINES = numberOption('machines', 1000);
/** The install story bench/events records, one step per machine per round. */
const STORY: [EventSource, string][] = [
  ['dhcp', 'dhcp-offer'],
  ['dhcp', 'dhcp-ack'],
  ['tftp', 'tftp-transfer'],
  ['dhcp', 'dhcp-ack'],
  ['http', 'ipxe-script'],
  ['http', 'asset-download'],
  ['http', 'ignition-fetch'],
  ['machine', 'progress'],
  ['machine', 'installed'],
  ['operator', 'reprovision'],
];
const DETAILS: Record<string, Record<string, unknown>> = {
  'dhcp-offer': { firmware: 'bios-pxe', arch: 'x86_64' },
  'dhcp-ack': { firmware: 'bios-pxe', arch: 'x86_64' },
  'tftp-transfer': { outcome: 'complete', bytes: 70_000 },
  'ipxe-script': { script: 'install' },
  'asset-download': { file: 'kernel', status: 200 },
};

const stateDir = mkdtempSync(join(tmpdir(), 'rackboot-replay-'));
try {
  const logger = pino({ level: 'warn' });
  const crashed = openLifecycle({
    stateDir,
    retention: 1000,
    logger,
    snapshotIntervalMs: Number.MAX_SAFE_INTEGER,
  });
  const macs = Array.from({ length: MACHINES }, (_, index) =>
    macFromBytes(Buffer.from([0x52, 0x54, 0, (index >> 16) & 0xff, (index >> 8) & 0xff, index & 0xff])),
  );
  let pending: Promise<void>[] = [];
  for (let index = 0; index < EVENTS; index += 1) {
    const [source, type] = STORY[Math.floor(index / MACHINES) % STORY.length] as [EventSource, string];
    const mac = macs[index % MACHINES];
    pending.push(crashed.record({ mac, source, type, detail: { ...DETAILS[type] } }));
    // Bounded memory: every few thousand events, wait for their commit.
    if (pending.length === 5000) {
      await Promise.all(pending);
      pending = [];
    }
  }
  await Promise.all(pending);
  const started = performance.now();
  const reopened = openLifecycle({ stateDir, retention: 1000, logger });
  const elapsedMs = performance.now() - started;
  process.stdout.write(
    `${EVENTS} events after the last snapshot, ${reopened.machines().length} machines: the restart took ` +
      `${elapsedMs.toFixed(0)} ms to open the history (${((elapsedMs * 1000) / EVENTS).toFixed(1)} µs per event)\n`,
  );
  await reopened.close();
} finally {
  rmSync(stateDir, { recursive: true, force: true });
}
// The crashed store is never closed, as after a crash: its writer thread would keep the process.
process.exit(0);
