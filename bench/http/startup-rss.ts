/**
 * Start-up memory of `rackboot serve` with the HTTP bench's config (not part of the tests):
 *   node --import tsx bench/http/startup-rss.ts [--machines 10000] [--runs 5]
 * Builds dist/ and starts bin/rackboot.js with its own V8 flags, as bench/http/run.ts does, once
 * per run with a fresh state directory; once HTTP answers, reads the process's VmRSS and its peak
 * VmHWM, which start-up sets: the config loader's worker thread parses, validates and checks the
 * templates of every machine then. No load is generated, so it can run beside other benches.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { median, numberOption, REPO_ROOT } from '../plumbing.js';
import {
  freePort,
  processMemoryMB,
  serveArguments,
  waitForHttp,
  writeHttpBenchFixture,
} from './bench-server.js';

const MACHINES = numberOption('machines', 10_000);
const RUNS = numberOption('runs', 5);

interface Run {
  startSeconds: number;
  rssMB: number;
  peakMB: number;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'rackboot-bench-startup-rss-'));
  let server: ChildProcess | undefined;
  try {
    await promisify(execFile)('npx', ['tsc', '-p', 'tsconfig.build.json'], {
      cwd: REPO_ROOT,
      timeout: 300_000,
    });
    const httpPort = await freePort('tcp');
    await writeHttpBenchFixture(dir, { machines: MACHINES, httpPort, tftpPort: await freePort('udp') });
    const runs: Run[] = [];
    for (let run = 0; run < RUNS; run++) {
      await rm(join(dir, 'state'), { recursive: true, force: true });
      const started = performance.now();
      server = spawn(process.execPath, serveArguments(join(dir, 'rackboot.yaml')), {
        cwd: REPO_ROOT,
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      const exitedEarly = once(server, 'exit').then(([code]) => {
        throw new Error(`rackboot serve exited with code ${code} before answering`);
      });
      await Promise.race([waitForHttp(`http://127.0.0.1:${httpPort}/boot.ipxe`), exitedEarly]);
      const startSeconds = (performance.now() - started) / 1000;
      const memory = await processMemoryMB(server.pid);
      runs.push({ startSeconds: Math.round(startSeconds * 10) / 10, rssMB: memory.rss, peakMB: memory.peak });
      const exited = once(server, 'exit');
      server.kill('SIGTERM');
      await exited;
    }
    const peaks = runs.map((run) => run.peakMB);
    console.log(
      JSON.stringify(
        {
          machines: MACHINES,
          runs,
          peakMB: { min: Math.min(...peaks), median: median(peaks), max: Math.max(...peaks) },
          target: 'peak <= 200 MB',
        },
        null,
        2,
      ),
    );
  } finally {
    if (server?.exitCode === null) server.kill('SIGTERM');
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
