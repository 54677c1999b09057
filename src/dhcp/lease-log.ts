import { constants, fstatSync, statSync, write } from 'node:fs';
import { copyFile, type FileHandle, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Mac } from '../boot-plan.js';
import { giveTo, makeParents, syncDirectory } from '../durable-file.js';
import { parseMac } from '../inventory/mac.js';
import { ipToNumber, isIpv4, numberToIp } from '../ipv4.js';
import { stateFileError } from '../state-error.js';
import type { LeaseChange } from './leases.js';

/**
 * Durable lease changes: an append-only file of JSON lines under server.state, written with group
 * commit — changes that arrive while one synced write runs share the next one — so an ACK waits
 * for at most two syncs and a burst of clients costs a few syncs, not one each. The file is opened
 * O_DSYNC: each write returns once its data is on disk (what write + fdatasync did), in one
 * thread-pool round trip instead of two, which is most of what an ACK waits for at moderate load.
 * A kill -9 can tear only the last line, whose change was never acknowledged; replay skips it. A
 * write that fails part-way (disk full, file size limit) fails its whole batch and can leave a torn
 * line mid-file: the next write starts on a new line, so replay skips only that one. At start the
 * file is rewritten from the replayed table (synced write, rename, directory fsync), and again when
 * it has grown well past the live state.
 */

export const LEASE_LOG_FILE = 'dhcp-leases.jsonl';

interface Pending {
  line: string;
  resolve: () => void;
  reject: (error: Error) => void;
}

type StoredChange =
  | { t: 'bind'; mac: string; ip: string; exp: number; host?: string }
  | { t: 'release'; mac: string; ip: string; at: number }
  | { t: 'decline'; ip: string; until: number };

export class LeaseLog {
  private pending: Pending[] = [];
  private flushing: Promise<void> | undefined;
  private linesSinceCompaction = 0;
  private closed = false;
  /** The last write failed, so the file may end in the middle of a line. */
  private endsMidLine = false;
  /** A compaction's rename is not known to be on disk until its directory is synced. */
  private directorySynced = true;
  /** Bytes this log has put in its file (the last rewrite, then the appends since): it holds at least as many. */
  private bytesWritten = 0;
  /** Synced writes so far: with group commit, far fewer than appends under load. */
  syncs = 0;

  private constructor(
    /** The file, for messages that must name it. */
    readonly path: string,
    private handle: FileHandle,
    /** The current table as changes, for compaction. */
    private readonly snapshot: () => LeaseChange[],
    /** A compaction started by the log itself failed; appends go on (to the live file). */
    private readonly onCompactionError: (error: Error) => void,
  ) {}

  /**
   * Reads every durable change (in order) and opens the log for appending. `tornLines` counts the
   * lines that are not a complete, valid change, which are skipped. A kill -9 tears only the last
   * one; any other (a failed write, or a disk that damaged the file) is `damage`, and the file as
   * it was is kept beside it first, since the compaction that follows start rewrites it.
   */
  static async open(
    directory: string,
    snapshot: () => LeaseChange[],
    onCompactionError: (error: Error) => void,
  ): Promise<{ log: LeaseLog; changes: LeaseChange[]; tornLines: number; damage?: LeaseLogDamage }> {
    await makeParents(directory);
    const file = join(directory, LEASE_LOG_FILE);
    let text = '';
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw stateFileError('lease log', file, error);
    }
    const changes: LeaseChange[] = [];
    let tornLines = 0;
    let damagedBytes = 0;
    const lines = text.split('\n');
    lines.forEach((line, index) => {
      if (line === '') return;
      const change = parseLine(line);
      if (change) changes.push(change);
      else {
        tornLines += 1;
        if (index < lines.length - 1) damagedBytes += Buffer.byteLength(line) + 1;
      }
    });
    const damage = damagedBytes > 0 ? await keepDamaged(file, damagedBytes) : undefined;
    const handle = await open(file, APPEND_DSYNC).catch((error: unknown) => {
      throw stateFileError('lease log', file, error);
    });
    return {
      log: new LeaseLog(file, handle, snapshot, onCompactionError),
      changes,
      tornLines,
      ...(damage ? { damage } : {}),
    };
  }

  /** Resolves once the change is on disk (its synced write returned). */
  append(change: LeaseChange): Promise<void> {
    if (this.closed) return Promise.reject(new Error('lease log is closed'));
    return new Promise((resolve, reject) => {
      this.pending.push({ line: `${JSON.stringify(toStored(change))}\n`, resolve, reject });
      this.flushing ??= this.flush();
    });
  }

  /**
   * Rewrites the file as the current table. At start, before the first append; later only from
   * the flush loop, between batches, so no write races the file swap.
   */
  async compact(): Promise<void> {
    const lines = this.snapshot().map((change) => `${JSON.stringify(toStored(change))}\n`);
    const text = lines.join('');
    // A failure before the rename leaves the old file and handle in use: no lease is lost, and a
    // start refused (a full disk) is one line naming the file.
    const rewritten = await this.rewrite(text).catch((error: unknown) => {
      throw stateFileError('cannot rewrite the lease log', this.path, error);
    });
    const previous = this.handle;
    this.handle = rewritten;
    this.endsMidLine = false;
    this.directorySynced = false;
    this.linesSinceCompaction = lines.length;
    this.bytesWritten = Buffer.byteLength(text);
    await previous.close();
    await this.syncDirectory();
  }

  /**
   * `text` in a temporary file that is then renamed over the log; its handle, opened for appends.
   * The rewrite is written through the handle later appends use, so the moment the rename is done
   * that handle is on the live file: nothing after the rename can leave appends going to the
   * replaced one.
   */
  private async rewrite(text: string): Promise<FileHandle> {
    const temporary = `${this.path}.tmp`;
    const rewritten = await open(temporary, APPEND_DSYNC | constants.O_TRUNC);
    try {
      // Made by a start as root (`sudo rackboot serve`), a root-owned log would stop the service
      // user's next start (EACCES opening it): it belongs to whoever owns server.state.
      await giveTo(temporary, await stat(dirname(this.path)));
      await writeFully(rewritten.fd, Buffer.from(text));
      await rename(temporary, this.path);
      return rewritten;
    } catch (error) {
      await rewritten.close();
      // A part-written rewrite would hold the space a full disk needs back.
      await rm(temporary, { force: true });
      throw error;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.flushing;
    await this.handle.close();
  }

  private async flush(): Promise<void> {
    while (this.pending.length > 0) {
      const batch = this.pending;
      this.pending = [];
      const text = (this.endsMidLine ? '\n' : '') + batch.map((entry) => entry.line).join('');
      try {
        // The log deleted, moved away or emptied under the running server (to clear the leases, or
        // a log rotation): the leases acknowledged so far, or from now on, would be gone at the next
        // start and their addresses handed out again. The table, which holds them all, is written
        // where the log belongs.
        if (this.lostUnderUs()) await this.compact();
        // A change appended to a file whose rename may not be on disk would not survive a crash.
        if (!this.directorySynced) await this.syncDirectory();
        const bytes = Buffer.from(text);
        await writeFully(this.handle.fd, bytes);
        this.bytesWritten += bytes.length;
        this.endsMidLine = false;
        this.syncs += 1;
        for (const entry of batch) entry.resolve();
      } catch (error) {
        this.endsMidLine = true;
        for (const entry of batch) entry.reject(error as Error);
      }
      this.linesSinceCompaction += batch.length;
      if (this.linesSinceCompaction > COMPACTION_MIN_LINES && !this.closed) {
        if (this.linesSinceCompaction > 4 * this.snapshot().length) {
          await this.compact().catch((error: Error) => {
            this.linesSinceCompaction = 0;
            this.onCompactionError(error);
          });
        }
      }
    }
    this.flushing = undefined;
  }

  /**
   * Whether what this log wrote may be gone: the file at its path is not the one appends go to, or
   * that one holds fewer bytes than were written to it (truncated).
   */
  private lostUnderUs(): boolean {
    const live = statSync(this.path, { throwIfNoEntry: false });
    const appendedTo = fstatSync(this.handle.fd);
    return live?.ino !== appendedTo.ino || live.dev !== appendedTo.dev || appendedTo.size < this.bytesWritten;
  }

  private async syncDirectory(): Promise<void> {
    await syncDirectory(dirname(this.path));
    this.directorySynced = true;
  }
}

