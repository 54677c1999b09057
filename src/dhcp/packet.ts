import { ipToNumber, numberToIp } from '../ipv4.js';
import { type MessageTypeName, messageTypeName, Option, type OptionMap, readUint16 } from './options.js';

/** RFC 2131 §2 message, with addresses as dotted strings and options by code. */
export interface DhcpPacket {
  op: number;
  htype: number;
  hlen: number;
  hops: number;
  xid: number;
  secs: number;
  flags: number;
  ciaddr: string;
  yiaddr: string;
  siaddr: string;
  giaddr: string;
  /** The first `hlen` bytes of the 16-byte chaddr field. */
  chaddr: Buffer;
  /** Empty when the field carried options (option 52). */
  sname: string;
  file: string;
  options: OptionMap;
}

export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;
export const BROADCAST_FLAG = 0x8000;
export const MAGIC_COOKIE = 0x63825363;

const HEADER_BYTES = 236;
const SNAME_OFFSET = 44;
const SNAME_BYTES = 64;
const FILE_OFFSET = 108;
const FILE_BYTES = 128;
const OPTIONS_OFFSET = 240;
/** RFC 951/2131: BOOTP relays and old clients expect at least 300 bytes. */
const MINIMUM_MESSAGE_BYTES = 300;
const IP_AND_UDP_HEADER_BYTES = 28;
/** RFC 2131 §2: every client accepts a 576-byte IP datagram. */
const GUARANTEED_DATAGRAM_BYTES = 576;
/** An Ethernet frame's payload: no reply is larger, whatever option 57 allows. */
const ETHERNET_DATAGRAM_BYTES = 1500;
/** The largest message the encoder writes. */
const LARGEST_MESSAGE_BYTES = ETHERNET_DATAGRAM_BYTES - IP_AND_UDP_HEADER_BYTES;

export type MalformedReason =
  | 'short'
  | 'bad-hlen'
  | 'bad-cookie'
  | 'option-overrun'
  | 'bad-overload'
  | 'wrong-op'
  | 'no-message-type'
  | 'bad-message-type';

export type Decoded<T> = { ok: true; packet: T } | { ok: false; reason: MalformedReason };

/** A request the server can act on: BOOTREQUEST with a known DHCP message type. */
export interface DhcpRequest extends DhcpPacket {
  messageType: MessageTypeName;
}

/**
 * Bytes → packet, refusing rather than guessing: a length that runs past the end, a bad cookie or
 * hlen > 16 is an error, never an exception.
 */
export function decodeDhcpPacket(bytes: Buffer): Decoded<DhcpPacket> {
  if (bytes.length < OPTIONS_OFFSET) return { ok: false, reason: 'short' };
  const hlen = bytes[2] ?? 0;
  if (hlen > 16) return { ok: false, reason: 'bad-hlen' };
  if (bytes.readUInt32BE(HEADER_BYTES) !== MAGIC_COOKIE) return { ok: false, reason: 'bad-cookie' };

  const options: OptionMap = new Map();
  if (!readOptionArea(bytes, OPTIONS_OFFSET, bytes.length, options))
    return { ok: false, reason: 'option-overrun' };

  // RFC 2132 §9.3: the overloaded fields are read after the options field, `file` first, then `sname`.
  let overload = 0;
  const overloadValue = options.get(Option.overload);
  if (overloadValue) {
    overload = overloadValue.length === 1 ? (overloadValue[0] ?? 0) : 0;
    if (overload < 1 || overload > 3) return { ok: false, reason: 'bad-overload' };
    options.delete(Option.overload);
    const fileOk = !(overload & 1) || readOptionArea(bytes, FILE_OFFSET, FILE_OFFSET + FILE_BYTES, options);
    const snameOk =
      !(overload & 2) || readOptionArea(bytes, SNAME_OFFSET, SNAME_OFFSET + SNAME_BYTES, options);
    if (!fileOk || !snameOk) return { ok: false, reason: 'option-overrun' };
    // An overloaded area that itself contains option 52 means nothing more (§9.3 allows one level).
    options.delete(Option.overload);
  }

  return {
    ok: true,
    packet: {
      op: bytes[0] ?? 0,
      htype: bytes[1] ?? 0,
      hlen,
      hops: bytes[3] ?? 0,
      xid: bytes.readUInt32BE(4),
      secs: bytes.readUInt16BE(8),
      flags: bytes.readUInt16BE(10),
      ciaddr: numberToIp(bytes.readUInt32BE(12)),
      yiaddr: numberToIp(bytes.readUInt32BE(16)),
      siaddr: numberToIp(bytes.readUInt32BE(20)),
      giaddr: numberToIp(bytes.readUInt32BE(24)),
      // A view, like the option values: each datagram arrives in its own Buffer, never reused.
      chaddr: bytes.subarray(28, 28 + hlen),
      sname: overload & 2 ? '' : readNulTerminated(bytes, SNAME_OFFSET, SNAME_BYTES),
      file: overload & 1 ? '' : readNulTerminated(bytes, FILE_OFFSET, FILE_BYTES),
      options,
    },
  };
}

