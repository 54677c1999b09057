import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  closeSync,
  constants,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { open } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { type Mac, macFromBytes, parseMac } from '../src/inventory/mac.js';
import { stopChild } from '../src/lab/network.js';
import type { MachineEventInput } from '../src/lifecycle/events.js';
import { DATABASE_FILE_NAME, MAX_UNINSTALLED, openLifecycle } from '../src/lifecycle/store.js';
import { cliCommand, runCli } from './helpers/cli.js';
import { freePort } from './helpers/loopback.js';
import { createTestNetwork, requireTools, waitForOutput } from './helpers/netns.js';
import { asNobody, NOBODY, requireRoot } from './helpers/root.js';

/**
 * `rackboot serve` as a real process on loopback (DHCP off, so nothing touches a real interface):
 * it serves, applies a valid edit without a restart, keeps serving through an invalid one, and
 * shuts down cleanly on SIGTERM.
 */

function configText(httpPort: number, tftpPort: number, machines: string): string {
  return `server:
  address: 127.0.0.1
  http: { port: ${httpPort}, listen: 127.0.0.1 }
  tftp: { port: ${tftpPort}, listen: 127.0.0.1 }
  api_token: operator-token-0123456789
dhcp:
  mode: off
profiles:
  plain:
    kind: linux
    kernel: vmlinuz
    initrd: [initrd.img]
    args: [console=ttyS0]
machines:
${machines}`;
}

function saveLikeAnEditor(file: string, text: string) {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
}

function startServe(configFile: string): ChildProcess {
  const [command, args] = cliCommand(['serve', '-c', configFile]);
  return spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A `serve` expected to refuse its start: its exit code and stderr, or 'running' (then killed) after 30 s. */
async function failedStart(
  serve: ChildProcess,
): Promise<{ code: number | null | 'running'; stderr: string }> {
  let stderr = '';
  serve.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk;
  });
  const exited = new Promise<number | null>((resolve) => serve.once('exit', resolve));
  const code = await Promise.race([
    exited,
    new Promise<'running'>((resolve) => setTimeout(() => resolve('running'), 30_000).unref()),
  ]);
  if (code === 'running') serve.kill('SIGKILL');
  return { code, stderr };
}

/**
 * Servers to stop (SIGTERM, then SIGKILL) when `t` ends. Call it before the test's first t.testdir:
 * tap removes a test's directory before the teardowns registered after its first testdir, and a
 * server still running there wrote into it (ENOTEMPTY, and its handle kept the test file open until
 * tap's timeout).
 */
function stopsWithTest(t: Test): (server: ChildProcess) => ChildProcess {
  const servers: ChildProcess[] = [];
  t.teardown(async () => {
    await Promise.all(servers.map((server) => stopChild(server)));
  });
  return (server) => {
    servers.push(server);
    return server;
  };
}

/**
 * `rackboot serve` on the config `text` gives for two free ports, in a fresh test directory; it and
 * the servers passed to `stopWithTest` are stopped with the test.
 */
async function serveFixture(t: Test, text: (httpPort: number, tftpPort: number) => string) {
  const stopWithTest = stopsWithTest(t);
  const directory = t.testdir({ 'boot-assets': { vmlinuz: 'kernel', 'initrd.img': 'initrd' } });
  const [httpPort, tftpPort] = [await freePort(), await freePort()];
  const file = join(directory, 'rackboot.yaml');
  writeFileSync(file, text(httpPort, tftpPort));
  const child = stopWithTest(startServe(file));
  return { directory, file, child, httpPort, tftpPort, stopWithTest };
}

