import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { chmod, link, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeDirectory } from './durable-file.js';
import { isRunning } from './lab/command.js';
import { diskAdvice } from './state-error.js';

/**
 * A lock across processes (a server and a CLI, a cron job and an operator), for work two runs must
 * not do at once.
 *
 * The lock is a directory of numbered entries; the highest number is the current state, either
 * the PID of the run that holds it or `released`. A run takes the lock by creating the next number
 * with link(2), which publishes a complete file and fails when the name exists: of two runs that
 * read the same state only one can create its successor, whether that state was released or left
 * by a process that is gone (killed, machine rebooted). The highest entry is never replaced or
 * removed, so no run can take away a lock another run just got; entries below it are removed, and
 * a run that finds a higher number than the one it created has lost to a faster run and steps back.
 */

export interface FileLockOptions {
  /** What runs under the lock, as messages name it: `fetch`, `adopt`. */
  task: string;
  /** A live holder, as the refusal names it: `another fetch (pid 12) is writing here`. */
  describeHolder: (pid: number) => string;
  /**
   * What a refusal advises, after the holder: by default to wait for it or remove the lock directory
   * (a short task); a lock held for a lifetime (a server) says what to do instead.
   */
  remedy?: string;
  /** How long a live holder is waited for, looking again every POLL_MS; 0 refuses at once. */
  waitMs: number;
  /**
   * The error thrown when the lock is not taken, so each caller keeps its own kind (FetchError):
   * `held` by another run, or `unusable` when the lock directory cannot be read or written.
   */
  error: (message: string, reason: 'held' | 'unusable') => Error;
}

interface Lock {
  directory: string;
  options: FileLockOptions;
}

const RELEASED = 'released';
/**
 * An entry without a PID cannot come from a live run (link publishes whole files), but a machine
 * crash can leave one empty; it counts as held until it is this old.
 */
const ENTRY_WITHOUT_PID_STALE_MS = 60_000;
/** Each failed try means another run changed the lock meanwhile; a handful settles any contest. */
const ATTEMPTS = 5;
const POLL_MS = 50;
const DRAFT = /^draft-(\d+)-/;

/**
 * The entries and drafts this process holds right now. An entry naming this process's own PID that
 * is not among them was left by an earlier process that had the same PID (a server restarted as
 * PID 1 in a container, a reused PID after a reboot): `isRunning` cannot tell that one apart. (Per
 * thread: worker threads of one process share its PID, so they must not contend for one lock.)
 */
const ownedHere = new Set<string>();

/**
 * The last run in this process that asked for each lock directory: a run waits for the one before
 * it here, so runs of one process never contend for an entry among themselves (before, concurrent
 * adopts in one server could use up each other's tries).
 */
const turns = new Map<string, Promise<void>>();

/** Runs `work` holding the lock `directory` (created if missing); throws `options.error` when not taken. */
export async function withFileLock<T>(
  directory: string,
  options: FileLockOptions,
  work: () => Promise<T>,
): Promise<T> {
  const lock = { directory: resolve(directory), options };
  const deadline = Date.now() + options.waitMs;
  const before = turns.get(lock.directory);
  let endTurn = () => {};
  const turn = new Promise<void>((resolveTurn) => {
    endTurn = resolveTurn;
  });
  // Chained, so that a run that gave up waiting still keeps its successors behind its predecessor.
  const last = (before ?? Promise.resolve()).then(() => turn);
  turns.set(lock.directory, last);
  try {
    if (before && !(await settlesBy(before, deadline))) {
      throw heldError(lock, options.describeHolder(process.pid));
    }
    return await withLockAcrossProcesses(lock, deadline, work);
  } finally {
    endTurn();
    if (turns.get(lock.directory) === last) turns.delete(lock.directory);
  }
}

/**
 * Takes the lock `directory` and keeps it until the returned release is called: for a lock held as
 * long as something runs (a server on its state directory), not around one piece of work.
 */
