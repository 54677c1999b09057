import { once } from 'node:events';
import { startModuleWorker } from '../../src/worker-thread.js';

/**
 * Run by test/worker-thread.test.ts as `node --max-semi-space-size=8 --import tsx`, as
 * bin/rackboot.js runs: prints the young generation (bytes) that test/helpers/allocating-worker.ts
 * grew to when started with 1 MiB semi-spaces and with the process's own.
 */
const sizes: Record<string, unknown> = {};
for (const [label, semiSpaceMb] of [
  ['oneMiB', 1],
  ['inherited', undefined],
] as const) {
  const worker = startModuleWorker('allocating-worker', import.meta.url, null, [], semiSpaceMb);
  sizes[label] = (await once(worker, 'message'))[0];
  await worker.terminate();
}
process.stdout.write(`${JSON.stringify(sizes)}\n`);
