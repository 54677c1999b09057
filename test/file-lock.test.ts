import { chownSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { withFileLock } from '../src/file-lock.js';
import { fill, fullTmpfs, moduleAsNobody, NOBODY, requireRoot } from './helpers/root.js';

const options = {
  task: 'test',
  describeHolder: (pid: number) => `another test (pid ${pid})`,
  waitMs: 30_000,
  error: (message: string) => new Error(message),
};

t.test('runs in one process that contend for the lock hold it one at a time', async (t) => {
  // An entry this process had just created read as stale to its other runs until the creator marked
  // it as its own: two of them then held the lock together (concurrent adopts lost a machine).
  const runs = 6;
  const rounds = 10;
  let holding = 0;
  let mostAtOnce = 0;
  let done = 0;
  for (let round = 0; round < rounds; round += 1) {
    const directory = join(t.testdir(), `lock-${round}`);
    await Promise.all(
      Array.from({ length: runs }, () =>
        withFileLock(directory, options, async () => {
          holding += 1;
          mostAtOnce = Math.max(mostAtOnce, holding);
          // The work takes turns of the event loop, as reading, checking and writing a config does.
          await sleep(20);
          holding -= 1;
          done += 1;
        }),
      ),
    );
  }
  t.equal(done, runs * rounds, 'every run did its work');
  t.equal(mostAtOnce, 1, 'never two holders at once');
});

t.test('many runs in one process with instant work all get the lock', async (t) => {
  // Contending among themselves, runs of one process used up each other's tries ("other test runs
  // keep changing it"); they now take turns before they contend.
  const directory = join(t.testdir(), 'lock');
  const outcomes = await Promise.allSettled(
    Array.from({ length: 40 }, (_, index) => withFileLock(directory, options, async () => index)),
  );
  const refused = outcomes.filter((outcome) => outcome.status === 'rejected');
  t.same(
    refused.map((outcome) => String((outcome as PromiseRejectedResult).reason)),
    [],
    'no run refused',
  );
  t.same(
    outcomes.map((outcome) => (outcome as PromiseFulfilledResult<number>).value),
    Array.from({ length: 40 }, (_, index) => index),
    'each run did its own work',
  );
});

t.test('a run of this process waits for the one holding the lock here, up to waitMs', async (t) => {
  const directory = join(t.testdir(), 'lock');
  const order: string[] = [];
  let finishFirst = () => {};
  const first = withFileLock(directory, options, async () => {
    order.push('first');
    await new Promise<void>((resolve) => {
      finishFirst = resolve;
    });
  });
  const impatient = withFileLock(directory, { ...options, waitMs: 100 }, async () => {
    order.push('impatient');
  });
  const patient = withFileLock(directory, options, async () => {
    order.push('patient');
  });
  await t.rejects(
    impatient,
    { message: `after waiting 0.1 s, another test (pid ${process.pid}); wait for it or remove ${directory}` },
    'the impatient run is refused, naming the holder',
  );
  const refusedAtOnce = withFileLock(directory, { ...options, waitMs: 0 }, async () => undefined);
  await t.rejects(refusedAtOnce, {
    message: `another test (pid ${process.pid}); wait for it or remove ${directory}`,
  });
  await sleep(50);
  t.same(order, ['first'], 'the patient run still waits after the impatient one gave up');
  finishFirst();
  await Promise.all([first, patient]);
  t.same(order, ['first', 'patient'], 'it runs once the holder is done');
});

t.test('a lock directory made by root belongs to the owner of the directory it is in', async (t) => {
  requireRoot('gives files to nobody');
  // Before, root (a `sudo rackboot machines adopt`) left it root's: the service user, who owns
  // server.state, could never take the lock again (EACCES).
  const parent = t.testdir();
  chownSync(parent, NOBODY, NOBODY);
  const directory = join(parent, 'adopt.lock');
  // Under a strict umask, as `sudo` runs may be: the entries it leaves must still be readable.
  const umask = process.umask(0o077);
  try {
    await withFileLock(directory, options, async () => {});
  } finally {
    process.umask(umask);
  }
  const { uid, gid } = statSync(directory);
  t.same({ uid, gid }, { uid: NOBODY, gid: NOBODY }, 'the lock directory is the service user’s');

  // The service user takes it next, in its own process.
  const lockModule = join(import.meta.dirname, '..', 'src', 'file-lock.ts');
  const taker = `
    import { withFileLock } from ${JSON.stringify(lockModule)};
    await withFileLock(process.argv[1], { task: 'test', describeHolder: String, waitMs: 0, error: (m) => new Error(m) }, async () => {});
    process.stdout.write('taken');`;
  const run = moduleAsNobody(taker, directory);
  t.equal(run.stdout, 'taken', 'the service user takes the lock after root did', { stderr: run.stderr });
});

t.test('an entry whose PID now belongs to another process (a crash, a reboot) is not a holder', async (t) => {
  const { spawn } = await import('node:child_process');
  const { readFileSync } = await import('node:fs');
  // A live process standing in for whatever got the dead holder's PID after a reboot.
  const other = spawn('sleep', ['30']);
  t.teardown(() => {
    other.kill('SIGKILL');
  });
  await new Promise((resolve) => other.once('spawn', resolve));
  const pid = other.pid as number;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const startTime = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  const refuseAtOnce = { ...options, waitMs: 0 };

  const reused = t.testdir({ '1': `${pid} ${bootId}:1\n` });
  let ran = false;
  await withFileLock(reused, refuseAtOnce, async () => {
    ran = true;
  });
  t.ok(ran, 'the lock is taken: the live PID started after the entry was written');

  const held = t.testdir({ '1': `${pid} ${bootId}:${startTime}\n` });
  await t.rejects(
    withFileLock(held, refuseAtOnce, async () => {}),
    { message: new RegExp(`another test \\(pid ${pid}\\)`) },
    'the same PID with its own start time still holds it',
  );
  const legacy = t.testdir({ '1': `${pid}\n` });
  await t.rejects(
    withFileLock(legacy, refuseAtOnce, async () => {}),
    'an entry of the old form: the PID alone',
  );
});

t.test('a lock on a full disk is refused with what to do about it', async (t) => {
  const { directory, filler } = fullTmpfs(t, 'lock-full');
  fill(filler);
  const refusal = await withFileLock(join(directory, 'serve.lock'), options, async () => 'ran').catch(
    (error: Error) => error.message,
  );
  t.match(
    refusal,
    /^cannot (write|create) .*serve\.lock.*: ENOSPC: no space left on device.*; the disk \(or this user's quota\) is full: free space on its file system$/,
    'the ENOSPC names the lock and says to free space',
  );
});
