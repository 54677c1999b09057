/** A MAC address in canonical form: lower case, colon separated (`52:54:00:12:34:56`). */
export type Mac = string & { readonly __brand: 'Mac' };

const HEX_ONLY = /^[0-9a-f]{12}$/;
const SEPARATED = /^[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}$/;
const DOTTED = /^[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}$/;

/**
 * Accepts every common spelling (`52:54:00:12:34:56`, `52-54-00-12-34-56`, `5254.0012.3456`,
 * `525400123456`, any case) and returns the canonical form, or undefined when it is not a MAC.
 * On the per-request path of /boot/<mac>.ipxe: the separated spellings return without rebuilding.
 */
export function parseMac(text: string): Mac | undefined {
  const trimmed = text.trim().toLowerCase();
  if (SEPARATED.test(trimmed)) return (trimmed[2] === ':' ? trimmed : trimmed.replaceAll('-', ':')) as Mac;
  const digits = DOTTED.test(trimmed) ? trimmed.replaceAll('.', '') : trimmed;
  if (!HEX_ONLY.test(digits)) return undefined;
  return digits.replace(/(..)(?!$)/g, '$1:') as Mac;
}

/**
 * A MAC a network card can have as its own: not a group (multicast or broadcast) address and not all
 * zeros. Requests naming another (`/boot/ff-ff-ff-ff-ff-ff.ipxe`) come from no machine.
 */
export function isMachineMac(mac: Mac): boolean {
  return (Number.parseInt(mac.slice(0, 2), 16) & 1) === 0 && mac !== '00:00:00:00:00:00';
}

/** Why a MAC that is not `isMachineMac` is refused, after the MAC itself. */
export const NOT_A_MACHINE_MAC =
  'is a group (multicast or broadcast) or all-zero address, which no network card has';

const HEX_BYTES = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, '0'));

/** Canonical MAC from the first six bytes of a hardware address (DHCP chaddr); on the per-packet path. */
export function macFromBytes(bytes: Uint8Array): Mac {
  let mac = HEX_BYTES[bytes[0] ?? 0] as string;
  for (let index = 1; index < 6; index += 1) mac += `:${HEX_BYTES[bytes[index] ?? 0]}`;
  return mac as Mac;
}
