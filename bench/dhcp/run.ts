/**
 * DHCP benchmark (not part of the tests): full DORAs/s and DISCOVER→ACK latency for PXE clients
 * against rackboot, dnsmasq and Kea, each started by this script inside a network namespace, with
 * the same load client (test/dhcp/dora-client.ts) in a second namespace.
 *   npm run bench:dhcp -- [--clients 2000] [--concurrency 64,16] [--rounds 2] [--only rackboot,rackboot-inline,kea,dnsmasq]
 * The peers run in turn, `rounds` times, each on a fresh lease store; the best round of each peer
 * is compared, which filters out moments when other work on the host took the CPU. 2,000 measured
 * clients (the figure) last well under a second; `--clients 10000` runs for seconds, so
 * that one hiccup of the host weighs less in the p99.
 * Namespaces on 10.77.200.0/24; the pool is 10.77.200.2–10.77.247.254 (12,285 addresses, enough
 * for the warm-up and 10,000 measured clients) inside 10.77.192.0/18.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stopChild } from '../../src/lab/network.js';
import type { DoraResult } from '../../test/dhcp/dora-client.js';
import { requireTools, waitForOutput } from '../../test/helpers/netns.js';
import {
  compiledScript,
  cpuTimeMs,
  numberOption,
  REPO_ROOT,
  serverNodeOptions,
  startDoraLoad,
  startNamespaceBench,
  textOption,
} from '../plumbing.js';

const LAUNCH = fileURLToPath(new URL('../../test/dhcp/launch.ts', import.meta.url));

const CLIENTS = numberOption('clients', 2000);
/**
 * Outstanding DORAs, one measured run per value and peer: 64 saturates every peer here (its p99 is
 * then mostly Little's law, 64 ÷ the rate); 16 is a busy network below saturation.
 */
const CONCURRENCIES = (textOption('concurrency') ?? '64,16').split(',').map(Number);
const ROUNDS = numberOption('rounds', 2);
/** Warms the JIT of the Node peers (and Kea's and dnsmasq's caches) before the measured clients. */
const WARMUP_CLIENTS = 2000;
/** `--only rackboot,kea`: the peers to run (dnsmasq's NAK storm makes its rounds the slowest). */
const ONLY = textOption('only')?.split(',');

const SERVER = '10.77.200.1';
const SUBNET = '10.77.192.0/18';
const NETMASK = '255.255.192.0';
const POOL: [string, string] = ['10.77.200.2', '10.77.247.254'];

await requireTools('ip', 'dnsmasq', 'kea-dhcp4');
const { pair, directory, cleanup } = await startNamespaceBench(200, 'dhcp');

interface Peer {
  name: string;
  /** Starts the server in the server namespace; resolves when it serves. */
  start(state: string): Promise<ChildProcess>;
  durability: string;
}

/**
 * rackboot as `serve` runs it, on a thread of its own (dhcp/thread.ts); `rackboot-inline` runs the
 * same server on the process's main thread, as before the thread, to show what the thread costs.
 */
function rackbootPeer(name: string, launchFlags: string[]): Peer {
  return {
    name,
    durability: 'O_DSYNC write (group commit) before each ACK',
    async start(state) {
      const config = join(state, 'rackboot.yaml');
      await writeFile(
        config,
        [
          'server:',
          `  address: ${SERVER}`,
          `  state: ${state}`,
          `  assets: ${state}`,
          'dhcp:',
          '  mode: authoritative',
          `  subnet: ${SUBNET}`,
          `  range: [${POOL.join(', ')}]`,
          `  router: ${SERVER}`,
          `  dns: [${SERVER}]`,
          '  lease_time: 1h',
          'unknown_machines: coreos',
          'profiles:',
          '  coreos: { kind: linux, kernel: vmlinuz, initrd: [initrd.img] }',
        ].join('\n'),
      );
      const child = pair.server.spawn(
        process.execPath,
        [...serverNodeOptions(), await compiledScript(LAUNCH), config, ...launchFlags],
        { cwd: REPO_ROOT },
      );
      await waitForOutput(child, (line) => line === 'READY', 30_000);
      return child;
    },
  };
}

