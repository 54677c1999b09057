import type { MachineEvent } from './events.js';

// Messages between the lifecycle store (store.ts) and its writer thread (writer.ts).

/**
 * One transaction's rows, flattened to primitives by the store: cloning a flat array across threads
 * costs a fraction of cloning the event objects (measured: postMessage was most of the store's time).
 */
export interface WriteBatch {
  kind: 'write';
  batch: number;
  /** EVENT_COLUMNS values per event, one event after another. */
  eventValues: (string | number | null)[];
  /** mac, JSON record; one machine after another. */
  machineValues: string[];
  /** Events with an id up to this one are pruned (retention). */
  pruneThroughId: number;
}

export type WriterRequest = WriteBatch | { kind: 'close' };
export type WriterReply = { kind: 'written'; batch: number; error?: string };

export interface WriterData {
  file: string;
}

/** The events table's columns, in the order eventValues() gives them. */
export const EVENT_COLUMNS = [
  'id',
  'time',
  'mac',
  'ip',
  'source',
  'type',
  'state',
  'correlation_id',
  'detail',
];

/** The values of one event in EVENT_COLUMNS order. */
export function eventValues(event: MachineEvent): (string | number | null)[] {
  return [
    event.id,
    event.time,
    event.mac ?? null,
    event.ip ?? null,
    event.source,
    event.type,
    event.state ?? null,
    event.correlationId ?? null,
    event.detail === undefined ? null : JSON.stringify(event.detail),
  ];
}
