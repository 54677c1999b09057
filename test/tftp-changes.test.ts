import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
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

t.test('a streamed file rewritten in place mid-transfer aborts it; the client keeps no mix', async (t) => {
  // Over the cache's 16 MiB per-file limit: streamed from disk a chunk at a time.
  const size = 20 << 20;
  const path = join(assets.root, 'streamed.bin');
  const old = randomBytes(size);
  await writeFile(path, old);
  const output = join(scratch, 'streamed.out');
  const curl = spawn('curl', ['-sS', '--max-time', '120', '-o', output, url('streamed.bin')], {
    stdio: 'ignore',
  });
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
  // Held still while the file is rewritten, so the rewrite lands mid-transfer however fast the client.
  process.kill(pid, 'SIGSTOP');
  await rewriteInPlace(path, randomBytes(size));
  process.kill(pid, 'SIGCONT');
  const [code] = await exited;
  t.not(code, 0, 'curl fails: the server ended the transfer');
  const received = await readFile(output);
  t.ok(received.length < size, `the client got ${received.length} bytes, not the whole file`);
  t.ok(received.equals(old.subarray(0, received.length)), 'every byte it got is of the old version');
  await running.waitForEvents((events) => events.some((event) => event.detail?.file === 'streamed.bin'));
  const event = running.events.find((event) => event.detail?.file === 'streamed.bin');
  t.match(event?.detail, { outcome: 'aborted', reason: 'file-changed' });
});

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
