import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { Option } from '../src/dhcp/options.js';
import { BOOTREPLY } from '../src/dhcp/packet.js';
import { FIRMWARE, LISTED_MAC, requestBytes, testConfigYaml, UNLISTED_MAC } from './dhcp/fixtures.js';
import { launchDhcp, onLines, type Probe, type Received, startProbe, waitForLine } from './dhcp/harness.js';
import { createRoutedPair, requireTools } from './helpers/netns.js';
import { waitUntil } from './helpers/poll.js';

// The DHCP server on its own thread, as `rackboot serve` runs it (src/dhcp/thread.ts), driven through
// test/dhcp/launch.ts --thread. Namespaces on 10.77.150.0/24 (server .1, client .2).
const SUBNET = 150;
const SERVER = `10.77.${SUBNET}.1`;

await requireTools('ip', 'iptables');
const { pair, directory, cleanup } = await createRoutedPair(SUBNET, 'dhcp-thread');
t.teardown(cleanup);

async function configFile(
  name: string,
  mode: 'proxy' | 'authoritative',
  unknownMachines: 'ignore' | 'coreos' = 'ignore',
) {
  const state = join(directory, name);
  await mkdir(state, { recursive: true });
  const file = join(state, `rackboot-${unknownMachines}.yaml`);
  await writeFile(file, testConfigYaml({ subnet: SUBNET, mode, state, unknownMachines }));
  return file;
}

const reply = (xid: number, type: number) => (received: Received) =>
  received.packet.op === BOOTREPLY &&
  received.packet.xid === xid &&
  received.packet.options.get(Option.messageType)?.[0] === type;
const OFFER = 2;
const ACK = 5;

/**
 * Whether UNLISTED_MAC's DISCOVERs (with `options`) get an OFFER within `timeoutMs`, asking once a
 * second: for a thread that is being started again or given another config.
 */
function offeredWithin(client: Probe, timeoutMs: number, options?: Map<number, Buffer>): Promise<boolean> {
  let xid = 0x7f00;
  return waitUntil(async () => {
    xid += 1;
    client.send(requestBytes({ type: 'discover', mac: UNLISTED_MAC, xid, options }), '255.255.255.255', 67);
    return client
      .next(reply(xid, OFFER), 1000)
      .then(() => true)
      .catch(() => false);
  }, timeoutMs);
}

async function launchThreaded(t: Test, file: string, logLevel = 'warn', flags: string[] = []) {
  const server = await launchDhcp(pair.server, file, ['--thread', ...flags], {
    RACKBOOT_LOG_LEVEL: logLevel,
  });
  const lines: string[] = [];
  onLines(server.child, (line) => lines.push(line));
  t.teardown(() => {
    server.child.kill('SIGKILL');
  });
  const command = async (line: string, answer: string, timeoutMs = 30_000) => {
    const answered = waitForLine(server.child, (output) => output === answer, timeoutMs);
    server.child.stdin?.write(`${line}\n`);
    await answered;
  };
  return { server, lines, command, stderr: server.stderr };
}

t.test('DHCP is answered while the main thread is busy', async (t) => {
  const { server, lines, command } = await launchThreaded(t, await configFile('busy', 'proxy'));
  const client = await startProbe(pair.client, '0.0.0.0:68');
  const blocked = waitForLine(server.child, (line) => line === 'BLOCKING', 10_000);
  server.child.stdin?.write('block 4000\n');
  await blocked;
  const discover = requestBytes({
    type: 'discover',
    mac: LISTED_MAC,
    xid: 0x7001,
    options: FIRMWARE.uefiPxe(7),
  });
  client.send(discover, '255.255.255.255', 67);
  const offer = await client.next(reply(0x7001, OFFER), 3000);
  t.equal(offer.packet.options.get(Option.vendorClass)?.toString(), 'PXEClient', 'the ProxyDHCP offer came');
  t.notOk(lines.includes('UNBLOCKED'), 'it arrived while the main thread was still busy');
  await waitForLine(server.child, (line) => line === 'UNBLOCKED', 10_000).catch(() => undefined);
  const event = await server.event(
    (recorded) => recorded.type === 'dhcp-offer' && recorded.mac === LISTED_MAC,
  );
  t.match(event.detail, { xid: '00007001', firmware: 'uefi-pxe' }, 'its event reaches the main thread');
  await command('block 0', 'UNBLOCKED');
});

