import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { Option, readText } from '../src/dhcp/options.js';
import type { MachineEvent } from '../src/lifecycle/events.js';
import { FIRMWARE, requestBytes } from './dhcp/fixtures.js';
import { type Probe, type Received, startProbe } from './dhcp/harness.js';
import { createRoutedPair, requireTools, waitForOutput } from './helpers/netns.js';
import { waitUntil } from './helpers/poll.js';
import { API_TOKEN, mac } from './lifecycle-fixture.js';

// The whole server (`rackboot serve`) in one namespace, a simulated machine in another, on 10.77.60.0/24.
const SUBNET = 60;
const SERVER = `10.77.${SUBNET}.1`;
const MACHINE_IP = `10.77.${SUBNET}.21`;
const BASE = `http://${SERVER}:8080`;
const MACHINE = mac('52:54:00:60:00:01');
const MAIN = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));

await requireTools('ip', 'curl', 'tftp', 'node');
const { pair, directory, cleanup } = await createRoutedPair(SUBNET, 'provisioning');
t.teardown(cleanup);

const assets = join(directory, 'assets');
await mkdir(join(directory, 'ignition'), { recursive: true });
await mkdir(assets, { recursive: true });
const bootProgram = randomBytes(90_000);
await writeFile(join(assets, 'undionly.kpxe'), bootProgram);
await writeFile(join(assets, 'vmlinuz'), 'kernel');
await writeFile(join(assets, 'initrd.img'), 'initrd');
await writeFile(join(directory, 'ignition', 'plain.ign'), JSON.stringify({ ignition: { version: '3.4.0' } }));
const configFile = join(directory, 'rackboot.yaml');
await writeFile(
  configFile,
  `server:
  address: ${SERVER}
  api_token: ${API_TOKEN}
  state: state
  assets: assets
dhcp:
  mode: authoritative
  subnet: 10.77.${SUBNET}.0/24
  range: [10.77.${SUBNET}.100, 10.77.${SUBNET}.199]
profiles:
  plain:
    kind: linux
    kernel: vmlinuz
    initrd: [initrd.img]
    args: ["my.ignition={{ignition_url}}", "my.report={{events_url}}"]
    ignition: ignition/plain.ign
machines:
  - mac: ${MACHINE}
    hostname: sim1
    profile: plain
    ip: ${MACHINE_IP}
`,
);

async function startServer(): Promise<ChildProcess> {
  const child = pair.server.spawn(process.execPath, ['--import', 'tsx', MAIN, 'serve', '-c', configFile], {
    cwd: REPO_ROOT,
  });
  await waitForOutput(child, (line) => line.includes('rackboot serving'), 60_000);
  return child;
}

