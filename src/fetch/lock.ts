import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { isRunning } from '../lab/command.js';
import { FetchError } from './download.js';

/**
 * One fetch at a time per assets directory: two runs (a cron job and an operator) would append to
 * the same .part files and race on the manifest. The lock file holds the owner's PID; a lock whose
 * process is gone (killed, machine rebooted) is taken over.
 */
export async function withLock<T>(lockFile: string, work: () => Promise<T>): Promise<T> {
  await mkdir(dirname(lockFile), { recursive: true });
  await acquire(lockFile);
  try {
    return await work();
  } finally {
    await rm(lockFile, { force: true });
  }
}

async function acquire(lockFile: string): Promise<void> {
  // Two tries: the second after removing a stale lock; a live owner fails the first.
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(lockFile, 'wx');
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new FetchError(`cannot create ${lockFile}: ${(error as Error).message}`);
      }
    }
    const owner = Number.parseInt(await readFile(lockFile, 'utf8').catch(() => ''), 10);
    if (Number.isInteger(owner) && owner > 0 && isRunning(owner)) {
      throw new FetchError(`another fetch (pid ${owner}) is writing here; wait for it or remove ${lockFile}`);
    }
    await rm(lockFile, { force: true });
  }
  throw new FetchError(`cannot take ${lockFile}: another fetch keeps creating it`);
}
