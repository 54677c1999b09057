import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { type FileHandle, open, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeParents } from '../durable-file.js';

/**
 * HTTP downloads that end either with the verified file under its final name or with nothing
 * there: bytes land in `<file>.part`, resume with Range after an interruption, and are renamed
 * into place only once their sha256 matches.
 */

/** A failure worth one line to the operator; `retryable` when trying again may succeed. */
export class FetchError extends Error {
  constructor(
    message: string,
    readonly retryable = false,
  ) {
    super(message);
    this.name = 'FetchError';
  }
}

/** Ends the message of every failure that discards a .part instead of trusting it again. */
const RESTART_NOTE = 'the .part was removed, so the next attempt downloads from the first byte';

export type DownloadOutcome = 'present' | 'downloaded' | 'resumed';

export interface DownloadEvents {
  /** A transfer starts: `from` bytes are already in the .part file; `total` when the server says. */
  start?(from: number, total: number | undefined): void;
  /** Bytes of the file on disk so far (including what was resumed). */
  progress?(bytes: number): void;
  /** An attempt failed and another follows after `delayMs`. */
  retry?(error: FetchError, delayMs: number): void;
}

export interface DownloadOptions {
  url: string;
  file: string;
  sha256: string;
  events?: DownloadEvents;
  /** Give up on a response that sends nothing for this long. */
  idleTimeoutMs?: number;
  /** Further attempts after a retryable failure; each resumes from the .part file. */
  retries?: number;
  /** Delay before retry n is n × this. */
  retryDelayMs?: number;
  /**
   * A further check (the GPG signature) of a file whose sha256 matched. A new download that fails
   * it is removed before it takes its final name; a file already under its final name is only
   * reported, never removed, since the manifest may name it and machines may be fetching it.
   */
  verify?(file: string): Promise<void>;
}

export async function downloadVerified(
  options: DownloadOptions,
): Promise<{ outcome: DownloadOutcome; bytes: number }> {
  const { file, sha256 } = options;
  const present = await fileSha256(file);
  if (present?.digest === sha256) {
    await recheckInstalled(options);
    return { outcome: 'present', bytes: present.bytes };
  }
  await makeParents(dirname(file));
  const result = await withRetries(() => attemptDownload(options), {
    ...options,
    onRetry: options.events?.retry,
  });
  return { outcome: result.resumed ? 'resumed' : 'downloaded', bytes: result.bytes };
}

export interface RetryPolicy {
  /** Further attempts after a retryable failure. */
  retries?: number;
  /** Delay before retry n is n × this. */
  retryDelayMs?: number;
  onRetry?: (error: FetchError, delayMs: number) => void;
}

/** `attempt`, tried again after a retryable FetchError (a network error, a 5xx) as `policy` allows. */
export async function withRetries<T>(attempt: () => Promise<T>, policy: RetryPolicy): Promise<T> {
  for (let tries = 0; ; tries++) {
    try {
      return await attempt();
    } catch (error) {
      if (!(error instanceof FetchError) || !error.retryable || tries >= (policy.retries ?? 0)) throw error;
      const delayMs = (tries + 1) * (policy.retryDelayMs ?? 2000);
      policy.onRetry?.(error, delayMs);
      await sleep(delayMs);
    }
  }
}

/**
 * Checks a file an earlier run installed. A failure here says as much about the keyring or the
 * kept signature (outdated keyring, damaged .sig, gpgv timing out) as about the file, which matched
 * its sha256 and may be in use, so it stays where it is.
 */
async function recheckInstalled(options: DownloadOptions): Promise<void> {
  try {
    await options.verify?.(options.file);
  } catch (error) {
    throw new FetchError(
      `${(error as Error).message}; ${options.file} was installed by an earlier run and is left in place`,
    );
  }
}

/** sha256 and size of a file, or undefined when there is none. */
async function fileSha256(file: string): Promise<{ digest: string; bytes: number } | undefined> {
  const hash = createHash('sha256');
  const bytes = await hashInto(hash, file);
  return bytes === undefined ? undefined : { digest: hash.digest('hex'), bytes };
}

