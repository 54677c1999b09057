import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import type { Mac } from '../src/boot-plan.js';
import { decide } from '../src/dhcp/decide.js';
import { LeaseTable } from '../src/dhcp/leases.js';
import { Option } from '../src/dhcp/options.js';
import { BOOTREPLY, decodeDhcpRequest, encodeDhcpPacket, maxReplyBytes } from '../src/dhcp/packet.js';
import { settingsFor } from '../src/dhcp/settings.js';
import {
  FIRMWARE,
  LISTED_MAC,
  loadTestConfig,
  requestBytes,
  testConfigYaml,
  testDecision,
} from './dhcp/fixtures.js';
import { launchDhcp, startProbe } from './dhcp/harness.js';
import { mutatePacket, seededRandom } from './dhcp/mutate.js';
import { createRoutedPair, requireTools } from './helpers/netns.js';

// Socket part in namespaces on 10.77.6.0/24.
const SUBNET = 6;
const SERVER = `10.77.${SUBNET}.1`;
const PURE_PACKETS = 100_000;
const SOCKET_PACKETS = 5_000;

const mac = '52:54:00:60:00:01' as Mac;
const SEEDS = [
  requestBytes({ type: 'discover', mac: LISTED_MAC, options: FIRMWARE.biosPxe() }),
  requestBytes({ type: 'discover', mac: LISTED_MAC, options: FIRMWARE.uefiPxe(7) }),
  requestBytes({ type: 'discover', mac, options: FIRMWARE.uefiHttp(16) }),
  requestBytes({ type: 'discover', mac, options: FIRMWARE.ipxeEfi(mac) }),
  requestBytes({
    type: 'request',
    mac,
    options: FIRMWARE.biosIpxeRom(mac),
    requested: '10.77.6.150',
    serverId: SERVER,
  }),
  requestBytes({ type: 'request', mac, ciaddr: '10.77.6.150', options: FIRMWARE.linux(mac) }),
  requestBytes({ type: 'request', mac, requested: '10.77.6.150' }),
  requestBytes({ type: 'decline', mac, requested: '10.77.6.150', serverId: SERVER }),
  requestBytes({ type: 'release', mac, ciaddr: '10.77.6.150', serverId: SERVER }),
  requestBytes({ type: 'inform', mac, ciaddr: '10.77.6.150' }),
];

// A host name too long for a 548-byte reply: the replies to `mac` must be fitted to the client.
const LONG_HOSTNAME_MACHINE = `
  - mac: ${mac}
    hostname: ${Array.from({ length: 4 }, () => 'a'.repeat(62)).join('.')}
    profile: coreos`;