t.test('the main thread knows who holds an address, also after the thread is restarted', async (t) => {
  const { server, command, stderr } = await launchThreaded(t, await configFile('leases', 'authoritative'));
  const client = await startProbe(pair.client, '0.0.0.0:68');
  client.send(requestBytes({ type: 'discover', mac: LISTED_MAC, xid: 0x7101 }), '255.255.255.255', 67);
  const offer = await client.next(reply(0x7101, OFFER));
  const address = offer.packet.yiaddr;
  t.equal(await server.macForIp(address), null, 'an offered address has no holder yet');
  client.send(
    requestBytes({ type: 'request', mac: LISTED_MAC, xid: 0x7102, requested: address, serverId: SERVER }),
    '255.255.255.255',
    67,
  );
  await client.next(reply(0x7102, ACK));
  t.equal(await server.macForIp(address), LISTED_MAC, 'the bound lease is known on the main thread');
  const countsBefore = (await server.stats()).messages;

  await command('kill-thread', 'KILLED');
  t.ok(
    await waitUntil(async () => stderr().includes('the DHCP thread died; starting another'), 10_000),
    'the death is logged',
  );
  const answered = await offeredWithin(client, 20_000);
  t.ok(answered, 'a new thread answers');
  t.equal(await server.macForIp(address), LISTED_MAC, 'the lease came back from the lease log');
  const after = await server.stats();
  t.equal(after.boundLeases, 1, 'stats come from the new thread');
  // A new thread counts from 0: the dead one's counts are added, so no total on /metrics falls back.
  const countOf = (rows: typeof countsBefore, row: (typeof countsBefore)[number]) =>
    rows.find((other) => other.type === row.type && other.decision === row.decision)?.count ?? 0;
  t.ok(countsBefore.length > 0, 'the first thread counted its messages');
  for (const row of countsBefore)
    t.ok(countOf(after.messages, row) >= row.count, `${row.type} → ${row.decision}: ${row.count} or more`);
  t.ok(
    countOf(after.messages, { type: 'request', decision: 'ack', count: 0 }) >= 1,
    'the ACK the dead thread sent is still counted',
  );
});

t.test('proxy mode: what the thread learned of addresses outlives its restart', async (t) => {
  const { server, command, stderr } = await launchThreaded(t, await configFile('learned', 'proxy', 'coreos'));
  const client = await startProbe(pair.client, '0.0.0.0:68');
  const address = `10.77.${SUBNET}.77`;
  // The LAN's DHCP server gave the machine its address; proxy mode overhears the REQUEST.
  client.send(
    requestBytes({
      type: 'request',
      mac: LISTED_MAC,
      xid: 0x7301,
      requested: address,
      options: FIRMWARE.uefiPxe(7),
    }),
    '255.255.255.255',
    67,
  );
  t.ok(
    await waitUntil(async () => (await server.macForIp(address)) === LISTED_MAC, 10_000),
    'the main thread knows the machine behind the address',
  );
  await command('kill-thread', 'KILLED');
  t.ok(
    await waitUntil(async () => stderr().includes('the DHCP thread died; starting another'), 10_000),
    'the death is logged',
  );
  t.ok(await offeredWithin(client, 20_000, FIRMWARE.uefiPxe(7)), 'a new thread answers');
  // TFTP and HTTP events of a boot in progress name its MAC by this answer.
  t.equal(await server.macForIp(address), LISTED_MAC, 'still known after the restart');
});

