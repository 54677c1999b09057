import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { chmod, link, mkdtemp, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { requireTools, run } from './helpers/netns.js';
import { waitUntil } from './helpers/poll.js';
import { createAssets, startTestServer } from './tftp/harness.js';

// Files rewritten in place while, or between, real clients fetch them: a client never gets a mix of
// two versions, and never an old version from the cache.

await requireTools('curl', 'dd');
const assets = await createAssets();
const scratch = await mkdtemp(join(tmpdir(), 'rackboot-tftp-changes-'));
const running = await startTestServer(assets.root);
t.teardown(async () => {
  await running.server.close();
  await assets.remove();
  await rm(scratch, { recursive: true, force: true });
});
const { port } = running;
const url = (file: string) => `tftp://127.0.0.1:${port}/${file}`;

/** Overwrites the file's bytes without truncating it, as rsync --inplace does. */
const rewriteInPlace = (path: string, content: Buffer) =>
  writeFile(join(scratch, 'new'), content).then(() =>
    run('dd', [`if=${join(scratch, 'new')}`, `of=${path}`, 'conv=notrunc', 'bs=1M', 'status=none']),
  );

/**
 * curl fetches a 20 MiB file (over the cache's 16 MiB per-file limit: streamed from disk a chunk at a
 * time); once it has the first MiB it is held still (SIGSTOP) while `change` runs, so the change lands
 * mid-transfer however fast the client; then it goes on. Resolves with what curl got and its event.
 */
async function fetchWhile(t: Test, name: string, change: (path: string) => Promise<unknown>) {
  const size = 20 << 20;
  const path = join(assets.root, name);
  const old = randomBytes(size);
  await writeFile(path, old);
  const output = join(scratch, `${name}.out`);
  const curl = spawn('curl', ['-sS', '--max-time', '120', '-o', output, url(name)], { stdio: 'ignore' });
  const exited = once(curl, 'exit') as Promise<[number | null]>;
  const pid = curl.pid ?? 0;
  t.teardown(() => {
    if (curl.exitCode === null) process.kill(pid, 'SIGKILL');
  });
  const started = await waitUntil(
    async () => ((await stat(output).catch(() => undefined))?.size ?? 0) >= 1 << 20,
    30_000,
    5,
  );
  t.ok(started, 'the client has the first MiB');
  process.kill(pid, 'SIGSTOP');
  await change(path);
  process.kill(pid, 'SIGCONT');
  const [code] = await exited;
  await running.waitForEvents((events) => events.some((event) => event.detail?.file === name));
  const event = running.events.find((event) => event.detail?.file === name);
  return { code, old, received: await readFile(output), detail: event?.detail };
}

t.test('a streamed file rewritten in place mid-transfer aborts it; the client keeps no mix', async (t) => {
  const { code, old, received, detail } = await fetchWhile(t, 'streamed.bin', (path) =>
    rewriteInPlace(path, randomBytes(20 << 20)),
  );
  t.not(code, 0, 'curl fails: the server ended the transfer');
  t.ok(received.length < old.length, `the client got ${received.length} bytes, not the whole file`);
  t.ok(received.equals(old.subarray(0, received.length)), 'every byte it got is of the old version');
  t.match(detail, { outcome: 'aborted', reason: 'file-changed' });
});

t.test(
  'a rename away or over a streamed file leaves its transfer whole; a chmod or a hard link ends it',
  async (t) => {
    const cases: [string, (path: string) => Promise<unknown>, 'complete' | 'aborted'][] = [
      ['renamed.bin', (path) => rename(path, `${path}.old`), 'complete'],
      [
        'replaced.bin',
        async (path) => {
          await writeFile(`${path}.new`, randomBytes(1024));
          await rename(`${path}.new`, path);
        },
        'complete',
      ],
      // ctime moves as for a rewrite whose mtime was put back, which may come with them.
      ['chmodded.bin', (path) => chmod(path, 0o640), 'aborted'],
      ['linked.bin', (path) => link(path, `${path}.backup`), 'aborted'],
      [
        'rewritten-and-chmodded.bin',
        async (path) => {
          const { mtime } = await stat(path);
          await rewriteInPlace(path, randomBytes(20 << 20));
          await chmod(path, 0o444);
          await utimes(path, mtime, mtime);
        },
        'aborted',
      ],
    ];
    for (const [name, change, outcome] of cases) {
      const { code, old, received, detail } = await fetchWhile(t, name, change);
      t.match(detail, { outcome }, name);
      if (outcome === 'complete') {
        t.equal(code, 0, `${name}: curl completes`);
        t.ok(received.equals(old), `${name}: byte-exact, the version it started with`);
      } else {
        t.not(code, 0, `${name}: curl fails`);
        t.ok(received.equals(old.subarray(0, received.length)), `${name}: only bytes of the old version`);
      }
    }
  },
);

t.test('a cached file rewritten in place with its size and mtime kept is served anew', async (t) => {
  const path = join(assets.root, 'cached.bin');
  const mtime = 1_700_000_000;
  const first = randomBytes(1 << 20);
  await writeFile(path, first);
  await utimes(path, mtime, mtime);
  const output = join(scratch, 'cached.out');
  await run('curl', ['-sS', '-o', output, url('cached.bin')]);
  t.ok((await readFile(output)).equals(first), 'the first version');
  // cp -p, rsync -a --inplace, SOURCE_DATE_EPOCH builds: same size, same mtime, new bytes.
  const second = randomBytes(1 << 20);
  await rewriteInPlace(path, second);
  await utimes(path, mtime, mtime);
  await run('curl', ['-sS', '-o', output, url('cached.bin')]);
  t.ok((await readFile(output)).equals(second), 'the second version, not the cached first');
});
