/**
 * The dashboard's SSE stream as bench/events opens it, run in the client namespace:
 *   ip netns exec NS node --import tsx bench/events/watch.ts URL
 * For every event carrying `detail.sentAt` (set when the generator recorded it), measures the time
 * until it arrived here. Prints `FIRST` at the first event; on stdin `stop`, `RESULT <json>`.
 */
import { createInterface } from 'node:readline';
import { followEvents } from '../../src/cli/client.js';

const url = process.argv[2];
if (!url) throw new Error('usage: watch.ts URL');
const stop = new AbortController();
const latencies: number[] = [];
let received = 0;

createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() !== 'stop') return;
  stop.abort();
  latencies.sort((a, b) => a - b);
  const at = (fraction: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * fraction))] ?? 0;
  const result = {
    received,
    measured: latencies.length,
    p50: at(0.5),
    p99: at(0.99),
    max: latencies.at(-1) ?? 0,
  };
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  process.exit(0);
});

for await (const event of followEvents({ url, token: undefined }, { signal: stop.signal })) {
  if (received === 0) process.stdout.write('FIRST\n');
  received += 1;
  const sentAt = event.detail?.sentAt;
  if (typeof sentAt === 'number') latencies.push(performance.timeOrigin + performance.now() - sentAt);
}
