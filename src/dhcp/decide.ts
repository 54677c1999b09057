import { BIOS_BOOT_PROGRAM, type BootDecision, type Mac, type MachineAssignment } from '../boot-plan.js';
import { macFromBytes } from '../inventory/mac.js';
import { cidrContains, ipToNumber, numberToIp } from '../ipv4.js';
import type { MachineEventInput } from '../lifecycle/events.js';
import { type BootFirmware, classifyFirmware } from './firmware.js';
import type { LeaseChange, LeaseTable, Pool } from './leases.js';
import { encodeOption, MessageType, Option, readAddress, readText } from './options.js';
import {
  BOOTREPLY,
  BROADCAST_FLAG,
  type DhcpPacket,
  type DhcpRequest,
  encodedLength,
  maxReplyBytes,
} from './packet.js';
import { type DhcpSettings, type SubnetSettings, subnetForRequest } from './settings.js';

/**
 * The DHCP decision core: one decoded request plus the current settings, inventory and lease
 * table → the reply to send (and where), or silence with a reason; plus the provisioning events and
 * the lease change to make durable. No sockets, files or clock: the shell (server.ts) passes `now`.
 */

export interface DecideContext {
  settings: DhcpSettings;
  decision: BootDecision;
  leases: LeaseTable;
  /** ms since the epoch */
  now: number;
  /** `dhcp`: the request came to port 67; `boot-server`: to the PXE boot-server port 4011. */
  port: 'dhcp' | 'boot-server';
  /**
   * The request was sent to the server's own address (a renewal, a relay), not broadcast. Known in
   * authoritative mode only: proxy mode has no socket of its own for that address (server.ts).
   */
  unicast: boolean;
  /** Whether a path under server.assets exists (the arm64 iPXE build is optional). */
  assetExists: (path: string) => boolean;
}

export type Destination =
  /** 255.255.255.255:68 out of the provisioning interface */
  | { kind: 'broadcast' }
  /** giaddr:67 — the relay delivers it */
  | { kind: 'relay'; address: string }
  /** ciaddr:68 — a client that has its address (RENEWING, INFORM) */
  | { kind: 'client'; address: string }
  /** back to the sender's address and port (the port-4011 boot-server exchange) */
  | { kind: 'sender' };

export type SilenceReason =
  | 'unsupported-hardware'
  | 'not-boot-client'
  | 'unknown-machine'
  | 'unsupported-arch'
  | 'arm64-binary-missing'
  | 'not-for-proxy'
  | 'dhcp-off'
  | 'no-subnet'
  | 'pool-exhausted'
  | 'other-server'
  | 'decline-without-address'
  | 'decline-not-holder'
  | 'release-not-holder'
  | 'no-binding'
  | 'no-client-state'
  | 'declined'
  | 'released'
  | 'foreign-address';

export type Outcome =
  | {
      kind: 'reply';
      decision: 'offer' | 'ack' | 'nak';
      reply: DhcpPacket;
      destination: Destination;
      events: MachineEventInput[];
      leaseChange?: LeaseChange;
    }
  | {
      kind: 'silent';
      reason: SilenceReason;
      events: MachineEventInput[];
      leaseChange?: LeaseChange;
      /**
       * `pool-exhausted`: the pool that had no address; `declined`: the pool whose lease time keeps
       * the address out. The operator's warning names it.
       */
      pool?: Pool;
    };

/** What a network-booting client is told to load. */
interface BootAnswer {
  firmware: BootFirmware;
  assignment: MachineAssignment;
  /** TFTP path under assets, or a full http:// URL (iPXE, UEFI HTTP Boot). */
  bootFile: string;
}

type BootPlan =
  | { ok: true; answer: BootAnswer }
  | { ok: false; reason: SilenceReason; firmware?: BootFirmware };

const X64_UEFI_ARCHES = new Set([7, 9, 16]);
const ARM64_UEFI_ARCHES = new Set([11, 19]);
/** Held long enough for EDK2, which collects offers for up to 11 s before it requests one. */
const OFFER_HOLD_MS = 60_000;
const ZERO = '0.0.0.0';

