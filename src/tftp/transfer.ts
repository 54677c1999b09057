/**
 * One read transfer as a pure state machine: (state, ACK | timeout | client ERROR, now) → (state,
 * packets to send, next deadline). The socket shell owns timers and bytes; nothing here touches a
 * socket, the disk or the clock.
 *
 * Blocks are counted absolutely from 1; on the wire they wrap after 65535 to 0 (tftp.md §5, the
 * convention iPXE and pixiecore follow), so files past 32 MiB at 512-byte blocks still transfer.
 */

export type TransferOutcome = 'complete' | 'aborted' | 'timeout' | 'probe';

export interface TransferParameters {
  fileSize: number;
  blksize: number;
  windowsize: number;
  /** true when the request carried options we accepted: an OACK goes first, awaiting ACK 0. */
  sendOack: boolean;
  /** Retransmissions of one packet (or window) before the transfer is dropped. */
  maxRetries: number;
  timing: RetransmitTiming;
}

export interface RetransmitTiming {
  /** Before any round-trip sample exists (RFC 6298 §2.1 suggests 1 s; a boot LAN answers faster). */
  initialTimeoutMs: number;
  /** Floor, so scheduling jitter on a busy host does not cause spurious resends. */
  minTimeoutMs: number;
  /** Ceiling of the back-off; the client's RFC 2349 timeout when it sent one. */
  maxTimeoutMs: number;
  /**
   * A transfer is dropped only when its retries are spent AND it has made no progress for this
   * long: with a sub-millisecond LAN round trip the back-off alone would give up within a second,
   * which one garbage-collection pause or a busy host can exceed.
   */
  minStallMs: number;
}

export type Outgoing = { kind: 'oack' } | { kind: 'data'; firstBlock: number; lastBlock: number };

export interface TransferState {
  readonly phase: 'negotiating' | 'sending' | 'finished';
  readonly fileSize: number;
  readonly blksize: number;
  readonly windowsize: number;
  /** Blocks in the file including the final short (possibly empty) one. */
  readonly totalBlocks: number;
  readonly acknowledged: number;
  readonly sentThrough: number;
  readonly retries: number;
  readonly maxRetries: number;
  readonly timing: RetransmitTiming;
  readonly timeoutMs: number;
  readonly smoothedRttMs: number | undefined;
  readonly rttVariationMs: number;
  /** When the packets now awaiting acknowledgement were first sent, for the round-trip sample. */
  readonly windowSentAt: number;
  /** Karn's rule: no round-trip sample from a window that was retransmitted. */
  readonly windowRetransmitted: boolean;
  readonly deadline: number;
  readonly lastProgressAt: number;
}

export interface Step {
  state: TransferState;
  send: Outgoing[];
  /** Set when the transfer has ended with this step. */
  outcome?: TransferOutcome;
  /** Why an ACK was ignored (counted by the shell), e.g. a duplicate. */
  ignored?: 'duplicate-ack' | 'stale-ack' | 'unexpected-ack';
  retransmitted?: boolean;
}

export function startTransfer(parameters: TransferParameters, now: number): Step {
  const initial: TransferState = {
    phase: parameters.sendOack ? 'negotiating' : 'sending',
    fileSize: parameters.fileSize,
    blksize: parameters.blksize,
    windowsize: parameters.windowsize,
    totalBlocks: Math.floor(parameters.fileSize / parameters.blksize) + 1,
    acknowledged: 0,
    sentThrough: 0,
    retries: 0,
    maxRetries: parameters.maxRetries,
    timing: parameters.timing,
    timeoutMs: clamp(parameters.timing.initialTimeoutMs, parameters.timing),
    smoothedRttMs: undefined,
    rttVariationMs: 0,
    windowSentAt: now,
    windowRetransmitted: false,
    deadline: 0,
    lastProgressAt: now,
  };
  if (parameters.sendOack) {
    return { state: { ...initial, deadline: now + initial.timeoutMs }, send: [{ kind: 'oack' }] };
  }
  return sendWindow(initial, now, false);
}

/** Payload bytes of one block: the shell reads `length` bytes at `offset`. */
export function blockRange(state: TransferState, block: number): { offset: number; length: number } {
  const offset = (block - 1) * state.blksize;
  return { offset, length: Math.max(0, Math.min(state.blksize, state.fileSize - offset)) };
}

/** Bytes the client has acknowledged so far. */
export function acknowledgedBytes(state: TransferState): number {
  return Math.min(state.acknowledged * state.blksize, state.fileSize);
}

