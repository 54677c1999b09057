import type { RemoteInfo, Socket } from 'node:dgram';
import { networkInterfaces } from 'node:os';
import { performance } from 'node:perf_hooks';
import { FileChangedError } from '../file-change.js';
import type { Mac } from '../inventory/mac.js';
import type { Config } from '../inventory/schema.js';
import type { RecordEvent } from '../lifecycle/events.js';
import type { Logger } from '../log.js';
import { refusalLimiter, tokenBucket, tokenBuckets } from '../rate-limit.js';
import { bindUdp, createUdp4Socket, trySend } from '../udp.js';
import {
  CacheFullError,
  FileCache,
  NetasciiTooLargeError,
  type PayloadSource,
  type TransferMode,
} from './file-cache.js';
import {
  decodeClientPacket,
  decodeRequest,
  ErrorCode,
  encodeDataHeader,
  encodeError,
  encodeOack,
  isErrorPacket,
  type Negotiated,
  negotiateOptions,
} from './packet.js';
import { normalizeRequestedName, refusalMessage, resolveServedFile } from './paths.js';
import {
  acknowledgedBytes,
  blockRange,
  expireTimer,
  type RetransmitTiming,
  receiveAck,
  receiveClientError,
  type Step,
  startTransfer,
  type TransferOutcome,
  type TransferParameters,
  type TransferState,
  windowSent,
} from './transfer.js';

export interface TftpServerDeps {
  /**
   * Read per request: the server.tftp limits follow hot reloads; server.assets, port and listen are
   * start-time settings, which the config source keeps at their running values until a restart.
   */
  config: () => Config;
  record: RecordEvent;
  logger: Logger;
  macForIp: (ip: string) => Mac | undefined;
  /** How long a window may wait for the disk before its transfer is aborted (DISK_READ_LIMIT_MS; tests shorten it). */
  diskReadLimitMs?: number;
}

export type TftpOutcome = TransferOutcome | 'refused';

/** What the server counts itself; stats() adds the two gauges, read from the live state. */
type TftpCounters = Omit<TftpStats, 'activeTransfers' | 'cacheBytes'>;

/** Counters for /metrics; all totals since start except `activeTransfers` and `cacheBytes`. */
export interface TftpStats {
  activeTransfers: number;
  /** By outcome; `refused` counts every refusal, recorded or suppressed. */
  transfers: Record<TftpOutcome, number>;
  /**
   * Refusals neither recorded as events nor logged: repeats of a (client IP, file, reason) within
   * 10 s of its last record, and refusals over the per-client or global record budget.
   */
  refusalsSuppressed: number;
  /** Payload bytes acknowledged by clients. */
  bytesSent: number;
  packetsSent: number;
  /** DATA and OACK packets sent again: on a timeout, and blocks resent after a partial ACK. */
  retransmittedPackets: number;
  /** File contents in memory: cached, or held by open transfers. */
  cacheBytes: number;
  errors: {
    /** Undecodable packets on the request port or a transfer port. */
    malformed: number;
    /**
     * Packets from a foreign transfer ID, answered with ERROR 5 (RFC 1350 §4) within the rate limit
     * for unvalidated sources; an ERROR among them is never answered.
     */
    foreignTid: number;
    /** Datagrams from UDP source port 0, dropped unanswered: no reply can be sent to port 0. */
    sourcePortZero: number;
    /**
     * Requests dropped because max_transfers or max_transfers_per_client was reached, or (netascii)
     * the file cache had no room left beside the files open transfers hold.
     */
    busy: number;
    /** Duplicate ACKs, ignored (never answered with a resend). */
    duplicateAcks: number;
    /** Socket or disk errors that ended a transfer or a send. */
    io: number;
  };
}

export interface TftpServer {
  close(): Promise<void>;
  address(): { port: number };
  stats(): TftpStats;
}

