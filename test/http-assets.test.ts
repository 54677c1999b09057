import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  mkdirSync,
  readdirSync,
  readlinkSync,
  symlinkSync,
  truncateSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { type IncomingMessage, request } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { bootFixture, fixtureApp } from './ignition/boot-fixture.js';

const SIZE = 64 * 1024 * 1024;

/** A raw HTTP request (fetch would normalise `..` and set Host itself). */
function raw(
  port: number,
  options: { method?: string; path: string; headers?: Record<string, string> },
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const outgoing = request(
      {
        host: '127.0.0.1',
        port,
        method: options.method ?? 'GET',
        path: options.path,
        headers: options.headers,
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            body: Buffer.concat(chunks),
          }),
        );
        response.on('error', reject);
      },
    );
    outgoing.on('error', reject);
    outgoing.setTimeout(30_000, () => outgoing.destroy(new Error('timeout')));
    outgoing.end();
  });
}

/** The fixture's app listening on loopback, closed with the test; its port. */
async function listening(t: Test, fixture: Awaited<ReturnType<typeof bootFixture>>): Promise<number> {
  const app = await fixtureApp(fixture);
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(async () => {
    await app.close();
    await fixture.cleanup();
  });
  return (app.server.address() as AddressInfo).port;
}

t.test('assets over a real socket: exact Range bytes of a 64 MiB file, HEAD sizes, no escape', async (t) => {
  const fixture = await bootFixture();
  const image = randomBytes(SIZE);
  writeFileSync(join(fixture.dir, 'assets', 'fcos', 'big.img'), image);
  writeFileSync(join(fixture.dir, 'assets', '.partial'), 'half a download');
  writeFileSync(join(fixture.dir, 'secret.txt'), 'outside the assets root');
  symlinkSync(join(fixture.dir, 'secret.txt'), join(fixture.dir, 'assets', 'escape'));
  mkdirSync(join(fixture.dir, 'assets', 'current'));
  symlinkSync('../fcos/kernel', join(fixture.dir, 'assets', 'current', 'kernel'));
  const port = await listening(t, fixture);

  const whole = await raw(port, { path: '/assets/fcos/big.img' });
  t.equal(whole.status, 200);
  t.equal(whole.headers['content-length'], String(SIZE));
  t.equal(
    createHash('sha256').update(whole.body).digest('hex'),
    createHash('sha256').update(image).digest('hex'),
  );

  const ranges: [string, number, number][] = [
    ['bytes=0-0', 0, 0],
    ['bytes=1000-1999', 1000, 1999],
    ['bytes=33554430-33620000', 33554430, 33620000],
    [`bytes=${SIZE - 4096}-`, SIZE - 4096, SIZE - 1],
    ['bytes=-65536', SIZE - 65536, SIZE - 1],
  ];
  for (const [range, start, end] of ranges) {
    const part = await raw(port, { path: '/assets/fcos/big.img', headers: { range } });
    t.equal(part.status, 206, range);
    t.equal(part.headers['content-range'], `bytes ${start}-${end}/${SIZE}`, `${range}: Content-Range`);
    t.ok(part.body.equals(image.subarray(start, end + 1)), `${range}: exact bytes`);
  }
  const unsatisfiable = await raw(port, {
    path: '/assets/fcos/big.img',
    headers: { range: `bytes=${SIZE}-` },
  });
  t.equal(unsatisfiable.status, 416);
  // RFC 9110 §13.1.5: If-Range never matches a weak entity tag, which ours are.
  const etag = String(whole.headers.etag);
  t.match(etag, /^W\//);
  const ifRange = await raw(port, {
    path: '/assets/fcos/big.img',
    headers: { range: 'bytes=0-0', 'if-range': etag },
  });
  t.equal(ifRange.status, 200, 'If-Range with a weak tag: the whole file');
  t.equal(ifRange.body.length, SIZE);
  const revalidated = await raw(port, { path: '/assets/fcos/big.img', headers: { 'if-none-match': etag } });
  t.equal(revalidated.status, 304, 'If-None-Match with the current tag: not modified');
  t.equal(revalidated.body.length, 0, 'and no body');

  // UEFI HTTP Boot: HEAD first, Host without the port, needs Content-Length.
  const head = await raw(port, {
    method: 'HEAD',
    path: '/assets/fcos/big.img',
    headers: { host: '10.77.0.1', 'user-agent': 'UefiHttpBoot/1.0' },
  });
  t.equal(head.status, 200);
  t.equal(head.headers['content-length'], String(SIZE));
  t.equal(head.headers['accept-ranges'], 'bytes');
  t.equal(head.body.length, 0);

  t.equal(
    (await raw(port, { path: '/assets/current/kernel' })).body.toString(),
    'contents of fcos/kernel\n',
    'symlinks inside the root work',
  );
  for (const path of [
    '/assets/../secret.txt',
    '/assets/%2e%2e/secret.txt',
    '/assets/fcos/%2e%2e/%2e%2e/secret.txt',
    '/assets/escape',
    '/assets/.partial',
    '/assets/fcos/',
    '/assets/',
  ]) {
    const response = await raw(port, { path });
    t.ok(response.status >= 400 && response.status < 500, `${path}: refused (${response.status})`);
    t.notMatch(
      response.body.toString(),
      /outside the assets root|half a download|kernel/,
      `${path}: nothing leaked`,
    );
  }

  const bigImage = join(fixture.dir, 'assets', 'fcos', 'big.img');
  const openOnImage = readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(join('/proc/self/fd', fd)) === bigImage;
    } catch {
      return false;
    }
  });
  t.same(openOnImage, [], "every answer closed the file (send's unused stream too)");

  const downloads = fixture.events.filter((event) => event.type === 'asset-download');
  t.ok(downloads.length >= ranges.length + 1, 'downloads are recorded');
  t.match(downloads[1], {
    source: 'http',
    detail: { file: 'fcos/big.img', status: 206, bytes: 1, outcome: 'complete', range: 'bytes=0-0' },
  });
});

