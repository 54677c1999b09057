import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type { MachineRecord } from './states.js';

/**
 * The lifecycle store's writer thread. SQLite calls block the thread that makes them (writes to the
 * WAL, checkpoints); here they block this thread only, never the one answering DHCP and TFTP.
 * Batches arrive in order and are acknowledged in order, each in one transaction.
 */

/**
 * One transaction: the events recorded since the last batch and the machine records they changed. Events
 * come as three parallel arrays of primitives, each event already serialised: cloning strings to
 * this thread costs a copy, cloning event objects cost the main thread ~8 µs per event.
 */
export interface WriteBatch {
  kind: 'write';
  batch: number;
  ids: number[];
  macs: (string | null)[];
  /** Each event's JSON. */
  rows: string[];
  /**
   * Every machine changed since the last snapshot, as of the last event of this batch, and the
   * records forgotten since (the oldest never-installed ones, past MAX_UNINSTALLED).
   */
  snapshot: { machines: MachineRecord[]; forget: string[]; throughId: number } | undefined;
  /** Events with an id up to this one are pruned (retention). */
  pruneThroughId: number;
}

export type WriterRequest = WriteBatch | { kind: 'close' };
export type WriterReply = { kind: 'written'; batch: number; error?: string };

export interface WriterData {
  file: string;
}

const port = parentPort;
if (!port) throw new Error('writer.ts runs as a worker thread of the lifecycle store');
const { file } = workerData as WriterData;
const database = new Database(file);
// Per connection: a commit appends to the WAL without fsync (store.ts explains the trade).
database.pragma('synchronous = NORMAL');
// Checkpointing every 64 MiB of WAL instead of 4 MiB was measured with the (mac, id) index SQLite
// then kept: 21–23 → 13.5–15.5 µs per event written (300,000 events in batches of 2,000 with their
// machine records and retention pruning), together with a 16 MiB page cache. Without that index an
// insert touches only the table's last pages, and a 2 MiB cache (SQLite's own default; better-sqlite3
// builds it with 16 MB) writes as fast: 3.3–3.8 against 3.3–4.4 µs per event, 400,000 events in
// 25 ms batches with 10,000 machine records every 10 s and pruning at 200,000. The 16 MB filled
// under bench:http's load, every machine's record rewritten at each snapshot (docs/http.md).
database.pragma('cache_size = -2000');
database.pragma('wal_autocheckpoint = 16384');
const insertEvent = database.prepare('INSERT INTO events (id, mac, event) VALUES (?, ?, ?)');
/**
 * Events are inserted EVENTS_PER_INSERT at a time: one statement per row cost 4.0–5.2 µs of CPU per
 * event, one per 50 rows 3.3–3.6 (300,000 events in batches of 250, a 25 ms batch at 10,000 a second).
 */
const EVENTS_PER_INSERT = 50;
const insertEvents = database.prepare(
  `INSERT INTO events (id, mac, event) VALUES ${Array(EVENTS_PER_INSERT).fill('(?, ?, ?)').join(', ')}`,
);
const insertArguments: (number | string | null)[] = new Array(EVENTS_PER_INSERT * 3);
const saveMachine = database.prepare('INSERT OR REPLACE INTO machines (mac, record) VALUES (?, ?)');
const forgetMachine = database.prepare('DELETE FROM machines WHERE mac = ?');
const saveSnapshotMark = database.prepare('UPDATE snapshot SET through_id = ? WHERE one = 1');
const prune = database.prepare('DELETE FROM events WHERE id <= ?');

const commit = database.transaction((request: WriteBatch) => {
  let index = 0;
  for (; index + EVENTS_PER_INSERT <= request.ids.length; index += EVENTS_PER_INSERT) {
    for (let row = 0; row < EVENTS_PER_INSERT; row += 1) {
      insertArguments[3 * row] = request.ids[index + row] as number;
      insertArguments[3 * row + 1] = request.macs[index + row] as string | null;
      insertArguments[3 * row + 2] = request.rows[index + row] as string;
    }
    insertEvents.run(insertArguments);
  }
  for (; index < request.ids.length; index += 1) {
    insertEvent.run(request.ids[index], request.macs[index], request.rows[index]);
  }
  if (request.snapshot) {
    for (const machine of request.snapshot.machines) saveMachine.run(machine.mac, JSON.stringify(machine));
    for (const mac of request.snapshot.forget) forgetMachine.run(mac);
    saveSnapshotMark.run(request.snapshot.throughId);
  }
  prune.run(request.pruneThroughId);
});

port.on('message', (request: WriterRequest) => {
  if (request.kind === 'close') {
    database.close();
    port.close();
    return;
  }
  let reply: WriterReply = { kind: 'written', batch: request.batch };
  try {
    commit(request);
  } catch (error) {
    reply = { ...reply, error: (error as Error).message };
  }
  port.postMessage(reply);
});
