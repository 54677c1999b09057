import { type FileHandle, open, readFile } from 'node:fs/promises';
import { toNetascii } from './netascii.js';

/**
 * Where DATA payloads come from. Boot programs (ipxe.efi, undionly.kpxe: 0.1–2 MiB) are fetched by
 * every machine of a rack at once, so small files are read once into a cache shared by all
 * transfers and sent as slices without copying. Larger files are read from disk one chunk at a
 * time per transfer. Either way memory is bounded: the cache by `capacityBytes`, a transfer by its
 * read-ahead chunk.
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

interface CacheEntry {
  content: Promise<Buffer>;
  bytes: number;
}

export interface FileCacheLimits {
  /** Files up to this size are cached whole. */
  maxFileBytes: number;
  /** Total cached bytes; least recently used files are dropped beyond it. */
  capacityBytes: number;
  /** Per transfer of an uncached file: the read-ahead buffer. */
  readAheadBytes: number;
}

export class FileCache {
  private readonly entries = new Map<string, CacheEntry>();
  private cachedBytes = 0;

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
    let entry = this.entries.get(key);
    if (entry) {
      // Map order is insertion order: re-inserting marks the entry most recently used.
      this.entries.delete(key);
    } else {
      const read = readFile(file.path);
      entry = { content: mode === 'netascii' ? read.then(toNetascii) : read, bytes: file.size };
      this.cachedBytes += file.size;
    }
    this.entries.set(key, entry);
    this.evictBeyondCapacity();
    try {
      const content = await entry.content;
      // An encoded file is longer than the size counted up front; count what it holds.
      if (content.length !== entry.bytes && this.entries.get(key) === entry) {
        this.cachedBytes += content.length - entry.bytes;
        entry.bytes = content.length;
        // The growth can take the cache past its capacity: hold the bound now, not at the next open.
        this.evictBeyondCapacity();
      }
      return {
        size: content.length,
        read: (offset, length) => content.subarray(offset, offset + length),
        close: () => undefined,
      };
    } catch (error) {
      this.forget(key);
      throw error;
    }
  }

  get bytes(): number {
    return this.cachedBytes;
  }

  private evictBeyondCapacity(): void {
    for (const key of this.entries.keys()) {
      if (this.cachedBytes <= this.limits.capacityBytes || this.entries.size <= 1) return;
      this.forget(key);
    }
  }

  private forget(key: string): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    this.cachedBytes -= entry.bytes;
  }
}

/**
 * Reads ahead in chunks so most blocks are served synchronously from the transfer's one chunk
 * buffer; a lock-step transfer would otherwise wait for a thread-pool read on every block.
 */
async function openFromDisk(path: string, size: number, chunkBytes: number): Promise<PayloadSource> {
  const handle: FileHandle = await open(path, 'r');
  let chunk = { offset: 0, data: Buffer.alloc(0) };
  let closed = false;
  return {
    size,
    read: (offset, length) => {
      const start = offset - chunk.offset;
      if (start >= 0 && start + length <= chunk.data.length)
        return chunk.data.subarray(start, start + length);
      return (async () => {
        const data = Buffer.allocUnsafe(Math.max(length, chunkBytes));
        const { bytesRead } = await handle.read(data, 0, data.length, offset);
        chunk = { offset, data: data.subarray(0, bytesRead) };
        return chunk.data.subarray(0, Math.min(length, bytesRead));
      })();
    },
    close: () => {
      if (closed) return;
      closed = true;
      handle.close().catch(() => undefined);
    },
  };
}