t.test('a FIFO under the root is refused at once and stalls nothing', async (t) => {
  // Opening a FIFO blocks one of libuv's four pool threads until a writer comes: four requests
  // stopped every file read in the process.
  const fixture = await bootFixture();
  execFileSync('mkfifo', [join(fixture.dir, 'assets', 'pipe')]);
  symlinkSync('pipe', join(fixture.dir, 'assets', 'to-pipe'));
  const port = await listening(t, fixture);
  const answers = await Promise.all(
    Array.from({ length: 6 }, (_, index) =>
      raw(port, { path: index % 2 ? '/assets/pipe' : '/assets/to-pipe' }),
    ),
  );
  t.same(
    answers.map((answer) => answer.status),
    [404, 404, 404, 404, 404, 404],
  );
  t.equal((await raw(port, { method: 'HEAD', path: '/assets/pipe' })).status, 404, 'HEAD too');
  const kernel = await raw(port, { path: '/assets/fcos/kernel' });
  t.equal(kernel.body.toString(), 'contents of fcos/kernel\n', 'files are still served');
});

t.test('a suffix range longer than the file gets the whole file (RFC 9110 §14.1.1)', async (t) => {
  const fixture = await bootFixture();
  const app = await fixtureApp(fixture);
  t.teardown(async () => {
    await app.close();
    await fixture.cleanup();
  });
  const kernel = 'contents of fcos/kernel\n';
  const get = (range: string) => app.inject({ url: '/assets/fcos/kernel', headers: { range } });
  for (const [range, contentRange, body] of [
    ['bytes=-1000', 'bytes 0-23/24', kernel],
    ['bytes=-25', 'bytes 0-23/24', kernel],
    ['bytes=-24', 'bytes 0-23/24', kernel],
    ['bytes=-5', 'bytes 19-23/24', 'rnel\n'],
  ] as const) {
    const response = await get(range);
    t.equal(response.statusCode, 206, range);
    t.equal(response.headers['content-range'], contentRange, `${range}: Content-Range`);
    t.equal(response.body, body, `${range}: bytes`);
  }
  t.equal((await get('bytes=-0')).statusCode, 416, 'an empty suffix stays unsatisfiable');
  t.equal((await get('bytes=100-')).statusCode, 416, 'so does a start beyond the end');
});

t.test(
  'If-Range with a date resumes only when it is exactly the Last-Modified (RFC 9110 §13.1.5)',
  async (t) => {
    const fixture = await bootFixture();
    const app = await fixtureApp(fixture);
    t.teardown(async () => {
      await app.close();
      await fixture.cleanup();
    });
    const kernel = join(fixture.dir, 'assets', 'fcos', 'kernel');
    const resume = (ifRange: string) =>
      app.inject({ url: '/assets/fcos/kernel', headers: { range: 'bytes=9-', 'if-range': ifRange } });
    const released = new Date('2026-11-02T10:00:00Z');
    utimesSync(kernel, released, released);
    const seen = String((await app.inject('/assets/fcos/kernel')).headers['last-modified']);
    t.equal((await resume(seen)).statusCode, 206, 'the date the client was given: the rest of the file');

    // The operator rolls back to an older release (its mtime kept, as cp -p, rsync -a or tar leave
    // it): the client resuming with the newer date must not get the older file's tail after its head.
    writeFileSync(kernel, 'older release of the kernel\n');
    const older = new Date('2026-10-20T10:00:00Z');
    utimesSync(kernel, older, older);
    const rolledBack = await resume(seen);
    t.equal(rolledBack.statusCode, 200, 'a date later than Last-Modified: the whole file');
    t.equal(rolledBack.body, 'older release of the kernel\n');
    t.equal(rolledBack.headers['content-range'], undefined);
    t.equal((await resume('not a date')).statusCode, 200, 'an If-Range that is no date: the whole file');
  },
);