export function holdFileLock(directory: string, options: FileLockOptions): Promise<() => Promise<void>> {
  let endHold = () => {};
  const hold = new Promise<void>((resolveHold) => {
    endHold = resolveHold;
  });
  return new Promise((taken, refused) => {
    const held: Promise<void> = withFileLock(directory, options, () => {
      taken(async () => {
        endHold();
        await held;
      });
      return hold;
    });
    held.catch(refused);
  });
}

async function withLockAcrossProcesses<T>(lock: Lock, deadline: number, work: () => Promise<T>): Promise<T> {
  const { directory, options } = lock;
  // Owned, when made by root (a `sudo` CLI run), by whoever owns the directory it is in: else the
  // service user could never take it again. Entries may stay root's: creating and removing them
  // needs only write permission on the lock directory.
  await makeDirectory(directory).catch((error: unknown) => {
    throw unusable(options, `cannot create ${directory}`, error);
  });
  // Written before the work: releasing must succeed even when the work has filled the disk.
  const releasedDraft = await writeDraft(lock, RELEASED);
  try {
    const held = await acquire(lock, deadline);
    try {
      return await work();
    } finally {
      // Owned until the release is published, so it never reads here as left by an earlier process.
      const released = await publish(lock, releasedDraft, held + 1).finally(() =>
        ownedHere.delete(join(directory, String(held))),
      );
      if (released) await removeOldEntries(lock, held + 1);
    }
  } finally {
    await removeDraft(releasedDraft);
  }
}

/** Whether `promise` settles before `deadline`. */
async function settlesBy(promise: Promise<void>, deadline: number): Promise<boolean> {
  const timeout = new AbortController();
  const expired = sleep(Math.max(0, deadline - Date.now()), false, { signal: timeout.signal });
  try {
    return await Promise.race([promise.then(() => true), expired]);
  } finally {
    timeout.abort();
  }
}

function heldError({ directory, options }: Lock, holder: string): Error {
  const waited = options.waitMs > 0 ? `after waiting ${options.waitMs / 1000} s, ` : '';
  const remedy = options.remedy ?? `wait for it or remove ${directory}`;
  return options.error(`${waited}${holder}; ${remedy}`, 'held');
}

async function acquire(lock: Lock, deadline: number): Promise<number> {
  const { directory, options } = lock;
  // Tries lost in a row; waiting for a holder starts a new contest, so a long wait is not a lost one.
  let lost = 0;
  while (lost < ATTEMPTS) {
    const top = Math.max(0, ...(await entryNumbers(lock)));
    if (top > 0) {
      const holder = await readHolder(lock, top);
      // Removed after the listing, which only happens below a newer entry: read the state again.
      if (holder === undefined) {
        lost++;
        continue;
      }
      if (holder.held) {
        if (Date.now() >= deadline) throw heldError(lock, holder.description);
        await sleep(POLL_MS);
        lost = 0;
        continue;
      }
    }
    const mine = top + 1;
    const entry = join(directory, String(mine));
    const draft = await writeDraft(
      lock,
      `${process.pid} ${processIdentity(process.pid) ?? ''}`.trim() + '\n',
    );
    // Owned from before it exists, so it never reads here as left by an earlier process.
    ownedHere.add(entry);
    let created = false;
    try {
      created = await publish(lock, draft, mine);
    } finally {
      await removeDraft(draft);
      if (!created) ownedHere.delete(entry);
    }
    if (!created) {
      lost++;
      continue;
    }
    if ((await entryNumbers(lock)).some((number) => number > mine)) {
      await rm(entry, { force: true });
      ownedHere.delete(entry);
      lost++;
      continue;
    }
    await removeOldEntries(lock, mine);
    return mine;
  }
  throw options.error(`cannot take ${directory}: other ${options.task} runs keep changing it`, 'held');
}

async function entryNumbers(lock: Lock): Promise<number[]> {
  return (await listLock(lock)).filter((name) => /^\d+$/.test(name)).map(Number);
}

