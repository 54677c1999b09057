import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { Mac } from '../inventory/mac.js';
import type { Logger } from '../log.js';
import { startModuleWorker } from '../worker-thread.js';
import type { MachineEvent, MachineEventInput, MachineState, RecordEvent } from './events.js';
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
  /** Resolves once all of `events` are committed. */
  durable: Promise<void>;
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
  machines(): MachineRecord[];
  machine(mac: Mac): MachineRecord | undefined;
  /** Durable events with an id above `id`, oldest first. */
  eventsAfter(id: number, filter?: EventFilter): MachineEvent[];
  /** The newest durable events (oldest of them first). */
  latestEvents(filter?: EventFilter): MachineEvent[];
  /** The id of the newest durable event (0 when there is none). */
  lastEventId(): number;
  /**
   * Called with every event once it is durable, in id order, so a watcher never sees an event that
   * a restart could lose. Returns the unsubscribe function.
   */
  subscribe(listener: (event: MachineEvent) => void): () => void;
  /** Flushes pending events and closes the database. */
  close(): Promise<void>;
}

export interface LifecycleOptions {
  stateDir: string;
  /** Events kept; older ones are pruned (machine records are kept regardless). */
  retention: number;
  logger: Logger;
  /**
   * Machine records are written at most this often (default 1000 ms), not with every batch; a
   * restart replays the events after the last snapshot. Keeps each commit short under a flood.
   */
  snapshotIntervalMs?: number;
  now?: () => number;
}

export const DATABASE_FILE_NAME = 'lifecycle.sqlite';

const DEFAULT_LIMIT = 1000;
const MAX_LIMIT = 10_000;

interface EventRow {
  id: number;
  time: string;
  mac: string | null;
  ip: string | null;
  source: string;
  type: string;
  state: string | null;
  correlation_id: string | null;
  detail: string | null;
}

/**
 * Opens (creating if needed) `<stateDir>/lifecycle.sqlite`. Machine records are stored as snapshots
 * next to the events, at most once a second and in the same transaction as the events they include,
 * so a restart reads them back and replays only the events after the snapshot (never pruned), not a
 * history that retention may already have cut.
 *
 * Writes never stall the DHCP/TFTP hot paths: `record` only folds the event into memory and queues
 * it; everything queued during one turn of the event loop goes, on the next (`setImmediate`), to a
 * writer thread (writer.ts) that commits it in one transaction, so SQLite's blocking I/O never runs
 * on the thread that answers packets. WAL with synchronous=NORMAL makes a commit a write to the WAL file without
 * fsync: durable across a crash of this process; a power cut may lose the last commits, never the
 * database's consistency (https://sqlite.org/wal.html#performance_considerations).
 */
