import t from 'tap';
import { FetchError } from '../src/fetch/download.js';
import { createReporter, formatBytes, progressLine } from '../src/fetch/progress.js';

t.test('byte amounts', async (t) => {
  t.equal(formatBytes(0), '0 B');
  t.equal(formatBytes(1023.4), '1023 B');
  t.equal(formatBytes(1536), '1.5 KiB');
  t.equal(formatBytes(734 * 1024 * 1024), '734.0 MiB');
});

t.test('the progress line fits the terminal and shows the fraction', async (t) => {
  const line = progressLine('x86_64 rootfs', 512 << 20, 1024 << 20, 10 << 20, 80);
  t.equal(line, 'x86_64 rootfs [##############-------------]  50%  512.0 MiB/1.0 GiB  10.0 MiB/s');
  t.equal(line.length, 79);
  t.equal(progressLine('kernel', 100, undefined, 50, 80), 'kernel  100 B  50 B/s', 'no bar without a size');
  t.ok(progressLine('a very long label for a narrow terminal', 1, 2, 1, 40).length <= 39);
});

t.test('on a TTY the bar is redrawn in place, at most ten times a second', async (t) => {
  const writes: string[] = [];
  let clock = 0;
  const reporter = createReporter(
    { write: (text) => writes.push(text), isTTY: true, columns: 60 },
    () => clock,
  );
  const download = reporter.download('kernel');
  download.start?.(0, 1000);
  for (const bytes of [100, 200, 300]) {
    clock += 40;
    download.progress?.(bytes);
  }
  clock += 200;
  download.retry?.(new FetchError('cut'), 1000);
  download.end('downloaded', 1000, 'sha256 verified');
  clock += 200;
  download.progress?.(1000);
  download.abandon();
  download.abandon();
  t.same(
    writes,
    [
      '\r\x1b[Kkernel [######--------------]  30%  300 B/1000 B  2.4 KiB/s',
      '\r\x1b[K',
      'kernel: cut; retrying in 1s\n',
      'kernel: downloaded, 1000 B, sha256 verified\n',
      '\r\x1b[Kkernel [###################] 100%  1000 B/1000 B  1.9 KiB/s',
      '\r\x1b[K',
    ],
    'a failed download clears its bar once',
  );
});