// Constant option values, encoded once. Replies share them: nothing mutates an option value.
const MESSAGE_TYPE_VALUES = {
  offer: encodeOption.uint8(MessageType.offer),
  ack: encodeOption.uint8(MessageType.ack),
  nak: encodeOption.uint8(MessageType.nak),
};
const VENDOR_CLASS_VALUES = {
  PXEClient: encodeOption.text('PXEClient'),
  HTTPClient: encodeOption.text('HTTPClient'),
};
/** Option 43 sub-option 6 (discovery control) = 8: skip boot-server discovery, boot `file`. */
const SKIP_DISCOVERY = encodeOption.encapsulated([[6, encodeOption.uint8(8)]]);
/** Option 175 sub-option 176 (no-pxedhcp) = 1: iPXE need not wait ~3 s for ProxyDHCP offers. */
const IPXE_NO_PROXYDHCP = encodeOption.encapsulated([[176, encodeOption.uint8(1)]]);

export function decide(request: DhcpRequest, context: DecideContext): Outcome {
  const outcome = decideMessage(request, context);
  if (outcome.kind === 'reply') {
    echoRelayAgentInformation(request, outcome.reply);
    fitReply(outcome, maxReplyBytes(request));
  }
  return outcome;
}

/**
 * RFC 3046 §2.2: the relay agent's option 82 goes back unchanged in every reply, as the last option:
 * relays and switches with DHCP snooping pick the client's port from its circuit id, and some drop
 * replies without it. Set after every other option, and never left out to make a reply fit.
 */
function echoRelayAgentInformation(request: DhcpRequest, reply: DhcpPacket): void {
  const value = request.options.get(Option.relayAgentInformation);
  if (value && value.length <= 255) reply.options.set(Option.relayAgentInformation, value);
}

function decideMessage(request: DhcpRequest, context: DecideContext): Outcome {
  // Leases and the inventory are keyed by Ethernet MAC; other hardware types cannot PXE boot here.
  if (request.htype !== 1 || request.hlen !== 6) return silent('unsupported-hardware');
  const mac = macFromBytes(request.chaddr);
  const { settings } = context;
  if (settings.mode === 'off') return silent('dhcp-off');
  if (context.port === 'boot-server') return decideBootServer(request, mac, context);
  if (settings.mode === 'proxy') return decideProxy(request, mac, context);
  return decideAuthoritative(request, mac, context);
}

/** What a client can boot without, least needed first. */
const OPTIONAL_OPTIONS = [Option.hostName, Option.domainName, Option.dnsServers];

/**
 * Leaves optional options out of a reply larger than its client accepts (long host names, domain
 * and DNS lists come from the config), rather than sending nothing; the event says which.
 */
function fitReply(outcome: Extract<Outcome, { kind: 'reply' }>, maxBytes: number): void {
  const omitted: number[] = [];
  for (const code of OPTIONAL_OPTIONS) {
    if (encodedLength(outcome.reply) <= maxBytes) break;
    if (outcome.reply.options.delete(code)) omitted.push(code);
  }
  if (omitted.length === 0) return;
  for (const event of outcome.events) event.detail = { ...event.detail, omittedOptions: omitted };
}

/**
 * Which file or URL a boot client gets. The chain cannot loop: anything that identifies as iPXE
 * gets the script URL and never an iPXE binary, and only non-iPXE firmware gets a binary.
 */
export function planBoot(request: DhcpPacket, mac: Mac, context: DecideContext): BootPlan {
  const firmware = classifyFirmware(request.options);
  if (!firmware) return { ok: false, reason: 'not-boot-client' };
  const assignment = context.decision.assignmentFor(mac);
  if (!assignment) return { ok: false, reason: 'unknown-machine', firmware };
  const { settings } = context;
  let bootFile: string;
  switch (firmware.firmware) {
    case 'ipxe':
      bootFile = `${settings.baseUrl}/boot.ipxe`;
      break;
    case 'bios-pxe':
      bootFile = BIOS_BOOT_PROGRAM;
      break;
    case 'uefi-pxe':
    case 'uefi-http': {
      const binary = efiBinaryFor(firmware.archCode, context);
      if (!binary.ok) return { ok: false, reason: binary.reason, firmware };
      bootFile =
        firmware.firmware === 'uefi-http' ? `${settings.baseUrl}/assets/${binary.path}` : binary.path;
      break;
    }
  }
  return { ok: true, answer: { firmware, assignment, bootFile } };
}

