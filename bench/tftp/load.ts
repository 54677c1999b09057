import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { fetchFile } from './client.js';

/**
 * Load driver, run inside the client namespace by run.ts: `concurrency` clients, each fetching
 * the file `rounds` times back to back; prints one JSON line with the aggregate rate and the
 * per-transfer times. Every download is checked against the expected SHA-256.
 */
const settings = JSON.parse(process.argv[2] ?? '{}') as {
  host: string;
  port: number;
  file: string;
  sha256: string;
  concurrency: number;
  rounds: number;
  blksize: number;
  windowsize?: number;
};

const times: number[] = [];
let bytes = 0;
let corrupt = 0;
let failed = 0;
const startedAt = performance.now();
const cpuAtStart = process.cpuUsage();
await Promise.all(
  Array.from({ length: settings.concurrency }, async () => {
    for (let round = 0; round < settings.rounds; round += 1) {
      try {
        const result = await fetchFile({
          host: settings.host,
          port: settings.port,
          file: settings.file,
          blksize: settings.blksize,
          ...(settings.windowsize === undefined ? {} : { windowsize: settings.windowsize }),
          resendAfterMs: 1000,
          deadlineMs: 120_000,
        });
        times.push(result.durationMs);
        bytes += result.content.length;
        if (createHash('sha256').update(result.content).digest('hex') !== settings.sha256) corrupt += 1;
      } catch {
        failed += 1;
      }
    }
  }),
);
const elapsedMs = performance.now() - startedAt;
const cpuUsed = process.cpuUsage(cpuAtStart);
times.sort((a, b) => a - b);
const percentile = (fraction: number) =>
  times[Math.min(times.length - 1, Math.floor(fraction * times.length))] ?? Number.NaN;
process.stdout.write(
  `${JSON.stringify({
    transfers: times.length,
    failed,
    corrupt,
    megabytesPerSecond: bytes / (1 << 20) / (elapsedMs / 1000),
    p50Ms: percentile(0.5),
    p99Ms: percentile(0.99),
    elapsedMs,
    cpuMs: (cpuUsed.user + cpuUsed.system) / 1000,
  })}\n`,
);
