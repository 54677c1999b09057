import { spawnSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import t from 'tap';
import type { MachineEventInput } from '../src/lifecycle/events.js';
import { startTftpServer } from '../src/tftp/server.js';
import { waitUntil } from './helpers/poll.js';
import { loadTestConfig } from './tftp/harness.js';
import { ackPacket, blockOf, errorText, opcodeOf, rrq, udpPeer } from './tftp/udp.js';

// A disk read that never returns (a dead NFS server) must not hold its transfer, and its place under
// max_transfers, for ever. The hang is real: every thread of libuv's pool, which does the server's
// file reads, is kept busy opening a FIFO nobody writes to, so the next chunk's read never starts.

const THREADPOOL_SIZE = Number(process.env.UV_THREADPOOL_SIZE ?? 4);

t.test('a window whose disk read hangs is aborted after diskReadLimitMs, freeing its place', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'rackboot-tftp-stall-'));
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  const root = join(base, 'assets');
  spawnSync('mkdir', [root]);
  // Over the cache's 16 MiB per-file limit: streamed from disk, 256 KiB at a time.
  writeFileSync(join(root, 'big.img'), Buffer.alloc(17 << 20, 7));
  const config = await loadTestConfig(root);
  const events: MachineEventInput[] = [];
  const server = await startTftpServer({
    config: () => config,
    record: async (event) => {
      events.push(event);
    },
    logger: pino({ level: 'silent' }),
    macForIp: () => undefined,
    diskReadLimitMs: 1500,
  });
  t.teardown(() => server.close());
  const port = server.address().port;

  const client = await udpPeer();
  t.teardown(() => client.close());
  client.send(rrq('big.img'), port);
  const first = await client.next();
  t.equal(blockOf(first.message), 1, 'DATA 1 came from the first chunk read');

  // From now on no file operation of this process starts until the FIFOs get a writer.
  const fifos = Array.from({ length: THREADPOOL_SIZE }, (_, index) => join(base, `fifo-${index}`));
  for (const fifo of fifos) spawnSync('mkfifo', [fifo]);
  const blockedOpens = fifos.map((fifo) => open(fifo, 'r'));
  t.teardown(async () => {
    // A writer that does not wait (O_NONBLOCK) lets each blocked open return; nothing here needs the pool.
    for (const fifo of fifos) closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
    for (const opened of await Promise.all(blockedOpens)) await opened.close();
  });

  // Blocks 1..512 are the first 256 KiB chunk, in memory; DATA 513 needs the next read, which hangs.
  // A DATA the server resent while this test was slow (making the FIFOs on a loaded host) arrives
  // twice: only the next block in order is acknowledged, and a repeat is read past.
  let acknowledged = 0;
  for (let last = first.message; opcodeOf(last) === 3; last = (await client.next()).message) {
    if (blockOf(last) !== acknowledged + 1) continue;
    acknowledged += 1;
    client.send(ackPacket(acknowledged), first.from.port);
    if (acknowledged === 512) break;
  }
  t.equal(acknowledged, 512, 'the client acknowledged the whole first chunk');
  const waitStarted = performance.now();
  let ended = await client.next(10_000);
  while (opcodeOf(ended.message) === 3 && blockOf(ended.message) <= 512) ended = await client.next(10_000);
  const waitedMs = performance.now() - waitStarted;
  t.equal(opcodeOf(ended.message), 5, 'the client is told with an ERROR, not left to time out');
  t.equal(errorText(ended.message), 'Read error');
  t.ok(waitedMs >= 1000 && waitedMs < 6000, `ended after the limit, not before (${Math.round(waitedMs)} ms)`);
  t.ok(
    await waitUntil(() => server.stats().activeTransfers === 0, 5000, 20),
    'the transfer no longer counts under max_transfers',
  );
  t.match(
    events.find((event) => event.type === 'tftp-transfer'),
    { detail: { file: 'big.img', outcome: 'aborted', reason: 'read-stalled', bytes: 512 * 512 } },
    'the event says why it ended',
  );
  t.equal(server.stats().errors.io, 1, 'counted as an I/O error');
});
