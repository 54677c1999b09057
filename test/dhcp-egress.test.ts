import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { Option } from '../src/dhcp/options.js';
import { BOOTREPLY } from '../src/dhcp/packet.js';
import { FIRMWARE, LISTED_MAC, requestBytes, testConfigYaml } from './dhcp/fixtures.js';
import { launchDhcp, startProbe } from './dhcp/harness.js';
import { createTestNetwork, type Namespace, requireTools, run, uniqueName } from './helpers/netns.js';

// A multi-homed server: provisioning link 10.77.10.0/24 and another link 10.77.12.0/24 that holds
// the default route. Broadcast replies must still leave by the provisioning interface (reference §9).
const PROVISIONING = 10;
const OTHER = 12;

await requireTools('ip');
const network = createTestNetwork();
const directory = await mkdtemp(join(tmpdir(), 'rackboot-dhcp-egress-'));
t.teardown(async () => {
  await network.cleanup();
  await rm(directory, { recursive: true, force: true });
});

async function link(server: Namespace, peer: Namespace, subnet: number): Promise<string> {
  const serverSide = uniqueName('rbe');
  const peerSide = uniqueName('rbf');
  await run('ip', ['link', 'add', serverSide, 'type', 'veth', 'peer', 'name', peerSide]);
  await run('ip', ['link', 'set', serverSide, 'netns', server.name]);
  await run('ip', ['link', 'set', peerSide, 'netns', peer.name]);
  await server.exec('ip', ['addr', 'add', `10.77.${subnet}.1/24`, 'dev', serverSide]);
  await peer.exec('ip', ['addr', 'add', `10.77.${subnet}.2/24`, 'dev', peerSide]);
  await server.exec('ip', ['link', 'set', serverSide, 'up']);
  await peer.exec('ip', ['link', 'set', peerSide, 'up']);
  await peer.exec('ip', ['route', 'add', 'default', 'dev', peerSide]);
  return serverSide;
}

t.test(
  'broadcast replies leave by the interface that owns server.address, not by the default route',
  async (t) => {
    const server = await network.createNamespace('server');
    const client = await network.createNamespace('client');
    const other = await network.createNamespace('other');
    await link(server, client, PROVISIONING);
    await link(server, other, OTHER);
    // Without the bound sender socket, a limited broadcast would follow this route to the other link.
    await server.exec('ip', ['route', 'add', 'default', 'via', `10.77.${OTHER}.2`]);

    const configFile = join(directory, 'rackboot.yaml');
    await writeFile(configFile, testConfigYaml({ subnet: PROVISIONING, mode: 'proxy', state: directory }));
    const dhcp = await launchDhcp(server, configFile);
    t.teardown(() => {
      dhcp.child.kill('SIGKILL');
    });
    const provisioningClient = await startProbe(client, '0.0.0.0:68');
    const otherListener = await startProbe(other, '0.0.0.0:68');

    const xid = 0xe9e55;
    provisioningClient.send(
      requestBytes({ type: 'discover', mac: LISTED_MAC, xid, options: FIRMWARE.biosPxe() }),
      '255.255.255.255',
      67,
    );
    const offer = await provisioningClient.next(
      (received) =>
        received.packet.op === BOOTREPLY &&
        received.packet.xid === xid &&
        received.packet.options.get(Option.messageType)?.[0] === 2,
    );
    t.equal(offer.from, `10.77.${PROVISIONING}.1`);
    t.equal(offer.packet.file, 'undionly.kpxe');
    t.same(otherListener.received, [], 'nothing went out of the other interface');
  },
);
