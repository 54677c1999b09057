/**
 * The rackboot server the HTTP benches measure: its directory (a `rackboot.yaml` with N machines
 * of one Fedora CoreOS profile, boot assets, and ignition/worker.bu, whose {{hostname}} makes the
 * load-time template check render once per machine), free ports, readiness and memory.
 * bench/http/run.ts serves it under load; bench/http/startup-rss.ts measures its start-up peak.
 */
import { createSocket } from 'node:dgram';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { type AddressInfo, createServer } from 'node:net';
import { join } from 'node:path';
import type { Mac } from '../../src/boot-plan.js';
import { COREOS_PROFILE_YAML } from '../../test/ignition/boot-fixture.js';
import { REPO_ROOT, serverNodeOptions } from '../plumbing.js';

export interface HttpBenchFixture {
  machines: number;
  httpPort: number;
  tftpPort: number;
}

/** Writes the config and its files into `dir`; returns the machines' MACs in config order. */
export async function writeHttpBenchFixture(dir: string, fixture: HttpBenchFixture): Promise<Mac[]> {
  const macs = Array.from({ length: fixture.machines }, (_, index) => {
    const hex = (index + 1).toString(16).padStart(6, '0');
    return `52:54:01:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4, 6)}` as Mac;
  });
  const machines = macs
    .map(
      (mac, index) =>
        `  - { mac: "${mac}", hostname: node${index + 1}, profile: worker, vars: { role: worker } }`,
    )
    .join('\n');
  await mkdir(join(dir, 'assets', 'fcos'), { recursive: true });
  await mkdir(join(dir, 'ignition'), { recursive: true });
  for (const file of ['kernel', 'initramfs.img', 'rootfs.img'])
    await writeFile(join(dir, 'assets', 'fcos', file), file);
  await writeFile(
    join(dir, 'ignition', 'worker.bu'),
    await readFile(join(REPO_ROOT, 'ignition', 'worker.bu'), 'utf8'),
  );
  await writeFile(
    join(dir, 'rackboot.yaml'),
    `server:
  address: 127.0.0.1
  http: { port: ${fixture.httpPort}, listen: 127.0.0.1 }
  tftp: { port: ${fixture.tftpPort}, listen: 127.0.0.1 }
  assets: assets
  state: state
  log_level: warn
dhcp: { mode: "off" }
# Every request's event recorded, as a real fleet's are: the load comes from one address, which the
# default events.http_rate would leave unrecorded after its first 50 events.
events: { http_rate: 0 }
profiles:
  worker:
${COREOS_PROFILE_YAML}
machines:
${machines}
`,
  );
  return macs;
}

/** A port the kernel says is free now (other engineers' servers share this machine). */
export async function freePort(kind: 'tcp' | 'udp'): Promise<number> {
  if (kind === 'udp') {
    const socket = createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    const { port } = socket.address();
    socket.close();
    return port;
  }
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Resident (VmRSS) and peak resident (VmHWM) memory of a process in MB, from /proc. */
export async function processMemoryMB(pid: number | undefined): Promise<{ rss: number; peak: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const megabytes = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1]) / 1024;
  return {
    rss: Math.round(megabytes('VmRSS') * 100) / 100,
    peak: Math.round(megabytes('VmHWM') * 100) / 100,
  };
}

/** Resolves once `url` answers `status`; polls for up to a minute. */
export async function waitForHttp(url: string, status = 200): Promise<void> {
  for (let attempt = 0; attempt < 600; attempt++) {
    const answered = await fetch(url)
      .then((response) => response.status)
      .catch(() => 0);
    if (answered === status) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${url} did not answer ${status}`);
}

/** Node arguments that start `rackboot serve` as the benches do: the executable's V8 flags, warnings only. */
export function serveArguments(configFile: string, profileDir?: string): string[] {
  return [
    ...serverNodeOptions(profileDir),
    'bin/rackboot.js',
    'serve',
    '-c',
    configFile,
    '--log-level',
    'warn',
  ];
}
