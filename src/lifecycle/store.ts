import { existsSync, mkdirSync, statSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { setNewest } from '../bounded-map.js';
import { giveTo } from '../durable-file.js';
import type { Mac } from '../inventory/mac.js';
import { isObject } from '../json.js';
import type { Logger } from '../log.js';
import { failureReporter } from '../rate-limit.js';
import { StateError, stateFileAdvice, stateFileError } from '../state-error.js';
import { startModuleWorker } from '../worker-thread.js';
import type { MachineEvent, MachineEventInput, MachineState, RecordEvent } from './events.js';
import { MacEventIndex } from './mac-index.js';
import { type MachineRecord, stampEvent, step } from './states.js';
import type { WriteBatch, WriterData, WriterReply, WriterRequest } from './writer.js';

export type { MachineRecord };

export interface EventFilter {
  mac?: Mac | undefined;
  /** At most this many events (default 1000, capped at 10,000). */
  limit?: number | undefined;
}

/** What appending one event did, synchronously: the stamped event and what it caused. */
export interface Appended {
  /** The event itself first, then its derived `state-changed` / `transition-rejected` events. */
  events: MachineEvent[];
  /** Resolves true once all of `events` are committed, false when their write failed (logged). */
  stored: Promise<boolean>;
}

/**
 * The provisioning history and every machine's state. Machine records live in memory (the boot
 * decision reads them on every packet); events and records are written to SQLite in batches.
 */
export interface Lifecycle {
  /** Appends an event; resolves when it is durable. Never rejects: a failed write is logged. */
  record: RecordEvent;
  /** As `record`, but tells synchronously what the event caused (the API answers from it). */
  append(input: MachineEventInput): Appended;
  /** Synchronous, from memory. undefined: no network boot of this MAC was ever seen. */
  stateOf(mac: Mac): MachineState | undefined;
  /** Synchronous, from memory: the machine completed an install and was not reprovisioned since. */
  bootsFromDisk(mac: Mac): boolean;
  machines(): MachineRecord[];
  machine(mac: Mac): MachineRecord | undefined;
  /** The newest durable events (oldest of them first); a damaged row is left out, with a warning. */
  latestEvents(filter?: EventFilter): MachineEvent[];
  /**
   * Durable events with an id above `id`, oldest first, as stored (the SSE replay sends them as they
   * are), but for a row out of the shape the store writes: put on one line again, or left out.
   */
  storedEventsAfter(id: number, filter?: EventFilter): StoredEvent[];
  /** As `latestEvents`, as stored. */
  storedLatestEvents(filter?: EventFilter): StoredEvent[];
  /** The id of the newest durable event (0 when there is none). */
  lastEventId(): number;
  /** The id of the oldest event the history still holds (retention prunes older ones); undefined when empty. */
  firstStoredEventId(): number | undefined;
  /**
   * Every id of this history is above it: the microsecond the history was created (0 for one begun
   * before schema version 3, whose ids start at 1). A later history on the same host starts above
   * every id an earlier one handed out, so an id from a wiped history is never taken for a new one.
   */
  historyStartId(): number;
  /**
   * Called with every event once it is durable, in id order, so a watcher never sees an event that
   * a restart could lose; the events of a failed write are never heard (their ids are skipped, never
   * reused). `json` is the event as stored, for listeners that send it on. Returns the unsubscribe
   * function.
   */
  subscribe(listener: EventListener): () => void;
  /** How the history's writing goes, for /metrics. */
  historyHealth(): HistoryHealth;
  /** Flushes pending events and closes the database. */
  close(): Promise<void>;
}

export interface HistoryHealth {
  /** Events a write failed for (their states in memory changed; the history has a hole). */
  unstoredEvents: number;
  /** Writer threads started in place of one that died. */
  writerRestarts: number;
  /** False once writer threads kept dying and writing stopped until a restart. */
  writing: boolean;
}

export type EventListener = (event: MachineEvent, json: string) => void;

/** An event as the history holds it: its id, and its JSON exactly as the SSE stream sends it. */
export interface StoredEvent {
  id: number;
  event: string;
}

/**
 * How often the changed machine records are written. Each snapshot sends every record changed since
 * the last one to the writer: cloning 10,000 records held the main thread for 25–35 ms, and the writer
 * then serialises (4–6 µs a record) and stores each. Once a second, a boot storm over a 10,000-machine
 * fleet (bench:http: every machine fetching its script each second) paid that every second. Every
 * 10 s it pays a tenth as often. The price is after a crash only (a clean close writes a final
 * snapshot): the restart replays up to 10 s of events; 100,000 took 1.5–1.8 s here (bench/events/replay.ts).
 */
export const SNAPSHOT_INTERVAL_MS = 10_000;

export interface LifecycleOptions {
  stateDir: string;
  /** Events kept; older ones are pruned (machine records are kept regardless). */
  retention: number;
  logger: Logger;
  /**
   * Machine records are written at most this often (default SNAPSHOT_INTERVAL_MS), not with every
   * batch; a restart replays the events after the last snapshot. Keeps each commit short under a flood.
   */
  snapshotIntervalMs?: number;
  /**
   * Batches go to the writer at most this often (default 25 ms). An event after a quiet spell goes at
   * once; under a flood, each batch costs a message to the writer thread, a transaction and a write
   * per SSE watcher, so a batch per event-loop turn (one or two DHCP events) cost more than the events.
   */
  batchIntervalMs?: number;
  now?: () => number;
  /** MAX_UNINSTALLED unless a test needs a small bound. */
  maxUninstalled?: number;
  /** Whether the config lists a MAC: a listed machine is never forgotten (default: none is). */
  listed?: (mac: Mac) => boolean;
  /** Starts a writer thread (default: writer.ts); tests pass threads that die at chosen moments. */
  startWriter?: (data: WriterData) => Worker;
}

export const DATABASE_FILE_NAME = 'lifecycle.sqlite';

/**
 * Records of unlisted machines that never installed, kept at most; past it the one unchanged longest
 * is forgotten. Anyone on the provisioning LAN can name new MACs (DHCP from random chaddrs,
 * /boot/<mac>.ipxe, which under `unknown_machines: <profile>` serves an install script and so takes
 * the MAC to `booting`; in proxy mode that script carries the token that takes it to `installing`),
 * and without a bound each made a record for good: 20,000 such requests took 70 MB. Such a record
 * holds nothing a machine's next boot does not make again.
 */
export const MAX_UNINSTALLED = 20_000;

const DEFAULT_LIMIT = 1000;
const MAX_LIMIT = 10_000;
/** Damaged event rows remembered as warned of; one forgotten is warned of again when next read. */
const MAX_WARNED_ROWS = 1024;
/**
 * The writer's rows live only until their batch commits: 2 MiB semi-spaces instead of the main
 * thread's 8 (worker-thread.ts) cost it no measurable CPU per event and keep 11 MB less resident.
 */
const WRITER_SEMI_SPACE_MB = 2;
/** While history writes keep failing, one error line per this long, not one per batch. */
const WRITE_ERROR_INTERVAL_MS = 60_000;
/** Writer threads that may die in a row, without answering a batch, before writing stops. */
const WRITER_DEATHS_BEFORE_GIVING_UP = 3;

/** `PRAGMA user_version` of the layout below; 0 is the first one (an events column per field). */
const SCHEMA_VERSION = 3;

/**
 * Opens (creating if needed) `<stateDir>/lifecycle.sqlite`. Machine records are stored as snapshots
 * next to the events, at most once a second and in the same transaction as the events they include,
 * so a restart reads them back and replays only the events after the snapshot (never pruned), not a
 * history that retention may already have cut.
 *
 * Writes never stall the DHCP/TFTP hot paths: `record` only folds the event into memory and queues
 * it; the queue goes, on the next event-loop turn or at most every `batchIntervalMs` under load, to a
 * writer thread (writer.ts) that commits it in one transaction, so SQLite's blocking I/O never runs
 * on the thread that answers packets. WAL with synchronous=NORMAL makes a commit a write to the WAL file without
 * fsync: durable across a crash of this process; a power cut may lose the last commits, never the
 * database's consistency (https://sqlite.org/wal.html#performance_considerations).
 */
export function openLifecycle(options: LifecycleOptions): Lifecycle {
  const file = join(options.stateDir, DATABASE_FILE_NAME);
  try {
    return openLifecycleAt(file, options);
  } catch (error) {
    throw historyError(file, error);
  }
}

/**
 * Gives the history's files to the owner of `stateDir`: SQLite creates them as the user it runs as,
 * so a start as root (`sudo rackboot serve`) would leave them to root, and the service user's next
 * start could not write them.
 */
export async function giveHistoryToStateOwner(stateDir: string): Promise<void> {
  const owner = await stat(stateDir);
  for (const suffix of ['', '-wal', '-shm']) {
    await giveTo(join(stateDir, DATABASE_FILE_NAME) + suffix, owner).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
  }
}

/**
 * What an operator can do about a history that will not open, by SQLite's error code (a raw
 * `SqliteError: file is not a database` with a stack named neither the file nor a way out).
 */
function historyError(file: string, error: unknown): StateError {
  const { code, message } = error as { code?: string; message: string };
  // SQLite tells a directory in its place only as SQLITE_CANTOPEN, whose advice is about permissions.
  if (code?.startsWith('SQLITE_CANTOPEN') && statSync(file, { throwIfNoEntry: false })?.isDirectory())
    return new StateError(`history ${file}: ${stateFileAdvice('EISDIR')}`, { cause: error });
  if (stateFileAdvice(code) === undefined && message.includes(file))
    return new StateError(message, { cause: error });
  return stateFileError('history', file, error);
}

/**
 * The records a flood of made-up MACs could multiply: never installed (no `installed` report, no
 * disk written), in any state, and not listed in the config (asked when one would be forgotten, as an
 * adopt can list it meanwhile). Held to `max`, least recently changed first: past it, `forget` hears
 * of the one unchanged longest.
 */
class UninstalledMachines {
  private readonly order = new Set<Mac>();

  constructor(
    private readonly max: number,
    private readonly listed: (mac: Mac) => boolean,
    private readonly forget: (mac: Mac) => void,
  ) {}

  update(record: MachineRecord): void {
    this.order.delete(record.mac);
    if (record.installedAt !== undefined || record.bootsFromDisk) return;
    this.order.add(record.mac);
    for (const oldest of this.order) {
      if (this.order.size <= this.max) break;
      this.order.delete(oldest);
      if (!this.listed(oldest)) this.forget(oldest);
    }
  }
}

/**
 * Opening an empty database file, even read-only, SQLite deletes the -wal beside it, which holds
 * what was written since the last checkpoint: for a history that never checkpointed, all of it.
 * The file SQLite makes for a new history is empty only until WAL mode is set, before any -wal
 * exists; an empty one beside a -wal was cut short by something else (a copy, a restore, a disk).
 * An empty file alone is a new history, as a missing one is: nothing is left in it to lose.
 */
function refuseCutShort(file: string): void {
  const sizeOf = (path: string) => statSync(path, { throwIfNoEntry: false })?.size;
  if (sizeOf(file) !== 0 || !sizeOf(`${file}-wal`)) return;
  throw new StateError(
    `history ${file} is empty, but its -wal file is not: opening it would delete the -wal, and the history in it; restore ${file} from a backup, or move it with its -wal and -shm files away to start a new history`,
  );
}

/** Tables of every layout this store has had. */
const HISTORY_TABLES = new Set(['events', 'machines', 'snapshot', 'events_by_field']);

/** Another program's database must be refused before the first write (WAL mode, migration) changes it. */
function refuseForeign(database: Database.Database): void {
  const tables = database
    .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
    .pluck()
    .all() as string[];
  const foreign = tables.filter((name) => !HISTORY_TABLES.has(name) && !name.startsWith('sqlite_'));
  const columns = (database.pragma('table_info(events)') as { name: string }[]).map((column) => column.name);
  if (
    foreign.length === 0 &&
    (columns.length === 0 || columns.includes('event') || columns.includes('detail'))
  )
    return;
  throw new Error(
    `${database.name} is not a rackboot history (${foreign.length > 0 ? `tables ${foreign.join(', ')}` : 'an events table of another shape'}); ` +
      'give server.state a directory of its own, or move the file away',
  );
}

function openLifecycleAt(file: string, options: LifecycleOptions): Lifecycle {
  const now = options.now ?? Date.now;
  const logger = options.logger;
  mkdirSync(options.stateDir, { recursive: true });
  refuseCutShort(file);
  const database = new Database(file);
  try {
    refuseForeign(database);
    database.pragma('journal_mode = WAL');
    database.pragma('synchronous = NORMAL');
    migrate(database, Math.round(now() * 1000));
  } catch (error) {
    database.close();
    throw error;
  }
  const statements = {
    // Bounded by durableId: a batch the writer committed but this thread has not settled yet is not
    // history yet (its listeners have not heard it, and lastEventId() does not count it).
    after: database.prepare('SELECT id, event FROM events WHERE id > ? AND id <= ? ORDER BY id LIMIT ?'),
    latest: database.prepare('SELECT id, event FROM events WHERE id <= ? ORDER BY id DESC LIMIT ?'),
    byIds: database.prepare(
      'SELECT id, event FROM events WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id',
    ),
    firstId: database.prepare('SELECT min(id) AS id FROM events'),
    storedId: database.prepare('SELECT 1 FROM events WHERE id = ?'),
    snapshotMark: database.prepare('SELECT through_id FROM snapshot'),
  };

  const machines = new Map<Mac, MachineRecord>();
  for (const row of database.prepare('SELECT mac, record FROM machines').all() as MachineRow[]) {
    const record = recordFromRow(row, file);
    machines.set(record.mac, record);
  }
  // The snapshot is at most one interval behind the history: fold in what came after it.
  let snapshotThroughId = (
    database.prepare('SELECT through_id FROM snapshot').get() as { through_id: number }
  ).through_id;
  const tail = database.prepare('SELECT id, event FROM events WHERE id > ? ORDER BY id');
  // Machines changed since the last snapshot; written with a batch at most once per interval.
  const dirtyMachines = new Set<Mac>();
  for (const row of tail.iterate(snapshotThroughId) as Iterable<StoredEvent>) {
    const event = fromRow(row, file);
    if (!event.mac) continue;
    const replayed = replay(machines.get(event.mac), event);
    if (replayed) {
      machines.set(event.mac, replayed);
      dirtyMachines.add(event.mac);
    }
  }
  let forgotten = 0;
  const maxUninstalled = options.maxUninstalled ?? MAX_UNINSTALLED;
  const listed = options.listed ?? (() => false);
  const uninstalled = new UninstalledMachines(maxUninstalled, listed, (mac) => {
    machines.delete(mac);
    dirtyMachines.add(mac);
    forgotten += 1;
    if (forgotten === 1 || forgotten % 1000 === 0) {
      logger.warn(
        { forgotten, max: maxUninstalled },
        'lifecycle: more unlisted, never-installed machines than kept; forgetting the ones unchanged longest',
      );
    }
  });
  const byLastEvent = [...machines.values()].sort((a, b) => a.lastEvent.id - b.lastEvent.id);
  for (const record of byLastEvent) uninstalled.update(record);
  // A batch that carried only the snapshot (a close after a failed write) may mark ids no event row
  // holds: ids continue after both, so none a machine record or a watcher saw is handed out again.
  const newestStoredId =
    (database.prepare('SELECT max(id) AS id FROM events').get() as { id: number | null }).id ?? 0;
  const historyStartId = (
    database.prepare('SELECT history_start_id FROM snapshot').get() as { history_start_id: number }
  ).history_start_id;
  let lastId = Math.max(newestStoredId, snapshotThroughId, historyStartId);
  let durableId = newestStoredId;
  const listeners = new Set<EventListener>();
  // Twice the retention (at least 10,000 more) before a sweep: amortised, and never per event.
  const eventsByMac = new MacEventIndex(options.retention + Math.max(options.retention, 10_000));
  for (const row of database
    .prepare('SELECT id, mac FROM events WHERE mac IS NOT NULL ORDER BY id')
    .iterate() as Iterable<{
    id: number;
    mac: Mac;
  }>) {
    eventsByMac.add(row.mac, row.id);
  }

  let pending: MachineEvent[] = [];
  const snapshotIntervalMs = options.snapshotIntervalMs ?? SNAPSHOT_INTERVAL_MS;
  // Monotonic: a wall clock stepped back (NTP correcting a fast clock, an RTC kept in local time)
  // would hold off every snapshot, and with them retention pruning, for as long as the step.
  let lastSnapshotAt = performance.now();
  const batchIntervalMs = options.batchIntervalMs ?? 25;
  let lastFlushAt = Number.NEGATIVE_INFINITY;
  /** The events recorded since the last flush; `due` once its time has come (see batchIntervalMs). */
  let batch:
    | {
        /** Whether the batch was committed; `done` is the same moment for recorders that need not know. */
        stored: Promise<boolean>;
        done: Promise<void>;
        resolve: (stored: boolean) => void;
        due: boolean;
        cancelTimer: () => void;
      }
    | undefined;
  let closed = false;

  let batchNumber = 0;
  const inFlight = new Map<
    number,
    {
      events: MachineEvent[];
      /** Kept to be sent again to a new writer thread if the one writing it dies. */
      request: WriteBatch;
      /** Writer threads it was sent to. */
      attempts: number;
      resolve: (stored: boolean) => void;
    }
  >();
  /**
   * A batch failed since the last snapshot was committed: the next batch carries one (and a close
   * writes one), so the records it lost are written and the mark passes the ids it used, which a
   * restart then never hands out again.
   */
  let snapshotOwed = false;
  let writerFailure: string | undefined;
  /** Writes failing (a full disk) fail every batch, up to 40 a second under a DHCP storm. */
  const historyWrites = failureReporter({
    intervalMs: WRITE_ERROR_INTERVAL_MS,
    report: (error, events) => logger.error({ error, events, file }, 'lifecycle: could not write events'),
    recovered: () => logger.info({ file }, 'lifecycle: events are written again'),
  });
  // This connection only reads; every write goes through the writer thread.
  const startWriter =
    options.startWriter ??
    ((data: WriterData) => startModuleWorker('writer', import.meta.url, data, [], WRITER_SEMI_SPACE_MB));
  let writer: Worker;
  let writerExited: Promise<void>;
  /** Writer threads that died since one last answered a batch, or since a batch was found committed. */
  let writerDeaths = 0;
  /** The writer was asked to close: its end is expected. */
  let closeSent = false;
  const health = { unstoredEvents: 0, writerRestarts: 0 };
  spawnWriter();

  function spawnWriter(): void {
    const thread = startWriter({ file: join(options.stateDir, DATABASE_FILE_NAME) });
    let failure: Error | undefined;
    thread.on('message', (reply: WriterReply) => {
      writerDeaths = 0;
      settle(reply.batch, reply.error);
    });
    thread.on('error', (error) => {
      failure = error;
    });
    writerExited = new Promise((resolve) => {
      thread.once('exit', (code) => {
        resolve();
        if (!closeSent) writerDied(failure ? failure.message : `exit code ${code}`);
      });
    });
    if (inFlight.size === 0) thread.unref();
    writer = thread;
  }

  /**
   * A writer thread ended unasked (an uncaught error, its heap exhausted, a failure to start). A new
   * one takes over. The batch it was writing may be on disk already (it died after the commit,
   * before answering): then it is settled as stored. Otherwise it is sent to the new thread; a batch
   * sent to two threads that both died (it may be what kills them) is not stored, as a failed write.
   * Every death counts, idle ones too (a thread that cannot start would otherwise be restarted for
   * ever): after WRITER_DEATHS_BEFORE_GIVING_UP with no batch answered or found committed in between,
   * no thread is started and writing stops until a restart; the states in memory go on, the history
   * does not.
   */
  function writerDied(reason: string): void {
    writerDeaths += 1;
    if (writerDeaths < WRITER_DEATHS_BEFORE_GIVING_UP) {
      logger.error(
        { reason, batches: inFlight.size },
        'lifecycle: the history writer thread died; starting another',
      );
      try {
        spawnWriter();
        health.writerRestarts += 1;
      } catch (error) {
        reason = `could not start another: ${(error as Error).message}`;
        writerDeaths = WRITER_DEATHS_BEFORE_GIVING_UP;
      }
    }
    if (writerDeaths >= WRITER_DEATHS_BEFORE_GIVING_UP) {
      writerFailure = `writer thread died ${writerDeaths} times in a row, last: ${reason}`;
      logger.error(
        { reason, deaths: writerDeaths },
        'lifecycle: the history writer thread keeps dying; no more events are written until rackboot restarts',
      );
    }
    for (const [batchId, written] of [...inFlight]) {
      if (onDisk(written.request)) {
        // The dead thread got as far as a commit: it was not dying of its work.
        writerDeaths = 0;
        settle(batchId, undefined);
      } else if (writerFailure) settle(batchId, writerFailure);
      else if (written.attempts > 1) settle(batchId, `two writer threads died writing it, last: ${reason}`);
      else {
        written.attempts += 1;
        writer.ref();
        writer.postMessage(written.request);
      }
    }
  }

  /**
   * Whether a batch was committed, read back by this connection: its last event row (the batch's own
   * prune stops at least `retention`, 1,000 or more, ids before it), or for a batch of only a
   * snapshot the snapshot mark (it only grows, and one batch is in flight at a time). A failed read
   * counts as not committed: a batch sent again that was stored then fails on its ids, as a failed
   * write.
   */
  function onDisk(request: WriteBatch): boolean {
    const lastEvent = request.ids.at(-1);
    try {
      if (lastEvent !== undefined) return statements.storedId.get(lastEvent) !== undefined;
      const mark = statements.snapshotMark.get() as { through_id: number };
      return request.snapshot !== undefined && mark.through_id >= request.snapshot.throughId;
    } catch {
      return false;
    }
  }

  function settle(batchId: number, error: string | undefined): void {
    const written = inFlight.get(batchId);
    if (!written) return;
    inFlight.delete(batchId);
    if (inFlight.size === 0) writer.unref();
    written.resolve(!error);
    if (error) {
      // Disk full or the file gone: memory stays right, the history has a hole, and no watcher hears
      // of events a restart will not have.
      historyWrites.failed(error, written.events.length);
      health.unstoredEvents += written.events.length;
      snapshotOwed = true;
      // Readers by MAC page through the index: ids no row will ever hold would cut their pages short.
      eventsByMac.forget(written.events);
      for (const machine of written.request.snapshot?.machines ?? []) dirtyMachines.add(machine.mac);
      for (const mac of written.request.snapshot?.forget ?? []) dirtyMachines.add(mac as Mac);
      for (const event of written.events)
        if (event.mac && machines.has(event.mac)) dirtyMachines.add(event.mac);
    } else {
      historyWrites.succeeded();
      durableId = written.events.at(-1)?.id ?? durableId;
      notify(written.events, written.request.rows);
    }
    flush();
    if (!batch && inFlight.size === 0) for (const drained of drainWaiters.splice(0)) drained();
  }
  function notify(events: MachineEvent[], rows: string[]): void {
    const listening = [...listeners];
    for (let index = 0; index < events.length; index += 1) {
      const event = events[index] as MachineEvent;
      for (const listener of listening) {
        try {
          listener(event, rows[index] as string);
        } catch (listenerError) {
          logger.error({ err: listenerError }, 'lifecycle: event listener failed');
        }
      }
    }
  }
  /** Resolves once every event recorded so far has been handed to the writer and settled. */
  const drainWaiters: (() => void)[] = [];
  const drained = () =>
    new Promise<void>((resolve) => {
      if (!batch && inFlight.size === 0) resolve();
      else drainWaiters.push(resolve);
    });

  /**
   * Sends the pending events to the writer. At most one batch is in flight: while the writer commits,
   * the next batch grows, so a burst or a slow disk makes fewer, larger transactions (each machine
   * record written once per batch) instead of a queue of small ones that every waiting DHCP ACK would
   * sit behind.
   */
  function flush(): void {
    const current = batch;
    if (!current?.due || (inFlight.size > 0 && !writerFailure)) return;
    batch = undefined;
    current.cancelTimer();
    lastFlushAt = performance.now();
    batchNumber += 1;
    const snapshotDue = closed || snapshotOwed || lastFlushAt - lastSnapshotAt >= snapshotIntervalMs;
    const batchLastId = pending.at(-1)?.id ?? lastId;
    if (snapshotDue) {
      lastSnapshotAt = lastFlushAt;
      snapshotThroughId = batchLastId;
    }
    const pruneThroughId = Math.min(lastId - options.retention, snapshotThroughId);
    const rows = pending.map(serialise);
    const request: WriteBatch = {
      kind: 'write',
      batch: batchNumber,
      ids: pending.map((event) => event.id),
      macs: pending.map((event) => event.mac ?? null),
      rows,
      snapshot: snapshotDue
        ? {
            machines: [...dirtyMachines].flatMap((mac) => machines.get(mac) ?? []),
            forget: [...dirtyMachines].filter((mac) => !machines.has(mac)),
            throughId: batchLastId,
          }
        : undefined,
      // Never prune what a restart would still have to replay.
      pruneThroughId,
    };
    eventsByMac.prune(pruneThroughId);
    inFlight.set(request.batch, { events: pending, request, attempts: 1, resolve: current.resolve });
    pending = [];
    if (snapshotDue) {
      dirtyMachines.clear();
      snapshotOwed = false;
    }
    if (writerFailure) {
      settle(request.batch, writerFailure);
      return;
    }
    writer.ref();
    writer.postMessage(request);
  }

  /**
   * The stored form of an event, made once: the writer stores it, the SSE stream sends it as it is.
   * A detail JSON cannot hold (a BigInt, a cycle) is a bug in its recorder: the event is kept, with
   * its detail replaced by the reason.
   */
  function serialise(event: MachineEvent): string {
    try {
      return JSON.stringify(event);
    } catch (error) {
      const reason = (error as Error).message;
      logger.error({ type: event.type, mac: event.mac, reason }, 'lifecycle: event detail cannot be stored');
      return JSON.stringify({ ...event, detail: { unstorable: reason } });
    }
  }

  function append(input: MachineEventInput): Appended {
    const events = addToBatch(input);
    return events ? { events, stored: ensureBatch().stored } : { events: [], stored: Promise.resolve(false) };
  }

  /** Stamps the event, folds it into memory and queues it with what it caused; undefined after close. */
  function addToBatch(input: MachineEventInput): MachineEvent[] | undefined {
    if (closed) {
      logger.warn({ type: input.type, mac: input.mac }, 'lifecycle: event after close dropped');
      return undefined;
    }
    const ms = now();
    const time = isoTime(ms);
    lastId += 1;
    const result = step(input.mac ? machines.get(input.mac) : undefined, input, { id: lastId, time, ms });
    const events = [result.event];
    for (const derived of result.derived) {
      lastId += 1;
      events.push(stampEvent(derived, { id: lastId, time, ms }));
    }
    if (input.mac && result.record) {
      machines.set(input.mac, result.record);
      dirtyMachines.add(input.mac);
      uninstalled.update(result.record);
    }
    for (const event of events) {
      pending.push(event);
      if (event.mac) eventsByMac.add(event.mac, event.id);
    }
    return events;
  }

  // Events come in floods within one millisecond: format each millisecond once (~1.5 µs a call).
  let formattedMs = Number.NaN;
  let formatted = '';
  function isoTime(ms: number): string {
    if (ms !== formattedMs) {
      formattedMs = ms;
      formatted = new Date(ms).toISOString();
    }
    return formatted;
  }

  function ensureBatch() {
    if (!batch) {
      let resolve = (_stored: boolean) => {};
      const stored = new Promise<boolean>((settle) => {
        resolve = settle;
      });
      const opened = { stored, done: stored.then(() => {}), resolve, due: false, cancelTimer: () => {} };
      const fire = () => {
        opened.due = true;
        flush();
      };
      // Monotonic, not options.now: tests move that clock by hours.
      const wait = lastFlushAt + batchIntervalMs - performance.now();
      if (wait <= 0) {
        const immediate = setImmediate(fire);
        opened.cancelTimer = () => clearImmediate(immediate);
      } else {
        const timeout = setTimeout(fire, wait);
        opened.cancelTimer = () => clearTimeout(timeout);
      }
      batch = opened;
    }
    return batch;
  }

  function byIds(ids: number[]): StoredEvent[] {
    return ids.length === 0 ? [] : (statements.byIds.all(JSON.stringify(ids)) as StoredEvent[]);
  }

  /**
   * A page short of `limit` means there is nothing after it: the SSE replay ends its catch-up there,
   * and a client paging with `?after=` stops. A damaged row left out (`sendable`) must not make a
   * full page look like the last one, so the page is filled from the rows after it.
   */
  function storedEventsAfter(id: number, filter?: EventFilter): StoredEvent[] {
    const { mac, limit } = query(filter);
    const page: StoredEvent[] = [];
    for (let after = id; ; ) {
      const wanted = limit - page.length;
      const ids = mac ? eventsByMac.after(mac, after, durableId, wanted) : undefined;
      const rows = ids ? byIds(ids) : (statements.after.all(after, durableId, wanted) as StoredEvent[]);
      const sent = sendable(rows);
      if (page.length === 0 && sent.length === limit) return sent;
      page.push(...sent);
      if ((ids ?? rows).length < wanted || page.length === limit) return page;
      after = (ids ? ids.at(-1) : rows.at(-1)?.id) as number;
    }
  }

  function storedLatestEvents(filter?: EventFilter): StoredEvent[] {
    const { mac, limit } = query(filter);
    return sendable(
      mac
        ? byIds(eventsByMac.latest(mac, durableId, limit))
        : (statements.latest.all(durableId, limit) as StoredEvent[]).reverse(),
    );
  }

  /**
   * The rows as they can be sent: the replay and the history splice each row's text into their
   * answers unparsed (parsing 10,000 events to serialise them again tripled such an answer's time).
   * A row out of the shape this store writes (a disk error, a hand edit with sqlite3) would make a
   * whole history answer invalid JSON, or end an SSE `data:` line early; the shape costs 0.03 µs a
   * row to check, a full check (SQLite's json_valid) 0.45, two thirds of the read itself. Only a row
   * out of shape is parsed: an object goes out on one line again, anything else is left out with a
   * warning. A damage inside a row that keeps the shape goes out as stored.
   */
  function sendable(rows: StoredEvent[]): StoredEvent[] {
    if (rows.every((row) => looksAsWritten(row.event))) return rows;
    return rows.flatMap((row) => {
      if (looksAsWritten(row.event)) return [row];
      const event = eventOf(row);
      return event ? [{ id: row.id, event: JSON.stringify(event) }] : [];
    });
  }

  /** Damaged rows warned of, so an answer asked for again and again logs each row once. */
  const warnedRows = new Map<number, true>();
  /** A row's event; undefined, with one warning for the row, when it is damaged. */
  function eventOf(row: StoredEvent): MachineEvent | undefined {
    const parsed = parseStored<MachineEvent>(row.event);
    if (parsed.ok) return parsed.value;
    if (!warnedRows.has(row.id)) {
      setNewest(warnedRows, row.id, true, MAX_WARNED_ROWS);
      logger.warn(
        { eventId: row.id },
        `lifecycle: ${damagedRow(file, eventRow(row.id), parsed.problem)}; until then the API and the event streams leave it out`,
      );
    }
    return undefined;
  }

  function query(single: EventFilter | undefined): { mac: Mac | undefined; limit: number } {
    const limit = Math.min(Math.max(1, Math.floor(single?.limit ?? DEFAULT_LIMIT)), MAX_LIMIT);
    return { mac: single?.mac, limit };
  }

  return {
    record: (input) => (addToBatch(input) ? ensureBatch().done : Promise.resolve()),
    append,
    stateOf: (mac) => machines.get(mac)?.state,
    bootsFromDisk: (mac) => machines.get(mac)?.bootsFromDisk ?? false,
    machines: () => [...machines.values()],
    machine: (mac) => machines.get(mac),
    // Parsed here anyway: a damaged row that kept its shape is left out too, not a failed answer.
    latestEvents: (filter) => storedLatestEvents(filter).flatMap((row) => eventOf(row) ?? []),
    storedEventsAfter,
    storedLatestEvents,
    lastEventId: () => durableId,
    historyHealth: () => ({ ...health, writing: writerFailure === undefined }),
    firstStoredEventId: () => (statements.firstId.get() as { id: number | null }).id ?? undefined,
    historyStartId: () => historyStartId,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async close() {
      if (closed) return;
      await drained();
      closed = true;
      // A last batch, even an empty one, carries the final snapshot: a clean restart replays nothing.
      // It also takes what was recorded while the drain ended (a `stored` continuation recording
      // more): nothing can be recorded after `closed`, and a batch left to its timer would go to a
      // closed writer.
      if (batch || inFlight.size > 0 || dirtyMachines.size > 0 || snapshotOwed) {
        ensureBatch().due = true;
        flush();
        await drained();
      }
      if (!writerFailure) {
        closeSent = true;
        writer.ref();
        writer.postMessage({ kind: 'close' } satisfies WriterRequest);
      }
      await writerExited;
      for (const batchId of [...inFlight.keys()]) settle(batchId, 'writer thread exited before writing');
      listeners.clear();
      database.close();
    },
  };
}

interface MachineRow {
  mac: string;
  record: string;
}

function fromRow(row: StoredEvent, file: string): MachineEvent {
  return parseRow<MachineEvent>(row.event, file, eventRow(row.id));
}

/** Where a damaged event row is, and what deleting it costs. */
function eventRow(id: number): RowPlace {
  return {
    row: `events row ${id}`,
    remove: `DELETE FROM events WHERE id = ${id}`,
    loss: 'that event is lost',
  };
}

/**
 * JSON.stringify's form of an object, as this store writes every event: braces at both ends and no
 * line break. A BLOB written in by hand comes back as a Buffer.
 */
function looksAsWritten(text: string): boolean {
  return (
    typeof text === 'string' &&
    text.charCodeAt(0) === 0x7b &&
    text.charCodeAt(text.length - 1) === 0x7d &&
    !text.includes('\n') &&
    !text.includes('\r')
  );
}

function recordFromRow(row: MachineRow, file: string): MachineRecord {
  const record = parseRow<MachineRecord>(row.record, file, {
    row: `machines row ${row.mac}`,
    remove: `DELETE FROM machines WHERE mac = '${row.mac.replaceAll("'", "''")}'`,
    loss: 'the machine keeps only what its events since the last snapshot say: an installed one may install again at its next network boot',
  });
  // Snapshots from before the mark: an installed machine had completed its install.
  record.bootsFromDisk ??= record.state === 'installed';
  return record;
}

/** A history row: which one, the SQL that deletes it, and what deleting it loses. */
interface RowPlace {
  row: string;
  remove: string;
  loss: string;
}

/** The JSON object a history row holds; at the start, a damaged row stops it. */
function parseRow<T>(text: string, file: string, where: RowPlace): T {
  const parsed = parseStored<T>(text);
  if (parsed.ok) return parsed.value;
  throw new StateError(damagedRow(file, where, parsed.problem));
}

function parseStored<T>(text: string): { ok: true; value: T } | { ok: false; problem: string } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    return { ok: false, problem: (error as Error).message };
  }
  return isObject(parsed) ? { ok: true, value: parsed as T } : { ok: false, problem: 'not a JSON object' };
}

