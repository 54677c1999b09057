import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, open, rename, rm, symlink, truncate, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { FileChangedError } from '../src/file-change.js';
import { CacheFullError, FileCache, type PayloadSource } from '../src/tftp/file-cache.js';
import { resolveServedFile } from '../src/tftp/paths.js';

const MiB = 1 << 20;

async function scratchDirectory(t: Test): Promise<string> {
  const directory = await mkdtemp(join(tmpdir(), 'rackboot-file-cache-'));
  t.teardown(() => rm(directory, { recursive: true, force: true }));
  return directory;
}

/** A file of `size` bytes, each `fill`. */
async function filledFile(directory: string, name: string, size: number, fill: number) {
  const path = join(directory, name);
  await writeFile(path, Buffer.alloc(size, fill));
  return { path, size, version: '1' };
}

t.test('several cache-sized files held by live transfers stay within the capacity', async (t) => {
  const directory = await scratchDirectory(t);
  const files = [
    await filledFile(directory, '0.bin', MiB, 0),
    await filledFile(directory, '1.bin', MiB, 1),
    await filledFile(directory, '2.bin', MiB, 2),
  ] as const;
  const cache = new FileCache({ maxFileBytes: MiB, capacityBytes: 2 * MiB, readAheadBytes: 4096 });
  // 30 transfers round-robin over three 1 MiB files, all still open, as while a rack boots.
  const held: PayloadSource[] = [];
  for (let round = 0; round < 10; round += 1)
    for (const file of files) held.push(await cache.open(file, 'octet'));
  t.ok(cache.bytes <= 2 * MiB, `cache.bytes ${cache.bytes} within the 2 MiB capacity`);
  const inMemory = new Set<ArrayBufferLike>();
  for (const [index, source] of held.entries()) {
    const first = source.read(0, 1);
    // A cached file is a synchronous slice of its one shared buffer; the others come from disk.
    if (Buffer.isBuffer(first)) inMemory.add(first.buffer);
    const last = await source.read(MiB - 4096, 4096);
    t.ok(last.equals(Buffer.alloc(4096, index % 3)), `transfer ${index} reads its own file`);
  }
  const heldBytes = [...inMemory].reduce((sum, buffer) => sum + buffer.byteLength, 0);
  t.ok(heldBytes <= 2 * MiB, `${inMemory.size} file buffers held, ${heldBytes} bytes: within the capacity`);

  for (const source of held) source.close();
  // The third file found the first two in use and streamed; with them closed it is cached.
  const reopened = await cache.open(files[2], 'octet');
  t.ok(Buffer.isBuffer(reopened.read(0, 1)), 'once the transfers end, the streamed file is cached');
  t.ok(cache.bytes <= 2 * MiB);
});

t.test('netascii needs room for its encoding: refused while open transfers fill the cache', async (t) => {
  const directory = await scratchDirectory(t);
  const octet = await filledFile(directory, 'a.bin', 600, 0x41);
  const text = await filledFile(directory, 'b.txt', 600, 0x42);
  const cache = new FileCache({ maxFileBytes: 1000, capacityBytes: 2000, readAheadBytes: 4096 });
  const open = await cache.open(octet, 'octet');
  // 600 in use, and the encoding may need twice the file's 600 bytes: 1800 fits in 2000.
  const encoded = await cache.open(text, 'netascii');
  t.equal(cache.bytes, 1200, 'counted at its encoded length once encoded (no line ends here)');
  encoded.close();
  const second = { ...text, version: '2' };
  const withBoth = await cache.open(second, 'netascii');
  t.equal(cache.bytes, 1200, 'the unused encoding was evicted for the new version');
  const refusal = await cache.open({ ...text, version: '3' }, 'netascii').catch((error: unknown) => error);
  t.type(refusal, CacheFullError, 'both entries in use: another 1200 reserved would pass 2000');
  open.close();
  withBoth.close();
  await cache.open({ ...text, version: '3' }, 'netascii');
  t.ok(cache.bytes <= 2000);
});

