import { rmSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import type { Mac } from '../src/boot-plan.js';
import { Option } from '../src/dhcp/options.js';
import { BOOTREPLY } from '../src/dhcp/packet.js';
import { FIRMWARE, LISTED_MAC, requestBytes, testConfigYaml } from './dhcp/fixtures.js';
import { launchDhcp, type Received, startProbe, waitForLine } from './dhcp/harness.js';
import { createRoutedPair, requireTools } from './helpers/netns.js';
import { waitUntil } from './helpers/poll.js';
import { fill, fullTmpfs } from './helpers/root.js';

// The socket shell's own failure paths. Namespaces on 10.77.14.0/24 (server .1, client .2).
const SUBNET = 14;
const SERVER = `10.77.${SUBNET}.1`;
const CLIENT = `10.77.${SUBNET}.2`;

await requireTools('ip', 'iptables');
const { pair, directory, cleanup } = await createRoutedPair(SUBNET, 'dhcp-server');
t.teardown(cleanup);

async function configFile(name: string, mode: 'proxy' | 'authoritative') {
  const state = join(directory, name);
  await mkdir(state, { recursive: true });
  const file = join(state, 'rackboot.yaml');
  await writeFile(file, testConfigYaml({ subnet: SUBNET, mode, state }));
  return file;
}

const isAck = (xid: number) => (received: Received) =>
  received.packet.op === BOOTREPLY &&
  received.packet.xid === xid &&
  received.packet.options.get(Option.messageType)?.[0] === 5;

t.test('a datagram from UDP source port 0 is dropped and counted; the server keeps answering', async (t) => {
  const server = await launchDhcp(pair.server, await configFile('port-zero', 'proxy'));
  t.teardown(() => {
    server.child.kill('SIGKILL');
  });
  // Port 0 cannot be bound, so the client namespace rewrites one probe's source port to it.
  const spoofedPort = 1068;
  await pair.client.exec('iptables', [
    ...['-t', 'nat', '-A', 'POSTROUTING', '-p', 'udp', '--sport', String(spoofedPort)],
    ...['-j', 'SNAT', '--to-source', `${CLIENT}:0`],
  ]);
  const spoofed = await startProbe(pair.client, `${CLIENT}:${spoofedPort}`);
  const honest = await startProbe(pair.client, `${CLIENT}:2068`);
  // The PXE boot-server REQUEST is the one answered to the sender's own port.
  const bootServerRequest = (xid: number) =>
    requestBytes({
      type: 'request',
      mac: LISTED_MAC,
      xid,
      options: FIRMWARE.uefiPxe(7),
      ciaddr: CLIENT,
      serverId: SERVER,
      broadcast: false,
    });

  spoofed.send(bootServerRequest(0x4001), SERVER, 4011);
  const counted = await waitUntil(async () => {
    const stats = await server.stats();
    return stats.malformed.some((entry) => entry.reason === 'source-port-zero' && entry.count === 1);
  }, 5000);
  t.ok(counted, 'counted as source-port-zero');
  honest.send(bootServerRequest(0x4002), SERVER, 4011);
  const ack = await honest.next(isAck(0x4002));
  t.equal(ack.packet.file, 'ipxe.efi', 'the next request is answered');
  t.equal(server.child.exitCode, null, 'the server is still running');
});

t.test(
  'closing with ACKs waiting for their lease line: they are sent before the sockets close',
  async (t) => {
    const acks = 20;
    const server = await launchDhcp(pair.server, await configFile('close', 'authoritative'), [
      '--close-after-acks',
      String(acks),
    ]);
    t.teardown(() => {
      server.child.kill('SIGKILL');
    });
    let stderr = '';
    server.child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const closed = waitForLine(server.child, (line) => line === 'CLOSED', 10_000);
    // As a relay on the client's address: each ACK comes back to it on port 67.
    const relay = await startProbe(pair.client, `${CLIENT}:67`);
    for (let index = 0; index < acks; index += 1) {
      const mac = `52:54:00:14:00:${index.toString(16).padStart(2, '0')}` as Mac;
      relay.send(
        requestBytes({
          type: 'request',
          mac,
          xid: 0x5000 + index,
          giaddr: CLIENT,
          broadcast: false,
          requested: `10.77.${SUBNET}.${100 + index}`,
          serverId: SERVER,
        }),
        SERVER,
        67,
      );
    }
    await closed;
    const allAcked = await waitUntil(
      () => relay.received.filter((received) => isAck(received.packet.xid)(received)).length === acks,
      5000,
    );
    t.ok(allAcked, `every ACK decided before close was sent (${relay.received.length} of ${acks})`);
    t.notMatch(stderr, /DHCP reply not sent|ERR_SOCKET/, 'no send failed');
  },
);

t.test('an ACK whose lease cannot be written is withheld and counted as such, not as sent', async (t) => {
  const { directory: state, filler } = fullTmpfs(t, 'dhcp-withheld');
  const file = join(state, 'rackboot.yaml');
  await writeFile(file, testConfigYaml({ subnet: SUBNET, mode: 'authoritative', state }));
  const server = await launchDhcp(pair.server, file);
  t.teardown(() => {
    server.child.kill('SIGKILL');
  });
  fill(filler);
  const relay = await startProbe(pair.client, `${CLIENT}:67`);
  const request = (xid: number) =>
    requestBytes({
      type: 'request',
      mac: '52:54:00:14:01:01' as Mac,
      xid,
      giaddr: CLIENT,
      broadcast: false,
      requested: `10.77.${SUBNET}.150`,
      serverId: SERVER,
    });
  const decisions = async () =>
    Object.fromEntries(
      (await server.stats()).messages
        .filter((entry) => entry.type === 'request')
        .map((entry) => [entry.decision, entry.count]),
    );
  relay.send(request(0x6001), SERVER, 67);
  t.ok(await waitUntil(async () => (await decisions())['ack-withheld'] === 1, 5000), 'counted as withheld');
  t.same(await decisions(), { 'ack-withheld': 1 }, 'and not as an ACK');
  t.notOk(relay.received.some(isAck(0x6001)), 'no ACK left');
  rmSync(filler);
  relay.send(request(0x6002), SERVER, 67);
  await relay.next(isAck(0x6002));
  t.same(await decisions(), { 'ack-withheld': 1, ack: 1 }, 'with room again, the ACK leaves and is counted');
});

t.test(
  "an offered address is no machine's yet: only a bound lease names the MAC behind an address",
  async (t) => {
    const server = await launchDhcp(pair.server, await configFile('offered', 'authoritative'));
    t.teardown(() => {
      server.child.kill('SIGKILL');
    });
    // As a relay, so the replies come back to this probe by unicast.
    const relay = await startProbe(pair.client, `${CLIENT}:67`);
    const mac = '52:54:00:14:01:01' as Mac;
    const isReply = (xid: number, type: number) => (received: Received) =>
      received.packet.op === BOOTREPLY &&
      received.packet.xid === xid &&
      received.packet.options.get(Option.messageType)?.[0] === type;
    relay.send(
      requestBytes({ type: 'discover', mac, xid: 0x6001, giaddr: CLIENT, broadcast: false }),
      SERVER,
      67,
    );
    const offer = await relay.next(isReply(0x6001, 2));
    const offered = offer.packet.yiaddr;
    // A host that sent DHCP with another machine's MAC and took the address offered to it would
    // otherwise pass the address binding of that machine's Ignition token.
    t.equal(await server.macForIp(offered), null, `${offered}, only offered, names no MAC`);
    relay.send(
      requestBytes({
        type: 'request',
        mac,
        xid: 0x6002,
        giaddr: CLIENT,
        broadcast: false,
        requested: offered,
        serverId: SERVER,
      }),
      SERVER,
      67,
    );
    await relay.next(isReply(0x6002, 5));
    t.equal(await server.macForIp(offered), mac, 'bound, it names the MAC');
  },
);
