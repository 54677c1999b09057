import { once } from 'node:events';
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { createBootDecision } from '../src/inventory/decision.js';
import { type Mac, parseMac } from '../src/inventory/mac.js';
import type { Config } from '../src/inventory/schema.js';
import type { MachineEvent, MachineEventInput } from '../src/lifecycle/events.js';
import {
  DATABASE_FILE_NAME,
  type LifecycleOptions,
  openLifecycle,
  readMachineRecord,
} from '../src/lifecycle/store.js';
import { StateError } from '../src/state-error.js';
import { startModuleWorker } from '../src/worker-thread.js';
import type { WriterDeath } from './helpers/dying-writer.js';
import { failHistoryWrites, type TestLifecycle, withParsedHistory } from './lifecycle-fixture.js';

const mac = parseMac('52:54:00:aa:bb:01');
const other = parseMac('52:54:00:aa:bb:02');
if (!mac || !other) throw new Error('fixture MACs');
const logger = pino({ level: 'silent' });
const openStore = (options: LifecycleOptions) => withParsedHistory(openLifecycle(options));

/** Ids as their place in the history (1 for its first event), whatever id the history began at. */
const ordinals = (lifecycle: TestLifecycle, ids: number[]) =>
  ids.map((id) => id - lifecycle.historyStartId());

function stateDirFor(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'rackboot-lifecycle-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const install = (target = mac): MachineEventInput[] => [
  {
    mac: target,
    source: 'dhcp',
    type: 'dhcp-ack',
    ip: '10.77.0.100',
    detail: { firmware: 'ipxe', arch: 'x86_64' },
  },
  { mac: target, source: 'http', type: 'ipxe-script', detail: { script: 'install' } },
  { mac: target, source: 'http', type: 'ignition-fetch' },
  { mac: target, source: 'machine', type: 'installed' },
];

/** One install progress report of `mac`. */
const progress = (step: number): MachineEventInput => ({
  mac,
  source: 'machine',
  type: 'progress',
  detail: { step },
});

t.test('history and states survive a restart', async (t) => {
  const stateDir = stateDirFor(t);
  let clock = Date.parse('2026-11-25T10:00:00Z');
  const first = openStore({ stateDir, retention: 1000, logger, now: () => (clock += 1000) });
  await Promise.all(install().map((event) => first.record(event)));
  t.equal(first.stateOf(mac), 'installed');
  const before = first.eventsAfter(0);
  await first.close();

  const second = openStore({ stateDir, retention: 1000, logger, now: () => (clock += 1000) });
  t.teardown(() => second.close());
  t.equal(second.stateOf(mac), 'installed', 'state read back without replay');
  t.match(second.machine(mac), {
    vendor: 'QEMU',
    arch: 'x86_64',
    boot: { correlationId: '525400aabb01-1', number: 1 },
  });
  t.same(second.eventsAfter(0), before, 'identical history');
  t.same(
    before.map((event) => event.type),
    [
      'dhcp-ack',
      'state-changed',
      'ipxe-script',
      'state-changed',
      'ignition-fetch',
      'state-changed',
      'installed',
      'state-changed',
    ],
  );
  t.ok(
    before.every((event) => event.correlationId === '525400aabb01-1'),
    'every event of the install carries the boot correlation id',
  );
  await second.record({ mac, source: 'dhcp', type: 'dhcp-ack', detail: { firmware: 'ipxe' } });
  const [next] = second.eventsAfter(before.at(-1)?.id ?? 0);
  t.equal(next?.id, (before.at(-1)?.id ?? 0) + 1, 'ids continue after the restart');
  t.equal(next?.correlationId, '525400aabb01-2', 'the next boot gets the next correlation id');
});

t.test(
  'record: memory at once, one transaction for what one turn records, listeners after commit',
  async (t) => {
    const lifecycle = openStore({ stateDir: stateDirFor(t), retention: 1000, logger });
    t.teardown(() => lifecycle.close());
    const seen: MachineEvent[] = [];
    const unsubscribe = lifecycle.subscribe((event) => {
      seen.push(event);
      t.ok(
        lifecycle.eventsAfter(event.id - 1, { limit: 1 }).length === 1,
        `event ${event.id} is durable when seen`,
      );
    });
    const writes = install().map((event) => lifecycle.record(event));
    t.equal(lifecycle.stateOf(mac), 'installed', 'state is updated synchronously');
    t.equal(lifecycle.eventsAfter(0).length, 0, 'nothing is written before the batch commits');
    t.equal(seen.length, 0, 'no listener hears an event before it is durable');
    await Promise.all(writes);
    t.equal(lifecycle.eventsAfter(0).length, 8);
    t.same(
      ordinals(
        lifecycle,
        seen.map((event) => event.id),
      ),
      [1, 2, 3, 4, 5, 6, 7, 8],
      'listeners get every event in id order',
    );
    unsubscribe();
    await lifecycle.record({ mac, source: 'machine', type: 'progress' });
    t.equal(seen.length, 8, 'unsubscribed listener hears nothing more');
  },
);

