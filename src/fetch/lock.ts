import { withFileLock } from '../file-lock.js';
import { FetchError } from './download.js';

/**
 * One fetch at a time per assets directory: two runs (a cron job and an operator) would append to
 * the same .part files and race on the manifest. The second run is refused at once rather than
 * left waiting, as the first may download for many minutes.
 */
export function withLock<T>(lockDirectory: string, work: () => Promise<T>): Promise<T> {
  return withFileLock(
    lockDirectory,
    {
      task: 'fetch',
      describeHolder: (pid) => `another fetch (pid ${pid}) is writing here`,
      waitMs: 0,
      error: (message) => new FetchError(message),
    },
    work,
  );
}