async function hashInto(hash: Hash, file: string): Promise<number | undefined> {
  let bytes = 0;
  try {
    for await (const chunk of createReadStream(file)) {
      hash.update(chunk as Buffer);
      bytes += (chunk as Buffer).length;
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  return bytes;
}

async function attemptDownload(options: DownloadOptions): Promise<{ resumed: boolean; bytes: number }> {
  const { url, file, events } = options;
  const part = `${file}.part`;
  let hash = createHash('sha256');
  let offset = (await hashInto(hash, part)) ?? 0;
  const response = await request(url, offset, options.idleTimeoutMs ?? 60_000);
  try {
    if (response.status === 416 && offset > 0) {
      // The .part already holds the whole file (interrupted between last byte and rename).
      return { resumed: true, bytes: await finish(hash, part, options, offset, offset) };
    }
    let total: number | undefined;
    if (response.status === 200) {
      // No Range support, or no .part: start from the first byte.
      offset = 0;
      hash = createHash('sha256');
      total = contentLength(response);
    } else if (response.status !== 206) {
      throw httpError(url, response);
    } else {
      const range = contentRange(response);
      if (range === undefined || !coversRestFrom(range, offset)) {
        await rm(part, { force: true });
        const answered = response.headers.get('content-range') ?? 'no Content-Range';
        throw new FetchError(
          `GET ${url}: asked for bytes ${offset}- but got ${answered}; ${RESTART_NOTE}`,
          true,
        );
      }
      const length = contentLength(response);
      total = range.total ?? (length === undefined ? undefined : offset + length);
    }
    events?.start?.(offset, total);
    const bytes = await receive(response, part, offset, hash, events);
    // A body that ended cleanly but early (a chunked response cut by a proxy) is an interrupted
    // download to resume, not a wrong checksum to throw away.
    if (total !== undefined && bytes < total) {
      throw new FetchError(
        `download from ${safeHost(url)} interrupted: the body ended after ${bytes} of ${total} bytes; the .part is kept for a resume (${url})`,
        true,
      );
    }
    return { resumed: offset > 0, bytes: await finish(hash, part, options, bytes, offset) };
  } finally {
    response.abort();
  }
}

interface OpenResponse {
  status: number;
  statusText: string;
  headers: Headers;
  body: AsyncIterable<Uint8Array> | null;
  abort(): void;
}

async function request(url: string, offset: number, idleTimeoutMs: number): Promise<OpenResponse> {
  if (!/^https?:\/\/[^/]/i.test(url) || !URL.canParse(url))
    throw new FetchError(`not an http(s) URL: ${url}`);
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => controller.abort(new IdleTimeout(idleTimeoutMs)), idleTimeoutMs);
  };
  arm();
  let response: Response;
  try {
    response = await fetch(url, {
      headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
      signal: controller.signal,
    });
  } catch (error) {
    clearTimeout(timer);
    throw networkError(url, error);
  }
  const source = response.body;
  return {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
    body: source && {
      async *[Symbol.asyncIterator]() {
        try {
          for await (const chunk of source) {
            arm();
            yield chunk;
          }
        } catch (error) {
          throw networkError(url, error);
        } finally {
          clearTimeout(timer);
        }
      },
    },
    abort: () => {
      clearTimeout(timer);
      if (!controller.signal.aborted) controller.abort();
    },
  };
}

class IdleTimeout extends Error {
  constructor(readonly ms: number) {
    super(`no data for ${ms / 1000}s`);
  }
}

/** Small documents (stream metadata, signatures) read whole; same error wording as downloads. */
export async function fetchBytes(url: string, idleTimeoutMs = 60_000, maxBytes = 16 << 20): Promise<Buffer> {
  const response = await request(url, 0, idleTimeoutMs);
  try {
    if (response.status !== 200) throw httpError(url, response);
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of response.body ?? []) {
      size += chunk.length;
      if (size > maxBytes) throw new FetchError(`GET ${url}: larger than ${maxBytes} bytes`);
      chunks.push(Buffer.from(chunk));
    }
    return Buffer.concat(chunks);
  } finally {
    response.abort();
  }
}

async function receive(
  response: OpenResponse,
  part: string,
  offset: number,
  hash: Hash,
  events: DownloadEvents | undefined,
): Promise<number> {
  let handle: FileHandle;
  try {
    handle = await open(part, offset > 0 ? 'a' : 'w');
  } catch (error) {
    throw diskError(part, error, offset);
  }
  let bytes = offset;
  // Delayed allocation (ext4, XFS, NFS) reports a full disk at fsync or close, not at write.
  const onDisk = <T>(operation: Promise<T>): Promise<T> =>
    operation.catch((error: unknown) => {
      throw diskError(part, error, bytes);
    });
  try {
    for await (const chunk of response.body ?? []) {
      await onDisk(writeAll(handle, chunk));
      hash.update(chunk);
      bytes += chunk.length;
      events?.progress?.(bytes);
    }
    await onDisk(handle.sync());
    // The digest is of the bytes received; the file must hold exactly those before it is trusted.
    const { size } = await onDisk(handle.stat());
    if (size !== bytes) throw diskError(part, new Error(`the file holds ${size} bytes, not ${bytes}`), bytes);
  } finally {
    await onDisk(handle.close());
  }
  return bytes;
}

/**
 * One write(2) may take only part of a chunk without an error (a disk that is nearly full):
 * the rest is written again, and a disk still full then fails with ENOSPC.
 */
