import { parentPort, workerData } from 'node:worker_threads';
import type { WriterData, WriterRequest } from '../../src/lifecycle/writer.js';

export interface WriterDeath {
  moment?: 'at-start' | 'before-commit' | 'before-answer';
  dieAt?: number;
}

/**
 * The lifecycle store's writer thread (src/lifecycle/writer.ts) for test/lifecycle-store.test.ts,
 * ending its thread as soon as it starts (idle), or at the `dieAt`-th batch it is sent (counting
 * from 1): before committing it, or after the commit and before its answer leaves, the case where
 * the store cannot know from the thread whether the batch is on disk. Without a `moment` it is the
 * writer as it is.
 */
const { dieAt, moment } = workerData as WriterData & WriterDeath;
if (moment === 'at-start') process.exit(1);
const port = parentPort;
if (!port) throw new Error('dying-writer.ts runs as a worker thread');

let batches = 0;
// The writer's own message handler, wrapped as it registers it: messages wait in the port until then.
const on = port.on.bind(port);
port.on = ((event: string, handler: (request: WriterRequest) => void) =>
  on(event, (request: WriterRequest) => {
    if (request.kind === 'write') batches += 1;
    if (batches === dieAt && moment === 'before-commit') process.exit(1);
    handler(request);
  })) as typeof port.on;
const answer = port.postMessage.bind(port);
port.postMessage = (reply: unknown) => {
  if (batches === dieAt && moment === 'before-answer') process.exit(1);
  answer(reply);
};
await import('../../src/lifecycle/writer.js');
