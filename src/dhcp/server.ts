import type { RemoteInfo, Socket } from 'node:dgram';
import { existsSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import type { BootDecision, Mac } from '../boot-plan.js';
import { macFromBytes } from '../inventory/mac.js';
import type { Config } from '../inventory/schema.js';
import type { RecordEvent } from '../lifecycle/events.js';
import type { Logger } from '../log.js';
import { failureReporter, refusalLimiter } from '../rate-limit.js';
import { stateFileAdvice } from '../state-error.js';
import { bindUdp, createUdp4Socket, trySend } from '../udp.js';
import { AddressBook, type AddressNews } from './address-book.js';
import { type DecideContext, type Destination, decide, type Outcome } from './decide.js';
import { otherInterfacesWarning } from './interfaces.js';
import { LeaseLog } from './lease-log.js';
import { Option, readAddress } from './options.js';
import {
  type DhcpRequest,
  decodeDhcpRequest,
  encodeDhcpPacket,
  type MalformedReason,
  maxReplyBytes,
} from './packet.js';
import { settingsFor } from './settings.js';
import { operatorWarnings } from './warnings.js';

/**
 * The DHCP socket shell: receive → decode → decide → make the lease change durable and record
 * events → encode → send. Every side effect lives here; every decision in decide.ts.
 *
 * Sockets (reference §9, verified on Linux): one socket on 0.0.0.0:67 receives broadcasts; one bound
 * to server.address:67 and connected to 255.255.255.255:68 sends the limited broadcasts, because
 * Linux sends a limited broadcast out of the interface owning the sending socket's bound address —
 * so replies leave by the provisioning interface on a multi-homed host without SO_BINDTODEVICE.
 * Connected, it receives nothing. In authoritative mode a third, unconnected socket on
 * server.address:67 receives the unicast (renewals, relays: `unicast` in the decision) and sends
 * unicast replies. Proxy mode has none, so a LAN DHCP server on the same address keeps its unicast;
 * what unicast reaches rackboot arrives on the 0.0.0.0 socket, which also sends the relay replies.
 * The PXE boot-server exchange has its own socket on port 4011.
 */

export interface DhcpDeps {
  /** Current config snapshot; read per packet, so a hot reload applies to the next packet. */
  config: () => Config;
  decision: BootDecision;
  /** Provisioning events; resolves when durable. */
  record: RecordEvent;
  logger: Logger;
  /**
   * Told of every change to the server's AddressBook, from the replayed lease log on: a copy on
   * another thread answers macForIp from them (thread.ts).
   */
  onAddressNews?: (news: AddressNews) => void;
}

/**
 * Why a datagram was dropped before a decision: it does not decode, or it came from UDP port 0,
 * which no client sends from and no reply can be sent to.
 */
export type DropReason = MalformedReason | 'source-port-zero';

/** Counters for /metrics, shaped for a prom-client collector (one sample per entry). */
export interface DhcpStats {
  /**
   * `type`: DHCP message type received; `decision`: offer | ack (sent) | ack-withheld (its lease could
   * not be written) | nak | a SilenceReason.
   */
  messages: { type: string; decision: string; count: number }[];
  /** Datagrams dropped before a decision, by DropReason. */
  malformed: { reason: DropReason; count: number }[];
  /** Bound, unexpired leases (authoritative mode). */
  boundLeases: number;
}

export interface DhcpServer {
  close(): Promise<void>;
  /** The MAC holding a bound lease on (authoritative) or last asking for (proxy) an address; undefined if unknown. */
  macForIp(ip: string): Mac | undefined;
  stats(): Promise<DhcpStats>;
}

const CLIENT_PORT = 68;
const RELAY_PORT = 67;
const LIMITED_BROADCAST = '255.255.255.255';
const ASSET_CHECK_TTL_MS = 10_000;
/**
 * A client that keeps taking another server's offers is recorded once a minute, with the number of
 * requests left out since; the memo holds this many MACs.
 */
const OTHER_SERVER_RECORD_INTERVAL_MS = 60_000;
const OTHER_SERVER_MEMO_MACS = 1024;
/** Each foreign server id is warned about once; spoofed ids cannot make that an endless stream. */
const OTHER_SERVERS_WARNED_MAX = 64;
/** While lease writes keep failing (a full disk), one error line per this long, not one per packet. */
const LEASE_WRITE_ERROR_INTERVAL_MS = 60_000;

export async function startDhcpServer(deps: DhcpDeps): Promise<DhcpServer> {
  const { logger } = deps;
  const initial = deps.config();
  const addresses = new AddressBook(deps.onAddressNews);
  const { leases } = addresses;
  const opened = await LeaseLog.open(
    initial.server.state,
    () => leases.snapshot(Date.now()),
    (error) => logger.error({ err: error }, 'lease log compaction failed'),
  );
  for (const change of opened.changes) addresses.applyLease(change);
  await opened.log.compact().catch(async (error: unknown) => {
    await opened.log.close();
    throw error;
  });
  const leaseLog = opened.log;
  logger.info(
    { leases: leases.boundLeases(Date.now()).length, tornLines: opened.tornLines },
    'lease log replayed',
  );
  const { damage } = opened;
  if (damage) {
    const kept = damage.copy
      ? `the file as it was is kept as ${damage.copy}`
      : `a copy could not be kept (${damage.copyError?.message})`;
    logger.error(
      { file: leaseLog.path, ...damage },
      `lease log ${leaseLog.path}: ${damage.bytes} bytes inside it were not valid lease lines and were skipped ` +
        `(a failed write, or a damaged disk); leases written there are lost, so a client may be offered an ` +
        `address another still uses until it renews. ${kept}`,
    );
  }

  /**
   * A full disk fails every lease write until space is freed, while every client asks again every
   * few seconds: one error line a minute, with the ACKs withheld since the line before. A write error
   * names no file (ENOSPC, EIO): the line does, and what to do.
   */
  const leaseWrites = failureReporter({
    intervalMs: LEASE_WRITE_ERROR_INTERVAL_MS,
    report(error, acksWithheld) {
      const { message, code } = error as NodeJS.ErrnoException;
      const advice = stateFileAdvice(code);
      logger.error(
        { err: error, file: leaseLog.path, acksWithheld },
        `lease log ${leaseLog.path} write failed (${message}); no ACK leaves until a lease can be written${advice ? `: ${advice}` : ''}`,
      );
    },
    recovered: (acksWithheld) =>
      logger.info(
        { file: leaseLog.path, acksWithheld },
        `lease log ${leaseLog.path} written again; ACKs leave again`,
      ),
  });
  const messageCounts = new Map<string, { type: string; decision: string; count: number }>();
  const malformedCounts = new Map<DropReason, number>();
  const assetChecks = new Map<string, { exists: boolean; checkedAt: number }>();
  const otherServerRecords = refusalLimiter(OTHER_SERVER_RECORD_INTERVAL_MS, OTHER_SERVER_MEMO_MACS);
  const otherServersWarned = new Set<string>();
  const warningFor = operatorWarnings();

  const assetExists = (path: string) => {
    const now = Date.now();
    const cached = assetChecks.get(path);
    if (cached && now - cached.checkedAt < ASSET_CHECK_TTL_MS) return cached.exists;
    const exists = existsSync(join(deps.config().server.assets, path));
    assetChecks.set(path, { exists, checkedAt: now });
    return exists;
  };

  const countMessage = (type: string, decision: string) => {
    const key = `${type} ${decision}`;
    const entry = messageCounts.get(key);
    if (entry) entry.count += 1;
    else messageCounts.set(key, { type, decision, count: 1 });
  };

  /**
   * Only a REQUEST (the address it takes or renews) and an INFORM (the one it has) show the address
   * a client is behind. A DISCOVER's option 50 is a wish (RFC 2131 §4.4.1), often an old lease the LAN
   * server has since given another host; a RELEASE or DECLINE gives the address up.
   */
  const learn = (request: DhcpRequest, mac: Mac) => {
    if (request.messageType !== 'request' && request.messageType !== 'inform') return;
    const address =
      request.ciaddr !== '0.0.0.0' ? request.ciaddr : readAddress(request.options, Option.requestedAddress);
    if (address) addresses.learn(address, mac);
  };

  /**
   * A client took another DHCP server's offer. In authoritative mode that server competes for the
   * provisioning network's machines (a rogue server, or a second one by mistake): warned once per
   * server id, and the `dhcp-ignored` event kept at one per MAC and minute.
   */
  const noteOtherServer = (request: DhcpRequest, outcome: Outcome, now: number) => {
    const mac = macFromBytes(request.chaddr);
    const serverId = readAddress(request.options, Option.serverIdentifier);
    if (
      serverId !== undefined &&
      !otherServersWarned.has(serverId) &&
      otherServersWarned.size < OTHER_SERVERS_WARNED_MAX
    ) {
      otherServersWarned.add(serverId);
      logger.warn(
        { serverId, mac, xid: request.xid },
        `a client took the offer of another DHCP server, ${serverId}: it hands out addresses on this network too`,
      );
    }
    const [event] = outcome.events;
    if (!event) return;
    // No shared budget: made-up MACs could as well send DISCOVERs, each recorded as an offer.
    const leftOut = otherServerRecords(mac, now, () => true);
    if (leftOut === undefined) outcome.events = [];
    else if (Object.keys(leftOut).length > 0) event.detail = { ...event.detail, ...leftOut };
  };

  const drop = (reason: DropReason, peer: RemoteInfo, bytes: Buffer) => {
    malformedCounts.set(reason, (malformedCounts.get(reason) ?? 0) + 1);
    logger.debug({ peer: `${peer.address}:${peer.port}`, reason, bytes: bytes.length }, 'malformed');
  };

  const sockets: Socket[] = [];
  let closing = false;
  const handle = (
    bytes: Buffer,
    peer: RemoteInfo,
    arrivedOn: Socket,
    port: DecideContext['port'],
    unicast: boolean,
  ) => {
    if (closing) return;
    if (peer.port === 0) {
      drop('source-port-zero', peer, bytes);
      return;
    }
    const decoded = decodeDhcpRequest(bytes);
    if (!decoded.ok) {
      drop(decoded.reason, peer, bytes);
      return;
    }
    const request = decoded.packet;
    const now = Date.now();
    const settings = settingsFor(deps.config());
    let outcome: Outcome;
    try {
      outcome = decide(request, {
        settings,
        decision: deps.decision,
        leases,
        now,
        port,
        unicast,
        assetExists,
      });
    } catch (error) {
      countMessage(request.messageType, 'internal-error');
      logger.error({ err: error, xid: request.xid }, 'DHCP decision failed');
      return;
    }
    const decided = outcome.kind === 'reply' ? outcome.decision : outcome.reason;
    // An ACK is counted once it leaves (below): one whose lease cannot be written never does.
    if (decided !== 'ack') countMessage(request.messageType, decided);
    if (decided === 'other-server') noteOtherServer(request, outcome, now);
    const warning = warningFor(request, outcome, now);
    if (warning) logger.warn(warning.fields, warning.message);
    // Authoritative mode knows addresses from its leases; proxy mode learns them from what it overhears.
    if (settings.mode === 'proxy' && request.hlen === 6) learn(request, macFromBytes(request.chaddr));

    let durable: Promise<void> | undefined;
    if (outcome.leaseChange) {
      addresses.applyLease(outcome.leaseChange);
      if (outcome.leaseChange.kind !== 'offer') durable = leaseLog.append(outcome.leaseChange);
    }
    // async wrapper: a record() that throws synchronously becomes a rejection, not a crash.
    void Promise.all(outcome.events.map(async (event) => deps.record(event))).then(
      () => undefined,
      (error: unknown) => logger.warn({ err: error }, 'recording a DHCP event failed'),
    );
    if (outcome.kind === 'silent') {
      durable?.then(leaseWrites.succeeded, (error: unknown) => leaseWrites.failed(error, 0));
      logger.debug({ xid: request.xid, type: request.messageType, reason: outcome.reason }, 'silent');
      return;
    }
    let reply: Buffer;
    try {
      reply = encodeDhcpPacket(outcome.reply, maxReplyBytes(request));
    } catch (error) {
      countMessage(request.messageType, 'internal-error');
      logger.error({ err: error, xid: request.xid }, 'DHCP reply could not be encoded');
      return;
    }
    const target = resolveDestination(outcome.destination, peer);
    const socket = outcome.destination.kind === 'sender' ? arrivedOn : sender;
    const viaBroadcaster = outcome.destination.kind === 'broadcast' ? broadcaster : undefined;
    // A send that fails at once (closed socket, bad port) is logged here, never thrown: from a promise
    // callback it would end the process. One that fails later is the socket's 'error' event, also logged.
    const send = () => {
      const error = viaBroadcaster
        ? trySend(viaBroadcaster, reply)
        : trySend(socket, reply, target.port, target.address);
      if (error) {
        logger.warn(
          { err: error, xid: request.xid, to: `${target.address}:${target.port}` },
          'DHCP reply not sent',
        );
      }
    };
    if (outcome.decision !== 'ack') {
      send();
      return;
    }
    const acknowledge = () => {
      if (durable) leaseWrites.succeeded();
      countMessage(request.messageType, 'ack');
      send();
    };
    // An ACK leaves only once its lease is on disk, so a crash cannot forget an address in use. It
    // does not wait for the provisioning event: the lease log is what must survive a crash, and
    // waiting behind the history's group commit made DORA latency follow the event rate
    // (bench/events: -82 % DORA/s at 10,000 events/s).
    (durable ?? Promise.resolve()).then(acknowledge, (error: unknown) => {
      countMessage(request.messageType, 'ack-withheld');
      leaseWrites.failed(error, 1);
    });
  };

  const bindSocket = async (address: string, port: number, kind: DecideContext['port']) => {
    const socket = createUdp4Socket({ reuseAddr: true });
    // A socket bound to server.address receives only what was sent to it; 0.0.0.0 gets the broadcasts.
    const unicast = address !== '0.0.0.0';
    socket.on('message', (bytes, peer) => handle(bytes, peer, socket, kind, unicast));
    await bindUdp(socket, address, port).catch((error: unknown) => {
      socket.close();
      throw error;
    });
    socket.on('error', (error) => logger.error({ err: error, address, port }, 'DHCP socket error'));
    socket.setBroadcast(true);
    sockets.push(socket);
    return socket;
  };

  const { dhcp: ports, address: serverAddress } = initial.server;

  /**
   * Most replies are limited broadcasts: a socket connected to 255.255.255.255:68 sends them without
   * dgram's per-send address lookup. Connected, it receives nothing (no packet comes from that
   * address), although bound to server.address.
   */
  const connectedBroadcaster = async () => {
    const socket = await bindSocket(serverAddress, ports.port, 'dhcp');
    // With a callback, dgram hands a connect failure to it instead of emitting 'error' (Node's
    // lib/dgram.js doConnect; @types/node declares the callback without the argument).
    const error = await new Promise<Error | undefined>((resolve) => {
      socket.connect(CLIENT_PORT, LIMITED_BROADCAST, (failure?: Error) => resolve(failure));
    });
    if (!error) return socket;
    // Unconnected, it would receive every unicast to server.address:67.
    sockets.splice(sockets.indexOf(socket), 1);
    socket.close();
    throw error;
  };

  const listener = await bindSocket('0.0.0.0', ports.port, 'dhcp');
  let sender = listener;
  let broadcaster: Socket | undefined;
  try {
    // Authoritative mode reads unicast on server.address:67, so `unicast` picks a relayed renewal's
    // subnet, and sends its unicast replies from there. Proxy mode must not hold that socket: on a
    // host whose LAN DHCP server has the same address, the more specific bind would take every
    // unicast meant for that server (renewals, releases, relayed DISCOVERs) and drop it as
    // `not-for-proxy`. Its relay replies leave from the listener.
    if (initial.dhcp.mode === 'authoritative') sender = await bindSocket(serverAddress, ports.port, 'dhcp');
    broadcaster = await connectedBroadcaster();
  } catch (error) {
    logger.warn(
      { address: serverAddress, reason: (error as Error).message },
      'cannot send from server.address (is it an address of this host?); broadcast replies follow the routing table',
    );
  }
  try {
    await bindSocket('0.0.0.0', ports.proxy_port, 'boot-server');
  } catch (error) {
    // Proxy mode's UEFI offers send every UEFI PXE client to this port: without it none could boot.
    if (initial.dhcp.mode === 'proxy' && initial.dhcp.uefi_proxy_style === 'boot-server') throw error;
    logger.warn(
      { port: ports.proxy_port, reason: (error as Error).message },
      'PXE boot-server port (server.dhcp.proxy_port) unavailable; UEFI proxy boot-server style will not work',
    );
  }
  logger.info(
    { port: ports.port, proxyPort: ports.proxy_port, address: serverAddress, mode: initial.dhcp.mode },
    'DHCP listening',
  );
  if (initial.dhcp.mode !== 'off') {
    const warning = otherInterfacesWarning(networkInterfaces(), serverAddress, [
      ports.port,
      ports.proxy_port,
    ]);
    if (warning) logger.warn(warning);
  }

  return {
    async close() {
      // New requests are ignored; ACKs waiting for their lease line leave as the log finishes, while
      // the sockets are still open; then the sockets close.
      closing = true;
      try {
        await leaseLog.close();
      } finally {
        await Promise.all(
          sockets.map((socket) => new Promise<void>((resolve) => socket.close(() => resolve()))),
        );
      }
    },
    macForIp: (ip) => addresses.macForIp(ip, Date.now()),
    async stats() {
      return {
        messages: [...messageCounts.values()].map((entry) => ({ ...entry })),
        malformed: [...malformedCounts].map(([reason, count]) => ({ reason, count })),
        boundLeases: leases.boundLeases(Date.now()).length,
      };
    },
  };
}

function resolveDestination(destination: Destination, peer: RemoteInfo): { address: string; port: number } {
  switch (destination.kind) {
    case 'broadcast':
      return { address: LIMITED_BROADCAST, port: CLIENT_PORT };
    case 'relay':
      return { address: destination.address, port: RELAY_PORT };
    case 'client':
      return { address: destination.address, port: CLIENT_PORT };
    case 'sender':
      return { address: peer.address, port: peer.port };
  }
}