export function receiveAck(state: TransferState, wireBlock: number, now: number): Step {
  if (state.phase === 'finished') return { state, send: [], ignored: 'unexpected-ack' };
  if (state.phase === 'negotiating') {
    // RFC 2347: the reading client accepts the OACK with ACK 0.
    if (wireBlock !== 0) return { state, send: [], ignored: 'unexpected-ack' };
    return sendWindow({ ...withRttSample(state, now), lastProgressAt: now }, now, false);
  }
  const block = absoluteBlock(state, wireBlock);
  if (block === undefined) return { state, send: [], ignored: 'stale-ack' };
  // RFC 1123 §4.2.3.1 (Sorcerer's Apprentice): a duplicate ACK never triggers a resend; only the
  // timer does.
  if (block === state.acknowledged) return { state, send: [], ignored: 'duplicate-ack' };
  const fullWindow = block === state.sentThrough;
  const progressed: TransferState = {
    ...(fullWindow ? withRttSample(state, now) : state),
    acknowledged: block,
    retries: 0,
    lastProgressAt: now,
  };
  if (block === state.totalBlocks) {
    return { state: { ...progressed, phase: 'finished' }, send: [], outcome: 'complete' };
  }
  // RFC 7440 §4: an ACK inside the window means the client missed the next block; resume after it.
  return sendWindow(progressed, now, false);
}

export function expireTimer(state: TransferState, now: number): Step {
  if (state.phase === 'finished' || now < state.deadline) return { state, send: [] };
  if (state.retries >= state.maxRetries && now - state.lastProgressAt >= state.timing.minStallMs) {
    return { state: { ...state, phase: 'finished' }, send: [], outcome: 'timeout' };
  }
  // RFC 1123 §4.2.3.2: exponential back-off on every timeout.
  const backedOff: TransferState = {
    ...state,
    retries: state.retries + 1,
    timeoutMs: Math.min(state.timeoutMs * 2, state.timing.maxTimeoutMs),
    windowRetransmitted: true,
  };
  if (state.phase === 'negotiating') {
    return {
      state: { ...backedOff, deadline: now + backedOff.timeoutMs },
      send: [{ kind: 'oack' }],
      retransmitted: true,
    };
  }
  return sendWindow(backedOff, now, true);
}

/** A client ERROR ends the transfer; right after the OACK it is the firmware size probe (tftp.md §4). */
export function receiveClientError(state: TransferState): Step {
  if (state.phase === 'finished') return { state, send: [] };
  return {
    state: { ...state, phase: 'finished' },
    send: [],
    outcome: state.phase === 'negotiating' ? 'probe' : 'aborted',
  };
}

function sendWindow(state: TransferState, now: number, retransmission: boolean): Step {
  const firstBlock = state.acknowledged + 1;
  const lastBlock = Math.min(state.acknowledged + state.windowsize, state.totalBlocks);
  return {
    state: {
      ...state,
      phase: 'sending',
      sentThrough: Math.max(lastBlock, state.sentThrough),
      windowSentAt: retransmission ? state.windowSentAt : now,
      windowRetransmitted: retransmission,
      deadline: now + state.timeoutMs,
    },
    send: [{ kind: 'data', firstBlock, lastBlock }],
    retransmitted: retransmission,
  };
}

/** The absolute block an ACK refers to, if it lies in [acknowledged, sentThrough]. */
function absoluteBlock(state: TransferState, wireBlock: number): number | undefined {
  const distance = (wireBlock - (state.acknowledged & 0xffff) + 0x10000) & 0xffff;
  const block = state.acknowledged + distance;
  return block <= state.sentThrough ? block : undefined;
}

/** RFC 6298 §2 smoothing (alpha 1/8, beta 1/4); skipped after a retransmission (Karn). */
function withRttSample(state: TransferState, now: number): TransferState {
  if (state.windowRetransmitted) return state;
  const sample = Math.max(0, now - state.windowSentAt);
  const smoothed = state.smoothedRttMs;
  const rttVariationMs =
    smoothed === undefined ? sample / 2 : 0.75 * state.rttVariationMs + 0.25 * Math.abs(smoothed - sample);
  const smoothedRttMs = smoothed === undefined ? sample : 0.875 * smoothed + 0.125 * sample;
  return {
    ...state,
    smoothedRttMs,
    rttVariationMs,
    timeoutMs: clamp(smoothedRttMs + Math.max(1, 4 * rttVariationMs), state.timing),
  };
}

function clamp(timeoutMs: number, timing: RetransmitTiming): number {
  return Math.min(Math.max(timeoutMs, timing.minTimeoutMs), timing.maxTimeoutMs);
}