/** Lines skipped from inside the lease log, not only its torn tail: leases may be lost. */
export interface LeaseLogDamage {
  bytes: number;
  /** The file as it was before start rewrote it; undefined when it could not be copied (`copyError`). */
  copy?: string;
  copyError?: Error;
}

async function keepDamaged(file: string, bytes: number): Promise<LeaseLogDamage> {
  const copy = `${file}.damaged-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  try {
    await copyFile(file, copy, constants.COPYFILE_EXCL);
    return { bytes, copy };
  } catch (error) {
    return { bytes, copyError: error as Error };
  }
}

const COMPACTION_MIN_LINES = 100_000;

const APPEND_DSYNC = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_DSYNC;

/**
 * Writes all of `bytes` to an O_DSYNC fd. A write can return short (disk full, file size limit):
 * the rest is written by the next call, which then succeeds or fails with the reason. The callback
 * API on the raw fd: FileHandle's promise wrappers cost more than the write itself at one batch per ACK.
 */
function writeFully(fd: number, bytes: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const writeFrom = (offset: number) => {
      write(fd, bytes, offset, bytes.length - offset, null, (error, written) => {
        if (error) reject(error);
        else if (offset + written < bytes.length) writeFrom(offset + written);
        else resolve();
      });
    };
    writeFrom(0);
  });
}

function toStored(change: LeaseChange): StoredChange {
  switch (change.kind) {
    case 'bind':
      return {
        t: 'bind',
        mac: change.mac,
        ip: numberToIp(change.ip),
        exp: change.expiresAt,
        ...(change.hostname ? { host: change.hostname } : {}),
      };
    case 'release':
      return { t: 'release', mac: change.mac, ip: numberToIp(change.ip), at: change.at };
    case 'decline':
      return { t: 'decline', ip: numberToIp(change.ip), until: change.until };
    case 'offer':
      throw new Error('offers are tentative and never written to the lease log');
  }
}

/** undefined for a line that is not a complete, valid change (a torn write, or damage). */
function parseLine(line: string): LeaseChange | undefined {
  let stored: Partial<Record<string, unknown>>;
  try {
    stored = JSON.parse(line);
  } catch {
    return undefined;
  }
  const mac = typeof stored.mac === 'string' ? (parseMac(stored.mac) as Mac | undefined) : undefined;
  const ip = typeof stored.ip === 'string' && isIpv4(stored.ip) ? ipToNumber(stored.ip) : undefined;
  if (ip === undefined) return undefined;
  if (stored.t === 'bind' && mac && typeof stored.exp === 'number') {
    const hostname = typeof stored.host === 'string' ? stored.host : undefined;
    return { kind: 'bind', mac, ip, expiresAt: stored.exp, hostname };
  }
  if (stored.t === 'release' && mac && typeof stored.at === 'number')
    return { kind: 'release', mac, ip, at: stored.at };
  if (stored.t === 'decline' && typeof stored.until === 'number')
    return { kind: 'decline', ip, until: stored.until };
  return undefined;
}
