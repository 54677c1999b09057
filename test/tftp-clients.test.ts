import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { requireTools } from './helpers/netns.js';
import { CLIENT_KINDS, type ClientKind, fetchWith, sha256, sha256OfFile } from './tftp/clients.js';
import { createAssets, startTestServer } from './tftp/harness.js';

// Real clients (curl, tftp-hpa, atftp) against the server on loopback.

await requireTools('curl', 'tftp', 'atftp');
const assets = await createAssets({ withForty: true });
const downloads = await mkdtemp(join(tmpdir(), 'rackboot-tftp-out-'));
const running = await startTestServer(assets.root, { tftp: { max_transfers_per_client: 64 } });
t.teardown(async () => {
  await running.server.close();
  await assets.remove();
  await rm(downloads, { recursive: true, force: true });
});
const host = '127.0.0.1';
const { port } = running;
let sequence = 0;
const fetchTo = async (kind: ClientKind, file: string) => {
  sequence += 1;
  const output = join(downloads, `${sequence}-${kind}`);
  await fetchWith(kind, { host, port, file, output });
  return sha256OfFile(output);
};

t.test('each client fetches 1 MiB byte-exact', async (t) => {
  const expected = sha256(assets.files.one.content);
  for (const kind of CLIENT_KINDS) t.equal(await fetchTo(kind, 'one.bin'), expected, kind);
});

t.test('each client fetches 40 MiB byte-exact (512-byte blocks wrap past 65535)', async (t) => {
  const expected = sha256(assets.files.forty.content);
  const hashes = await Promise.all(CLIENT_KINDS.map((kind) => fetchTo(kind, 'forty.bin')));
  t.same(
    hashes,
    CLIENT_KINDS.map(() => expected),
    CLIENT_KINDS.join(', '),
  );
  await running.waitForEvents(
    (events) => events.filter((event) => event.detail?.file === 'forty.bin').length === 4,
  );
  const fortyEvents = running.events.filter((event) => event.detail?.file === 'forty.bin');
  t.same(
    fortyEvents.map((event) => [event.detail?.outcome, event.detail?.bytes]),
    CLIENT_KINDS.map(() => ['complete', 40 << 20]),
  );
});

t.test('an exact multiple of the block size ends with an empty block; empty files work', async (t) => {
  for (const kind of CLIENT_KINDS) {
    t.equal(await fetchTo(kind, 'sub/exact.bin'), sha256(assets.files.exactBlocks.content), `${kind} exact`);
  }
  // curl fails on an empty TFTP file against every server (in.tftpd too): it is left out here.
  for (const kind of ['tftp-hpa', 'atftp'] as const) {
    t.equal(await fetchTo(kind, 'empty.bin'), sha256(Buffer.alloc(0)), `${kind} empty`);
  }
});

t.test('50 concurrent clients all complete byte-exact', async (t) => {
  const expected = sha256(assets.files.one.content);
  const kinds = Array.from({ length: 50 }, (_, index) => CLIENT_KINDS[index % CLIENT_KINDS.length] ?? 'curl');
  const hashes = await Promise.all(kinds.map((kind) => fetchTo(kind, 'one.bin')));
  t.equal(hashes.filter((hash) => hash === expected).length, 50);
  await running.waitForStats((stats) => stats.activeTransfers === 0);
  t.equal(running.server.stats().transfers.timeout, 0, 'no transfer timed out');
});
