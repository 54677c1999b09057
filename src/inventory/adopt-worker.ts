import { parentPort, workerData } from 'node:worker_threads';
import { type AdoptInWorker, adoptIntoFile } from './adopt.js';

// Runs one adoption and exits: the two parses of the config live and die in this thread's heap.
const { file, request, checks } = workerData as AdoptInWorker;
parentPort?.postMessage(await adoptIntoFile(file, request, checks));
