import { createHash } from 'node:crypto';
import { readdirSync, readlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { createServer, get, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { FILE_CHUNK_BYTES, type FileRangeOutcome, sendFileRange } from '../src/http/file-range.js';

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

/** A server whose every request is answered with `range` of `path`; each transfer's outcome is kept. */
async function rangeServer(t: Test, path: string, range: { start: number; length: number }) {
  const outcomes: Promise<FileRangeOutcome>[] = [];
  const server: Server = createServer((_request, response) => {
    response.writeHead(200, { 'content-length': range.length });
    const outcome = open(path, 'r').then((file) =>
      sendFileRange(response, file, path, range.start, range.length),
    );
    outcome.catch(() => response.destroy());
    outcomes.push(outcome);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { port: (server.address() as AddressInfo).port, outcomes };
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
      const { port, outcomes } = await rangeServer(t, path, range);
      const body = await readSlowly(await request(port));
      t.equal(body.length, range.length, `${range.start}+${range.length}: length`);
      t.equal(
        sha256(body),
        sha256(content.subarray(range.start, range.start + range.length)),
        `${range.start}+${range.length}: byte-exact`,
      );
      t.equal(await outcomes[0], 'complete');
    }
    t.equal(descriptorsOn(path), 0, 'the file is closed after each transfer');
  },
);

t.test('a client that hangs up mid-transfer ends it and the file is closed', async (t) => {
  const path = sparseFile(join(t.testdir(), 'big.img'), 32 * FILE_CHUNK_BYTES);
  const { port, outcomes } = await rangeServer(t, path, { start: 0, length: 32 * FILE_CHUNK_BYTES });
  const response = await request(port);
  await new Promise((resolve) => response.once('data', resolve));
  response.destroy();
  t.equal(await outcomes[0], 'client-gone');
  t.equal(descriptorsOn(path), 0, 'no descriptor left open');
});

t.test('a file shortened while it is sent cuts the response short instead of ending it', async (t) => {
  // Far more than loopback's socket buffers take in while the client is paused.
  const length = 64 * FILE_CHUNK_BYTES;
  const path = sparseFile(join(t.testdir(), 'shrinking.img'), length);
  const { port, outcomes } = await rangeServer(t, path, { start: 0, length });
  const response = await request(port);
  response.pause();
  await sleep(200);
  truncateSync(path, FILE_CHUNK_BYTES);
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
  await t.rejects(outcomes[0] as Promise<FileRangeOutcome>, /shortened while being sent/);
  t.not(ended, 'end', `the client sees a cut connection (${ended})`);
  t.ok(received < length, `fewer bytes than Content-Length arrived (${received} of ${length})`);
  t.equal(descriptorsOn(path), 0, 'the file is closed');
});