/** decodeDhcpPacket plus what a server needs before deciding: a BOOTREQUEST carrying option 53. */
export function decodeDhcpRequest(bytes: Buffer): Decoded<DhcpRequest> {
  const decoded = decodeDhcpPacket(bytes);
  if (!decoded.ok) return decoded;
  const packet = decoded.packet;
  // RFC 2131 §4.1: a server only acts on BOOTREQUEST; replies heard on the wire (other servers) are dropped.
  if (packet.op !== BOOTREQUEST) return { ok: false, reason: 'wrong-op' };
  const typeValue = packet.options.get(Option.messageType);
  // BOOTP requests (no option 53) are not served: every PXE ROM and iPXE speak DHCP.
  if (!typeValue) return { ok: false, reason: 'no-message-type' };
  const messageType = typeValue.length === 1 ? messageTypeName(typeValue[0] ?? 0) : undefined;
  if (!messageType || isServerMessage(messageType)) return { ok: false, reason: 'bad-message-type' };
  return { ok: true, packet: Object.assign(packet, { messageType }) };
}

function isServerMessage(type: MessageTypeName): boolean {
  return type === 'offer' || type === 'ack' || type === 'nak';
}

/**
 * The largest reply `request`'s sender accepts, in bytes of DHCP message: 548 (a 576-byte IP
 * datagram, RFC 2131 §2), or more if it sent option 57 (RFC 2132 §9.10: the largest IP datagram it
 * accepts, at least 576), up to an Ethernet frame.
 */
export function maxReplyBytes(request: DhcpPacket): number {
  const datagram = readUint16(request.options, Option.maxMessageSize) ?? GUARANTEED_DATAGRAM_BYTES;
  const bounded = Math.min(Math.max(datagram, GUARANTEED_DATAGRAM_BYTES), ETHERNET_DATAGRAM_BYTES);
  return bounded - IP_AND_UDP_HEADER_BYTES;
}

/** The bytes encodeDhcpPacket writes for `packet`, before padding to the BOOTP minimum. */
export function encodedLength(packet: DhcpPacket): number {
  let length = OPTIONS_OFFSET + 1; // + END
  for (const value of packet.options.values()) {
    // RFC 3396: one code and length byte per 255-byte piece; an empty value is one piece.
    length += value.length + 2 * Math.max(1, Math.ceil(value.length / 255));
  }
  return length;
}

/**
 * Reads code/length/value triples in [start, end) into `options`, concatenating repeated codes
 * (RFC 3396). PAD is one byte with no length; END or the end of the area stops. Returns false when
 * a length byte or a value runs past the end of the area.
 */
