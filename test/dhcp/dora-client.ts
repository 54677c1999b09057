/**
 * Many DHCP clients from one socket, for the crash test and the bench; run in the client namespace:
 *   ip netns exec NS node --import tsx test/dhcp/dora-client.ts '<json DoraOptions>'
 * `dora`: every client does DISCOVER → OFFER → REQUEST → ACK (broadcast, like PXE ROMs), starting
 * over after a timeout or NAK, until the deadline. `reboot`: every (mac, ip) in `verify` sends an
 * INIT-REBOOT REQUEST for its address and must get an ACK for it. Prints `PROGRESS <acked>` every
 * `progressEvery` ACKs, `WARMED` when the unmeasured warm-up clients are done, and finally
 * `RESULT <json DoraResult>`.
 */
import { MessageType, Option, readAddress } from '../../src/dhcp/options.js';
import {
  BOOTREPLY,
  BOOTREQUEST,
  BROADCAST_FLAG,
  decodeDhcpPacket,
  encodeDhcpPacket,
  MAGIC_COOKIE,
} from '../../src/dhcp/packet.js';
import { ipToNumber, numberToIp } from '../../src/ipv4.js';
import { createUdp4Socket } from '../../src/udp.js';

export interface DoraOptions {
  mode: 'dora' | 'reboot';
  clients: number;
  concurrency: number;
  /** First three MAC bytes, e.g. `52:54:01`; the rest is the client index. */
  macPrefix: string;
  /** Send PXE firmware options (BIOS PXE ROM). */
  pxe: boolean;
  timeoutMs: number;
  deadlineMs: number;
  progressEvery?: number;
  verify?: [string, string][];
  /**
   * `dora` mode: this many clients (MACs under `warmupMacPrefix`) do their DORA first, unmeasured,
   * so this process's own JIT warm-up does not land in the measured latencies.
   */
  warmupClients?: number;
  warmupMacPrefix?: string;
  /** The warm-up's own deadline; the measured clients then get a fresh `deadlineMs`. */
  warmupDeadlineMs?: number;
  /**
   * `dora` mode: client `index` uses MAC number `index % distinctMacs`, so a long run renews the
   * same leases (default: every client its own MAC).
   */
  distinctMacs?: number;
  /** Start no new client after this long (measured phase); the ones running finish. */
  stopAfterMs?: number;
}

export interface DoraResult {
  acked: [string, string][];
  failed: number;
  naks: number;
  retries: number;
  mismatched: number;
  durationMs: number;
  /** This load process's own CPU time (user + system) over the measured phase. */
  cpuMs: number;
  latencyMs: { p50: number; p99: number; max: number };
}

const options = JSON.parse(process.argv[2] ?? '{}') as DoraOptions;

/**
 * The load client shares the host's two cores with the server under test, so every packet it
 * sends is a template copied and patched in place, and a reply is read only for its message type
 * and server identifier (the full codec cost this process ~100 µs of CPU per DORA, which the
 * server then lacked).
 */
const XID_OFFSET = 4;
const YIADDR_OFFSET = 16;
const CHADDR_OFFSET = 28;
const COOKIE_OFFSET = 236;
const OPTIONS_OFFSET = 240;

const pxeOptions: [number, Buffer][] = [
  [Option.vendorClass, Buffer.from('PXEClient:Arch:00000:UNDI:002001')],
  [Option.clientArchitecture, Buffer.from([0, 0])],
  [Option.clientNetworkInterface, Buffer.from([1, 2, 1])],
  [Option.clientMachineId, Buffer.alloc(17)],
  [
    Option.parameterRequestList,
    Buffer.from([1, 3, 6, 43, 60, 66, 67, 128, 129, 130, 131, 132, 133, 134, 135]),
  ],
];

/** A broadcast BOOTREQUEST of `type` with zeroed xid, chaddr and addresses, to patch per send. */
function template(type: number, addressOptions: number[]): Buffer {
  const packetOptions = new Map<number, Buffer>([[Option.messageType, Buffer.from([type])]]);
  for (const code of addressOptions) packetOptions.set(code, Buffer.alloc(4));
  if (options.pxe) for (const [code, value] of pxeOptions) packetOptions.set(code, value);
  return encodeDhcpPacket({
    op: BOOTREQUEST,
    htype: 1,
    hlen: 6,
    hops: 0,
    xid: 0,
    secs: 0,
    flags: BROADCAST_FLAG,
    ciaddr: '0.0.0.0',
    yiaddr: '0.0.0.0',
    siaddr: '0.0.0.0',
    giaddr: '0.0.0.0',
    chaddr: Buffer.alloc(6),
    sname: '',
    file: '',
    options: packetOptions,
  });
}