t.test(
  'events recorded on several turns within batchIntervalMs share one batch; a first one goes at once',
  async (t) => {
    // Far above the 3 × 30 ms the turns take, so a host busy with other tests cannot split them.
    const batchIntervalMs = 3000;
    const lifecycle = openStore({ stateDir: stateDirFor(t), retention: 1000, logger, batchIntervalMs });
    t.teardown(() => lifecycle.close());
    // The listener hears a batch's events in one synchronous run: a microtask marks its end.
    const batches: number[][] = [];
    let current: number[] | undefined;
    lifecycle.subscribe((event) => {
      if (!current) {
        const batch: number[] = [];
        batches.push(batch);
        current = batch;
        queueMicrotask(() => {
          current = undefined;
        });
      }
      current.push(event.id);
    });
    const transfer = { mac: undefined, source: 'tftp', type: 'tftp-transfer' } as const;
    const started = performance.now();
    await lifecycle.record(transfer);
    t.ok(performance.now() - started < batchIntervalMs, 'the first event did not wait for the interval');
    const later: Promise<void>[] = [];
    for (let turn = 0; turn < 3; turn += 1) {
      later.push(lifecycle.record(transfer));
      // Time enough for a batch of its own to commit, were it sent at once.
      await new Promise((resolve) => setTimeout(resolve, 30));
    }
    await Promise.all(later);
    t.same(
      batches.map((batch) => ordinals(lifecycle, batch)),
      [[1], [2, 3, 4]],
      'three turns 30 ms apart, one batch',
    );
  },
);

t.test("a history begun after another was wiped hands out only ids above the wiped one's", async (t) => {
  const stateDir = stateDirFor(t);
  const wiped = openStore({ stateDir, retention: 1000, logger });
  for (const event of install()) await wiped.record(event);
  const wipedIds = wiped.eventsAfter(0).map((event) => event.id);
  await wiped.close();
  rmSync(stateDir, { recursive: true, force: true });

  const fresh = openStore({ stateDir, retention: 1000, logger });
  t.teardown(() => fresh.close());
  await fresh.record(install()[0] as MachineEventInput);
  t.ok(fresh.historyStartId() >= Math.max(...wipedIds), 'the new history starts above the old ids');
  t.ok(
    (fresh.eventsAfter(0)[0]?.id ?? 0) > Math.max(...wipedIds),
    'so a watcher holding an old id is never taken to have seen a new event',
  );
});

t.test('append reports what an event caused, rejections included', async (t) => {
  const lifecycle = openStore({ stateDir: stateDirFor(t), retention: 1000, logger });
  t.teardown(() => lifecycle.close());
  await Promise.all(
    install()
      .slice(0, 1)
      .map((event) => lifecycle.record(event)),
  );
  // Only a machine this server is installing can report `installed`; this one was just discovered.
  const appended = lifecycle.append({ mac, source: 'machine', type: 'installed' });
  t.same(
    appended.events.map((event) => event.type),
    ['installed', 'transition-rejected'],
  );
  await appended.stored;
  t.equal(lifecycle.lastEventId(), appended.events.at(-1)?.id);
});

t.test('queries: by MAC, after an id, newest first limited, retention', async (t) => {
  // Snapshot with every batch: pruning never removes events a restart would still replay.
  const lifecycle = openStore({ stateDir: stateDirFor(t), retention: 10, logger, snapshotIntervalMs: 0 });
  t.teardown(() => lifecycle.close());
  for (const event of [...install(mac), ...install(other)]) await lifecycle.record(event);
  const forOther = lifecycle.eventsAfter(0, { mac: other });
  t.ok(forOther.length > 0 && forOther.every((event) => event.mac === other), 'filter by MAC');
  t.same(
    ordinals(
      lifecycle,
      lifecycle.latestEvents({ limit: 3 }).map((event) => event.id),
    ),
    [14, 15, 16],
    'latest events, oldest of them first',
  );
  t.equal(lifecycle.eventsAfter(0).length, 10, 'retention keeps the newest 10 events');
  t.same(ordinals(lifecycle, [lifecycle.eventsAfter(0)[0]?.id as number]), [7]);
  t.equal(lifecycle.stateOf(mac), 'installed', 'pruning history keeps the machine records');
  t.equal(lifecycle.machines().length, 2);
});

