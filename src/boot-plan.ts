import type { Mac } from './inventory/mac.js';
import type { MachineState } from './lifecycle/events.js';

export type { Mac };

/**
 * Whether `text` can stand as one word of iPXE's `kernel` line: whitespace would split it, and a line
 * break, or a word that is exactly one of iPXE's command separators (`;`, `&&`, `||`), would end the
 * command, so the rest ran as iPXE commands. A word starting with `#` starts a comment (exec.c
 * command_terminator()): the arguments after it and the line's `|| goto rb-retry` would be dropped
 * without a word. Config checks and the script agree on it.
 */
export function isKernelWord(text: string): boolean {
  return !/[\s\x00-\x1f\x7f]/.test(text) && !text.startsWith('#') && !IPXE_COMMAND_SEPARATORS.has(text);
}

const IPXE_COMMAND_SEPARATORS = new Set([';', '&&', '||']);

/** Why a word fails isKernelWord, for every message that refuses one. */
export const NOT_A_KERNEL_WORD =
  'holds whitespace, a control character or an iPXE command separator (; && ||), or starts an iPXE comment (#…), which would split the kernel line or drop the rest of it';

/** CPU architecture of a booting machine, in the names Fedora CoreOS stream metadata uses. */
export type Arch = 'x86_64' | 'aarch64' | 'i386' | 'arm32' | 'unknown';

/**
 * What kind of program is asking to boot:
 * - `bios-pxe`: a legacy PXE ROM (needs an iPXE binary over TFTP),
 * - `uefi-pxe`: UEFI firmware's own PXE client (needs an iPXE EFI binary over TFTP),
 * - `uefi-http`: UEFI HTTP Boot (needs a full http:// URL of an EFI binary),
 * - `ipxe`: iPXE itself (needs the URL of the boot script; never an iPXE binary again).
 */
export type FirmwareKind = 'bios-pxe' | 'uefi-pxe' | 'uefi-http' | 'ipxe';

/** A booting client as the servers see it before any decision. */
export interface BootClient {
  mac: Mac;
  arch: Arch;
  firmware: FirmwareKind;
}

/**
 * The inventory's answer for one MAC. `listed` is false when the machine is not in `machines`
 * and gets the `unknown_machines` profile.
 */
export interface MachineAssignment {
  mac: Mac;
  hostname: string | undefined;
  profile: string;
  /** Reserved address (authoritative mode), if the machine has one. */
  ip: string | undefined;
  listed: boolean;
  /** Provisioning state, undefined before the first event about the machine. */
  state: MachineState | undefined;
  /**
   * It completed an install and has not been reprovisioned since: it boots from its local disk,
   * even once a later report made it `failed` (MachineRecord.bootsFromDisk).
   */
  bootsFromDisk: boolean;
}

/**
 * What to boot, separated from how to serve it (pixiecore's Booter). Servers are handed one and
 * never read the inventory themselves.
 */
export interface BootDecision {
  /**
   * The assignment for a MAC: a listed machine, or the `unknown_machines` profile for an unlisted one.
   * undefined means "not ours": unknown and `unknown_machines: ignore`, so boot servers stay silent.
   */
  assignmentFor(mac: Mac): MachineAssignment | undefined;
}

/** The iPXE build DHCP offers BIOS PXE firmware; the name is fixed, not a config key. */
export const BIOS_BOOT_PROGRAM = 'undionly.kpxe';
