import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import {
  closeSync,
  openSync,
  readdirSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { createServer, get, type IncomingMessage, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import {
  ChunkPool,
  FILE_CHUNK_BYTES,
  type FileRangeResult,
  openAsDecided,
  sendFileRange,
  transfersController,
} from '../src/http/file-range.js';

/** A file whose every 4-byte word holds its own index, so a byte from the wrong place shows. */
function patternedFile(path: string, bytes: number): Buffer {
  const content = Buffer.alloc(bytes);
  for (let offset = 0; offset + 4 <= bytes; offset += 4) content.writeUInt32BE(offset / 4, offset);
  writeFileSync(path, content);
  return content;
}

/** A file of `bytes` zeros that takes no disk space. */
function sparseFile(path: string, bytes: number): string {
  writeFileSync(path, '');
  truncateSync(path, bytes);
  return path;
}

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** A server whose every request is answered with `range` of `path`; each transfer's result is kept. */
async function rangeServer(
  t: Test,
  path: string,
  range: { start: number; length: number },
  chunks = new ChunkPool(),
) {
  const results: Promise<FileRangeResult>[] = [];
  const closing = transfersController();
  const server: Server = createServer((_request, response) => {
    const result = openAsDecided(dirname(path), path, statSync(path)).then((file) => {
      if (typeof file === 'string') throw new Error(`fixture file ${file}`);
      return sendFileRange(response, {
        file,
        ...range,
        status: 200,
        headers: { 'content-length': range.length },
        abort: closing.signal,
        chunks,
      });
    });
    void result.then((sent) => sent.outcome !== 'complete' && response.destroy());
    results.push(result);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { port: (server.address() as AddressInfo).port, results, closing };
}

function request(port: number): Promise<IncomingMessage> {
  return new Promise((resolve, reject) =>
    get({ host: '127.0.0.1', port, path: '/' }, resolve).on('error', reject),
  );
}

/**
 * Reads the whole body slowly: paused for a while at the start and every 64 chunks, so the
 * server's writes queue up in the socket. A buffer reused before its bytes had left would show.
 */
async function readSlowly(response: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  response.pause();
  await sleep(300);
  let seen = 0;
  for await (const chunk of response) {
    chunks.push(chunk as Buffer);
    seen += 1;
    if (seen % 64 === 0) await sleep(20);
  }
  return Buffer.concat(chunks);
}

/** This process's open descriptors on `path`. */
const descriptorsOn = (path: string) =>
  readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(join('/proc/self/fd', fd)) === path;
    } catch {
      return false;
    }
  }).length;

t.test(
  'a slow reader gets exactly the bytes asked for, whole file and a range off chunk bounds',
  async (t) => {
    const path = join(t.testdir(), 'patterned.img');
    // Larger than what loopback's socket buffers hold, so writes queue behind the paused reader.
    const content = patternedFile(path, 40 * FILE_CHUNK_BYTES + 123);
    for (const range of [
      { start: 0, length: content.length },
      { start: FILE_CHUNK_BYTES + 3, length: 30 * FILE_CHUNK_BYTES + 5 },
      { start: 10, length: 1 },
    ]) {
      const { port, results } = await rangeServer(t, path, range);
      const body = await readSlowly(await request(port));
      t.equal(body.length, range.length, `${range.start}+${range.length}: length`);
      t.equal(
        sha256(body),
        sha256(content.subarray(range.start, range.start + range.length)),
        `${range.start}+${range.length}: byte-exact`,
      );
      t.same(await results[0], { outcome: 'complete', bytesSent: range.length });
    }
    t.equal(descriptorsOn(path), 0, 'the file is closed after each transfer');
  },
);

t.test('a client that hangs up mid-transfer ends it and the file is closed', async (t) => {
  const path = sparseFile(join(t.testdir(), 'big.img'), 32 * FILE_CHUNK_BYTES);
  const { port, results } = await rangeServer(t, path, { start: 0, length: 32 * FILE_CHUNK_BYTES });
  const response = await request(port);
  await new Promise((resolve) => response.once('data', resolve));
  response.destroy();
  t.equal((await results[0])?.outcome, 'client-gone');
  t.equal(descriptorsOn(path), 0, 'no descriptor left open');
});

/**
 * Starts sending the `length` bytes of `path` to a paused client, changes the file with `change`,
 * then reads on: the transfer must end as `outcome`, the client with a cut connection.
 */
async function changedWhileSent(
  t: Test,
  path: string,
  length: number,
  change: () => void,
  outcome: FileRangeResult['outcome'],
) {
  const { port, results } = await rangeServer(t, path, { start: 0, length });
  const response = await request(port);
  response.pause();
  await sleep(200);
  change();
  let received = 0;
  const ended = await new Promise<string>((resolve) => {
    response.on('data', (chunk: Buffer) => {
      received += chunk.length;
    });
    response.on('end', () => resolve('end'));
    response.on('aborted', () => resolve('aborted'));
    response.on('error', () => resolve('error'));
    response.resume();
  });
  t.equal((await results[0])?.outcome, outcome);
  t.not(ended, 'end', `the client sees a cut connection (${ended})`);
  t.ok(received < length, `fewer bytes than Content-Length arrived (${received} of ${length})`);
  t.equal(descriptorsOn(path), 0, 'the file is closed');
}

// Far more than loopback's socket buffers take in while the client is paused.
const CHANGED_LENGTH = 64 * FILE_CHUNK_BYTES;

t.test('a file shortened while it is sent cuts the response short instead of ending it', async (t) => {
  const path = sparseFile(join(t.testdir(), 'shrinking.img'), CHANGED_LENGTH);
  await changedWhileSent(
    t,
    path,
    CHANGED_LENGTH,
    () => truncateSync(path, FILE_CHUNK_BYTES),
    'file-shortened',
  );
});

t.test('a file written in place while it is sent cuts the response short, not "complete"', async (t) => {
  const path = join(t.testdir(), 'rewritten.img');
  patternedFile(path, CHANGED_LENGTH);
  // What `dd conv=notrunc` or `rsync --inplace` does: same size, other bytes, further on. Once, the
  // download went on to the end: part old bytes, part new, and "complete".
  const rewrite = () => {
    const writer = openSync(path, 'r+');
    writeSync(writer, Buffer.alloc(FILE_CHUNK_BYTES, 0xee), 0, FILE_CHUNK_BYTES, 40 * FILE_CHUNK_BYTES);
    closeSync(writer);
  };
  await changedWhileSent(t, path, CHANGED_LENGTH, rewrite, 'file-changed');
});

t.test('a pipelined request queued behind another ends with its connection, file closed', async (t) => {
  const path = sparseFile(join(t.testdir(), 'pipelined.img'), 32 * FILE_CHUNK_BYTES);
  const { port, results } = await rangeServer(t, path, { start: 0, length: 32 * FILE_CHUNK_BYTES });
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(3));
  await once(socket, 'data');
  socket.pause();
  for (let waited = 0; results.length < 3 && waited < 50; waited += 1) await sleep(20);
  t.equal(results.length, 3, 'all three requests reached the server');
  socket.destroy();
  const ended = await Promise.race([
    Promise.all(results).then((all) => all.map((result) => result.outcome)),
    sleep(5000).then(() => 'still running after 5 s'),
  ]);
  t.same(ended, ['client-gone', 'client-gone', 'client-gone']);
  t.equal(descriptorsOn(path), 0, 'no descriptor left open');
});

