import type { Mac } from '../boot-plan.js';
import type { Config } from '../inventory/schema.js';
import { cidrContains, cidrMask, ipToNumber, numberToIp, parseCidr, unassignableAddresses } from '../ipv4.js';
import type { Pool, Reservations } from './leases.js';
import { encodeOption, Option } from './options.js';

/**
 * The part of the config the DHCP core reads, precomputed once per config snapshot (hot reload
 * swaps the snapshot; `settingsFor` caches by identity) so the per-packet path does no parsing.
 */
export interface DhcpSettings {
  mode: 'proxy' | 'authoritative' | 'off';
  serverAddress: string;
  /** `http://<server.address>:<http.port>` */
  baseUrl: string;
  efiBinary: string;
  arm64EfiBinary: string;
  uefiProxyStyle: 'boot-server' | 'direct';
  /** `dhcp.subnet`: the network the server is attached to; undefined in proxy mode. */
  localSubnet: SubnetSettings | undefined;
  /** `dhcp.subnet` (a relay may sit on it too) and every `dhcp.subnets` entry. */
  subnets: SubnetSettings[];
  /** Option 54 value. */
  serverIdentifier: Buffer;
  reservations: Reservations;
  /** The same reservations by MAC. */
  reservedAddressOf: ReadonlyMap<Mac, number>;
}

export interface SubnetSettings {
  pool: Pool;
  leaseSeconds: number;
  /** Options 1, 3, 6, 15, encoded once per config snapshot (the per-packet path only copies them). */
  networkOptions: ReadonlyArray<readonly [number, Buffer]>;
  /** Options 51, 58 (T1 = ½ lease) and 59 (T2 = ⅞ lease), RFC 2131 §4.4.5. */
  leaseOptions: ReadonlyArray<readonly [number, Buffer]>;
}

const cache = new WeakMap<Config, DhcpSettings>();

export function settingsFor(config: Config): DhcpSettings {
  const cached = cache.get(config);
  if (cached) return cached;
  const settings = buildSettings(config);
  cache.set(config, settings);
  return settings;
}

function buildSettings(config: Config): DhcpSettings {
  const { dhcp, server } = config;
  const serverAddress = server.address;
  const reservations = new Map<number, Mac>();
  const reservedAddressOf = new Map<Mac, number>();
  for (const machine of config.machines) {
    if (!machine.ip) continue;
    reservations.set(ipToNumber(machine.ip), machine.mac);
    reservedAddressOf.set(machine.mac, ipToNumber(machine.ip));
  }
  const subnets: SubnetSettings[] = [];
  const excluded = new Set([ipToNumber(serverAddress)]);
  const localSubnet =
    dhcp.subnet && dhcp.range
      ? subnetSettings(dhcp.subnet, dhcp.range, dhcp, dhcp.lease_time, excluded, reservations)
      : undefined;
  if (localSubnet) subnets.push(localSubnet);
  for (const relay of dhcp.subnets) {
    const subnet = subnetSettings(relay.subnet, relay.range, relay, relay.lease_time, excluded, reservations);
    if (subnet) subnets.push(subnet);
  }
  return {
    mode: dhcp.mode,
    serverAddress,
    baseUrl: `http://${serverAddress}:${server.http.port}`,
    serverIdentifier: encodeOption.addresses(serverAddress),
    efiBinary: dhcp.efi_binary,
    arm64EfiBinary: dhcp.arm64_efi_binary,
    uefiProxyStyle: dhcp.uefi_proxy_style,
    localSubnet,
    subnets,
    reservations,
    reservedAddressOf,
  };
}

function subnetSettings(
  subnetText: string,
  range: readonly [string, string],
  options: { router?: string | undefined; dns?: string[] | undefined; domain?: string | undefined },
  leaseSeconds: number,
  serverAddresses: ReadonlySet<number>,
  reservations: Reservations,
): SubnetSettings | undefined {
  const subnet = parseCidr(subnetText);
  if ('error' in subnet) return undefined;
  const excluded = new Set(serverAddresses);
  if (options.router) excluded.add(ipToNumber(options.router));
  // The DNS servers the clients are told of hold their addresses already: leasing one would clash.
  // One reserved for a machine is that DNS server's own reservation, which it gets.
  for (const dns of options.dns ?? []) if (!reservations.has(ipToNumber(dns))) excluded.add(ipToNumber(dns));
  for (const address of unassignableAddresses(subnet)) excluded.add(address);
  const networkOptions: [number, Buffer][] = [
    [Option.subnetMask, encodeOption.addresses(numberToIp(cidrMask(subnet)))],
  ];
  if (options.router) networkOptions.push([Option.router, encodeOption.addresses(options.router)]);
  if (options.dns?.length) networkOptions.push([Option.dnsServers, encodeOption.addresses(...options.dns)]);
  if (options.domain) networkOptions.push([Option.domainName, encodeOption.text(options.domain)]);
  return {
    pool: { name: subnetText, subnet, first: ipToNumber(range[0]), last: ipToNumber(range[1]), excluded },
    leaseSeconds,
    networkOptions,
    leaseOptions: [
      [Option.leaseTime, encodeOption.uint32(leaseSeconds)],
      [Option.renewalTime, encodeOption.uint32(Math.floor(leaseSeconds * 0.5))],
      [Option.rebindingTime, encodeOption.uint32(Math.floor(leaseSeconds * 0.875))],
    ],
  };
}

/**
 * The subnet a request is served from (RFC 2131 §4.3.1, §4.3.2, §4.3.5): a relayed one from the
 * subnet containing giaddr; one sent to the server's own address with ciaddr set (RENEWING, RELEASE
 * and INFORM are unicast without a relay, also by clients behind one) from the subnet containing
 * ciaddr; any other from the subnet the server itself is on (`dhcp.subnet`), never from a relay
 * subnet: a broadcast never crosses a router, so a broadcast REBIND from a relay subnet's address
 * comes from a machine moved onto the local segment, and is NAKed there.
 */
export function subnetForRequest(
  settings: DhcpSettings,
  request: { giaddr: string; ciaddr: string },
  unicast: boolean,
): SubnetSettings | undefined {
  if (request.giaddr !== UNSET) return subnetContaining(settings, ipToNumber(request.giaddr));
  const byClientAddress =
    unicast && request.ciaddr !== UNSET ? subnetContaining(settings, ipToNumber(request.ciaddr)) : undefined;
  return byClientAddress ?? settings.localSubnet;
}

const UNSET = '0.0.0.0';

function subnetContaining(settings: DhcpSettings, address: number): SubnetSettings | undefined {
  return settings.subnets.find((subnet) => cidrContains(subnet.pool.subnet, address));
}