/** See transfer.ts RetransmitTiming; a boot LAN round trip is well under a millisecond. */
const TIMING: RetransmitTiming = {
  initialTimeoutMs: 500,
  minTimeoutMs: 20,
  maxTimeoutMs: 5000,
  minStallMs: 3000,
};
/**
 * A window waiting this long for its disk read ends its transfer with ERROR 0 "Read error": the
 * read is hung (a dead NFS server, a failing disk), the client gave up long ago (PXE ROMs within
 * about a minute), and the transfer would otherwise hold its place under max_transfers and
 * max_transfers_per_client for ever. A working disk, even a busy one, reads 256 KiB far sooner.
 */
const DISK_READ_LIMIT_MS = 30_000;
/** Boot programs are small; the 40 MiB-class images (kernels, initrds) stream from disk. */
const CACHE_LIMITS = { maxFileBytes: 16 << 20, capacityBytes: 128 << 20, readAheadBytes: 256 << 10 };
/** ERROR replies to unvalidated sources are rate-limited so the server is a poor reflector. */
const ERROR_REPLIES_PER_SECOND = 200;
/**
 * The most of that budget one source IP takes, so a flood from one host (from any number of ports)
 * leaves the rest for the others. Buckets are kept for this many IPs, least recently used dropped.
 */
const ERROR_REPLIES_PER_SECOND_PER_CLIENT = 50;
const ERROR_REPLY_CLIENTS = 1024;
/**
 * A refusal is recorded (and logged) once per (client IP, file, reason) per interval: a client, or a
 * flood, asking again and again for a missing file would otherwise push real machines' history out
 * of the event store. The memo holds at most REFUSAL_MEMO_KEYS keys of up to a request's 1 KiB each,
 * the ones recorded longest ago dropped first, so a full memo never silences a new client.
 */
const REFUSAL_RECORD_INTERVAL_MS = 10_000;
const REFUSAL_MEMO_KEYS = 1024;
/**
 * Refusals recorded at most, per client IP and for all: one host asking for ever new names (or a
 * flood from spoofed sources) gets past the memo, so the records themselves are budgeted. At the
 * global rate the default retention of 200,000 events lasts over 10 hours of flood.
 */
const REFUSAL_RECORDS_PER_CLIENT = { perSecond: 0.5, burst: 20 };
const REFUSAL_RECORDS = { perSecond: 5, burst: 50 };