t.test('a wall clock stepped back does not hold off snapshots, nor the retention they bound', async (t) => {
  let clock = Date.parse('2026-11-25T10:00:00Z');
  const lifecycle = openStore({
    stateDir: stateDirFor(t),
    retention: 10,
    logger,
    snapshotIntervalMs: 0,
    now: () => clock,
  });
  t.teardown(() => lifecycle.close());
  for (const event of install(mac)) await lifecycle.record(event);
  // NTP stepping a fast clock back, or an RTC kept in local time corrected to UTC.
  clock -= 3_600_000;
  const third = parseMac('52:54:00:aa:bb:03') as Mac;
  for (const event of [...install(other), ...install(third)]) await lifecycle.record(event);
  t.equal(lifecycle.eventsAfter(0).length, 10, 'retention still keeps the newest 10 events');
});

t.test('an event after close is dropped with a warning, not thrown at the recording server', async (t) => {
  const lines: string[] = [];
  const lifecycle = openStore({
    stateDir: stateDirFor(t),
    retention: 1000,
    logger: pino({ level: 'warn' }, { write: (line: string) => lines.push(line) }),
  });
  await lifecycle.close();
  await lifecycle.record(install()[0] as MachineEventInput);
  t.match(lines.join(''), /event after close dropped/);
  t.equal(lifecycle.stateOf(mac), undefined);
});

t.test('an event recorded while close() waits for the last commit is still written', async (t) => {
  const stateDir = stateDirFor(t);
  // Events without a MAC change no machine record, so close() has no snapshot of its own to write.
  const transfer = { mac: undefined, source: 'tftp', type: 'tftp-transfer' } as const;
  const lifecycle = openStore({ stateDir, retention: 1000, logger, batchIntervalMs: 500 });
  await lifecycle.record(transfer);
  let late: Promise<boolean> | undefined;
  void lifecycle.append(transfer).stored.then(() => {
    late = lifecycle.append(transfer).stored;
  });
  await lifecycle.close();
  const pending = new Promise((resolve) => setTimeout(resolve, 5000, 'still pending after 5 s'));
  t.equal(
    await Promise.race([late, pending]),
    true,
    'stored by the close, not left to a batch timer after it',
  );
  const reopened = openStore({ stateDir, retention: 1000, logger });
  t.teardown(() => reopened.close());
  t.same(
    ordinals(
      reopened,
      reopened.eventsAfter(0).map((event) => event.id),
    ),
    [1, 2, 3],
  );
});

t.test(
  'an event whose detail JSON cannot hold is logged and stored without it, never thrown at the recorder',
  async (t) => {
    const lines: string[] = [];
    const lifecycle = openStore({
      stateDir: stateDirFor(t),
      retention: 1000,
      logger: pino({ level: 'error' }, { write: (line: string) => lines.push(line) }),
    });
    t.teardown(() => lifecycle.close());
    // A BigInt has no JSON form: a bug in its recorder, not a crash here and not a lost batch.
    await lifecycle.record({ mac, source: 'http', type: 'asset-download', detail: { bytes: 1n } });
    t.match(lines.join(''), /event detail cannot be stored/);
    t.equal(lifecycle.stateOf(mac), 'discovered', 'memory still follows the event');
    await lifecycle.record({ mac, source: 'machine', type: 'progress' });
    t.match(
      lifecycle.eventsAfter(0, { mac }),
      [
        { type: 'asset-download', detail: { unstorable: /BigInt/ } },
        { type: 'state-changed' },
        { type: 'progress' },
      ],
      'both events and the state change are written',
    );
  },
);

