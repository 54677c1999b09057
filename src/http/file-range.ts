import { setMaxListeners } from 'node:events';
import { type BigIntStats, constants, type Stats } from 'node:fs';
import { type FileHandle, open, readlink, realpath } from 'node:fs/promises';
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { assertUnchanged, FileChangedError } from '../file-change.js';
import { escapesRoot } from '../path-inside.js';

/**
 * Bytes read from disk per chunk. send's default (64 KiB) moved 64 MiB over loopback at about a
 * quarter of the speed of 1 MiB chunks on this machine (243 MB/s vs 1.06 GB/s, bench/http); bigger
 * chunks gained nothing more.
 */
export const FILE_CHUNK_BYTES = 1024 * 1024;

/**
 * Large chunks in use at once, across every download of a server (32 MiB). Each download held two
 * of its own before: 300 clients that stopped reading held 600 MiB, and a boot storm on a slow
 * link as much, so memory grew with the number of downloaders.
 */
export const POOLED_CHUNKS = 32;

/**
 * What a download reads through while the pool is all lent, two of them per download: the size
 * of a read stream's chunks, so past the pool memory grows as a stream-piping server's does.
 */
export const SMALL_CHUNK_BYTES = 64 * 1024;

/** How long the pool keeps its free chunks once no download holds one. */
const POOL_IDLE_RELEASE_MS = 10_000;

/**
 * The large chunks downloads share. A chunk is lent for one read and its write, and given back
 * when the write has left for the kernel. Free chunks are kept for the next read (a download's
 * two writes often both finish before its next read, so none is lent for a moment) and let go
 * once none has been lent for `idleReleaseMs`: an idle server holds none.
 */
export class ChunkPool {
  private readonly free: Buffer[] = [];
  private lentChunks = 0;
  private releaseTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly capacity = POOLED_CHUNKS,
    readonly chunkBytes = FILE_CHUNK_BYTES,
    private readonly idleReleaseMs = POOL_IDLE_RELEASE_MS,
  ) {}

  /** Chunks lent and not given back (or forgotten) yet. */
  get lent(): number {
    return this.lentChunks;
  }

  /** A chunk, or undefined when `capacity` of them are lent. */
  take(): Buffer | undefined {
    if (this.lentChunks >= this.capacity) return undefined;
    this.lentChunks += 1;
    clearTimeout(this.releaseTimer);
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.chunkBytes);
  }

  give(chunk: Buffer): void {
    this.free.push(chunk);
    this.returned();
  }

  /**
   * A chunk whose write will never settle (its response never got a socket): it cannot be reused
   * safely while that response may still hold it, so it is left to the garbage collector and
   * another may be made in its place.
   */
  forget(): void {
    this.returned();
  }

  private returned(): void {
    this.lentChunks -= 1;
    if (this.lentChunks > 0) return;
    clearTimeout(this.releaseTimer);
    this.releaseTimer = setTimeout(() => {
      this.free.length = 0;
    }, this.idleReleaseMs).unref();
  }
}

export interface FileRangeResult {
  /**
   * 'file-shortened': the file ended before the range did; 'file-changed': it was written while it
   * was sent, so the bytes sent may mix two versions. The caller must cut the connection for both.
   */
  outcome: 'complete' | 'client-gone' | 'file-shortened' | 'file-changed';
  /** Bytes handed to the kernel for this response. */
  bytesSent: number;
}

/**
 * Opens `path` if it is still the regular file a decision was made on (same device, inode, size and
 * modification time): a file renamed over in between would otherwise send its bytes under the
 * other file's Content-Length and ETag. O_NONBLOCK: opening a FIFO swapped in returns at once
 * instead of blocking a thread of libuv's pool. And the descriptor must be inside `root`: a symlink
 * swapped in after the route's check, at the file or at a directory on its path, is followed by the
 * decision's stat and by the open alike, so only where the descriptor really is tells.
 */
