import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { pino } from 'pino';
import t from 'tap';
import type { MachineEventInput } from '../src/lifecycle/events.js';
import { startTftpServer, type TftpServer } from '../src/tftp/server.js';
import { createTestNetwork, requireTools } from './helpers/netns.js';
import { waitUntil } from './helpers/poll.js';
import { createAssets, loadTestConfig, startTestServer } from './tftp/harness.js';
import { ackPacket, blockOf, errorText, opcodeOf, rrq, udpPeer } from './tftp/udp.js';

// Datagrams no real client sends, and a shutdown racing a request: the server neither crashes, nor
// loops, nor reflects, and keeps serving.

const assets = await createAssets();
const running = await startTestServer(assets.root);
t.teardown(async () => {
  await running.server.close();
  await assets.remove();
});
const { port } = running;
const execFileAsync = promisify(execFile);
const errorPacket = (code: number, text: string) =>
  Buffer.concat([Buffer.from([0, 5, 0, code]), Buffer.from(`${text}\0`, 'latin1')]);

/** A transfer of one.bin held open (lock-step, DATA 1 unacknowledged); returns its port and an end. */
async function openTransfer() {
  const client = await udpPeer();
  client.send(rrq(assets.files.one.name), port);
  const { from } = await client.next();
  return {
    transferPort: from.port,
    end: async () => {
      client.send(errorPacket(0, 'done'), from.port);
      await client.close();
    },
  };
}

t.test('an ERROR from a stranger to a transfer port is not answered; other packets are', async (t) => {
  const { transferPort, end } = await openTransfer();
  const stranger = await udpPeer();
  const before = running.server.stats().errors.foreignTid;
  // Answering an ERROR 5 with an ERROR 5 lets two such sockets (or one spoofed to itself) loop.
  stranger.send(errorPacket(5, 'Unknown transfer ID'), transferPort);
  stranger.send(ackPacket(1), transferPort);
  const replies = await stranger.collect(500);
  await stranger.close();
  await end();
  t.equal(replies.length, 1, 'one reply, to the ACK');
  t.equal(opcodeOf(replies[0] ?? Buffer.alloc(4)), 5);
  t.equal(blockOf(replies[0] ?? Buffer.alloc(4)), 5, 'ERROR 5 unknown transfer ID');
  t.equal(running.server.stats().errors.foreignTid - before, 2, 'both counted as foreign');
});

t.test('a malformed ERROR to the request port is not answered; other malformed requests are', async (t) => {
  const stranger = await udpPeer();
  stranger.send(Buffer.from([0, 5, 0]), port); // too short to be a whole ERROR
  stranger.send(Buffer.from([0, 1, 0]), port); // too short to be a whole RRQ
  const replies = await stranger.collect(500);
  await stranger.close();
  t.equal(replies.length, 1, 'one reply, to the RRQ');
  t.equal(opcodeOf(replies[0] ?? Buffer.alloc(4)), 5);
  t.equal(blockOf(replies[0] ?? Buffer.alloc(4)), 4, 'ERROR 4 illegal operation');
});

t.test('ERROR 5 replies to strangers share the 200/s limit for unvalidated sources', async (t) => {
  const { transferPort, end } = await openTransfer();
  const stranger = await udpPeer();
  const before = running.server.stats().errors.foreignTid;
  const startedAt = performance.now();
  // In batches, yielding between them, so no socket buffer overflows and every packet is seen.
  for (let batch = 0; batch < 16; batch += 1) {
    for (let packet = 0; packet < 25; packet += 1) stranger.send(ackPacket(1), transferPort);
    await new Promise((resolve) => setImmediate(resolve));
  }
  await waitUntil(() => running.server.stats().errors.foreignTid - before >= 400, 5000, 10);
  const elapsedSeconds = (performance.now() - startedAt) / 1000;
  const replies = await stranger.collect(300);
  await stranger.close();
  await end();
  // A full bucket (one second's worth) plus what refilled while the packets arrived.
  const allowed = 200 + Math.ceil(200 * elapsedSeconds);
  const received = running.server.stats().errors.foreignTid - before;
  t.ok(received > allowed, `the server saw ${received} packets, more than the limit lets it answer`);
  t.ok(replies.length > 0, 'strangers still get ERROR 5');
  t.ok(replies.length <= allowed, `${replies.length} replies to 400 packets, at most ${allowed}`);
});