export async function startTftpServer(deps: TftpServerDeps): Promise<TftpServer> {
  const { port, listen } = deps.config().server.tftp;
  const replyAddress = transferAddress(listen, deps.config().server.address);
  const cache = new FileCache(CACHE_LIMITS);
  /** By client IP:port: its transfer, or its request while the file is resolved and opened. */
  const active = new Map<string, ActiveTransfer | PendingRequest>();
  const perClient = new Map<string, number>();
  const stats: TftpCounters = {
    transfers: { complete: 0, aborted: 0, timeout: 0, refused: 0, probe: 0 },
    bytesSent: 0,
    packetsSent: 0,
    retransmittedPackets: 0,
    refusalsSuppressed: 0,
    errors: { malformed: 0, foreignTid: 0, sourcePortZero: 0, busy: 0, duplicateAcks: 0, io: 0 },
  };
  const errorReplies = tokenBucket({ perSecond: ERROR_REPLIES_PER_SECOND });
  const clientErrorReplies = tokenBuckets(
    { perSecond: ERROR_REPLIES_PER_SECOND_PER_CLIENT },
    ERROR_REPLY_CLIENTS,
  );
  const refusalsToRecord = refusalLimiter(REFUSAL_RECORD_INTERVAL_MS, REFUSAL_MEMO_KEYS);
  const clientRefusalRecords = tokenBuckets(REFUSAL_RECORDS_PER_CLIENT, ERROR_REPLY_CLIENTS);
  const refusalRecords = tokenBucket(REFUSAL_RECORDS);
  let closed = false;
  const requestSocket = createUdp4Socket();

  const send: SendPacket = (socket, message, to) => {
    const error = trySend(socket, message, to.port, to.address);
    if (error === undefined) return;
    stats.errors.io += 1;
    deps.logger.warn({ err: error, client: to.address }, 'tftp send failed');
  };

  /**
   * Every ERROR the server sends. Any datagram can claim any source, so replies to a source nothing
   * has validated (a request, a stranger on a transfer port) share one budget per second: the
   * server stays a poor reflector. One IP's share of it is checked first, so a source over its share
   * takes nothing from the others. A transfer's own client is answered without either.
   */
  const sendError: SendError = (socket, to, code, message, source) => {
    if (source === 'unvalidated') {
      const now = performance.now();
      if (!clientErrorReplies(to.address, now) || !errorReplies(now)) return;
    }
    send(socket, encodeError(code, message), to);
  };

  /** dgram cannot send to port 0, so nothing from there can be answered; counted, then ignored. */
  const fromPortZero = (from: RemoteInfo): boolean => {
    if (from.port !== 0) return false;
    stats.errors.sourcePortZero += 1;
    return true;
  };

  /**
   * RFC 1350 §4: a packet from anyone but a transfer's client gets ERROR 5 and the transfer goes
   * on. An ERROR is never answered (RFC 1350 §7): two sockets answering each other's ERROR 5 would
   * never stop.
   */
  const answerStranger = (socket: Socket, message: Buffer, from: RemoteInfo) => {
    if (fromPortZero(from)) return;
    stats.errors.foreignTid += 1;
    if (isErrorPacket(message)) return;
    sendError(socket, from, ErrorCode.unknownTransferId, 'Unknown transfer ID', 'unvalidated');
  };

  const recordTransfer = (peer: RemoteInfo, detail: Record<string, unknown> & { outcome: TftpOutcome }) => {
    stats.transfers[detail.outcome] += 1;
    deps
      .record({
        mac: deps.macForIp(peer.address),
        ip: peer.address,
        source: 'tftp',
        type: 'tftp-transfer',
        detail,
      })
      .catch((error: unknown) => deps.logger.error({ err: error }, 'recording a tftp-transfer event failed'));
  };

  const refuse = (peer: RemoteInfo, file: string, code: ErrorCode, message: string, reason: string) => {
    // A refusal can be decided after close() (its file was still resolving); it is recorded all the same.
    if (!closed) sendError(requestSocket, peer, code, message, 'unvalidated');
    const now = performance.now();
    const leftOut = refusalsToRecord(
      `${peer.address}\0${file}\0${reason}`,
      now,
      () => clientRefusalRecords(peer.address, now) && refusalRecords(now),
    );
    if (leftOut === undefined) {
      stats.transfers.refused += 1;
      stats.refusalsSuppressed += 1;
      return;
    }
    deps.logger.info({ client: peer.address, request: { file }, reason, ...leftOut }, 'tftp request refused');
    recordTransfer(peer, { file, outcome: 'refused', reason, bytes: 0, durationMs: 0, ...leftOut });
  };

  /**
   * Frees the slot `owner` holds; a no-op once another request from that IP:port has taken it over
   * (superseded), so a request that finishes resolving after that cannot free the newer one's slot.
   */
  const release = (key: string, client: string, owner: ActiveTransfer | PendingRequest) => {
    if (active.get(key) !== owner) return;
    active.delete(key);
    const count = (perClient.get(client) ?? 1) - 1;
    if (count <= 0) perClient.delete(client);
    else perClient.set(client, count);
  };

  const handleRequest = async (message: Buffer, peer: RemoteInfo) => {
    const decoded = decodeRequest(message);
    if (!decoded.ok) {
      stats.errors.malformed += 1;
      deps.logger.debug({ client: peer.address, reason: decoded.reason }, 'malformed tftp request');
      // An ERROR, however malformed, is never answered (RFC 1350 §7), here as on the transfer ports.
      if (decoded.reason !== 'not-a-request' && !isErrorPacket(message)) {
        sendError(requestSocket, peer, ErrorCode.illegalOperation, 'Malformed request', 'unvalidated');
      }
      return;
    }
    const { request } = decoded;
    const key = `${peer.address}:${peer.port}`;
    const running = active.get(key);
    if (running !== undefined) {
      // A client that retransmits its RRQ is already being served from the transfer's own socket.
      if (running.isResendOf(message)) return;
      // Anything else from that IP:port is a new request: its client moved on (a ROM reset onto the
      // same port, tftp -R, a size probe left unanswered), and the old transfer's OACK or DATA,
      // still resent to that port, would answer it with the other file. No ERROR: before its own
      // transfer answers, the client would take one from the old port as the answer to its request.
      // A request still resolving its file is dropped: it sees its slot gone and sends nothing.
      if (running instanceof ActiveTransfer) running.end('aborted', 'superseded');
      else release(key, peer.address, running);
    }
    if (request.kind === 'write') {
      return refuse(peer, request.filename, ErrorCode.accessViolation, 'Read-only server', 'write-request');
    }
    // Any mode but these two means the name was cut at an embedded NUL and the rest misread as a
    // mode: refuse it.
    const mode = request.mode;
    if (mode !== 'octet' && mode !== 'netascii') {
      return refuse(peer, request.filename, ErrorCode.accessViolation, 'Access violation', 'unknown-mode');
    }
    const config = deps.config();
    const limits = config.server.tftp;
    const clientCount = perClient.get(peer.address) ?? 0;
    if (active.size >= limits.max_transfers || clientCount >= limits.max_transfers_per_client) {
      // Silence rather than an ERROR: firmware retries its RRQ, an ERROR would end its boot attempt.
      stats.errors.busy += 1;
      deps.logger.debug(
        { client: peer.address, active: active.size, clientCount },
        'tftp busy, request dropped',
      );
      return;
    }
    const pending = new PendingRequest(message);
    active.set(key, pending);
    perClient.set(peer.address, clientCount + 1);
    const superseded = () => active.get(key) !== pending;

    const name = normalizeRequestedName(request.filename);
    if (!name.ok) {
      release(key, peer.address, pending);
      return refuse(peer, request.filename, name.code, refusalMessage(name.code), name.reason);
    }
    const file = await resolveServedFile(config.server.assets, name.relative);
    if (superseded()) return;
    if (!file.ok) {
      release(key, peer.address, pending);
      return refuse(peer, name.relative, file.code, refusalMessage(file.code), file.reason);
    }
    let source: PayloadSource;
    try {
      source = await cache.open(file, mode);
    } catch (error) {
      if (superseded()) return;
      release(key, peer.address, pending);
      if (error instanceof CacheFullError) {
        // As for the transfer limits: silence, and the client's retried RRQ finds room later.
        stats.errors.busy += 1;
        deps.logger.debug({ client: peer.address, request: { file: name.relative } }, 'tftp cache full');
        return;
      }
      if (error instanceof FileChangedError) {
        return refuse(
          peer,
          name.relative,
          ErrorCode.notDefined,
          'File changed while opening; retry',
          'file-changed',
        );
      }
      if (error instanceof NetasciiTooLargeError) {
        const message = `${error.message}; ask for octet (binary) mode`;
        return refuse(peer, name.relative, ErrorCode.notDefined, message, 'netascii-too-large');
      }
      stats.errors.io += 1;
      // Logged as a refusal, once per 10 s: a warning per request would let a client asking again
      // and again for a 0600 kernel flood the log.
      const code = (error as NodeJS.ErrnoException).code ?? 'unknown';
      return refuse(peer, name.relative, ErrorCode.accessViolation, 'Access violation', `unreadable:${code}`);
    }
    if (closed || superseded()) {
      // The server closed, or the client sent another request, while this one was opening its file.
      source.close();
      release(key, peer.address, pending);
      return;
    }
    const negotiated = negotiateOptions(request.options, source.size, {
      maxBlksize: limits.max_blksize,
      maxWindowsize: limits.max_windowsize,
      // A window is read from disk in one piece: no larger than the read-ahead the docs promise.
      maxWindowBytes: CACHE_LIMITS.readAheadBytes,
    });
    const timing: RetransmitTiming =
      negotiated.timeoutSeconds === undefined
        ? TIMING
        : { ...TIMING, maxTimeoutMs: negotiated.timeoutSeconds * 1000 };
    const transfer = new ActiveTransfer({
      peer,
      request: message,
      file: name.relative,
      mode,
      negotiated,
      source,
      listen: replyAddress,
      startedAt: performance.now(),
      stats,
      logger: deps.logger,
      diskReadLimitMs: deps.diskReadLimitMs ?? DISK_READ_LIMIT_MS,
      send,
      sendError,
      answerStranger,
      onEnd: (outcome, detail) => {
        release(key, peer.address, transfer);
        recordTransfer(peer, { file: name.relative, outcome, ...detail });
      },
    });
    active.set(key, transfer);
    try {
      await transfer.start({
        fileSize: source.size,
        blksize: negotiated.blksize,
        windowsize: negotiated.windowsize,
        sendOack: negotiated.oack !== undefined,
        maxRetries: limits.retries,
        timing,
      });
    } catch (error) {
      stats.errors.io += 1;
      deps.logger.warn({ err: error }, 'tftp transfer socket failed');
      transfer.end('aborted', 'socket');
    }
  };

  requestSocket.on('message', (message, peer) => {
    if (fromPortZero(peer)) return;
    handleRequest(message, peer).catch((error: unknown) => {
      stats.errors.io += 1;
      deps.logger.error({ err: error, client: peer.address }, 'tftp request failed');
    });
  });

  await bindUdp(requestSocket, listen, port).catch((error: unknown) => {
    requestSocket.close();
    throw error;
  });
  // Only once bound: a failed bind is the caller's to report (serve prints one line naming the
  // setting), not also a warning with a stack trace.
  requestSocket.on('error', (error) => {
    stats.errors.io += 1;
    deps.logger.warn({ err: error }, 'tftp request socket error');
  });
  deps.logger.info({ port: requestSocket.address().port, address: listen }, 'tftp listening');

  return {
    address: () => ({ port: requestSocket.address().port }),
    stats: () => ({
      ...stats,
      activeTransfers: active.size,
      cacheBytes: cache.bytes,
      transfers: { ...stats.transfers },
      errors: { ...stats.errors },
    }),
    close: async () => {
      closed = true;
      for (const transfer of active.values())
        if (transfer instanceof ActiveTransfer) transfer.abort('Server shutting down', 'shutdown');
      await new Promise<void>((resolve) => requestSocket.close(() => resolve()));
    },
  };
}

