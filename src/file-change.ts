import type { BigIntStats } from 'node:fs';
import { type FileHandle, stat } from 'node:fs/promises';

// What TFTP (tftp/file-cache.ts) and HTTP (http/file-range.ts) check a file they are sending against.

/**
 * The file is not the size its stat gave (replaced or truncated between the stat and the open), or
 * its content changed while it was read or sent: sending on would end the client's copy short, or
 * leave it a mix of two versions, without a word.
 */
export class FileChangedError extends Error {
  constructor() {
    super('the file changed while it was read');
  }
}

/**
 * Throws FileChangedError when the bytes read so far may not all be of the version that was opened;
 * else returns the stat to compare the next read with. A rewrite in place (cp truncating then
 * writing, dd conv=notrunc, rsync --inplace) can leave every read full-length, so the descriptor's
 * times are compared: mtime, and ctime for a rewrite whose mtime was put back (cp -p, rsync -a
 * --inplace). A moved ctime goes on only when the path no longer names this file (renamed away, or
 * replaced atomically by a rename over it): nothing can then write it by name, and its bytes are
 * intact. Anything else that moves ctime (chmod, chown, a hard link, an xattr) cannot be told from a
 * rewrite with its mtime put back, which may come with it, so it ends the transfer too: the client's
 * retry gets the file whole.
 */
export async function assertUnchanged(
  handle: FileHandle,
  baseline: BigIntStats,
  path: string,
): Promise<BigIntStats> {
  const now = await handle.stat({ bigint: true });
  if (now.size !== baseline.size || now.mtimeNs !== baseline.mtimeNs) throw new FileChangedError();
  if (now.ctimeNs === baseline.ctimeNs) return baseline;
  if (!(await namesFile(path, now))) return now;
  throw new FileChangedError();
}

async function namesFile(path: string, file: BigIntStats): Promise<boolean> {
  try {
    const named = await stat(path, { bigint: true });
    return named.ino === file.ino && named.dev === file.dev;
  } catch {
    return false;
  }
}