/** Offset of option `code`'s value in an encoded packet's options field (our templates only). */
function optionValueOffset(bytes: Buffer, code: number): number {
  let at = OPTIONS_OFFSET;
  while (at < bytes.length && bytes[at] !== Option.end) {
    if (bytes[at] === Option.pad) at += 1;
    else if (bytes[at] === code) return at + 2;
    else at += 2 + (bytes[at + 1] ?? 0);
  }
  throw new Error(`option ${code} missing from the request template`);
}

const discoverTemplate = template(MessageType.discover, []);
const selectingTemplate = template(MessageType.request, [Option.requestedAddress, Option.serverIdentifier]);
const initRebootTemplate = template(MessageType.request, [Option.requestedAddress]);
const REQUESTED_ADDRESS = optionValueOffset(selectingTemplate, Option.requestedAddress);
const SERVER_IDENTIFIER = optionValueOffset(selectingTemplate, Option.serverIdentifier);
const INIT_REBOOT_ADDRESS = optionValueOffset(initRebootTemplate, Option.requestedAddress);

interface Reply {
  type: number;
  yiaddr: number;
  /** 0 when the reply has no server identifier. */
  serverId: number;
}

/** The message type and server identifier of a BOOTREPLY; undefined when it is not a DHCP reply. */
function readReply(bytes: Buffer): Reply | undefined {
  if (bytes.length < OPTIONS_OFFSET || bytes.readUInt32BE(COOKIE_OFFSET) !== MAGIC_COOKIE) return undefined;
  let type = 0;
  let serverId = 0;
  let at = OPTIONS_OFFSET;
  while (at < bytes.length && bytes[at] !== Option.end) {
    const code = bytes[at] ?? Option.end;
    if (code === Option.pad) {
      at += 1;
      continue;
    }
    const length = bytes[at + 1] ?? 0;
    if (at + 2 + length > bytes.length) return undefined;
    // Overloaded sname/file fields need the full codec; no server under test sends them to this client.
    if (code === Option.overload) return decodeFully(bytes);
    if (code === Option.messageType && length === 1) type = bytes[at + 2] ?? 0;
    if (code === Option.serverIdentifier && length === 4) serverId = bytes.readUInt32BE(at + 2);
    at += 2 + length;
  }
  return type === 0 ? undefined : { type, yiaddr: bytes.readUInt32BE(YIADDR_OFFSET), serverId };
}

function decodeFully(bytes: Buffer): Reply | undefined {
  const decoded = decodeDhcpPacket(bytes);
  const type = decoded.ok ? decoded.packet.options.get(Option.messageType)?.[0] : undefined;
  if (!decoded.ok || type === undefined) return undefined;
  const serverId = readAddress(decoded.packet.options, Option.serverIdentifier);
  return { type, yiaddr: ipToNumber(decoded.packet.yiaddr), serverId: serverId ? ipToNumber(serverId) : 0 };
}

interface Pending {
  accept: number[];
  expiresAt: number;
  settle(reply: Reply | undefined): void;
}

/** Exchanges waiting for a reply, by xid; one sweep expires them instead of a timer each. */
const waiting = new Map<number, Pending>();
const socket = createUdp4Socket({ reuseAddr: true });
socket.on('error', (error) => process.stderr.write(`dora socket error: ${error.message}\n`));
socket.on('message', (bytes) => {
  if (bytes.length < OPTIONS_OFFSET || bytes[0] !== BOOTREPLY) return;
  const xid = bytes.readUInt32BE(XID_OFFSET);
  const pending = waiting.get(xid);
  if (!pending) return;
  const reply = readReply(bytes);
  if (!reply || !pending.accept.includes(reply.type)) return;
  waiting.delete(xid);
  pending.settle(reply);
});
await new Promise<void>((resolve) => socket.bind({ address: '0.0.0.0', port: 68 }, resolve));
socket.setBroadcast(true);
const sweep = setInterval(
  () => {
    const now = performance.now();
    for (const [xid, pending] of waiting) {
      if (pending.expiresAt > now) continue;
      waiting.delete(xid);
      pending.settle(undefined);
    }
  },
  Math.max(10, Math.min(100, options.timeoutMs / 4)),
);

let nextXid = (process.pid & 0xfff) << 20;

/**
 * Sends a copy of `packetTemplate` for `mac` with a new xid (and `patch` applied) and waits for the
 * reply with that xid whose type is in `accept`; undefined on timeout.
 */
function exchange(packetTemplate: Buffer, mac: Buffer, accept: number[], patch?: (bytes: Buffer) => void) {
  nextXid = (nextXid + 1) >>> 0;
  const bytes = Buffer.allocUnsafe(packetTemplate.length);
  packetTemplate.copy(bytes);
  bytes.writeUInt32BE(nextXid, XID_OFFSET);
  mac.copy(bytes, CHADDR_OFFSET);
  patch?.(bytes);
  const xid = nextXid;
  return new Promise<Reply | undefined>((settle) => {
    waiting.set(xid, { accept, expiresAt: performance.now() + options.timeoutMs, settle });
    socket.send(bytes, 67, '255.255.255.255');
  });
}