/**
 * Where transfer sockets bind. Bound to the wildcard, the kernel picks each reply's source address,
 * which on a host with several addresses need not be the one the client asked: EDK2 accepts replies
 * only from the server it asked. Clients ask server.address (DHCP's next-server), so with a wildcard
 * `listen` transfers reply from it when it is this host's. (dgram cannot tell which address a request
 * came to.)
 */
function transferAddress(listen: string, serverAddress: string): string {
  if (listen !== '0.0.0.0') return listen;
  const local = Object.values(networkInterfaces()).some((addresses) =>
    addresses?.some((address) => address.family === 'IPv4' && address.address === serverAddress),
  );
  return local ? serverAddress : listen;
}

/**
 * How a transfer the client ended with an ERROR is recorded: its code and its text, which says why
 * (EDK2's "User aborted the transfer", a client's "Disk full"). The text is the client's: printable
 * ASCII only, and clipped, as it goes into the history and the log.
 */
function clientErrorReason(code: number, message: string): string {
  const text = message.replace(/[^\x20-\x7e]/g, '?').slice(0, CLIENT_ERROR_TEXT_CHARS);
  return text === '' ? `client error ${code}` : `client error ${code}: ${text}`;
}
const CLIENT_ERROR_TEXT_CHARS = 100;

