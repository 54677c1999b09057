import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { testConfigYaml } from './dhcp/fixtures.js';
import { launchDhcp } from './dhcp/harness.js';
import { createLinkedPair, requireTools } from './helpers/netns.js';
import { waitUntil } from './helpers/poll.js';

// Real clients, authoritative mode, namespaces on 10.77.4.0/24 (server .1, client .2).
const SUBNET = 4;

await requireTools('ip', 'busybox', 'dhclient');
const pair = await createLinkedPair(SUBNET);
const directory = await mkdtemp(join(tmpdir(), 'rackboot-dhcp-clients-'));
t.teardown(async () => {
  await pair.network.cleanup();
  await rm(directory, { recursive: true, force: true });
});
const configFile = join(directory, 'rackboot.yaml');
// A short lease so dhclient renews by itself (T1 = 3 s).
await writeFile(
  configFile,
  testConfigYaml({ subnet: SUBNET, mode: 'authoritative', state: directory, leaseTime: '6s' }),
);
const server = await launchDhcp(pair.server, configFile);

/**
 * Client scripts only set the leased address on the client's veth inside the client namespace
 * (so renewals can be sent from it and answered to it) and log what happened; they never touch
 * /etc/resolv.conf.
 */
async function clientScript(name: string, body: string): Promise<{ script: string; log: string }> {
  const script = join(directory, `${name}.sh`);
  const log = join(directory, `${name}.log`);
  await writeFile(script, `#!/bin/sh\n${body.replaceAll('LOG', log)}\n`);
  await chmod(script, 0o755);
  await writeFile(log, '');
  return { script, log };
}

/** Waits (bounded) until the client script logged a line matching `pattern`. */
async function logged(log: string, pattern: RegExp, timeoutMs = 20_000): Promise<RegExpMatchArray> {
  let match: RegExpMatchArray | null = null;
  const matched = await waitUntil(async () => {
    match = (await readFile(log, 'utf8')).match(pattern);
    return match !== null;
  }, timeoutMs);
  if (matched && match) return match;
  throw new Error(`client log never matched ${pattern}:\n${await readFile(log, 'utf8')}`);
}

const macOfInterface = async () =>
  (await pair.client.exec('cat', [`/sys/class/net/${pair.clientInterface}/address`])).trim();

t.test('busybox udhcpc obtains, renews and releases a lease', async (t) => {
  const mac = await macOfInterface();
  const { script, log } = await clientScript(
    'udhcpc',
    'case "$1" in bound|renew) ip addr replace "$ip/24" dev "$interface";; esac\necho "$1 $ip" >> LOG',
  );
  const client = pair.client.spawn('busybox', [
    'udhcpc',
    '-f',
    '-R',
    '-i',
    pair.clientInterface,
    '-s',
    script,
    '-T',
    '1',
    '-t',
    '10',
  ]);
  t.teardown(() => {
    client.kill('SIGKILL');
  });
  const bound = await logged(log, /^bound (10\.77\.4\.\d+)$/m);
  const ip = bound[1];
  t.match(ip, /^10\.77\.4\.1\d\d$/, 'an address from the pool');
  await server.event((event) => event.type === 'dhcp-ack' && event.mac === mac);

  client.kill('SIGUSR1'); // udhcpc: renew now
  await logged(log, new RegExp(`^renew ${ip?.replaceAll('.', '\\.')}$`, 'm'));
  const acks = server.events.filter((event) => event.type === 'dhcp-ack' && event.mac === mac);
  t.ok(acks.length >= 2, 'the renewal was acknowledged by our server');
  t.equal(acks.at(-1)?.ip, ip, 'same address after renewal');

  const exited = new Promise((resolve) => client.once('exit', resolve));
  client.kill('SIGTERM'); // -R: release on exit
  await exited;
  const release = await server.event((event) => event.type === 'dhcp-release' && event.mac === mac);
  t.match(release.detail, { ip });
  await pair.client
    .exec('ip', ['addr', 'del', `${ip}/24`, 'dev', pair.clientInterface])
    .catch(() => undefined);
});