/** The iPXE EFI build for a UEFI arch; the arm64 build only when it is present under assets. */
function efiBinaryFor(
  archCode: number | undefined,
  context: DecideContext,
): { ok: true; path: string } | { ok: false; reason: 'arm64-binary-missing' | 'unsupported-arch' } {
  const { settings } = context;
  if (archCode !== undefined && X64_UEFI_ARCHES.has(archCode)) return { ok: true, path: settings.efiBinary };
  if (archCode === undefined || !ARM64_UEFI_ARCHES.has(archCode))
    return { ok: false, reason: 'unsupported-arch' };
  return context.assetExists(settings.arm64EfiBinary)
    ? { ok: true, path: settings.arm64EfiBinary }
    : { ok: false, reason: 'arm64-binary-missing' };
}

function decideProxy(request: DhcpRequest, mac: Mac, context: DecideContext): Outcome {
  // Proxy mode answers only DISCOVER on 67 (the address comes from the LAN's server) and the
  // port-4011 REQUEST; the client's REQUEST/RELEASE on 67 belong to the LAN server.
  if (request.messageType !== 'discover') return silent('not-for-proxy');
  const plan = planBoot(request, mac, context);
  if (!plan.ok) return silentBoot(request, mac, plan, context);
  const { answer } = plan;
  const reply = replyTo(request, 'offer', context.settings);
  reply.flags |= BROADCAST_FLAG;
  reply.siaddr = context.settings.serverAddress;
  // PXE 2.1: a ProxyDHCP offer identifies as PXEClient, and echoes the client's GUID (option 97).
  reply.options.set(Option.vendorClass, VENDOR_CLASS_VALUES[answer.firmware.vendorClass]);
  echo(request, reply, Option.clientMachineId);
  const firmware = answer.firmware.firmware;
  // boot-server style leaves UEFI PXE without a file: EDK2 then asks on port 4011 (ProxyBinl), as
  // with dnsmasq and pixiecore.
  const leaveToBootServer = firmware === 'uefi-pxe' && context.settings.uefiProxyStyle === 'boot-server';
  if (!leaveToBootServer) {
    setBootFile(reply, answer);
    if (firmware === 'bios-pxe' || firmware === 'uefi-pxe')
      reply.options.set(Option.vendorSpecific, SKIP_DISCOVERY);
  }
  return {
    kind: 'reply',
    decision: 'offer',
    reply,
    destination: destinationOf(request, 'offer'),
    events: [
      dhcpEvent('dhcp-offer', request, mac, {
        firmware: answer.firmware,
        mode: context.settings.mode,
        bootFile: reply.file || undefined,
      }),
    ],
  };
}

function decideBootServer(request: DhcpRequest, mac: Mac, context: DecideContext): Outcome {
  if (request.messageType !== 'request' && request.messageType !== 'inform') return silent('not-for-proxy');
  const plan = planBoot(request, mac, context);
  if (!plan.ok) return silentBoot(request, mac, plan, context);
  const reply = replyTo(request, 'ack', context.settings);
  reply.ciaddr = request.ciaddr;
  reply.siaddr = context.settings.serverAddress;
  reply.options.set(Option.vendorClass, VENDOR_CLASS_VALUES[plan.answer.firmware.vendorClass]);
  echo(request, reply, Option.clientMachineId);
  setBootFile(reply, plan.answer);
  const ip = request.ciaddr === ZERO ? undefined : request.ciaddr;
  return {
    kind: 'reply',
    decision: 'ack',
    reply,
    destination: { kind: 'sender' },
    events: [
      dhcpEvent('dhcp-ack', request, mac, {
        firmware: plan.answer.firmware,
        mode: context.settings.mode,
        bootFile: reply.file,
        ip,
        bootServer: true,
      }),
    ],
  };
}