/** A request whose file is still being resolved and opened: no transfer, nothing sent yet. */
class PendingRequest {
  constructor(private readonly request: Buffer) {}

  isResendOf(request: Buffer): boolean {
    return request.equals(this.request);
  }
}

interface ActiveTransferOptions {
  peer: RemoteInfo;
  /** The request that started it, as received: a byte-identical one before any answer is a resend. */
  request: Buffer;
  file: string;
  mode: TransferMode;
  negotiated: Negotiated;
  source: PayloadSource;
  /** The address transfer sockets bind to (transferAddress). */
  listen: string;
  startedAt: number;
  stats: TftpCounters;
  logger: Logger;
  diskReadLimitMs: number;
  send: SendPacket;
  sendError: SendError;
  answerStranger: (socket: Socket, message: Buffer, from: RemoteInfo) => void;
  onEnd: (outcome: TransferOutcome, detail: Record<string, unknown>) => void;
}

type Destination = Pick<RemoteInfo, 'address' | 'port'>;
/** Sends without ever throwing: a failure is counted and logged. */
type SendPacket = (socket: Socket, message: Buffer | Buffer[], to: Destination) => void;
type SendError = (
  socket: Socket,
  to: Destination,
  code: ErrorCode,
  message: string,
  source: 'unvalidated' | 'client',
) => void;

