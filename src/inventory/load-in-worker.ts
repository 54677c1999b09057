import { startModuleWorker } from '../worker-thread.js';
import { deepFreeze, type Loaded } from './load.js';

export interface LoadRequest {
  file: string;
  missingAssets: 'error' | 'warn';
  env: Record<string, string | undefined>;
}

/**
 * Loads (and checks the templates of) a config in a worker thread. Parsing 10,000 machines of YAML
 * with node positions takes seconds and a hundred megabytes that V8 does not hand back: in a worker,
 * a hot reload never stalls the DHCP and TFTP packet loop, and the memory goes when the thread ends.
 */
export function loadConfigInWorker(request: LoadRequest): Promise<Loaded> {
  return new Promise((resolve, reject) => {
    const worker = startModuleWorker('load-worker', import.meta.url, request);
    let settled = false;
    worker.once('message', (loaded: Loaded) => {
      settled = true;
      // A structured clone arrives unfrozen.
      resolve(deepFreeze(loaded) as Loaded);
    });
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (!settled) reject(new Error(`config loader thread exited with code ${code} before answering`));
    });
  });
}