function decideAuthoritative(request: DhcpRequest, mac: Mac, context: DecideContext): Outcome {
  const subnet = subnetForRequest(context.settings, request, context.unicast);
  // A relay whose network no subnet entry holds: a boot client behind it is left unanswered, and its
  // event (detail.relay) is the operator's only trace of the missing dhcp.subnets entry.
  if (!subnet)
    return silentBoot(
      request,
      mac,
      { reason: 'no-subnet', firmware: classifyFirmware(request.options) },
      context,
    );
  switch (request.messageType) {
    case 'discover':
      return offerAddress(request, mac, subnet, context);
    case 'request':
      return answerRequest(request, mac, subnet, context);
    case 'decline':
      return recordDecline(request, mac, subnet, context);
    case 'release':
      return recordRelease(request, mac, context);
    case 'inform':
      return answerInform(request, mac, subnet, context);
  }
  return silent('no-client-state');
}

function offerAddress(
  request: DhcpRequest,
  mac: Mac,
  subnet: SubnetSettings,
  context: DecideContext,
): Outcome {
  const { settings, leases, now } = context;
  const requested = readAddress(request.options, Option.requestedAddress);
  const ip = leases.chooseAddress({
    mac,
    reserved: settings.reservedAddressOf.get(mac),
    requested: requested === undefined ? undefined : ipToNumber(requested),
    pool: subnet.pool,
    reservations: settings.reservations,
    now,
  });
  if (ip === undefined) {
    // The firmware makes a booting machine `discovered` in the history, so `rackboot machines` shows
    // it trying to boot rather than `not seen`.
    const firmware = classifyFirmware(request.options);
    return { ...ignored(request, mac, { reason: 'pool-exhausted', firmware }), pool: subnet.pool };
  }
  const leaseChange: LeaseChange = { kind: 'offer', mac, ip, expiresAt: now + OFFER_HOLD_MS };
  return addressReply(request, mac, 'offer', numberToIp(ip), subnet, context, leaseChange);
}

/** RFC 2131 §4.3.2: the client's state follows from which of option 54, option 50 and ciaddr it sent. */
function answerRequest(
  request: DhcpRequest,
  mac: Mac,
  subnet: SubnetSettings,
  context: DecideContext,
): Outcome {
  const { settings, leases } = context;
  const serverId = readAddress(request.options, Option.serverIdentifier);
  const requested = readAddress(request.options, Option.requestedAddress);
  const ciaddr = request.ciaddr === ZERO ? undefined : request.ciaddr;

  if (serverId !== undefined) {
    // SELECTING. Another server's id means the client took that offer: free ours, stay silent. In
    // authoritative mode that server may be a rogue one taking our machines: the event is its trace
    // (the shell rate-limits it per MAC).
    if (serverId !== settings.serverAddress) {
      const own = leases.leaseOf(mac);
      const leaseChange: LeaseChange | undefined =
        own?.state === 'offered' ? { kind: 'release', mac, ip: own.ip, at: context.now } : undefined;
      const silence = ignored(request, mac, { reason: 'other-server', serverId });
      return leaseChange ? { ...silence, leaseChange } : silence;
    }
    const chosen = requested ?? ciaddr;
    if (chosen === undefined) return nak(request, mac, 'no address requested', subnet, context);
    return bindAddress(request, mac, chosen, subnet, context);
  }
  if (requested !== undefined && ciaddr === undefined) {
    // INIT-REBOOT: NAK a wrong address; with no record of the client, stay silent (§4.3.2) — unless
    // the address is another client's unexpired lease or another machine's reservation: those we
    // know are wrong for it (Kea NAKs too).
    const ip = ipToNumber(requested);
    if (!cidrContains(subnet.pool.subnet, ip)) {
      return nak(request, mac, 'requested address is not on this network', subnet, context);
    }
    const own = leases.leaseOf(mac);
    if (!own) {
      const conflict = conflictOver(ip, mac, context);
      return conflict ? nak(request, mac, conflict, subnet, context) : silent('no-binding');
    }
    if (numberToIp(own.ip) !== requested)
      return nak(request, mac, 'requested address is not yours', subnet, context);
    return bindAddress(request, mac, requested, subnet, context);
  }
  if (ciaddr !== undefined) return bindAddress(request, mac, ciaddr, subnet, context);
  return silent('no-client-state');
}

