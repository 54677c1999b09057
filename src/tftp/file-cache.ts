import { type BigIntStats, constants } from 'node:fs';
import { type FileHandle, open, readlink } from 'node:fs/promises';
import { markUsed } from '../bounded-map.js';
import { assertUnchanged, FileChangedError } from '../file-change.js';
import { toNetascii } from './netascii.js';

/**
 * Where DATA payloads come from. Boot programs (ipxe.efi, undionly.kpxe: 0.1–2 MiB) are fetched by
 * every machine of a rack at once, so small files are read once into a cache shared by all
 * transfers and sent as slices without copying. Larger files are read from disk one chunk at a
 * time per transfer. Either way memory is bounded: file contents by `capacityBytes`, counting those
 * that open transfers still send from, and a transfer reading from disk by its read-ahead chunk.
 */

export interface PayloadSource {
  /** Bytes this transfer sends: the file's size, or its netascii encoding's. */
  size: number;
  /** A slice for files in the cache; a promise for files read from disk. */
  read(offset: number, length: number): Buffer | Promise<Buffer>;
  close(): void;
}

export type TransferMode = 'octet' | 'netascii';

/** A netascii request for a file too large to encode in the cache. */
export class NetasciiTooLargeError extends Error {
  constructor(readonly limitBytes: number) {
    super(`netascii is served for files up to ${limitBytes >> 20} MiB`);
  }
}

/** A netascii request while open transfers hold so much of the cache that its encoding cannot fit. */
export class CacheFullError extends Error {
  constructor() {
    super('no room in the file cache beside the files open transfers hold');
  }
}

interface CacheEntry {
  content: Promise<Buffer>;
  /**
   * Counted against the capacity: until a netascii encoding is done, twice the file's size (the
   * most it can grow to, every byte a line end), then the content's length.
   */
  bytes: number;
  /** Open sources sending from the content: while there are any, eviction would free nothing. */
  users: number;
}

export interface FileCacheLimits {
  /** Files up to this size are cached whole. */
  maxFileBytes: number;
  /**
   * All file contents held in memory, cached or still sent from after eviction would have dropped
   * them; with room for at least one netascii file (2 × maxFileBytes).
   */
  capacityBytes: number;
  /** Per transfer reading from disk: the read-ahead buffer. */
  readAheadBytes: number;
}

/**
 * An entry stays while a transfer sends from it, so every transfer of one file version shares one
 * buffer, and only unused entries are evicted. When the entries in use leave no room for a file,
 * octet transfers read it from disk like a large file; netascii (encoded whole) is refused with
 * CacheFullError.
 */
export class FileCache {
  private readonly entries = new Map<string, CacheEntry>();
  private cachedBytes = 0;
  /** The part of cachedBytes in entries with users: eviction cannot lower it. */
  private inUseBytes = 0;

  constructor(private readonly limits: FileCacheLimits) {}

  /**
   * netascii files are encoded once into the cache, so only files the cache may hold are served in
   * that mode; larger ones reject with NetasciiTooLargeError.
   */
  async open(
    file: { path: string; size: number; version: string },
    mode: TransferMode,
  ): Promise<PayloadSource> {
    if (file.size > this.limits.maxFileBytes) {
      if (mode === 'netascii') throw new NetasciiTooLargeError(this.limits.maxFileBytes);
      return openFromDisk(file.path, file.size, this.limits.readAheadBytes);
    }
    const key = `${file.path}\0${file.version}\0${mode}`;
    const entry = this.entries.get(key) ?? this.admit(file, mode);
    if (entry === undefined) {
      if (mode === 'netascii') throw new CacheFullError();
      return openFromDisk(file.path, file.size, this.limits.readAheadBytes);
    }
    markUsed(this.entries, key, entry);
    this.use(entry);
    let content: Buffer;
    try {
      content = await entry.content;
    } catch (error) {
      this.release(entry);
      this.forget(key, entry);
      throw error;
    }
    if (content.length !== entry.bytes) {
      // The first opener to resume settles the count; the entry is in use, so both totals change.
      this.cachedBytes += content.length - entry.bytes;
      this.inUseBytes += content.length - entry.bytes;
      entry.bytes = content.length;
    }
    let closed = false;
    return {
      size: content.length,
      read: (offset, length) => content.subarray(offset, offset + length),
      close: () => {
        if (closed) return;
        closed = true;
        this.release(entry);
      },
    };
  }

  /** Bytes of file contents in memory: cached, or held by open transfers. */
  get bytes(): number {
    return this.cachedBytes;
  }

  /** A new entry reading the file, if evicting unused entries makes room for it. */
  private admit(file: { path: string; size: number }, mode: TransferMode): CacheEntry | undefined {
    const bytes = mode === 'netascii' ? 2 * file.size : file.size;
    if (!this.makeRoom(bytes)) return undefined;
    this.cachedBytes += bytes;
    const read = readExactly(file.path, file.size);
    return { content: mode === 'netascii' ? read.then(toNetascii) : read, bytes, users: 0 };
  }

