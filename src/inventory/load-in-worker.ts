import { resolve } from 'node:path';
import { runModuleWorker } from '../worker-thread.js';
import { deepFreeze, type Loaded } from './load.js';
import type { Problem } from './problems.js';

export interface LoadRequest {
  file: string;
  missingAssets: 'error' | 'warn';
  env: Record<string, string | undefined>;
}

/** What the check stage gets from the parse stage: the plain data, and the text to place problems in. */
export interface ParsedConfig {
  text: string;
  data: Record<string, unknown>;
}

/**
 * The parse stage's answer. The ParsedConfig stays serialized (node:v8) on its way through this
 * thread, which only moves the bytes to the check stage: deserialized here, it was a copy of the
 * whole config built while the parse thread still held its peak, and pages of this heap kept after.
 */
export type ParsedFile =
  | { ok: true; serialized: Uint8Array<ArrayBuffer> }
  | { ok: false; problems: Problem[] };

/** A load-worker thread's job; `file` is absolute. */
export type LoadStage =
  | { stage: 'parse'; file: string }
  | ({ stage: 'check'; serialized: Uint8Array<ArrayBuffer> } & LoadRequest);

/**
 * Loads (and checks the templates of) a config in worker threads. Parsing 10,000 machines of YAML
 * with node positions takes seconds and a hundred megabytes that V8 does not hand back: in a worker,
 * a hot reload never stalls the DHCP and TFTP packet loop, and the memory goes when the thread ends.
 * Two threads, one after the other: the parse's syntax tree and document die with the first, so
 * the validation and the template renders of the second start from an empty heap instead of
 * growing one that still holds them uncollected.
 */
export async function loadConfigInWorker(request: LoadRequest): Promise<Loaded> {
  const file = resolve(request.file);
  const parsed = await runModuleWorker<ParsedFile>('load-worker', import.meta.url, {
    stage: 'parse',
    file,
  } satisfies LoadStage);
  if (!parsed.ok) return parsed;
  const loaded = await runModuleWorker<Loaded>(
    'load-worker',
    import.meta.url,
    { ...request, stage: 'check', file, serialized: parsed.serialized } satisfies LoadStage,
    [parsed.serialized.buffer],
  );
  // A structured clone arrives unfrozen.
  return deepFreeze(loaded) as Loaded;
}