/**
 * ACK `address` to `mac` if it may have it (extending a lease it holds), else NAK. A machine with a
 * reservation in this subnet may have only that address, or, as long as the reservation cannot be
 * given to it (declined, or held by another client since a reload), a pool address: what
 * chooseAddress offers it. Once the reservation is free, the pool address is NAKed, so the machine
 * starts over and is offered its reservation.
 */
function bindAddress(
  request: DhcpRequest,
  mac: Mac,
  address: string,
  subnet: SubnetSettings,
  context: DecideContext,
): Outcome {
  const { settings, leases, now } = context;
  const ip = ipToNumber(address);
  const { pool } = subnet;
  const reservation = reservationIn(subnet, mac, settings);
  const inPool = ip >= pool.first && ip <= pool.last && !pool.excluded.has(ip);
  const allowed =
    reservation === undefined ||
    pool.excluded.has(reservation) ||
    !leases.isAvailable(reservation, mac, settings.reservations, now)
      ? inPool
      : ip === reservation;
  if (!cidrContains(pool.subnet, ip) || !allowed)
    return nak(request, mac, 'address not offered to you', subnet, context);
  if (!leases.isAvailable(ip, mac, settings.reservations, now))
    return nak(request, mac, conflictOver(ip, mac, context) ?? 'address in use', subnet, context);
  const assignment = context.decision.assignmentFor(mac);
  const leaseChange: LeaseChange = {
    kind: 'bind',
    mac,
    ip,
    expiresAt: now + subnet.leaseSeconds * 1000,
    hostname: assignment?.hostname,
  };
  return addressReply(request, mac, 'ack', address, subnet, context, leaseChange);
}

/**
 * Why `ip` is known to be wrong for `mac`, as a NAK says it: another client's unexpired lease, else
 * another machine's reservation (a holder NAKed because a reload reserved its address is the only
 * one using it, so "in use" would send the operator looking for a conflict). Undefined when neither.
 */
function conflictOver(
  ip: number,
  mac: Mac,
  context: DecideContext,
): 'address in use' | 'address reserved for another machine' | undefined {
  const holder = context.leases.holderOf(ip);
  if (holder && holder.mac !== mac && holder.state === 'bound' && holder.expiresAt > context.now)
    return 'address in use';
  const reservedFor = context.settings.reservations.get(ip);
  if (reservedFor !== undefined && reservedFor !== mac) return 'address reserved for another machine';
  return undefined;
}

/**
 * OFFER or ACK carrying an address: network options, lease timers and, for boot clients of ours,
 * the boot file. Unknown or unsupported boot clients still get an address here (the network is
 * ours and they need one); they just get no boot file, so their firmware moves on to the next device.
 */
function addressReply(
  request: DhcpRequest,
  mac: Mac,
  type: 'offer' | 'ack',
  address: string,
  subnet: SubnetSettings,
  context: DecideContext,
  leaseChange: LeaseChange,
): Outcome {
  const reply = replyTo(request, type, context.settings);
  reply.yiaddr = address;
  if (type === 'ack') reply.ciaddr = request.ciaddr;
  for (const [code, value] of subnet.leaseOptions) reply.options.set(code, value);
  setNetworkOptions(reply, subnet);
  const plan = planBoot(request, mac, context);
  const hostname = plan.ok ? plan.answer.assignment.hostname : context.decision.assignmentFor(mac)?.hostname;
  if (hostname) reply.options.set(Option.hostName, encodeOption.text(hostname));
  const eventType = type === 'offer' ? 'dhcp-offer' : 'dhcp-ack';
  // Offer and bind give a reserved machine another address only while its reservation is unavailable.
  const reservation = reservationIn(subnet, mac, context.settings);
  const reservationUnavailable =
    reservation !== undefined && reservation !== leaseChange.ip ? numberToIp(reservation) : undefined;
  let event: MachineEventInput;
  if (plan.ok) {
    reply.siaddr = context.settings.serverAddress;
    setBootFile(reply, plan.answer);
    if (plan.answer.firmware.firmware === 'uefi-http') {
      reply.options.set(Option.vendorClass, VENDOR_CLASS_VALUES.HTTPClient);
    }
    if (plan.answer.firmware.firmware === 'ipxe') {
      // We are the only server on this network: no ProxyDHCP offer will come.
      reply.options.set(Option.ipxeEncapsulated, IPXE_NO_PROXYDHCP);
    }
    event = dhcpEvent(eventType, request, mac, {
      firmware: plan.answer.firmware,
      mode: context.settings.mode,
      bootFile: reply.file,
      ip: address,
      reservationUnavailable,
    });
  } else {
    event = dhcpEvent(eventType, request, mac, {
      ip: address,
      firmware: plan.firmware,
      reason: plan.reason === 'not-boot-client' ? undefined : plan.reason,
      reservationUnavailable,
    });
  }
  return {
    kind: 'reply',
    decision: type,
    reply,
    destination: destinationOf(request, type, subnet),
    events: [event],
    leaseChange,
  };
}

