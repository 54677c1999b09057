import { setFlagsFromString } from 'node:v8';
import { type ResourceLimits, type TransferListItem, Worker } from 'node:worker_threads';

/**
 * Starts the module `name` (without extension, beside `base`, the caller's import.meta.url) in a
 * worker thread, moving the buffers in `transferList` (parts of `workerData`) to it instead of
 * copying them. Compiled code runs dist/…/name.js directly; from source (tests, tsx) the worker
 * registers tsx first: a worker does not reliably get the main thread's TypeScript loader (seen
 * here: "Unknown file extension .ts" for a worker started with `--import tsx` in its execArgv,
 * depending on the working directory).
 * `semiSpaceMb` bounds the thread's young generation (workerHeapLimits); without it the thread
 * gets the semi-spaces the process was started with.
 */
export function startModuleWorker(
  name: string,
  base: string,
  workerData: unknown,
  transferList: TransferListItem[] = [],
  semiSpaceMb?: number,
): Worker {
  const fromSource = base.endsWith('.ts');
  const entry = new URL(`./${name}${fromSource ? '.ts' : '.js'}`, base);
  const options = { workerData, transferList, resourceLimits: workerHeapLimits(semiSpaceMb) };
  if (!fromSource) return new Worker(entry, options);
  const tsx = JSON.stringify(import.meta.resolve('tsx/esm/api'));
  const load = `import(${tsx}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry.href)}); })`;
  return new Worker(load, { ...options, eval: true });
}

const SEMI_SPACE_FLAG = /^--max-semi-space-size=(\d+)$/;
/** The semi-space size (MiB) the process was started with (bin/rackboot.js: 8), if it was given one. */
const processSemiSpaceMb = [...process.execArgv, ...(process.env.NODE_OPTIONS?.split(/\s+/) ?? [])]
  .map((argument) => SEMI_SPACE_FLAG.exec(argument)?.[1])
  .filter((value) => value !== undefined)
  .map(Number)[0];

/**
 * V8 sizes every new isolate's young generation from --max-semi-space-size when the process has
 * it, over a Worker's resourceLimits: the history writer, which only turns batches of short-lived
 * rows into SQLite inserts, grew the 2 × 8 MiB semi-spaces the main thread has, 11 MB more resident
 * for nothing (bench:http, 10,000 machines; its CPU per event the same with 2 MiB). The flag is
 * cleared as a worker starts (setting it again is harmless), so each worker's own limit applies:
 * `semiSpaceMb`, else the process's. The main isolate keeps the semi-spaces it was created with
 * (V8 reads the flag only when it sets up an isolate's heap).
 */
function workerHeapLimits(semiSpaceMb: number | undefined): ResourceLimits | undefined {
  setFlagsFromString('--max-semi-space-size=0');
  const semiSpace = semiSpaceMb ?? processSemiSpaceMb;
  // A young generation is two semi-spaces and a new large object space of the same size.
  return semiSpace === undefined ? undefined : { maxYoungGenerationSizeMb: 3 * semiSpace };
}

/**
 * Runs the module `name` as a one-shot worker (startModuleWorker): resolves with the first message
 * it posts once the thread has ended, rejects with its error or when it exits without answering.
 * Waiting for the end means the thread's heap is gone before the caller goes on: a loader thread
 * torn down while the caller starts the next one, or the servers, overlapped the two at the
 * process's memory peak (docs/http.md). A thread that answered but does not end by itself (a handle
 * left open) is terminated after `exitGraceMs`, so it cannot hold up start-up or every later reload.
 */
export function runModuleWorker<T>(
  name: string,
  base: string,
  workerData: unknown,
  transferList: TransferListItem[] = [],
  exitGraceMs = 5000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const worker = startModuleWorker(name, base, workerData, transferList);
    let answer: { value: T } | undefined;
    let failure: Error | undefined;
    let lingering: NodeJS.Timeout | undefined;
    worker.once('message', (value: T) => {
      answer = { value };
      lingering = setTimeout(() => void worker.terminate(), exitGraceMs);
    });
    worker.once('error', (error) => {
      failure = error;
    });
    worker.once('exit', (code) => {
      clearTimeout(lingering);
      if (answer) resolve(answer.value);
      else reject(failure ?? new Error(`${name} thread exited with code ${code} before answering`));
    });
  });
}

/** Marks an Error sent as a plain object (sendableLogArguments). */
const SENT_ERROR = 'rackbootSentError';

/**
 * A log call's arguments made fit for postMessage without losing an error's fields: a structured
 * clone keeps only an Error's name, message and stack, so `code`, `errno`, `syscall` and `path`
 * (what an alert on ENOSPC matches) were lost on the way to the main thread's logger. An Error, as
 * an argument or a field of the call's object, travels as a marked plain object, its cause too;
 * revivedLogArguments makes it an Error again.
 */
export function sendableLogArguments(args: unknown[]): unknown[] {
  return args.map((arg) => (isPlainObject(arg) ? mapValues(arg, sendableError) : sendableError(arg)));
}

export function revivedLogArguments(args: unknown[]): unknown[] {
  return args.map((arg) =>
    isSentError(arg) ? revivedError(arg) : isPlainObject(arg) ? mapValues(arg, revivedError) : arg,
  );
}

function sendableError(value: unknown): unknown {
  if (!(value instanceof Error)) return value;
  const { cause, ...fields } = value as Error & Record<string, unknown>;
  return {
    ...fields,
    [SENT_ERROR]: true,
    name: value.name,
    message: value.message,
    stack: value.stack,
    ...(cause === undefined ? {} : { cause: sendableError(cause) }),
  };
}

function revivedError(value: unknown): unknown {
  if (!isSentError(value)) return value;
  const { [SENT_ERROR]: _mark, name, message, stack, cause, ...fields } = value;
  const error = Object.assign(new Error(String(message)), fields);
  error.name = String(name);
  error.stack = String(stack);
  if (cause !== undefined) error.cause = revivedError(cause);
  return error;
}

function isSentError(value: unknown): value is Record<string, unknown> {
  return isPlainObject(value) && value[SENT_ERROR] === true;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === Object.prototype;
}

function mapValues(
  object: Record<string, unknown>,
  map: (value: unknown) => unknown,
): Record<string, unknown> {
  return Object.fromEntries(Object.entries(object).map(([key, value]) => [key, map(value)]));
}
