/**
 * A minimal writer of the cpio "newc" format, the only archive format the Linux kernel unpacks as
 * an initramfs (Documentation/driver-api/early-userspace/buffer-format.rst). Pure: entries in,
 * bytes out, so the lab builds its initramfs without shelling out to `find | cpio`.
 */

export type CpioEntry =
  | { kind: 'directory'; path: string; mode?: number }
  | { kind: 'file'; path: string; data: Uint8Array; mode?: number }
  | { kind: 'symlink'; path: string; target: string }
  | { kind: 'character-device'; path: string; major: number; minor: number; mode?: number };

const NEWC_MAGIC = '070701';
const TRAILER = 'TRAILER!!!';
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

function hex8(value: number): string {
  return value.toString(16).padStart(8, '0');
}

function padTo4(length: number): number {
  return (4 - (length % 4)) % 4;
}

function record(
  inode: number,
  mode: number,
  name: string,
  data: Uint8Array,
  device = { major: 0, minor: 0 },
): Buffer[] {
  const nameBytes = Buffer.from(`${name}\0`, 'utf8');
  const header = [
    NEWC_MAGIC,
    hex8(inode),
    hex8(mode),
    hex8(0), // uid: root
    hex8(0), // gid: root
    hex8(mode & S_IFDIR ? 2 : 1), // nlink
    hex8(0), // mtime: fixed, so the same inputs give the same bytes (cache keys)
    hex8(data.length),
    hex8(0), // devmajor
    hex8(0), // devminor
    hex8(device.major), // rdevmajor
    hex8(device.minor), // rdevminor
    hex8(nameBytes.length),
    hex8(0), // check (unused by newc)
  ].join('');
  // The header (110 bytes) plus the name is padded to a multiple of 4, and so is the data.
  const headerAndName = Buffer.concat([Buffer.from(header, 'ascii'), nameBytes]);
  return [
    headerAndName,
    Buffer.alloc(padTo4(headerAndName.length)),
    Buffer.from(data),
    Buffer.alloc(padTo4(data.length)),
  ];
}

export function writeCpioNewc(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  entries.forEach((entry, index) => {
    const path = entry.path.replace(/^\/+/, '');
    if (path === '') throw new Error('cpio entry with an empty path');
    const inode = index + 1;
    switch (entry.kind) {
      case 'directory':
        parts.push(...record(inode, S_IFDIR | (entry.mode ?? 0o755), path, new Uint8Array()));
        break;
      case 'file':
        parts.push(...record(inode, S_IFREG | (entry.mode ?? 0o644), path, entry.data));
        break;
      case 'symlink':
        parts.push(...record(inode, S_IFLNK | 0o777, path, Buffer.from(entry.target, 'utf8')));
        break;
      case 'character-device':
        parts.push(...record(inode, S_IFCHR | (entry.mode ?? 0o600), path, new Uint8Array(), entry));
        break;
    }
  });
  parts.push(...record(0, 0, TRAILER, new Uint8Array()));
  return Buffer.concat(parts);
}