  /** Evicts unused entries, least recently used first, until `bytes` more fit; false if they cannot. */
  private makeRoom(bytes: number): boolean {
    if (this.inUseBytes + bytes > this.limits.capacityBytes) return false;
    for (const [key, entry] of this.entries) {
      if (this.cachedBytes + bytes <= this.limits.capacityBytes) break;
      if (entry.users === 0) this.forget(key, entry);
    }
    return true;
  }

  private use(entry: CacheEntry): void {
    entry.users += 1;
    if (entry.users === 1) this.inUseBytes += entry.bytes;
  }

  private release(entry: CacheEntry): void {
    entry.users -= 1;
    if (entry.users === 0) this.inUseBytes -= entry.bytes;
  }

  private forget(key: string, entry: CacheEntry): void {
    if (this.entries.get(key) !== entry) return;
    this.entries.delete(key);
    this.cachedBytes -= entry.bytes;
  }
}

/** The whole file, which must still be `size` bytes long and unchanged while read (FileChangedError otherwise). */
async function readExactly(path: string, size: number): Promise<Buffer> {
  const { handle, opened } = await openSized(path, size);
  try {
    const content = await handle.readFile();
    if (content.length !== size) throw new FileChangedError();
    await assertUnchanged(handle, opened, path);
    return content;
  } finally {
    await handle.close();
  }
}

/**
 * Opened without blocking and checked on the descriptor: a path checked as a regular file may have
 * been swapped for a FIFO since, whose plain open would hold a thread of libuv's pool for good. And
 * `path`, the real path checked to be inside the root, may have had a symlink swapped in since, at
 * the file or at a directory on the way, which open() follows: the descriptor must still be at
 * `path` as the kernel sees it, or a file of the same size outside the root would be served.
 * `opened` is what later reads are checked against (assertUnchanged).
 */
async function openSized(path: string, size: number): Promise<{ handle: FileHandle; opened: BigIntStats }> {
  const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK).catch((error: unknown) => {
    // Removed since its check (rm then cp, not a rename over it): the client's retry finds what is there.
    const code = (error as NodeJS.ErrnoException).code;
    throw code === 'ENOENT' || code === 'ENOTDIR' ? new FileChangedError() : error;
  });
  try {
    const opened = await handle.stat({ bigint: true });
    if (
      opened.isFile() &&
      opened.size === BigInt(size) &&
      (await readlink(`/proc/self/fd/${handle.fd}`)) === path
    )
      return { handle, opened };
  } catch (error) {
    await handle.close();
    throw error;
  }
  await handle.close();
  throw new FileChangedError();
}

/**
 * Reads ahead in chunks so most blocks are served synchronously from the transfer's one chunk
 * buffer; a lock-step transfer would otherwise wait for a thread-pool read on every block. One read
 * at a time: a second ask for the chunk being read shares it (a retransmission while the disk is slow).
 * Every chunk is checked against the file as opened (one fstat per chunk), so a client never gets
 * bytes of two versions.
 */
async function openFromDisk(path: string, size: number, chunkBytes: number): Promise<PayloadSource> {
  const { handle, opened } = await openSized(path, size);
  let baseline = opened;
  let chunk = { offset: 0, data: Buffer.alloc(0) };
  let reading: { offset: number; length: number; done: Promise<Buffer> } | undefined;
  let closed = false;
  return {
    size,
    read: (offset, length) => {
      const start = offset - chunk.offset;
      if (start >= 0 && start + length <= chunk.data.length)
        return chunk.data.subarray(start, start + length);
      if (reading && offset >= reading.offset && offset + length <= reading.offset + reading.length) {
        const pending = reading;
        const start = offset - pending.offset;
        return pending.done.then((data) => data.subarray(start, start + length));
      }
      // The server negotiates windows to fit in a chunk; a longer read still gets all its bytes.
      const readLength = Math.max(length, chunkBytes);
      const done = (async () => {
        const data = Buffer.allocUnsafe(readLength);
        const { bytesRead } = await handle.read(data, 0, readLength, offset);
        // Short of the size the transfer was started with: the file was truncated under it.
        if (bytesRead < Math.min(readLength, size - offset)) throw new FileChangedError();
        baseline = await assertUnchanged(handle, baseline, path);
        chunk = { offset, data: data.subarray(0, bytesRead) };
        return chunk.data;
      })().finally(() => {
        if (reading?.done === done) reading = undefined;
      });
      reading = { offset, length: readLength, done };
      return done.then((data) => data.subarray(0, length));
    },
    close: () => {
      if (closed) return;
      closed = true;
      handle.close().catch(() => undefined);
    },
  };
}
