/**
 * TFTP wire format (RFC 1350 §5, RFC 2347 OACK) and option negotiation (RFC 2348 blksize, RFC 2349
 * tsize/timeout, RFC 7440 windowsize). Pure: bytes in, values out; malformed input is a result,
 * never an exception.
 */

const Opcode = { RRQ: 1, WRQ: 2, DATA: 3, ACK: 4, ERROR: 5, OACK: 6 } as const;

/** The RFC 1350 §5 error codes this server sends. */
export const ErrorCode = {
  notDefined: 0,
  fileNotFound: 1,
  accessViolation: 2,
  illegalOperation: 4,
  unknownTransferId: 5,
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const DEFAULT_BLKSIZE = 512;
/** RFC 2347: a request carrying options fits in 512 bytes; we allow some slack for sloppy clients. */
const MAX_REQUEST_BYTES = 1024;
/** pixiecore truncates at 500; short ASCII is all a client shows. */
const MAX_ERROR_MESSAGE_BYTES = 200;

export interface Request {
  kind: 'read' | 'write';
  /** The filename bytes as sent (latin1), not yet normalised: see paths.ts. */
  filename: string;
  mode: string;
  /** Option names lower-cased (RFC 2347: case-insensitive); the first occurrence wins. */
  options: Map<string, string>;
}

export type RequestDecoding =
  | { ok: true; request: Request }
  | { ok: false; reason: 'too-short' | 'too-long' | 'not-a-request' | 'unterminated' | 'no-mode' };

export function decodeRequest(bytes: Buffer): RequestDecoding {
  if (bytes.length < 4) return { ok: false, reason: 'too-short' };
  if (bytes.length > MAX_REQUEST_BYTES) return { ok: false, reason: 'too-long' };
  const opcode = bytes.readUInt16BE(0);
  if (opcode !== Opcode.RRQ && opcode !== Opcode.WRQ) return { ok: false, reason: 'not-a-request' };
  if (bytes[bytes.length - 1] !== 0) return { ok: false, reason: 'unterminated' };
  const fields = bytes.toString('latin1', 2, bytes.length - 1).split('\0');
  const [filename, mode, ...optionFields] = fields;
  if (filename === undefined || mode === undefined) return { ok: false, reason: 'no-mode' };
  const options = new Map<string, string>();
  // An odd trailing name without a value is ignored, as RFC 2347 servers ignore what they cannot use.
  for (let index = 0; index + 1 < optionFields.length; index += 2) {
    const name = (optionFields[index] ?? '').toLowerCase();
    if (!options.has(name)) options.set(name, optionFields[index + 1] ?? '');
  }
  return {
    ok: true,
    request: { kind: opcode === Opcode.RRQ ? 'read' : 'write', filename, mode: mode.toLowerCase(), options },
  };
}

/** Packets a client sends to a transfer's socket. */
export type ClientPacket =
  | { kind: 'ack'; block: number }
  | { kind: 'error'; code: number; message: string }
  | { kind: 'other'; opcode: number };

export function decodeClientPacket(bytes: Buffer): ClientPacket | undefined {
  if (bytes.length < 4) return undefined;
  const opcode = bytes.readUInt16BE(0);
  if (opcode === Opcode.ACK) return { kind: 'ack', block: bytes.readUInt16BE(2) };
  if (opcode === Opcode.ERROR) {
    const end = bytes.indexOf(0, 4);
    const message = bytes.toString('latin1', 4, end === -1 ? bytes.length : end);
    return { kind: 'error', code: bytes.readUInt16BE(2), message };
  }
  return { kind: 'other', opcode };
}

/** The ERROR opcode, however malformed the rest: the server never answers such a packet. */
export function isErrorPacket(bytes: Buffer): boolean {
  return bytes.length >= 2 && bytes.readUInt16BE(0) === Opcode.ERROR;
}

/** The 4-byte DATA header; the payload is sent alongside it (scatter/gather), never copied. */
export function encodeDataHeader(wireBlock: number): Buffer {
  const header = Buffer.allocUnsafe(4);
  header.writeUInt16BE(Opcode.DATA, 0);
  header.writeUInt16BE(wireBlock & 0xffff, 2);
  return header;
}

export function encodeError(code: ErrorCode, message: string): Buffer {
  const text = Buffer.from(message.replace(/[^\x20-\x7e]/g, '?'), 'latin1').subarray(
    0,
    MAX_ERROR_MESSAGE_BYTES,
  );
  const packet = Buffer.alloc(4 + text.length + 1);
  packet.writeUInt16BE(Opcode.ERROR, 0);
  packet.writeUInt16BE(code, 2);
  text.copy(packet, 4);
  return packet;
}

export function encodeOack(options: ReadonlyMap<string, string>): Buffer {
  const parts: Buffer[] = [Buffer.from([0, Opcode.OACK])];
  for (const [name, value] of options) parts.push(Buffer.from(`${name}\0${value}\0`, 'latin1'));
  return Buffer.concat(parts);
}

export interface NegotiationLimits {
  maxBlksize: number;
  maxWindowsize: number;
  /** When set, a window (blocks × blksize) is cut to fit in this many bytes, at least one block. */
  maxWindowBytes?: number;
}

/** What the transfer runs with, and the OACK that announces it (undefined: answer with DATA 1). */
export interface Negotiated {
  blksize: number;
  windowsize: number;
  /** Seconds, when the client asked for RFC 2349 timeout. */
  timeoutSeconds: number | undefined;
  oack: Map<string, string> | undefined;
}

const DECIMAL = /^\d{1,10}$/;

function parseDecimal(value: string | undefined, minimum: number, maximum: number): number | undefined {
  if (value === undefined || !DECIMAL.test(value)) return undefined;
  const number = Number(value);
  return number >= minimum && number <= maximum ? number : undefined;
}

/**
 * RFC 2347 negotiation for a read. Only options the client asked for and we accept go in the
 * OACK; an unusable value is left out (the option is then simply not in effect).
 */
export function negotiateOptions(
  requested: ReadonlyMap<string, string>,
  fileSize: number,
  limits: NegotiationLimits,
): Negotiated {
  const oack = new Map<string, string>();
  // RFC 2348: 8–65464; the server may answer with a smaller value, never a larger one.
  const askedBlksize = parseDecimal(requested.get('blksize'), 8, 65464);
  let blksize = DEFAULT_BLKSIZE;
  if (askedBlksize !== undefined) {
    blksize = Math.min(askedBlksize, limits.maxBlksize);
    oack.set('blksize', String(blksize));
  }
  // RFC 2349: the value must be echoed unchanged, or the option omitted.
  const timeoutSeconds = parseDecimal(requested.get('timeout'), 1, 255);
  if (timeoutSeconds !== undefined) oack.set('timeout', String(timeoutSeconds));
  // RFC 2349: a reading client sends 0 and gets the size.
  if (requested.has('tsize')) oack.set('tsize', String(fileSize));
  // RFC 7440: 1–65535 blocks; the reply may be smaller than asked.
  const askedWindowsize = parseDecimal(requested.get('windowsize'), 1, 65535);
  let windowsize = 1;
  if (askedWindowsize !== undefined) {
    const fittingBlocks = Math.max(
      1,
      Math.floor((limits.maxWindowBytes ?? Number.POSITIVE_INFINITY) / blksize),
    );
    windowsize = Math.min(askedWindowsize, limits.maxWindowsize, fittingBlocks);
    oack.set('windowsize', String(windowsize));
  }
  return { blksize, windowsize, timeoutSeconds, oack: oack.size > 0 ? oack : undefined };
}
