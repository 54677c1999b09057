import { realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { escapesRoot } from '../path-inside.js';
import { ErrorCode } from './packet.js';

/**
 * Requested TFTP name → a regular file under the assets root, or a refusal. The refusal's reason
 * is for logs and events; the client only ever sees the generic message of its error code, so no
 * filesystem path leaves the server.
 */

export type Refusal = {
  ok: false;
  code: typeof ErrorCode.fileNotFound | typeof ErrorCode.accessViolation;
  reason: string;
};

const MAX_NAME_BYTES = 255;

export function normalizeRequestedName(raw: string): { ok: true; relative: string } | Refusal {
  let name = raw;
  // Some Intel PXE 2.1 ROMs append a byte (0xFF) to the name they took from option 67 (pxe-dhcp.md §4).
  if (name.length > 0 && isJunkByte(name.charCodeAt(name.length - 1))) name = name.slice(0, -1);
  if (name.length > MAX_NAME_BYTES) return refuse(ErrorCode.accessViolation, 'name-too-long');
  if (/[^\x20-\x7e]/.test(name)) return refuse(ErrorCode.accessViolation, 'control-or-non-ascii');
  // Backslashes could be Windows-style separators or escapes; neither has a meaning under our root.
  if (name.includes('\\')) return refuse(ErrorCode.accessViolation, 'backslash');
  const segments = name.split('/').filter((segment) => segment !== '' && segment !== '.');
  if (segments.includes('..')) return refuse(ErrorCode.accessViolation, 'parent-segment');
  // As over HTTP (/assets/ ignores dotfiles): hidden files are not for clients, and a download in
  // progress may be one.
  if (segments.some((segment) => segment.startsWith('.'))) return refuse(ErrorCode.fileNotFound, 'dotfile');
  // A leading '/' is how many PXE ROMs spell a name relative to the TFTP root: it was dropped above.
  if (segments.length === 0) return refuse(ErrorCode.accessViolation, 'no-file-name');
  return { ok: true, relative: segments.join('/') };
}

export interface ServedFile {
  ok: true;
  path: string;
  size: number;
  /**
   * Changes when the file is replaced or rewritten: the read cache keys on it. ctime is in it for a
   * rewrite that keeps size and mtime (cp -p, rsync -a --inplace, SOURCE_DATE_EPOCH builds): no
   * one can set ctime back.
   */
  version: string;
}

/** Resolves symlinks and checks the real path is a regular file inside the real root. */
export async function resolveServedFile(root: string, relative: string): Promise<ServedFile | Refusal> {
  try {
    const realRoot = await realpath(root);
    const realFile = await realpath(join(realRoot, relative));
    if (escapesRoot(realRoot, realFile)) return refuse(ErrorCode.accessViolation, 'outside-root');
    const status = await stat(realFile, { bigint: true });
    if (!status.isFile()) return refuse(ErrorCode.accessViolation, 'not-a-regular-file');
    return {
      ok: true,
      path: realFile,
      size: Number(status.size),
      version: `${status.dev}:${status.ino}:${status.size}:${status.mtimeNs}:${status.ctimeNs}`,
    };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return refuse(ErrorCode.fileNotFound, 'not-found');
    return refuse(ErrorCode.accessViolation, `unreadable:${code ?? 'unknown'}`);
  }
}

/** The only text a client sees for a refusal. */
export function refusalMessage(code: Refusal['code']): string {
  return code === ErrorCode.fileNotFound ? 'File not found' : 'Access violation';
}

function isJunkByte(charCode: number): boolean {
  return charCode === 0xff || charCode < 0x20;
}

function refuse(code: Refusal['code'], reason: string): Refusal {
  return { ok: false, code, reason };
}