export async function openAsDecided(
  root: string,
  path: string,
  decided: Stats,
): Promise<OpenedFile | 'changed' | 'not-a-file' | 'outside-root'> {
  const file = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  let now: Stats;
  // In nanoseconds, for the checks while it is sent; `decided` (send's stat) has only milliseconds.
  let opened: BigIntStats;
  let outside: boolean;
  try {
    [now, opened, outside] = await Promise.all([
      file.stat(),
      file.stat({ bigint: true }),
      Promise.all([realpath(root), readlink(`/proc/self/fd/${file.fd}`)]).then(([realRoot, real]) =>
        escapesRoot(realRoot, real),
      ),
    ]);
  } catch (error) {
    await file.close();
    throw error;
  }
  if (
    !outside &&
    now.isFile() &&
    now.dev === decided.dev &&
    now.ino === decided.ino &&
    now.size === decided.size &&
    now.mtimeMs === decided.mtimeMs
  )
    return { file, path, opened };
  await file.close();
  return outside ? 'outside-root' : now.isFile() ? 'changed' : 'not-a-file';
}

/** A file opened for a download, with what its reads are checked against (assertUnchanged). */
export interface OpenedFile {
  file: FileHandle;
  path: string;
  opened: BigIntStats;
}

/**
 * The controller whose abort ends every transfer of a server (its close). Each transfer listens to
 * its signal while in progress and removes its listener when it ends: the listeners are the
 * downloads in progress, not a leak, and Node's leak warning at 11 of them
 * (MaxListenersExceededWarning) would fire whenever eleven machines of a rack download at once.
 */
export function transfersController(): AbortController {
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  return controller;
}

export interface FileRangeRequest {
  file: OpenedFile;
  start: number;
  length: number;
  status: number;
  headers: OutgoingHttpHeaders;
  /** Ends the transfer early, e.g. when the server closes: the signal of a transfersController(). */
  abort: AbortSignal;
  /** The large chunks this server's downloads share. */
  chunks: ChunkPool;
}

/**
 * Writes the head and `length` bytes of `file` from `start` into `response`, and ends it; the file is
 * closed in any case.
 *
 * Why not a read stream piped into the response: a read stream allocates a new chunk for every
 * read, and V8 answers that much fresh off-heap memory with garbage collections whose cost grows
 * with the heap. With 10,000 machines loaded that held the 64 MiB asset at about a third of nginx's
 * rate (bench/http). Here a download reads into one buffer while the other is written, each
 * buffer a large chunk lent by `chunks` or, with the pool all lent, the download's own small one;
 * a buffer is read into again, or given back, only once its last write has left for the kernel
 * (the write's callback), so a byte still queued on the socket is never overwritten.
 *
 * A file that ends early (truncated while sent) is 'file-shortened': the caller must then destroy the
 * response, so the client sees a body shorter than its Content-Length rather than a silent short
 * file. The transfer ends early ('client-gone', not an error of the server's) when the client hangs
 * up, the connection fails, or `abort` fires (the server closing). The connection's close counts
 * too: a pipelined response still queued behind another never gets a socket, so neither its own
 * 'close' nor its write callbacks would ever come.
 */