t.test('a history written in the first layout (a column per field) is migrated on open', async (t) => {
  const stateDir = stateDirFor(t);
  const old = new Database(join(stateDir, DATABASE_FILE_NAME));
  old.exec(`
    CREATE TABLE events (id INTEGER PRIMARY KEY, time TEXT NOT NULL, mac TEXT, ip TEXT, source TEXT NOT NULL,
      type TEXT NOT NULL, state TEXT, correlation_id TEXT, detail TEXT);
    CREATE INDEX events_by_mac ON events (mac, id);
    CREATE TABLE machines (mac TEXT PRIMARY KEY, record TEXT NOT NULL);
    CREATE TABLE snapshot (one INTEGER PRIMARY KEY CHECK (one = 1), through_id INTEGER NOT NULL);
    INSERT INTO snapshot VALUES (1, 2);
  `);
  const insert = old.prepare('INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)');
  const time = '2026-11-25T10:00:00.000Z';
  insert.run(
    1,
    time,
    mac,
    '10.77.0.100',
    'dhcp',
    'dhcp-ack',
    null,
    '525400aabb01-1',
    '{"arch":"x86_64","n":null}',
  );
  insert.run(
    2,
    time,
    mac,
    null,
    'lifecycle',
    'state-changed',
    'discovered',
    '525400aabb01-1',
    '{"to":"discovered"}',
  );
  insert.run(3, time, null, '10.77.0.9', 'tftp', 'tftp-transfer', null, null, null);
  old.close();

  const lifecycle = openStore({ stateDir, retention: 1000, logger });
  t.teardown(() => lifecycle.close());
  t.same(lifecycle.eventsAfter(0), [
    {
      id: 1,
      time,
      mac,
      ip: '10.77.0.100',
      source: 'dhcp',
      type: 'dhcp-ack',
      correlationId: '525400aabb01-1',
      detail: { arch: 'x86_64', n: null },
    },
    {
      id: 2,
      time,
      mac,
      source: 'lifecycle',
      type: 'state-changed',
      correlationId: '525400aabb01-1',
      detail: { to: 'discovered' },
      state: 'discovered',
    },
    { id: 3, time, ip: '10.77.0.9', source: 'tftp', type: 'tftp-transfer' },
  ]);
  t.same(
    lifecycle.latestEvents({ mac }).map((event) => event.id),
    [1, 2],
    'the MAC index is built from the migrated rows',
  );
  const appended = lifecycle.append({ mac, source: 'machine', type: 'progress' });
  await appended.stored;
  t.equal(lifecycle.eventsAfter(3)[0]?.id, 4, 'new events continue after the migrated ones');
  t.equal(lifecycle.historyStartId(), 0, 'a history that held events keeps its ids, which began at 1');
});

t.test('a directory where the history should be is named as one, not as a permissions problem', async (t) => {
  // Before: "…: unable to open database file; this user (uid 0) cannot write it: give server.state
  // and its files to the user rackboot runs as", which no chown fixes.
  const stateDir = stateDirFor(t);
  const file = join(stateDir, DATABASE_FILE_NAME);
  mkdirSync(file);
  t.throws(() => openLifecycle({ stateDir, retention: 1000, logger }), {
    constructor: StateError,
    message: `history ${file}: it is a directory, where rackboot keeps a file: move it away`,
  });
  t.same(readdirSync(file), [], 'left as it was');
});

t.test('a history row whose JSON does not parse stops the start naming the row and what to do', async (t) => {
  // Before: "history …: Unexpected token…", naming neither the row nor a way out.
  const stateDir = stateDirFor(t);
  const file = join(stateDir, DATABASE_FILE_NAME);
  const lifecycle = openStore({ stateDir, retention: 1000, logger });
  for (const event of install()) await lifecycle.record(event);
  await lifecycle.close();
  const edit = (sql: string, ...values: unknown[]) => {
    const database = new Database(file);
    database.prepare(sql).run(...values);
    database.close();
  };
  const read = (sql: string) => {
    const database = new Database(file, { readonly: true });
    const value = database.prepare(sql).pluck().get();
    database.close();
    return value;
  };
  const ways = (remove: string, loss: string) =>
    `restore ${file} from a backup, or delete that row with sqlite3 ${file} "${remove}" while rackboot is stopped (${loss}), or move the file with its -wal and -shm files away to start a new history`;

  const record = read('SELECT record FROM machines') as string;
  const cut = record.slice(0, 10);
  const parseError = (() => {
    try {
      JSON.parse(cut);
    } catch (error) {
      return (error as Error).message;
    }
  })();
  edit('UPDATE machines SET record = ? WHERE mac = ?', cut, mac);
  const machineRefusal = {
    constructor: StateError,
    message: `history ${file}: machines row ${mac} is damaged (${parseError}); ${ways(`DELETE FROM machines WHERE mac = '${mac}'`, 'the machine keeps only what its events since the last snapshot say: an installed one may install again at its next network boot')}`,
  };
  t.throws(() => openLifecycle({ stateDir, retention: 1000, logger }), machineRefusal, 'serve');
  t.throws(() => readMachineRecord(stateDir, mac), machineRefusal, 'render');
  edit('UPDATE machines SET record = ? WHERE mac = ?', record, mac);

  // An event after the last snapshot is replayed at the start; 'null' parses, but is no event.
  edit('UPDATE snapshot SET through_id = 0');
  const id = read('SELECT max(id) FROM events') as number;
  edit('UPDATE events SET event = ? WHERE id = ?', 'null', id);
  t.throws(() => openLifecycle({ stateDir, retention: 1000, logger }), {
    constructor: StateError,
    message: `history ${file}: events row ${id} is damaged (not a JSON object); ${ways(`DELETE FROM events WHERE id = ${id}`, 'that event is lost')}`,
  });
  edit('DELETE FROM events WHERE id = ?', id);
  const reopened = openStore({ stateDir, retention: 1000, logger });
  t.teardown(() => reopened.close());
  t.ok(reopened.stateOf(mac), 'with the row deleted as told, it starts');
});

