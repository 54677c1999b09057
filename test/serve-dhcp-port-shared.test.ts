import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { stopChild } from '../src/lab/network.js';
import { cliCommand } from './helpers/cli.js';
import { requireTools, run, waitForOutput } from './helpers/netns.js';

// A namespace per test (rv80…) holding only loopback and a veth pair with both ends inside it, on
// 10.77.190.0/24: nothing here can reach a real network.
const SERVER = '10.77.190.1';

/** The namespace, a config writer and `rackboot serve` in it, all removed by the test's teardown. */
async function namespaceWithServe(t: Test, tag: string) {
  await requireTools('ip', 'node');
  const directory = await mkdtemp(join(tmpdir(), 'rackboot-dhcp-port-shared-'));
  const namespace = `rv80${tag}${process.pid.toString(36)}`.slice(0, 15);
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

  const assets = join(directory, 'assets');
  await mkdir(assets);
  for (const file of ['vmlinuz', 'initrd.img', 'undionly.kpxe', 'ipxe.efi']) {
    await writeFile(join(assets, file), file);
  }
  /** `rackboot serve` in the namespace, on a config of its own: `name` picks its state directory. */
  const serve = async (name: string, dhcp: string, httpPort = 8080) => {
    const config = join(directory, `${name}.yaml`);
    await writeFile(
      config,
      `server:
  address: ${SERVER}
  http: { port: ${httpPort} }
  tftp: { port: ${httpPort + 1} }
  assets: ${assets}
  state: ${join(directory, name)}
dhcp:
${dhcp}
profiles:
  plain:
    kind: linux
    kernel: vmlinuz
    initrd: [initrd.img]
machines: []
`,
    );
    const [command, args] = cliCommand(['serve', '-c', config]);
    return inNamespace(command, args);
  };
  return { inNamespace, serve, stateOf: (name: string) => join(directory, name) };
}

/** Binds `port` on 0.0.0.0 in the namespace without SO_REUSEADDR, as dnsmasq and pixiecore do. */
async function occupyWithoutSharing(
  inNamespace: (command: string, args: string[]) => ChildProcess,
  port: number,
) {
  const occupier = inNamespace(process.execPath, [
    '-e',
    `const s = require('node:dgram').createSocket('udp4');
     s.bind(${port}, '0.0.0.0', () => console.log('BOUND'));`,
  ]);
  await waitForOutput(occupier, (line) => line === 'BOUND', 10_000);
}

/** The exit code (null after 30 s, when it is killed) and standard error of a serve refused at start. */
async function refusal(serve: ChildProcess): Promise<{ code: number | null; stderr: string }> {
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
  return { code, stderr };
}

/**
 * dnsmasq, with its default config (no bind-interfaces), binds 0.0.0.0:67 without SO_REUSEADDR, so
 * rackboot cannot share the port. In proxy mode the way out is to make that server bind its
 * interface address; stopping it (the LAN would lose its DHCP) or moving server.dhcp.port (PXE
 * clients broadcast to 67) is not.
 */
t.test('proxy mode: a DHCP server holding port 67 alone is named with the way to share it', async (t) => {
  const { inNamespace, serve } = await namespaceWithServe(t, 'p');
  await occupyWithoutSharing(inNamespace, 67);

  const { code, stderr } = await refusal(await serve('state', '  mode: proxy'));
  t.equal(code, 1, 'serve refuses to start');
  t.match(stderr, /server\.dhcp\.port 67 is already in use on 0\.0\.0\.0/);
  t.match(stderr, /bind-interfaces/, 'says how the LAN’s DHCP server can share the port');
  t.notMatch(
    stderr,
    /stop the other server|change server\.dhcp\.port/,
    'no advice that breaks the LAN or PXE',
  );
});

/**
 * Proxy mode's default UEFI style sends every UEFI PXE client to port 4011. Before, a server that
 * could not bind it only logged a warning and started: no UEFI PXE machine could boot.
 */
t.test(
  'proxy mode: port 4011 held by another boot server stops the start, unless the style needs none',
  async (t) => {
    const { inNamespace, serve } = await namespaceWithServe(t, 'b');
    await occupyWithoutSharing(inNamespace, 4011);

    const { code, stderr } = await refusal(await serve('boot-server', '  mode: proxy'));
    t.equal(code, 1, 'serve refuses to start');
    t.match(stderr, /server\.dhcp\.proxy_port 4011 is already in use on 0\.0\.0\.0; another PXE boot server/);
    t.match(stderr, /dhcp\.uefi_proxy_style: direct/, 'names the style that needs no port 4011');

    const direct = await serve('direct', '  mode: proxy\n  uefi_proxy_style: direct', 8120);
    let output = '';
    direct.stdout?.on('data', (chunk: Buffer) => {
      output += chunk;
    });
    await waitForOutput(direct, (line) => line.includes('rackboot serving'), 30_000);
    t.match(
      output,
      /PXE boot-server port \(server\.dhcp\.proxy_port\) unavailable/,
      'direct style: a warning only',
    );
  },
);

/**
 * rackboot binds its DHCP sockets shared, so the bind alone let a second rackboot (another state
 * directory, so the state lock does not stop it) answer every client as well: in authoritative
 * mode from a lease table of its own, handing out the first one's addresses.
 */
t.test(
  'a second rackboot answering DHCP in the same network namespace is refused, naming the first',
  async (t) => {
    const { serve, stateOf } = await namespaceWithServe(t, 'two');
    const authoritative = `  mode: authoritative
  subnet: 10.77.190.0/24
  range: [10.77.190.100, 10.77.190.150]`;
    const first = await serve('first', authoritative);
    await waitForOutput(first, (line) => line.includes('rackboot serving'), 30_000);

    const { code, stderr } = await refusal(await serve('second', authoritative, 8090));
    t.equal(code, 1, 'the second serve refuses to start');
    t.match(
      stderr,
      new RegExp(
        `server\\.dhcp\\.port 67 is already in use on 0\\.0\\.0\\.0; another rackboot serve \\(pid \\d+, server\\.state ${stateOf('first')}\\) answers DHCP on it`,
      ),
      'names the rackboot holding the port and its state directory',
    );
    const proxy = await refusal(await serve('proxy', '  mode: proxy', 8100));
    t.equal(proxy.code, 1, 'in proxy mode too');

    first.kill('SIGKILL');
    await new Promise((resolve) => first.once('exit', resolve));
    const after = await serve('after', authoritative, 8110);
    await waitForOutput(after, (line) => line.includes('rackboot serving'), 30_000);
    t.pass('once the first is gone, however it ended, another starts');
  },
);
