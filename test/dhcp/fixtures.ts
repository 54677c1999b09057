import type { BootDecision, Mac } from '../../src/boot-plan.js';
import { MessageType, type MessageTypeName, Option } from '../../src/dhcp/options.js';
import { BOOTREQUEST, BROADCAST_FLAG, type DhcpPacket, encodeDhcpPacket } from '../../src/dhcp/packet.js';
import { createBootDecision } from '../../src/inventory/decision.js';
import { loadConfigText } from '../../src/inventory/load.js';
import type { Config } from '../../src/inventory/schema.js';
import type { MachineState } from '../../src/lifecycle/events.js';

/**
 * Shared by the DHCP tests: configs through the real loader, the real inventory BootDecision, and
 * requests shaped like what real firmware sent on this kind of machine
 * (shared/reference/real-firmware.md, "What each client sent").
 */

export interface TestConfigOptions {
  subnet: number;
  mode: 'proxy' | 'authoritative';
  state: string;
  assets?: string;
  uefiProxyStyle?: 'boot-server' | 'direct';
  unknownMachines?: string;
  leaseTime?: string;
  /** Last octet of the pool range end (pool starts at .100). */
  poolEnd?: number;
  /** Replaces the /24 pool (and drops the relay subnet, which would overlap). */
  pool?: { subnet: string; range: [string, string] };
  extraYaml?: string;
}

export const LISTED_MAC = '52:54:00:00:00:01' as Mac;
export const INSTALLED_MAC = '52:54:00:00:00:02' as Mac;
export const UNLISTED_MAC = '52:54:00:00:00:99' as Mac;

export function testConfigYaml(options: TestConfigOptions): string {
  const net = `10.77.${options.subnet}`;
  const relay = `10.77.${options.subnet + 1}`;
  const subnets = options.pool
    ? '[]'
    : `
    - subnet: ${relay}.0/24
      range: [${relay}.10, ${relay}.20]
      router: ${relay}.1
      lease_time: 30m`;
  return `
server:
  address: ${net}.1
  http: { port: 8080 }
  state: ${options.state}
  assets: ${options.assets ?? options.state}
dhcp:
  mode: ${options.mode}
  subnet: ${options.pool?.subnet ?? `${net}.0/24`}
  range: [${options.pool?.range.join(', ') ?? `${net}.100, ${net}.${options.poolEnd ?? 199}`}]
  router: ${net}.1
  dns: [${net}.1]
  domain: lab.test
  lease_time: ${options.leaseTime ?? '1h'}
  uefi_proxy_style: ${options.uefiProxyStyle ?? 'boot-server'}
  subnets: ${subnets}
unknown_machines: ${options.unknownMachines ?? 'ignore'}
profiles:
  coreos:
    kind: linux
    kernel: vmlinuz
    initrd: [initrd.img]
machines:
  - mac: ${LISTED_MAC}
    hostname: node1
    profile: coreos
    ip: ${net}.21
  - mac: ${INSTALLED_MAC}
    hostname: node2
    profile: coreos
${options.extraYaml ?? ''}`;
}

export async function loadTestConfig(options: TestConfigOptions): Promise<Config> {
  const loaded = await loadConfigText(testConfigYaml(options), `${options.state}/rackboot.yaml`, {
    missingAssets: 'warn',
  });
  if (!loaded.ok) throw new Error(`test config invalid: ${JSON.stringify(loaded.problems)}`);
  return loaded.config;
}

/** The inventory's own BootDecision; INSTALLED_MAC is in state `installed`. */
export function testDecision(config: () => Config): BootDecision {
  const states = new Map<Mac, MachineState>([[INSTALLED_MAC, 'installed']]);
  return createBootDecision(config, (mac) => states.get(mac));
}

const u16 = (value: number) => Buffer.from([value >> 8, value & 0xff]);
const text = (value: string) => Buffer.from(value, 'latin1');

