import type { ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import type { DoraOptions, DoraResult } from './dhcp/dora-client.js';
import { testConfigYaml } from './dhcp/fixtures.js';
import { launchDhcp, REPO_ROOT, waitForLine } from './dhcp/harness.js';
import { createRoutedPair, requireTools, waitForOutput } from './helpers/netns.js';

// kill -9 in the middle of 500 DORAs, restart on the same state: no lease lost, no address twice.
// Namespaces on 10.77.8.0/24; the pool is 10.77.9.0–10.77.10.255 inside 10.77.8.0/22.
const SUBNET = 8;
const CLIENTS = 500;
const DORA_CLIENT = fileURLToPath(new URL('./dhcp/dora-client.ts', import.meta.url));

await requireTools('ip');
const { pair, directory, cleanup } = await createRoutedPair(SUBNET, 'dhcp-crash');
t.teardown(cleanup);
const configFile = join(directory, 'rackboot.yaml');
await writeFile(
  configFile,
  testConfigYaml({
    subnet: SUBNET,
    mode: 'authoritative',
    state: directory,
    pool: { subnet: '10.77.8.0/22', range: ['10.77.9.0', '10.77.10.255'] },
  }),
);

function startDoraClient(options: DoraOptions): { child: ChildProcess; result: Promise<DoraResult> } {
  const child = pair.client.spawn(
    process.execPath,
    ['--import', 'tsx', DORA_CLIENT, JSON.stringify(options)],
    {
      cwd: REPO_ROOT,
    },
  );
  const result = waitForLine(child, (line) => line.startsWith('RESULT '), options.deadlineMs + 15_000).then(
    (line) => JSON.parse(line.slice('RESULT '.length)) as DoraResult,
  );
  return { child, result };
}

t.test('kill -9 during a burst of 500 DORAs, then restart', async (t) => {
  const first = await launchDhcp(pair.server, configFile);
  const burst = startDoraClient({
    mode: 'dora',
    clients: CLIENTS,
    concurrency: 32,
    macPrefix: '52:54:08',
    pxe: true,
    timeoutMs: 400,
    deadlineMs: 60_000,
    progressEvery: 50,
  });
  await waitForOutput(burst.child, (line) => line === 'PROGRESS 150', 30_000);
  const killed = new Promise<NodeJS.Signals | null>((resolve) =>
    first.child.once('exit', (_code, signal) => resolve(signal)),
  );
  first.child.kill('SIGKILL');
  t.equal(await killed, 'SIGKILL', 'the server died mid-burst');

  await launchDhcp(pair.server, configFile);
  const dora = await burst.result;
  t.equal(dora.failed, 0, 'every client got a lease in the end');
  t.equal(dora.acked.length, CLIENTS);
  const addresses = new Set(dora.acked.map(([, ip]) => ip));
  t.equal(addresses.size, CLIENTS, 'no address was given to two MACs');
  t.ok(dora.retries > 0, `clients retried across the restart (${dora.retries} retries)`);

  // Every client, including those acknowledged before the kill, still owns its address.
  const check = startDoraClient({
    mode: 'reboot',
    clients: CLIENTS,
    concurrency: 32,
    macPrefix: '52:54:08',
    pxe: true,
    timeoutMs: 1000,
    deadlineMs: 30_000,
    verify: dora.acked,
  });
  const verified = await check.result;
  t.equal(verified.acked.length, CLIENTS, 'INIT-REBOOT ACKed for every client');
  t.equal(verified.naks, 0, 'no NAK: no lease was lost');
  t.equal(verified.mismatched, 0);
  t.equal(verified.failed, 0);
});