const peers: Peer[] = [
  rackbootPeer('rackboot', ['--thread']),
  rackbootPeer('rackboot-inline', []),
  {
    name: 'kea',
    durability: 'memfile CSV append, no fsync',
    async start(state) {
      const config = join(state, 'kea.json');
      await writeFile(
        config,
        JSON.stringify({
          Dhcp4: {
            'interfaces-config': { interfaces: [pair.serverInterface] },
            'lease-database': {
              type: 'memfile',
              persist: true,
              name: join(state, 'kea-leases4.csv'),
              'lfc-interval': 0,
            },
            'valid-lifetime': 3600,
            subnet4: [
              {
                id: 1,
                subnet: SUBNET,
                pools: [{ pool: `${POOL[0]} - ${POOL[1]}` }],
                'next-server': SERVER,
                'boot-file-name': 'undionly.kpxe',
                'option-data': [
                  { name: 'routers', data: SERVER },
                  { name: 'domain-name-servers', data: SERVER },
                ],
              },
            ],
            // INFO would log every lease; WARN keeps Kea's per-packet work to the protocol.
            loggers: [{ name: 'kea-dhcp4', output_options: [{ output: 'stdout' }], severity: 'WARN' }],
          },
        }),
      );
      const child = pair.server.spawn('kea-dhcp4', ['-c', config], {
        env: { ...process.env, KEA_PIDFILE_DIR: state, KEA_LOCKFILE_DIR: state },
      });
      // Logged (at WARN) once the configuration, sockets included, is applied.
      await waitForOutput(child, (line) => line.includes('DHCP4_MULTI_THREADING_INFO'), 30_000);
      return child;
    },
  },
  {
    name: 'dnsmasq',
    durability: 'lease file rewritten, no fsync',
    async start(state) {
      const child = pair.server.spawn('dnsmasq', [
        '--no-daemon',
        '--no-ping',
        '--port=0',
        `--interface=${pair.serverInterface}`,
        '--bind-interfaces',
        `--dhcp-range=${POOL[0]},${POOL[1]},${NETMASK},1h`,
        `--dhcp-leasefile=${join(state, 'dnsmasq.leases')}`,
        `--pid-file=${join(state, 'dnsmasq.pid')}`,
        '--dhcp-boot=undionly.kpxe',
        '--dhcp-authoritative',
        '--dhcp-lease-max=100000',
        `--dhcp-option=3,${SERVER}`,
        '--log-facility=-',
        '--quiet-dhcp',
        '--conf-file=/dev/null',
      ]);
      await waitForOutput(child, (line) => line.includes('DHCP, IP range'), 30_000);
      return child;
    },
  },
];

interface Row {
  name: string;
  concurrency: number;
  durability: string;
  rate: number;
  result: DoraResult;
  /** Server CPU time (user + system) per full DORA: what the server costs, whatever else runs. */
  cpuMsPerDora: number;
}

const rows: Row[] = [];
try {
  for (let round = 1; round <= ROUNDS; round += 1) {
    for (const concurrency of CONCURRENCIES)
      for (const [index, peer] of peers.entries()) {
        if (ONLY && !ONLY.includes(peer.name)) continue;
        const state = join(directory, `${peer.name}-${round}-${concurrency}`);
        await mkdir(state, { recursive: true });
        const child = await peer.start(state);
        // One client process warms itself and the server up (JIT, caches) on its first clients, then
        // measures the rest: neither side's start-up lands in the figures, whichever peer runs.
        const load = await startDoraLoad(pair.client, {
          mode: 'dora',
          concurrency,
          pxe: true,
          timeoutMs: 1000,
          // dnsmasq leases a few clients a second (docs/dhcp.md): its runs end at these deadlines.
          deadlineMs: 120_000,
          clients: CLIENTS,
          macPrefix: `52:54:${(index + 0xb0).toString(16)}`,
          warmupClients: WARMUP_CLIENTS,
          warmupMacPrefix: `52:55:${(index + 0xa0).toString(16)}`,
          warmupDeadlineMs: 30_000,
        });
        await load.warmed;
        const cpuBefore = await cpuTimeMs(child.pid);
        const result = await load.result;
        const cpuMsPerDora = ((await cpuTimeMs(child.pid)) - cpuBefore) / result.acked.length;
        await stopChild(child, 5000);
        const rate = (result.acked.length / result.durationMs) * 1000;
        rows.push({ name: peer.name, concurrency, durability: peer.durability, rate, result, cpuMsPerDora });
        process.stdout.write(
          `round ${round} c${concurrency} ${peer.name.padEnd(9)} ${rate.toFixed(0).padStart(6)} DORA/s  p50 ${result.latencyMs.p50.toFixed(2)} ms  ` +
            `p99 ${result.latencyMs.p99.toFixed(2)} ms  acked ${result.acked.length}/${CLIENTS}  ` +
            `retries ${result.retries}  naks ${result.naks}  server CPU ${(cpuMsPerDora * 1000).toFixed(0)} µs/DORA  ` +
            `load client CPU ${((result.cpuMs / result.acked.length) * 1000).toFixed(0)} µs/DORA  ` +
            `(${peer.durability})\n`,
        );
      }
  }
} finally {
  await cleanup();
}

for (const concurrency of CONCURRENCIES) {
  const best = (name: string) =>
    rows
      .filter((row) => row.name === name && row.concurrency === concurrency)
      .sort((a, b) => b.rate - a.rate)[0];
  const ours = best('rackboot');
  process.stdout.write(`\n${CLIENTS} PXE clients, concurrency ${concurrency}, best of ${ROUNDS} rounds:\n`);
  for (const name of ['rackboot', 'rackboot-inline', 'kea', 'dnsmasq']) {
    const row = best(name);
    if (!row) continue;
    const ratio = ours ? ` rackboot/${name} ${(ours.rate / row.rate).toFixed(2)}x` : '';
    process.stdout.write(
      `  ${name.padEnd(9)} ${row.rate.toFixed(0).padStart(6)} DORA/s  p50 ${row.result.latencyMs.p50.toFixed(2)} ms  ` +
        `p99 ${row.result.latencyMs.p99.toFixed(2)} ms  CPU ${(row.cpuMsPerDora * 1000).toFixed(0)} µs/DORA ` +
        `${name === 'rackboot' ? '' : ratio}\n`,
    );
  }
}
