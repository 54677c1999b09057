import { appendFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import type { Mac } from '../src/boot-plan.js';
import { LEASE_LOG_FILE, LeaseLog } from '../src/dhcp/lease-log.js';
import { type LeaseChange, LeaseTable } from '../src/dhcp/leases.js';
import { ipToNumber } from '../src/ipv4.js';

const NOW = Date.UTC(2026, 10, 25, 12);
const macOf = (index: number) =>
  `52:54:00:50:${(index >> 8).toString(16).padStart(2, '0')}:${(index & 0xff).toString(16).padStart(2, '0')}` as Mac;

async function tempDirectory(t: Test): Promise<string> {
  const directory = await mkdtemp(join(tmpdir(), 'rackboot-leases-'));
  t.teardown(() => rm(directory, { recursive: true, force: true }));
  return directory;
}

async function openTable(directory: string) {
  const table = new LeaseTable();
  const opened = await LeaseLog.open(directory, () => table.snapshot(NOW));
  for (const change of opened.changes) table.apply(change);
  await opened.log.compact();
  return { table, log: opened.log, tornLines: opened.tornLines };
}

t.test('concurrent appends share fdatasyncs and all survive a reopen', async (t) => {
  const directory = await tempDirectory(t);
  const { table, log } = await openTable(directory);
  const changes: LeaseChange[] = Array.from({ length: 1000 }, (_, index) => ({
    kind: 'bind',
    mac: macOf(index),
    ip: ipToNumber('10.77.9.0') + index,
    expiresAt: NOW + 3_600_000,
    hostname: index === 0 ? 'node0' : undefined,
  }));
  for (const change of changes) table.apply(change);
  await Promise.all(changes.map((change) => log.append(change)));
  t.ok(log.syncs >= 1 && log.syncs < 100, `group commit: ${log.syncs} fdatasyncs for 1000 appends`);
  await log.close();

  const reopened = await openTable(directory);
  t.equal(reopened.table.boundLeases(NOW).length, 1000);
  t.equal(reopened.table.leaseOf(macOf(0))?.hostname, 'node0');
  t.equal(reopened.table.leaseOf(macOf(999))?.ip, ipToNumber('10.77.9.0') + 999);
  await reopened.log.close();
});

t.test('a torn last line (kill -9 mid-write) is skipped; everything before it is kept', async (t) => {
  const directory = await tempDirectory(t);
  const { table, log } = await openTable(directory);
  const bind: LeaseChange = {
    kind: 'bind',
    mac: macOf(1),
    ip: ipToNumber('10.77.9.1'),
    expiresAt: NOW + 60_000,
  };
  table.apply(bind);
  await log.append(bind);
  await log.close();
  await appendFile(join(directory, LEASE_LOG_FILE), '{"t":"bind","mac":"52:54:00:50:00:02","ip":"10.7');
  const reopened = await openTable(directory);
  t.equal(reopened.tornLines, 1);
  t.equal(reopened.table.boundLeases(NOW).length, 1);
  t.equal(reopened.table.leaseOf(macOf(2)), undefined);
  await reopened.log.close();
  const text = await readFile(join(directory, LEASE_LOG_FILE), 'utf8');
  t.equal(text.split('\n').filter(Boolean).length, 1, 'the start-up rewrite dropped the torn line');
});

t.test('release and decline replay; offers are never written', async (t) => {
  const directory = await tempDirectory(t);
  const { table, log } = await openTable(directory);
  const ip = ipToNumber('10.77.9.5');
  const changes: LeaseChange[] = [
    { kind: 'bind', mac: macOf(5), ip, expiresAt: NOW + 60_000 },
    { kind: 'release', mac: macOf(5), ip, at: NOW },
    { kind: 'decline', ip: ip + 1, until: NOW + 60_000 },
  ];
  for (const change of changes) {
    table.apply(change);
    await log.append(change);
  }
  await t.rejects(log.append({ kind: 'offer', mac: macOf(6), ip: ip + 2, expiresAt: NOW + 1 }));
  await log.close();
  const reopened = await openTable(directory);
  t.equal(reopened.table.leaseOf(macOf(5))?.state, 'free');
  t.notOk(reopened.table.isAvailable(ip + 1, macOf(7), new Map(), NOW), 'declined address stays out');
  t.ok(reopened.table.isAvailable(ip, macOf(7), new Map(), NOW), 'released address is free');
  await reopened.log.close();
});

t.test('a bound client that DISCOVERs again keeps its durable lease in the table', async (t) => {
  const table = new LeaseTable();
  const ip = ipToNumber('10.77.9.9');
  table.apply({ kind: 'bind', mac: macOf(9), ip, expiresAt: NOW + 3_600_000 });
  table.apply({ kind: 'offer', mac: macOf(9), ip, expiresAt: NOW + 60_000 });
  t.match(table.leaseOf(macOf(9)), { state: 'bound', expiresAt: NOW + 3_600_000 });
  t.equal(table.snapshot(NOW).length, 1);
});
