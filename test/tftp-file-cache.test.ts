import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { FileCache } from '../src/tftp/file-cache.js';

t.test('a netascii encoding that grows past the capacity evicts at once, not at the next open', async (t) => {
  const directory = await mkdtemp(join(tmpdir(), 'rackboot-file-cache-'));
  t.teardown(() => rm(directory, { recursive: true, force: true }));
  const octet = { path: join(directory, 'a.bin'), size: 300, version: '1' };
  const text = { path: join(directory, 'b.txt'), size: 600, version: '1' };
  await writeFile(octet.path, Buffer.alloc(300, 0x41));
  // 300 + 600 fit the capacity as counted up front; every byte a line end, netascii doubles the
  // second to 1,200.
  await writeFile(text.path, Buffer.alloc(600, 0x0a));
  const cache = new FileCache({ maxFileBytes: 1000, capacityBytes: 1000, readAheadBytes: 4096 });
  await cache.open(octet, 'octet');
  t.equal(cache.bytes, 300);
  const source = await cache.open(text, 'netascii');
  t.equal(source.size, 1200, 'the encoded size is what the transfer sends');
  t.equal(cache.bytes, 1200, 'the octet file was evicted; the one file left may exceed the capacity alone');
});