/** The socket shell of one transfer: its own port (its TID), its timer, and transfer.ts deciding. */
class ActiveTransfer {
  private state: TransferState | undefined;
  private readonly socket: Socket;
  private timer: NodeJS.Timeout | undefined;
  private timerFiresAt = Number.POSITIVE_INFINITY;
  /** Disk reads whose window has not gone out yet, and since when one has been pending. */
  private readsPending = 0;
  private readingSince = Number.POSITIVE_INFINITY;
  private ended = false;
  /** Encoded on first send, reused when the timer resends it. */
  private oack: Buffer | undefined;
  /** The client sent something to the transfer's port: it has its answer, so a request is not a resend. */
  private heardFromClient = false;

  constructor(private readonly options: ActiveTransferOptions) {
    this.socket = createUdp4Socket();
    this.socket.on('error', (error) => {
      options.stats.errors.io += 1;
      options.logger.debug({ err: error, client: options.peer.address }, 'tftp transfer socket error');
    });
    this.socket.on('message', (message, from) => this.onMessage(message, from));
  }

  async start(parameters: TransferParameters): Promise<void> {
    await bindUdp(this.socket, this.options.listen, 0);
    if (this.ended) return;
    this.apply(startTransfer(parameters, performance.now()));
  }

  /** Whether `request` is the one that started this transfer, sent again before the client heard it. */
  isResendOf(request: Buffer): boolean {
    return !this.heardFromClient && request.equals(this.options.request);
  }

  /**
   * Tells the client why with an ERROR, then ends the transfer: a client told nothing waits out its
   * retries (curl, firmware: tens of seconds). Ending closes the socket at once: dgram hands a
   * datagram to the kernel right away unless earlier sends are still queued, the one case where the
   * ERROR is lost (the client times out). A transfer whose socket is not bound yet has sent nothing.
   */
  abort(message: string, reason: string): void {
    if (this.ended) return;
    if (this.state !== undefined)
      this.options.sendError(this.socket, this.options.peer, ErrorCode.notDefined, message, 'client');
    this.end('aborted', reason);
  }