export function openLifecycle(options: LifecycleOptions): Lifecycle {
  const now = options.now ?? Date.now;
  const logger = options.logger;
  mkdirSync(options.stateDir, { recursive: true });
  const database = new Database(join(options.stateDir, DATABASE_FILE_NAME));
  database.pragma('journal_mode = WAL');
  database.pragma('synchronous = NORMAL');
  database.exec(`
    CREATE TABLE IF NOT EXISTS events (
      id INTEGER PRIMARY KEY,
      time TEXT NOT NULL,
      mac TEXT,
      ip TEXT,
      source TEXT NOT NULL,
      type TEXT NOT NULL,
      state TEXT,
      correlation_id TEXT,
      detail TEXT
    );
    CREATE INDEX IF NOT EXISTS events_by_mac ON events (mac, id);
    CREATE TABLE IF NOT EXISTS machines (mac TEXT PRIMARY KEY, record TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS snapshot (one INTEGER PRIMARY KEY CHECK (one = 1), through_id INTEGER NOT NULL);
    INSERT OR IGNORE INTO snapshot (one, through_id) VALUES (1, 0);
  `);
  const columns = 'id, time, mac, ip, source, type, state, correlation_id, detail';
  const statements = {
    after: database.prepare(`SELECT ${columns} FROM events WHERE id > ? ORDER BY id LIMIT ?`),
    afterForMac: database.prepare(
      `SELECT ${columns} FROM events WHERE mac = ? AND id > ? ORDER BY id LIMIT ?`,
    ),
    latest: database.prepare(`SELECT ${columns} FROM events ORDER BY id DESC LIMIT ?`),
    latestForMac: database.prepare(`SELECT ${columns} FROM events WHERE mac = ? ORDER BY id DESC LIMIT ?`),
  };

  const machines = new Map<Mac, MachineRecord>();
  for (const row of database.prepare('SELECT record FROM machines').all() as { record: string }[]) {
    const record = JSON.parse(row.record) as MachineRecord;
    machines.set(record.mac, record);
  }
  // The snapshot is at most one interval behind the history: fold in what came after it.
  let snapshotThroughId = (
    database.prepare('SELECT through_id FROM snapshot').get() as { through_id: number }
  ).through_id;
  const tail = database.prepare(
    `SELECT ${columns} FROM events WHERE id > ? AND source != 'lifecycle' ORDER BY id`,
  );
  // Machines changed since the last snapshot; written with a batch at most once per interval.
  const dirtyMachines = new Set<Mac>();
  for (const row of tail.iterate(snapshotThroughId) as Iterable<EventRow>) {
    const event = fromRow(row);
    if (!event.mac) continue;
    const replayed = step(machines.get(event.mac), event, event).record;
    if (replayed) {
      machines.set(event.mac, replayed);
      dirtyMachines.add(event.mac);
    }
  }
  let lastId = (database.prepare('SELECT max(id) AS id FROM events').get() as { id: number | null }).id ?? 0;
  let durableId = lastId;
  const listeners = new Set<(event: MachineEvent) => void>();

  let pending: MachineEvent[] = [];
  const snapshotIntervalMs = options.snapshotIntervalMs ?? 1000;
  let lastSnapshotAt = now();
  let batch: { done: Promise<void>; resolve: () => void; timer: NodeJS.Immediate } | undefined;
  let closed = false;

  // This connection only reads; every write goes through the writer thread.
  const writer = startModuleWorker('writer', import.meta.url, {
    file: join(options.stateDir, DATABASE_FILE_NAME),
  } satisfies WriterData);
  writer.unref();
  let batchNumber = 0;
  const inFlight = new Map<number, { events: MachineEvent[]; resolve: () => void }>();
  let writerFailure: string | undefined;
  const writerExited = new Promise<void>((resolve) => writer.once('exit', () => resolve()));

  function settle(batchId: number, error: string | undefined): void {
    const written = inFlight.get(batchId);
    if (!written) return;
    inFlight.delete(batchId);
    if (inFlight.size === 0) writer.unref();
    if (error) {
      // Disk full or the file gone: memory stays right, the history has a hole; say so once per batch.
      logger.error({ error, events: written.events.length }, 'lifecycle: could not write events');
    } else {
      durableId = written.events.at(-1)?.id ?? durableId;
    }
    written.resolve();
    for (const event of written.events) {
      for (const listener of listeners) {
        try {
          listener(event);
        } catch (listenerError) {
          logger.error({ err: listenerError }, 'lifecycle: event listener failed');
        }
      }
    }
    flush();
    if (!batch && inFlight.size === 0) for (const drained of drainWaiters.splice(0)) drained();
  }
  /** Resolves once every event recorded so far has been handed to the writer and settled. */
  const drainWaiters: (() => void)[] = [];
  const drained = () =>
    new Promise<void>((resolve) => {
      if (!batch && inFlight.size === 0) resolve();
      else drainWaiters.push(resolve);
    });
  writer.on('message', (reply: WriterReply) => settle(reply.batch, reply.error));
  writer.on('error', (error) => {
    writerFailure = `writer thread failed: ${error.message}`;
    for (const batchId of [...inFlight.keys()]) settle(batchId, writerFailure);
  });

  /**
   * Sends the pending events to the writer. At most one batch is in flight: while the writer commits,
   * the next batch grows, so a burst or a slow disk makes fewer, larger transactions (each machine
   * record written once per batch) instead of a queue of small ones that every waiting DHCP ACK would
   * sit behind.
   */
  function flush(): void {
    const current = batch;
    if (!current || (inFlight.size > 0 && !writerFailure)) return;
    batch = undefined;
    clearImmediate(current.timer);
    batchNumber += 1;
    const snapshotDue = closed || now() - lastSnapshotAt >= snapshotIntervalMs;
    const batchLastId = pending.at(-1)?.id ?? lastId;
    if (snapshotDue) {
      lastSnapshotAt = now();
      snapshotThroughId = batchLastId;
    }
    const request: WriteBatch = {
      kind: 'write',
      batch: batchNumber,
      events: pending,
      snapshot: snapshotDue
        ? { machines: [...dirtyMachines].flatMap((mac) => machines.get(mac) ?? []), throughId: batchLastId }
        : undefined,
      // Never prune what a restart would still have to replay.
      pruneThroughId: Math.min(lastId - options.retention, snapshotThroughId),
    };
    inFlight.set(request.batch, { events: pending, resolve: current.resolve });
    pending = [];
    if (snapshotDue) dirtyMachines.clear();
    if (writerFailure) {
      settle(request.batch, writerFailure);
      return;
    }
    try {
      writer.ref();
      writer.postMessage(request);
    } catch (error) {
      // An event detail that cannot be cloned (a function, a socket) is a bug in its recorder.
      settle(request.batch, (error as Error).message);
    }
  }

  function append(input: MachineEventInput): Appended {
    if (closed) {
      logger.warn({ type: input.type, mac: input.mac }, 'lifecycle: event after close dropped');
      return { events: [], durable: Promise.resolve() };
    }
    const time = new Date(now()).toISOString();
    lastId += 1;
    const result = step(input.mac ? machines.get(input.mac) : undefined, input, { id: lastId, time });
    const events = [result.event];
    for (const derived of result.derived) {
      lastId += 1;
      events.push(stampEvent(derived, { id: lastId, time }));
    }
    if (input.mac && result.record) {
      machines.set(input.mac, result.record);
      dirtyMachines.add(input.mac);
    }
    for (const event of events) pending.push(event);
    return { events, durable: ensureBatch().done };
  }

  function ensureBatch() {
    if (!batch) {
      let resolve = () => {};
      const done = new Promise<void>((settle) => {
        resolve = settle;
      });
      batch = { done, resolve, timer: setImmediate(flush) };
    }
    return batch;
  }

  function query(single: EventFilter | undefined): { mac: Mac | undefined; limit: number } {
    const limit = Math.min(Math.max(1, Math.floor(single?.limit ?? DEFAULT_LIMIT)), MAX_LIMIT);
    return { mac: single?.mac, limit };
  }

  return {
    record: (input) => append(input).durable,
    append,
    stateOf: (mac) => machines.get(mac)?.state,
    machines: () => [...machines.values()],
    machine: (mac) => machines.get(mac),
    eventsAfter(id, filter) {
      const { mac, limit } = query(filter);
      const rows = (
        mac ? statements.afterForMac.all(mac, id, limit) : statements.after.all(id, limit)
      ) as EventRow[];
      return rows.map(fromRow);
    },
    latestEvents(filter) {
      const { mac, limit } = query(filter);
      const rows = (
        mac ? statements.latestForMac.all(mac, limit) : statements.latest.all(limit)
      ) as EventRow[];
      return rows.reverse().map(fromRow);
    },
    lastEventId: () => durableId,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async close() {
      if (closed) return;
      await drained();
      closed = true;
      // A last batch, even an empty one, carries the final snapshot: a clean restart replays nothing.
      if (dirtyMachines.size > 0) {
        ensureBatch();
        flush();
        await drained();
      }
      if (!writerFailure) {
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

function fromRow(row: EventRow): MachineEvent {
  return {
    id: row.id,
    time: row.time,
    mac: (row.mac ?? undefined) as Mac | undefined,
    ...(row.ip === null ? {} : { ip: row.ip }),
    source: row.source as MachineEvent['source'],
    type: row.type,
    ...(row.state === null ? {} : { state: row.state as MachineState }),
    ...(row.correlation_id === null ? {} : { correlationId: row.correlation_id }),
    ...(row.detail === null ? {} : { detail: JSON.parse(row.detail) as Record<string, unknown> }),
  };
}
