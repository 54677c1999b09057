import { existsSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { runModuleWorker } from '../src/worker-thread.js';

t.test('a one-shot worker answers once its thread has ended, with the buffers moved to it', async (t) => {
  const endedFile = join(t.testdir(), 'ended');
  const bytes = new Uint8Array([1, 2, 3, 250]);
  const answer = runModuleWorker<number>(
    'helpers/answering-worker',
    import.meta.url,
    { bytes, lingerMs: 300, endedFile },
    [bytes.buffer],
  );
  t.equal(bytes.byteLength, 0, 'moved, not copied: the caller no longer holds the bytes');
  t.equal(await answer, 256);
  // A load's parse thread that is still being torn down while the next one starts doubles the
  // process's memory peak (docs/http.md).
  t.ok(existsSync(endedFile), 'the thread had ended when the answer arrived');
});

t.test('a one-shot worker that fails before answering rejects with its error', async (t) => {
  const endedFile = join(t.testdir(), 'ended');
  await t.rejects(
    runModuleWorker('helpers/answering-worker', import.meta.url, { bytes: null, lingerMs: 0, endedFile }),
    /reading 'reduce'/,
  );
  t.ok(existsSync(endedFile), 'the thread had ended when the error arrived');
});

t.test('a one-shot worker that answers but does not end is terminated after the grace time', async (t) => {
  const bytes = new Uint8Array([7]);
  const started = performance.now();
  const answer = await runModuleWorker<number>(
    'helpers/answering-worker',
    import.meta.url,
    { bytes, lingerMs: 120_000, endedFile: join(t.testdir(), 'ended') },
    [bytes.buffer],
    200,
  );
  t.equal(answer, 7);
  t.ok(performance.now() - started < 30_000, 'not held for the thread’s two minutes');
});
