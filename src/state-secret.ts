import { createHash, randomBytes } from 'node:crypto';
import type { Stats } from 'node:fs';
import { chmod, link, lstat, open, readFile, realpath, rename, rm, stat, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { giveTo, makeDirectory, syncDirectory } from './durable-file.js';
import { StateError, stateFileAdvice, stateFileError } from './state-error.js';

const SECRET_BYTES = 32;
const SECRET_TEXT = /^[0-9a-f]{64}$/;
/** What a crash or a full disk between creating a file and writing it leaves (some file systems fill it with zeros). */
const NOTHING_WRITTEN = /^[\s\0]*$/;

export interface StateSecret {
  secret: Buffer;
  /** There was no secret in the file (missing, or left empty): this one was made now. */
  created: boolean;
}

/**
 * A 256-bit secret the server keeps in a file of `server.state` (64 hex digits, mode 0600), made
 * on first use and the same after every restart. Throws when the file exists but is not a secret
 * rackboot wrote.
 *
 * The secret is written whole or not at all (a temporary file, fsynced, then linked to its name),
 * so a full disk or a crash never leaves a file every later start refuses; an empty one left by an
 * older version is made again. Made by root (a first `sudo rackboot serve` of a state directory the
 * service later runs with), the state directory and the secret belong to the owner of the directory
 * they are in, so the service can still read them.
 */
export async function readOrCreateStateSecret(stateDir: string, fileName: string): Promise<StateSecret> {
  await makeDirectory(stateDir, 0o700);
  // Checked as written (a link another user owns in /tmp is theirs to point anywhere) and as it
  // really is; the files are then reached by the real path, so a link repointed after the check is
  // not followed.
  await refuseIfOthersCouldPlant(resolve(stateDir), lstat);
  const directory = await realpath(stateDir);
  await refuseIfOthersCouldPlant(directory, stat);
  const file = join(directory, fileName);
  await keepPrivate(file);
  let text = await readIfPresent(file);
  if (text !== undefined && NOTHING_WRITTEN.test(text)) {
    await removeIfStillEmpty(directory, file);
    text = undefined;
  }
  const created = text === undefined;
  if (text === undefined) {
    await createSecret(directory, file);
    text = await readCreated(file);
  }
  return { secret: secretIn(text, file), created };
}

/**
 * The secret in `<stateDir>/<fileName>` as the server's next start would take it, reading only (no
 * directory made, no mode changed): undefined while there is none (missing, or left empty, which
 * that start makes anew). Throws when the file cannot be read or is not a secret.
 */
export async function readServerSecret(stateDir: string, fileName: string): Promise<Buffer | undefined> {
  const file = join(stateDir, fileName);
  const text = await readIfPresent(file);
  return text === undefined || NOTHING_WRITTEN.test(text) ? undefined : secretIn(text, file);
}

function secretIn(text: string, file: string): Buffer {
  const secret = parseSecret(text);
  if (!secret)
    throw new StateError(`${file} is not a rackboot secret (64 hex digits); remove it to make a new one`);
  return secret;
}

/**
 * Tells two secrets apart without revealing either: the first 64 bits of the SHA-256 of a 256-bit
 * random secret say nothing about it, so the fingerprint may sit in a file others can read.
 */
export function secretFingerprint(secret: Buffer): string {
  return createHash('sha256').update(secret).digest('hex').slice(0, 16);
}

/**
 * Whoever can create or replace the state directory, or an entry in it, can plant the secrets
 * (and read the ones made): the HMAC secret opens every machine's Ignition, the operator token the
 * operator API. So, as OpenSSH's StrictModes does for ~/.ssh: no directory from `/` down to it may
 * be writable by everyone, except a sticky one (as /tmp) whose entry on the way belongs to root or
 * to this user. (A group-writable one is a share someone chose, as a umask of 002 makes them.) A `server.state` under /tmp made by another user, or in a shared writable
 * directory, is refused; one in an operator's own checkout (as `sudo rackboot serve` in a clone) is not.
 */
async function refuseIfOthersCouldPlant(
  stateDir: string,
  statOf: (path: string) => Promise<Stats>,
): Promise<void> {
  const uid = process.geteuid?.() ?? 0;
  // A symlink's own mode (0777) says nothing; the directory it names is checked on the real path.
  const writableByAnyone = (info: Stats | undefined) => info?.isDirectory() && (info.mode & 0o002) !== 0;
  let parent: Stats | undefined;
  for (const directory of [...ancestorsOf(stateDir), stateDir]) {
    const info = await statOf(directory);
    if (parent && writableByAnyone(parent)) {
      const sticky = (parent.mode & 0o1000) !== 0;
      if (!sticky || (info.uid !== 0 && info.uid !== uid)) {
        throw new StateError(
          `${directory} is in ${dirname(directory)}, which anyone can write${sticky ? `, and belongs to uid ${info.uid}` : ''}: they could plant or read rackboot's secrets; give server.state a directory only root or this user (uid ${uid}) can change`,
        );
      }
    }
    parent = info;
  }
  if (parent && writableByAnyone(parent)) {
    throw new StateError(
      `server.state ${stateDir} can be written by anyone (mode ${(parent.mode & 0o7777).toString(8)}): they could plant or read rackboot's secrets; chmod o-w it`,
    );
  }
}

/** `/`, then each directory down to the parent of `directory`. */
function ancestorsOf(directory: string): string[] {
  const ancestors: string[] = [];
  for (let current = dirname(directory); ; current = dirname(current)) {
    ancestors.unshift(current);
    if (current === dirname(current)) return ancestors;
  }
}

/** A secret that is a symlink is refused; one others may read is made 0600 when it is this user's, else refused. */
async function keepPrivate(file: string): Promise<void> {
  const info = await lstat(file).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw unreadable(file, error);
  });
  if (!info) return;
  if (info.isDirectory())
    throw new StateError(`cannot read the secret ${file}: ${stateFileAdvice('EISDIR')}`);
  if (!info.isFile())
    throw new StateError(`${file} is not a regular file (a symlink?): remove it to make a new one`);
  if ((info.mode & 0o077) === 0) return;
  if (info.uid !== (process.geteuid?.() ?? 0))
    throw new StateError(
      `${file} can be read by others (mode ${(info.mode & 0o777).toString(8)}) and belongs to uid ${info.uid}: remove it to make a new one`,
    );
  await chmod(file, 0o600);
}

