import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import type { Mac } from '../src/boot-plan.js';
import { Option } from '../src/dhcp/options.js';
import { requestBytes, testConfigYaml } from './dhcp/fixtures.js';
import { launchDhcp, type Received, startProbe } from './dhcp/harness.js';
import { createRoutedPair, requireTools, waitForOutput } from './helpers/netns.js';
import { waitUntil } from './helpers/poll.js';

// The shell logs what decide.ts finds the operator must fix, and counts it for /metrics.
// Namespaces on 10.77.216.0/24 (server .1, client .2).
const SUBNET = 216;
const SERVER = `10.77.${SUBNET}.1`;

await requireTools('ip');
const { pair, directory, cleanup } = await createRoutedPair(SUBNET, 'dhcp-warnings');
t.teardown(cleanup);

async function launch(name: string, poolEnd: number) {
  const state = join(directory, name);
  await mkdir(state, { recursive: true });
  const file = join(state, 'rackboot.yaml');
  await writeFile(file, testConfigYaml({ subnet: SUBNET, mode: 'authoritative', state, poolEnd }));
  const server = await launchDhcp(pair.server, file);
  t.teardown(() => {
    server.child.kill('SIGKILL');
  });
  return server;
}

const replyTo = (xid: number, type: number) => (received: Received) =>
  received.packet.xid === xid && received.packet.options.get(Option.messageType)?.[0] === type;
const OFFER = 2;
const ACK = 5;

/** The JSON log line (stderr) whose message matches `pattern`; EVENT lines on stdout do not count. */
async function logLine(child: Parameters<typeof waitForOutput>[0], pattern: RegExp) {
  const line = await waitForOutput(
    child,
    (candidate) => candidate.startsWith('{') && pattern.test(candidate),
    5000,
  );
  return JSON.parse(line) as Record<string, unknown>;
}

t.test('a DECLINE is logged as an address conflict and counted', async (t) => {
  const server = await launch('decline', 199);
  const client = await startProbe(pair.client, '0.0.0.0:68');
  const mac = '52:54:00:21:60:01' as Mac;
  client.send(requestBytes({ type: 'discover', mac, xid: 0x6001 }), '255.255.255.255', 67);
  const offer = await client.next(replyTo(0x6001, OFFER));
  const address = offer.packet.yiaddr;
  const request = { mac, requested: address, serverId: SERVER };
  client.send(requestBytes({ type: 'request', xid: 0x6002, ...request }), '255.255.255.255', 67);
  await client.next(replyTo(0x6002, ACK));
  client.send(requestBytes({ type: 'decline', xid: 0x6003, ...request }), '255.255.255.255', 67);

  const line = await logLine(server.child, /address conflict/);
  t.match(line, { level: 40, mac, ip: address, msg: new RegExp(`${mac} declined ${address}`) });
  const stats = await server.stats();
  t.match(
    stats.messages.find((entry) => entry.type === 'decline'),
    { decision: 'declined', count: 1 },
    'counted as rackboot_dhcp_messages_total{type="decline",decision="declined"}',
  );
});

t.test(
  'an exhausted pool is warned about once a minute, and every DISCOVER turned away counted',
  async (t) => {
    // One address: the first DISCOVER's offer holds it.
    const server = await launch('exhausted', 100);
    const client = await startProbe(pair.client, '0.0.0.0:68');
    client.send(
      requestBytes({ type: 'discover', mac: '52:54:00:21:60:10' as Mac, xid: 0x6010 }),
      '255.255.255.255',
      67,
    );
    await client.next(replyTo(0x6010, OFFER));
    for (let index = 1; index <= 3; index += 1) {
      const mac = `52:54:00:21:60:1${index}` as Mac;
      client.send(requestBytes({ type: 'discover', mac, xid: 0x6010 + index }), '255.255.255.255', 67);
    }
    const line = await logLine(server.child, /exhausted/);
    t.match(line, { level: 40, subnet: `10.77.${SUBNET}.0/24`, mac: '52:54:00:21:60:11' });
    const counted = await waitUntil(async () => {
      const stats = await server.stats();
      return stats.messages.some((entry) => entry.decision === 'pool-exhausted' && entry.count === 3);
    }, 5000);
    t.ok(counted, 'counted as rackboot_dhcp_messages_total{type="discover",decision="pool-exhausted"}');
    t.equal(server.stderr().match(/pool of .* exhausted/g)?.length, 1, 'one warning for the three');
  },
);
