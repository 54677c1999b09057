import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { stopChild } from '../src/lab/network.js';
import { cliCommand } from './helpers/cli.js';
import { requireTools, run, waitForOutput } from './helpers/netns.js';

// A namespace of this file's own (rv80…) holding only loopback and a veth pair with both ends inside
// it, on 10.77.190.0/24: nothing here can reach a real network.
const SERVER = '10.77.190.1';

/**
 * dnsmasq, with its default config (no bind-interfaces), binds 0.0.0.0:67 without SO_REUSEADDR, so
 * rackboot cannot share the port. In proxy mode the way out is to make that server bind its
 * interface address; stopping it (the LAN would lose its DHCP) or moving server.dhcp.port (PXE
 * clients broadcast to 67) is not.
 */
t.test('proxy mode: a DHCP server holding port 67 alone is named with the way to share it', async (t) => {
  await requireTools('ip', 'node');
  const directory = await mkdtemp(join(tmpdir(), 'rackboot-dhcp-port-shared-'));
  const namespace = `rv80p${process.pid.toString(36)}`.slice(0, 15);
  const children: ChildProcess[] = [];
  t.teardown(async () => {
    await Promise.all(children.map((child) => stopChild(child)));
    await run('ip', ['netns', 'del', namespace]).catch(() => undefined);
    await rm(directory, { recursive: true, force: true });
  });
  await run('ip', ['netns', 'add', namespace]);
  const inNamespace = (command: string, args: string[]) => {
    const child = spawn('ip', ['netns', 'exec', namespace, command, ...args], { stdio: 'pipe' });
    children.push(child);
    return child;
  };
  await run('ip', ['-n', namespace, 'link', 'set', 'lo', 'up']);
  await run('ip', ['-n', namespace, 'link', 'add', 'rv80a0', 'type', 'veth', 'peer', 'name', 'rv80a1']);
  await run('ip', ['-n', namespace, 'addr', 'add', `${SERVER}/24`, 'dev', 'rv80a0']);
  for (const end of ['rv80a0', 'rv80a1']) await run('ip', ['-n', namespace, 'link', 'set', end, 'up']);

  const occupier = inNamespace(process.execPath, [
    '-e',
    `const s = require('node:dgram').createSocket('udp4');
     s.bind(67, '0.0.0.0', () => console.log('BOUND'));`,
  ]);
  await waitForOutput(occupier, (line) => line === 'BOUND', 10_000);

  const assets = join(directory, 'assets');
  await mkdir(assets);
  for (const file of ['vmlinuz', 'initrd.img', 'undionly.kpxe', 'ipxe.efi']) {
    await writeFile(join(assets, file), file);
  }
  const config = join(directory, 'rackboot.yaml');
  await writeFile(
    config,
    `server:
  address: ${SERVER}
  assets: ${assets}
  state: ${join(directory, 'state')}
dhcp:
  mode: proxy
profiles:
  plain:
    kind: linux
    kernel: vmlinuz
    initrd: [initrd.img]
machines: []
`,
  );
  const [command, args] = cliCommand(['serve', '-c', config]);
  const serve = inNamespace(command, args);
  let stderr = '';
  serve.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk;
  });
  const code = await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => {
      serve.kill('SIGKILL');
      resolve(null);
    }, 30_000);
    serve.once('exit', (exitCode) => {
      clearTimeout(timer);
      resolve(exitCode);
    });
  });
  t.equal(code, 1, 'serve refuses to start');
  t.match(stderr, /server\.dhcp\.port 67 is already in use on 0\.0\.0\.0/);
  t.match(stderr, /bind-interfaces/, 'says how the LAN’s DHCP server can share the port');
  t.notMatch(
    stderr,
    /stop the other server|change server\.dhcp\.port/,
    'no advice that breaks the LAN or PXE',
  );
});