t.test('a netascii encoding that grows stays within what was reserved for it', async (t) => {
  const directory = await scratchDirectory(t);
  const text = { path: join(directory, 'lines.txt'), size: 600, version: '1' };
  // Every byte a line end: netascii doubles it to 1,200, the most it can grow.
  await writeFile(text.path, Buffer.alloc(600, 0x0a));
  const cache = new FileCache({ maxFileBytes: 1000, capacityBytes: 2000, readAheadBytes: 4096 });
  const source = await cache.open(text, 'netascii');
  t.equal(source.size, 1200, 'the encoded size is what the transfer sends');
  t.equal(cache.bytes, 1200);
});

/** What `promise` rejects with; undefined when it resolves. */
const failure = (promise: Promise<unknown>) =>
  promise.then(
    () => undefined,
    (error: unknown) => error,
  );

t.test('a file that is not the size its stat gave is refused, cached or read from disk', async (t) => {
  const directory = await scratchDirectory(t);
  const small = await filledFile(directory, 'small.bin', 1000, 1);
  const large = await filledFile(directory, 'large.bin', 3 * MiB, 2);
  const cache = new FileCache({ maxFileBytes: MiB, capacityBytes: 2 * MiB, readAheadBytes: 64 * 1024 });
  // Rewritten between the stat and the open (cp over an initrd): it grew past what the cache checked.
  await writeFile(small.path, Buffer.alloc(50_000, 3));
  t.type(await failure(cache.open(small, 'octet')), FileChangedError, 'cached path');
  t.equal(cache.bytes, 0, 'nothing of it is held');
  await writeFile(large.path, Buffer.alloc(2 * MiB, 4));
  t.type(await failure(cache.open(large, 'octet')), FileChangedError, 'disk path');
});

// rm then cp (not a rename over it) while a machine asks: the retry gets what is there then. A FIFO
// in its place: refused, not opened for good.
for (const swap of ['removed', 'swapped for a FIFO'] as const)
  t.test(`a file ${swap} after its check is refused as changed, cached or read from disk`, async (t) => {
    const directory = await scratchDirectory(t);
    const small = await filledFile(directory, 'small.bin', 1000, 1);
    const large = await filledFile(directory, 'large.bin', 3 * MiB, 2);
    const cache = new FileCache({ maxFileBytes: MiB, capacityBytes: 2 * MiB, readAheadBytes: 64 * 1024 });
    for (const file of [small, large]) {
      await rm(file.path);
      if (swap === 'swapped for a FIFO') execFileSync('mkfifo', [file.path]);
      t.type(await failure(cache.open(file, 'octet')), FileChangedError, `${file.size} bytes`);
    }
    t.equal(cache.bytes, 0, 'nothing held');
  });

t.test('a symlink out of the root swapped in after the check is refused, not followed', async (t) => {
  const directory = await scratchDirectory(t);
  const root = join(directory, 'assets');
  const outside = join(directory, 'outside');
  await mkdir(join(root, 'sub'), { recursive: true });
  await mkdir(outside);
  const cache = new FileCache({ maxFileBytes: MiB, capacityBytes: 2 * MiB, readAheadBytes: 64 * 1024 });
  for (const [name, size] of [
    ['small.bin', 1000],
    ['large.bin', 3 * MiB],
  ] as const) {
    // Same size as the checked file: open() only saw a regular file of the size the stat gave.
    await writeFile(join(outside, name), Buffer.alloc(size, 0x53));
    await writeFile(join(root, name), Buffer.alloc(size, 1));
    await writeFile(join(root, 'sub', name), Buffer.alloc(size, 2));
    const file = await resolveServedFile(root, name);
    const inSub = await resolveServedFile(root, `sub/${name}`);
    if (!file.ok || !inSub.ok) throw new Error('fixture not served');
    // Someone who can write under the root races a request: the file itself, or a directory on its path.
    await rm(file.path);
    await symlink(join(outside, name), file.path);
    await rename(join(root, 'sub'), join(root, 'sub.old'));
    await symlink(outside, join(root, 'sub'));
    t.type(await failure(cache.open(file, 'octet')), FileChangedError, `${name}: file swapped`);
    t.type(await failure(cache.open(inSub, 'octet')), FileChangedError, `${name}: directory swapped`);
    await rm(join(root, 'sub'));
    await rename(join(root, 'sub.old'), join(root, 'sub'));
  }
  t.equal(cache.bytes, 0, 'nothing of the outside files is held');
});