/**
 * The event names the address refused (option 50, else ciaddr) and the client's ciaddr, so an
 * operator can tell a stale lease (an address from elsewhere) from a conflict (another MAC's).
 */
function nak(
  request: DhcpRequest,
  mac: Mac,
  message: string,
  subnet: SubnetSettings,
  context: DecideContext,
): Outcome {
  const reply = replyTo(request, 'nak', context.settings);
  // RFC 2131 §4.3.2: a relayed NAK carries the broadcast bit, so the relay broadcasts it on.
  if (request.giaddr !== ZERO) reply.flags |= BROADCAST_FLAG;
  reply.options.set(Option.message, encodeOption.text(message));
  const ciaddr = request.ciaddr === ZERO ? undefined : request.ciaddr;
  const requested = readAddress(request.options, Option.requestedAddress) ?? ciaddr;
  return {
    kind: 'reply',
    decision: 'nak',
    reply,
    destination: destinationOf(request, 'nak', subnet, context.unicast),
    events: [dhcpEvent('dhcp-nak', request, mac, { message, requested, ciaddr })],
  };
}

function recordDecline(
  request: DhcpRequest,
  mac: Mac,
  subnet: SubnetSettings,
  context: DecideContext,
): Outcome {
  const declined = readAddress(request.options, Option.requestedAddress);
  const serverId = readAddress(request.options, Option.serverIdentifier);
  if (serverId !== undefined && serverId !== context.settings.serverAddress) return silent('other-server');
  if (declined === undefined) return silent('decline-without-address');
  // RFC 2131 §4.3.3: a client declines the address it was given. Anyone else's DECLINE would take
  // an address from its holder, and fill the table and the lease log with addresses at will.
  const own = context.leases.leaseOf(mac);
  const ip = ipToNumber(declined);
  if (!own || own.state === 'free' || own.ip !== ip || !cidrContains(subnet.pool.subnet, ip)) {
    return silent('decline-not-holder');
  }
  const until = context.now + subnet.leaseSeconds * 1000;
  return {
    kind: 'silent',
    reason: 'declined',
    events: [dhcpEvent('dhcp-decline', request, mac, { ip: declined })],
    leaseChange: { kind: 'decline', ip, until },
    pool: subnet.pool,
  };
}

/**
 * Only the holder's RELEASE of its own address changes a lease and is recorded; anyone else's is
 * counted (`release-not-holder`), as DECLINE's are, so a stranger cannot fill the event history.
 */
function recordRelease(request: DhcpRequest, mac: Mac, context: DecideContext): Outcome {
  const own = context.leases.leaseOf(mac);
  if (!own || numberToIp(own.ip) !== request.ciaddr || own.state === 'free') {
    return silent('release-not-holder');
  }
  return {
    kind: 'silent',
    reason: 'released',
    events: [dhcpEvent('dhcp-release', request, mac, { ip: request.ciaddr })],
    leaseChange: { kind: 'release', mac, ip: own.ip, at: context.now },
  };
}

