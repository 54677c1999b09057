import { parentPort, workerData } from 'node:worker_threads';
import { checkTemplate } from '../ignition/check.js';
import { loadConfigFile } from './load.js';
import type { LoadRequest } from './load-in-worker.js';

// Runs one load and exits: the YAML document and its positions live and die in this thread's heap.
const request = workerData as LoadRequest;
const loaded = await loadConfigFile(request.file, {
  missingAssets: request.missingAssets,
  env: request.env,
  checkTemplate,
});
parentPort?.postMessage(loaded);
