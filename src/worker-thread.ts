import { Worker } from 'node:worker_threads';

/**
 * Starts the module `name` (without extension, beside `base`, the caller's import.meta.url) in a
 * worker thread. Compiled code runs dist/…/name.js directly; from source (tests, tsx) the worker
 * registers tsx first: a worker does not reliably get the main thread's TypeScript loader (seen
 * here: "Unknown file extension .ts" for a worker started with `--import tsx` in its execArgv,
 * depending on the working directory).
 */
export function startModuleWorker(name: string, base: string, workerData: unknown): Worker {
  const fromSource = base.endsWith('.ts');
  const entry = new URL(`./${name}${fromSource ? '.ts' : '.js'}`, base);
  if (!fromSource) return new Worker(entry, { workerData });
  const tsx = JSON.stringify(import.meta.resolve('tsx/esm/api'));
  const load = `import(${tsx}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry.href)}); })`;
  return new Worker(load, { eval: true, workerData });
}

/**
 * Runs the module `name` as a one-shot worker (startModuleWorker): resolves with the first message
 * it posts, rejects with its error or when it exits without answering.
 */
export function runModuleWorker<T>(name: string, base: string, workerData: unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    const worker = startModuleWorker(name, base, workerData);
    let settled = false;
    worker.once('message', (answer: T) => {
      settled = true;
      resolve(answer);
    });
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (!settled) reject(new Error(`${name} thread exited with code ${code} before answering`));
    });
  });
}