const macBytes = (prefix: string, index: number) =>
  Buffer.from([
    ...prefix.split(':').map((part) => Number.parseInt(part, 16)),
    (index >> 16) & 0xff,
    (index >> 8) & 0xff,
    index & 0xff,
  ]);
const macText = (mac: Buffer) => [...mac].map((byte) => byte.toString(16).padStart(2, '0')).join(':');

let started = performance.now();
let cpuAtStart = process.cpuUsage();
let deadline = started + options.deadlineMs;
let acked: [string, string][] = [];
let latencies: number[] = [];
let failed = 0;
let naks = 0;
let retries = 0;
let mismatched = 0;

async function dora(index: number, prefix = options.macPrefix): Promise<void> {
  const mac = macBytes(prefix, options.distinctMacs ? index % options.distinctMacs : index);
  while (performance.now() < deadline) {
    const begin = performance.now();
    const offer = await exchange(discoverTemplate, mac, [MessageType.offer]);
    if (!offer?.serverId) {
      retries += 1;
      continue;
    }
    const answer = await exchange(selectingTemplate, mac, [MessageType.ack, MessageType.nak], (bytes) => {
      bytes.writeUInt32BE(offer.yiaddr, REQUESTED_ADDRESS);
      bytes.writeUInt32BE(offer.serverId, SERVER_IDENTIFIER);
    });
    if (answer?.type === MessageType.ack) {
      latencies.push(performance.now() - begin);
      acked.push([macText(mac), numberToIp(answer.yiaddr)]);
      if (options.progressEvery && acked.length % options.progressEvery === 0) {
        process.stdout.write(`PROGRESS ${acked.length}\n`);
      }
      return;
    }
    if (answer?.type === MessageType.nak) naks += 1;
    retries += 1;
  }
  failed += 1;
}

async function reboot(index: number): Promise<void> {
  const [macString, address] = options.verify?.[index] ?? [];
  if (!macString || !address) return;
  const mac = Buffer.from(macString.replaceAll(':', ''), 'hex');
  const requested = ipToNumber(address);
  while (performance.now() < deadline) {
    const begin = performance.now();
    const answer = await exchange(initRebootTemplate, mac, [MessageType.ack, MessageType.nak], (bytes) =>
      bytes.writeUInt32BE(requested, INIT_REBOOT_ADDRESS),
    );
    if (!answer) {
      retries += 1;
      continue;
    }
    if (answer.type === MessageType.nak) naks += 1;
    else if (answer.yiaddr !== requested) mismatched += 1;
    else {
      latencies.push(performance.now() - begin);
      acked.push([macString, address]);
    }
    return;
  }
  failed += 1;
}

/** Runs `total` clients, `concurrency` at a time, each through `one(index)`, until `stopAt`. */
async function runAll(
  total: number,
  one: (index: number) => Promise<void>,
  stopAt = Number.POSITIVE_INFINITY,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(options.concurrency, total) }, async () => {
      while (next < total && performance.now() < stopAt) {
        const index = next;
        next += 1;
        await one(index);
      }
    }),
  );
}

if (options.mode === 'dora' && options.warmupClients && options.warmupMacPrefix) {
  const prefix = options.warmupMacPrefix;
  deadline = performance.now() + (options.warmupDeadlineMs ?? options.deadlineMs);
  await runAll(options.warmupClients, (index) => dora(index, prefix));
  started = performance.now();
  cpuAtStart = process.cpuUsage();
  deadline = started + options.deadlineMs;
  acked = [];
  latencies = [];
  failed = naks = retries = mismatched = 0;
  process.stdout.write('WARMED\n');
}
if (options.mode === 'reboot') await runAll(options.verify?.length ?? 0, reboot);
else await runAll(options.clients, dora, started + (options.stopAfterMs ?? Number.POSITIVE_INFINITY));
const cpuUsed = process.cpuUsage(cpuAtStart);
latencies.sort((a, b) => a - b);
const percentile = (fraction: number) =>
  latencies.length === 0
    ? Number.NaN
    : (latencies[Math.min(latencies.length - 1, Math.floor(fraction * latencies.length))] ?? Number.NaN);
const result: DoraResult = {
  acked,
  failed,
  naks,
  retries,
  mismatched,
  durationMs: performance.now() - started,
  cpuMs: (cpuUsed.user + cpuUsed.system) / 1000,
  latencyMs: { p50: percentile(0.5), p99: percentile(0.99), max: latencies.at(-1) ?? Number.NaN },
};
process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
clearInterval(sweep);
socket.close();
