/**
 * The dashboard's SSE stream as bench/events opens it, run in the client namespace:
 *   ip netns exec NS node --import tsx bench/events/watch.ts URL
 * For every event carrying `detail.sentAt` (set when the generator recorded it), measures the time
 * until it arrived here. Prints `FIRST` at the first event; on stdin `stop`, `RESULT <json>`.
 * It reads `sentAt` out of each message's JSON text instead of parsing the event: this process shares
 * the host's two cores with the DHCP load it is measured against, and a full JSON.parse of ~25,000
 * events/s cost it 0.13 core that a dashboard's browser, on the operator's machine, would not take
 * from the server (docs/lifecycle.md has figures with both).
 */
import { createInterface } from 'node:readline';
import { serverSentEvents } from '../../src/cli/client.js';

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

const SENT_AT = '"sentAt":';
const response = await fetch(`${url}/api/v1/events`, {
  headers: { accept: 'text/event-stream' },
  signal: stop.signal,
});
if (!response.ok || !response.body) throw new Error(`${url}/api/v1/events: HTTP ${response.status}`);
for await (const messages of serverSentEvents(response.body as unknown as AsyncIterable<Uint8Array>)) {
  const arrivedAt = performance.timeOrigin + performance.now();
  for (const { data } of messages) {
    if (data === undefined) continue;
    if (received === 0) process.stdout.write('FIRST\n');
    received += 1;
    const at = data.indexOf(SENT_AT);
    if (at !== -1) latencies.push(arrivedAt - Number.parseFloat(data.slice(at + SENT_AT.length)));
  }
}
