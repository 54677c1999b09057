import { getHeapSpaceStatistics } from 'node:v8';
import { parentPort } from 'node:worker_threads';

/**
 * For test/worker-thread.test.ts: allocates as the history writer does (a stream of short-lived
 * objects, the newest few thousand alive), then answers with its young generation's size in bytes.
 */
const alive: unknown[] = new Array(20_000);
for (let index = 0; index < 3_000_000; index += 1)
  alive[index % alive.length] = { index, text: `row ${index}` };
const newSpace = getHeapSpaceStatistics().find((space) => space.space_name === 'new_space');
parentPort?.postMessage(newSpace?.space_size);
