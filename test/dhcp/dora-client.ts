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
} from '../../src/dhcp/packet.js';
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
const socket = createUdp4Socket({ reuseAddr: true });
const waiting = new Map<number, (type: number, yiaddr: string, serverId: string | undefined) => void>();
socket.on('error', (error) => process.stderr.write(`dora socket error: ${error.message}\n`));
socket.on('message', (bytes) => {
  // Only replies to our own transactions are decoded: the load client must cost the server under
  // test as little shared CPU as possible.
  if (bytes.length < 240 || bytes[0] !== BOOTREPLY) return;
  const handler = waiting.get(bytes.readUInt32BE(4));
  if (!handler) return;
  const decoded = decodeDhcpPacket(bytes);
  const type = decoded.ok ? decoded.packet.options.get(Option.messageType)?.[0] : undefined;
  if (!decoded.ok || type === undefined) return;
  handler(type, decoded.packet.yiaddr, readAddress(decoded.packet.options, Option.serverIdentifier));
});
await new Promise<void>((resolve) => socket.bind({ address: '0.0.0.0', port: 68 }, resolve));
socket.setBroadcast(true);

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

let nextXid = (process.pid & 0xfff) << 20;
function request(mac: Buffer, type: number, extra: [number, Buffer][]): { xid: number; bytes: Buffer } {
  nextXid = (nextXid + 1) >>> 0;
  const packetOptions = new Map<number, Buffer>([[Option.messageType, Buffer.from([type])]]);
  for (const [code, value] of extra) packetOptions.set(code, value);
  if (options.pxe) for (const [code, value] of pxeOptions) packetOptions.set(code, value);
  const bytes = encodeDhcpPacket({
    op: BOOTREQUEST,
    htype: 1,
    hlen: 6,
    hops: 0,
    xid: nextXid,
    secs: 0,
    flags: BROADCAST_FLAG,
    ciaddr: '0.0.0.0',
    yiaddr: '0.0.0.0',
    siaddr: '0.0.0.0',
    giaddr: '0.0.0.0',
    chaddr: mac,
    sname: '',
    file: '',
    options: packetOptions,
  });
  return { xid: nextXid, bytes };
}

/** Sends and waits for the reply with the same xid; undefined on timeout. */
function exchange(bytes: Buffer, xid: number, accept: number[]) {
  return new Promise<{ type: number; yiaddr: string; serverId: string | undefined } | undefined>(
    (resolve) => {
      const timer = setTimeout(() => {
        waiting.delete(xid);
        resolve(undefined);
      }, options.timeoutMs);
      waiting.set(xid, (type, yiaddr, serverId) => {
        if (!accept.includes(type)) return;
        clearTimeout(timer);
        waiting.delete(xid);
        resolve({ type, yiaddr, serverId });
      });
      socket.send(bytes, 67, '255.255.255.255');
    },
  );
}

const ip = (text: string) => Buffer.from(text.split('.').map(Number));
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
    const discover = request(mac, MessageType.discover, []);
    const offer = await exchange(discover.bytes, discover.xid, [MessageType.offer]);
    if (!offer?.serverId) {
      retries += 1;
      continue;
    }
    const selecting = request(mac, MessageType.request, [
      [Option.requestedAddress, ip(offer.yiaddr)],
      [Option.serverIdentifier, ip(offer.serverId)],
    ]);
    const answer = await exchange(selecting.bytes, selecting.xid, [MessageType.ack, MessageType.nak]);
    if (answer?.type === MessageType.ack) {
      latencies.push(performance.now() - begin);
      acked.push([macText(mac), answer.yiaddr]);
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
  while (performance.now() < deadline) {
    const begin = performance.now();
    const initReboot = request(mac, MessageType.request, [[Option.requestedAddress, ip(address)]]);
    const answer = await exchange(initReboot.bytes, initReboot.xid, [MessageType.ack, MessageType.nak]);
    if (!answer) {
      retries += 1;
      continue;
    }
    if (answer.type === MessageType.nak) naks += 1;
    else if (answer.yiaddr !== address) mismatched += 1;
    else {
      latencies.push(performance.now() - begin);
      acked.push([macString, answer.yiaddr]);
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
socket.close();