t.test('serve: hot reload and graceful shutdown', async (t) => {
  const { file, child, httpPort, tftpPort } = await serveFixture(t, (httpPort, tftpPort) =>
    configText(httpPort, tftpPort, '  - { mac: 52:54:00:00:00:01, profile: plain, hostname: one }\n'),
  );
  await waitForOutput(child, (line) => line.includes('rackboot serving'), 30_000);
  const base = `http://127.0.0.1:${httpPort}`;

  const script = await fetch(`${base}/boot.ipxe`);
  t.equal(script.status, 200, 'serves the iPXE entry script');
  t.match(await script.text(), /^#!ipxe/);

  const reloaded = waitForOutput(child, (line) => line.includes('config reloaded'), 10_000);
  saveLikeAnEditor(
    file,
    configText(
      httpPort,
      tftpPort,
      '  - { mac: 52:54:00:00:00:01, profile: plain, hostname: one }\n  - { mac: 52:54:00:00:00:02, profile: plain, hostname: two }\n',
    ),
  );
  t.match(await reloaded, /machines added: 52:54:00:00:00:02/, 'the reload is logged with what changed');
  const explained = await fetch(`${base}/api/v1/explain?mac=52-54-00-00-00-02`);
  t.equal(explained.status, 200, 'the new machine is known without a restart');
  t.match(JSON.stringify(await explained.json()), /two/);

  const rejected = waitForOutput(child, (line) => line.includes('config edit rejected'), 10_000);
  saveLikeAnEditor(file, `${readFileSync(file, 'utf8')}  - { mac: 52:54:00:00:00:02, profile: plain }\n`);
  t.match(
    await rejected,
    /rackboot\.yaml:17:12: duplicate MAC 52:54:00:00:00:02: also at line 16:12/,
    'the bad edit is logged at its line',
  );
  const stillServing = await fetch(`${base}/api/v1/explain?mac=52:54:00:00:00:02`);
  t.equal(stillServing.status, 200, 'the previous config keeps serving');
  t.match(JSON.stringify(await stillServing.json()), /two/);

  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const stopped = waitForOutput(child, (line) => line.includes('"msg":"stopped"'), 10_000);
  child.kill('SIGTERM');
  await stopped;
  t.equal(await exited, 0, 'exits 0 after SIGTERM');
  await t.rejects(fetch(`${base}/boot.ipxe`), 'the HTTP socket is closed');
});

t.test('serve --pretty whose log reader is gone stops at once on SIGTERM, exit 0', async (t) => {
  // `serve --pretty | grep node1`, then Ctrl-C: the terminal's SIGINT ends grep with serve, and the
  // shutdown lines go to a pipe nobody reads. They waited for the 10 s shutdown limit, then exit 1.
  const stopWithTest = stopsWithTest(t);
  const directory = t.testdir({ 'boot-assets': { vmlinuz: 'kernel', 'initrd.img': 'initrd' } });
  const [httpPort, tftpPort] = [await freePort(), await freePort()];
  const file = join(directory, 'rackboot.yaml');
  writeFileSync(file, configText(httpPort, tftpPort, ''));
  const [command, args] = cliCommand(['serve', '--pretty', '-c', file]);
  const child = stopWithTest(spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
  await waitForOutput(child, (line) => line.includes('rackboot serving'), 30_000);
  child.stdout?.destroy();
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const signalled = performance.now();
  child.kill('SIGTERM');
  t.equal(await exited, 0, 'exits 0');
  t.ok(performance.now() - signalled < 5000, 'well within the shutdown limit');
});

t.test("with --log-level the file's server.log_level is not reported as awaiting a restart", async (t) => {
  // The flag sets the level now and after any restart: before, an edit of server.log_level was
  // logged as "still the running value until a restart" with the file's first value as the running
  // one ("info" while serve ran at debug).
  const stopWithTest = stopsWithTest(t);
  const directory = t.testdir({ 'boot-assets': { vmlinuz: 'kernel', 'initrd.img': 'initrd' } });
  const [httpPort, tftpPort] = [await freePort(), await freePort()];
  const file = join(directory, 'rackboot.yaml');
  const machine = '  - { mac: 52:54:00:00:00:01, profile: plain }\n';
  writeFileSync(file, configText(httpPort, tftpPort, machine));
  const [command, args] = cliCommand(['serve', '-c', file, '--log-level', 'debug']);
  const child = stopWithTest(spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    output += chunk;
  });
  await waitForOutput(child, (line) => line.includes('rackboot serving'), 30_000);

  const withLogLevel = (machines: string) =>
    configText(httpPort, tftpPort, machines).replace('server:\n', 'server:\n  log_level: warn\n');
  const reloaded = waitForOutput(child, (line) => line.includes('config reloaded'), 10_000);
  saveLikeAnEditor(file, withLogLevel(machine));
  t.match(await reloaded, /no effective change/, 'the level stays the one the flag set');
  // Log lines come in order: once the next reload is logged, anything the first one said is in.
  const next = waitForOutput(child, (line) => line.includes('machines added'), 10_000);
  saveLikeAnEditor(file, withLogLevel(`${machine}  - { mac: 52:54:00:00:00:02, profile: plain }\n`));
  await next;
  t.notMatch(output, /until a restart/, 'no restart is said to be needed');
});

t.test('without server.api_token the CLI on the host uses the token the server keeps', async (t) => {
  const { directory, file, child, httpPort } = await serveFixture(t, (httpPort, tftpPort) =>
    configText(httpPort, tftpPort, '  - { mac: 52:54:00:00:00:01, profile: plain }\n').replace(
      /^ {2}api_token: .*\n/m,
      '',
    ),
  );
  const announced = waitForOutput(child, (line) => line.includes('no server.api_token'), 30_000);
  await waitForOutput(child, (line) => line.includes('rackboot serving'), 30_000);
  const tokenFile = join(directory, 'state', 'operator-token');
  t.match(await announced, tokenFile, 'the log names the file');
  t.equal(statSync(tokenFile).mode & 0o777, 0o600, 'readable by the server’s user only');
  const base = `http://127.0.0.1:${httpPort}`;
  t.equal((await fetch(`${base}/boot/52-54-00-00-00-01.ipxe`)).status, 200, 'the machine boots: booting');

  const env = { RACKBOOT_API_TOKEN: '', RACKBOOT_CONFIG: '' };
  const accepted = await runCli(['reprovision', '52:54:00:00:00:01', '-c', file], { env });
  t.equal(accepted.code, 0, accepted.stderr);
  t.match(accepted.stdout, /installs again at its next network boot \(now booting\)/);
  const stranger = await fetch(`${base}/api/v1/machines/52:54:00:00:00:01/reprovision`, { method: 'POST' });
  t.equal(stranger.status, 401, 'without the token the operator API refuses');
  const wrong = await fetch(`${base}/api/v1/machines/52:54:00:00:00:01/reprovision`, {
    method: 'POST',
    headers: { authorization: 'Bearer wrong-token-000000000' },
  });
  t.same(
    await wrong.json(),
    {
      error:
        'wrong operator token: this server has no server.api_token or $RACKBOOT_API_TOKEN and takes the one in <server.state>/operator-token',
    },
    'a wrong token is told which one this server takes',
  );
});

t.test(
  'the CLI reaches the running server when the file says a port or token it does not run with',
  async (t) => {
    const machine = '  - { mac: 52:54:00:00:00:01, profile: plain }\n';
    const { directory, file, child, httpPort, tftpPort } = await serveFixture(t, (httpPort, tftpPort) =>
      configText(httpPort, tftpPort, machine),
    );
    await waitForOutput(child, (line) => line.includes('rackboot serving'), 30_000);
    const running = join(directory, 'state', 'serve-running.json');
    t.match(JSON.parse(readFileSync(running, 'utf8')), {
      pid: child.pid,
      url: `http://127.0.0.1:${httpPort}`,
    });
    const env = { RACKBOOT_API_TOKEN: '', RACKBOOT_CONFIG: '' };

    // A new port waits for a restart: before, the verbs went to the file's port and found nothing.
    const otherPort = await freePort();
    const awaiting = waitForOutput(child, (line) => line.includes('until a restart'), 10_000);
    saveLikeAnEditor(file, configText(otherPort, tftpPort, machine));
    await awaiting;
    const listed = await runCli(['machines', '-c', file], { env });
    t.equal(listed.code, 0, listed.stderr);
    t.match(listed.stdout, /52:54:00:00:00:01/);
    t.match(
      listed.stderr,
      `answers at http://127.0.0.1:${httpPort}; ${file} says http://127.0.0.1:${otherPort}`,
    );

    // A new token in an edit the server refuses: the server keeps the token it had.
    const refused = waitForOutput(child, (line) => line.includes('config edit rejected'), 10_000);
    saveLikeAnEditor(
      file,
      configText(otherPort, tftpPort, `${machine}${machine}`).replace(
        'operator-token-0123456789',
        'operator-token-new-0123456789',
      ),
    );
    await refused;
    // The refusal is not only in the log: the machine list and /metrics say it too.
    const listedAfterRefusal = await runCli(['machines', '-c', file], { env });
    t.equal(listedAfterRefusal.code, 0, listedAfterRefusal.stderr);
    t.match(
      listedAfterRefusal.stderr,
      /the server refuses its config files as they are \(\d+ problems?, since \S+\) and serves the config it had/,
    );
    const metrics = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    t.match(metrics, /^rackboot_config_rejected 1$/m);
    const reprovision = await runCli(['reprovision', '52:54:00:00:00:01', '-c', file], { env });
    t.equal(reprovision.code, 1);
    t.match(
      reprovision.stderr,
      /wrong operator token.*sent: server\.api_token of .*still takes the token it had/,
    );

    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
    t.throws(() => statSync(running), { code: 'ENOENT' }, 'a stopped server no longer announces itself');
  },
);

t.test('serve refuses to start on a missing boot file, naming its line', async (t) => {
  const directory = t.testdir({ 'boot-assets': { vmlinuz: 'kernel' } });
  const file = join(directory, 'rackboot.yaml');
  writeFileSync(
    file,
    configText(await freePort(), await freePort(), '  []\n').replace('machines:\n  []', 'machines: []'),
  );
  const child = startServe(file);
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk;
  });
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  t.equal(code, 1);
  t.match(stderr, /rackboot\.yaml:12:14: initrd\.img not found under/);
});

