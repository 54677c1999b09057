/**
 * RFC 1350 netascii (RFC 764 NVT ASCII) as a sender writes it: a line end (LF) goes on the wire as
 * CR LF and a bare CR as CR NUL. The receiving client undoes both, so a file asked for in
 * netascii arrives byte-exact. tftp-hpa's client asks for netascii unless told `-m binary`; served
 * as octet, its CR LF → LF decoding would corrupt every binary it fetched.
 */
const CR = 0x0d;
const LF = 0x0a;

export function toNetascii(content: Buffer): Buffer {
  let extra = 0;
  for (const byte of content) if (byte === CR || byte === LF) extra += 1;
  if (extra === 0) return content;
  const encoded = Buffer.allocUnsafe(content.length + extra);
  let at = 0;
  for (const byte of content) {
    if (byte === LF) {
      encoded[at++] = CR;
      encoded[at++] = LF;
    } else if (byte === CR) {
      encoded[at++] = CR;
      encoded[at++] = 0;
    } else {
      encoded[at++] = byte;
    }
  }
  return encoded;
}
