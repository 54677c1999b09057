/**
 * The "installed operating system" on a lab VM's local disk: a BIOS boot sector that prints a
 * marker on COM1 and then ends QEMU through the isa-debug-exit device. When rackboot tells an
 * installed machine to boot locally, iPXE exits, SeaBIOS moves to the disk, and the marker proves
 * the machine really booted from it (rather than hanging or reinstalling).
 */

export const LOCAL_DISK_MARKER = 'RB-LAB-LOCAL-DISK-BOOTED';

/** I/O port of QEMU's `-device isa-debug-exit,iobase=0xf4,iosize=0x04`. */
export const DEBUG_EXIT_PORT = 0xf4;

const LOAD_ADDRESS = 0x7c00;
const COM1 = 0x3f8;

export function localDiskBootSector(): Buffer {
  // 16-bit real mode, loaded at 0000:7C00. Offsets in comments.
  const code = [
    0x31,
    0xc0, //             0  xor ax, ax
    0x8e,
    0xd8, //             2  mov ds, ax
    0xbe,
    0x00,
    0x00, //       4  mov si, message (patched below)
    0xba,
    COM1 & 0xff,
    COM1 >> 8, // 7  mov dx, 0x3f8
    0xac, //                  10  next: lodsb
    0x84,
    0xc0, //            11  test al, al
    0x74,
    0x03, //            13  jz done (+3 → 18)
    0xee, //                  15  out dx, al
    0xeb,
    0xf8, //            16  jmp next (-8 → 10)
    0xb0,
    0x00, //            18  done: mov al, 0
    0xe6,
    DEBUG_EXIT_PORT, // 20  out 0xf4, al → QEMU exits with status 1
    0xfa, //                  22  cli
    0xf4, //                  23  halt: hlt
    0xeb,
    0xfd, //            24  jmp halt (-3 → 23)
  ];
  const messageOffset = code.length;
  const messageAddress = LOAD_ADDRESS + messageOffset;
  code[5] = messageAddress & 0xff;
  code[6] = messageAddress >> 8;
  const sector = Buffer.alloc(512);
  Buffer.from(code).copy(sector, 0);
  Buffer.from(`\r\n${LOCAL_DISK_MARKER}\r\n\0`, 'ascii').copy(sector, messageOffset);
  // The BIOS boots a sector only with the 0x55AA signature at its end.
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}
