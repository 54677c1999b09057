/**
 * IPv4 addresses as unsigned 32-bit numbers: the lease table and the subnet checks compare and
 * step through addresses, which is arithmetic on numbers, not on dotted strings.
 */

/** Dotted quad → number; on the per-packet path, so it walks the characters instead of splitting. */
export function ipToNumber(text: string): number {
  let value = 0;
  let octet = 0;
  for (let index = 0; index < text.length; index += 1) {
    const code = text.charCodeAt(index);
    if (code === 46) {
      value = value * 256 + (octet & 0xff);
      octet = 0;
    } else {
      octet = octet * 10 + (code - 48);
    }
  }
  return (value * 256 + (octet & 0xff)) >>> 0;
}

export function numberToIp(value: number): string {
  return `${value >>> 24}.${(value >>> 16) & 0xff}.${(value >>> 8) & 0xff}.${value & 0xff}`;
}

export interface Cidr {
  network: number;
  prefixLength: number;
  /** Addresses in the subnet, network and broadcast included. */
  size: number;
}

/** `10.77.0.0/24` → Cidr; undefined for anything else (the config loader already refused bad text). */
export function parseCidr(text: string): Cidr | undefined {
  const match = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(text);
  if (!match?.[1] || !match[2]) return undefined;
  const prefixLength = Number(match[2]);
  if (prefixLength > 32) return undefined;
  const size = 2 ** (32 - prefixLength);
  const network = ipToNumber(match[1]) - (ipToNumber(match[1]) % size);
  return { network, prefixLength, size };
}

export function cidrContains(cidr: Cidr, address: number): boolean {
  return address >= cidr.network && address < cidr.network + cidr.size;
}

export function cidrMask(cidr: Cidr): number {
  return (2 ** 32 - cidr.size) >>> 0;
}

export function cidrBroadcast(cidr: Cidr): number {
  return cidr.network + cidr.size - 1;
}