t.test('a file truncated while it is read from disk fails the read; one read at a time', async (t) => {
  const directory = await scratchDirectory(t);
  const file = await filledFile(directory, 'big.bin', 3 * MiB, 5);
  const chunk = 256 * 1024;
  const cache = new FileCache({ maxFileBytes: MiB, capacityBytes: 2 * MiB, readAheadBytes: chunk });
  const source = await cache.open(file, 'octet');
  const first = await source.read(0, 1468);
  t.ok(first.equals(Buffer.alloc(1468, 5)));
  // A retransmission asks again while the disk is still reading: both get the one read's bytes.
  const reads = [source.read(chunk, 1468), source.read(chunk, 1468), source.read(chunk + 1468, 1468)];
  t.ok(reads.every((read) => read instanceof Promise));
  const [a, b, c] = await Promise.all(reads);
  t.ok(a?.equals(Buffer.alloc(1468, 5)) && b?.equals(a) && c?.equals(a), 'the same bytes for each');
  await truncate(file.path, 300_000);
  t.type(
    await failure(Promise.resolve().then(() => source.read(2 * MiB, 1468))),
    FileChangedError,
    'past the new end',
  );
  source.close();
});

t.test(
  'a file rewritten in place while read from disk fails the next chunk, mtime put back or not',
  async (t) => {
    const directory = await scratchDirectory(t);
    const chunk = 256 * 1024;
    const cache = new FileCache({ maxFileBytes: MiB, capacityBytes: 2 * MiB, readAheadBytes: chunk });
    for (const keepMtime of [false, true]) {
      const file = await filledFile(directory, `big-${keepMtime}.bin`, 3 * MiB, 5);
      // Whole seconds, so putting the mtime back restores it to the nanosecond.
      const mtime = 1_700_000_000;
      await utimes(file.path, mtime, mtime);
      const source = await cache.open(file, 'octet');
      t.ok((await source.read(0, 1468)).equals(Buffer.alloc(1468, 5)));
      // Same size, every read full-length: only the descriptor's times tell.
      const handle = await open(file.path, 'r+');
      await handle.write(Buffer.alloc(3 * MiB, 6), 0, 3 * MiB, 0);
      await handle.close();
      if (keepMtime) await utimes(file.path, mtime, mtime);
      t.ok(
        (await source.read(1468, 1468)).equals(Buffer.alloc(1468, 5)),
        'the chunk read before still serves',
      );
      t.type(
        await failure(Promise.resolve().then(() => source.read(chunk, 1468))),
        FileChangedError,
        keepMtime ? 'mtime put back: ctime tells' : 'mtime moved',
      );
      source.close();
    }
  },
);

t.test('a file renamed over while read from disk is sent on whole: the open one is intact', async (t) => {
  const directory = await scratchDirectory(t);
  const chunk = 256 * 1024;
  const cache = new FileCache({ maxFileBytes: MiB, capacityBytes: 2 * MiB, readAheadBytes: chunk });
  const file = await filledFile(directory, 'big.bin', 3 * MiB, 5);
  const source = await cache.open(file, 'octet');
  await source.read(0, 1468);
  // The atomic replace: the old file loses its last link (its ctime moves), its bytes stay.
  const replacement = await filledFile(directory, 'big.bin.new', 3 * MiB, 6);
  await rename(replacement.path, file.path);
  t.ok((await source.read(chunk, 1468)).equals(Buffer.alloc(1468, 5)), 'the old bytes');
  t.ok((await source.read(3 * MiB - 1468, 1468)).equals(Buffer.alloc(1468, 5)), 'to the end');
  source.close();
});
