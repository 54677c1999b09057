/**
 * HTTP benchmark (not part of the tests), all on loopback, every peer started by this script:
 *   npm run bench:http -- [--machines 10000] [--seconds 10] [--connections 16] [--cpu-prof DIR]
 * 1. rackboot (`rackboot serve`, DHCP off, TFTP on loopback) with N machines: per-machine iPXE
 *    scripts and Ignition configs, each request for a random machine (wrk Lua), req/s, p99, RSS.
 * 2. A plain node:http handler returning a fixed text of the script's size: the Node ceiling.
 * 3. A 64 MiB asset: rackboot /assets/ vs nginx (started here with a temporary config) in MB/s.
 * Each server process's CPU per request (all threads) is reported beside its req/s. Ratios are
 * computed from this one run.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openMachineSecrets } from '../../src/ignition/tokens.js';
import { macInUrl } from '../../src/ignition/vars.js';
import { cpuTimeMs, numberOption, REPO_ROOT, textOption } from '../plumbing.js';
import {
  freePort,
  processMemoryMB,
  serveArguments,
  waitForHttp,
  writeHttpBenchFixture,
} from './bench-server.js';

const execFileAsync = promisify(execFile);
const MACHINES = numberOption('machines', 10_000);
const SECONDS = numberOption('seconds', 10);
const CONNECTIONS = numberOption('connections', 16);
const ASSET_BYTES = 64 * 1024 * 1024;
/** `--cpu-prof DIR`: the rackboot server writes a V8 CPU profile there when it stops. */
const PROFILE_DIR = textOption('cpu-prof');

interface WrkResult {
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  megabytesPerSecond: number;
  errors: string;
}

interface ServerCpu {
  /** CPU time of the server process, all threads, per request answered (µs). */
  serverCpuUsPerRequest: number;
}

const children: ChildProcess[] = [];
const RACKBOOT_PORT = await freePort('tcp');
const NGINX_PORT = await freePort('tcp');
const TFTP_PORT = await freePort('udp');

