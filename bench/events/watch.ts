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
import { get } from 'node:http';
import { createInterface } from 'node:readline';

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
const DATA_LINE = '\ndata:';
/** Counts the messages of `text` (whole messages only) and measures each one's `sentAt`. */
function measure(text: string, arrivedAt: number): void {
  for (let at = text.indexOf(DATA_LINE); at !== -1; at = text.indexOf(DATA_LINE, at + DATA_LINE.length)) {
    if (received === 0) process.stdout.write('FIRST\n');
    received += 1;
  }
  for (let at = text.indexOf(SENT_AT); at !== -1; at = text.indexOf(SENT_AT, at + SENT_AT.length)) {
    latencies.push(arrivedAt - Number.parseFloat(text.slice(at + SENT_AT.length, at + SENT_AT.length + 24)));
  }
}

// node:http and a scan of the text rather than fetch and an event parser: 0.03–0.04 of a core instead
// of 0.06–0.10 at this rate, on the cores the measured DHCP server shares.
let unfinished = '';
const request = get(
  `${url}/api/v1/events`,
  { headers: { accept: 'text/event-stream' }, signal: stop.signal },
  (response) => {
    if (response.statusCode !== 200) throw new Error(`${url}/api/v1/events: HTTP ${response.statusCode}`);
    response.setEncoding('utf8');
    response.on('data', (chunk: string) => {
      const arrivedAt = performance.timeOrigin + performance.now();
      const text = unfinished + chunk;
      // rackboot ends every message with a blank line; the rest waits for the next chunk.
      const end = text.lastIndexOf('\n\n');
      if (end === -1) {
        unfinished = text;
        return;
      }
      unfinished = text.slice(end + 2);
      measure(`\n${text.slice(0, end + 2)}`, arrivedAt);
    });
  },
);
request.on('error', (error) => {
  if (!stop.signal.aborted) throw error;
});
