/**
 * IPv4 addresses as unsigned 32-bit numbers: the config loader checks subnets and ranges, the DHCP
 * lease table compares and steps through addresses; both are arithmetic on numbers, not on text.
 */

const DOTTED_QUAD = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export function isIpv4(text: string): boolean {
  return DOTTED_QUAD.test(text);
}

/**
 * Dotted quad → number, for text already known to be one (isIpv4, or a decoded packet); on the
 * per-packet path, so it walks the characters instead of splitting.
 */
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

/** The network and broadcast addresses of `cidr`, which no host may have; a /31 or /32 has neither (RFC 3021). */
export function unassignableAddresses(cidr: Cidr): number[] {
  return cidr.prefixLength <= 30 ? [cidr.network, cidr.network + cidr.size - 1] : [];
}

/** `10.77.0.0/24` → Cidr, or an explanation of what is wrong. */
export function parseCidr(text: string): Cidr | { error: string } {
  const match = /^([\d.]+)\/(\d{1,2})$/.exec(text);
  const address = match?.[1];
  const prefixLength = Number(match?.[2]);
  if (!address || !isIpv4(address) || !(prefixLength >= 0 && prefixLength <= 32)) {
    return { error: `"${text}" is not a subnet in CIDR form (e.g. 10.77.0.0/24)` };
  }
  const size = 2 ** (32 - prefixLength);
  const network = ipToNumber(address);
  if (network % size !== 0) {
    const base = numberToIp(network - (network % size));
    return { error: `"${text}" has host bits set; the network is ${base}/${prefixLength}` };
  }
  return { network, prefixLength, size };
}

export function cidrContains(cidr: Cidr, address: number): boolean {
  return address >= cidr.network && address < cidr.network + cidr.size;
}

/** CIDR blocks are nested or disjoint: two overlap when one holds the other's network address. */
export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  return cidrContains(a, b.network) || cidrContains(b, a.network);
}

export function cidrMask(cidr: Cidr): number {
  return (2 ** 32 - cidr.size) >>> 0;
}
