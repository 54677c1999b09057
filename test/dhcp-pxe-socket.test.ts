import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import type { Mac } from '../src/boot-plan.js';
import { Option, readText } from '../src/dhcp/options.js';
import { BOOTREPLY } from '../src/dhcp/packet.js';
import { FIRMWARE, LISTED_MAC, requestBytes, testConfigYaml } from './dhcp/fixtures.js';
import { launchDhcp, type Received, startProbe } from './dhcp/harness.js';
import { createRoutedPair, requireTools } from './helpers/netns.js';

// Namespaces on 10.77.2.0/24 (server .1, client .2); relay subnet 10.77.3.0/24.
const SUBNET = 2;
const SERVER = `10.77.${SUBNET}.1`;
const RELAY = `10.77.${SUBNET + 1}.1`;
const BASE = `http://${SERVER}:8080`;

await requireTools('ip', 'node');
const { pair, directory, cleanup } = await createRoutedPair(SUBNET, 'dhcp-pxe');
t.teardown(cleanup);
await mkdir(join(directory, 'assets', 'arm64-efi'), { recursive: true });
await writeFile(join(directory, 'assets', 'arm64-efi', 'ipxe.efi'), 'not really an EFI binary');

async function configFile(name: string, mode: 'proxy' | 'authoritative') {
  const state = join(directory, name);
  await mkdir(state, { recursive: true });
  const file = join(state, 'rackboot.yaml');
  await writeFile(file, testConfigYaml({ subnet: SUBNET, mode, state, assets: join(directory, 'assets') }));
  return file;
}

const CASES = [
  { name: 'arch 0 BIOS PXE', options: FIRMWARE.biosPxe(), file: 'undionly.kpxe' },
  { name: 'arch 7 UEFI', options: FIRMWARE.uefiPxe(7), file: 'ipxe.efi' },
  { name: 'arch 9 UEFI', options: FIRMWARE.uefiPxe(9), file: 'ipxe.efi' },
  { name: 'arch 11 arm64 UEFI', options: FIRMWARE.uefiPxe(11), file: 'arm64-efi/ipxe.efi' },
  { name: 'arch 16 UEFI HTTP', options: FIRMWARE.uefiHttp(16), file: `${BASE}/assets/ipxe.efi` },
  { name: 'iPXE', options: FIRMWARE.ipxeEfi(LISTED_MAC), file: `${BASE}/boot.ipxe` },
];

const replyFor = (xid: number, type: number) => (received: Received) =>
  received.packet.op === BOOTREPLY &&
  received.packet.xid === xid &&
  received.packet.options.get(Option.messageType)?.[0] === type;

/**
 * Starts a server in `mode` and a client probe, then broadcasts each case's DISCOVER in turn (xids
 * after `firstXid`) and collects its OFFER; `nextXid` is the first xid not used yet.
 */
async function offerForEachCase(t: Test, mode: 'proxy' | 'authoritative', firstXid: number) {
  const server = await launchDhcp(pair.server, await configFile(mode, mode));
  t.teardown(() => {
    server.child.kill('SIGKILL');
  });
  const probe = await startProbe(pair.client, '0.0.0.0:68');
  const offers: { test: (typeof CASES)[number]; offer: Received }[] = [];
  let xid = firstXid;
  for (const test of CASES) {
    xid += 1;
    probe.send(
      requestBytes({ type: 'discover', mac: LISTED_MAC, xid, options: test.options }),
      '255.255.255.255',
      67,
    );
    offers.push({ test, offer: await probe.next(replyFor(xid, 2)) });
  }
  return { server, probe, offers, nextXid: xid + 1 };
}

t.test('authoritative over sockets: crafted PXE DISCOVERs get address, next-server and file', async (t) => {
  const { server, probe, offers, nextXid } = await offerForEachCase(t, 'authoritative', 0x1000);
  for (const { test, offer } of offers) {
    t.equal(offer.from, SERVER, `${test.name}: from the provisioning address`);
    t.equal(offer.port, 67);
    t.equal(offer.packet.yiaddr, `10.77.${SUBNET}.21`, `${test.name}: reserved address`);
    t.equal(offer.packet.siaddr, SERVER);
    t.equal(offer.packet.file, test.file, `${test.name}: file`);
  }
  // Full exchange for the iPXE case: ACK carries the script URL and no-pxedhcp.
  const xid = nextXid;
  const ipxe = FIRMWARE.ipxeEfi(LISTED_MAC);
  probe.send(
    requestBytes({
      type: 'request',
      mac: LISTED_MAC,
      xid,
      options: ipxe,
      requested: `10.77.${SUBNET}.21`,
      serverId: SERVER,
    }),
    '255.255.255.255',
    67,
  );
  const ack = await probe.next(replyFor(xid, 5));
  t.equal(ack.packet.file, `${BASE}/boot.ipxe`);
  t.equal(readText(ack.packet.options, Option.bootFileName), `${BASE}/boot.ipxe`);
  t.same([...(ack.packet.options.get(Option.ipxeEncapsulated) ?? [])], [176, 1, 1, 255]);
  const event = await server.event((event) => event.type === 'dhcp-ack');
  t.match(event, {
    mac: LISTED_MAC,
    ip: `10.77.${SUBNET}.21`,
    detail: { firmware: 'ipxe', bootFile: `${BASE}/boot.ipxe` },
  });
});

