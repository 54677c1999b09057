import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import type { Test } from 'tap';
import { buildApp } from '../src/http/app.js';
import type { DhcpCounters } from '../src/http/metrics.js';
import { createMachineSecrets, type MachineSecrets } from '../src/ignition/tokens.js';
import { adoptIntoServer } from '../src/inventory/adopt.js';
import { createBootDecision } from '../src/inventory/decision.js';
import { loadConfigFile } from '../src/inventory/load.js';
import { type Mac, parseMac } from '../src/inventory/mac.js';
import type { Config } from '../src/inventory/schema.js';
import { watchConfig } from '../src/inventory/source.js';
import type { MachineEvent } from '../src/lifecycle/events.js';
import {
  DATABASE_FILE_NAME,
  type EventFilter,
  type Lifecycle,
  openLifecycle,
} from '../src/lifecycle/store.js';

export const API_TOKEN = 'operator-token-0123456789';
export const LISTED_MAC = mac('52:54:00:12:34:56');
export const UNLISTED_MAC = mac('ac:1f:6b:00:00:07');

export const FIXTURE_YAML = `# rackboot test config
server:
  address: 10.77.0.1        # provisioning LAN
  api_token: ${API_TOKEN}
  state: state
  assets: assets

# two profiles; worker is the usual one
profiles:
  worker:
    kind: linux
    kernel: vmlinuz
    args: [console=ttyS0]   # serial console
  spare: { kind: linux, kernel: vmlinuz }

machines:
  # first rack
  - mac: ${LISTED_MAC}
    hostname: node1
    profile: worker
`;

export function mac(text: string): Mac {
  const parsed = parseMac(text);
  if (!parsed) throw new Error(`fixture MAC ${text}`);
  return parsed;
}

/** The store with its history parsed, as tests compare it (the server sends events as stored). */
export type TestLifecycle = Lifecycle & {
  /** Durable events with an id above `id`, oldest first. */
  eventsAfter(id: number, filter?: EventFilter): MachineEvent[];
};

export function withParsedHistory(lifecycle: Lifecycle): TestLifecycle {
  return {
    ...lifecycle,
    eventsAfter: (id, filter) =>
      lifecycle.storedEventsAfter(id, filter).map((stored) => JSON.parse(stored.event) as MachineEvent),
  };
}

export interface LifecycleFixture {
  app: FastifyInstance;
  lifecycle: TestLifecycle;
  secrets: MachineSecrets;
  configFile: string;
  config: () => Config;
}

/**
 * The real HTTP app (buildApp) over a real lifecycle store and config file in a temporary directory;
 * removed at teardown. The config is watched as `serve` watches it, and adoption reloads it as `serve` does.
 */
export async function startLifecycleApp(
  t: Test,
  yaml = FIXTURE_YAML,
  dhcpStats?: () => Promise<DhcpCounters>,
): Promise<LifecycleFixture> {
  const directory = mkdtempSync(join(tmpdir(), 'rackboot-api-'));
  const configFile = join(directory, 'rackboot.yaml');
  writeFileSync(configFile, yaml);
  const logger = pino({ level: 'silent' });
  const load = (file: string) => loadConfigFile(file, { missingAssets: 'warn', env: {} });
  const loaded = await load(configFile);
  if (!loaded.ok) throw new Error(`fixture config: ${JSON.stringify(loaded.problems)}`);
  // The server's own file watcher: an edit of the file applies as it does in `serve`.
  const source = watchConfig(loaded.config, { logger, load, debounceMs: 20 });
  const config = source.current;
  const lifecycle = openLifecycle({ stateDir: config().server.state, retention: 100_000, logger });
  const secrets = createMachineSecrets(randomBytes(32));
  const app = await buildApp({
    config,
    decision: createBootDecision(config, lifecycle.stateOf, lifecycle.bootsFromDisk),
    record: lifecycle.record,
    logger,
    secrets,
    lifecycle,
    ...(dhcpStats ? { dhcpStats } : {}),
    // Checked as its own loader checks: missing assets are warnings here.
    adopt: (request) => adoptIntoServer(source, request, { missingAssets: 'warn' }),
    onConfigChange: (listener) => source.on('change', (_config, diff) => listener(diff)),
    configStatus: source.status,
  });
  t.teardown(async () => {
    source.close();
    await app.close();
    await lifecycle.close();
    rmSync(directory, { recursive: true, force: true });
  });
  return { app, lifecycle: withParsedHistory(lifecycle), secrets, configFile, config };
}

/** Runs one statement on the history under `stateDir` beside its server, as sqlite3 would. */
export function editHistory(stateDir: string, sql: string, ...values: unknown[]): void {
  const side = new Database(join(stateDir, DATABASE_FILE_NAME));
  side.prepare(sql).run(...values);
  side.close();
}

/** Makes every history insert under `stateDir` fail, as on a full disk; returns the repair. */
export function failHistoryWrites(stateDir: string): () => void {
  editHistory(
    stateDir,
    `CREATE TRIGGER disk_full BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END`,
  );
  return () => editHistory(stateDir, 'DROP TRIGGER disk_full');
}
