/** IPv4 addresses as unsigned 32-bit numbers, for subnet and range arithmetic. */

const DOTTED_QUAD = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export function isIpv4(text: string): boolean {
  return DOTTED_QUAD.test(text);
}

export function ipv4ToNumber(text: string): number {
  return text.split('.').reduce((value, octet) => value * 256 + Number(octet), 0);
}

export function numberToIpv4(value: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).join('.');
}

export interface Subnet {
  network: number;
  prefixLength: number;
  /** Number of addresses, including network and broadcast. */
  size: number;
}

/** `10.77.0.0/24` → Subnet, or an explanation of what is wrong. */
export function parseSubnet(text: string): Subnet | { error: string } {
  const match = /^([\d.]+)\/(\d{1,2})$/.exec(text);
  const address = match?.[1];
  const prefixLength = Number(match?.[2]);
  if (!address || !isIpv4(address) || !(prefixLength >= 0 && prefixLength <= 32)) {
    return { error: `"${text}" is not a subnet in CIDR form (e.g. 10.77.0.0/24)` };
  }
  const size = 2 ** (32 - prefixLength);
  const network = ipv4ToNumber(address);
  if (network % size !== 0) {
    const base = numberToIpv4(network - (network % size));
    return { error: `"${text}" has host bits set; the network is ${base}/${prefixLength}` };
  }
  return { network, prefixLength, size };
}

export function subnetContains(subnet: Subnet, address: string): boolean {
  const value = ipv4ToNumber(address);
  return value >= subnet.network && value < subnet.network + subnet.size;
}

export function subnetMask(subnet: Subnet): string {
  return numberToIpv4(2 ** 32 - subnet.size);
}

export function subnetBroadcast(subnet: Subnet): string {
  return numberToIpv4(subnet.network + subnet.size - 1);
}