t.test('an empty history beside a -wal that holds it is refused, the -wal kept', async (t) => {
  // Before: SQLite took the empty file for a new database and deleted the -wal (a read-only open
  // by `rackboot render` too): every event since the last checkpoint, here all of them, was lost.
  const written = stateDirFor(t);
  const lifecycle = openStore({ stateDir: written, retention: 1000, logger });
  t.teardown(() => lifecycle.close());
  for (const event of install()) await lifecycle.record(event);
  const stateDir = stateDirFor(t);
  const file = join(stateDir, DATABASE_FILE_NAME);
  writeFileSync(file, '');
  copyFileSync(join(written, `${DATABASE_FILE_NAME}-wal`), `${file}-wal`);
  const wal = readFileSync(`${file}-wal`);
  t.ok(wal.length > 0, 'the history is in the -wal');
  const refusal = {
    constructor: StateError,
    message: `history ${file} is empty, but its -wal file is not: opening it would delete the -wal, and the history in it; restore ${file} from a backup, or move it with its -wal and -shm files away to start a new history`,
  };
  t.throws(() => openLifecycle({ stateDir, retention: 1000, logger }), refusal, 'serve');
  t.throws(() => readMachineRecord(stateDir, mac), refusal, 'render');
  t.ok(readFileSync(`${file}-wal`).equals(wal), 'the -wal is left as it was');
  t.equal(readFileSync(file).length, 0, 'the history file is left as it was');

  copyFileSync(join(written, DATABASE_FILE_NAME), file);
  const restored = openStore({ stateDir, retention: 1000, logger });
  t.equal(restored.stateOf(mac), 'installed', 'restored, the file and its -wal hold the history');
  await restored.close();

  // An empty file alone holds nothing to lose: a new history, as for a missing one.
  const emptyOnly = stateDirFor(t);
  writeFileSync(join(emptyOnly, DATABASE_FILE_NAME), '');
  const fresh = openStore({ stateDir: emptyOnly, retention: 1000, logger });
  t.teardown(() => fresh.close());
  t.same(fresh.machines(), [], 'a new history');
});

t.test('a history from a newer rackboot is refused with what to do, not read wrongly', async (t) => {
  const stateDir = stateDirFor(t);
  const newer = new Database(join(stateDir, DATABASE_FILE_NAME));
  newer.pragma('user_version = 99');
  newer.close();
  t.throws(() => openLifecycle({ stateDir, retention: 1000, logger }), /schema version 99, newer than/);
});

t.test(
  'machine records are snapshotted at most once per interval; a restart replays the events after',
  async (t) => {
    const stateDir = stateDirFor(t);
    let clock = Date.parse('2026-11-25T10:00:00Z');
    const options = { stateDir, retention: 1000, logger, now: () => (clock += 1000) };
    // As if the process died before its next snapshot: no snapshot during the test, no close.
    const crashed = openStore({ ...options, snapshotIntervalMs: 3_600_000 });
    for (const event of [...install(mac), ...install(other)]) await crashed.record(event);
    const reopened = openStore(options);
    t.same(reopened.machine(mac), crashed.machine(mac), 'replayed from the history to the same record');
    t.same(reopened.machine(other), crashed.machine(other));
    t.equal(reopened.stateOf(mac), 'installed');
    await reopened.close();
    await crashed.close();
    const clean = openStore(options);
    t.teardown(() => clean.close());
    t.same(clean.machines(), crashed.machines(), 'a clean close leaves a complete snapshot');
  },
);

// The failed batch carries the machine snapshot (interval 0) or not (an hour): both must end the same.
for (const snapshotIntervalMs of [0, 3_600_000]) {
  t.test(
    `a failed write: watchers never hear its events, the appender is told, and its ids are not reused (snapshots every ${snapshotIntervalMs} ms)`,
    async (t) => {
      const stateDir = stateDirFor(t);
      const first = openStore({ stateDir, retention: 1000, logger, snapshotIntervalMs });
      const heard: number[] = [];
      first.subscribe((event) => heard.push(event.id));
      await first.record(install()[0] as MachineEventInput);
      // Every insert fails from now on, as on a full or failing disk.
      const repair = failHistoryWrites(stateDir);
      const lost = first.append({ mac, source: 'machine', type: 'failed', detail: { message: 'disk' } });
      t.equal(await lost.stored, false, 'the appender learns the events were not stored');
      t.same(first.historyHealth(), { unstoredEvents: lost.events.length, writerRestarts: 0, writing: true });
      t.same(ordinals(first, heard), [1, 2], 'watchers heard only the committed events');
      t.same(ordinals(first, [first.lastEventId()]), [2]);
      await first.close();
      repair();

      const second = openStore({ stateDir, retention: 1000, logger });
      t.teardown(() => second.close());
      t.equal(
        second.stateOf(mac),
        'failed',
        'the record the failed write changed was written by the next one',
      );
      const next = second.append({ mac, source: 'operator', type: 'reprovision' });
      t.equal(await next.stored, true);
      const lostIds = lost.events.map((event) => event.id);
      t.ok(
        (next.events[0]?.id ?? 0) > Math.max(...lostIds),
        `ids after the restart (${next.events[0]?.id}) continue after those of the failed write (${lostIds})`,
      );
    },
  );
}