t.test('aborting (the server closing) ends a transfer the client stopped reading', async (t) => {
  const path = sparseFile(join(t.testdir(), 'stalled.img'), 32 * FILE_CHUNK_BYTES);
  const { port, results, closing } = await rangeServer(t, path, { start: 0, length: 32 * FILE_CHUNK_BYTES });
  const response = await request(port);
  response.pause();
  await sleep(200);
  closing.abort();
  const ended = await Promise.race([results[0], sleep(5000).then(() => undefined)]);
  t.equal(ended?.outcome, 'client-gone');
  t.ok((ended?.bytesSent ?? 0) < 32 * FILE_CHUNK_BYTES, `cut short (${ended?.bytesSent} bytes sent)`);
  response.destroy();
  t.equal(descriptorsOn(path), 0, 'no descriptor left open');
});

t.test("stalled readers hold at most the pool's large chunks, whatever their number", async (t) => {
  // Before the pool each download held two 1 MiB buffers of its own: 24 stalled readers, 48 MiB.
  const length = 32 * FILE_CHUNK_BYTES;
  const path = sparseFile(join(t.testdir(), 'storm.img'), length);
  const chunks = new ChunkPool(2);
  const { port, results } = await rangeServer(t, path, { start: 0, length }, chunks);
  const readers = 24;
  const before = process.memoryUsage().arrayBuffers;
  const responses = await Promise.all(Array.from({ length: readers }, () => request(port)));
  await Promise.all(responses.map((response) => new Promise((resolve) => response.once('data', resolve))));
  for (const response of responses) response.pause();
  // Long enough for every transfer to fill its socket and stall on a pending write.
  await sleep(500);
  const grownMiB = (process.memoryUsage().arrayBuffers - before) / 2 ** 20;
  t.ok(chunks.lent <= 2, `large chunks lent: ${chunks.lent} of 2`);
  t.ok(grownMiB < 16, `buffers grew by ${grownMiB.toFixed(1)} MiB for ${readers} stalled readers`);
  for (const response of responses) response.destroy();
  const outcomes = await Promise.all(results);
  t.same(new Set(outcomes.map((result) => result.outcome)), new Set(['client-gone']));
  t.equal(chunks.lent, 0, 'every chunk is given back or forgotten once the downloads end');
});