t.test('relay: giaddr set → unicast reply to giaddr:67 from the relay subnet’s pool', async (t) => {
  await pair.client.exec('ip', ['addr', 'add', `${RELAY}/24`, 'dev', pair.clientInterface]);
  await pair.server.exec('ip', ['route', 'add', `10.77.${SUBNET + 1}.0/24`, 'via', `10.77.${SUBNET}.2`]);
  const server = await launchDhcp(pair.server, await configFile('relay', 'authoritative'));
  t.teardown(() => {
    server.child.kill('SIGKILL');
  });
  const relay = await startProbe(pair.client, `${RELAY}:67`);
  const mac = '52:54:00:33:00:01' as Mac;
  relay.send(
    requestBytes({
      type: 'discover',
      mac,
      xid: 0x2001,
      giaddr: RELAY,
      broadcast: false,
      options: FIRMWARE.biosPxe(),
    }),
    SERVER,
    67,
  );
  const offer = await relay.next(replyFor(0x2001, 2));
  t.equal(offer.from, SERVER);
  t.equal(offer.port, 67, 'sent from the server port');
  t.equal(offer.packet.giaddr, RELAY);
  t.match(
    offer.packet.yiaddr,
    new RegExp(`^10\\.77\\.${SUBNET + 1}\\.(1\\d|20)$`),
    'address from the relay pool',
  );
  t.equal(offer.packet.file, '', 'unknown MAC: address only, no boot file');
  relay.send(
    requestBytes({
      type: 'request',
      mac,
      xid: 0x2002,
      giaddr: RELAY,
      broadcast: false,
      requested: offer.packet.yiaddr,
      serverId: SERVER,
    }),
    SERVER,
    67,
  );
  const ack = await relay.next(replyFor(0x2002, 5));
  t.equal(ack.packet.yiaddr, offer.packet.yiaddr);
});

t.test('proxy over sockets: offers carry no address; UEFI fetches its file on port 4011', async (t) => {
  const { server, probe, offers, nextXid } = await offerForEachCase(t, 'proxy', 0x3000);
  for (const { test, offer } of offers) {
    t.equal(offer.packet.yiaddr, '0.0.0.0', `${test.name}: no address`);
    t.notOk(offer.packet.options.has(Option.leaseTime));
    const uefiPxe = test.name.includes('UEFI') && !test.name.includes('HTTP');
    t.equal(offer.packet.file, uefiPxe ? '' : test.file, `${test.name}: file in the offer`);
  }
  // EDK2's next step (ProxyBinl): REQUEST unicast to the proxy's port 4011, from its new address.
  const xid = nextXid;
  probe.send(
    requestBytes({
      type: 'request',
      mac: LISTED_MAC,
      xid,
      options: FIRMWARE.uefiPxe(7),
      ciaddr: `10.77.${SUBNET}.2`,
      serverId: SERVER,
      broadcast: false,
    }),
    SERVER,
    4011,
  );
  const ack = await probe.next(replyFor(xid, 5));
  t.equal(ack.from, SERVER);
  t.equal(ack.port, 4011, 'answered from the boot-server port');
  t.equal(ack.packet.file, 'ipxe.efi');
  t.equal(ack.packet.siaddr, SERVER);
  t.equal(ack.packet.yiaddr, '0.0.0.0');
  // Non-boot clients are the LAN server's: no answer (the probe sees no reply with that xid).
  const linuxXid = 0x3999;
  probe.send(
    requestBytes({ type: 'discover', mac: LISTED_MAC, xid: linuxXid, options: FIRMWARE.linux(LISTED_MAC) }),
    '255.255.255.255',
    67,
  );
  const stats = await waitForStats(server, (stats) =>
    stats.messages.some((entry) => entry.decision === 'not-boot-client'),
  );
  t.ok(stats, 'counted as not-boot-client');
  t.notOk(probe.received.some((received) => received.packet.xid === linuxXid));
});

async function waitForStats(
  server: Awaited<ReturnType<typeof launchDhcp>>,
  predicate: (stats: Awaited<ReturnType<typeof server.stats>>) => boolean,
) {
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const stats = await server.stats();
    if (predicate(stats)) return stats;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return undefined;
}
