import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Command } from 'commander';
import t, { type Test } from 'tap';
import { lastEventId } from '../src/cli/client.js';
import { registerLab } from '../src/cli/lab.js';
import { registerLogs } from '../src/cli/logs.js';
import { registerMachines } from '../src/cli/machines.js';
import { registerReprovision } from '../src/cli/reprovision.js';
import { openOperatorToken } from '../src/http/operator-token.js';
import { ADOPT_LOCK_PATH, adoptMachine } from '../src/inventory/adopt.js';
import type { MachineEventInput } from '../src/lifecycle/events.js';
import type { Lifecycle } from '../src/lifecycle/store.js';
import { fakeHttpServer } from './helpers/loopback.js';
import { waitUntil } from './helpers/poll.js';
import {
  API_TOKEN,
  FIXTURE_YAML,
  LISTED_MAC,
  mac,
  startLifecycleApp,
  UNLISTED_MAC,
} from './lifecycle-fixture.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const execFileAsync = promisify(execFile);
const env = { ...process.env, RACKBOOT_API_TOKEN: '', RACKBOOT_CONFIG: '' };

/** Runs the real CLI entry point; resolves with its exit code and output. */
function rackboot(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return rackbootWith(env, ...args);
}

async function rackbootWith(
  environment: NodeJS.ProcessEnv,
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(process.execPath, ['--import', 'tsx', MAIN, ...args], {
      env: environment,
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
 * seconds on a busy host); stdout and stderr are captured. `token` is $RACKBOOT_API_TOKEN meanwhile.
 */
async function inProcess(
  ...args: string[]
): Promise<{ stdout: string; stderr: string; error: Error | undefined }> {
  return inProcessWith(undefined, ...args);
}

async function inProcessWith(
  token: string | undefined,
  ...args: string[]
): Promise<{ stdout: string; stderr: string; error: Error | undefined }> {
  const program = new Command('rackboot').exitOverride().configureOutput({ writeErr: () => {} });
  registerMachines(program);
  registerLogs(program);
  registerLab(program);
  registerReprovision(program);
  const captured = { stdout: [] as string[], stderr: [] as string[] };
  const writes = { stdout: process.stdout.write, stderr: process.stderr.write };
  const environmentToken = process.env.RACKBOOT_API_TOKEN;
  for (const stream of ['stdout', 'stderr'] as const) {
    process[stream].write = ((chunk: string | Uint8Array) => {
      captured[stream].push(String(chunk));
      return true;
    }) as typeof process.stdout.write;
  }
  process.env.RACKBOOT_API_TOKEN = token ?? '';
  const output = () => ({ stdout: captured.stdout.join(''), stderr: captured.stderr.join('') });
  try {
    await program.parseAsync(['node', 'rackboot', ...args]);
    return { ...output(), error: undefined };
  } catch (error) {
    return { ...output(), error: error as Error };
  } finally {
    process.stdout.write = writes.stdout;
    process.stderr.write = writes.stderr;
    if (environmentToken === undefined) delete process.env.RACKBOOT_API_TOKEN;
    else process.env.RACKBOOT_API_TOKEN = environmentToken;
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

  t.equal(
    await lastEventId({ url, token: undefined }),
    lifecycle.lastEventId(),
    'the newest event id, from a HEAD of the machine list (logs -f --mac resumes after it)',
  );
  const table = await inProcess('machines', '--url', url, '-c', configFile);
  t.equal(table.error, undefined);
  const [header, ...rows] = table.stdout.trimEnd().split('\n');
  t.match(header, /^MAC\s+HOSTNAME\s+PROFILE\s+STATE\s+IP\s+LAST EVENT\s+AGE$/);
  t.match(
    rows[0],
    new RegExp(`^${LISTED_MAC}\\s+node1\\s+worker\\s+installed\\s+10\\.77\\.0\\.100\\s+installed\\s+\\d+s$`),
  );
  t.match(rows[1], new RegExp(`^${UNLISTED_MAC}\\s+\\(discovered\\)\\s+discovered\\s+dhcp-ignored`));
  const discoveredOnly = await inProcess('machines', '--url', url, '-c', configFile, '--state', 'discovered');
  t.equal(discoveredOnly.error, undefined);
  t.same(
    discoveredOnly.stdout
      .trimEnd()
      .split('\n')
      .slice(1)
      .map((row) => row.split(/\s+/)[0]),
    [UNLISTED_MAC],
    '--state keeps the machines in that state',
  );

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

  // The fixture's token is that of its config's server, 10.77.0.1:8080; the test's --url is another.
  const reprovisioned = await inProcessWith(
    API_TOKEN,
    'reprovision',
    LISTED_MAC.replaceAll(':', '-'),
    '--url',
    url,
    '-c',
    configFile,
  );
  t.equal(reprovisioned.error, undefined);
  t.match(reprovisioned.stdout, /installs again at its next network boot \(now discovered\)/);
  t.equal(reprovisioned.stderr, '', 'a listed machine: no warning');
  const again = await inProcessWith(API_TOKEN, 'reprovision', LISTED_MAC, '--url', url, '-c', configFile);
  t.equal(again.error, undefined, 'a machine already on its way to the installer: nothing to refuse');
  t.match(again.stdout, /installs again at its next network boot \(now discovered\)/);
  const unlisted = await inProcessWith(
    API_TOKEN,
    'reprovision',
    UNLISTED_MAC,
    '--url',
    url,
    '-c',
    configFile,
  );
  t.equal(unlisted.error, undefined);
  t.equal(
    unlisted.stderr,
    `rackboot reprovision: warning: ${UNLISTED_MAC} is not in the config: unknown_machines is ignore, so its next network boot gets no answer until it is listed again (rackboot machines adopt)\n`,
    'a machine no longer listed: its next boot is not an install',
  );
  // Through the real entry point: a refusal is one line on stderr and exit code 1.
  const refused = await rackbootWith(
    { ...env, RACKBOOT_API_TOKEN: API_TOKEN },
    'reprovision',
    '52:54:00:00:00:99',
    '--url',
    url,
    '-c',
    configFile,
  );
  t.equal(refused.code, 1, 'a MAC neither listed nor ever seen is refused');
  t.equal(
    refused.stderr,
    'rackboot: 52:54:00:00:00:99 is not in the config and has never network-booted here: nothing to reprovision, nothing recorded (`rackboot machines` lists the machines)\n',
  );
  t.equal(
    (await fetch(`${url}/api/v1/machines/52:54:00:00:00:99`)).status,
    404,
    'the refused MAC did not become a machine of the history',
  );

  // The CLI checks the adopted entry as serve would: its kernel must be there.
  mkdirSync(join(dirname(configFile), 'assets'), { recursive: true });
  writeFileSync(join(dirname(configFile), 'assets', 'vmlinuz'), 'kernel');
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

/**
 * `rackboot logs -f ARGS` as a child process, with events recorded for UNLISTED_MAC until it prints
 * one (it subscribes only after printing the history) or ends. Returns what it printed; `stop` sends
 * Ctrl-C and resolves with its exit code, listened for from the start, so a follower that ended early
 * (a refused option) fails the test instead of hanging it.
 */
async function followUntilPrinted(
  t: Test,
  lifecycle: Lifecycle,
  ...args: string[]
): Promise<{ output: string; stop: () => Promise<unknown> }> {
  const follower: ChildProcess = spawn(process.execPath, ['--import', 'tsx', MAIN, 'logs', '-f', ...args], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise((resolve) => follower.once('exit', resolve));
  t.teardown(() => {
    if (follower.exitCode === null) follower.kill('SIGKILL');
  });
  let output = '';
  follower.stdout?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  let step = 0;
  await waitUntil(
    async () => {
      if (output.includes('dhcp-ignored') || follower.exitCode !== null) return true;
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
  return {
    output,
    stop: () => {
      follower.kill('SIGINT');
      return exited;
    },
  };
}

t.test('logs -f prints new events as they happen', async (t) => {
  const { app, lifecycle, configFile } = await startLifecycleApp(t);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  const followed = await followUntilPrinted(
    t,
    lifecycle,
    '--url',
    url,
    '-c',
    configFile,
    '--mac',
    UNLISTED_MAC,
  );
  t.match(followed.output, new RegExp(`${UNLISTED_MAC} dhcp +dhcp-ignored +firmware=bios-pxe step=\\d+`));
  t.notMatch(followed.output, LISTED_MAC, 'filtered by MAC');
  t.equal(await followed.stop(), 0, 'Ctrl-C ends it cleanly');
});

t.test(
  'logs -n 0 prints no past event; with -f only the ones after it started, as tail -f -n 0',
  async (t) => {
    const { app, lifecycle, configFile } = await startLifecycleApp(t);
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    await lifecycle.record({
      mac: UNLISTED_MAC,
      source: 'dhcp',
      type: 'dhcp-ignored',
      detail: { firmware: 'bios-pxe', step: 'before' },
    });
    const past = await inProcess('logs', '-n', '0', '--url', url, '-c', configFile);
    t.same({ error: past.error, stdout: past.stdout }, { error: undefined, stdout: '' }, 'nothing to print');
    const followed = await followUntilPrinted(t, lifecycle, '-n', '0', '--url', url, '-c', configFile);
    t.match(followed.output, /dhcp-ignored +firmware=bios-pxe step=\d+/, 'a new event is printed');
    t.notMatch(followed.output, 'step=before', 'the event from before it started is not');
    t.equal(await followed.stop(), 0);
  },
);

t.test(
  'machines adopt waits for another adopter holding the file and keeps its machine; one validate would refuse exits 1',
  async (t) => {
    const directory = t.testdir({
      assets: { vmlinuz: 'kernel' },
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
  const url = await fakeHttpServer(t, (request, response) => {
    if (request.url === '/api/v1/machines/52:54:00:12:34:56/reprovision') response.writeHead(404).end();
    else response.writeHead(404, { 'content-type': 'text/html' }).end('<html><body>Not Found</body></html>');
  });
  const listed = await inProcess('machines', '--url', url, '-c', configFile);
  t.equal(
    listed.error?.message,
    `${url}/api/v1/machines answered HTTP 404 with text/html, not JSON: is --url a rackboot server?`,
  );
  const empty = await inProcessWith(
    API_TOKEN,
    'reprovision',
    '52:54:00:12:34:56',
    '--url',
    url,
    '-c',
    configFile,
  );
  t.equal(
    empty.error?.message,
    `${url}/api/v1/machines/52:54:00:12:34:56/reprovision answered HTTP 404 with no explanation: is --url a rackboot server?`,
    'an empty answer too (it was only "HTTP 404")',
  );
});

t.test(
  'a blank number option is refused, never read as 0 (`--subnet "$SUBNET"` with the variable unset)',
  async (t) => {
    const blankLines = await inProcess('logs', '-n', '', '--url', 'http://127.0.0.1:9');
    t.match(blankLines.error?.message, /--lines.*is invalid\. a whole number from 0 to 10000/);
    for (const option of ['--subnet', '--vms']) {
      const blank = await inProcess('lab', option, ' ');
      t.match(blank.error?.message, new RegExp(`^${option} must be `), `lab ${option} " "`);
    }
  },
);

t.test("server errors in the server's words; JSON of another shape is named, not a type error", async (t) => {
  const { app, configFile } = await startLifecycleApp(t);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  const prefixed = await inProcess('machines', '--url', `${url}/rackboot`, '-c', configFile);
  t.equal(
    prefixed.error?.message,
    `${url}/rackboot/api/v1/machines answered HTTP 404 (Route GET:/rackboot/api/v1/machines not found): is --url a rackboot server?`,
    'a --url with a path: the route is not found (it was "Not Found")',
  );
  const tooMany = await inProcess('logs', '-n', '100000', '--url', url, '-c', configFile);
  t.match(
    tooMany.error?.message,
    /--lines.*'100000' is invalid\. a whole number from 0 to 10000/,
    'checked before asking',
  );

  const other = await fakeHttpServer(t, (request, response) => {
    const json = (status: number, body: unknown) =>
      response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    // fastify's answer to a query its schema refuses: the reason phrase in `error`.
    if (request.url?.startsWith('/api/v1/events')) {
      json(400, {
        statusCode: 400,
        code: 'FST_ERR_VALIDATION',
        error: 'Bad Request',
        message: 'querystring/limit must be <= 10000',
      });
    } else json(200, { machines: [] });
  });
  const refused = await inProcess('logs', '--url', other, '-c', configFile);
  t.equal(refused.error?.message, 'querystring/limit must be <= 10000', 'it was "Bad Request"');
  const notAList = await inProcess('machines', '--url', other, '-c', configFile);
  t.equal(
    notAList.error?.message,
    `${other}/api/v1/machines answered JSON that is not the API's (a list of machines expected): is --url a rackboot server?`,
    'it was "machines.map is not a function"',
  );
});

t.test(
  'JSON records of another shape are named too, not printed as undefined nor a type error',
  async (t) => {
    const { configFile } = await startLifecycleApp(t);
    // Another web application on that port, with an API of its own under the same paths.
    const other = await fakeHttpServer(t, (request, response) => {
      const body = request.url?.startsWith('/api/v1/machines/') ? { ok: true } : [{ id: 1 }];
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
    const reprovisioned = await inProcessWith(
      'token-for-the-other-server',
      'reprovision',
      '52:54:00:00:00:01',
      '--url',
      other,
      '-c',
      configFile,
    );
    t.equal(
      reprovisioned.error?.message,
      `${other}/api/v1/machines/52:54:00:00:00:01/reprovision answered JSON that is not the API's (a machine's state expected): is --url a rackboot server?`,
      'it was "installs again at its next network boot (now undefined)", exit 0',
    );
    t.notMatch(reprovisioned.stdout, /installs again/);
    const machines = await inProcess('machines', '--url', other, '-c', configFile);
    t.equal(
      machines.error?.message,
      `${other}/api/v1/machines answered JSON that is not the API's (a list of machines expected): is --url a rackboot server?`,
      'it was "Cannot read properties of undefined (reading \'padEnd\')"',
    );
    const logs = await inProcess('logs', '--url', other, '-c', configFile);
    t.equal(
      logs.error?.message,
      `${other}/api/v1/events?limit=100 answered JSON that is not the API's (a list of events expected): is --url a rackboot server?`,
    );
  },
);

/** Answers the API calls of machines and reprovision, noting each request and its Authorization. */
async function recordingApi(t: Test): Promise<{ url: string; port: string; heard: string[] }> {
  const heard: string[] = [];
  const url = await fakeHttpServer(t, (request, response) => {
    heard.push(`${request.method} ${request.url} ${request.headers.authorization ?? 'no token'}`);
    const body =
      request.method === 'POST'
        ? { mac: '52:54:00:00:00:01', state: 'discovered' }
        : request.url === '/api/v1/machines'
          ? []
          : { mac: '52:54:00:00:00:01', listed: true };
    response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  });
  return { url, port: new URL(url).port, heard };
}

t.test("the config's operator token goes to the config's own server only", async (t) => {
  const api = await recordingApi(t);
  const directory = t.testdir({
    'rackboot.yaml': `server:\n  address: 127.0.0.1\n  http: { port: ${api.port} }\n  api_token: ${API_TOKEN}\n`,
  });
  const configFile = join(directory, 'rackboot.yaml');
  const reprovision = (token: string | undefined, ...url: string[]) =>
    inProcessWith(token, 'reprovision', '52:54:00:00:00:01', '-c', configFile, ...url);
  const post = '/api/v1/machines/52:54:00:00:00:01/reprovision';

  t.equal((await reprovision(undefined)).error, undefined);
  t.equal(api.heard[0], `POST ${post} Bearer ${API_TOKEN}`, "no --url: the config's server");
  t.equal((await reprovision(undefined, '--url', `${api.url}/`)).error, undefined);
  t.equal(api.heard[2], `POST ${post} Bearer ${API_TOKEN}`, 'a --url of the same origin');

  const elsewhere = `http://localhost:${api.port}`;
  const refused = await reprovision(undefined, '--url', elsewhere);
  t.equal(
    refused.error?.message,
    `no operator token: set $RACKBOOT_API_TOKEN: --url ${elsewhere} is not the server of ${configFile} (${api.url}), which is the only one its token is sent to`,
  );
  t.equal(api.heard.length, 4, 'nothing was sent to the other --url');
  const given = 'another-operator-token-0123';
  t.equal((await reprovision(given, '--url', elsewhere)).error, undefined);
  t.equal(api.heard[4], `POST ${post} Bearer ${given}`, '$RACKBOOT_API_TOKEN goes where --url says');
});

t.test('a config the server would refuse still names its server and token', async (t) => {
  const api = await recordingApi(t);
  // A duplicate MAC: the running server keeps its last good config and goes on serving.
  const machine = '  - { mac: 52:54:00:00:00:01, profile: p }\n';
  const directory = t.testdir({
    'rackboot.yaml': `server:\n  address: 127.0.0.1\n  http: { port: ${api.port} }\n  state: state\nprofiles:\n  p: { kind: linux, kernel: vmlinuz }\nmachines:\n${machine}${machine}`,
  });
  const configFile = join(directory, 'rackboot.yaml');
  const listed = await inProcess('machines', '-c', configFile);
  t.equal(listed.error, undefined, 'machines reaches the server');
  t.match(listed.stdout, /^MAC\s+HOSTNAME/);

  const missing = await inProcess('reprovision', '52:54:00:00:00:01', '-c', configFile);
  const tokenFile = join(directory, 'state', 'operator-token');
  t.equal(
    missing.error?.message,
    `no operator token: ${tokenFile} does not exist (the server makes it at its first start without server.api_token); is the server running with this config? Or set $RACKBOOT_API_TOKEN or server.api_token`,
    'the real cause',
  );
  const token = await openOperatorToken(join(directory, 'state'));
  const reprovisioned = await inProcess('reprovision', '52:54:00:00:00:01', '-c', configFile);
  t.equal(reprovisioned.error, undefined);
  t.equal(api.heard.at(-2), `POST /api/v1/machines/52:54:00:00:00:01/reprovision Bearer ${token}`);
});

t.test(
  'a directory in place of the operator token is named as one, not as a file with no token',
  async (t) => {
    const api = await recordingApi(t);
    const directory = t.testdir({
      'rackboot.yaml': `server:\n  address: 127.0.0.1\n  http: { port: ${api.port} }\n  state: state\nprofiles:\n  p: { kind: linux, kernel: vmlinuz }\nmachines: []\n`,
      state: { 'operator-token': {} },
    });
    const refused = await inProcess(
      'reprovision',
      '52:54:00:00:00:01',
      '-c',
      join(directory, 'rackboot.yaml'),
    );
    // Before: "… holds no token", which sends the operator to look inside a file that is not there.
    t.equal(
      refused.error?.message,
      `no operator token: ${join(directory, 'state', 'operator-token')}: it is a directory, where rackboot keeps a file: move it away; or set $RACKBOOT_API_TOKEN or server.api_token`,
    );
    t.equal(api.heard.length, 0, 'nothing sent');
  },
);

t.test('a YAML syntax error below server: still names the server and its token', async (t) => {
  // Before: "no --url given and the config does not load: rackboot.yaml:10:1: YAML syntax error: …",
  // while the server ran on its last good config, the one the operator was fixing.
  const api = await recordingApi(t);
  const server = `server:\n  address: 127.0.0.1\n  http: { port: ${api.port} }\n  api_token: ${API_TOKEN}\n`;
  const broken = 'machines:\n  - mac: 52:54:00:00:00:01\n    profile: p\n   hostname: x\n';
  const directory = t.testdir({
    'rackboot.yaml': `${server}profiles:\n  p: { kind: linux, kernel: vmlinuz }\n${broken}`,
    'broken-server.yaml': `${server.replace('  api_token', ' api_token')}${broken}`,
  });
  const configFile = join(directory, 'rackboot.yaml');
  const reprovisioned = await inProcess('reprovision', '52:54:00:00:00:01', '-c', configFile);
  t.equal(reprovisioned.error, undefined, 'reprovision reaches the server');
  t.equal(api.heard.at(-2), `POST /api/v1/machines/52:54:00:00:00:01/reprovision Bearer ${API_TOKEN}`);
  const listed = await inProcess('machines', '-c', configFile);
  t.equal(listed.error, undefined, 'machines reaches the server');

  const inServer = await inProcess('machines', '-c', join(directory, 'broken-server.yaml'));
  t.match(
    inServer.error?.message,
    /^no --url given and the config does not load:\n.*broken-server\.yaml:4:\d+: YAML syntax error/,
    'an error in server: itself is still one',
  );
});

t.test('-c "" is refused, not read as ./rackboot.yaml', async (t) => {
  const empty = await inProcess('machines', '-c', '', '--url', 'http://127.0.0.1:9');
  t.match(empty.error?.message, /'-c, --config <file>' argument '' is invalid\. it is empty/);
});

t.test('logs into a reader that stops early ends quietly with exit 0', async (t) => {
  const { app, lifecycle, configFile } = await startLifecycleApp(t);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  // More than a pipe holds (64 KiB), so the CLI is still writing when the reader goes.
  const note = 'x'.repeat(1000);
  for (let step = 0; step < 100; step += 1) {
    await lifecycle.record({
      mac: UNLISTED_MAC,
      source: 'dhcp',
      type: 'dhcp-ignored',
      detail: { note, step },
    });
  }
  const stopsAfterFirstChunk = async (...args: string[]) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', MAIN, ...args, '--url', url, '-c', configFile],
      {
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    t.teardown(() => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    // `| head -1`: the reader takes what it wants and closes the pipe.
    child.stdout?.once('data', () => child.stdout?.destroy());
    const code = await new Promise((resolve) => child.once('exit', resolve));
    return { code, stderr };
  };
  t.same(await stopsAfterFirstChunk('logs', '-n', '100'), { code: 0, stderr: '' }, 'logs | head -1');
  const following = stopsAfterFirstChunk('logs', '-f', '-n', '1', '--json');
  // `logs -f | grep -m1 -q`: the pipe is gone before the next event; printing that one ends it.
  let exited = false;
  void following.then(() => {
    exited = true;
  });
  await waitUntil(
    async () => {
      await lifecycle.record({ mac: UNLISTED_MAC, source: 'dhcp', type: 'dhcp-ignored' });
      return exited;
    },
    20_000,
    200,
  );
  t.same(await following, { code: 0, stderr: '' }, 'logs -f | grep -m1 -q');
});

t.test('logs -f | head -1 ends once head has, with no event after it', async (t) => {
  // Before, it noticed the closed pipe only when the next event came to be printed, maybe hours later.
  const { app, lifecycle, configFile } = await startLifecycleApp(t);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  await lifecycle.record({ mac: UNLISTED_MAC, source: 'dhcp', type: 'dhcp-ignored' });
  // A real pipeline; its own process group, so a logs that never ends is killed with it.
  const pipeline = spawn(
    'sh',
    [
      '-c',
      '"$0" --import tsx "$1" logs -f -n 1 --json --url "$2" -c "$3" | head -1',
      process.execPath,
      MAIN,
      url,
      configFile,
    ],
    { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  t.teardown(() => {
    try {
      process.kill(-(pipeline.pid ?? 0), 'SIGKILL');
    } catch {}
  });
  let stdout = '';
  let stderr = '';
  pipeline.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  pipeline.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const ended = new Promise<number | null>((resolve) => pipeline.once('exit', resolve));
  const code = await Promise.race([ended, delay(20_000, 'still running after 20 s')]);
  t.equal(code, 0, stderr);
  t.match(JSON.parse(stdout), { mac: UNLISTED_MAC, type: 'dhcp-ignored' }, 'head printed the one event');
  t.equal(stderr, '');
});

t.test("logs -f --mac resumes after the server's newest event, not this machine's", async (t) => {
  // Retention pruned events 1-400 of other machines; this MAC has none; the server is at 500.
  const resumedAfter: string[] = [];
  const url = await fakeHttpServer(t, (request, response) => {
    if (request.headers.accept === 'text/event-stream') {
      resumedAfter.push(String(request.headers['last-event-id']));
      response.writeHead(200, { 'content-type': 'text/event-stream' }).write('retry: 1000\n\n');
      return;
    }
    response
      .writeHead(200, { 'content-type': 'application/json', 'x-rackboot-last-event-id': '500' })
      .end(request.method === 'HEAD' ? undefined : '[]');
  });
  const follower = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      MAIN,
      'logs',
      '-f',
      '--mac',
      UNLISTED_MAC,
      '--url',
      url,
      '-c',
      join(t.testdirName, 'none.yaml'),
    ],
    { env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  t.teardown(() => {
    if (follower.exitCode === null) follower.kill('SIGKILL');
  });
  t.ok(await waitUntil(() => resumedAfter.length > 0, 20_000), 'the follower connected');
  follower.kill('SIGINT');
  t.same(resumedAfter, ['500'], 'so the server reports no pruned events it never had to send');
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

t.test('log times are local, with the date when not today', async (t) => {
  const { formatEvent } = await import('../src/cli/logs.js');
  const zone = process.env.TZ;
  process.env.TZ = 'America/New_York';
  t.teardown(() => {
    if (zone === undefined) delete process.env.TZ;
    else process.env.TZ = zone;
  });
  const at = (time: string) =>
    formatEvent(
      { id: 1, time, mac: LISTED_MAC, source: 'machine', type: 'installed' } as Parameters<
        typeof formatEvent
      >[0],
      new Date('2026-11-27T17:00:00.000Z'),
    );
  t.match(at('2026-11-27T10:15:36.123Z'), /^05:15:36\.123 52:54:00:12:34:56 machine/, 'today, in New York');
  t.match(
    at('2026-11-27T03:00:00.000Z'),
    /^2026-11-26 22:00:00\.000 /,
    "yesterday there, although today's date in UTC",
  );
});

t.test(
  'what an unauthenticated sender wrote reaches the terminal escaped, never as control bytes',
  async (t) => {
    const { formatEvent } = await import('../src/cli/logs.js');
    // iPXE's uuid and platform come from the query of an unauthenticated /boot/<mac>.ipxe.
    const line = formatEvent({
      id: 1,
      time: '2026-11-27T09:00:00.000Z',
      mac: LISTED_MAC,
      source: 'http',
      type: 'ipxe-script',
      detail: {
        uuid: '\n10:51:00.000 52:54:00:12:34:56 machine  installed\u001b[2J',
        platform: '\u001b]2;PWNED\u0007\u202e',
      },
    } as Parameters<typeof formatEvent>[0]);
    t.notMatch(line, /[\u0000-\u001f\u007f-\u009f\u202e]/, 'no control character is printed raw');
    t.match(line, 'uuid=\\x0a10:51:00.000 52:54:00:12:34:56 machine  installed\\x1b[2J');
    t.match(line, 'platform=\\x1b]2;PWNED\\x07\\u202e');
    t.equal(line.split('\n').length, 1, 'one line, no forged second one');
  },
);

t.test('every verb says in one line that no server answers when nothing listens', async (t) => {
  const { createServer } = await import('node:net');
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  const url = `http://127.0.0.1:${port}`;
  const line = `no rackboot server answers at ${url}: is \`rackboot serve\` running (or is --url wrong)?`;
  for (const verb of [
    ['machines'],
    ['logs'],
    ['logs', '-f', '--mac', LISTED_MAC],
    ['reprovision', LISTED_MAC],
  ]) {
    const result = await inProcessWith(API_TOKEN, ...verb, '--url', url);
    t.equal(result.error?.message, line, verb.join(' '));
  }
  const cli = await rackboot('machines', '--url', url);
  t.same([cli.code, cli.stderr], [1, `rackboot: ${line}\n`], 'the CLI: that line, exit 1');
});