t.test('the pool reuses its free chunks, and lets them go once idle', async (t) => {
  // Before, the free chunks went whenever nothing was lent for a moment, which a single download
  // hits between its reads: a fresh 1 MiB allocation per read again.
  const chunks = new ChunkPool(2, 1024, 50);
  const first = chunks.take();
  if (!first) throw new Error('the pool lends its first chunk');
  chunks.give(first);
  t.equal(chunks.take(), first, 'the chunk given back is the next one lent');
  chunks.give(first);
  await sleep(120);
  t.not(chunks.take(), first, 'after the idle time the pool made a new one');
});

t.test('downloads beyond the pool still deliver every byte, through their small chunks', async (t) => {
  const path = join(t.testdir(), 'patterned.img');
  const content = patternedFile(path, 6 * FILE_CHUNK_BYTES + 77);
  const chunks = new ChunkPool(1);
  const { port, results } = await rangeServer(t, path, { start: 0, length: content.length }, chunks);
  const bodies = await Promise.all(Array.from({ length: 3 }, async () => readSlowly(await request(port))));
  for (const body of bodies) t.equal(sha256(body), sha256(content), 'byte-exact');
  t.same(
    (await Promise.all(results)).map((result) => result.outcome),
    ['complete', 'complete', 'complete'],
  );
  t.equal(chunks.lent, 0, 'the chunk is back in the pool');
});

t.test('openAsDecided: a symlink out of the root swapped in after the check is not followed', async (t) => {
  const dir = t.testdir({ assets: { sub: {} }, outside: {} });
  const root = join(dir, 'assets');
  const outside = join(dir, 'outside');
  writeFileSync(join(outside, 'secret.img'), 'outside the root');
  // The route checked the path inside the root; then someone who can write under it swapped a
  // symlink in, at the file or at a directory on its path, before send's stat, which follows it as
  // the open does: the stat and the descriptor agree, and only the descriptor's real path tells.
  symlinkSync(join(outside, 'secret.img'), join(root, 'asset.img'));
  rmSync(join(root, 'sub'), { recursive: true });
  symlinkSync(outside, join(root, 'sub'));
  for (const path of [join(root, 'asset.img'), join(root, 'sub', 'secret.img')]) {
    t.equal(await openAsDecided(root, path, statSync(path)), 'outside-root', path);
    t.equal(descriptorsOn(join(outside, 'secret.img')), 0, 'nothing left open');
  }
  // A symlink inside the root is served, as the route's own check allows.
  writeFileSync(join(root, 'real.img'), 'inside');
  symlinkSync(join(root, 'real.img'), join(root, 'alias.img'));
  const alias = await openAsDecided(root, join(root, 'alias.img'), statSync(join(root, 'alias.img')));
  t.not(typeof alias, 'string', 'a link within the root opens');
  if (typeof alias !== 'string') await alias.file.close();
});

t.test(
  'openAsDecided: the same file opens; one renamed over it or a FIFO in its place does not',
  async (t) => {
    const dir = t.testdir();
    const path = join(dir, 'asset.img');
    writeFileSync(path, 'first version');
    const decided = statSync(path);
    const same = await openAsDecided(dir, path, decided);
    t.not(typeof same, 'string', 'unchanged: opened');
    if (typeof same !== 'string') await same.file.close();
    writeFileSync(join(dir, 'next.img'), 'second version');
    renameSync(join(dir, 'next.img'), path);
    t.equal(
      await openAsDecided(dir, path, decided),
      'changed',
      'renamed over: not sent under the old headers',
    );
    rmSync(path);
    execFileSync('mkfifo', [path]);
    const started = performance.now();
    t.equal(await openAsDecided(dir, path, decided), 'not-a-file', 'a FIFO is refused');
    t.ok(performance.now() - started < 1000, 'without waiting for a writer');
    t.equal(descriptorsOn(path), 0, 'nothing left open');
  },
);
