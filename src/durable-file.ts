import type { Stats } from 'node:fs';
import { chown, mkdir, open, stat } from 'node:fs/promises';
import { dirname, relative, resolve, sep } from 'node:path';

/**
 * Helpers for files that must survive a power cut and stay usable by the service user when a
 * command ran as root (`sudo rackboot ...`).
 */

interface Owner {
  uid: number;
  gid: number;
}

/** Whether this process runs as root (false where there are no uids). */
function runningAsRoot(): boolean {
  return process.getuid?.() === 0;
}

/**
 * Errors of opening or fsyncing a directory that mean it cannot be done here (file systems without
 * it, a directory this user may write but not read): nothing more can be done, so not failures.
 */
const SYNC_UNSUPPORTED = new Set(['EINVAL', 'ENOTSUP', 'EOPNOTSUPP', 'EISDIR', 'EPERM', 'EACCES']);

/** Makes the entries created, renamed or linked in `directory` survive a crash. */
export async function syncDirectory(directory: string): Promise<void> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(directory, 'r');
  } catch (error) {
    if (SYNC_UNSUPPORTED.has((error as NodeJS.ErrnoException).code ?? '')) return;
    throw error;
  }
  try {
    await handle.sync();
  } catch (error) {
    if (!SYNC_UNSUPPORTED.has((error as NodeJS.ErrnoException).code ?? '')) throw error;
  } finally {
    await handle.close();
  }
}

/**
 * Gives `path` to `owner`. As root, exactly (so a root run leaves nothing the service user cannot
 * use); as anyone else only the group, and only when this user may (a member of it). EPERM is not a
 * failure: other users cannot give files away, nor can root on a root-squashed NFS mount.
 */
export async function giveTo(path: string, owner: Owner): Promise<void> {
  const uid = runningAsRoot() ? owner.uid : -1;
  await chown(path, uid, owner.gid).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPERM') throw error;
  });
}

/**
 * `mkdir -p directory`, each directory it creates given (giveTo) to the owner of the directory it
 * was created in: run as root, it leaves the new ones to whoever owns the place, not to root.
 * Directories that existed are left as they are.
 */
export async function makeDirectory(directory: string, mode?: number): Promise<void> {
  const first = await makeParents(directory, mode);
  if (first === undefined) return;
  const { uid, gid } = await stat(dirname(first));
  for (const created of createdDirectories(first, directory)) await giveTo(created, { uid, gid });
}

/**
 * `mkdir -p`: resolves to the first directory it created (undefined when there was none to create),
 * as Node's recursive mkdir does. That one loops forever, at full CPU, where mkdir(2) answers ENOENT
 * under a directory that exists (/proc/self/x, /sys/x): `server.state` or `--dest` there hung
 * validate, serve and fetch. Here each missing directory is made once, and such an error is thrown.
 */
export async function makeParents(directory: string, mode?: number): Promise<string | undefined> {
  const { existing, missing } = await nearestExisting(directory);
  // Nothing missing: mkdir's own answer for a file in the way (EEXIST), and none for a directory.
  if (missing.length === 0) return mkdir(existing, { recursive: true });
  for (const created of missing) {
    await mkdir(created, mode).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'EEXIST') throw error;
    });
  }
  return missing[0];
}

/**
 * The nearest of `path` and its ancestors that exists (whatever it is), with its stats, and the
 * missing ones below it down to `path`, outermost first: what `mkdir -p` would have to make, and
 * where whether it can is decided. Any error but ENOENT, and ENOENT at the root, is thrown.
 */
export async function nearestExisting(
  path: string,
): Promise<{ existing: string; stats: Stats; missing: string[] }> {
  const missing: string[] = [];
  let existing = resolve(path);
  for (;;) {
    const stats = await stat(existing).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT' || dirname(existing) === existing) throw error;
    });
    if (stats) return { existing, stats, missing };
    missing.unshift(existing);
    existing = dirname(existing);
  }
}

/** `first` and each directory below it down to `directory`: the ones a recursive mkdir made. */
function createdDirectories(first: string, directory: string): string[] {
  const below = relative(first, resolve(directory));
  const parts = below === '' ? [] : below.split(sep);
  return [first, ...parts.map((_, index) => resolve(first, ...parts.slice(0, index + 1)))];
}