t.test(`${PURE_PACKETS} mutated packets through decode + decide + encode: no throw`, async (t) => {
  const configs = [
    await loadTestConfig({
      subnet: SUBNET,
      mode: 'authoritative',
      state: '/nonexistent',
      extraYaml: LONG_HOSTNAME_MACHINE,
    }),
    await loadTestConfig({ subnet: SUBNET, mode: 'proxy', state: '/nonexistent' }),
  ];
  const decisions = configs.map((config) => testDecision(() => config));
  const random = seededRandom(0x5eed);
  const leases = new LeaseTable();
  const malformed = new Map<string, number>();
  const outcomes = new Map<string, number>();
  let fitted = 0;
  const started = performance.now();
  for (let index = 0; index < PURE_PACKETS; index += 1) {
    const seed = SEEDS[index % SEEDS.length] as Buffer;
    const bytes = mutatePacket(seed, random);
    const config = configs[index % 2];
    const decision = decisions[index % 2];
    if (!config || !decision) throw new Error('no config');
    try {
      const decoded = decodeDhcpRequest(bytes);
      if (!decoded.ok) {
        malformed.set(decoded.reason, (malformed.get(decoded.reason) ?? 0) + 1);
        continue;
      }
      const outcome = decide(decoded.packet, {
        settings: settingsFor(config),
        decision,
        leases,
        now: 1_800_000_000_000 + index,
        port: index % 7 === 0 ? 'boot-server' : 'dhcp',
        unicast: index % 5 === 0,
        assetExists: () => index % 3 === 0,
      });
      if (outcome.leaseChange) leases.apply(outcome.leaseChange);
      const label = outcome.kind === 'reply' ? outcome.decision : outcome.reason;
      outcomes.set(label, (outcomes.get(label) ?? 0) + 1);
      if (outcome.kind === 'reply') {
        if (outcome.events.some((event) => event.detail?.omittedOptions)) fitted += 1;
        const reply = encodeDhcpPacket(outcome.reply);
        const limit = maxReplyBytes(decoded.packet);
        if (reply.length > limit) throw new Error(`reply of ${reply.length} bytes, limit ${limit}`);
      }
    } catch (error) {
      t.fail(`packet ${index} threw: ${(error as Error).message}; bytes ${bytes.toString('hex')}`);
      return;
    }
  }
  const elapsedMs = performance.now() - started;
  t.comment(`${PURE_PACKETS} packets in ${elapsedMs.toFixed(0)} ms`);
  t.comment(`malformed ${JSON.stringify(Object.fromEntries(malformed))}`);
  t.comment(`decisions ${JSON.stringify(Object.fromEntries(outcomes))}`);
  for (const reason of ['short', 'bad-hlen', 'bad-cookie', 'option-overrun', 'bad-overload', 'wrong-op']) {
    t.ok((malformed.get(reason) ?? 0) > 0, `mutations reached "${reason}"`);
  }
  t.ok(
    (outcomes.get('offer') ?? 0) > 0 && (outcomes.get('ack') ?? 0) > 0,
    'mutated but valid packets were answered',
  );
  t.ok(fitted > 0, `replies too large for their client were fitted to it (${fitted})`);
});

t.test(
  `${SOCKET_PACKETS} mutated packets over the socket, then a good DISCOVER still gets its OFFER`,
  async (t) => {
    await requireTools('ip');
    const { pair, directory, cleanup } = await createRoutedPair(SUBNET, 'dhcp-fuzz');
    t.teardown(cleanup);
    const configFile = join(directory, 'rackboot.yaml');
    await writeFile(configFile, testConfigYaml({ subnet: SUBNET, mode: 'authoritative', state: directory }));
    const server = await launchDhcp(pair.server, configFile);
    const probe = await startProbe(pair.client, '0.0.0.0:68');
    const random = seededRandom(0xf022);
    for (let index = 0; index < SOCKET_PACKETS; index += 1) {
      const bytes = mutatePacket(SEEDS[index % SEEDS.length] as Buffer, random);
      probe.send(bytes, index % 2 === 0 ? '255.255.255.255' : SERVER, index % 5 === 0 ? 4011 : 67);
    }
    // Like a real client, the good DISCOVER is repeated until answered: the burst may overflow the
    // socket buffer, and a dropped datagram is not the server's failure.
    const xid = 0x0f0f0f0f;
    const isOffer = (received: { packet: { op: number; xid: number; options: Map<number, Buffer> } }) =>
      received.packet.op === BOOTREPLY &&
      received.packet.xid === xid &&
      received.packet.options.get(Option.messageType)?.[0] === 2;
    let offer: Awaited<ReturnType<typeof probe.next>> | undefined;
    for (let attempt = 0; attempt < 20 && !offer; attempt += 1) {
      probe.send(
        requestBytes({ type: 'discover', mac: LISTED_MAC, xid, options: FIRMWARE.biosPxe() }),
        '255.255.255.255',
        67,
      );
      offer = await probe.next(isOffer, 1000).catch(() => undefined);
    }
    if (!offer) throw new Error('no OFFER for a good DISCOVER after the fuzz burst');
    t.equal(offer.packet.file, 'undionly.kpxe');
    t.equal(server.child.exitCode, null, 'the server is still running');
    const stats = await server.stats();
    const malformedTotal = stats.malformed.reduce((sum, entry) => sum + entry.count, 0);
    const decidedTotal = stats.messages.reduce((sum, entry) => sum + entry.count, 0);
    t.ok(malformedTotal > 100, `malformed packets counted (${malformedTotal})`);
    t.ok(decidedTotal > 0, `valid mutants were decided (${decidedTotal})`);
    t.comment(`${malformedTotal + decidedTotal} of ${SOCKET_PACKETS} datagrams reached the server`);
  },
);
