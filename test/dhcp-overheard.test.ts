import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import type { Mac } from '../src/boot-plan.js';
import { FIRMWARE, LISTED_MAC, requestBytes, testConfigYaml } from './dhcp/fixtures.js';
import { launchDhcp, startProbe } from './dhcp/harness.js';
import { createRoutedPair, requireTools } from './helpers/netns.js';
import { waitUntil } from './helpers/poll.js';

// What proxy mode overhears of the LAN's DHCP exchanges names the MAC behind an address for the TFTP
// server's events. Namespaces on 10.77.252.0/24 (server .1, client .2).
const SUBNET = 252;

await requireTools('ip');
const { pair, directory, cleanup } = await createRoutedPair(SUBNET, 'dhcp-overheard');
t.teardown(cleanup);

t.test(
  'a DISCOVER’s requested address is a wish: it does not take the address from its holder',
  async (t) => {
    const state = join(directory, 'proxy');
    await mkdir(state, { recursive: true });
    const file = join(state, 'rackboot.yaml');
    await writeFile(file, testConfigYaml({ subnet: SUBNET, mode: 'proxy', state }));
    const server = await launchDhcp(pair.server, file);
    t.teardown(() => {
      server.child.kill('SIGKILL');
    });
    const client = await startProbe(pair.client, '0.0.0.0:68');
    const address = `10.77.${SUBNET}.77`;
    // The machine booting holds the address: the LAN's server ACKed the REQUEST proxy mode overheard.
    client.send(
      requestBytes({ type: 'request', mac: LISTED_MAC, requested: address, options: FIRMWARE.uefiPxe(7) }),
      '255.255.255.255',
      67,
    );
    t.ok(await waitUntil(async () => (await server.macForIp(address)) === LISTED_MAC, 10_000));
    // A host whose old lease was that address asks for it again (dhclient and NetworkManager send
    // option 50 in their DISCOVER); the LAN's server offers it another one.
    const returning = '52:54:00:25:20:01' as Mac;
    client.send(
      requestBytes({
        type: 'discover',
        mac: returning,
        requested: address,
        options: FIRMWARE.linux(returning),
      }),
      '255.255.255.255',
      67,
    );
    const handled = await waitUntil(async () => {
      const { messages } = await server.stats();
      return messages.some((entry) => entry.type === 'discover' && entry.count === 1);
    }, 10_000);
    t.ok(handled, 'the DISCOVER was handled');
    t.equal(await server.macForIp(address), LISTED_MAC, 'the address is still the booting machine’s');
  },
);
