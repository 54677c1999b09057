import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { type NetworkInterfaceInfo, tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import type { Mac } from '../src/boot-plan.js';
import { type DecideContext, decide, type Outcome } from '../src/dhcp/decide.js';
import { otherInterfacesWarning } from '../src/dhcp/interfaces.js';
import { LeaseTable } from '../src/dhcp/leases.js';
import { Option, readText } from '../src/dhcp/options.js';
import { BOOTREPLY, decodeDhcpRequest } from '../src/dhcp/packet.js';
import { settingsFor } from '../src/dhcp/settings.js';
import { stopChild } from '../src/lab/network.js';
import {
  FIRMWARE,
  LISTED_MAC,
  loadTestConfig,
  type RequestSpec,
  requestBytes,
  testConfigYaml,
  testDecision,
} from './dhcp/fixtures.js';
import { launchDhcp, type Received, startProbe } from './dhcp/harness.js';
import { type Namespace, requireTools, run, waitForOutput } from './helpers/netns.js';

// Review fixes of 2026-11-27 (docs/dhcp.md): NAK details, RELEASE guard, the other-server trace,
// INIT-REBOOT NAK for another client's address, the multi-homed warning. Addresses: 10.77.192.0/24.
const SERVER = '10.77.192.1';
const NOW = Date.UTC(2026, 10, 27, 12);
const config = await loadTestConfig({
  subnet: 192,
  mode: 'authoritative',
  state: '/nonexistent/state',
  pool: { subnet: '10.77.192.0/24', range: ['10.77.192.100', '10.77.192.199'] },
});
const HOLDER = '52:54:00:42:00:01' as Mac;
const STRANGER = '52:54:00:42:00:02' as Mac;

function decideFor(spec: RequestSpec, leases: LeaseTable, context: Partial<DecideContext> = {}): Outcome {
  const decoded = decodeDhcpRequest(requestBytes(spec));
  if (!decoded.ok) throw new Error(decoded.reason);
  const outcome = decide(decoded.packet, {
    settings: settingsFor(config),
    decision: testDecision(() => config),
    leases,
    now: NOW,
    port: 'dhcp',
    unicast: false,
    assetExists: () => false,
    ...context,
  });
  if (outcome.leaseChange) leases.apply(outcome.leaseChange);
  return outcome;
}

/** A table where HOLDER has a bound lease; returns its address. */
function boundTable(): { leases: LeaseTable; address: string } {
  const leases = new LeaseTable();
  const offer = decideFor({ type: 'discover', mac: HOLDER }, leases);
  if (offer.kind !== 'reply') throw new Error('no offer');
  const address = offer.reply.yiaddr;
  decideFor({ type: 'request', mac: HOLDER, requested: address, serverId: SERVER }, leases);
  return { leases, address };
}

t.test('a NAK event names the refused address, and ciaddr and the relay where present', async (t) => {
  const { leases, address } = boundTable();
  const cases: [string, RequestSpec, Record<string, unknown>][] = [
    [
      'INIT-REBOOT from another network',
      { type: 'request', mac: HOLDER, requested: '192.168.1.5' },
      { message: 'requested address is not on this network', requested: '192.168.1.5' },
    ],
    [
      'SELECTING an address outside the pool',
      { type: 'request', mac: HOLDER, requested: '10.77.192.22', serverId: SERVER },
      { message: 'address not offered to you', requested: '10.77.192.22' },
    ],
    [
      'RENEWING an address another client holds',
      { type: 'request', mac: STRANGER, ciaddr: address, broadcast: false },
      { message: 'address in use', requested: address, ciaddr: address },
    ],
    [
      'a relayed REBINDING of another client’s address',
      { type: 'request', mac: STRANGER, ciaddr: address, giaddr: '10.77.192.3' },
      { message: 'address in use', requested: address, ciaddr: address, relay: '10.77.192.3' },
    ],
  ];
  for (const [name, spec, detail] of cases) {
    const outcome = decideFor(spec, leases);
    t.match(outcome, { kind: 'reply', decision: 'nak', events: [{ type: 'dhcp-nak', detail }] }, name);
  }
  const selecting = decideFor(
    { type: 'request', mac: HOLDER, requested: '10.77.192.22', serverId: SERVER },
    leases,
  );
  t.notOk('ciaddr' in (selecting.events[0]?.detail ?? {}), 'no ciaddr when the client sent none');
});

t.test('RELEASE is recorded only when it frees the sender’s own lease', async (t) => {
  const { leases, address } = boundTable();
  const refused: [string, RequestSpec][] = [
    ['a stranger releases the holder’s address', { type: 'release', mac: STRANGER, ciaddr: address }],
    ['a stranger releases a free address', { type: 'release', mac: STRANGER, ciaddr: '10.77.192.150' }],
    ['the holder releases another address', { type: 'release', mac: HOLDER, ciaddr: '10.77.192.150' }],
  ];
  for (const [name, spec] of refused) {
    const outcome = decideFor(spec, leases);
    t.match(outcome, { kind: 'silent', reason: 'release-not-holder', events: [] }, name);
    t.equal(outcome.leaseChange, undefined, `${name}: no lease change`);
  }
  t.equal(leases.leaseOf(HOLDER)?.state, 'bound', 'the holder keeps its lease');
  const released = decideFor({ type: 'release', mac: HOLDER, ciaddr: address }, leases);
  t.match(released, { reason: 'released', events: [{ type: 'dhcp-release', ip: address }] });
  t.equal(leases.leaseOf(HOLDER)?.state, 'free');
  t.match(
    decideFor({ type: 'release', mac: HOLDER, ciaddr: address }, leases),
    { reason: 'release-not-holder', events: [] },
    'a second RELEASE of a free lease changes nothing and is not recorded',
  );
});

t.test('a REQUEST for another server’s offer leaves a dhcp-ignored event naming that server', async (t) => {
  const leases = new LeaseTable();
  decideFor({ type: 'discover', mac: HOLDER }, leases);
  const outcome = decideFor(
    { type: 'request', mac: HOLDER, requested: '10.77.192.250', serverId: '10.77.192.254' },
    leases,
  );
  t.match(outcome, {
    kind: 'silent',
    reason: 'other-server',
    events: [
      { type: 'dhcp-ignored', mac: HOLDER, detail: { reason: 'other-server', serverId: '10.77.192.254' } },
    ],
  });
  t.equal(leases.leaseOf(HOLDER)?.state, 'free', 'our offer is still freed');
});

t.test(
  'INIT-REBOOT for another client’s unexpired lease is NAKed; no record at all stays silent',
  async (t) => {
    const { leases, address } = boundTable();
    t.match(
      decideFor({ type: 'request', mac: STRANGER, requested: address }, leases),
      {
        kind: 'reply',
        decision: 'nak',
        events: [{ type: 'dhcp-nak', detail: { message: 'address in use', requested: address } }],
      },
      'held by another MAC: NAK',
    );
    t.equal(leases.leaseOf(HOLDER)?.state, 'bound', 'the holder keeps its lease');
    t.match(
      decideFor({ type: 'request', mac: STRANGER, requested: '10.77.192.150' }, leases),
      { kind: 'silent', reason: 'no-binding' },
      'a free address, no record of the client: silence (RFC 2131 §4.3.2)',
    );
    t.match(
      decideFor({ type: 'request', mac: STRANGER, requested: address }, leases, { now: NOW + 2 * 3_600_000 }),
      { kind: 'silent', reason: 'no-binding' },
      'the other lease has expired: silence',
    );
    t.match(
      decideFor({ type: 'request', mac: HOLDER, requested: address }, leases),
      { kind: 'reply', decision: 'ack' },
      'the holder itself: ACK',
    );
  },
);

t.test('INIT-REBOOT for an address reserved for another machine is NAKed', async (t) => {
  const reserved = '10.77.192.21';
  const leases = new LeaseTable();
  t.match(
    decideFor({ type: 'request', mac: STRANGER, requested: reserved }, leases),
    {
      kind: 'reply',
      decision: 'nak',
      events: [
        {
          type: 'dhcp-nak',
          mac: STRANGER,
          detail: { message: 'address reserved for another machine', requested: reserved },
        },
      ],
    },
    'another MAC asks for a reserved address it cannot have: NAK',
  );
  t.equal(leases.leaseOf(STRANGER), undefined, 'no lease is made');
  t.match(
    decideFor({ type: 'request', mac: LISTED_MAC, requested: reserved }, leases),
    { kind: 'silent', reason: 'no-binding' },
    'the reserved machine itself, with no record: silence, as before',
  );
  const offer = decideFor({ type: 'discover', mac: LISTED_MAC }, leases);
  decideFor({ type: 'request', mac: LISTED_MAC, requested: reserved, serverId: SERVER }, leases);
  t.match(offer, { kind: 'reply', reply: { yiaddr: reserved } }, 'the reserved machine is offered it');
  t.match(
    decideFor({ type: 'request', mac: STRANGER, requested: reserved }, leases),
    { kind: 'reply', decision: 'nak', events: [{ detail: { message: 'address in use' } }] },
    'once the owner holds it, the NAK says it is in use, as before',
  );
});

t.test('a renewal of an address reserved for another machine is NAKed saying so, not "in use"', async (t) => {
  // A reload reserves a pool address for a new machine.
  const reloaded = await loadTestConfig({
    subnet: 192,
    mode: 'authoritative',
    state: '/nonexistent/state',
    pool: { subnet: '10.77.192.0/24', range: ['10.77.192.100', '10.77.192.199'] },
    extraYaml: `
  - mac: 52:54:00:42:00:03
    hostname: node3
    profile: coreos
    ip: 10.77.192.150`,
  });
  const afterReload = {
    settings: settingsFor(reloaded),
    decision: testDecision(() => reloaded),
    unicast: true,
  };
  const renewal = (mac: Mac) =>
    ({ type: 'request', mac, ciaddr: '10.77.192.150', broadcast: false }) satisfies RequestSpec;
  const reservedNak = {
    kind: 'reply',
    decision: 'nak',
    events: [{ type: 'dhcp-nak', detail: { message: 'address reserved for another machine' } }],
  };
  t.match(
    decideFor(renewal(STRANGER), new LeaseTable(), afterReload),
    reservedNak,
    'an address nobody holds',
  );
  // HOLDER is the only client using the address: "address in use" sent the operator looking for a
  // conflict that is not there.
  const leases = new LeaseTable();
  decideFor({ type: 'request', mac: HOLDER, requested: '10.77.192.150', serverId: SERVER }, leases);
  t.match(decideFor(renewal(HOLDER), leases, afterReload), reservedNak, 'the address its holder renews');
});

const address = (address: string, internal = false, family: 'IPv4' | 'IPv6' = 'IPv4') =>
  ({
    address,
    family,
    internal,
    netmask: '255.255.255.0',
    mac: '00:00:00:00:00:00',
    cidr: null,
  }) as NetworkInterfaceInfo;

t.test('multi-homed host: one warning naming the other interfaces and the nftables rule', async (t) => {
  const ports = [67, 4011];
  t.equal(
    otherInterfacesWarning(
      { lo: [address('127.0.0.1', true)], prov0: [address(SERVER), address('fe80::1', false, 'IPv6')] },
      SERVER,
      ports,
    ),
    undefined,
    'loopback and the provisioning interface only: no warning',
  );
  t.equal(
    otherInterfacesWarning(
      { prov0: [address(SERVER)], v6only: [address('fd00::1', false, 'IPv6')] },
      SERVER,
      ports,
    ),
    undefined,
    'an interface without IPv4 receives no DHCPv4',
  );
  const warning = otherInterfacesWarning(
    {
      lo: [address('127.0.0.1', true)],
      mgmt0: [address('192.0.2.10')],
      prov0: [address('10.77.192.9'), address(SERVER)],
      wlan0: [address('198.51.100.7')],
    },
    SERVER,
    ports,
  );
  t.match(warning, /mgmt0, wlan0/);
  t.notMatch(warning, /\blo\b/);
  t.match(warning, 'nft add rule inet filter input iifname != "prov0" udp dport { 67, 4011 } drop');
  t.match(
    otherInterfacesWarning({ eth0: [address('192.0.2.10')] }, SERVER, ports),
    /eth0.*iifname != "<provisioning interface>"/,
    'server.address on no interface: every IPv4 interface is named, and the rule has a placeholder',
  );
});

// Over sockets: two namespaces of this file's own (rv42…), server 10.77.192.1, client 10.77.192.2.
const CLIENT = '10.77.192.2';
const POOL = { subnet: '10.77.192.0/24', range: ['10.77.192.100', '10.77.192.199'] as [string, string] };

interface Lab {
  server: Namespace;
  client: Namespace;
  directory: string;
  configFile(mode: 'proxy' | 'authoritative'): Promise<string>;
  /** Everything a process spawned in a namespace wrote to stderr so far. */
  stderrOf(child: ChildProcess): string;
}

/** The two namespaces joined by a veth pair made inside them (nothing touches the host's namespace). */
async function createLab(t: Test): Promise<Lab> {
  await requireTools('ip', 'node', 'dnsmasq');
  const children = new Set<ChildProcess>();
  const stderr = new WeakMap<ChildProcess, string>();
  const names: string[] = [];
  const directory = await mkdtemp(join(tmpdir(), 'rackboot-dhcp-review-'));
  t.teardown(async () => {
    await Promise.all([...children].map((child) => stopChild(child)));
    for (const name of names) await run('ip', ['netns', 'del', name]).catch(() => undefined);
    await rm(directory, { recursive: true, force: true });
  });
  const namespace = async (role: string): Promise<Namespace> => {
    const name = `rv42${role}${process.pid.toString(36)}`.slice(0, 15);
    await run('ip', ['netns', 'add', name]);
    names.push(name);
    await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    return {
      name,
      exec: (command, args, timeoutMs) => run('ip', ['netns', 'exec', name, command, ...args], timeoutMs),
      spawn: (command, args, options: SpawnOptions = {}) => {
        const child = spawn('ip', ['netns', 'exec', name, command, ...args], { stdio: 'pipe', ...options });
        children.add(child);
        child.once('exit', () => children.delete(child));
        child.stderr?.on('data', (chunk: Buffer) => stderr.set(child, (stderr.get(child) ?? '') + chunk));
        return child;
      },
    };
  };
  const server = await namespace('s');
  const client = await namespace('c');
  await server.exec('ip', [
    'link',
    'add',
    'rv42s0',
    'type',
    'veth',
    'peer',
    'name',
    'rv42c0',
    'netns',
    client.name,
  ]);
  await server.exec('ip', ['addr', 'add', `${SERVER}/24`, 'dev', 'rv42s0']);
  await client.exec('ip', ['addr', 'add', `${CLIENT}/24`, 'dev', 'rv42c0']);
  await server.exec('ip', ['link', 'set', 'rv42s0', 'up']);
  await client.exec('ip', ['link', 'set', 'rv42c0', 'up']);
  // The client's limited broadcasts need a route.
  await client.exec('ip', ['route', 'add', 'default', 'dev', 'rv42c0']);
  return {
    server,
    client,
    directory,
    stderrOf: (child) => stderr.get(child) ?? '',
    async configFile(mode) {
      const file = join(directory, `${mode}.yaml`);
      await writeFile(file, testConfigYaml({ subnet: 192, mode, state: directory, pool: POOL }));
      return file;
    },
  };
}

/** dnsmasq as the LAN's DHCP server on the same host and address as rackboot, as the review ran it. */
async function startDnsmasq(lab: Lab): Promise<ChildProcess> {
  const child = lab.server.spawn('dnsmasq', [
    '--keep-in-foreground',
    '--port=0',
    '--bind-interfaces',
    '--interface=rv42s0',
    '--dhcp-range=10.77.192.200,10.77.192.250,1h',
    '--dhcp-authoritative',
    '--no-ping',
    `--dhcp-leasefile=${join(lab.directory, 'dnsmasq.leases')}`,
    `--pid-file=${join(lab.directory, 'dnsmasq.pid')}`,
    '--log-facility=-',
  ]);
  await waitForOutput(
    child,
    (line) => line.includes('DHCP, sockets bound exclusively to interface rv42s0'),
    10_000,
  );
  return child;
}

const replyTo = (xid: number, type: number) => (received: Received) =>
  received.packet.op === BOOTREPLY &&
  received.packet.xid === xid &&
  received.packet.options.get(Option.messageType)?.[0] === type;

t.test('proxy mode beside the LAN’s DHCP server on the same address leaves it its unicast', async (t) => {
  const lab = await createLab(t);
  const dnsmasq = await startDnsmasq(lab);
  const rackboot = await launchDhcp(lab.server, await lab.configFile('proxy'));
  const clientPort = await startProbe(lab.client, '0.0.0.0:68');
  const relay = await startProbe(lab.client, `${CLIENT}:67`);

  // A client of dnsmasq's renews by unicast to the server's address (RFC 2131 §4.4.5).
  const leased = '10.77.192.220';
  await lab.client.exec('ip', ['addr', 'add', `${leased}/24`, 'dev', 'rv42c0']);
  clientPort.send(
    requestBytes({ type: 'request', mac: STRANGER, ciaddr: leased, broadcast: false, xid: 0x4201 }),
    SERVER,
    67,
  );
  const renewed = await clientPort.next(replyTo(0x4201, 5));
  t.equal(renewed.packet.yiaddr, leased, 'the renewal reached dnsmasq, which ACKed it');

  // A relay forwards a PXE client's DISCOVER by unicast to the same address.
  relay.send(
    requestBytes({
      type: 'discover',
      mac: LISTED_MAC,
      giaddr: CLIENT,
      xid: 0x4202,
      options: FIRMWARE.biosPxe(),
    }),
    SERVER,
    67,
  );
  const relayedOffer = await relay.next(replyTo(0x4202, 2));
  t.not(
    relayedOffer.packet.yiaddr,
    '0.0.0.0',
    'the relayed DISCOVER reached dnsmasq, which offered an address',
  );
  const stats = await rackboot.stats();
  t.notOk(
    stats.messages.some(({ decision }) => decision === 'not-for-proxy'),
    'rackboot took none of dnsmasq’s unicast',
  );

  // A PXE client's broadcast DISCOVER: dnsmasq offers the address, rackboot the boot file.
  const offers = Promise.all([
    clientPort.next((received) => replyTo(0x4203, 2)(received) && received.packet.yiaddr === '0.0.0.0'),
    clientPort.next((received) => replyTo(0x4203, 2)(received) && received.packet.yiaddr !== '0.0.0.0'),
  ]);
  clientPort.send(
    requestBytes({ type: 'discover', mac: LISTED_MAC, xid: 0x4203, options: FIRMWARE.biosPxe() }),
    '255.255.255.255',
    67,
  );
  const [proxyOffer] = await offers;
  t.equal(proxyOffer.packet.file, 'undionly.kpxe', 'rackboot’s ProxyDHCP offer');
  t.equal(readText(proxyOffer.packet.options, Option.vendorClass), 'PXEClient');

  // Without a server taking them first, relayed DISCOVERs reach rackboot's 0.0.0.0 socket.
  await stopChild(dnsmasq);
  relay.send(
    requestBytes({
      type: 'discover',
      mac: LISTED_MAC,
      giaddr: CLIENT,
      xid: 0x4204,
      options: FIRMWARE.biosPxe(),
    }),
    SERVER,
    67,
  );
  const rackbootRelayed = await relay.next(replyTo(0x4204, 2));
  t.equal(rackbootRelayed.packet.yiaddr, '0.0.0.0');
  t.equal(rackbootRelayed.packet.file, 'undionly.kpxe', 'rackboot answers the relay');
  t.match(rackbootRelayed, { from: SERVER, port: 67 }, 'from the server’s address and port 67');
});

t.test(
  'authoritative mode: another server’s clients are recorded once per MAC and warned once per server',
  async (t) => {
    const lab = await createLab(t);
    // A second interface of the server's host: the multi-homed warning names it at start.
    await lab.server.exec('ip', ['link', 'add', 'rv42m0', 'type', 'veth', 'peer', 'name', 'rv42m1']);
    await lab.server.exec('ip', ['addr', 'add', '10.77.192.77/32', 'dev', 'rv42m0']);
    for (const end of ['rv42m0', 'rv42m1']) await lab.server.exec('ip', ['link', 'set', end, 'up']);
    const rackboot = await launchDhcp(lab.server, await lab.configFile('authoritative'));
    const clientPort = await startProbe(lab.client, '0.0.0.0:68');
    const chose = (mac: Mac, serverId: string, xid: number) =>
      clientPort.send(
        requestBytes({ type: 'request', mac, requested: '10.77.192.60', serverId, xid }),
        '255.255.255.255',
        67,
      );
    chose(HOLDER, '10.77.192.254', 0x4301);
    chose(HOLDER, '10.77.192.254', 0x4302);
    chose(HOLDER, '10.77.192.254', 0x4303);
    chose(STRANGER, '10.77.192.254', 0x4304);
    chose(HOLDER, '10.77.192.253', 0x4305);
    // Datagrams are handled in order: once this DISCOVER is offered, the requests above were decided.
    clientPort.send(requestBytes({ type: 'discover', mac: LISTED_MAC, xid: 0x4306 }), '255.255.255.255', 67);
    await rackboot.event((event) => event.type === 'dhcp-offer' && event.detail?.xid === '00004306');
    const ignored = rackboot.events.filter((event) => event.detail?.reason === 'other-server');
    t.match(
      ignored,
      [
        { type: 'dhcp-ignored', mac: HOLDER, detail: { serverId: '10.77.192.254', xid: '00004301' } },
        { type: 'dhcp-ignored', mac: STRANGER, detail: { serverId: '10.77.192.254', xid: '00004304' } },
      ],
      'one event per MAC, naming the other server',
    );
    t.equal(ignored.length, 2);
    const stats = await rackboot.stats();
    t.match(stats.messages, [{ type: 'request', decision: 'other-server', count: 5 }], 'every one counted');
    const stderr = lab.stderrOf(rackboot.child);
    const warnings = stderr.split('\n').filter((line) => line.includes('another DHCP server'));
    t.equal(warnings.length, 2, 'one warning per foreign server id');
    t.match(warnings[0], '10.77.192.254');
    t.match(warnings[1], '10.77.192.253');
    const multiHomed = stderr.split('\n').filter((line) => line.includes('nft add rule'));
    t.equal(multiHomed.length, 1, 'the multi-homed warning, once');
    t.match(multiHomed[0], /rv42m0.*iifname != \\"rv42s0\\" udp dport \{ 67, 4011 \} drop/);
  },
);

t.test('RFC 2131 §4.1: an OFFER to a DISCOVER carrying ciaddr is unicast to ciaddr', async (t) => {
  const { leases } = boundTable();
  const withCiaddr = decideFor({ type: 'discover', mac: STRANGER, ciaddr: '10.77.192.150' }, leases);
  t.match(withCiaddr, {
    kind: 'reply',
    decision: 'offer',
    destination: { kind: 'client', address: '10.77.192.150' },
  });
  const relayed = decideFor(
    { type: 'discover', mac: STRANGER, ciaddr: '10.77.192.150', giaddr: '10.77.192.5' },
    leases,
  );
  t.match(relayed, { destination: { kind: 'relay', address: '10.77.192.5' } }, 'a relay still comes first');
  const nak = decideFor(
    { type: 'request', mac: STRANGER, ciaddr: '10.77.192.151', requested: '10.77.192.22', serverId: SERVER },
    leases,
  );
  t.match(nak, { decision: 'nak', destination: { kind: 'broadcast' } }, 'a NAK is still broadcast');

  // Over sockets: a probe bound to the client's own address receives unicast only, no broadcast.
  const lab = await createLab(t);
  for (const mode of ['authoritative', 'proxy'] as const) {
    const rackboot = await launchDhcp(lab.server, await lab.configFile(mode));
    const unicastOnly = await startProbe(lab.client, `${CLIENT}:68`);
    const xid = mode === 'proxy' ? 0x4401 : 0x4402;
    unicastOnly.send(
      requestBytes({ type: 'discover', mac: LISTED_MAC, xid, ciaddr: CLIENT, options: FIRMWARE.biosPxe() }),
      '255.255.255.255',
      67,
    );
    const offer = await unicastOnly.next((received) => received.packet.xid === xid);
    t.equal(offer.packet.file, 'undionly.kpxe', `${mode}: the offer reached the client's own address`);
    await stopChild(rackboot.child);
  }
});