t.test('serve exits 1 when the history cannot be opened, closing what it had started', async (t) => {
  const directory = t.testdir({ 'boot-assets': { vmlinuz: 'kernel', 'initrd.img': 'initrd' } });
  const file = join(directory, 'rackboot.yaml');
  writeFileSync(
    file,
    configText(await freePort(), await freePort(), '  []\n').replace('machines:\n  []', 'machines: []'),
  );
  mkdirSync(join(directory, 'state'));
  const newer = new Database(join(directory, 'state', DATABASE_FILE_NAME));
  newer.pragma('user_version = 99');
  newer.close();
  // The config watcher starts before the store: left open, it kept the process alive.
  const result = await runCli(['serve', '-c', file], { timeoutMs: 20_000 });
  t.equal(result.code, 1);
  t.match(result.stderr, /schema version 99, newer than this rackboot's/);
});

t.test('start-up failures are one line naming the setting, exit 1, no stack', async (t) => {
  const httpPort = await freePort();
  const occupier = createServer();
  await new Promise<void>((resolve) => occupier.listen(httpPort, '127.0.0.1', resolve));
  t.teardown(() => new Promise((resolve) => occupier.close(resolve)));
  const base = configText(httpPort, await freePort(), '  - { mac: 52:54:00:00:00:01, profile: plain }\n');
  const cases: [string, string, string[], RegExp][] = [
    [
      'HTTP port in use',
      base,
      [],
      new RegExp(
        `^rackboot could not start: server\\.http\\.port ${httpPort} is already in use on 127\\.0\\.0\\.1;`,
      ),
    ],
    [
      'listen address not on this host',
      base.replace('listen: 127.0.0.1 }', 'listen: 10.77.254.254 }'),
      [],
      /^rackboot could not start: server\.http\.listen 10\.77\.254\.254 is not an address of this host;/,
    ],
    [
      'state directory is a file',
      base.replace('address: 127.0.0.1', 'address: 127.0.0.1\n  state: taken'),
      [],
      /:\d+:\d+: server\.state .*taken is not a directory/,
    ],
    [
      'unknown log level',
      base,
      ['--log-level', 'verbose'],
      /argument 'verbose' is invalid\. Allowed choices are trace, debug, info, warn, error/,
    ],
  ];
  for (const [name, text, extra, expected] of cases) {
    const directory = t.testdir({
      'boot-assets': { vmlinuz: 'kernel', 'initrd.img': 'initrd' },
      taken: 'a file',
    });
    writeFileSync(join(directory, 'rackboot.yaml'), text);
    const result = await runCli(['serve', '-c', join(directory, 'rackboot.yaml'), ...extra]);
    t.equal(result.code, 1, `${name}: exit 1`);
    t.match(result.stderr.trim().split('\n')[0], expected, name);
    t.notMatch(result.stderr, /\n\s+at /, `${name}: no stack trace`);
  }
});

t.test('a privileged port without the privilege: one line naming the key and the way out', async (t) => {
  await requireTools('ip', 'setpriv', 'sysctl');
  const network = createTestNetwork();
  t.teardown(() => network.cleanup());
  // Its own namespace, where ports below 1024 are privileged whatever the host says.
  const namespace = await network.createNamespace('eacces');
  await namespace.exec('sysctl', ['-w', 'net.ipv4.ip_unprivileged_port_start=1024']);
  const directory = t.testdir({ 'boot-assets': { vmlinuz: 'kernel', 'initrd.img': 'initrd' } });
  writeFileSync(
    join(directory, 'rackboot.yaml'),
    configText(80, 16969, '  - { mac: 52:54:00:00:00:01, profile: plain }\n'),
  );
  const [command, args] = cliCommand(['serve', '-c', join(directory, 'rackboot.yaml')]);
  // Still root (so it reads the clone wherever it is), without the one capability that binds ports
  // below 1024.
  const serve = namespace.spawn('setpriv', [
    '--bounding-set=-net_bind_service',
    '--inh-caps=-net_bind_service',
    command,
    ...args,
  ]);
  const { code, stderr } = await failedStart(serve);
  t.equal(code, 1, 'exits 1 (not still running 30 s later)');
  t.equal(
    stderr.trim(),
    'rackboot could not start: server.http.port 80 needs root or CAP_NET_BIND_SERVICE (a port below 1024); ' +
      'run as root, grant the capability or change server.http.port',
  );
});

t.test('a second serve on the same server.state is refused before it touches the state', async (t) => {
  const machines = '  - { mac: 52:54:00:00:00:01, profile: plain }\n';
  const { directory, child, httpPort, stopWithTest } = await serveFixture(t, (httpPort, tftpPort) =>
    configText(httpPort, tftpPort, machines),
  );
  await waitForOutput(child, (line) => line.includes('rackboot serving'), 30_000);
  // Other ports, so only the shared state could stop it.
  const second = join(directory, 'second.yaml');
  writeFileSync(second, configText(await freePort(), await freePort(), machines));
  const refused = await runCli(['serve', '-c', second], { timeoutMs: 20_000 });
  t.equal(refused.code, 1, 'exits 1');
  t.match(
    refused.stderr,
    new RegExp(
      `^rackboot could not start: another rackboot serve \\(pid ${child.pid}\\) is using server\\.state ${join(directory, 'state')}; stop it first`,
    ),
  );
  t.notMatch(refused.stderr, /\n\s+at /, 'no stack trace');
  t.equal((await fetch(`http://127.0.0.1:${httpPort}/boot.ipxe`)).status, 200, 'the first one still serves');

  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
  const after = spawn(...cliCommand(['serve', '-c', second]), { stdio: ['ignore', 'pipe', 'pipe'] });
  stopWithTest(after);
  await waitForOutput(after, (line) => line.includes('rackboot serving'), 30_000);
  t.pass('the lock of a killed server does not hold the next one back');
});

t.test(
  'a history that will not open: one line naming the file and what to do, nothing changed',
  async (t) => {
    const base = configText(await freePort(), await freePort(), '  []\n').replace(
      'machines:\n  []',
      'machines: []',
    );
    const cases: [string, (file: string) => void, RegExp][] = [
      [
        'not a database',
        (file) => writeFileSync(file, 'x'.repeat(4096)),
        /history .*lifecycle\.sqlite: file is not a database; it is damaged or not a rackboot history: move it/,
      ],
      [
        "another program's database",
        (file) => {
          const foreign = new Database(file);
          foreign.exec(
            'CREATE TABLE events (id INTEGER PRIMARY KEY, what TEXT); CREATE TABLE orders (id INTEGER)',
          );
          foreign.close();
        },
        /.*lifecycle\.sqlite is not a rackboot history \(tables orders\); give server\.state a directory of its own/,
      ],
    ];
    for (const [name, make, expected] of cases) {
      const directory = t.testdir({
        'boot-assets': { vmlinuz: 'kernel', 'initrd.img': 'initrd' },
        state: {},
      });
      writeFileSync(join(directory, 'rackboot.yaml'), base);
      const history = join(directory, 'state', DATABASE_FILE_NAME);
      make(history);
      const before = readFileSync(history);
      const result = await runCli(['serve', '-c', join(directory, 'rackboot.yaml')], { timeoutMs: 20_000 });
      t.equal(result.code, 1, `${name}: exit 1`);
      t.match(result.stderr.trim(), new RegExp(`^rackboot could not start: ${expected.source}`), name);
      t.notMatch(result.stderr, /\n\s+at /, `${name}: no stack trace`);
      t.ok(readFileSync(history).equals(before), `${name}: the file is left as it was`);
    }
  },
);

t.test('a server.state mkdir(2) cannot make (under /proc) is one line, not a hang', async (t) => {
  // Before: Node's recursive mkdir looped forever at full CPU on ENOENT under /proc/self.
  const directory = t.testdir({ 'boot-assets': { vmlinuz: 'kernel', 'initrd.img': 'initrd' } });
  const config = configText(await freePort(), await freePort(), '  []\n').replace(
    'machines:\n  []',
    'machines: []',
  );
  writeFileSync(
    join(directory, 'rackboot.yaml'),
    `${config}`.replace('server:\n', 'server:\n  state: /proc/self/rackboot-state\n'),
  );
  const result = await runCli(['serve', '-c', join(directory, 'rackboot.yaml')], { timeoutMs: 20_000 });
  t.equal(result.code, 1, `exit 1: ${result.stderr}`);
  t.match(result.stderr, /server\.state \/proc\/self\/rackboot-state cannot be used: ENOENT/);
  t.notMatch(result.stderr, /\n\s+at /, 'no stack trace');
});

t.test('a state secret that is not one: one line naming the file and what to do', async (t) => {
  // Before: "rackboot could not start: Error: …operator-token is not a rackboot secret…" and a stack trace.
  const base = configText(await freePort(), await freePort(), '  []\n').replace(
    'machines:\n  []',
    'machines: []',
  );
  for (const name of ['operator-token', 'rackboot-http-secret']) {
    const directory = t.testdir({
      'boot-assets': { vmlinuz: 'kernel', 'initrd.img': 'initrd' },
      state: { [name]: 'edited by hand\n' },
    });
    writeFileSync(join(directory, 'rackboot.yaml'), base);
    const result = await runCli(['serve', '-c', join(directory, 'rackboot.yaml')], { timeoutMs: 20_000 });
    t.equal(result.code, 1, `${name}: exit 1`);
    t.match(
      result.stderr.trim(),
      new RegExp(
        `^rackboot could not start: \\S+/state/${name} is not a rackboot secret \\(64 hex digits\\); remove it`,
      ),
      name,
    );
    t.notMatch(result.stderr, /\n\s+at /, `${name}: no stack trace`);
  }
});

t.test('a state secret the service user cannot read: one line naming it and what to do', async (t) => {
  requireRoot('serves as nobody with a secret of root’s');
  // Before: "rackboot could not start: Error: EACCES: permission denied, open …" and a stack trace.
  const directory = t.testdir({
    'boot-assets': { vmlinuz: 'kernel', 'initrd.img': 'initrd' },
    state: { 'operator-token': `${'ab'.repeat(32)}\n` },
  });
  const state = join(directory, 'state');
  chmodSync(join(state, 'operator-token'), 0o600);
  chownSync(state, NOBODY, NOBODY);
  const config = join(directory, 'rackboot.yaml');
  writeFileSync(
    config,
    configText(await freePort(), await freePort(), '  []\n').replace('machines:\n  []', 'machines: []'),
  );
  const main = join(import.meta.dirname, '..', 'src', 'cli', 'main.ts');
  const result = asNobody(main, 'serve', '-c', config);
  t.equal(result.status, 1, 'exit 1');
  const token = join(state, 'operator-token');
  // Its first line: under tap, the child's coverage hook adds its own complaint as nobody after it.
  const [first, second] = result.stderr.split('\n');
  t.equal(
    first,
    `rackboot could not start: cannot read the secret ${token}: EACCES: permission denied, open '${token}'; this user (uid ${NOBODY}) cannot read or write it: give server.state and its files to the user rackboot runs as`,
  );
  t.notMatch(second, /^\s+at /, 'no stack trace');
});

t.test(
  'a new machine secret beside a history is a warning naming the machines; render refuses a secret the server does not use',
  async (t) => {
    const stopWithTest = stopsWithTest(t);
    const macs = (count: number) =>
      Array.from(
        { length: count },
        (_, index) => `52:54:00:00:01:${index.toString(16).padStart(2, '0')}` as Mac,
      );
    /** A server.state whose history has seen these machines, and no secret yet. */
    const withHistory = async (seen: Mac[]) => {
      const directory = t.testdir({ 'boot-assets': { vmlinuz: 'kernel', 'initrd.img': 'initrd' } });
      const history = openLifecycle({
        stateDir: join(directory, 'state'),
        retention: 1000,
        logger: pino({ level: 'silent' }),
      });
      for (const mac of seen) {
        await history.record({ mac, source: 'http', type: 'ipxe-script', detail: { script: 'install' } });
      }
      await history.close();
      const file = join(directory, 'rackboot.yaml');
      writeFileSync(
        file,
        configText(await freePort(), await freePort(), '  - { mac: 52:54:00:00:01:00, profile: plain }\n'),
      );
      return { directory, file };
    };
    /** serve's output up to `rackboot serving`, and the running serve. */
    const serveUntilServing = async (file: string) => {
      const child = stopWithTest(startServe(file));
      let output = '';
      child.stdout?.on('data', (chunk: Buffer) => {
        output += chunk;
      });
      await waitForOutput(child, (line) => line.includes('rackboot serving'), 30_000);
      return { child, output: () => output };
    };
    const stop = async (child: ChildProcess) => {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    };

    const few = await withHistory(macs(2));
    const first = await serveUntilServing(few.file);
    const warning = first
      .output()
      .split('\n')
      .find((line) => line.includes('made a new machine secret'));
    t.ok(warning, 'a warning when the secret is made beside a history');
    t.match(
      JSON.parse(warning ?? '{}'),
      {
        level: 40,
        msg: /history under \S+\/state has machines 52:54:00:00:01:00, 52:54:00:00:01:01: the Ignition and events URLs they were handed before no longer work \(403\)/,
      },
      'it names the machines',
    );

    // The secret is replaced while serve runs: render's tokens would be refused, so it refuses.
    const secretFile = join(few.directory, 'state', 'rackboot-http-secret');
    const original = readFileSync(secretFile, 'utf8');
    const rendered = await runCli(['render', 'ipxe', '--mac', '52:54:00:00:01:00', '-c', few.file]);
    t.equal(rendered.code, 0, `with the server's own secret render prints: ${rendered.stderr}`);
    writeFileSync(secretFile, `${'ab'.repeat(32)}\n`);
    const refused = await runCli(['render', 'ipxe', '--mac', '52:54:00:00:01:00', '-c', few.file]);
    t.equal(refused.code, 1, 'render refuses');
    t.equal(refused.stdout, '', 'and prints no URLs');
    t.match(
      refused.stderr.trim(),
      new RegExp(
        `^rackboot: the server running on \\S+/state \\(pid ${first.child.pid}\\) signs machine tokens with another secret than \\S+/state/rackboot-http-secret now holds .*; restart rackboot serve so it takes the file's secret, then render again$`,
      ),
    );
    t.notMatch(refused.stderr, /\n\s+at /, 'no stack trace');
    writeFileSync(secretFile, original);

    await stop(first.child);
    const again = await serveUntilServing(few.file);
    t.notMatch(again.output(), 'made a new machine secret', 'a restart with its secret: no warning');
    await stop(again.child);

    const many = await withHistory(macs(12));
    const crowded = await serveUntilServing(many.file);
    t.match(
      crowded.output(),
      /made a new machine secret \S+, but the history under \S+ has 12 machines: /,
      'many machines are counted, not listed',
    );
  },
);

t.test('a start as root leaves the history to the owner of server.state, not to root', async (t) => {
  // Before: SQLite made lifecycle.sqlite root's at a `sudo rackboot serve`, and the service user's
  // next start could not write its history.
  if (process.getuid?.() !== 0)
    throw new Error('this test needs root (it gives files to nobody); CI runs as root');
  const NOBODY = 65534;
  const stopWithTest = stopsWithTest(t);
  const directory = t.testdir({ 'boot-assets': { vmlinuz: 'kernel', 'initrd.img': 'initrd' }, state: {} });
  chownSync(join(directory, 'state'), NOBODY, NOBODY);
  const file = join(directory, 'rackboot.yaml');
  writeFileSync(
    file,
    configText(await freePort(), await freePort(), '  - { mac: 52:54:00:00:00:01, profile: plain }\n'),
  );
  const child = stopWithTest(startServe(file));
  await waitForOutput(child, (line) => line.includes('rackboot serving'), 30_000);
  const { uid, gid } = statSync(join(directory, 'state', DATABASE_FILE_NAME));
  t.same({ uid, gid }, { uid: NOBODY, gid: NOBODY }, 'while it runs');
  child.kill('SIGTERM');
  await new Promise((resolve) => child.once('exit', resolve));
  const after = statSync(join(directory, 'state', DATABASE_FILE_NAME));
  t.same({ uid: after.uid, gid: after.gid }, { uid: NOBODY, gid: NOBODY }, 'after a clean stop');
});

t.test('a DHCP lease log that cannot be opened: one line naming it and what to do', async (t) => {
  // Before: "rackboot could not start: Error: EISDIR: illegal operation on a directory, read", no file
  // named, and a stack trace (the error crossed from the DHCP thread as a plain Error).
  const network = createTestNetwork();
  t.teardown(() => network.cleanup());
  // Authoritative DHCP binds port 67 on server.address: only inside a namespace of the test's own.
  const namespace = await network.createNamespace('leaselog');
  await namespace.exec('ip', ['addr', 'add', '10.77.174.1/24', 'dev', 'lo']);
  const directory = t.testdir({
    'boot-assets': { vmlinuz: 'kernel', 'initrd.img': 'initrd' },
    state: { 'dhcp-leases.jsonl': {} },
  });
  writeFileSync(
    join(directory, 'rackboot.yaml'),
    configText(18080, 16969, '  - { mac: 52:54:00:00:00:01, profile: plain }\n')
      .replaceAll('127.0.0.1', '10.77.174.1')
      .replace(
        'dhcp:\n  mode: off',
        'dhcp:\n  mode: authoritative\n  subnet: 10.77.174.0/24\n  range: [10.77.174.100, 10.77.174.150]',
      ),
  );
  const [command, args] = cliCommand(['serve', '-c', join(directory, 'rackboot.yaml')]);
  const serve = namespace.spawn(command, args);
  const { code, stderr } = await failedStart(serve);
  t.equal(code, 1, 'exits 1 (not still running 30 s later)');
  t.match(
    stderr.trim(),
    /^rackboot could not start: lease log \S+\/state\/dhcp-leases\.jsonl: EISDIR[^\n]*; it is a directory, where rackboot keeps a file: move it away$/,
  );
});

/**
 * `serve` whose config is a FIFO, so the test holds its start inside startRackboot: `opened` resolves
 * once serve has opened the config to read it, `writeConfig` answers that read.
 */
async function serveHeldAtStart(t: Test) {
  const directory = t.testdir({ 'boot-assets': { vmlinuz: 'kernel', 'initrd.img': 'initrd' } });
  const [httpPort, tftpPort] = [await freePort(), await freePort()];
  const file = join(directory, 'rackboot.yaml');
  const made = spawnSync('mkfifo', [file]);
  if (made.status !== 0) throw new Error(`mkfifo: ${made.stderr}`);
  const child = startServe(file);
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    // Ends a writer's open still waiting for a reader that will never come (the FIFO may be gone
    // already, with its directory).
    try {
      closeSync(openSync(file, constants.O_RDONLY | constants.O_NONBLOCK));
    } catch {}
  });
  const exited = new Promise<string>((resolve) =>
    child.once('exit', (code, signal) => resolve(`serve exited (${signal ?? code})`)),
  );
  /** Waits for serve to open the config, then writes it whole (a reader gone is left to the caller to see). */
  const writeConfig = async () => {
    const writer = open(file, 'w');
    const opened = await Promise.race([writer, exited]);
    if (typeof opened === 'string') {
      void writer.then((handle) => handle.close());
      throw new Error(`${opened} before reading its config`);
    }
    return async () => {
      await opened
        .writeFile(configText(httpPort, tftpPort, '  - { mac: 52:54:00:00:00:01, profile: plain }\n'))
        .catch(() => undefined)
        .finally(() => opened.close());
    };
  };
  return { child, exited, writeConfig };
}