/** Client options as each firmware sent them (real-firmware.md). */
export const FIRMWARE = {
  /** SeaBIOS + iPXE ROM: the first DHCP is already iPXE. */
  biosIpxeRom: (mac: Mac) =>
    new Map<number, Buffer>([
      [Option.vendorClass, text('PXEClient:Arch:00000:UNDI:002001')],
      [Option.clientArchitecture, u16(0)],
      [Option.userClass, text('iPXE')],
      [Option.ipxeEncapsulated, Buffer.from([0x13, 1, 1, 0x24, 1, 0])],
      [Option.clientIdentifier, Buffer.concat([Buffer.from([1]), macBytes(mac)])],
      [Option.clientMachineId, Buffer.alloc(17)],
    ]),
  /** A plain BIOS PXE ROM (Intel/Realtek style), no iPXE markers. */
  biosPxe: () =>
    new Map<number, Buffer>([
      [Option.vendorClass, text('PXEClient:Arch:00000:UNDI:002001')],
      [Option.clientArchitecture, u16(0)],
      [Option.clientNetworkInterface, Buffer.from([1, 2, 1])],
      [Option.clientMachineId, Buffer.concat([Buffer.from([0]), Buffer.alloc(16, 0xab)])],
    ]),
  /** OVMF EDK2 PXE (arch 7; some x64 firmware sends 9). */
  uefiPxe: (arch: number) =>
    new Map<number, Buffer>([
      [Option.vendorClass, text(`PXEClient:Arch:${String(arch).padStart(5, '0')}:UNDI:003000`)],
      [Option.clientArchitecture, u16(arch)],
      [Option.clientNetworkInterface, Buffer.from([1, 3, 0])],
      [Option.clientMachineId, Buffer.alloc(17)],
    ]),
  /** iPXE (ipxe.efi) chained from EDK2. */
  ipxeEfi: (mac: Mac) =>
    new Map<number, Buffer>([
      [Option.vendorClass, text('PXEClient:Arch:00007:UNDI:003010')],
      [Option.clientArchitecture, u16(7)],
      [Option.userClass, text('iPXE')],
      [Option.ipxeEncapsulated, Buffer.from([0x13, 1, 1, 0x24, 1, 1])],
      [Option.clientIdentifier, Buffer.concat([Buffer.from([1]), macBytes(mac)])],
    ]),
  /** OVMF HTTP Boot. */
  uefiHttp: (arch = 16) =>
    new Map<number, Buffer>([
      [Option.vendorClass, text(`HTTPClient:Arch:${String(arch).padStart(5, '0')}:UNDI:003000`)],
      [Option.clientArchitecture, u16(arch)],
      [Option.parameterRequestList, Buffer.from([1, 3, 6, 60, 67, 234])],
    ]),
  /** busybox udhcpc: no PXE markers. */
  linux: (mac: Mac) =>
    new Map<number, Buffer>([[Option.clientIdentifier, Buffer.concat([Buffer.from([1]), macBytes(mac)])]]),
};

export function macBytes(mac: Mac): Buffer {
  return Buffer.from(mac.replaceAll(':', ''), 'hex');
}

export interface RequestSpec {
  type: MessageTypeName;
  mac: Mac;
  options?: Map<number, Buffer>;
  xid?: number;
  ciaddr?: string;
  giaddr?: string;
  broadcast?: boolean;
  requested?: string;
  serverId?: string;
}

export function requestPacket(spec: RequestSpec): DhcpPacket {
  const options = new Map<number, Buffer>([[Option.messageType, Buffer.from([MessageType[spec.type]])]]);
  if (spec.requested) options.set(Option.requestedAddress, ipBytes(spec.requested));
  if (spec.serverId) options.set(Option.serverIdentifier, ipBytes(spec.serverId));
  for (const [code, value] of spec.options ?? []) options.set(code, value);
  return {
    op: BOOTREQUEST,
    htype: 1,
    hlen: 6,
    hops: spec.giaddr ? 1 : 0,
    xid: spec.xid ?? 0x12345678,
    secs: 0,
    flags: spec.broadcast === false ? 0 : BROADCAST_FLAG,
    ciaddr: spec.ciaddr ?? '0.0.0.0',
    yiaddr: '0.0.0.0',
    siaddr: '0.0.0.0',
    giaddr: spec.giaddr ?? '0.0.0.0',
    chaddr: macBytes(spec.mac),
    sname: '',
    file: '',
    options,
  };
}

export function requestBytes(spec: RequestSpec): Buffer {
  return encodeDhcpPacket(requestPacket(spec));
}

function ipBytes(address: string): Buffer {
  return Buffer.from(address.split('.').map(Number));
}
