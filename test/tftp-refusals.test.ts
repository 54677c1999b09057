import { chmod, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import type { MachineEventInput } from '../src/lifecycle/events.js';
import { refusalLimiter } from '../src/rate-limit.js';
import { startTftpServer } from '../src/tftp/server.js';
import { waitUntil } from './helpers/poll.js';
import { createAssets, loadTestConfig } from './tftp/harness.js';
import { blockOf, opcodeOf, rrq, udpPeer } from './tftp/udp.js';

const NOBODY = 65534;

// A client, or a flood, asking again and again for what is refused: each (client IP, file, reason)
// is recorded and logged once per 10 s, the rest counted, so the event history keeps real machines.

/** A TFTP server on loopback whose events and (info-level) log lines the test reads; closed at teardown. */
async function startServer(t: Test) {
  const assets = await createAssets();
  const config = await loadTestConfig(assets.root);
  const events: MachineEventInput[] = [];
  const logLines: Record<string, unknown>[] = [];
  const server = await startTftpServer({
    config: () => config,
    record: async (event) => {
      events.push(event);
    },
    logger: pino({ level: 'info' }, { write: (line: string) => logLines.push(JSON.parse(line)) }),
    macForIp: () => undefined,
  });
  t.teardown(async () => {
    await server.close();
    await assets.remove();
  });
  return { server, port: server.address().port, events, logLines, root: assets.root };
}

t.test(
  'repeated refusals from many ports of one client: one event, one log line, the rest counted',
  async (t) => {
    const { server, port, events, logLines } = await startServer(t);
    const ask = async (file: string) => {
      const peer = await udpPeer();
      peer.send(rrq(file), port);
      const { message } = await peer.next();
      await peer.close();
      return message;
    };
    const before = server.stats();
    for (let client = 0; client < 40; client += 1) {
      const reply = await ask('missing.bin');
      t.equal(opcodeOf(reply), 5, 'each still gets its ERROR');
      t.equal(blockOf(reply), 1, 'File not found');
    }
    await ask('other-missing.bin');
    await ask('../secret.txt');
    const refusedEvents = () => events.filter((event) => event.detail?.outcome === 'refused');
    await waitUntil(() => refusedEvents().length >= 3, 3000, 10);
    t.same(
      refusedEvents().map((event) => [event.detail?.file, event.detail?.reason]),
      [
        ['missing.bin', 'not-found'],
        ['other-missing.bin', 'not-found'],
        ['../secret.txt', 'parent-segment'],
      ],
      'one event per file and reason',
    );
    const refusedLines = logLines.filter((line) => line.msg === 'tftp request refused');
    t.equal(refusedLines.length, 3, 'one log line each');
    const stats = server.stats();
    t.equal(stats.transfers.refused - before.transfers.refused, 42, 'every refusal counted');
    t.equal(stats.refusalsSuppressed - before.refusalsSuppressed, 39, 'the repeats counted as suppressed');
  },
);

t.test(
  'an unreadable file is refused with its errno, recorded and logged once like any refusal',
  { skip: process.getuid?.() === 0 ? false : 'needs root: serves as nobody to make a file unreadable' },
  async (t) => {
    const { server, port, events, logLines, root } = await startServer(t);
    // Nobody may reach the root, but not read this file: a kernel left 0600 by a fetch run as root.
    await chmod(dirname(root), 0o755);
    await writeFile(join(root, 'unreadable.bin'), 'kernel', { mode: 0o600 });
    const before = server.stats();
    const replies: Buffer[] = [];
    process.seteuid?.(NOBODY);
    try {
      for (let attempt = 0; attempt < 10; attempt += 1) {
        const peer = await udpPeer();
        peer.send(rrq('unreadable.bin'), port);
        replies.push((await peer.next()).message);
        await peer.close();
      }
    } finally {
      process.seteuid?.(0);
    }
    t.same(
      replies.map((reply) => [opcodeOf(reply), blockOf(reply)]),
      Array(10).fill([5, 2]),
      'each gets Access violation',
    );
    await waitUntil(() => events.length >= 1, 3000, 10);
    t.same(
      events.map((event) => [event.detail?.file, event.detail?.reason]),
      [['unreadable.bin', 'unreadable:EACCES']],
      'one event, naming the errno as an unreadable directory does',
    );
    t.same(
      logLines.filter((line) => line.msg !== 'tftp listening').map((line) => line.msg),
      ['tftp request refused'],
      'one log line, no warning per request',
    );
    t.equal(server.stats().refusalsSuppressed - before.refusalsSuppressed, 9);
  },
);

t.test('a key is recorded again after the interval, carrying how many were suppressed', async (t) => {
  const recordable = refusalLimiter(10_000, 4);
  const always = () => true;
  t.same(recordable('a', 0, always), {}, 'the first is recorded');
  t.equal(recordable('a', 1000, always), undefined);
  t.equal(recordable('a', 9999, always), undefined);
  t.same(recordable('b', 9999, always), {}, 'another key is its own');
  t.same(recordable('a', 10_000, always), { suppressed: 2 }, 'recorded again with the two suppressed since');
  t.equal(recordable('a', 10_001, always), undefined);
  t.same(recordable('a', 20_000, always), { suppressed: 1 });
  t.same(recordable('a', 30_000, always), {}, 'nothing suppressed in between: nothing carried');
  t.equal(
    recordable('c', 30_000, () => false),
    undefined,
    'a new key over the budget is not recorded',
  );
  t.same(recordable('c', 30_001, always), { suppressed: 1 }, 'the next one within budget is, carrying it');
  for (const at of [31_000, 32_000]) recordable('c', at, always);
  t.equal(
    recordable('c', 40_001, () => false),
    undefined,
    'over the budget after its interval',
  );
  t.same(
    recordable('c', 40_002, always),
    { suppressed: 3 },
    'the two repeats and the one over the budget are carried',
  );
});

t.test(
  'the repeats of a key dropped from the full memo are carried by the next record of any key',
  async (t) => {
    const recordable = refusalLimiter(10_000, 2);
    const always = () => true;
    recordable('a', 0, always);
    for (const at of [1, 2, 3]) recordable('a', at, always);
    recordable('b', 4, always);
    t.same(
      recordable('c', 5, always),
      { suppressedElsewhere: 3 },
      'the record that drops a counts the three repeats a had left out',
    );
    t.equal(recordable('c', 6, always), undefined);
    t.same(recordable('d', 7, always), {}, 'b, dropped now, had none');
    t.equal(
      recordable('e', 8, () => false),
      undefined,
      'over the budget: dropping c, its repeat is owed',
    );
    t.equal(
      recordable('f', 9, () => false),
      undefined,
      'dropping d',
    );
    t.same(recordable('f', 10, always), { suppressed: 1, suppressedElsewhere: 1 }, "f's own and c's, apart");
    t.same(recordable('g', 11, always), { suppressedElsewhere: 1 }, "e's, owed when it was dropped");
    t.same(recordable('h', 12, always), {}, 'each counted once');
  },
);

t.test(
  'the memo stays bounded, and a full one never silences a new client: the budget does the bounding',
  async (t) => {
    const recordable = refusalLimiter(10_000, 4);
    for (const key of ['a', 'b', 'c', 'd'])
      t.same(
        recordable(key, 0, () => true),
        {},
      );
    // Spoofed sources, each a new key, against a budget of ten records.
    let budget = 10;
    let recorded = 0;
    for (let source = 0; source < 10_000; source += 1)
      if (recordable(`spoofed-${source}`, 5000, () => budget-- > 0) !== undefined) recorded += 1;
    t.equal(recorded, 10, 'as many recorded as the budget allowed, of 10,000');
    t.same(
      recordable('a', 5000, () => true),
      { suppressedElsewhere: 9990 - 3 },
      'a key pushed out by newer ones is recorded as new, counting the refusals over the budget of every key dropped',
    );
    t.equal(
      recordable('a', 5001, () => true),
      undefined,
      'and limited again',
    );
    t.same(
      recordable('machine', 5002, () => true),
      { suppressedElsewhere: 1 },
      'a new client is recorded, the memo full or not',
    );
  },
);

t.test(
  'one host asking for ever new names: its records are budgeted, another host is still recorded',
  async (t) => {
    const { server, port, events } = await startServer(t);
    const flooder = await udpPeer('127.0.0.1');
    const other = await udpPeer('127.0.0.2');
    // Write requests: refused at once, whatever the per-client transfer limit.
    for (let batch = 0; batch < 20; batch += 1) {
      for (let packet = 0; packet < 25; packet += 1)
        flooder.send(rrq(`name-${batch}-${packet}.bin`, {}, 2), port, '127.0.0.1');
      await new Promise((resolve) => setImmediate(resolve));
    }
    await flooder.collect(300);
    other.send(rrq('fedora-coreos/kernel-typo'), port, '127.0.0.1');
    await other.next(1000);
    await flooder.close();
    await other.close();
    const refused = () => events.filter((event) => event.detail?.outcome === 'refused');
    await waitUntil(() => refused().some((event) => event.ip === '127.0.0.2'), 3000, 10);
    const fromFlooder = refused().filter((event) => event.ip === '127.0.0.1').length;
    t.ok(
      fromFlooder >= 20 && fromFlooder <= 23,
      `500 names from one host: ${fromFlooder} recorded (burst 20, then 0.5/s)`,
    );
    t.ok(
      refused().some(
        (event) => event.ip === '127.0.0.2' && event.detail?.file === 'fedora-coreos/kernel-typo',
      ),
      "the other host's refusal is recorded",
    );
    t.equal(server.stats().transfers.refused, 501, 'every refusal counted');
  },
);

t.test(
  "a flood of requests from one IP takes at most its share of the ERROR budget, not others'",
  async (t) => {
    const { port } = await startServer(t);
    const flooder = await udpPeer('127.0.0.1');
    const other = await udpPeer('127.0.0.2');
    const startedAt = performance.now();
    // Far more than the 200/s budget, in batches so no socket buffer overflows; the other client asks
    // in the middle of it, when a shared budget alone would be spent. Write requests: refused before
    // the per-client transfer limit, which would drop most RRQs of a one-host flood silently.
    for (let batch = 0; batch < 40; batch += 1) {
      for (let packet = 0; packet < 25; packet += 1)
        flooder.send(rrq('upload.bin', {}, 2), port, '127.0.0.1');
      if (batch === 20) other.send(rrq('missing.bin'), port, '127.0.0.1');
      await new Promise((resolve) => setImmediate(resolve));
    }
    const floodReplies = await flooder.collect(300);
    const elapsedSeconds = (performance.now() - startedAt) / 1000;
    const otherReply = await other.next(1000).catch(() => undefined);
    await flooder.close();
    await other.close();
    const share = 50 + Math.ceil(50 * elapsedSeconds);
    t.ok(floodReplies.length > 0, 'the flooding IP still gets some ERRORs');
    t.ok(floodReplies.length <= share, `${floodReplies.length} ERRORs to 1,000 requests, at most ${share}`);
    t.equal(otherReply && opcodeOf(otherReply.message), 5, 'the other client gets its ERROR');
  },
);
