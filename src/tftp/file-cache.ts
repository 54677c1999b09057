import { type FileHandle, open, readFile } from 'node:fs/promises';

/**
 * Where DATA payloads come from. Boot programs (ipxe.efi, undionly.kpxe: 0.1–2 MiB) are fetched by
 * every machine of a rack at once, so small files are read once into a cache shared by all
 * transfers and sent as slices without copying. Larger files are read from disk one chunk at a
 * time per transfer. Either way memory is bounded: the cache by `capacityBytes`, a transfer by its
 * read-ahead chunk.
 */

export interface PayloadSource {
  /** A slice for files in the cache; a promise for files read from disk. */
  read(offset: number, length: number): Buffer | Promise<Buffer>;
  close(): void;
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

  async open(file: { path: string; size: number; version: string }): Promise<PayloadSource> {
    if (file.size > this.limits.maxFileBytes) return openFromDisk(file.path, this.limits.readAheadBytes);
    const key = `${file.path}\0${file.version}`;
    let entry = this.entries.get(key);
    if (entry) {
      // Map order is insertion order: re-inserting marks the entry most recently used.
      this.entries.delete(key);
    } else {
      entry = { content: readFile(file.path), bytes: file.size };
      this.cachedBytes += file.size;
    }
    this.entries.set(key, entry);
    this.evictBeyondCapacity();
    try {
      const content = await entry.content;
      return { read: (offset, length) => content.subarray(offset, offset + length), close: () => undefined };
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
async function openFromDisk(path: string, chunkBytes: number): Promise<PayloadSource> {
  const handle: FileHandle = await open(path, 'r');
  let chunk = { offset: 0, data: Buffer.alloc(0) };
  let closed = false;
  return {
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