async function main(): Promise<void> {
  for (const tool of ['wrk', 'nginx'])
    await execFileAsync('sh', ['-c', `command -v ${tool}`]).catch(() => {
      throw new Error(`the bench needs ${tool} (.ci/apt-packages.txt)`);
    });
  const dir = await mkdtemp(join(tmpdir(), 'rackboot-bench-http-'));
  try {
    // The built server, as `npx rackboot serve` runs it (no TypeScript loader in the measured process).
    await execFileAsync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: REPO_ROOT, timeout: 300_000 });
    const macs = await writeHttpBenchFixture(dir, {
      machines: MACHINES,
      httpPort: RACKBOOT_PORT,
      tftpPort: TFTP_PORT,
    });
    await writeFile(join(dir, 'assets', 'big.img'), Buffer.alloc(ASSET_BYTES, 0x5a));
    const rackboot = await startProcess(
      process.execPath,
      serveArguments(join(dir, 'rackboot.yaml'), PROFILE_DIR),
      undefined,
    );
    await waitForHttp(`http://127.0.0.1:${RACKBOOT_PORT}/boot.ipxe`).catch((error: Error) => {
      throw new Error(`${error.message}; server output: ${rackboot.output()}`);
    });
    const rssAfterStart = await processMemoryMB(rackboot.child.pid);
    const secrets = await openMachineSecrets(join(dir, 'state'));
    const scriptPaths = macs.map((mac) => `/boot/${macInUrl(mac)}.ipxe?arch=x86_64&platform=efi`);
    const ignitionPaths = macs.map(
      (mac) => `/ignition/${macInUrl(mac)}.ign?token=${secrets.tokenFor(mac, 'ignition', Date.now())}`,
    );
    const sample = await fetch(`http://127.0.0.1:${RACKBOOT_PORT}${scriptPaths[0]}`).then((response) =>
      response.text(),
    );
    const ignitionSample = await fetch(`http://127.0.0.1:${RACKBOOT_PORT}${ignitionPaths[0]}`);
    if (ignitionSample.status !== 200)
      throw new Error(`Ignition answered ${ignitionSample.status}: ${await ignitionSample.text()}`);

    const scriptLua = await pathsLua(dir, 'scripts.lua', scriptPaths);
    const ignitionLua = await pathsLua(dir, 'ignition.lua', ignitionPaths);
    // Warm-up (JIT, template cache), not measured.
    await wrk(`http://127.0.0.1:${RACKBOOT_PORT}`, 2, CONNECTIONS, scriptLua);
    await wrk(`http://127.0.0.1:${RACKBOOT_PORT}`, 2, CONNECTIONS, ignitionLua);
    const rackbootPid = rackboot.child.pid;
    const scripts = await wrkWithCpu(
      rackbootPid,
      `http://127.0.0.1:${RACKBOOT_PORT}`,
      CONNECTIONS,
      scriptLua,
    );
    const ignition = await wrkWithCpu(
      rackbootPid,
      `http://127.0.0.1:${RACKBOOT_PORT}`,
      CONNECTIONS,
      ignitionLua,
    );
    const rss = await processMemoryMB(rackboot.child.pid);

    const ceilings: Record<string, WrkResult & ServerCpu> = {};
    for (const kind of ['node', 'fastify']) {
      const peer = await startProcess(
        process.execPath,
        ['bench/http/plain-server.mjs', String(Buffer.byteLength(sample)), kind],
        /listening \d+/,
      );
      const port = Number(/listening (\d+)/.exec(peer.output())?.[1]);
      // The same request stream as rackboot's scripts (wrk's Lua picking a random machine's path):
      // without it the peer's load client does less per request, on the two cores both share.
      await wrk(`http://127.0.0.1:${port}`, 2, CONNECTIONS, scriptLua);
      ceilings[kind] = await wrkWithCpu(peer.child.pid, `http://127.0.0.1:${port}`, CONNECTIONS, scriptLua);
      peer.stop();
    }
    const ceiling = ceilings.node as WrkResult & ServerCpu;

    const assetConnections = 4;
    const rackbootAsset = await wrk(
      `http://127.0.0.1:${RACKBOOT_PORT}/assets/big.img`,
      SECONDS,
      assetConnections,
    );
    rackboot.stop();
    const nginx = await startNginx(dir);
    await waitForHttp(`http://127.0.0.1:${NGINX_PORT}/boot.ipxe`, 404);
    const nginxAsset = await wrk(`http://127.0.0.1:${NGINX_PORT}/big.img`, SECONDS, assetConnections);
    nginx.stop();

    const report = {
      machines: MACHINES,
      seconds: SECONDS,
      connections: CONNECTIONS,
      scriptBytes: Buffer.byteLength(sample),
      scripts,
      ignition,
      plainNodeHttp: ceiling,
      plainFastify: ceilings.fastify,
      rackbootRssMB: { afterStart: rssAfterStart, afterLoad: rss },
      assets64MiB: { rackboot: rackbootAsset, nginx: nginxAsset, connections: assetConnections },
      ratios: {
        scriptsVsPlainNode: round(scripts.requestsPerSecond / ceiling.requestsPerSecond),
        scriptsVsPlainFastify: round(
          scripts.requestsPerSecond / (ceilings.fastify?.requestsPerSecond ?? Number.NaN),
        ),
        ignitionVsPlainNode: round(ignition.requestsPerSecond / ceiling.requestsPerSecond),
        scriptServerCpuVsPlainNode: round(scripts.serverCpuUsPerRequest / ceiling.serverCpuUsPerRequest),
        assetsVsNginx: round(rackbootAsset.megabytesPerSecond / nginxAsset.megabytesPerSecond),
      },
      targets: {
        scriptsVsPlainNode: '>= 0.8',
        scriptsP99Ms: '<= 5',
        rssMB: '<= 200',
        assetsVsNginx: '>= 0.9',
      },
    };
    console.log(JSON.stringify(report, null, 2));
  } finally {
    for (const child of children) if (child.exitCode === null) child.kill('SIGTERM');
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * `wrk` for SECONDS against a server process, with the CPU that process used per request. On two
 * cores shared with wrk, req/s alone cannot tell a server's own cost from waiting for the CPU.
 */
async function wrkWithCpu(
  pid: number | undefined,
  url: string,
  connections: number,
  lua?: string,
): Promise<WrkResult & ServerCpu> {
  const before = await cpuTimeMs(pid);
  const result = await wrk(url, SECONDS, connections, lua);
  const usedMs = (await cpuTimeMs(pid)) - before;
  return { ...result, serverCpuUsPerRequest: round((usedMs * 1000) / (result.requestsPerSecond * SECONDS)) };
}

/** A wrk Lua script requesting a random one of `paths` each time. */
async function pathsLua(dir: string, name: string, paths: string[]): Promise<string> {
  const file = join(dir, name);
  const table = paths.map((path) => `"${path}"`).join(',\n');
  await writeFile(
    file,
    `local paths = {\n${table}\n}\nmath.randomseed(42)\nrequest = function()\n  return wrk.format("GET", paths[math.random(#paths)])\nend\n`,
  );
  return file;
}

async function wrk(url: string, seconds: number, connections: number, lua?: string): Promise<WrkResult> {
  const args = [
    '-t1',
    `-c${connections}`,
    `-d${seconds}s`,
    '--latency',
    '--timeout',
    '10s',
    ...(lua ? ['-s', lua] : []),
    url,
  ];
  const { stdout } = await execFileAsync('wrk', args, { timeout: (seconds + 30) * 1000 });
  const latency = (label: string) => {
    const match = new RegExp(`${label}%\\s+([\\d.]+)(us|ms|s)`).exec(stdout);
    if (!match) return Number.NaN;
    const value = Number(match[1]);
    return round(match[2] === 'us' ? value / 1000 : match[2] === 's' ? value * 1000 : value);
  };
  const transfer = /Transfer\/sec:\s+([\d.]+)(B|KB|MB|GB)/.exec(stdout);
  const unit: Record<string, number> = { B: 1 / 1024 / 1024, KB: 1 / 1024, MB: 1, GB: 1024 };
  return {
    requestsPerSecond: Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1]),
    p50Ms: latency('50'),
    p99Ms: latency('99'),
    megabytesPerSecond: transfer ? round(Number(transfer[1]) * (unit[transfer[2] ?? 'MB'] ?? 1)) : Number.NaN,
    errors: /(Non-2xx.*|Socket errors.*)/.exec(stdout)?.[0] ?? 'none',
  };
}