async function writeAll(handle: FileHandle, chunk: Uint8Array): Promise<void> {
  for (let written = 0; written < chunk.length; ) {
    const { bytesWritten } = await handle.write(chunk, written, chunk.length - written);
    if (bytesWritten === 0) throw Object.assign(new Error('no byte written'), { code: 'ENOSPC' });
    written += bytesWritten;
  }
}

/**
 * Checks digest and signature, then renames into place; a failure leaves neither file nor .part.
 * `resumedFrom` is how many bytes came from an earlier attempt's .part.
 */
async function finish(
  hash: Hash,
  part: string,
  options: DownloadOptions,
  bytes: number,
  resumedFrom: number,
): Promise<number> {
  const digest = hash.digest('hex');
  if (digest !== options.sha256) {
    await unlink(part).catch(() => undefined);
    if (resumedFrom > 0) {
      // The kept bytes are the likelier culprit (a crash can leave zeros at the end of a .part), so
      // one attempt from the first byte, which no longer depends on them, settles it.
      throw new FetchError(
        `checksum mismatch for ${options.file} after resuming at byte ${resumedFrom}, so the bytes kept ` +
          `from before were probably damaged; ${RESTART_NOTE}`,
        true,
      );
    }
    throw new FetchError(
      `checksum mismatch for ${options.file}: expected sha256 ${options.sha256}, got ${digest}; the download was removed`,
    );
  }
  try {
    await options.verify?.(part);
  } catch (error) {
    await unlink(part).catch(() => undefined);
    throw error;
  }
  await rename(part, options.file);
  return bytes;
}

interface ContentRange {
  start: number;
  end: number;
  /** undefined for `*`: the server does not know the full length. */
  total: number | undefined;
}

/** `Content-Range: bytes START-END/TOTAL` of a 206 (RFC 9110 §14.4). */
function contentRange(response: OpenResponse): ContentRange | undefined {
  const match = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(response.headers.get('content-range') ?? '');
  if (!match?.[1] || !match[2] || !match[3]) return undefined;
  return {
    start: Number(match[1]),
    end: Number(match[2]),
    total: match[3] === '*' ? undefined : Number(match[3]),
  };
}

/**
 * Whether a 206 answers `Range: bytes=OFFSET-`: it starts at OFFSET and runs to the last byte. A
 * server may legally send less; appended to the .part, that would only fail the checksum later.
 */
function coversRestFrom(range: ContentRange, offset: number): boolean {
  if (range.start !== offset || range.end < range.start) return false;
  return range.total === undefined || range.end === range.total - 1;
}

function contentLength(response: OpenResponse): number | undefined {
  const length = response.headers.get('content-length');
  return length === null ? undefined : Number(length);
}

function httpError(url: string, response: OpenResponse): FetchError {
  return new FetchError(
    `GET ${url}: HTTP ${response.status} ${response.statusText}`.trimEnd(),
    response.status >= 500 || response.status === 429,
  );
}

function networkError(url: string, error: unknown): FetchError {
  if (error instanceof FetchError) return error;
  const host = safeHost(url);
  const reason = error instanceof Error ? error : new Error(String(error));
  if (reason instanceof IdleTimeout || reason.cause instanceof IdleTimeout) {
    const idle = reason instanceof IdleTimeout ? reason : (reason.cause as IdleTimeout);
    return new FetchError(`${host} sent ${idle.message} (${url})`, true);
  }
  const cause = reason.cause as NodeJS.ErrnoException | undefined;
  // The server answered, every time with a redirect: no retry ends the loop.
  if (cause?.message === 'redirect count exceeded') {
    return new FetchError(`GET ${url}: too many redirects (more than 20)`);
  }
  const code = cause?.code ?? (reason as NodeJS.ErrnoException).code;
  if (reason.message === 'fetch failed' && cause) {
    return new FetchError(`cannot reach ${host}: ${code ?? cause.message} (${url})`, true);
  }
  // undici ends a cut body with TypeError('terminated'), the socket's reason in `cause`.
  return new FetchError(
    `download from ${host} interrupted: ${cause?.message ?? reason.message} (${url})`,
    true,
  );
}

function diskError(part: string, error: unknown, written: number): FetchError {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new FetchError(
      `disk full writing ${part} after ${written} bytes; free space and run again to resume`,
    );
  }
  return new FetchError(`cannot write ${part}: ${(error as Error).message}`);
}

function safeHost(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

/** Temp file in the same directory, then rename: readers see the old content or the new, never half. */
export async function writeAtomically(file: string, content: string | Buffer): Promise<void> {
  const temporary = `${file}.${process.pid}.tmp`;
  try {
    await writeFile(temporary, content);
    await rename(temporary, file);
  } catch (error) {
    await rm(temporary, { force: true });
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC') throw new FetchError(`disk full writing ${file}`);
    throw new FetchError(`cannot write ${file}: ${(error as Error).message}`);
  }
}
