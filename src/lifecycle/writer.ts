import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import {
  EVENT_COLUMNS,
  type WriteBatch,
  type WriterData,
  type WriterReply,
  type WriterRequest,
} from './write-batch.js';

/**
 * The lifecycle store's writer thread. SQLite calls block the thread that makes them (writes to the
 * WAL, checkpoints); here they block this thread only, never the one answering DHCP and TFTP.
 * Batches arrive in order and are acknowledged in order, each in one transaction.
 */

const port = parentPort;
if (!port) throw new Error('writer.ts runs as a worker thread of the lifecycle store');
const { file } = workerData as WriterData;
const database = new Database(file);
// Per connection: a commit appends to the WAL without fsync (store.ts explains the trade).
database.pragma('synchronous = NORMAL');
const insertEvent = database.prepare(
  `INSERT INTO events (${EVENT_COLUMNS.join(', ')}) VALUES (${EVENT_COLUMNS.map(() => '?').join(', ')})`,
);
const saveMachine = database.prepare('INSERT OR REPLACE INTO machines (mac, record) VALUES (?, ?)');
const prune = database.prepare('DELETE FROM events WHERE id <= ?');

const commit = database.transaction((request: WriteBatch) => {
  const values = request.eventValues;
  for (let offset = 0; offset < values.length; offset += EVENT_COLUMNS.length) {
    insertEvent.run(values.slice(offset, offset + EVENT_COLUMNS.length));
  }
  const machines = request.machineValues;
  for (let offset = 0; offset < machines.length; offset += 2)
    saveMachine.run(machines[offset], machines[offset + 1]);
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
