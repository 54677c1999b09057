import { spawn } from 'node:child_process';
import { chownSync, statSync } from 'node:fs';
import fsPromises, {
  appendFile,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  truncate,
} from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import type { Mac } from '../src/boot-plan.js';
import { AddressBook } from '../src/dhcp/address-book.js';
import { LEASE_LOG_FILE, LeaseLog } from '../src/dhcp/lease-log.js';
import { type LeaseChange, LeaseTable, type Pool, type Reservations } from '../src/dhcp/leases.js';
import { type DhcpDeps, startDhcpServer } from '../src/dhcp/server.js';
import { ipToNumber, parseCidr } from '../src/ipv4.js';
import { StateError } from '../src/state-error.js';
import { REPO_ROOT, waitForLine } from './dhcp/harness.js';
import { requireTools } from './helpers/netns.js';
import { fill, fullTmpfs } from './helpers/root.js';

const NOW = Date.UTC(2026, 10, 25, 12);
const macOf = (index: number) =>
  `52:54:00:50:${(index >> 8).toString(16).padStart(2, '0')}:${(index & 0xff).toString(16).padStart(2, '0')}` as Mac;

async function tempDirectory(t: Test): Promise<string> {
  const directory = await mkdtemp(join(tmpdir(), 'rackboot-leases-'));
  t.teardown(() => rm(directory, { recursive: true, force: true }));
  return directory;
}

/** Machine n's one-minute lease on 10.77.9.n. */
function bindOf(n: number): LeaseChange {
  return { kind: 'bind', mac: macOf(n), ip: ipToNumber(`10.77.9.${n}`), expiresAt: NOW + 60_000 };
}

async function openTable(directory: string) {
  const table = new LeaseTable();
  const compactionErrors: Error[] = [];
  const opened = await LeaseLog.open(
    directory,
    () => table.snapshot(NOW),
    (error) => compactionErrors.push(error),
  );
  for (const change of opened.changes) table.apply(change);
  await opened.log.compact();
  return { table, log: opened.log, tornLines: opened.tornLines, damage: opened.damage, compactionErrors };
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
  const bind = bindOf(1);
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

t.test('damage inside the file is reported with its size, and the file as it was is kept', async (t) => {
  const directory = await tempDirectory(t);
  const file = join(directory, LEASE_LOG_FILE);
  const lines = [1, 2, 3].map(
    (n) => `${JSON.stringify({ t: 'bind', mac: macOf(n), ip: `10.77.9.${n}`, exp: NOW + 60_000 })}\n`,
  );
  // As a power cut can leave ext4: a block of zeros over the middle line.
  const damaged = `${lines[0]}${'\0'.repeat(40)}\n${lines[2]}`;
  await appendFile(file, damaged);
  const reopened = await openTable(directory);
  t.equal(reopened.table.boundLeases(NOW).length, 2, 'the lines around it are kept');
  t.equal(reopened.damage?.bytes, 41, 'the damage is measured');
  const copy = reopened.damage?.copy ?? '';
  t.match(copy, `${LEASE_LOG_FILE}.damaged-`);
  t.equal(await readFile(copy, 'utf8'), damaged, 'the original is kept for the operator');
  await reopened.log.close();

  const tornOnly = await tempDirectory(t);
  await appendFile(join(tornOnly, LEASE_LOG_FILE), `${lines[0]}{"t":"bind","mac`);
  const crashed = await openTable(tornOnly);
  t.equal(crashed.tornLines, 1);
  t.equal(crashed.damage, undefined, 'a torn last line (kill -9) is not damage');
  await crashed.log.close();
});

t.test('a start as root leaves the lease log to the owner of server.state, not to root', async (t) => {
  // Before: the start-up rewrite made a root-owned file (as `sudo rackboot serve` does), and the
  // service user's next start failed with EACCES opening it: DHCP, and so the server, did not start.
  if (process.getuid?.() !== 0)
    throw new Error('this test needs root (it gives files to nobody); CI runs as root');
  const NOBODY = 65534;
  const directory = await tempDirectory(t);
  chownSync(directory, NOBODY, NOBODY);
  const { log } = await openTable(directory);
  await log.close();
  const { uid, gid } = statSync(join(directory, LEASE_LOG_FILE));
  t.same({ uid, gid }, { uid: NOBODY, gid: NOBODY });
});

t.test(
  'a full disk when the start rewrites the lease log: one line naming it, the log kept as it was',
  async (t) => {
    // Before: the bare "ENOSPC: no space left on device, write" with a stack, and the log left open.
    const { directory, filler } = fullTmpfs(t, 'lease-log-enospc');
    const file = join(directory, LEASE_LOG_FILE);
    const { table, log } = await openTable(directory);
    for (const n of [1, 2, 3]) {
      table.apply(bindOf(n));
      await log.append(bindOf(n));
    }
    await log.close();
    const before = await readFile(file, 'utf8');
    fill(filler);
    // The lease log is all the DHCP server reads before its rewrite.
    const deps = { config: () => ({ server: { state: directory } }), logger: pino({ level: 'silent' }) };
    const failed = await startDhcpServer(deps as unknown as DhcpDeps).catch((error: unknown) => error);
    t.type(failed, StateError);
    t.equal(
      (failed as Error).message,
      `cannot rewrite the lease log ${file}: ENOSPC: no space left on device, write; the disk (or this user's quota) is full: free space on its file system`,
    );
    t.equal(await readFile(file, 'utf8'), before, 'the lease log as it was');
    t.same((await readdir(directory)).sort(), [LEASE_LOG_FILE, 'filler'], 'no part-written rewrite left');
    const open = await Promise.all(
      (await readdir('/proc/self/fd')).map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => '')),
    );
    t.notOk(open.includes(file), 'the lease log is closed');
    await rm(filler);
    const restarted = await openTable(directory);
    t.equal(restarted.table.boundLeases(NOW).length, 3, 'with room, the next start has every lease');
    await restarted.log.close();
  },
);