t.test('a refusal decided after close() began is recorded, not logged as a failure', async (t) => {
  const config = await loadTestConfig(assets.root);
  const events: MachineEventInput[] = [];
  const problems: string[] = [];
  let server: TftpServer | undefined;
  server = await startTftpServer({
    // Called once at startup, then once per request: close while the request resolves its file.
    config: () => {
      if (server !== undefined) void server.close();
      return config;
    },
    record: async (event) => {
      events.push(event);
    },
    logger: pino(
      { level: 'warn' },
      {
        write: (line: string) => {
          problems.push(line);
        },
      },
    ),
    macForIp: () => undefined,
  });
  const serverPort = server.address().port;
  const client = await udpPeer();
  client.send(rrq('missing.bin'), serverPort);
  const recorded = await waitUntil(() => events.length > 0, 3000, 10);
  await client.close();
  t.ok(recorded, 'the refusal is recorded');
  t.match(events[0]?.detail, { file: 'missing.bin', outcome: 'refused', reason: 'not-found' });
  t.same(problems, [], 'nothing logged at warn or above');
  t.equal(server.stats().errors.io, 0, 'no send on the closed socket');
});

t.test('datagrams from source port 0 are dropped on the request and transfer ports', async (t) => {
  await requireTools('ip', 'iptables', 'node');
  const network = createTestNetwork();
  t.teardown(() => network.cleanup());
  const namespace = await network.createNamespace('portzero');
  const spoofedPort = 40000;
  // No socket can bind port 0: NAT rewrites a real one to it, inside the namespace only.
  await namespace.exec('iptables', [
    ...['-t', 'nat', '-A', 'POSTROUTING', '-p', 'udp', '--sport', String(spoofedPort)],
    ...['-j', 'SNAT', '--to-source', '127.0.0.1:0'],
  ]);
  const output = await namespace.exec(
    'node',
    ['--import', 'tsx', 'test/tftp/port-zero.ts', String(spoofedPort)],
    60_000,
  );
  const seen = JSON.parse(output.trim().split('\n').at(-1) ?? '{}') as {
    stats: { errors: Record<string, number> };
    outcomes: string[];
    fetchedIntact: boolean;
  };
  t.equal(seen.stats.errors.sourcePortZero, 3, 'two requests and one ACK dropped and counted');
  t.equal(seen.stats.errors.io, 0, 'no send was attempted to port 0');
  t.same(seen.outcomes, ['complete', 'complete'], 'no transfer or refusal for the port-0 requests');
  t.ok(seen.fetchedIntact, 'the server kept serving: a fetch afterwards is byte-exact');
});

t.test('with listen 0.0.0.0, replies come from server.address, the address clients ask', async (t) => {
  // EDK2 accepts replies only from the server it asked; on a wildcard socket the kernel picks the
  // source address, here the client's own (both are local addresses).
  await requireTools('ip', 'node');
  const network = createTestNetwork();
  t.teardown(() => network.cleanup());
  const namespace = await network.createNamespace('replyaddr');
  for (const address of ['10.77.20.1/32', '10.77.20.2/32']) {
    await namespace.exec('ip', ['addr', 'add', address, 'dev', 'lo']);
  }
  const output = await namespace.exec('node', ['--import', 'tsx', 'test/tftp/reply-address.ts'], 60_000);
  t.same(JSON.parse(output.trim().split('\n').at(-1) ?? '{}'), { from: '10.77.20.1' });
});

t.test('a shutdown tells the clients of running transfers with an ERROR', async (t) => {
  const closing = await startTestServer(assets.root);
  const client = await udpPeer();
  t.teardown(() => client.close());
  client.send(rrq(assets.files.one.name), closing.port);
  const { message: first } = await client.next();
  t.equal(opcodeOf(first), 3, 'DATA 1 came, left unacknowledged');
  await closing.server.close();
  // Once, the transfer's socket closed unsaid and the client waited out its retries.
  const replies = (await client.collect(500)).filter((message) => opcodeOf(message) === 5);
  t.equal(replies.length, 1, 'one ERROR');
  t.equal(errorText(replies[0] ?? Buffer.alloc(5)), 'Server shutting down');
});

