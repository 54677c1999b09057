import { writeFileSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';

/**
 * A one-shot worker for test/worker-thread.test.ts: answers with the sum of the bytes it was given,
 * then keeps its thread `lingerMs` longer and writes `endedFile` as it ends, so a caller can tell
 * whether it went on before the thread was gone.
 */
const { bytes, lingerMs, endedFile } = workerData as {
  bytes: Uint8Array;
  lingerMs: number;
  endedFile: string;
};
process.on('exit', () => writeFileSync(endedFile, 'ended'));
parentPort?.postMessage(bytes.reduce((sum, byte) => sum + byte, 0));
setTimeout(() => {}, lingerMs);