/** The secret in that file, or undefined when it is missing, unreadable or not a secret. */
export async function readStateSecret(stateDir: string, fileName: string): Promise<Buffer | undefined> {
  try {
    return parseSecret(await readFile(join(stateDir, fileName), 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * The secret just linked to `file`. Another starter that found the file empty moves it aside for a
 * moment to look at it (removeIfStillEmpty), so it may be missing for that moment: asked again.
 */
async function readCreated(file: string): Promise<string> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await readFile(file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || attempt === 5) throw unreadable(file, error);
      await sleep(20);
    }
  }
}

function parseSecret(text: string): Buffer | undefined {
  const trimmed = text.trim();
  return SECRET_TEXT.test(trimmed) ? Buffer.from(trimmed, 'hex') : undefined;
}

async function readIfPresent(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw unreadable(file, error);
  }
}

/**
 * The server cannot start without its secret: a read that fails (a file of another user's, mode
 * 0600) is one line naming the file and what to do, not the bare errno with a stack.
 */
function unreadable(file: string, error: unknown): StateError {
  return stateFileError('cannot read the secret', file, error);
}

/** A fresh secret at `file`, unless another run made one first (then that one stays). */
async function createSecret(stateDir: string, file: string): Promise<void> {
  const temporary = `${file}.new-${randomBytes(6).toString('hex')}`;
  try {
    const handle = await open(temporary, 'wx', 0o600);
    try {
      await handle.writeFile(`${randomBytes(SECRET_BYTES).toString('hex')}\n`);
      await giveTo(temporary, await stat(stateDir));
      await handle.sync();
    } finally {
      await handle.close();
    }
    await linkUnlessTaken(temporary, file);
  } catch (error) {
    throw stateFileError('cannot write', file, error);
  } finally {
    await rm(temporary, { force: true });
  }
  await syncDirectory(stateDir);
}

/**
 * Removes the empty `file`, but not a secret another run has put there since it was read: it is
 * moved aside first, and put back if it is not empty after all.
 */
async function removeIfStillEmpty(stateDir: string, file: string): Promise<void> {
  const aside = `${file}.empty-${randomBytes(6).toString('hex')}`;
  try {
    await rename(file, aside);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  try {
    if (!NOTHING_WRITTEN.test(await readFile(aside, 'utf8'))) {
      await linkUnlessTaken(aside, file);
    }
  } finally {
    await unlink(aside);
  }
  await syncDirectory(stateDir);
}

/** Gives `file` the contents of `from`, unless another run has given it some already (that stays). */
async function linkUnlessTaken(from: string, file: string): Promise<void> {
  await link(from, file).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'EEXIST') throw error;
  });
}
