import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Command } from 'commander';
import t from 'tap';
import { registerLogs } from '../src/cli/logs.js';
import { registerMachines } from '../src/cli/machines.js';
import { registerReprovision } from '../src/cli/reprovision.js';
import { ADOPT_LOCK_PATH, adoptMachine } from '../src/inventory/adopt.js';
import type { MachineEventInput } from '../src/lifecycle/events.js';
import { waitUntil } from './helpers/poll.js';
import { FIXTURE_YAML, LISTED_MAC, mac, startLifecycleApp, UNLISTED_MAC } from './lifecycle-fixture.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const execFileAsync = promisify(execFile);
const env = { ...process.env, RACKBOOT_API_TOKEN: '', RACKBOOT_CONFIG: '' };

/** Runs the real CLI entry point; resolves with its exit code and output. */
async function rackboot(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(process.execPath, ['--import', 'tsx', MAIN, ...args], {
      env,
      timeout: 30_000,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

/**
 * Runs verbs in this process through the same register functions main.ts uses (a CLI start-up costs
 * seconds on a busy host); stdout is captured.
 */
async function inProcess(...args: string[]): Promise<{ stdout: string; error: Error | undefined }> {
  const program = new Command('rackboot').exitOverride();
  registerMachines(program);
  registerLogs(program);
  registerReprovision(program);
  const chunks: string[] = [];
  const write = process.stdout.write;
  process.stdout.write = ((chunk: string | Uint8Array) => {
    chunks.push(String(chunk));
    return true;
  }) as typeof process.stdout.write;
  try {
    await program.parseAsync(['node', 'rackboot', ...args]);
    return { stdout: chunks.join(''), error: undefined };
  } catch (error) {
    return { stdout: chunks.join(''), error: error as Error };
  } finally {
    process.stdout.write = write;
  }
}

const install: MachineEventInput[] = [
  { mac: LISTED_MAC, source: 'dhcp', type: 'dhcp-ack', ip: '10.77.0.100', detail: { firmware: 'ipxe' } },
  { mac: LISTED_MAC, source: 'http', type: 'ipxe-script', detail: { script: 'install' } },
  { mac: LISTED_MAC, source: 'http', type: 'ignition-fetch' },
  { mac: LISTED_MAC, source: 'machine', type: 'installed' },
  { mac: UNLISTED_MAC, source: 'dhcp', type: 'dhcp-ignored', detail: { firmware: 'bios-pxe' } },
];

t.test('machines, logs, reprovision and machines adopt against a running server', async (t) => {
  const { app, lifecycle, configFile } = await startLifecycleApp(t);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  for (const event of install) await lifecycle.record(event);

  const table = await inProcess('machines', '--url', url, '-c', configFile);
  t.equal(table.error, undefined);
  const [header, ...rows] = table.stdout.trimEnd().split('\n');
  t.match(header, /^MAC\s+HOSTNAME\s+PROFILE\s+STATE\s+IP\s+LAST EVENT\s+AGE$/);
  t.match(
    rows[0],
    new RegExp(`^${LISTED_MAC}\\s+node1\\s+worker\\s+installed\\s+10\\.77\\.0\\.100\\s+installed\\s+\\d+s$`),
  );
  t.match(rows[1], new RegExp(`^${UNLISTED_MAC}\\s+\\(discovered\\)\\s+discovered\\s+dhcp-ignored`));

  const json = await inProcess(
    'logs',
    '--url',
    url,
    '-c',
    configFile,
    '--json',
    '--mac',
    LISTED_MAC,
    '-n',
    '3',
  );
  t.equal(json.error, undefined);
  const events = json.stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { type: string; mac: string });
  t.same(
    events.map((event) => event.type),
    ['state-changed', 'installed', 'state-changed'],
    'the last three events of that machine',
  );
  const human = await inProcess('logs', '--url', url, '-c', configFile);
  t.match(
    human.stdout,
    new RegExp(
      `\\d\\d:\\d\\d:\\d\\d\\.\\d{3} ${LISTED_MAC} lifecycle +state-changed +installing → installed \\(installed\\)`,
    ),
  );

  const reprovisioned = await inProcess(
    'reprovision',
    LISTED_MAC.replaceAll(':', '-'),
    '--url',
    url,
    '-c',
    configFile,
  );
  t.equal(reprovisioned.error, undefined);
  t.match(reprovisioned.stdout, /installs again at its next network boot \(now discovered\)/);
  const again = await inProcess('reprovision', LISTED_MAC, '--url', url, '-c', configFile);
  t.equal(again.error, undefined, 'a machine already on its way to the installer: nothing to refuse');
  t.match(again.stdout, /installs again at its next network boot \(now discovered\)/);
  // Through the real entry point: a refusal is one line on stderr and exit code 1.
  const refused = await rackboot('reprovision', '52:54:00:00:00:99', '--url', url, '-c', configFile);
  t.equal(refused.code, 1, 'a MAC never seen is refused');
  t.match(
    refused.stderr,
    /this MAC has never network-booted here; a listed machine installs at its first network boot/,
  );

  const adopted = await inProcess(
    'machines',
    'adopt',
    UNLISTED_MAC,
    '--profile',
    'spare',
    '--hostname',
    'node7',
    '-c',
    configFile,
  );
  t.equal(adopted.error, undefined);
  t.equal(
    readFileSync(configFile, 'utf8'),
    `${FIXTURE_YAML}  - mac: ${UNLISTED_MAC}\n    hostname: node7\n    profile: spare\n`,
    'appended, every comment kept',
  );
});

t.test('logs -f prints new events as they happen', async (t) => {
  const { app, lifecycle, configFile } = await startLifecycleApp(t);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  const follower: ChildProcess = spawn(
    process.execPath,
    ['--import', 'tsx', MAIN, 'logs', '-f', '--url', url, '-c', configFile, '--mac', UNLISTED_MAC],
    { env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  t.teardown(() => {
    if (follower.exitCode === null) follower.kill('SIGKILL');
  });
  let output = '';
  follower.stdout?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  // Until the follower is connected (it subscribes after printing the empty history), keep recording.
  let step = 0;
  await waitUntil(
    async () => {
      if (output.includes('dhcp-ignored')) return true;
      await lifecycle.record({
        mac: UNLISTED_MAC,
        source: 'dhcp',
        type: 'dhcp-ignored',
        detail: { firmware: 'bios-pxe', step },
      });
      step += 1;
      return false;
    },
    20_000,
    200,
  );
  t.match(output, new RegExp(`${UNLISTED_MAC} dhcp +dhcp-ignored +firmware=bios-pxe step=\\d+`));
  t.notMatch(output, LISTED_MAC, 'filtered by MAC');
  const exited = new Promise((resolve) => follower.once('exit', resolve));
  follower.kill('SIGINT');
  t.equal(await exited, 0, 'Ctrl-C ends it cleanly');
});

t.test(
  'machines adopt waits for another adopter holding the file and keeps its machine; one validate would refuse exits 1',
  async (t) => {
    const directory = t.testdir({
      'worker.bu':
        'variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/role\n      contents:\n        inline: "{{vars.role}}"\n',
    });
    const shared = join(directory, 'rackboot.yaml');
    writeFileSync(shared, FIXTURE_YAML);
    const templated = join(directory, 'templated.yaml');
    // Its own server.state, so its adopt does not wait for the lock the test holds below.
    const templatedYaml = FIXTURE_YAML.replace(
      'spare: { kind: linux, kernel: vmlinuz }',
      'spare: { kind: linux, kernel: vmlinuz, ignition: worker.bu }',
    ).replace('state: state', 'state: templated-state');
    writeFileSync(templated, templatedYaml);
    const refusal = rackboot('machines', 'adopt', UNLISTED_MAC, '--profile', 'spare', '-c', templated);

    // This test is the other adopter (the server, another CLI): it holds the lock from its read of
    // the file to its write, long enough for the CLI to have finished were it not waiting.
    const lock = join(directory, 'state', ADOPT_LOCK_PATH);
    mkdirSync(lock, { recursive: true });
    writeFileSync(join(lock, '1'), `${process.pid}\n`);
    const read = readFileSync(shared, 'utf8');
    const waiting = rackboot('machines', 'adopt', UNLISTED_MAC, '--profile', 'spare', '-c', shared);
    const first = await Promise.race([waiting.then(() => 'finished'), delay(10_000, 'still waiting')]);
    t.equal(first, 'still waiting', 'the CLI waits while another adopter holds the file');
    const other = adoptMachine(read, { mac: mac('52:54:00:00:00:0a'), profile: 'worker' });
    if (!other.ok) throw new Error(other.message);
    writeFileSync(shared, other.text);
    // What releasing leaves: the next entry, `released`.
    writeFileSync(join(lock, '2'), 'released');
    const adopted = await waiting;
    t.equal(adopted.code, 0, adopted.stderr);
    const text = readFileSync(shared, 'utf8');
    t.ok(
      text.includes('mac: 52:54:00:00:00:0a') && text.includes(`mac: ${UNLISTED_MAC}`),
      'both machines are in the file',
    );

    const refused = await refusal;
    t.equal(refused.code, 1, 'an adopt validate would refuse exits 1');
    t.match(refused.stderr, /\{\{vars\.role\}\} is not set/);
    t.equal(readFileSync(templated, 'utf8'), templatedYaml, 'and leaves the file alone');
  },
);

t.test('a --url that answers HTML or nothing, not the API, is named with its HTTP status', async (t) => {
  const { configFile } = await startLifecycleApp(t);
  const server = createServer((request, response) => {
    if (request.url === '/api/v1/machines/52:54:00:12:34:56/reprovision') response.writeHead(404).end();
    else response.writeHead(404, { 'content-type': 'text/html' }).end('<html><body>Not Found</body></html>');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise((resolve) => server.close(resolve)));
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('no port');
  const url = `http://127.0.0.1:${address.port}`;
  const listed = await inProcess('machines', '--url', url, '-c', configFile);
  t.equal(
    listed.error?.message,
    `${url}/api/v1/machines answered HTTP 404 with text/html, not JSON: is --url a rackboot server?`,
  );
  const empty = await inProcess('reprovision', '52:54:00:12:34:56', '--url', url, '-c', configFile);
  t.equal(
    empty.error?.message,
    `${url}/api/v1/machines/52:54:00:12:34:56/reprovision answered HTTP 404 with no explanation: is --url a rackboot server?`,
    'an empty answer too (it was only "HTTP 404")',
  );
});

t.test('a log line names an address once, even when the detail repeats it', async (t) => {
  const { formatEvent } = await import('../src/cli/logs.js');
  const line = formatEvent({
    id: 1,
    time: '2026-11-27T09:00:00.000Z',
    mac: LISTED_MAC,
    ip: '10.77.0.100',
    source: 'dhcp',
    type: 'dhcp-ack',
    detail: { ip: '10.77.0.100', firmware: 'bios-pxe' },
  } as Parameters<typeof formatEvent>[0]);
  t.equal(line.match(/ip=10\.77\.0\.100/g)?.length, 1, line);
  t.match(line, /firmware=bios-pxe/);
});