  end(outcome: TransferOutcome, reason?: string): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.timer);
    this.socket.close();
    this.options.source.close();
    const state = this.state;
    const bytes = state ? acknowledgedBytes(state) : 0;
    this.options.stats.bytesSent += bytes;
    const durationMs = Math.round(performance.now() - this.options.startedAt);
    const detail = {
      mode: this.options.mode,
      options: Object.fromEntries(this.options.negotiated.oack ?? []),
      bytes,
      durationMs,
      ...(reason === undefined ? {} : { reason }),
    };
    const level = outcome === 'complete' ? 'info' : outcome === 'probe' ? 'debug' : 'warn';
    this.options.logger[level](
      { client: this.options.peer.address, request: { file: this.options.file }, outcome, ...detail },
      'tftp transfer ended',
    );
    this.options.onEnd(outcome, detail);
  }

  private onMessage(message: Buffer, from: RemoteInfo): void {
    const { peer, stats } = this.options;
    if (from.address !== peer.address || from.port !== peer.port) {
      this.options.answerStranger(this.socket, message, from);
      return;
    }
    this.heardFromClient = true;
    const state = this.state;
    const packet = decodeClientPacket(message);
    if (state === undefined || packet === undefined || packet.kind === 'other') {
      stats.errors.malformed += 1;
      return;
    }
    if (packet.kind === 'error') {
      this.apply(receiveClientError(state, packet.code), clientErrorReason(packet.code, packet.message));
      return;
    }
    this.apply(receiveAck(state, packet.block, performance.now()));
  }

  private onTimer(): void {
    this.timer = undefined;
    this.timerFiresAt = Number.POSITIVE_INFINITY;
    const state = this.state;
    if (state === undefined || this.ended) return;
    // The window has not gone out yet: it waits for the disk, not for the client, up to a limit.
    if (this.readsPending > 0) {
      const { diskReadLimitMs, logger, stats, file } = this.options;
      const now = performance.now();
      if (now - this.readingSince < diskReadLimitMs) {
        this.armTimer(Math.min(now + state.timeoutMs, this.readingSince + diskReadLimitMs));
        return;
      }
      stats.errors.io += 1;
      logger.warn(
        {
          client: this.options.peer.address,
          request: { file },
          waitedMs: Math.round(now - this.readingSince),
        },
        'tftp read from disk did not return: transfer aborted',
      );
      this.abort('Read error', 'read-stalled');
      return;
    }
    this.apply(expireTimer(state, performance.now()));
  }

  private apply(step: Step, reason?: string): void {
    if (this.ended) return;
    this.state = step.state;
    if (step.ignored === 'duplicate-ack') this.options.stats.errors.duplicateAcks += 1;
    const resent = step.resent ?? 0;
    for (const outgoing of step.send) {
      if (outgoing.kind === 'oack') {
        this.oack ??= encodeOack(this.options.negotiated.oack ?? new Map());
        this.sendPacket([this.oack]);
        this.options.stats.retransmittedPackets += resent;
      } else this.sendBlocks(step.state, outgoing.firstBlock, outgoing.lastBlock, resent);
    }
    if (step.outcome !== undefined) {
      this.end(step.outcome, reason);
      return;
    }
    this.armTimer(step.state.deadline);
  }

  /**
   * One timer per transfer, re-armed only when it fires early: moving it on every ACK would cost
   * a clearTimeout/setTimeout pair per packet.
   */
  private armTimer(deadline: number): void {
    if (this.timer !== undefined && this.timerFiresAt <= deadline) return;
    clearTimeout(this.timer);
    this.timerFiresAt = deadline;
    this.timer = setTimeout(() => this.onTimer(), Math.max(0, deadline - performance.now()));
  }

  /** `resent`: how many of these blocks went out before, counted once they are sent again. */
  private sendBlocks(state: TransferState, firstBlock: number, lastBlock: number, resent: number): void {
    const first = blockRange(state, firstBlock);
    const last = blockRange(state, lastBlock);
    const length = last.offset + last.length - first.offset;
    const sendAll = (payload: Buffer) => {
      for (let block = firstBlock; block <= lastBlock; block += 1) {
        const start = (block - firstBlock) * state.blksize;
        this.sendPacket([encodeDataHeader(block), payload.subarray(start, start + state.blksize)]);
      }
      this.options.stats.retransmittedPackets += resent;
    };
    const payload = this.options.source.read(first.offset, length);
    if (Buffer.isBuffer(payload)) {
      sendAll(payload);
      return;
    }
    if (this.readsPending === 0) this.readingSince = performance.now();
    this.readsPending += 1;
    const readDone = () => {
      this.readsPending -= 1;
      if (this.readsPending === 0) this.readingSince = Number.POSITIVE_INFINITY;
    };
    payload.then(
      (read) => {
        readDone();
        const state = this.state;
        // Acknowledged while it was read (a resend of a window the client already had): nothing to send.
        if (this.ended || state === undefined || state.acknowledged >= lastBlock) return;
        sendAll(read);
        this.state = windowSent(state, performance.now());
        this.armTimer(this.state.deadline);
      },
      (error: unknown) => {
        readDone();
        if (this.ended) return;
        this.options.stats.errors.io += 1;
        const changed = error instanceof FileChangedError;
        this.options.logger.warn({ err: error, request: { file: this.options.file } }, 'tftp read failed');
        this.abort(
          changed ? 'File changed during transfer' : 'Read error',
          changed ? 'file-changed' : 'read-error',
        );
      },
    );
  }

  private sendPacket(parts: Buffer[]): void {
    this.options.stats.packetsSent += 1;
    this.options.send(this.socket, parts, this.options.peer);
  }
}
