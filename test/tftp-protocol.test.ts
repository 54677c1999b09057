import { access, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { fetchFile } from '../bench/tftp/client.js';
import type { Mac } from '../src/inventory/mac.js';
import { toNetascii } from '../src/tftp/netascii.js';
import { requireTools, run } from './helpers/netns.js';
import { waitUntil } from './helpers/poll.js';
import { createAssets, startTestServer } from './tftp/harness.js';
import { ackPacket, blockOf, errorText, opcodeOf, rrq, udpPeer } from './tftp/udp.js';

// Packet-level behaviour against the real server on loopback, with a scripted client.

const assets = await createAssets({ withForty: true });
const mac = '52:54:00:20:00:01' as Mac;
const running = await startTestServer(assets.root, {
  tftp: { max_transfers_per_client: 4, retries: 1 },
  macs: { '127.0.0.1': mac },
});
t.teardown(async () => {
  await running.server.close();
  await assets.remove();
});
const { port } = running;
const eventsFor = (file: string) => running.events.filter((event) => event.detail?.file === file);

t.test('every escape attempt is refused with ERROR 1/2 and no path in the message', async (t) => {
  const attempts: { name: string; packet: Buffer }[] = [
    { name: 'parent segment', packet: rrq('../secret.txt') },
    { name: 'parent after leading slash', packet: rrq('/../secret.txt') },
    { name: 'parent deeper', packet: rrq('sub/../../secret.txt') },
    { name: 'absolute path of a real file outside the root', packet: rrq(assets.secretPath) },
    { name: 'absolute system file', packet: rrq('/etc/passwd') },
    { name: 'backslashes', packet: rrq('..\\secret.txt') },
    { name: 'backslash inside', packet: rrq('sub\\exact.bin') },
    // The name field ends at the first NUL: what follows is read as the mode and refused.
    { name: 'NUL inside the name', packet: rrq('one.bin\0../secret.txt') },
    { name: 'over-long name', packet: rrq(`${'a/'.repeat(150)}one.bin`) },
    { name: 'symlink leaving the root', packet: rrq('escape-link') },
    { name: 'directory', packet: rrq('sub') },
    { name: 'symlink to a directory', packet: rrq('inside-link') },
    { name: 'the root itself', packet: rrq('/') },
    { name: 'write request', packet: rrq('uploaded.bin', {}, 2) },
  ];
  for (const attempt of attempts) {
    const peer = await udpPeer();
    peer.send(attempt.packet, port);
    const { message } = await peer.next();
    await peer.close();
    t.equal(opcodeOf(message), 5, `${attempt.name}: ERROR`);
    t.ok([1, 2].includes(blockOf(message)), `${attempt.name}: code ${blockOf(message)} is 1 or 2`);
    const text = errorText(message);
    t.ok(
      ['File not found', 'Access violation', 'Read-only server'].includes(text),
      `${attempt.name}: "${text}"`,
    );
    t.notOk(text.includes('/') || text.includes(assets.root), `${attempt.name}: no path revealed`);
  }
  await t.rejects(access(join(assets.root, 'uploaded.bin')), 'the write request created nothing');
  const refused = running.events.filter((event) => event.detail?.outcome === 'refused');
  t.equal(refused.length, attempts.length, 'one refused event per attempt');
  t.ok(refused.every((event) => event.mac === mac && typeof event.detail?.reason === 'string'));
});

t.test('a leading slash and a trailing junk byte (old PXE ROMs) are tolerated', async (t) => {
  for (const name of ['/small.txt', 'small.txt\xff', '//sub/./exact.bin']) {
    const result = await fetchFile({ host: '127.0.0.1', port, file: name, deadlineMs: 10_000 });
    const expected = name.includes('exact') ? assets.files.exactBlocks.content : assets.files.small.content;
    t.ok(result.content.equals(expected), `${JSON.stringify(name)} served byte-exact`);
  }
});

t.test('the firmware size probe (OACK, then client ERROR 8) ends quietly as "probe"', async (t) => {
  const probe = await udpPeer();
  probe.send(rrq('one.bin', { tsize: '0', blksize: '1468', windowsize: '4' }), port);
  const { message, from } = await probe.next();
  t.equal(opcodeOf(message), 6, 'OACK');
  t.match(message.toString('latin1'), /tsize\x001048576\x00/);
  probe.send(Buffer.from('\0\x05\0\x08User aborted the transfer\0', 'latin1'), from.port);
  const after = await probe.collect(1200);
  await probe.close();
  t.same(after, [], 'no retransmission and no error after the abort');
  const result = await fetchFile({ host: '127.0.0.1', port, file: 'one.bin', blksize: 1468, windowsize: 4 });
  t.ok(result.content.equals(assets.files.one.content), 'the real download right after the probe works');
  await running.waitForEvents((events) => events.at(-1)?.detail?.outcome === 'complete');
  const outcomes = eventsFor('one.bin').map((event) => event.detail?.outcome);
  t.same(outcomes.slice(-2), ['probe', 'complete']);
});

t.test('a client refusing the OACK with another code (EDK2: ERROR 4) is an abort, not a probe', async (t) => {
  const client = await udpPeer();
  client.send(rrq('small.txt', { tsize: '0', blksize: '1468' }), port);
  const { message, from } = await client.next();
  t.equal(opcodeOf(message), 6, 'OACK');
  client.send(Buffer.from('\0\x05\0\x04Malformatted OACK\0', 'latin1'), from.port);
  await client.close();
  await running.waitForEvents((events) => events.at(-1)?.detail?.file === 'small.txt');
  const last = eventsFor('small.txt').at(-1);
  t.equal(last?.detail?.outcome, 'aborted');
  t.equal(last?.detail?.reason, 'client error 4: Malformatted OACK', "the client's own words");
});

t.test('duplicate ACKs never cause resends (sorcerer’s apprentice)', async (t) => {
  const before = running.server.stats();
  const client = await udpPeer();
  client.send(rrq('sub/exact.bin'), port);
  let dataPackets = 0;
  let expected = 1;
  for (;;) {
    const { message, from } = await client.next();
    if (opcodeOf(message) !== 3) continue;
    dataPackets += 1;
    if (blockOf(message) !== (expected & 0xffff)) continue;
    // Every ACK twice: a naive sender would answer the copy with the next block again.
    client.send(ackPacket(expected), from.port);
    client.send(ackPacket(expected), from.port);
    expected += 1;
    if (message.length < 516) break;
  }
  await client.close();
  const after = running.server.stats();
  const blocks = expected - 1;
  t.equal(blocks, 1469, '1468 full blocks and the empty final one');
  t.equal(after.errors.duplicateAcks - before.errors.duplicateAcks >= blocks - 1, true, 'duplicates seen');
  const timerResends = after.retransmittedPackets - before.retransmittedPackets;
  t.ok(
    dataPackets <= blocks + timerResends,
    `every DATA beyond one per block (${dataPackets - blocks}) is a timer retransmission (${timerResends})`,
  );
  t.ok(dataPackets < blocks * 1.2, 'a sender answering duplicates would have sent every block twice');
});

t.test('a foreign transfer ID gets ERROR 5 and the real transfer goes on', async (t) => {
  const client = await udpPeer();
  const stranger = await udpPeer();
  client.send(rrq('sub/exact.bin', { blksize: '1468' }), port);
  const oack = await client.next();
  t.equal(opcodeOf(oack.message), 6);
  const transferPort = oack.from.port;
  client.send(ackPacket(0), transferPort);
  const first = await client.next();
  t.equal(blockOf(first.message), 1);
  stranger.send(ackPacket(1), transferPort);
  const answer = await stranger.next();
  t.equal(opcodeOf(answer.message), 5);
  t.equal(blockOf(answer.message), 5, 'ERROR 5 unknown transfer ID');
  await stranger.close();
  const chunks = [first.message.subarray(4)];
  let block = 1;
  client.send(ackPacket(block), transferPort);
  while (chunks.at(-1)?.length === 1468) {
    const { message } = await client.next();
    if (opcodeOf(message) !== 3 || blockOf(message) !== block + 1) continue;
    block += 1;
    chunks.push(message.subarray(4));
    client.send(ackPacket(block), transferPort);
  }
  await client.close();
  t.ok(Buffer.concat(chunks).equals(assets.files.exactBlocks.content), 'byte-exact after the intrusion');
});

t.test('a file truncated during its transfer ends it with ERROR 0, not a short copy', async (t) => {
  // Past the 16 MiB cache limit, so read from disk a chunk at a time.
  const path = join(assets.root, 'shrinking.bin');
  await writeFile(path, Buffer.alloc(20 << 20, 7));
  t.teardown(() => rm(path, { force: true }));
  const client = await udpPeer();
  client.send(rrq('shrinking.bin', { blksize: '1468' }), port);
  const oack = await client.next();
  t.equal(opcodeOf(oack.message), 6);
  client.send(ackPacket(0), oack.from.port);
  let received = 0;
  let ended: Buffer | undefined;
  for (let block = 1; block <= 400 && ended === undefined; block += 1) {
    const { message } = await client.next();
    if (opcodeOf(message) === 5) ended = message;
    else {
      received += message.length - 4;
      if (block === 10) await truncate(path, 300_000);
      client.send(ackPacket(blockOf(message)), oack.from.port);
    }
  }
  await client.close();
  t.ok(ended, `an ERROR after ${received} bytes`);
  t.equal(ended && blockOf(ended), 0, 'ERROR 0');
  t.equal(ended && errorText(ended), 'File changed during transfer');
  t.ok(received < 300_000, 'no block past what was read before the change');
  t.ok(await waitUntil(() => eventsFor('shrinking.bin').length > 0, 5000), 'the transfer event');
  t.match(eventsFor('shrinking.bin')[0], { detail: { outcome: 'aborted', reason: 'file-changed' } });
});

t.test('windowsize and rollover: 40 MiB at 512-byte blocks, window 8', async (t) => {
  const result = await fetchFile({
    host: '127.0.0.1',
    port,
    file: 'forty.bin',
    blksize: 512,
    windowsize: 8,
    tsize: true,
    deadlineMs: 60_000,
  });
  t.same(result.oack, { blksize: '512', windowsize: '8', tsize: String(40 << 20) });
  t.ok(result.content.equals(assets.files.forty.content), '81920 blocks, past the wrap, byte-exact');
  await running.waitForEvents(() => eventsFor('forty.bin').length > 0);
  const event = eventsFor('forty.bin').at(-1);
  t.match(event?.detail, { outcome: 'complete', bytes: 40 << 20, options: { windowsize: '8' } });
  t.equal(event?.mac, mac, 'MAC from the DHCP state');
});

t.test('per-client limit and stalled transfers dropped after the retry budget', async (t) => {
  await running.waitForStats((stats) => stats.activeTransfers === 0);
  const before = running.server.stats();
  const peers = await Promise.all(Array.from({ length: 5 }, () => udpPeer()));
  for (const peer of peers) peer.send(rrq('small.txt'), port);
  const firstReplies = await Promise.all(
    peers.map((peer) =>
      peer.next(1000).then(
        () => 1,
        () => 0,
      ),
    ),
  );
  t.equal(
    firstReplies.reduce((sum, value) => sum + value, 0),
    4,
    'max_transfers_per_client 4: the fifth request is not served',
  );
  t.equal(running.server.stats().errors.busy - before.errors.busy, 1);
  // retries: 1 → the first DATA, one retransmission, then the transfer is dropped.
  await waitUntil(() => running.server.stats().transfers.timeout - before.transfers.timeout >= 4, 8000);
  await Promise.all(peers.map((peer) => peer.close()));
  t.equal(running.server.stats().transfers.timeout - before.transfers.timeout, 4, 'all four timed out');
  t.equal(running.server.stats().activeTransfers, 0, 'slots released');
});

t.test('malformed packets on the request port are counted, the server keeps serving', async (t) => {
  const before = running.server.stats().errors.malformed;
  const peer = await udpPeer();
  peer.send(Buffer.from([0, 1, 0x41]), port);
  const { message } = await peer.next();
  t.equal(blockOf(message), 4, 'ERROR 4 illegal operation');
  peer.send(ackPacket(3), port);
  const result = await fetchFile({ host: '127.0.0.1', port, file: 'small.txt' });
  await peer.close();
  t.ok(result.content.equals(assets.files.small.content));
  t.equal(running.server.stats().errors.malformed - before, 2);
});

t.test(
  'netascii: tftp-hpa in its default mode gets files byte-exact; too-large files name octet',
  async (t) => {
    await requireTools('tftp');
    // Bare CR, CR LF, LF and NUL: every case the encoding has to get right, then 1 MiB of random bytes.
    const mixed = Buffer.from('line\r\nbare\rcr\nend\0\r', 'latin1');
    await writeFile(join(assets.root, 'mixed.txt'), mixed);
    const scratch = await mkdtemp(join(tmpdir(), 'rackboot-netascii-'));
    t.teardown(() => rm(scratch, { recursive: true, force: true }));
    for (const [name, content] of [
      ['mixed.txt', mixed],
      [assets.files.one.name, assets.files.one.content],
    ] as const) {
      const output = join(scratch, name.replaceAll('/', '_'));
      // No -m: tftp-hpa's client asks for netascii unless told otherwise.
      await run('tftp', ['127.0.0.1', String(port), '-c', 'get', name, output], 60_000);
      t.ok(
        (await readFile(output)).equals(content),
        `${name}: byte-exact after the client's netascii decoding`,
      );
    }
    await running.waitForEvents(() =>
      eventsFor('mixed.txt').some(
        (event) => event.detail?.mode === 'netascii' && event.detail.outcome === 'complete',
      ),
    );
    t.pass('the transfer event names the mode');

    const peer = await udpPeer();
    peer.send(rrq('mixed.txt', { tsize: '0' }, 1, 'netascii'), port);
    const { message: oack, from } = await peer.next();
    t.equal(opcodeOf(oack), 6);
    t.match(oack.toString('latin1'), `tsize\0${toNetascii(mixed).length}\0`, 'tsize is the encoded length');
    // End it as firmware ends a size probe: ERROR 8 after the OACK.
    peer.send(Buffer.from([0, 5, 0, 8, 0]), from.port);
    await peer.close();

    const large = await udpPeer();
    large.send(rrq(assets.files.forty.name, {}, 1, 'NetASCII'), port);
    const refusal = (await large.next()).message;
    await large.close();
    t.equal(opcodeOf(refusal), 5);
    t.equal(blockOf(refusal), 0, 'ERROR 0 (not defined), with the reason in the text');
    t.match(errorText(refusal), /up to 16 MiB; ask for octet/);
  },
);