export async function sendFileRange(
  response: ServerResponse,
  { file: opened, start, length, status, headers, abort, chunks }: FileRangeRequest,
): Promise<FileRangeResult> {
  const { file, path } = opened;
  let baseline = opened.opened;
  /** Whether the file was written since it was opened (assertUnchanged), so what was read may mix versions. */
  const changed = async () => {
    try {
      baseline = await assertUnchanged(file, baseline, path);
      return false;
    } catch (error) {
      if (error instanceof FileChangedError) return true;
      throw error;
    }
  };
  let uncheckedBytes = 0;
  const connection = response.req.socket;
  let onGone = () => {};
  const gone = new Promise<'client-gone'>((resolve) => {
    onGone = () => resolve('client-gone');
  });
  // 'close' also follows a normal end; it is only raced against while bytes are still owed.
  response.once('close', onGone);
  connection.once('close', onGone);
  abort.addEventListener('abort', onGone);
  const sent = { bytes: 0 };
  /** Large chunks lent to this download whose write has not settled. */
  const lent = new Set<Buffer>();
  try {
    response.writeHead(status, headers);
    const ownBytes = Math.max(1, Math.min(SMALL_CHUNK_BYTES, length));
    const own: [Buffer | undefined, Buffer | undefined] = [undefined, undefined];
    const ownBuffer = (turn: 0 | 1): Buffer => {
      const made = own[turn] ?? Buffer.allocUnsafeSlow(ownBytes);
      own[turn] = made;
      return made;
    };
    const written: [Promise<WriteOutcome>, Promise<WriteOutcome>] = [
      Promise.resolve('written'),
      Promise.resolve('written'),
    ];
    const end = start + length;
    let position = start;
    const stopped = (outcome: WriteOutcome) =>
      outcome === 'client-gone' || response.destroyed || abort.aborted;
    for (let turn: 0 | 1 = 0; position < end; turn = turn === 0 ? 1 : 0) {
      if (stopped(await Promise.race([written[turn], gone])))
        return { outcome: 'client-gone', bytesSent: sent.bytes };
      // A range that fits a small buffer takes nothing from the pool.
      const pooled = end - position > ownBytes ? chunks.take() : undefined;
      const buffer = pooled ?? ownBuffer(turn);
      if (pooled) lent.add(pooled);
      const { bytesRead } = await file
        .read(buffer, 0, Math.min(buffer.length, end - position), position)
        .catch((error: unknown) => {
          if (pooled) giveBack(pooled);
          throw error;
        });
      if (bytesRead === 0) {
        if (pooled) giveBack(pooled);
        return { outcome: 'file-shortened', bytesSent: sent.bytes };
      }
      position += bytesRead;
      // One fstat per MiB read, as TFTP checks its chunks: cp, dd conv=notrunc or rsync --inplace
      // over an asset being sent left every read full-length, and the download "complete".
      uncheckedBytes += bytesRead;
      if (uncheckedBytes >= FILE_CHUNK_BYTES) {
        uncheckedBytes = 0;
        if (await changed()) {
          if (pooled) giveBack(pooled);
          return { outcome: 'file-changed', bytesSent: sent.bytes };
        }
      }
      const writing = writeChunk(response, buffer.subarray(0, bytesRead), sent);
      if (pooled) void writing.then(() => giveBack(pooled));
      written[turn] = writing;
    }
    const lastWrites = Promise.all(written).then((outcomes) =>
      outcomes.includes('client-gone') ? 'client-gone' : 'written',
    );
    if (stopped(await Promise.race([lastWrites, gone])))
      return { outcome: 'client-gone', bytesSent: sent.bytes };
    // The last reads are checked too: the end is where a short rewrite would otherwise pass.
    if (uncheckedBytes > 0 && (await changed())) return { outcome: 'file-changed', bytesSent: sent.bytes };
    response.end();
    return { outcome: 'complete', bytesSent: sent.bytes };
  } finally {
    response.off('close', onGone);
    connection.off('close', onGone);
    abort.removeEventListener('abort', onGone);
    // A write still pending on a connection that is gone may never settle; its chunk stays its.
    for (let pending = lent.size; pending > 0; pending -= 1) chunks.forget();
    lent.clear();
    await file.close();
  }

  function giveBack(chunk: Buffer): void {
    if (lent.delete(chunk)) chunks.give(chunk);
  }
}

type WriteOutcome = 'written' | 'client-gone';

/**
 * Settles once `chunk` has been handed to the kernel (counted in `sent`), or the connection failed
 * under it (a reset, a broken pipe): either way its buffer is free again.
 */
function writeChunk(response: ServerResponse, chunk: Buffer, sent: { bytes: number }): Promise<WriteOutcome> {
  return new Promise((resolve) => {
    response.write(chunk, (error) => {
      if (error) resolve('client-gone');
      else {
        sent.bytes += chunk.length;
        resolve('written');
      }
    });
  });
}