t.test('a thread that cannot start again is tried again until it can', async (t) => {
  const file = await configFile('retry', 'authoritative');
  const state = join(directory, 'retry');
  const { server, command, stderr } = await launchThreaded(t, file);
  const client = await startProbe(pair.client, '0.0.0.0:68');
  client.send(requestBytes({ type: 'discover', mac: LISTED_MAC, xid: 0x7501 }), '255.255.255.255', 67);
  const address = (await client.next(reply(0x7501, OFFER))).packet.yiaddr;
  client.send(
    requestBytes({ type: 'request', mac: LISTED_MAC, xid: 0x7502, requested: address, serverId: SERVER }),
    '255.255.255.255',
    67,
  );
  await client.next(reply(0x7502, ACK));
  // The lease log cannot be opened while server.state is a file.
  await rename(state, `${state}.away`);
  await writeFile(state, 'in the way');
  await command('kill-thread', 'KILLED');
  t.ok(
    await waitUntil(async () => stderr().includes('the DHCP thread could not start again'), 10_000),
    'the failed start is logged',
  );
  await rm(state);
  await rename(`${state}.away`, state);
  const answered = await offeredWithin(client, 20_000);
  t.ok(answered, 'a later try starts it');
  t.equal(await server.macForIp(address), LISTED_MAC, 'with the lease from before');
});

t.test('the thread logs through the main logger, and a reload reaches it', async (t) => {
  const ignoring = await configFile('reload', 'proxy', 'ignore');
  const answering = await configFile('reload', 'proxy', 'coreos');
  const { server, command, stderr } = await launchThreaded(t, ignoring, 'info');
  t.match(
    stderr(),
    /"level":30,[^\n]*"component":"dhcp"[^\n]*"msg":"DHCP listening"/,
    "the thread's log lines come out of the main thread's dhcp logger",
  );
  const client = await startProbe(pair.client, '0.0.0.0:68');
  client.send(
    requestBytes({ type: 'discover', mac: UNLISTED_MAC, xid: 0x7301, options: FIRMWARE.uefiPxe(7) }),
    '255.255.255.255',
    67,
  );
  await t.rejects(client.next(reply(0x7301, OFFER), 1500), 'unknown_machines: ignore: no answer');
  await command(`reload ${answering}`, 'RELOADED');
  const answered = await offeredWithin(client, 10_000, FIRMWARE.uefiPxe(7));
  t.ok(answered, 'after the reload the unknown machine gets its offer');
  t.ok(
    await waitUntil(async () => server.events.some((event) => event.mac === UNLISTED_MAC), 5000),
    'and its event is recorded',
  );
});

t.test('a reload while the first thread starts reaches it', async (t) => {
  const ignoring = await configFile('reload-at-start', 'proxy', 'ignore');
  const answering = await configFile('reload-at-start', 'proxy', 'coreos');
  await launchThreaded(t, ignoring, 'warn', ['--reload-at-start', answering]);
  const client = await startProbe(pair.client, '0.0.0.0:68');
  // Once, the thread kept the config it started with until the next reload.
  t.ok(
    await offeredWithin(client, 10_000, FIRMWARE.uefiPxe(7)),
    'the unknown machine gets the offer the reload allows',
  );
});

t.test('close() during a restart returns once the new thread is closed too', async (t) => {
  const { server, lines, command } = await launchThreaded(
    t,
    await configFile('close-in-restart', 'authoritative'),
  );
  await command('kill-thread', 'KILLED');
  // The restart begins after RESTART_DELAY_MS; close() is called while it is under way.
  t.ok(await waitUntil(async () => lines.includes('THREAD-STARTING 2'), 10_000), 'a new thread is starting');
  const closed = waitForLine(server.child, (line) => line.startsWith('CLOSED'), 30_000);
  server.child.stdin?.write('close\n');
  t.equal(
    await closed,
    'CLOSED alive=0',
    'no thread runs once close() is done (once, the new one came up after it, on a state already released)',
  );
});

t.test('a thread that cannot start rejects with its error, code and all', async (t) => {
  const file = await configFile('broken-state', 'authoritative');
  // The lease log's directory cannot be made where server.state is a file.
  const state = join(directory, 'state-is-a-file');
  await writeFile(state, 'not a directory');
  const text = testConfigYaml({ subnet: SUBNET, mode: 'authoritative', state });
  await writeFile(file, text);
  const child = pair.server.spawn(
    process.execPath,
    ['--import', 'tsx', 'test/dhcp/launch.ts', file, '--thread'],
    {
      cwd: new URL('..', import.meta.url).pathname,
    },
  );
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  t.not(code, 0, 'the start fails');
  t.match(
    stderr,
    /code: 'EEXIST'[\s\S]*syscall: 'mkdir'/,
    'with the error the thread met, its code included',
  );
});