async function listLock({ directory, options }: Lock): Promise<string[]> {
  return readdir(directory).catch((error: unknown) => {
    throw unusable(options, `cannot read ${directory}`, error);
  });
}

async function readHolder(
  { directory, options }: Lock,
  number: number,
): Promise<{ held: boolean; description: string } | undefined> {
  const entry = join(directory, String(number));
  let content: string;
  let modifiedMs: number;
  try {
    content = (await readFile(entry, 'utf8')).trim();
    modifiedMs = (await stat(entry)).mtimeMs;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw unusable(options, `cannot read ${entry}`, error);
  }
  if (content === RELEASED) return { held: false, description: 'released' };
  const [, pidText, identity] = /^(\d+)(?: (\S+))?$/.exec(content) ?? [];
  const pid = Number(pidText ?? 0);
  if (pid > 0) {
    // After a crash and a reboot the PID may be another program's: the identity tells them apart.
    const held = isLive(pid, entry) && (identity === undefined || processIdentity(pid) === identity);
    return { held, description: options.describeHolder(pid) };
  }
  return {
    held: Date.now() - modifiedMs < ENTRY_WITHOUT_PID_STALE_MS,
    description: `${entry} names no ${options.task}; it counts as held until it is ${ENTRY_WITHOUT_PID_STALE_MS / 1000} s old`,
  };
}

async function writeDraft({ directory, options }: Lock, content: string): Promise<string> {
  const draft = join(directory, `draft-${process.pid}-${randomBytes(6).toString('hex')}`);
  ownedHere.add(draft);
  try {
    await writeFile(draft, content);
    // Readable by every user of the lock whatever this run's umask (a `sudo` run under umask 077
    // left entries the service user could not read, and the lock unusable to it).
    await chmod(draft, 0o644);
    return draft;
  } catch (error) {
    await removeDraft(draft);
    throw unusable(options, `cannot write ${draft}`, error);
  }
}

/** Makes `draft` entry `number`, whole or not at all; false when that entry exists already. */
async function publish({ directory, options }: Lock, draft: string, number: number): Promise<boolean> {
  try {
    await link(draft, join(directory, String(number)));
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw unusable(options, `cannot write the ${options.task} lock in ${directory}`, error);
  }
}

/** The lock cannot be used: what failed and why, with what to do when the disk is full or failing. */
function unusable(options: FileLockOptions, failed: string, error: unknown): Error {
  const { code, message } = error as NodeJS.ErrnoException;
  const advice = diskAdvice(code);
  return options.error(`${failed}: ${message}${advice ? `; ${advice}` : ''}`, 'unusable');
}

async function removeDraft(draft: string): Promise<void> {
  await rm(draft, { force: true });
  ownedHere.delete(draft);
}

/**
 * The boot and the start time of process `pid` (/proc), which no later process shares even when it
 * gets the same PID, as after a crash and a reboot; undefined where /proc cannot say.
 */
function processIdentity(pid: number): string | undefined {
  try {
    bootId ??= readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22, starttime; the name in field 2 may hold spaces and parentheses, so count from its end.
    const startTime = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
    return startTime === undefined ? undefined : `${bootId}:${startTime}`;
  } catch {
    return undefined;
  }
}

let bootId: string | undefined;

/** Whether the process `pid` that wrote `path` still holds it: this one only if it says so. */
function isLive(pid: number, path: string): boolean {
  return pid === process.pid ? ownedHere.has(path) : isRunning(pid);
}

/** Entries below `current`, and drafts of runs that were killed before they removed them. */
async function removeOldEntries(lock: Lock, current: number): Promise<void> {
  for (const name of await listLock(lock)) {
    const path = join(lock.directory, name);
    const draftOwner = DRAFT.exec(name)?.[1];
    const stale = draftOwner === undefined ? Number(name) < current : !isLive(Number(draftOwner), path);
    if (stale) await rm(path, { force: true });
  }
}
