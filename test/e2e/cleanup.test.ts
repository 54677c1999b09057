import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { isRunning, ownedTemporaryDirectory, runCommand } from '../../src/lab/command.js';
import { removeStaleLabNamespaces } from '../../src/lab/network.js';
import { waitUntil } from '../helpers/poll.js';

// Cleanup when the harness does not end normally: a test runner's SIGTERM (tap on timeout) and a
// SIGKILL, after which the next lab start sweeps what the dead harness left. A real QEMU and
// server-like processes run in the lab namespaces each time.

const fixture = fileURLToPath(new URL('./abandoned-lab.ts', import.meta.url));
/** The LAN of the `rackboot lab` run below (private to its namespace, like every lab's). */
const KEEP_SUBNET = 253;

interface Abandoned {
  namespaces: string[];
  pids: number[];
}

async function existingNamespaces(names: string[]): Promise<string[]> {
  const listing = await runCommand('ip', ['netns', 'list']);
  return names.filter((name) => listing.split('\n').some((line) => line.split(' ')[0] === name));
}

/** Starts the fixture harness and resolves with what it built, once QEMU runs. */
function startAbandonedLab(subnet: number) {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture, String(subnet)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const report = new Promise<Abandoned>((resolve, reject) => {
    let output = '';
    const timer = setTimeout(() => reject(new Error(`fixture did not report:\n${output}`)), 60_000);
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const line = output.split('\n').find((candidate) => candidate.startsWith('{'));
      if (!line) return;
      clearTimeout(timer);
      resolve(JSON.parse(line) as Abandoned);
    });
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.once('exit', (code) => reject(new Error(`fixture exited (${code}):\n${output}`)));
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return { child, exited, report };
}

t.test('SIGTERM to the harness (a test runner timing out) removes the lab at once', async (t) => {
  const { child, exited, report } = startAbandonedLab(103);
  const made = await report;
  t.equal(made.namespaces.length, 2);
  t.ok(made.pids.length >= 5, 'QEMU, two sleeps and their timeout wrappers were running');
  child.kill('SIGTERM');
  await exited;
  t.same(await existingNamespaces(made.namespaces), [], 'namespaces (bridge, tap, veth) removed');
  t.ok(await waitUntil(async () => made.pids.every((pid) => !isRunning(pid)), 5000), 'every process ended');
});

t.test(
  'after a SIGKILL, the next lab start sweeps the dead harness’s namespaces and processes',
  async (t) => {
    const { child, exited, report } = startAbandonedLab(104);
    const made = await report;
    child.kill('SIGKILL');
    await exited;
    t.same(
      await existingNamespaces(made.namespaces),
      made.namespaces,
      'nothing could clean up inside the harness',
    );
    const removed = await removeStaleLabNamespaces();
    t.same(
      [...removed].sort(),
      [...made.namespaces].sort(),
      'exactly the dead harness’s namespaces are swept',
    );
    t.same(await existingNamespaces(made.namespaces), []);
    t.ok(await waitUntil(async () => made.pids.every((pid) => !isRunning(pid)), 5000), 'every process ended');
  },
);

t.test('a temporary directory left by a dead run is swept by the next, a live run’s is kept', async (t) => {
  const parent = t.testdir({});
  // A PID that ran and ended: the owner of what a SIGKILLed lab or a Ctrl-C'd download leaves.
  const ended = spawn('true');
  await new Promise((resolve) => ended.once('exit', resolve));
  const deadPid = ended.pid ?? 0;
  t.notOk(isRunning(deadPid), 'the first owner is gone');
  const live = `download-${process.pid}-live`;
  const dead = `download-${deadPid}-dead`;
  for (const name of [live, dead, 'download-without-owner', `probe-${deadPid}-other`]) {
    mkdirSync(join(parent, name));
    writeFileSync(join(parent, name, 'partial.deb'), 'x');
  }
  const made = await ownedTemporaryDirectory(parent, 'download-');
  t.match(basename(made), new RegExp(`^download-${process.pid}-`), 'named for its owner');
  t.same(
    readdirSync(parent).sort(),
    [basename(made), live, 'download-without-owner', `probe-${deadPid}-other`].sort(),
    "the dead run's download is gone; the live one, other prefixes and names without an owner stay",
  );
});

t.test('Ctrl-C in a `rackboot lab --keep` run names the kept directory', async (t) => {
  const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
  const lab = spawn(
    process.execPath,
    ['--import', 'tsx', main, 'lab', '--keep', '--accel', 'tcg', '--subnet', String(KEEP_SUBNET)],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  t.teardown(() => {
    if (lab.exitCode === null && lab.signalCode === null) lab.kill('SIGKILL');
  });
  let output = '';
  const exited = new Promise<number | null>((resolve) => lab.once('exit', (code) => resolve(code)));
  for (const stream of [lab.stdout, lab.stderr]) stream.on('data', (chunk: Buffer) => (output += chunk));
  t.ok(await waitUntil(async () => output.includes('powering on'), 60_000), 'the VM started', { output });
  lab.kill('SIGINT');
  await exited;
  const kept = /lab directory kept: (\S+)/.exec(output)?.[1];
  t.ok(kept, 'the directory is named', { output });
  if (!kept) return;
  t.teardown(() => rmSync(kept, { recursive: true, force: true }));
  t.ok(existsSync(join(kept, 'rackboot.yaml')), 'and it is there, config and all');
});