t.test('a lease log deleted under the running server is written again, with every lease', async (t) => {
  const directory = await tempDirectory(t);
  const file = join(directory, LEASE_LOG_FILE);
  const { table, log } = await openTable(directory);
  const before = bindOf(1);
  table.apply(before);
  await log.append(before);
  // An operator clearing the leases with the server running.
  await rm(file);
  const after = bindOf(2);
  table.apply(after);
  await log.append(after);

  // Then replaced by a directory: the append that cannot be made durable is refused, naming why.
  await rm(file);
  await mkdir(file);
  const refused = bindOf(3);
  table.apply(refused);
  await t.rejects(log.append(refused), { message: /cannot rewrite the lease log .*; it is a directory/ });
  await rm(file, { recursive: true });
  const resumed = bindOf(4);
  table.apply(resumed);
  await log.append(resumed);
  await log.close();

  const reopened = await openTable(directory);
  t.same(
    reopened.table.boundLeases(NOW).map((lease) => lease.mac),
    [1, 2, 3, 4].map(macOf),
    'the next start has the leases acknowledged before and after the deletion',
  );
  await reopened.log.close();
});

t.test(
  'a lease log emptied under the running server (copytruncate) is written again, with every lease',
  async (t) => {
    const directory = await tempDirectory(t);
    const { table, log } = await openTable(directory);
    for (const n of [1, 2]) {
      const change = bindOf(n);
      table.apply(change);
      await log.append(change);
    }
    await truncate(join(directory, LEASE_LOG_FILE), 0);
    const after = bindOf(3);
    table.apply(after);
    await log.append(after);
    await log.close();

    const reopened = await openTable(directory);
    t.same(
      reopened.table.boundLeases(NOW).map((lease) => lease.mac),
      [1, 2, 3].map(macOf),
      'the next start has the leases acknowledged before the truncation, and after',
    );
    await reopened.log.close();
  },
);

