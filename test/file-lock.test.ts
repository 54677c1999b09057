import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { withFileLock } from '../src/file-lock.js';

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
