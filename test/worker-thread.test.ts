import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MessageChannel } from 'node:worker_threads';
import t from 'tap';
import { revivedLogArguments, runModuleWorker, sendableLogArguments } from '../src/worker-thread.js';

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

t.test(
  'a worker gets the young generation asked for, though the process runs with --max-semi-space-size',
  async (t) => {
    // V8 let the process flag (bin/rackboot.js: 8 MiB) override every Worker's resourceLimits, so the
    // history writer grew the main thread's 2 × 8 MiB semi-spaces (src/worker-thread.ts).
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [
        '--max-semi-space-size=8',
        '--import',
        'tsx',
        new URL('helpers/young-generations.ts', import.meta.url).pathname,
      ],
      { timeout: 60_000 },
    );
    const MiB = 1024 * 1024;
    t.same(
      JSON.parse(stdout),
      { oneMiB: 2 * MiB, inherited: 16 * MiB },
      'two semi-spaces of 1 MiB; of the process’s 8 MiB',
    );
  },
);

t.test("a log call's errors cross to another thread with their code, errno, syscall and cause", async (t) => {
  const { port1, port2 } = new MessageChannel();
  t.teardown(() => port1.close());
  const crossed = async (args: unknown[]) => {
    const received = once(port2, 'message');
    port1.postMessage(args);
    return ((await received) as [unknown[]])[0];
  };
  const full = Object.assign(new Error('ENOSPC: no space left on device, write'), {
    code: 'ENOSPC',
    errno: -28,
    syscall: 'write',
    cause: Object.assign(new Error('quota'), { code: 'EDQUOT' }),
  });
  const [plainClone] = (await crossed([{ err: full }])) as [{ err: Error & { code?: string } }];
  t.equal(
    plainClone.err.code,
    undefined,
    'a structured clone alone loses the code (why the arguments are made sendable)',
  );

  const [fields, message] = revivedLogArguments(
    await crossed(sendableLogArguments([{ err: full, xid: '0a0b0c0d' }, 'lease write failed'])),
  ) as [
    {
      err: Error & { code?: string; errno?: number; syscall?: string; cause?: Error & { code?: string } };
      xid: string;
    },
    string,
  ];
  t.ok(fields.err instanceof Error, "an Error again, for the logger's err serializer");
  t.match(fields.err, { name: 'Error', message: full.message, code: 'ENOSPC', errno: -28, syscall: 'write' });
  t.equal(fields.err.stack, full.stack);
  t.match(fields.err.cause, { message: 'quota', code: 'EDQUOT' });
  t.ok(fields.err.cause instanceof Error);
  t.equal(fields.xid, '0a0b0c0d');
  t.equal(message, 'lease write failed');
  const [alone] = revivedLogArguments(await crossed(sendableLogArguments([full]))) as [
    Error & { code?: string },
  ];
  t.match(alone, { code: 'ENOSPC', syscall: 'write' }, 'an error given as the first argument too');
});
