import { isUtf8 } from 'node:buffer';

/** Why a file's bytes are not text rackboot reads, at the line and column where that shows. */
export interface NotText {
  ok: false;
  line: number;
  col: number;
  reason: string;
}

const SAVE_AS_UTF8 = 'save it as UTF-8';

/**
 * The text of a file rackboot reads as YAML or JSON (the config, a template), or why its bytes are
 * not such a text: one problem said before any parser sees them, where a parser given a binary file
 * answered with a screenful of syntax errors quoting its bytes, and one given UTF-16 or Latin-1
 * with syntax errors about characters the operator never typed, or no error at all and U+FFFD in
 * a value.
 */
export function textOf(bytes: Buffer): { ok: true; text: string } | NotText {
  const utf16 = utf16Evidence(bytes);
  if (utf16) return { ok: false, line: 1, col: 1, reason: `not UTF-8 (${utf16}): ${SAVE_AS_UTF8}` };
  const nul = bytes.indexOf(0);
  if (nul >= 0)
    return {
      ok: false,
      line: 1,
      col: 1,
      reason: `not a text file (NUL byte at offset ${nul}): rackboot reads it as YAML or JSON text`,
    };
  const text = bytes.toString('utf8');
  if (isUtf8(bytes)) return { ok: true, text };
  const offset = firstInvalidOffset(bytes, text);
  const before = bytes.subarray(0, offset).toString('utf8');
  const byte = bytes[offset]?.toString(16).toUpperCase().padStart(2, '0');
  return {
    ok: false,
    line: before.split('\n').length,
    col: before.length - before.lastIndexOf('\n'),
    reason: `not UTF-8 (byte 0x${byte} at offset ${offset} is not UTF-8; Latin-1 or Windows-1252?): ${SAVE_AS_UTF8}`,
  };
}

/** How many leading bytes are looked at for UTF-16 without a byte order mark. */
const UTF16_SAMPLE_BYTES = 512;

/**
 * Why `bytes` read as UTF-16, if they do: a byte order mark, or (Windows tools write it without
 * one too) mostly-ASCII text, which in UTF-16 has a NUL in every other byte and none in between.
 */
function utf16Evidence(bytes: Buffer): string | undefined {
  if (bytes[0] === 0xff && bytes[1] === 0xfe) return 'UTF-16 little-endian, by its byte order mark';
  if (bytes[0] === 0xfe && bytes[1] === 0xff) return 'UTF-16 big-endian, by its byte order mark';
  const pairs = Math.floor(Math.min(bytes.length, UTF16_SAMPLE_BYTES) / 2);
  let nulFirst = 0;
  let nulSecond = 0;
  for (let pair = 0; pair < pairs; pair++) {
    if (bytes[2 * pair] === 0) nulFirst++;
    if (bytes[2 * pair + 1] === 0) nulSecond++;
  }
  if (pairs === 0) return undefined;
  if (nulFirst === 0 && nulSecond >= pairs / 2)
    return 'it reads as UTF-16 little-endian: every other byte is NUL';
  if (nulSecond === 0 && nulFirst >= pairs / 2)
    return 'it reads as UTF-16 big-endian: every other byte is NUL';
  return undefined;
}

/**
 * The offset of the first byte that starts no UTF-8 character. Node decodes each such byte or
 * sequence to U+FFFD, which a valid file may hold too (as EF BF BD): the first U+FFFD not spelt so.
 */
function firstInvalidOffset(bytes: Buffer, text: string): number {
  let offset = 0;
  for (const character of text) {
    if (
      character === '\uFFFD' &&
      !(bytes[offset] === 0xef && bytes[offset + 1] === 0xbf && bytes[offset + 2] === 0xbd)
    )
      return offset;
    offset += Buffer.byteLength(character);
  }
  return offset;
}