async function stopServer(child: ChildProcess): Promise<void> {
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

/** curl from the machine's namespace; returns the body, failing on HTTP errors. */
function curl(...args: string[]): Promise<string> {
  return pair.client.exec(
    'curl',
    ['--silent', '--show-error', '--fail', '--max-time', '10', ...args],
    15_000,
  );
}

type MachineView = { state: string; events: MachineEvent[] };
const machineView = async () => JSON.parse(await curl(`${BASE}/api/v1/machines/${MACHINE}`)) as MachineView;

/**
 * The machine once `ready(view)` holds. The API lists events once the writer thread has committed
 * them, and a script is served without waiting for that, so the view right after a script fetch
 * may not show its event yet. Bounded: after 5 s the last view is returned as is, and the
 * caller's assertions show what was there.
 */
async function machineViewWhen(ready: (view: MachineView) => boolean): Promise<MachineView> {
  let view = await machineView();
  await waitUntil(
    async () => {
      view = await machineView();
      return ready(view);
    },
    5000,
    50,
  );
  return view;
}

let xid = 0x6000;
/** One DHCP DISCOVER/REQUEST exchange as the given firmware; resolves with the ACK. */
async function dhcpExchange(probe: Probe, options: Map<number, Buffer>): Promise<Received> {
  xid += 1;
  const reply = (type: number) => (received: Received) =>
    received.packet.xid === xid && received.packet.options.get(Option.messageType)?.[0] === type;
  probe.send(requestBytes({ type: 'discover', mac: MACHINE, xid, options }), '255.255.255.255', 67);
  const offer = await probe.next(reply(2));
  probe.send(
    requestBytes({
      type: 'request',
      mac: MACHINE,
      xid,
      options,
      requested: offer.packet.yiaddr,
      serverId: SERVER,
    }),
    '255.255.255.255',
    67,
  );
  return probe.next(reply(5));
}

/** The iPXE part of a boot: its DHCP, then the machine's own script; returns the script. */
async function ipxeBoot(t: Test, probe: Probe): Promise<string> {
  const ack = await dhcpExchange(probe, FIRMWARE.biosIpxeRom(MACHINE));
  const entry = ack.packet.file || readText(ack.packet.options, Option.bootFileName) || '';
  t.equal(entry, `${BASE}/boot.ipxe`, 'iPXE is sent to the entry script');
  await curl(entry);
  return curl(`${BASE}/boot/${MACHINE.replaceAll(':', '-')}.ipxe?arch=x86_64&platform=pcbios`);
}

t.test('DHCP → TFTP → script → Ignition → installed, restart, local disk until reprovision', async (t) => {
  let server = await startServer();
  const probe = await startProbe(pair.client, '0.0.0.0:68');

  // Firmware PXE: address and boot program.
  const ack = await dhcpExchange(probe, FIRMWARE.biosPxe());
  t.equal(ack.packet.yiaddr, MACHINE_IP, 'the reserved address');
  t.equal(ack.packet.file || readText(ack.packet.options, Option.bootFileName), 'undionly.kpxe');
  // The machine now uses its leased address (the server ties TFTP and HTTP requests to the MAC by it).
  // (Deleting the primary address first: Linux drops secondaries of a deleted primary.)
  await pair.client.exec('ip', ['addr', 'del', `${pair.clientAddress}/24`, 'dev', pair.clientInterface]);
  await pair.client.exec('ip', ['addr', 'add', `${MACHINE_IP}/24`, 'dev', pair.clientInterface]);
  await pair.client.exec('ip', ['route', 'replace', 'default', 'dev', pair.clientInterface]);
  const downloaded = join(directory, 'undionly.kpxe.received');
  await pair.client.exec('tftp', ['-m', 'binary', SERVER, '-c', 'get', 'undionly.kpxe', downloaded]);

  // iPXE: script, then what the installer does: fetch Ignition, report back.
  const script = await ipxeBoot(t, probe);
  const ignitionUrl = /my\.ignition=(\S+)/.exec(script)?.[1];
  const eventsUrl = /my\.report=(\S+)/.exec(script)?.[1];
  if (!ignitionUrl || !eventsUrl) throw new Error(`no Ignition/events URL in the install script:\n${script}`);
  t.match(JSON.parse(await curl(ignitionUrl)), { ignition: { version: /^3\./ } }, 'Ignition served');
  await curl('-X', 'POST', '-H', 'content-type: application/json', '-d', '{"type":"installed"}', eventsUrl);

  const installed = await machineView();
  t.equal(installed.state, 'installed');
  const changes = installed.events.filter((event) => event.type === 'state-changed');
  t.same(
    changes.map((event) => [event.detail?.to, event.detail?.cause]),
    [
      ['discovered', 'dhcp-offer'],
      ['booting', 'tftp-transfer'],
      ['installing', 'ignition-fetch'],
      ['installed', 'installed'],
    ],
    'the state sequence and what caused each step',
  );
  const types = installed.events.map((event) => event.type);
  for (const type of [
    'dhcp-offer',
    'dhcp-ack',
    'tftp-transfer',
    'ipxe-script',
    'ignition-fetch',
    'installed',
  ]) {
    t.ok(types.includes(type), `${type} is part of the story`);
  }
  t.same(
    [...new Set(installed.events.map((event) => event.correlationId))],
    ['525400600001-1'],
    'DHCP xid → TFTP → HTTP → report: one correlation id',
  );

  // Restart: the history and the state come back from the store.
  await stopServer(server);
  server = await startServer();
  const restarted = await machineView();
  t.equal(restarted.state, 'installed', 'state survives the restart');
  t.same(restarted.events, installed.events, 'history survives the restart');

  // The next boot goes to the local disk.
  const localBoot = await ipxeBoot(t, probe);
  t.match(localBoot, /sanboot --no-describe --drive 0x80/, 'an installed machine boots its disk');
  t.notMatch(localBoot, /my\.ignition=/);
  const afterLocal = await machineViewWhen((view) => view.events.at(-1)?.type === 'ipxe-script');
  t.equal(afterLocal.state, 'installed');
  t.match(afterLocal.events.at(-1), {
    type: 'ipxe-script',
    detail: { script: 'local-disk' },
    correlationId: '525400600001-2',
  });

  // Until the operator reprovisions it.
  const answer = JSON.parse(
    await curl(
      '-X',
      'POST',
      '-H',
      `authorization: Bearer ${API_TOKEN}`,
      `${BASE}/api/v1/machines/${MACHINE}/reprovision`,
    ),
  ) as { state: string };
  t.equal(answer.state, 'discovered');
  const installAgain = await ipxeBoot(t, probe);
  t.match(installAgain, /my\.ignition=/, 'after reprovision the next boot installs again');
  const reinstalling = await machineViewWhen(
    (view) => view.events.at(-1)?.correlationId === '525400600001-3',
  );
  t.equal(reinstalling.state, 'booting');
  t.equal(reinstalling.events.at(-1)?.correlationId, '525400600001-3');
  await stopServer(server);
});