/**
 * A row that does not parse (a disk error, a hand edit) stopped the start with only JSON.parse's
 * words: this names the row and the ways out, the ones that lose least first.
 */
function damagedRow(file: string, where: RowPlace, problem: string): string {
  return `history ${file}: ${where.row} is damaged (${problem}); restore ${file} from a backup, or delete that row with sqlite3 ${file} "${where.remove}" while rackboot is stopped (${where.loss}), or move the file with its -wal and -shm files away to start a new history`;
}

/**
 * A stored event folded into its machine's record again; undefined when it changes none. The
 * lifecycle's own events (state changes) are what such a fold makes, so they are skipped.
 */
function replay(record: MachineRecord | undefined, event: MachineEvent): MachineRecord | undefined {
  if (event.source === 'lifecycle') return undefined;
  return step(record, event, { id: event.id, time: event.time, ms: Date.parse(event.time) }).record;
}

/**
 * One machine's record as the server holds it, read from the history under `stateDir` without
 * opening it for writing, while the server runs or not (`rackboot render`): its snapshot and the
 * events after it. Undefined for a machine the history does not know, or no history at all.
 */
export function readMachineRecord(stateDir: string, mac: Mac): MachineRecord | undefined {
  const file = join(stateDir, DATABASE_FILE_NAME);
  if (!existsSync(file)) return undefined;
  refuseCutShort(file);
  const database = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const row = database.prepare('SELECT mac, record FROM machines WHERE mac = ?').get(mac) as
      | MachineRow
      | undefined;
    let record = row ? recordFromRow(row, file) : undefined;
    const mark = database.prepare('SELECT through_id FROM snapshot').get() as { through_id: number };
    const tail = database.prepare('SELECT id, event FROM events WHERE id > ? AND mac = ? ORDER BY id');
    for (const stored of tail.iterate(mark.through_id, mac) as Iterable<StoredEvent>)
      record = replay(record, fromRow(stored, file)) ?? record;
    return record;
  } finally {
    database.close();
  }
}