t.test('a client that stalls its request or sits idle is disconnected', async (t) => {
  const fixture = await bootFixture();
  fixture.deps.timeouts = { idleMs: 400, requestMs: 30_000 };
  const port = await listening(t, fixture);
  const closedAfter = (request: string) =>
    new Promise<number>((resolve, reject) => {
      const started = Date.now();
      const socket = connect(port, '127.0.0.1', () => socket.write(request));
      const giveUp = setTimeout(() => {
        socket.destroy();
        reject(new Error('still open after 10 s'));
      }, 10_000);
      socket.on('error', () => undefined);
      socket.on('close', () => {
        clearTimeout(giveUp);
        resolve(Date.now() - started);
      });
    });
  const stalledBody = await closedAfter(
    'POST /api/v1/machines/52-54-00-00-00-01/events?token=x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n',
  );
  t.ok(stalledBody < 5_000, `a body that never comes: closed after ${stalledBody} ms`);
  const idle = await closedAfter('');
  t.ok(idle < 5_000, `a connection that sends nothing: closed after ${idle} ms`);
  const served = await raw(port, { path: '/boot.ipxe' });
  t.equal(served.status, 200, 'others are served meanwhile');
});

t.test('closing the server cuts a download in flight instead of waiting for it, and says so', async (t) => {
  const fixture = await bootFixture();
  const size = 64 * 1024 * 1024;
  const path = join(fixture.dir, 'assets', 'fcos', 'rootfs-big.img');
  writeFileSync(path, '');
  truncateSync(path, size);
  const app = await fixtureApp(fixture);
  t.teardown(() => fixture.cleanup());
  await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as AddressInfo).port;
  const response = await new Promise<IncomingMessage>((resolve, reject) =>
    request({ host: '127.0.0.1', port, path: '/assets/fcos/rootfs-big.img' }, resolve)
      .on('error', reject)
      .end(),
  );
  response.pause();
  response.on('error', () => {});
  await new Promise((resolve) => setTimeout(resolve, 200));
  const started = performance.now();
  await app.close();
  const closedMs = performance.now() - started;
  t.ok(closedMs < 3000, `app.close() returned in ${Math.round(closedMs)} ms`);
  response.destroy();
  const download = fixture.events.find(
    (event) => event.type === 'asset-download' && event.detail?.file === 'fcos/rootfs-big.img',
  );
  t.match(download?.detail, { status: 200, outcome: 'client-gone' }, 'recorded as cut');
  t.ok(Number(download?.detail?.bytes) < size, `with the bytes actually sent (${download?.detail?.bytes})`);
});

t.test('a rack downloading at once: no MaxListenersExceededWarning from the close signal', async (t) => {
  // Every download listens to the server's close signal while it runs; Node warns at 11 listeners.
  const fixture = await bootFixture();
  const path = join(fixture.dir, 'assets', 'fcos', 'rootfs-rack.img');
  writeFileSync(path, '');
  truncateSync(path, 64 * 1024 * 1024);
  const port = await listening(t, fixture);
  const warnings: Error[] = [];
  const onWarning = (warning: Error) => warnings.push(warning);
  process.on('warning', onWarning);
  t.teardown(() => process.off('warning', onWarning));
  const downloads = await Promise.all(
    Array.from(
      { length: 12 },
      () =>
        new Promise<IncomingMessage>((resolve, reject) =>
          request({ host: '127.0.0.1', port, path: '/assets/fcos/rootfs-rack.img' }, resolve)
            .on('error', reject)
            .end(),
        ),
    ),
  );
  // Each has its first bytes: all twelve transfers are in progress together.
  await Promise.all(downloads.map((response) => new Promise((resolve) => response.once('data', resolve))));
  for (const response of downloads) response.pause();
  await new Promise((resolve) => setImmediate(resolve));
  t.same(
    warnings
      .filter((warning) => warning.name === 'MaxListenersExceededWarning')
      .map((warning) => warning.message),
    [],
  );
  for (const response of downloads) {
    response.on('error', () => {});
    response.destroy();
  }
});