t.test('ISC dhclient obtains, renews and releases a lease', async (t) => {
  const mac = await macOfInterface();
  const { script, log } = await clientScript(
    'dhclient',
    'case "$reason" in BOUND|RENEW|REBIND|REBOOT) ip addr replace "$new_ip_address/24" dev "$interface";; esac\n' +
      'echo "$reason $new_ip_address" >> LOG',
  );
  const files = [
    '-pf',
    join(directory, 'dhclient.pid'),
    '-lf',
    join(directory, 'dhclient.leases'),
    '-sf',
    script,
  ];
  const client = pair.client.spawn('dhclient', ['-d', '-1', ...files, pair.clientInterface]);
  t.teardown(() => {
    client.kill('SIGKILL');
  });
  const bound = await logged(log, /^BOUND (10\.77\.4\.\d+)$/m);
  const ip = bound[1] ?? '';
  t.match(ip, /^10\.77\.4\.1\d\d$/);
  // T1 = 3 s: dhclient renews by unicast to us on its own.
  await logged(log, new RegExp(`^RENEW ${ip.replaceAll('.', '\\.')}$`, 'm'), 15_000);
  const renewal = await server.event(
    (event) => event.type === 'dhcp-ack' && event.mac === mac && event.ip === ip,
  );
  t.ok(renewal);
  t.ok(
    server.events.filter((event) => event.type === 'dhcp-ack' && event.mac === mac).length >= 2,
    'initial ACK and renewal ACK',
  );

  const exited = new Promise((resolve) => client.once('exit', resolve));
  await pair.client.exec('dhclient', ['-r', ...files, pair.clientInterface], 15_000);
  const release = await server.event((event) => event.type === 'dhcp-release' && event.mac === mac);
  t.match(release.detail, { ip });
  await exited;
  const stats = await server.stats();
  t.ok(stats.messages.some((entry) => entry.type === 'release' && entry.decision === 'released'));
  t.ok(stats.messages.some((entry) => entry.type === 'request' && entry.decision === 'ack'));
  t.same(stats.malformed, [], 'real clients send nothing malformed');
});

t.test('ISC dhclient rebooting with another machine’s reserved address is NAKed, then leases', async (t) => {
  // A MAC the server has no lease record of: with one, any other address is simply not yours.
  const originalMac = await macOfInterface();
  const mac = '52:54:00:04:00:77';
  await pair.client.exec('ip', ['link', 'set', 'dev', pair.clientInterface, 'address', mac]);
  t.teardown(() =>
    pair.client.exec('ip', ['link', 'set', 'dev', pair.clientInterface, 'address', originalMac]),
  );
  const reserved = `10.77.${SUBNET}.21`; // LISTED_MAC's machines[].ip, not this client's
  const leaseFile = join(directory, 'dhclient-reserved.leases');
  // A remembered, unexpired lease makes dhclient start in INIT-REBOOT: REQUEST with option 50 only.
  await writeFile(
    leaseFile,
    `lease {\n  interface "${pair.clientInterface}";\n  fixed-address ${reserved};\n` +
      '  option subnet-mask 255.255.255.0;\n  renew 4 2099/01/01 00:00:00;\n' +
      '  rebind 4 2099/01/01 00:00:00;\n  expire 4 2099/01/01 00:00:00;\n}\n',
  );
  const { script, log } = await clientScript(
    'dhclient-reserved',
    'case "$reason" in BOUND|REBOOT) ip addr replace "$new_ip_address/24" dev "$interface";; esac\n' +
      'echo "$reason $new_ip_address" >> LOG',
  );
  const files = ['-pf', join(directory, 'dhclient-reserved.pid'), '-lf', leaseFile, '-sf', script];
  const client = pair.client.spawn('dhclient', ['-d', '-1', ...files, pair.clientInterface]);
  t.teardown(() => {
    client.kill('SIGKILL');
  });
  const refusal = await server.event((event) => event.type === 'dhcp-nak' && event.mac === mac);
  t.match(refusal.detail, { message: 'address reserved for another machine', requested: reserved });
  const bound = await logged(log, /^BOUND (10\.77\.4\.\d+)$/m);
  t.match(bound[1], /^10\.77\.4\.1\d\d$/, 'after the NAK it starts over and gets a pool address');
  t.notOk(
    server.events.some((event) => event.type === 'dhcp-ack' && event.mac === mac && event.ip === reserved),
    'the reserved address was never given to it',
  );
  const exited = new Promise((resolve) => client.once('exit', resolve));
  await pair.client.exec('dhclient', ['-r', ...files, pair.clientInterface], 15_000);
  await exited;
  await pair.client
    .exec('ip', ['addr', 'del', `${bound[1]}/24`, 'dev', pair.clientInterface])
    .catch(() => undefined);
});