/**
 * RFC 2131 §4.3.5: configuration only; no lease time, yiaddr 0, sent "directly to the address given
 * in ciaddr", relayed or not: a relay delivers a reply to yiaddr (RFC 1542 §5.4), which here is 0.
 * ISC dhcpd and Kea do the same.
 */
function answerInform(
  request: DhcpRequest,
  mac: Mac,
  subnet: SubnetSettings,
  context: DecideContext,
): Outcome {
  // A host of another network the server is also on (its management LAN) must not be handed this
  // one's mask, router and DNS; dnsmasq stays silent too.
  if (request.ciaddr === ZERO || !cidrContains(subnet.pool.subnet, ipToNumber(request.ciaddr))) {
    return silent('foreign-address');
  }
  const reply = replyTo(request, 'ack', context.settings);
  reply.ciaddr = request.ciaddr;
  setNetworkOptions(reply, subnet);
  return {
    kind: 'reply',
    decision: 'ack',
    reply,
    destination: { kind: 'client', address: request.ciaddr },
    events: [dhcpEvent('dhcp-inform', request, mac, { ip: request.ciaddr })],
  };
}

/** RFC 2131 Table 3: copied xid, flags, giaddr, chaddr; option 53 first, then 54; client id echoed (RFC 6842). */
function replyTo(request: DhcpRequest, type: 'offer' | 'ack' | 'nak', settings: DhcpSettings): DhcpPacket {
  const options = new Map<number, Buffer>();
  options.set(Option.messageType, MESSAGE_TYPE_VALUES[type]);
  options.set(Option.serverIdentifier, settings.serverIdentifier);
  const reply: DhcpPacket = {
    op: BOOTREPLY,
    htype: request.htype,
    hlen: request.hlen,
    hops: 0,
    xid: request.xid,
    secs: 0,
    flags: request.flags & BROADCAST_FLAG,
    ciaddr: ZERO,
    yiaddr: ZERO,
    siaddr: ZERO,
    giaddr: request.giaddr,
    chaddr: request.chaddr,
    sname: '',
    file: '',
    options,
  };
  echo(request, reply, Option.clientIdentifier);
  return reply;
}

/** The address reserved for `mac` if it lies in `subnet`; a reservation elsewhere does not bind it here. */
function reservationIn(subnet: SubnetSettings, mac: Mac, settings: DhcpSettings): number | undefined {
  const reserved = settings.reservedAddressOf.get(mac);
  return reserved !== undefined && cidrContains(subnet.pool.subnet, reserved) ? reserved : undefined;
}

function setNetworkOptions(reply: DhcpPacket, subnet: SubnetSettings): void {
  for (const [code, value] of subnet.networkOptions) reply.options.set(code, value);
}

/**
 * PXE ROMs read siaddr + the `file` field (some old Intel ROMs mangle option 67), so the file field
 * always carries it; URLs also go in option 67, which iPXE and EDK2 HTTP Boot read first.
 */
function setBootFile(reply: DhcpPacket, answer: BootAnswer): void {
  reply.file = answer.bootFile;
  if (answer.bootFile.startsWith('http://')) {
    reply.options.set(Option.bootFileName, encodeOption.text(answer.bootFile));
  }
}

/**
 * Echoes a client option, within sane bounds: a PXE GUID (97) is 17 bytes (RFC 4578 §2.3), and a
 * client identifier longer than 64 bytes is not a real one — echoing arbitrary lengths could push a
 * reply past the 548 bytes every client accepts.
 */
function echo(request: DhcpPacket, reply: DhcpPacket, code: number): void {
  const value = request.options.get(code);
  if (!value) return;
  const acceptable = code === Option.clientMachineId ? value.length === 17 : value.length <= MAX_ECHOED_BYTES;
  if (acceptable) reply.options.set(code, value);
}

const MAX_ECHOED_BYTES = 64;

/**
 * RFC 2131 §4.1: relay first, NAK broadcast, then ciaddr ("the server unicasts DHCPOFFER and
 * DHCPACK messages to the address in 'ciaddr'"), else broadcast. A ciaddr outside the `subnet` the
 * reply is for is stale (a DISCOVER from a machine moved here from a relayed rack): unicast to it
 * would be routed away from the client, so the reply is broadcast. The NAK of a renewal (`unicast`:
 * sent to the server's address) goes to ciaddr: a client behind a relay renews
 * without giaddr, and a NAK broadcast on the server's segment never crosses the relay.
 */
