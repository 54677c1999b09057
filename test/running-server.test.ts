import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { announceRunningServer, RUNNING_SERVER_FILE, readRunningServer } from '../src/running-server.js';
import { StateError } from '../src/state-error.js';
import { secretFingerprint } from '../src/state-secret.js';
import { fill, fullTmpfs } from './helpers/root.js';

t.test('the announcing server is found while it runs, and the file is gone after its close', async (t) => {
  const state = t.testdir();
  const remove = await announceRunningServer(state, { pid: process.pid, url: 'http://10.77.0.1:8080' });
  t.same(await readRunningServer(state), { pid: process.pid, url: 'http://10.77.0.1:8080' });
  await remove();
  t.equal(await readRunningServer(state), undefined);
});

t.test('the fingerprint of the secret the server signs with is announced, not the secret', async (t) => {
  const state = t.testdir();
  const secret = Buffer.alloc(32, 7);
  const fingerprint = secretFingerprint(secret);
  t.match(fingerprint, /^[0-9a-f]{16}$/);
  t.not(secretFingerprint(Buffer.alloc(32, 8)), fingerprint, 'another secret, another fingerprint');
  await announceRunningServer(state, {
    pid: process.pid,
    url: 'http://10.77.0.1:8080',
    secretFingerprint: fingerprint,
  });
  t.same(await readRunningServer(state), {
    pid: process.pid,
    url: 'http://10.77.0.1:8080',
    secretFingerprint: fingerprint,
  });
  t.notMatch(
    readFileSync(join(state, RUNNING_SERVER_FILE), 'utf8'),
    secret.toString('hex'),
    'not the secret',
  );
});

t.test('a file left by a killed server is not believed because its PID runs again', async (t) => {
  // PID 1 always runs: a server that was PID 1 in a container, or a PID reused after a reboot.
  const state = t.testdir();
  const stale = (fields: Record<string, unknown>) =>
    writeFileSync(
      join(state, RUNNING_SERVER_FILE),
      JSON.stringify({ pid: 1, url: 'http://10.77.0.1:8999', host: hostname(), startTicks: '1', ...fields }),
    );
  stale({});
  t.equal(await readRunningServer(state), undefined, 'another process started at another time');
  stale({ pid: process.pid, host: 'another-host' });
  t.equal(await readRunningServer(state), undefined, 'a server on another host sharing the state');
  writeFileSync(join(state, RUNNING_SERVER_FILE), '{"pid": 1');
  t.equal(await readRunningServer(state), undefined, 'a torn file');
});

t.test('a full disk: one line naming the file, and no draft left behind', async (t) => {
  // Before: the bare "ENOSPC: no space left on device, write" with a stack, and an empty
  // serve-running.json.PID left in server.state.
  const { directory, filler } = fullTmpfs(t, 'running-enospc');
  fill(filler);
  const failed = await announceRunningServer(directory, {
    pid: process.pid,
    url: 'http://10.77.0.1:8080',
  }).catch((error: unknown) => error);
  t.type(failed, StateError);
  t.equal(
    (failed as Error).message,
    `cannot write ${join(directory, RUNNING_SERVER_FILE)}: ENOSPC: no space left on device, write; the disk (or this user's quota) is full: free space on its file system`,
  );
  t.same(readdirSync(directory), ['filler'], 'nothing of the announcement left');
});