t.test('a line whose address is not an IPv4 address is skipped and counted like a torn one', async (t) => {
  const directory = await tempDirectory(t);
  await appendFile(
    join(directory, LEASE_LOG_FILE),
    `{"t":"bind","mac":"52:54:00:50:00:03","ip":"not-an-ip","exp":${NOW + 60_000}}\n`,
  );
  const reopened = await openTable(directory);
  t.equal(reopened.tornLines, 1);
  t.equal(reopened.table.leaseOf(macOf(3)), undefined);
  await reopened.log.close();
});

t.test(
  'a write the disk takes only in part fails its batch, and the next write starts on a new line',
  async (t) => {
    await requireTools('unshare', 'mount');
    const directory = await tempDirectory(t);
    // A 16 KiB tmpfs in a mount namespace of its own: it fills up for real, and vanishes with the child.
    const child = spawn(
      'unshare',
      [
        '--mount',
        'sh',
        '-c',
        'mount -t tmpfs -o size=16k tmpfs "$1" && exec "$2" --import tsx "$3" "$1"',
        'sh',
        directory,
        process.execPath,
        fileURLToPath(new URL('./dhcp/full-disk.ts', import.meta.url)),
      ],
      { cwd: REPO_ROOT },
    );
    const line = await waitForLine(child, (line) => line.startsWith('RESULT '), 30_000);
    const { resolved, replayed, tornLines } = JSON.parse(line.slice('RESULT '.length)) as {
      resolved: string[];
      replayed: string[];
      tornLines: number;
    };
    t.ok(
      resolved.length < 102,
      `the appends that did not fit were rejected (${resolved.length} of 102 resolved)`,
    );
    t.same(
      resolved.filter((mac) => !replayed.includes(mac)),
      [],
      'every resolved append is replayed',
    );
    t.ok(resolved.includes('52:54:00:51:00:65'), 'the append after the space was freed resolved');
    t.equal(tornLines, 1, 'only the torn line is skipped');
  },
);

