/**
 * Dashboard benchmark (not part of the tests), all on loopback:
 *   npm run bench:dashboard -- [--machines 10000] [--rate 20] [--seconds 10]
 * Starts `rackboot serve` with N machines (the bench:http fixture), opens the dashboard in Debian's
 * chromium (playwright-core, headless) and, while `rate` machines per second fetch their iPXE script
 * (each an `ipxe-script` event, the first one per machine also a `state-changed`), records every
 * animation frame's gap and Chromium's own layout, style and script time (DevTools Performance
 * metrics). Reports how long the full fleet table took to appear and the frame gaps under events: a
 * page that lays out 10,000 rows again per event stops drawing.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { macInUrl } from '../../src/ignition/vars.js';
import { CHROMIUM, launchChromium } from '../../test/helpers/chromium.js';
import { freePort, serveArguments, waitForHttp, writeHttpBenchFixture } from '../http/bench-server.js';
import { numberOption, REPO_ROOT } from '../plumbing.js';

const MACHINES = numberOption('machines', 10_000);
const RATE = numberOption('rate', 20);
const SECONDS = numberOption('seconds', 10);
/** DevTools Performance metrics reported as their change over the measured seconds. */
const METRICS = ['LayoutDuration', 'LayoutCount', 'RecalcStyleDuration', 'ScriptDuration', 'TaskDuration'];

const execFileAsync = promisify(execFile);
await execFileAsync(CHROMIUM, ['--version']).catch(() => {
  throw new Error(`the bench needs ${CHROMIUM} (.ci/apt-packages.txt)`);
});
const dir = await mkdtemp(join(tmpdir(), 'rackboot-bench-dashboard-'));
const profile = await mkdtemp(join(tmpdir(), 'rackboot-bench-chromium-'));
let server: ChildProcess | undefined;
try {
  await execFileAsync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: REPO_ROOT, timeout: 300_000 });
  const httpPort = await freePort('tcp');
  const macs = await writeHttpBenchFixture(dir, {
    machines: MACHINES,
    httpPort,
    tftpPort: await freePort('udp'),
  });
  server = spawn(process.execPath, serveArguments(join(dir, 'rackboot.yaml')), {
    cwd: REPO_ROOT,
    stdio: 'ignore',
  });
  const base = `http://127.0.0.1:${httpPort}`;
  await waitForHttp(`${base}/boot.ipxe`);

  const browser = await launchChromium(profile);
  try {
    const page = await browser.newPage();
    const opened = performance.now();
    await page.goto(`${base}/`);
    // Strings, not functions: the page must not depend on how tsx compiles this file.
    await page.waitForFunction(
      `document.querySelectorAll('#machines tbody tr').length >= ${MACHINES}`,
      undefined,
      {
        timeout: 120_000,
      },
    );
    const tableMs = performance.now() - opened;
    const devtools = await browser.newCDPSession(page);
    await devtools.send('Performance.enable');
    const metrics = async () => {
      const { metrics: list } = await devtools.send('Performance.getMetrics');
      return new Map(list.map((metric) => [metric.name, metric.value]));
    };
    await page.evaluate(
      'window.frameGaps = []; let last = performance.now(); const frame = (now) => { window.frameGaps.push(now - last); last = now; requestAnimationFrame(frame); }; requestAnimationFrame(frame);',
    );
    const before = await metrics();
    const started = performance.now();
    let sent = 0;
    for (; sent < RATE * SECONDS && performance.now() - started < SECONDS * 2000; sent += 1) {
      const mac = macs[(sent * 7919) % macs.length] as (typeof macs)[number];
      await fetch(`${base}/boot/${macInUrl(mac)}.ipxe?arch=x86_64`).then((response) => response.text());
      const due = started + ((sent + 1) * 1000) / RATE;
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, due - performance.now())));
    }
    const after = await metrics();
    const gaps = ((await page.evaluate('window.frameGaps')) as number[]).sort((a, b) => a - b);
    const at = (fraction: number) =>
      round(gaps[Math.min(gaps.length - 1, Math.floor(gaps.length * fraction))] ?? NaN);
    const change = Object.fromEntries(
      METRICS.map((name) => [name, round((after.get(name) ?? 0) - (before.get(name) ?? 0), 3)]),
    );
    const layouts = change.LayoutCount || 1;
    console.log(
      JSON.stringify(
        {
          machines: MACHINES,
          eventsPerSecond: RATE,
          seconds: round((performance.now() - started) / 1000),
          scriptFetches: sent,
          fullTableMs: round(tableMs),
          frames: gaps.length,
          frameGapMs: { p50: at(0.5), p95: at(0.95), max: at(1) },
          framesOver100Ms: gaps.filter((gap) => gap > 100).length,
          layoutMsPerLayout: round(((change.LayoutDuration ?? 0) * 1000) / layouts),
          devtoolsSeconds: change,
        },
        null,
        2,
      ),
    );
  } finally {
    await browser.close();
  }
} finally {
  if (server?.exitCode === null) server.kill('SIGTERM');
  await rm(dir, { recursive: true, force: true });
  await rm(profile, { recursive: true, force: true });
}

function round(value: number, digits = 1): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}
