import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { createLinkedPair, randomUdpDrop, requireTools, waitForOutput } from './helpers/netns.js';
import { fetchWith, sha256, sha256OfFile } from './tftp/clients.js';
import { createAssets } from './tftp/harness.js';

// 5% random loss of every UDP packet in both namespaces (this kernel has no netem), 20 concurrent
// curl clients, 1 MiB each at 512-byte blocks: every transfer must finish byte-exact, and quickly,
// because the retransmit timeout follows the measured round trip (RFC 1123 §4.2.3.2).

await requireTools('ip', 'iptables', 'curl', 'node');
const assets = await createAssets();
const downloads = await mkdtemp(join(tmpdir(), 'rackboot-tftp-loss-'));
const pair = await createLinkedPair(21);
t.teardown(async () => {
  await pair.network.cleanup();
  await assets.remove();
  await rm(downloads, { recursive: true, force: true });
});

const dropFivePercent = randomUdpDrop(0.05);
await pair.server.exec('iptables', dropFivePercent);
await pair.client.exec('iptables', dropFivePercent);

const server = pair.server.spawn(
  'node',
  [
    '--import',
    'tsx',
    'test/tftp/serve.ts',
    JSON.stringify({ root: assets.root, listen: pair.serverAddress, tftp: { port: 69 } }),
  ],
  { cwd: process.cwd() },
);
await waitForOutput(server, (line) => line.includes('"listening"'), 30_000);

t.test('20 concurrent 1 MiB transfers under 5% loss each way complete byte-exact', async (t) => {
  const expected = sha256(assets.files.one.content);
  const results = await Promise.all(
    Array.from({ length: 20 }, async (_, index) => {
      const output = join(downloads, `loss-${index}`);
      const durationMs = await fetchWith('curl', {
        host: pair.serverAddress,
        port: 69,
        file: 'one.bin',
        output,
        prefix: ['ip', 'netns', 'exec', pair.client.name],
      });
      return { durationMs, hash: await sha256OfFile(output) };
    }),
  );
  t.equal(results.filter((result) => result.hash === expected).length, 20, 'all 20 byte-exact');
  const times = results.map((result) => result.durationMs).sort((a, b) => a - b);
  const p50 = times[Math.floor(times.length / 2)] ?? Number.NaN;
  t.comment(
    `per-transfer p50 ${(p50 / 1000).toFixed(1)} s, max ${((times.at(-1) ?? 0) / 1000).toFixed(1)} s`,
  );
  // dnsmasq measured here needs p50 72 s for this (issue 4); bench/tftp compares in the same run.
  t.ok(p50 < 30_000, 'p50 well below a fixed-timeout server');

  const report = waitForOutput(server, (line) => line.startsWith('REPORT ') && line.endsWith(' END'), 10_000);
  server.kill('SIGTERM');
  const { stats, events } = JSON.parse((await report).slice(7, -4)) as {
    stats: { retransmittedPackets: number; transfers: Record<string, number> };
    events: { outcome: string; durationMs: number; bytes: number }[];
  };
  const serverTimes = events
    .filter((event) => event.outcome === 'complete')
    .map((event) => event.durationMs)
    .sort((a, b) => a - b);
  t.comment(
    `server-side p50 ${((serverTimes[Math.floor(serverTimes.length / 2)] ?? 0) / 1000).toFixed(1)} s`,
  );
  t.ok(
    stats.retransmittedPackets > 0,
    `losses were recovered by retransmission (${stats.retransmittedPackets})`,
  );
  // The client's final ACK can be lost too (RFC 1350 leaves the sender of the last DATA unsure):
  // that transfer ends as a timeout, or aborted at the shutdown below, after every byte was
  // acknowledged. One such loss in 20 is expected at 5%; three or more happen in ~7% of runs.
  const fileBytes = assets.files.one.content.length;
  t.equal(events.length, 20, 'one transfer per client');
  t.equal(
    events.filter((event) => event.outcome === 'complete' || event.bytes === fileBytes).length,
    20,
    `the server saw every transfer through (${stats.transfers.complete ?? 0} with the final ACK)`,
  );
});