t.test(
  'a disk full under a burst of REQUESTs: ACKs withheld, one error line, and ACKs again once space is freed',
  async (t) => {
    await requireTools('unshare', 'mount', 'ip');
    const directory = await tempDirectory(t);
    // A tmpfs and a network of their own: the disk fills for real, and the DHCP traffic stays inside.
    const child = spawn(
      'unshare',
      [
        '--mount',
        '--net',
        'sh',
        '-c',
        'mount -t tmpfs -o size=64k tmpfs "$1" && exec "$2" --import tsx "$3" "$1"',
        'sh',
        directory,
        process.execPath,
        fileURLToPath(new URL('./dhcp/full-disk-server.ts', import.meta.url)),
      ],
      { cwd: REPO_ROOT },
    );
    const line = await waitForLine(child, (line) => line.startsWith('RESULT '), 30_000);
    type Counts = { ack: number; withheld: number };
    const { full, freed, fullAgain, freedAgain, lines } = JSON.parse(line.slice('RESULT '.length)) as {
      full: Counts;
      freed: Counts;
      fullAgain: Counts;
      freedAgain: Counts;
      lines: { level: number; msg: string }[];
    };
    t.same(full, { ack: 0, withheld: 60 }, 'no ACK left while its lease could not be written');
    t.same(
      freed,
      { ack: 60, withheld: 60 },
      'once space was freed, every client was ACKed without a restart',
    );
    // The lease log's last page has room for a few lines: at the edge, some writes pass, some fail.
    t.ok(fullAgain.withheld > 60, `full again: ACKs withheld again (${fullAgain.withheld - 60})`);
    t.same(
      freedAgain,
      { ack: fullAgain.ack + 60, withheld: fullAgain.withheld },
      'and every client ACKed once freed',
    );
    const errors = lines.filter((logged) => logged.level >= 50);
    t.equal(errors.length, 1, 'one error line within the minute, however the writes failed and passed');
    t.match(errors[0]?.msg, /write failed \(ENOSPC.*free space on its file system/);
    t.equal(
      lines.filter((logged) => logged.msg.endsWith('written again; ACKs leave again')).length,
      1,
      'the recovery the error line told of is logged, once',
    );
  },
);

t.test(
  'a compaction that fails after its rename is logged, and later appends reach the live file',
  async (t) => {
    const directory = await tempDirectory(t);
    const { table, log, compactionErrors } = await openTable(directory);
    // Fault injection: the first open under the directory after the lease file was replaced fails.
    const { open, rename } = fsPromises;
    let replaced = false;
    let injected = false;
    Object.assign(fsPromises, {
      rename: async (from: string, to: string) => {
        await rename(from, to);
        replaced ||= to === join(directory, LEASE_LOG_FILE);
      },
      open: async (path: string, flags?: string | number) => {
        if (replaced && !injected && path.startsWith(directory)) {
          injected = true;
          throw Object.assign(new Error('EMFILE: too many open files'), { code: 'EMFILE' });
        }
        return open(path, flags);
      },
    });
    syncBuiltinESMExports();
    t.teardown(() => {
      Object.assign(fsPromises, { open, rename });
      syncBuiltinESMExports();
    });

    const first = bindOf(10);
    table.apply(first);
    // Past the compaction threshold (100,000 lines and four times the live state).
    await Promise.all(Array.from({ length: 100_001 }, () => log.append(first)));
    const later = bindOf(11);
    table.apply(later);
    await log.append(later);
    await log.close();
    t.ok(injected, 'the fault was injected after the rename');
    t.match(compactionErrors, [{ code: 'EMFILE' }], 'the failed compaction was reported');

    const reopened = await openTable(directory);
    t.equal(reopened.table.leaseOf(macOf(11))?.ip, ipToNumber('10.77.9.11'), 'the later lease survived');
    await reopened.log.close();
  },
);

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

t.test('a lease shorter than the offer hold stays bound when its client DISCOVERs again', async (t) => {
  // A 30 s lease_time: iPXE's DISCOVER after the firmware's DORA is offered the same address.
  const table = new LeaseTable();
  const ip = ipToNumber('10.77.9.10');
  const other = macOf(11);
  table.apply({ kind: 'bind', mac: macOf(10), ip, expiresAt: NOW + 30_000 });
  table.apply({ kind: 'offer', mac: macOf(10), ip, expiresAt: NOW + 60_000 });
  t.match(table.leaseOf(macOf(10)), { state: 'bound', expiresAt: NOW + 30_000 });
  t.equal(table.boundLeases(NOW).length, 1, 'still a bound lease (rackboot_dhcp_bound_leases)');
  t.same(
    table.snapshot(NOW),
    [{ kind: 'bind', mac: macOf(10), ip, expiresAt: NOW + 30_000, hostname: undefined }],
    'and kept by a compaction of the lease log',
  );
  t.equal(table.boundLeases(NOW + 30_000).length, 0, 'it ends when the client was told');
  t.notOk(table.isAvailable(ip, other, new Map(), NOW + 45_000), 'the offer holds the address after that');
  t.ok(table.isAvailable(ip, other, new Map(), NOW + 60_000), 'until the hold ends');
});

t.test(
  'an exhausted pool answers without searching again until something could free an address',
  async (t) => {
    const subnet = parseCidr('10.77.0.0/16');
    if ('error' in subnet) throw new Error(subnet.error);
    // Counts the pool checks a search makes: every candidate address and every lease passes here.
    let checks = 0;
    const excluded = new Set([ipToNumber('10.77.0.1')]);
    const countingExcluded = {
      has: (ip: number) => {
        checks += 1;
        return excluded.has(ip);
      },
    } as ReadonlySet<number>;
    const first = ipToNumber('10.77.0.1');
    const last = ipToNumber('10.77.254.254');
    const pool: Pool = { name: '10.77.0.0/16', subnet, first, last, excluded: countingExcluded };
    const reservations: Reservations = new Map();
    const table = new LeaseTable();
    const held = (ip: number) => macOf(ip - first + 1);
    for (let ip = first + 1; ip <= last; ip += 1) {
      table.apply({ kind: 'bind', mac: held(ip), ip, expiresAt: NOW + 600_000 + (ip - first) });
    }
    const ask = (n: number, now = NOW) =>
      table.chooseAddress({
        mac: `02:00:00:00:00:${n}` as Mac,
        reserved: undefined,
        requested: undefined,
        pool,
        reservations,
        now,
      });

    t.equal(ask(10), undefined, 'a full pool has nothing to offer');
    t.ok(checks > 65_000, `the first search looked at the whole pool (${checks} checks)`);
    checks = 0;
    for (let n = 11; n < 61; n += 1) t.equal(ask(n), undefined);
    t.equal(checks, 0, 'fifty more DISCOVERs did not search the pool again');
    // A relay subnet, full too: DISCOVERs for the two in turn must not wipe each other's memo.
    const relaySubnet = parseCidr('10.78.0.0/24');
    if ('error' in relaySubnet) throw new Error(relaySubnet.error);
    const relay: Pool = {
      name: '10.78.0.0/24',
      subnet: relaySubnet,
      first: ipToNumber('10.78.0.10'),
      last: ipToNumber('10.78.0.11'),
      excluded: countingExcluded,
    };
    for (const ip of [relay.first, relay.last]) {
      table.apply({ kind: 'bind', mac: `02:00:00:00:01:${ip & 0xff}` as Mac, ip, expiresAt: NOW + 600_000 });
    }
    const askRelay = (n: number) =>
      table.chooseAddress({
        mac: `02:00:00:00:02:${n}` as Mac,
        reserved: undefined,
        requested: undefined,
        pool: relay,
        reservations,
        now: NOW,
      });
    t.equal(askRelay(10), undefined, 'the relay pool is full');
    checks = 0;
    for (let n = 11; n < 31; n += 1) {
      t.equal(ask(n), undefined);
      t.equal(askRelay(n), undefined);
    }
    t.equal(checks, 0, 'two exhausted pools asked in turn are not searched again');

    const released = first + 500;
    table.apply({ kind: 'release', mac: held(released), ip: released, at: NOW });
    t.equal(ask(61), released, 'a release ends the exhaustion');
    table.apply({ kind: 'bind', mac: '02:00:00:00:00:61' as Mac, ip: released, expiresAt: NOW + 3_600_000 });
    t.equal(ask(62), undefined, 'full again once the released address is bound');

    const firstToEnd = first + 1;
    t.equal(ask(63, NOW + 600_001), firstToEnd, 'the first lease to run out is offered when it has');

    table.apply({
      kind: 'bind',
      mac: '02:00:00:00:00:63' as Mac,
      ip: firstToEnd,
      expiresAt: NOW + 3_600_000,
    });
    t.equal(ask(64, NOW + 600_001), undefined, 'and once it is taken, nothing else until the next one');

    const reloaded: Pool = { ...pool, last: ipToNumber('10.77.255.254') };
    t.equal(
      table.chooseAddress({
        mac: '02:00:00:00:00:65' as Mac,
        reserved: undefined,
        requested: undefined,
        pool: reloaded,
        reservations,
        now: NOW,
      }),
      last + 1,
      'a reload that widens the range searches again and finds the new addresses',
    );
  },
);

t.test(
  'proxy mode: what it overheard names the MAC behind an address, not a lease left from authoritative mode',
  async (t) => {
    // A server run authoritative, then restarted in proxy mode on the same state: its lease log is
    // replayed, but the LAN's DHCP server now hands out the addresses.
    const book = new AddressBook();
    const ip = '10.77.9.12';
    book.applyLease({ kind: 'bind', mac: macOf(12), ip: ipToNumber(ip), expiresAt: NOW + 3_600_000 });
    book.learn(ip, macOf(13));
    t.equal(book.macForIp(ip, NOW), macOf(13));
  },
);