t.test('a SIGHUP during the start is one reload once it is done, not the end', async (t) => {
  // Before, the handler was set once the start was done, and a SIGHUP before ended serve, logging nothing.
  const { child, writeConfig } = await serveHeldAtStart(t);
  const answerRead = await writeConfig();
  child.kill('SIGHUP');
  child.kill('SIGHUP');
  await delay(300);
  if (!t.equal(child.signalCode, null, 'the SIGHUPs did not end serve')) return;
  const reloading = waitForOutput(child, (line) => line.includes('SIGHUP came during the start'), 30_000);
  const reloaded = waitForOutput(child, (line) => line.includes('config reloaded'), 30_000);
  await answerRead();
  await reloading;
  await (await writeConfig())();
  t.match(await reloaded, /no effective change/, 'the reload reads the config again');
  t.equal(child.exitCode, null, 'still serving');
});

t.test('a SIGTERM during the start ends serve cleanly once it is done', async (t) => {
  const { child, exited, writeConfig } = await serveHeldAtStart(t);
  const answerRead = await writeConfig();
  child.kill('SIGTERM');
  await delay(300);
  if (!t.equal(child.signalCode, null, 'the SIGTERM waits for the start')) return;
  const stopped = waitForOutput(child, (line) => line.includes('"msg":"stopped"'), 30_000);
  await answerRead();
  t.match(await stopped, /stopped/, 'shut down as a SIGTERM after the start is');
  t.equal(await exited, 'serve exited (0)');
});

