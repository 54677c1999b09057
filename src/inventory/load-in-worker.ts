import { runModuleWorker } from '../worker-thread.js';
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
export async function loadConfigInWorker(request: LoadRequest): Promise<Loaded> {
  // A structured clone arrives unfrozen.
  return deepFreeze(await runModuleWorker<Loaded>('load-worker', import.meta.url, request)) as Loaded;
}
