/**
 * A file or lock under `server.state` that stops the server from starting, with a message that names
 * the file and what the operator can do about it: `serve` prints it as one line, without a stack.
 */
export class StateError extends Error {}

/**
 * What an operator can do about a file under `server.state` that cannot be read or written, by the
 * error's code (errno, or SQLite's for the history); undefined when the code says nothing useful.
 */
export function stateFileAdvice(code: string | undefined): string | undefined {
  const kind = code ?? '';
  if (kind === 'SQLITE_NOTADB' || kind.startsWith('SQLITE_CORRUPT'))
    return 'it is damaged or not a rackboot history: move it (with its -wal and -shm files) away to start a new history';
  if (
    kind.startsWith('SQLITE_READONLY') ||
    kind.startsWith('SQLITE_CANTOPEN') ||
    kind === 'SQLITE_PERM' ||
    kind === 'EACCES' ||
    kind === 'EPERM' ||
    kind === 'EROFS'
  )
    return `this user (uid ${process.getuid?.()}) cannot read or write it: give server.state and its files to the user rackboot runs as`;
  if (kind === 'SQLITE_FULL') return diskAdvice('ENOSPC');
  if (kind.startsWith('SQLITE_IOERR')) return diskAdvice('EIO');
  const disk = diskAdvice(kind);
  if (disk) return disk;
  if (kind === 'EISDIR') return 'it is a directory, where rackboot keeps a file: move it away';
  return undefined;
}

/** What to do about a write that failed for want of space or with an I/O error, wherever the file is. */
export function diskAdvice(code: string | undefined): string | undefined {
  if (code === 'ENOSPC' || code === 'EDQUOT')
    return "the disk (or this user's quota) is full: free space on its file system";
  if (code === 'EIO') return 'free space on its file system, or check the disk';
  return undefined;
}

/** `error` on the state file `file` (`what`: "history", "lease log"), as one line with the advice for its code. */
export function stateFileError(what: string, file: string, error: unknown): StateError {
  const { code, message } = error as { code?: string; message: string };
  const advice = stateFileAdvice(code);
  return new StateError(`${what} ${file}: ${message}${advice ? `; ${advice}` : ''}`, { cause: error });
}