t.test('an adopt through the API is answered once the config in force lists the machine', async (t) => {
  const { directory, file, child, httpPort } = await serveFixture(t, (httpPort, tftpPort) =>
    configText(httpPort, tftpPort, '  - { mac: 52:54:00:00:00:01, profile: plain }\n'),
  );
  await waitForOutput(child, (line) => line.includes('rackboot serving'), 30_000);
  const base = `http://127.0.0.1:${httpPort}`;
  t.equal((await fetch(`${base}/boot/52-54-00-00-00-09.ipxe`)).status, 200, 'a machine is discovered');
  const adopt = () =>
    fetch(`${base}/api/v1/machines/52:54:00:00:00:09/adopt`, {
      method: 'POST',
      headers: { authorization: 'Bearer operator-token-0123456789', 'content-type': 'application/json' },
      body: JSON.stringify({ profile: 'plain', hostname: 'nine' }),
    });

  // Before, this was 201 and the machine was written to the file, which the server then refused to
  // reload: the machine stayed unlisted.
  const initrd = join(directory, 'boot-assets', 'initrd.img');
  renameSync(initrd, `${initrd}.bak`);
  const before = readFileSync(file, 'utf8');
  const refused = await adopt();
  t.equal(refused.status, 422, 'an adopt the server would not take is refused');
  t.match(await refused.json(), {
    code: 'rejected',
    error: /^nothing written: rackboot serve would refuse the config even without this machine/,
    problems: [/rackboot\.yaml:12:\d+: initrd\.img not found under .*boot-assets$/],
  });
  t.equal(readFileSync(file, 'utf8'), before, 'nothing written');
  renameSync(`${initrd}.bak`, initrd);

  const adopted = await adopt();
  t.equal(adopted.status, 201, await adopted.clone().text());
  const view = await (await fetch(`${base}/api/v1/machines/52:54:00:00:00:09`)).json();
  t.match(view, { listed: true, hostname: 'nine', profile: 'plain' }, 'listed at once, not a reload later');
  t.same(
    (view as { events: { type: string }[] }).events.filter((event) => event.type === 'adopt').length,
    1,
    'one adopt recorded: the one that was taken',
  );
});

