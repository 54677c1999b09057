import type { Arch, FirmwareKind } from '../boot-plan.js';
import { Option, type OptionMap, readText, readUint16List } from './options.js';

/**
 * Who is asking, from options 60, 77, 93 and 175 alone. Pure; what a machine gets is decided in
 * decide.ts from this plus the inventory.
 */
export interface BootFirmware {
  firmware: FirmwareKind;
  arch: Arch;
  /** Option 93 value (or the Arch field of option 60); undefined when the client sent neither. */
  archCode: number | undefined;
  /** Option 60 value to echo: `PXEClient` or `HTTPClient` (PXE spec; UEFI HTTP Boot needs the echo). */
  vendorClass: 'PXEClient' | 'HTTPClient';
}

/** IANA processor architecture types (RFC 4578 §2.1 with errata 4624) that boot over HTTP. */
const HTTP_BOOT_ARCHES = new Set([15, 16, 17, 18, 19, 20, 23, 24, 26, 28, 30, 38, 40]);

/** IANA type → the arch name Fedora CoreOS uses. 7 and 9 are both x86-64 UEFI in the field. */
export function archFromCode(code: number | undefined): Arch {
  switch (code) {
    case 0:
    case 7:
    case 9:
    case 16:
    case 20:
      return 'x86_64';
    case 6:
    case 15:
      return 'i386';
    case 10:
    case 18:
      return 'arm32';
    case 11:
    case 19:
      return 'aarch64';
    default:
      return 'unknown';
  }
}

/**
 * iPXE marks itself with user class `iPXE` (sent as four raw bytes, not the RFC 3004 length-prefixed
 * form; accept both) and with option 175. Either one means "this is already iPXE": it must get the
 * script URL, never an iPXE binary again, or the chain loops.
 */
export function isIpxe(options: OptionMap): boolean {
  if (options.has(Option.ipxeEncapsulated)) return true;
  const userClass = readText(options, Option.userClass);
  return userClass === 'iPXE' || userClass === '\x04iPXE';
}

/** undefined for clients that are not network-booting (no PXEClient/HTTPClient, no option 93, not iPXE). */
export function classifyFirmware(options: OptionMap): BootFirmware | undefined {
  const vendorClass = readText(options, Option.vendorClass) ?? '';
  const archList = readUint16List(options, Option.clientArchitecture);
  const archCode = archList?.[0] ?? archFromVendorClass(vendorClass);
  const ipxe = isIpxe(options);
  const pxe = vendorClass.startsWith('PXEClient');
  const http =
    vendorClass.startsWith('HTTPClient') || (archCode !== undefined && HTTP_BOOT_ARCHES.has(archCode));
  if (!ipxe && !pxe && !http && archList === undefined) return undefined;

  const arch = archFromCode(archCode);
  const vendorEcho = http ? 'HTTPClient' : 'PXEClient';
  if (ipxe) return { firmware: 'ipxe', arch, archCode, vendorClass: vendorEcho };
  if (http) return { firmware: 'uefi-http', arch, archCode, vendorClass: 'HTTPClient' };
  const firmware = archCode === undefined || archCode === 0 ? 'bios-pxe' : 'uefi-pxe';
  return { firmware, arch: archCode === undefined ? 'x86_64' : arch, archCode, vendorClass: 'PXEClient' };
}

/** PXE 2.1 / UEFI: `PXEClient:Arch:xxxxx:UNDI:yyyzzz`; only read when option 93 is missing. */
function archFromVendorClass(vendorClass: string): number | undefined {
  const digits = /^(?:PXE|HTTP)Client:Arch:(\d{5})/.exec(vendorClass)?.[1];
  return digits === undefined ? undefined : Number(digits);
}