async function startNginx(dir: string) {
  const config = join(dir, 'nginx.conf');
  await writeFile(
    config,
    `daemon off;
master_process off;
worker_processes 1;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'nginx-error.log')} warn;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path ${join(dir, 'nginx-body')};
  proxy_temp_path ${join(dir, 'nginx-proxy')};
  fastcgi_temp_path ${join(dir, 'nginx-fastcgi')};
  uwsgi_temp_path ${join(dir, 'nginx-uwsgi')};
  scgi_temp_path ${join(dir, 'nginx-scgi')};
  server {
    listen 127.0.0.1:${NGINX_PORT};
    root ${join(dir, 'assets')};
  }
}
`,
  );
  return startProcess('nginx', ['-c', config, '-p', dir, '-e', join(dir, 'nginx-error.log')], undefined);
}

function startProcess(command: string, args: string[], ready: RegExp | undefined) {
  const child = spawn(command, args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let output = '';
  const collect = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-20_000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const handle = {
    child,
    output: () => output,
    stop: () => child.exitCode === null && child.kill('SIGTERM'),
  };
  if (!ready) return handle;
  return new Promise<typeof handle>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${command} not ready in 60 s: ${output}`)), 60_000);
    const check = () => {
      if (ready.test(output)) {
        clearTimeout(timer);
        resolve(handle);
      }
    };
    child.stdout?.on('data', check);
    child.stderr?.on('data', check);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${command} exited ${code}: ${output}`));
    });
  });
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}

await main();