t.test(
  'a listed machine keeps its record through a restart with more never-installed machines than kept',
  async (t) => {
    const stopWithTest = stopsWithTest(t);
    const directory = t.testdir({ 'boot-assets': { vmlinuz: 'kernel', 'initrd.img': 'initrd' } });
    const listedMac = parseMac('52:54:00:00:00:01') as Mac;
    // The history a server that lists it left: the listed machine's boot first (so it is the one
    // unchanged longest), then more unlisted, never-installed machines than the store keeps.
    const history = openLifecycle({
      stateDir: join(directory, 'state'),
      retention: 1000,
      logger: pino({ level: 'silent' }),
      listed: (mac) => mac === listedMac,
    });
    const discover = (target: Mac): MachineEventInput => ({
      mac: target,
      source: 'dhcp',
      type: 'dhcp-ignored',
      detail: { firmware: 'uefi-pxe', arch: 'x86_64', reason: 'unknown-machine' },
    });
    await history.record(discover(listedMac));
    const others = Array.from({ length: MAX_UNINSTALLED + 5 }, (_, index) =>
      macFromBytes(Buffer.from([0x02, 0, 0, index >> 16, (index >> 8) & 0xff, index & 0xff])),
    );
    await Promise.all(others.map((other) => history.record(discover(other))));
    await history.close();

    const [httpPort, tftpPort] = [await freePort(), await freePort()];
    const file = join(directory, 'rackboot.yaml');
    writeFileSync(file, configText(httpPort, tftpPort, `  - { mac: ${listedMac}, profile: plain }\n`));
    const child = stopWithTest(startServe(file));
    await waitForOutput(child, (line) => line.includes('rackboot serving'), 60_000);
    const machine = await fetch(`http://127.0.0.1:${httpPort}/api/v1/machines/${listedMac}`);
    t.equal(machine.status, 200);
    t.match(
      await machine.json(),
      { listed: true, state: 'discovered', first_seen_at: String },
      'its record is kept: the store asked the config whether it is listed while it opened',
    );
  },
);