t.test(
  'writes failing batch after batch: one error line, and one once a batch is stored again',
  async (t) => {
    const stateDir = stateDirFor(t);
    const logged: { msg: string; events?: number; file?: string }[] = [];
    const lifecycle = openStore({
      stateDir,
      retention: 1000,
      logger: pino({ level: 'info' }, { write: (line: string) => logged.push(JSON.parse(line)) }),
    });
    t.teardown(() => lifecycle.close());
    await lifecycle.record(install()[0] as MachineEventInput);
    // A full disk under a boot storm fails a batch every 25 ms: it logged a line for each.
    const repair = failHistoryWrites(stateDir);
    for (let step = 0; step < 5; step += 1) t.equal(await lifecycle.append(progress(step)).stored, false);
    repair();
    t.equal(await lifecycle.append(progress(5)).stored, true);
    const lines = logged.filter((line) => line.msg.startsWith('lifecycle:'));
    t.same(
      lines.map((line) => line.msg),
      ['lifecycle: could not write events', 'lifecycle: events are written again'],
    );
    t.match(lines[0], { events: 1, file: join(stateDir, DATABASE_FILE_NAME) }, 'naming the file');
  },
);

t.test(
  'a failed write leaves no ids in the MAC index: a page by MAC is full, up to the newest',
  async (t) => {
    const stateDir = stateDirFor(t);
    const lifecycle = openStore({ stateDir, retention: 1000, logger });
    t.teardown(() => lifecycle.close());
    await lifecycle.record(progress(0));
    const repair = failHistoryWrites(stateDir);
    const lost = lifecycle.append(progress(1));
    t.equal(await lost.stored, false);
    repair();
    for (let step = 2; step < 12; step += 1) await lifecycle.record(progress(step));
    const page = lifecycle.storedEventsAfter(0, { mac, limit: 5 }).map((event) => event.id);
    t.equal(page.length, 5, 'as many as asked for (readers take a short page as the end)');
    t.notOk(
      page.some((id) => lost.events.some((event) => event.id === id)),
      'none of the failed ids',
    );
    t.same(
      lifecycle
        .eventsAfter(0, { mac, limit: 100 })
        .filter((event) => event.type === 'progress')
        .map((event) => event.detail?.step),
      [0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
      'every stored progress report, the lost one missing',
    );
  },
);

t.test(
  'a machine that completed an install boots from its disk after a failed report, across restarts',
  async (t) => {
    const stateDir = stateDirFor(t);
    const first = openStore({ stateDir, retention: 1000, logger });
    for (const event of install()) await first.record(event);
    await first.record({ mac, source: 'machine', type: 'failed', detail: { message: 'health check' } });
    t.equal(first.stateOf(mac), 'failed');
    t.equal(first.bootsFromDisk(mac), true);
    const decision = createBootDecision(
      () => ({ unknown_machines: 'any', machines: [] }) as unknown as Config,
      first.stateOf,
      first.bootsFromDisk,
    );
    t.match(
      decision.assignmentFor(mac),
      { state: 'failed', bootsFromDisk: true },
      'the boot decision is told',
    );
    await first.close();

    const second = openStore({ stateDir, retention: 1000, logger });
    t.equal(second.bootsFromDisk(mac), true, 'read back from the snapshot');
    await second.record({ mac, source: 'operator', type: 'reprovision' });
    t.equal(second.bootsFromDisk(mac), false, 'until reprovision');
    await second.close();

    // A snapshot written before the mark existed: an installed machine had completed its install.
    const old = new Database(join(stateDir, DATABASE_FILE_NAME));
    const record = {
      ...JSON.parse(String(old.prepare('SELECT record FROM machines').pluck().get())),
      state: 'installed',
    };
    delete record.bootsFromDisk;
    old.prepare('UPDATE machines SET record = ?').run(JSON.stringify(record));
    old.close();
    const third = openStore({ stateDir, retention: 1000, logger });
    t.teardown(() => third.close());
    t.equal(third.bootsFromDisk(mac), true);
  },
);

/**
 * A store whose writer threads are test/helpers/dying-writer.ts, the n-th one started ending as
 * `deaths[n]` says (the ones after never end), and the messages it logs at error level.
 */
function storeWithDyingWriters(stateDir: string, deaths: WriterDeath[]) {
  const logged: string[] = [];
  const threads: Worker[] = [];
  const lifecycle = openStore({
    stateDir,
    retention: 1000,
    logger: pino({ level: 'error' }, { write: (line: string) => logged.push(JSON.parse(line).msg) }),
    startWriter: (data) => {
      const thread = startModuleWorker('helpers/dying-writer', import.meta.url, {
        ...data,
        ...deaths[threads.length],
      });
      threads.push(thread);
      return thread;
    },
  });
  return { lifecycle, logged, threads };
}

const REPLACED = 'lifecycle: the history writer thread died; starting another';

for (const moment of ['before-commit', 'before-answer'] as const) {
  t.test(
    `a writer thread that dies ${moment.replace('-', ' ')} is replaced: its batch is stored once, heard once, indexed by MAC`,
    async (t) => {
      const stateDir = stateDirFor(t);
      const { lifecycle, logged, threads } = storeWithDyingWriters(stateDir, [{ dieAt: 2, moment }]);
      const heard: number[] = [];
      lifecycle.subscribe((event) => heard.push(event.id));
      const appended = [];
      for (const event of install()) {
        const result = lifecycle.append(event);
        appended.push(...result.events.map((stored) => stored.id));
        t.equal(await result.stored, true, `${event.type} stored`);
      }
      t.equal(threads.length, 2, 'one thread replaced the one that died');
      t.same(lifecycle.historyHealth(), { unstoredEvents: 0, writerRestarts: 1, writing: true });
      t.same(logged, [REPLACED]);
      t.same(heard, appended, 'every event heard once, in order');
      t.same(
        lifecycle.storedEventsAfter(0, { mac }).map((stored) => stored.id),
        appended,
        'the MAC index holds every id',
      );
      await lifecycle.close();

      const reopened = openStore({ stateDir, retention: 1000, logger });
      t.teardown(() => reopened.close());
      t.same(
        reopened.eventsAfter(0).map((event) => event.id),
        appended,
        'the history holds each event once after a restart',
      );
      t.equal(reopened.stateOf(mac), 'installed');
    },
  );
}

t.test(
  'replacement threads that die too: the batch fails as a failed write does, and after three deaths in a row writing stops; close still ends',
  async (t) => {
    const stateDir = stateDirFor(t);
    const dying: WriterDeath = { dieAt: 1, moment: 'before-commit' };
    const { lifecycle, logged } = storeWithDyingWriters(stateDir, [dying, dying, dying]);
    const [first, second, third] = install();
    const poisoned = lifecycle.append(first as MachineEventInput);
    t.equal(await poisoned.stored, false, 'the batch two threads died on is not stored');
    const lost = lifecycle.append(second as MachineEventInput);
    t.equal(await lost.stored, false, 'the third death stops the writing');
    const later = lifecycle.append(third as MachineEventInput);
    t.equal(await later.stored, false, 'and later events are not written');
    t.same(lifecycle.historyHealth(), {
      unstoredEvents: [poisoned, lost, later].reduce((sum, appended) => sum + appended.events.length, 0),
      writerRestarts: 2,
      writing: false,
    });
    t.equal(lifecycle.stateOf(mac), 'installing', 'the states in memory go on');
    t.same(logged, [
      REPLACED,
      REPLACED,
      'lifecycle: could not write events',
      'lifecycle: the history writer thread keeps dying; no more events are written until rackboot restarts',
    ]);
    await lifecycle.close();
  },
);

t.test(
  'a batch committed by a thread that died before answering is stored, even when the next thread dies too',
  async (t) => {
    const stateDir = stateDirFor(t);
    const { lifecycle, logged, threads } = storeWithDyingWriters(stateDir, [
      { dieAt: 1, moment: 'before-answer' },
      { dieAt: 1, moment: 'before-commit' },
    ]);
    t.teardown(() => lifecycle.close());
    const heard: number[] = [];
    lifecycle.subscribe((event) => heard.push(event.id));
    const [first, second] = install();
    const committed = lifecycle.append(first as MachineEventInput);
    t.equal(await committed.stored, true, 'read back as stored: its rows are on disk');
    const resent = lifecycle.append(second as MachineEventInput);
    t.equal(await resent.stored, true, 'a batch one thread died on goes to the next');
    const ids = [...committed.events, ...resent.events].map((event) => event.id);
    t.same(heard, ids, 'both heard once');
    t.same(
      lifecycle.storedEventsAfter(0, { mac }).map((stored) => stored.id),
      ids,
      'both in the MAC index',
    );
    t.equal(threads.length, 3);
    t.same(logged, [REPLACED, REPLACED]);
  },
);

t.test('a thread that dies while idle does not use up the next batch’s second thread', async (t) => {
  const stateDir = stateDirFor(t);
  const { lifecycle, logged, threads } = storeWithDyingWriters(stateDir, [
    { moment: 'at-start' },
    { dieAt: 1, moment: 'before-commit' },
  ]);
  t.teardown(() => lifecycle.close());
  // The store leaves an idle writer unref'd; this test waits for that one's end.
  const idle = threads[0] as Worker;
  idle.ref();
  await once(idle, 'exit');
  t.equal(threads.length, 2, 'replaced at once');
  const appended = lifecycle.append(install()[0] as MachineEventInput);
  t.equal(await appended.stored, true, 'sent to a third thread after the second died on it');
  t.equal(threads.length, 3);
  t.same(logged, [REPLACED, REPLACED]);
});

t.test(
  'unlisted machines that never installed are kept up to a bound, the ones unchanged longest forgotten for good',
  async (t) => {
    const stateDir = stateDirFor(t);
    const seen = (n: number) =>
      parseMac(`02:00:00:00:00:${n.toString(16).padStart(2, '0')}`) as NonNullable<
        ReturnType<typeof parseMac>
      >;
    const discover = (target: ReturnType<typeof seen>): MachineEventInput => ({
      mac: target,
      source: 'dhcp',
      type: 'dhcp-ignored',
      detail: { firmware: 'uefi-pxe', arch: 'x86_64', reason: 'unknown-machine' },
    });
    // What `unknown_machines: <profile>` serves to any MAC that asks: it takes the MAC to booting.
    const scriptServed = (target: ReturnType<typeof seen>): MachineEventInput => ({
      mac: target,
      source: 'http',
      type: 'ipxe-script',
      detail: { script: 'install' },
    });
    // 6 stands for a machine the config lists: it waits in discovered like the others, and stays.
    const listedMac = seen(6);
    const first = openStore({
      stateDir,
      retention: 1000,
      logger,
      maxUninstalled: 3,
      listed: (m) => m === listedMac,
      // Every batch writes the machine records, so the ones forgotten later are in the database first.
      snapshotIntervalMs: 0,
    });
    await Promise.all(install().map((event) => first.record(event)));
    await first.record(discover(listedMac));
    await first.record(discover(seen(1)));
    for (const n of [2, 3]) await first.record(scriptServed(seen(n)));
    t.equal(first.stateOf(seen(2)), 'booting');
    await first.record(discover(seen(1)));
    for (const n of [4, 5]) await first.record(discover(seen(n)));
    const kept = (store: typeof first) =>
      store
        .machines()
        .map((record) => record.mac)
        .sort();
    const expected = [mac, listedMac, seen(1), seen(4), seen(5)].sort();
    t.same(kept(first), expected, 'the seen-again one and the listed one stay, 2 and 3 (booting) go');
    t.equal(first.stateOf(mac), 'installed', 'a machine that installed is never forgotten');
    await first.close();
    // Reopened with no bound to speak of, so only the database can have forgotten them.
    const second = openStore({ stateDir, retention: 1000, logger, maxUninstalled: 1_000 });
    t.teardown(() => second.close());
    t.same(kept(second), expected, 'forgotten in the database too');
    const rows = new Database(join(stateDir, DATABASE_FILE_NAME), { readonly: true });
    t.teardown(() => rows.close());
    t.equal((rows.prepare('SELECT count(*) AS n FROM machines').get() as { n: number }).n, expected.length);
  },
);

t.test('a batch of more events than one INSERT takes is stored whole, in order, MACs and all', async (t) => {
  const stateDir = stateDirFor(t);
  const first = openStore({ stateDir, retention: 10_000, logger });
  const macs = Array.from({ length: 37 }, (_, index) => {
    const parsed = parseMac(`52:54:00:ab:00:${index.toString(16).padStart(2, '0')}`);
    if (!parsed) throw new Error('fixture MAC');
    return parsed;
  });
  // Recorded in one turn: one batch of 37 × 8 = 296 events, five INSERTs of 50 and 46 one by one.
  await Promise.all(macs.flatMap((target) => install(target).map((event) => first.record(event))));
  const before = first.eventsAfter(0);
  t.equal(before.length, 296);
  await first.close();

  const second = openStore({ stateDir, retention: 10_000, logger });
  t.teardown(() => second.close());
  t.same(second.eventsAfter(0), before, 'every event back, in id order');
  for (const target of [macs[3], macs[36]]) {
    t.same(
      second.latestEvents({ mac: target }).map((event) => event.id),
      before.filter((event) => event.mac === target).map((event) => event.id),
      `${target}'s events found by its MAC`,
    );
  }
});