t.test('a new request from the port of a running transfer gets its own file (tftp-hpa -R)', async (t) => {
  await requireTools('tftp');
  // A client that asked for one.bin from a fixed port and vanished after DATA 1 (a ROM reset).
  const vanished = await udpPeer();
  const clientPort = vanished.socket.address().port;
  vanished.send(rrq(assets.files.one.name), port);
  const { message: first } = await vanished.next();
  t.equal(opcodeOf(first), 3, 'one.bin is being sent to that port');
  await vanished.close();
  const before = running.events.length;
  const output = join(assets.root, '..', 'got-small.txt');
  // Not spawnSync: the server under test runs in this process.
  const fetched = await execFileAsync(
    'tftp',
    [
      '-R',
      `${clientPort}:${clientPort}`,
      '-m',
      'binary',
      '127.0.0.1',
      String(port),
      '-c',
      'get',
      assets.files.small.name,
      output,
    ],
    { timeout: 20_000 },
  ).then(
    () => 'fetched',
    (error: Error) => error.message,
  );
  t.equal(fetched, 'fetched');
  // Once, the new request was taken for a resend, and the old transfer's DATA answered it: one.bin.
  t.same(readFileSync(output), assets.files.small.content, 'small.txt, byte-exact');
  const ended = running.events
    .slice(before)
    .map((event) => [event.detail?.file, event.detail?.outcome, event.detail?.reason]);
  t.match(ended, [
    [assets.files.one.name, 'aborted', 'superseded'],
    [assets.files.small.name, 'complete'],
  ]);
});

t.test('a new request from the port of a request still opening its file gets its own file', async (t) => {
  const before = running.events.length;
  const client = await udpPeer();
  // Back to back: the second arrives while the first is still resolving and opening one.bin.
  client.send(rrq(assets.files.one.name), port);
  client.send(rrq(assets.files.small.name), port);
  const { message, from } = await client.next();
  t.equal(opcodeOf(message), 3);
  // Once, the second request was dropped as a resend and the first started: one.bin's DATA 1.
  t.same(message.subarray(4), assets.files.small.content, 'the answer is small.txt, the file asked last');
  client.send(ackPacket(1), from.port);
  await running.waitForEvents((events) => events.length > before);
  await client.close();
  await running.waitForStats((stats) => stats.activeTransfers === 0);
  const ended = running.events.slice(before).map((event) => [event.detail?.file, event.detail?.outcome]);
  t.same(ended, [[assets.files.small.name, 'complete']], 'one.bin was never started');
  // Its slot went to the request that superseded it, freed once: the client's limit is whole.
  const limit = running.config.server.tftp.max_transfers_per_client;
  const held = await Promise.all(Array.from({ length: limit }, () => openTransfer()));
  for (const transfer of held) await transfer.end();
});

t.test("a transfer the client ends with an ERROR is recorded with the client's text", async (t) => {
  const client = await udpPeer();
  client.send(rrq(assets.files.one.name), port);
  const { from } = await client.next();
  client.send(errorPacket(3, 'Disk full\x07 or allocation exceeded'), from.port);
  const ended = (events: MachineEventInput[]) =>
    events.find((event) => String(event.detail?.reason).startsWith('client error 3'));
  await running.waitForEvents((events) => ended(events) !== undefined);
  await client.close();
  t.match(ended(running.events), {
    detail: {
      file: assets.files.one.name,
      outcome: 'aborted',
      reason: 'client error 3: Disk full? or allocation exceeded',
    },
  });
});

t.test('a port in use rejects the start without a warning of its own', async (t) => {
  const occupier = await udpPeer();
  const config = await loadTestConfig(assets.root);
  const taken = {
    ...config,
    server: { ...config.server, tftp: { ...config.server.tftp, port: occupier.socket.address().port } },
  };
  const problems: string[] = [];
  const started = startTftpServer({
    config: () => taken,
    record: async () => {},
    logger: pino({ level: 'warn' }, { write: (line: string) => problems.push(line) }),
    macForIp: () => undefined,
  });
  await t.rejects(started, { code: 'EADDRINUSE' }, 'the caller gets the bind error');
  await occupier.close();
  // Once, the request socket's error handler also logged it: a warning with a stack trace before
  // serve's one line naming server.tftp.port.
  t.same(problems, [], 'nothing logged at warn or above');
});