/**
 * Creates the tables, or brings an older layout up to SCHEMA_VERSION in one transaction. Version 2
 * stores each event as the JSON the SSE stream sends (one serialisation per event, none to read a
 * column back) and indexes events by MAC in memory (mac-index.ts), not in SQLite. Version 3 starts a
 * new history's ids at `startId` (its creation in microseconds); a history that already holds events
 * keeps its ids, which began at 1 (start 0).
 */
function migrate(database: Database.Database, startId: number): void {
  const version = database.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) {
    throw new Error(
      `${database.name} has schema version ${version}, newer than this rackboot's ${SCHEMA_VERSION}: ` +
        'run the rackboot that wrote it, or move the file away to start a new history',
    );
  }
  const columnsOf = (table: string) =>
    (database.pragma(`table_info(${table})`) as { name: string }[]).map((column) => column.name);
  const eventColumns = columnsOf('events');
  const hasFieldColumns = eventColumns.includes('detail');
  database.transaction(() => {
    if (hasFieldColumns) database.exec('ALTER TABLE events RENAME TO events_by_field');
    database.exec(`
      CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, mac TEXT, event TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS machines (mac TEXT PRIMARY KEY, record TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS snapshot (one INTEGER PRIMARY KEY CHECK (one = 1), through_id INTEGER NOT NULL,
        history_start_id INTEGER NOT NULL DEFAULT 0);
    `);
    if (!columnsOf('snapshot').includes('history_start_id'))
      database.exec('ALTER TABLE snapshot ADD COLUMN history_start_id INTEGER NOT NULL DEFAULT 0');
    database
      .prepare('INSERT OR IGNORE INTO snapshot (one, through_id, history_start_id) VALUES (1, 0, ?)')
      .run(eventColumns.length === 0 ? startId : 0);
    if (hasFieldColumns) {
      // The JSON.stringify form: fields that were undefined (NULL here) are left out, not null.
      database.exec(`
        INSERT INTO events (id, mac, event)
        SELECT id, mac, json_remove(
          json_object('id', id, 'time', time, 'mac', mac, 'ip', ip, 'source', source, 'type', type,
            'correlationId', correlation_id, 'detail', json(detail), 'state', state),
          iif(mac IS NULL, '$.mac', '$.kept'), iif(ip IS NULL, '$.ip', '$.kept'),
          iif(correlation_id IS NULL, '$.correlationId', '$.kept'),
          iif(detail IS NULL, '$.detail', '$.kept'), iif(state IS NULL, '$.state', '$.kept'))
        FROM events_by_field ORDER BY id;
        DROP TABLE events_by_field;
      `);
    }
    database.pragma(`user_version = ${SCHEMA_VERSION}`);
  })();
}
