import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { loadConfigText } from '../../src/inventory/load.js';
import type { Mac } from '../../src/inventory/mac.js';
import type { Config } from '../../src/inventory/schema.js';
import type { MachineEventInput } from '../../src/lifecycle/events.js';
import { startTftpServer, type TftpServer, type TftpStats } from '../../src/tftp/server.js';
import { waitUntil } from '../helpers/poll.js';

/** The files every TFTP test serves; contents random so a wrong byte anywhere shows. */
export interface AssetsFixture {
  root: string;
  /** A file outside the root that escapes try to reach. */
  secretPath: string;
  files: Record<'one' | 'forty' | 'exactBlocks' | 'empty' | 'small', { name: string; content: Buffer }>;
  remove(): Promise<void>;
}

export async function createAssets(options: { withForty?: boolean } = {}): Promise<AssetsFixture> {
  const base = await mkdtemp(join(tmpdir(), 'rackboot-tftp-'));
  const root = join(base, 'assets');
  await mkdir(join(root, 'sub'), { recursive: true });
  const secretPath = join(base, 'secret.txt');
  await writeFile(secretPath, 'outside the root\n');
  const files = {
    one: { name: 'one.bin', content: randomBytes(1 << 20) },
    // 40 MiB at 512-byte blocks is 81920 blocks: past 65535, so the block number wraps.
    forty: { name: 'forty.bin', content: options.withForty ? randomBytes(40 << 20) : Buffer.alloc(0) },
    // A multiple of both 512 and 1468: the transfer must end with an empty DATA block.
    exactBlocks: { name: 'sub/exact.bin', content: randomBytes(512 * 1468) },
    empty: { name: 'empty.bin', content: Buffer.alloc(0) },
    small: { name: 'small.txt', content: Buffer.from('hello from rackboot\n') },
  };
  for (const file of Object.values(files)) await writeFile(join(root, file.name), file.content);
  await symlink(secretPath, join(root, 'escape-link'));
  await symlink('sub', join(root, 'inside-link'));
  return { root, secretPath, files, remove: () => rm(base, { recursive: true, force: true }) };
}

export interface RunningServer {
  server: TftpServer;
  port: number;
  events: MachineEventInput[];
  config: Config;
  /** Resolves once `predicate` holds for the recorded events (polled, bounded). */
  waitForEvents(predicate: (events: MachineEventInput[]) => boolean, timeoutMs?: number): Promise<void>;
  waitForStats(predicate: (stats: TftpStats) => boolean, timeoutMs?: number): Promise<void>;
}

export interface TestServerOptions {
  listen?: string;
  tftp?: Record<string, number>;
  macs?: Record<string, Mac>;
}

/** The config a test server runs with: `root` as the assets, `options.tftp` over the defaults. */
export async function loadTestConfig(
  root: string,
  options: Omit<TestServerOptions, 'macs'> = {},
): Promise<Config> {
  const tftp = { port: 0, listen: options.listen ?? '127.0.0.1', ...options.tftp };
  // port 0 is outside the schema's range: load with a placeholder, then ask the kernel for a port.
  const yaml = `server:\n  address: 10.77.20.1\n  assets: ${JSON.stringify(root)}\n  tftp: ${JSON.stringify({ ...tftp, port: 6969 })}\n`;
  const loaded = await loadConfigText(yaml, join(root, '..', 'rackboot.yaml'));
  if (!loaded.ok) throw new Error(`fixture config invalid: ${JSON.stringify(loaded.problems)}`);
  return {
    ...loaded.config,
    server: {
      ...loaded.config.server,
      tftp: { ...loaded.config.server.tftp, port: tftp.port === 0 ? 0 : tftp.port },
    },
  };
}

export async function startTestServer(root: string, options: TestServerOptions = {}): Promise<RunningServer> {
  const config = await loadTestConfig(root, options);
  const events: MachineEventInput[] = [];
  const server = await startTftpServer({
    config: () => config,
    record: async (event) => {
      events.push(event);
    },
    logger: pino({ level: process.env.TFTP_TEST_LOG ?? 'silent' }),
    macForIp: (ip) => options.macs?.[ip],
  });
  return {
    server,
    port: server.address().port,
    events,
    config,
    waitForEvents: (predicate, timeoutMs) => pollUntil(() => predicate(events), 'events', timeoutMs),
    waitForStats: (predicate, timeoutMs) => pollUntil(() => predicate(server.stats()), 'stats', timeoutMs),
  };
}

async function pollUntil(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  if (!(await waitUntil(condition, timeoutMs, 20))) {
    throw new Error(`${what} not as expected within ${timeoutMs} ms`);
  }
}