function readOptionArea(bytes: Buffer, start: number, end: number, options: OptionMap): boolean {
  // The pieces of a repeated code are joined once, at the end: joining at every piece took quadratic
  // time (a 64 KiB datagram of one-byte option 55 pieces held the event loop for 125 ms).
  let repeated: Map<number, Buffer[]> | undefined;
  const joinRepeated = () => {
    if (repeated) for (const [code, pieces] of repeated) options.set(code, Buffer.concat(pieces));
    return true;
  };
  let offset = start;
  while (offset < end) {
    const code = bytes[offset] as number;
    if (code === Option.end) return joinRepeated();
    if (code === Option.pad) {
      offset += 1;
      continue;
    }
    if (offset + 1 >= end) return false;
    const length = bytes[offset + 1] as number;
    const valueStart = offset + 2;
    const valueEnd = valueStart + length;
    if (valueEnd > end) return false;
    const value = bytes.subarray(valueStart, valueEnd);
    const previous = options.get(code);
    if (previous === undefined) options.set(code, value);
    else {
      repeated ??= new Map();
      const pieces = repeated.get(code);
      if (pieces) pieces.push(value);
      else repeated.set(code, [previous, value]);
    }
    offset = valueEnd;
  }
  return joinRepeated();
}

function readNulTerminated(bytes: Buffer, offset: number, length: number): string {
  const nul = bytes.indexOf(0, offset);
  const end = nul === -1 || nul > offset + length ? offset + length : nul;
  return bytes.toString('latin1', offset, end);
}

/**
 * Packet → bytes. Options are written in insertion order (option 53 first by convention); values
 * longer than 255 bytes are split into several instances (RFC 3396). Never uses overload: old PXE
 * ROMs choke on it. Throws only on a packet we built wrong (larger than `maxBytes`), never on input.
 */
export function encodeDhcpPacket(packet: DhcpPacket, maxBytes = LARGEST_MESSAGE_BYTES): Buffer {
  // Not zero-filled: the header is zeroed here, the padding up to 300 bytes at the end, the rest
  // is written.
  const bytes = Buffer.allocUnsafe(maxBytes);
  bytes.fill(0, 0, OPTIONS_OFFSET);
  bytes[0] = packet.op;
  bytes[1] = packet.htype;
  bytes[2] = packet.hlen;
  bytes[3] = packet.hops;
  bytes.writeUInt32BE(packet.xid >>> 0, 4);
  bytes.writeUInt16BE(packet.secs & 0xffff, 8);
  bytes.writeUInt16BE(packet.flags & 0xffff, 10);
  bytes.writeUInt32BE(ipToNumber(packet.ciaddr), 12);
  bytes.writeUInt32BE(ipToNumber(packet.yiaddr), 16);
  bytes.writeUInt32BE(ipToNumber(packet.siaddr), 20);
  bytes.writeUInt32BE(ipToNumber(packet.giaddr), 24);
  bytes.set(packet.chaddr.subarray(0, 16), 28);
  if (packet.sname) bytes.write(packet.sname.slice(0, SNAME_BYTES - 1), SNAME_OFFSET, 'latin1');
  if (packet.file) bytes.write(packet.file.slice(0, FILE_BYTES - 1), FILE_OFFSET, 'latin1');
  bytes.writeUInt32BE(MAGIC_COOKIE, HEADER_BYTES);

  let offset = OPTIONS_OFFSET;
  for (const [code, value] of packet.options) {
    let chunk = 0;
    do {
      const piece = value.subarray(chunk, chunk + 255);
      if (offset + 2 + piece.length + 1 > maxBytes) {
        throw new Error(`DHCP message does not fit in ${maxBytes} bytes (option ${code})`);
      }
      bytes[offset] = code;
      bytes[offset + 1] = piece.length;
      bytes.set(piece, offset + 2);
      offset += 2 + piece.length;
      chunk += 255;
    } while (chunk < value.length);
  }
  bytes[offset] = Option.end;
  offset += 1;
  if (offset < MINIMUM_MESSAGE_BYTES) bytes.fill(Option.pad, offset, MINIMUM_MESSAGE_BYTES);
  return bytes.subarray(0, Math.max(offset, MINIMUM_MESSAGE_BYTES));
}