function destinationOf(
  request: DhcpRequest,
  type: 'offer' | 'ack' | 'nak',
  subnet?: SubnetSettings,
  unicast = false,
): Destination {
  if (request.giaddr !== ZERO) return { kind: 'relay', address: request.giaddr };
  if (type === 'nak' && !unicast) return { kind: 'broadcast' };
  const ciaddrReachable =
    request.ciaddr !== ZERO && (!subnet || cidrContains(subnet.pool.subnet, ipToNumber(request.ciaddr)));
  if (ciaddrReachable) return { kind: 'client', address: request.ciaddr };
  // Unicast to yiaddr needs the L2 destination set to chaddr (no ARP yet), which Node cannot do.
  return { kind: 'broadcast' };
}

function silent(reason: SilenceReason): Outcome {
  return { kind: 'silent', reason, events: [] };
}

/** A boot client we do not answer is worth an event (the operator wants to see unknown machines). */
function silentBoot(
  request: DhcpRequest,
  mac: Mac,
  plan: { reason: SilenceReason; firmware?: BootFirmware },
  context: DecideContext,
): Outcome {
  if (!plan.firmware) return silent(plan.reason);
  return ignored(request, mac, { reason: plan.reason, mode: context.settings.mode, firmware: plan.firmware });
}

/** Silence the history records, as a `dhcp-ignored` event with the same reason. */
function ignored(
  request: DhcpRequest,
  mac: Mac,
  fields: EventFields & { reason: SilenceReason },
): Extract<Outcome, { kind: 'silent' }> {
  return { kind: 'silent', reason: fields.reason, events: [dhcpEvent('dhcp-ignored', request, mac, fields)] };
}

interface EventFields {
  ip?: string | undefined;
  firmware?: BootFirmware | undefined;
  mode?: DhcpSettings['mode'];
  bootFile?: string | undefined;
  reason?: SilenceReason | undefined;
  message?: string;
  /** A NAK's refused address: option 50, else ciaddr. */
  requested?: string | undefined;
  ciaddr?: string | undefined;
  /** Another DHCP server's identifier (option 54), which the client chose. */
  serverId?: string | undefined;
  /** The answer went out on the PXE boot-server port (4011). */
  bootServer?: boolean;
  /** The machine's reserved address, when it got another one because that one was unavailable. */
  reservationUnavailable?: string | undefined;
}

/** One provisioning event; built by assignment, as it is on the per-packet path. */
function dhcpEvent(type: string, request: DhcpRequest, mac: Mac, fields: EventFields): MachineEventInput {
  const detail: Record<string, unknown> = { xid: request.xid.toString(16).padStart(8, '0') };
  const vendorClass = readText(request.options, Option.vendorClass);
  if (vendorClass !== undefined) detail.vendorClass = vendorClass;
  if (request.giaddr !== ZERO) detail.relay = request.giaddr;
  if (fields.firmware) {
    detail.firmware = fields.firmware.firmware;
    detail.arch = fields.firmware.arch;
    detail.archCode = fields.firmware.archCode;
  }
  if (fields.mode) detail.mode = fields.mode;
  if (fields.bootFile !== undefined) detail.bootFile = fields.bootFile;
  if (fields.ip) detail.ip = fields.ip;
  if (fields.reason) detail.reason = fields.reason;
  if (fields.message) detail.message = fields.message;
  if (fields.requested) detail.requested = fields.requested;
  if (fields.ciaddr) detail.ciaddr = fields.ciaddr;
  if (fields.serverId) detail.serverId = fields.serverId;
  if (fields.bootServer) detail.port = 'boot-server';
  if (fields.reservationUnavailable) detail.reservationUnavailable = fields.reservationUnavailable;
  const event: MachineEventInput = { mac, source: 'dhcp', type, detail };
  if (fields.ip) event.ip = fields.ip;
  return event;
}
