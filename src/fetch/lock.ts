import { randomBytes } from 'node:crypto';
import { link, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isRunning } from '../lab/command.js';
import { FetchError } from './download.js';

/**
 * One fetch at a time per assets directory: two runs (a cron job and an operator) would append to
 * the same .part files and race on the manifest.
 *
 * The lock is a directory of numbered entries; the highest number is the current state, either
 * the PID of the run that holds it or `released`. A run takes the lock by creating the next number
 * with link(2), which publishes a complete file and fails when the name exists: of two runs that
 * read the same state only one can create its successor, whether that state was released or left
 * by a process that is gone (killed, machine rebooted). The highest entry is never replaced or
 * removed, so no run can take away a lock another run just got; entries below it are removed, and
 * a run that finds a higher number than the one it created has lost to a faster run and steps back.
 */

const RELEASED = 'released';
/**
 * An entry without a PID cannot come from a live run (link publishes whole files), but a machine
 * crash can leave one empty; it counts as held until it is this old.
 */
const ENTRY_WITHOUT_PID_STALE_MS = 60_000;
/** Each failed try means another run changed the lock meanwhile; a handful settles any contest. */
const ATTEMPTS = 5;
const DRAFT = /^draft-(\d+)-/;

export async function withLock<T>(lockDirectory: string, work: () => Promise<T>): Promise<T> {
  await mkdir(lockDirectory, { recursive: true }).catch((error: Error) => {
    throw new FetchError(`cannot create ${lockDirectory}: ${error.message}`);
  });
  // Written before the work: releasing must succeed even when a download has filled the disk.
  const releasedDraft = await writeDraft(lockDirectory, RELEASED);
  try {
    const held = await acquire(lockDirectory);
    try {
      return await work();
    } finally {
      const released = await publish(lockDirectory, releasedDraft, held + 1);
      if (released) await removeOldEntries(lockDirectory, held + 1);
    }
  } finally {
    await rm(releasedDraft, { force: true });
  }
}

async function acquire(lockDirectory: string): Promise<number> {
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const top = Math.max(0, ...(await entryNumbers(lockDirectory)));
    if (top > 0) {
      const holder = await readHolder(lockDirectory, top);
      // Removed after the listing, which only happens below a newer entry: read the state again.
      if (holder === undefined) continue;
      if (holder.held) throw new FetchError(`${holder.description}; wait for it or remove ${lockDirectory}`);
    }
    const mine = top + 1;
    const draft = await writeDraft(lockDirectory, `${process.pid}\n`);
    const created = await publish(lockDirectory, draft, mine).finally(() => rm(draft, { force: true }));
    if (!created) continue;
    if ((await entryNumbers(lockDirectory)).some((number) => number > mine)) {
      await rm(join(lockDirectory, String(mine)), { force: true });
      continue;
    }
    await removeOldEntries(lockDirectory, mine);
    return mine;
  }
  throw new FetchError(`cannot take ${lockDirectory}: other fetches keep changing it`);
}

async function entryNumbers(lockDirectory: string): Promise<number[]> {
  return (await listLock(lockDirectory)).filter((name) => /^\d+$/.test(name)).map(Number);
}

async function listLock(lockDirectory: string): Promise<string[]> {
  return readdir(lockDirectory).catch((error: Error) => {
    throw new FetchError(`cannot read ${lockDirectory}: ${error.message}`);
  });
}

async function readHolder(
  lockDirectory: string,
  number: number,
): Promise<{ held: boolean; description: string } | undefined> {
  const entry = join(lockDirectory, String(number));
  let content: string;
  let modifiedMs: number;
  try {
    content = (await readFile(entry, 'utf8')).trim();
    modifiedMs = (await stat(entry)).mtimeMs;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new FetchError(`cannot read ${entry}: ${(error as Error).message}`);
  }
  if (content === RELEASED) return { held: false, description: 'released' };
  const pid = /^\d+$/.test(content) ? Number(content) : 0;
  if (pid > 0) return { held: isRunning(pid), description: `another fetch (pid ${pid}) is writing here` };
  return {
    held: Date.now() - modifiedMs < ENTRY_WITHOUT_PID_STALE_MS,
    description: `${entry} names no fetch; it counts as held until it is ${ENTRY_WITHOUT_PID_STALE_MS / 1000} s old`,
  };
}

async function writeDraft(lockDirectory: string, content: string): Promise<string> {
  const draft = join(lockDirectory, `draft-${process.pid}-${randomBytes(6).toString('hex')}`);
  try {
    await writeFile(draft, content);
    return draft;
  } catch (error) {
    await rm(draft, { force: true });
    throw new FetchError(`cannot write ${draft}: ${(error as Error).message}`);
  }
}

/** Makes `draft` entry `number`, whole or not at all; false when that entry exists already. */
async function publish(lockDirectory: string, draft: string, number: number): Promise<boolean> {
  try {
    await link(draft, join(lockDirectory, String(number)));
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw new FetchError(`cannot write the fetch lock in ${lockDirectory}: ${(error as Error).message}`);
  }
}

/** Entries below `current`, and drafts of runs that were killed before they removed them. */
async function removeOldEntries(lockDirectory: string, current: number): Promise<void> {
  for (const name of await listLock(lockDirectory)) {
    const draftOwner = DRAFT.exec(name)?.[1];
    const stale = draftOwner === undefined ? Number(name) < current : !isRunning(Number(draftOwner));
    if (stale) await rm(join(lockDirectory, name), { force: true });
  }
}
