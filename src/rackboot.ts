import { join } from 'node:path';
import { claimDhcpPort } from './dhcp/port-claim.js';
import type { DhcpServer } from './dhcp/server.js';
import { startDhcpThread } from './dhcp/thread.js';
import { holdFileLock } from './file-lock.js';
import { buildApp } from './http/app.js';
import { openOperatorToken, operatorTokenFile } from './http/operator-token.js';
import { openMachineSecrets, SECRET_FILE_NAME } from './ignition/tokens.js';
import { baseUrlOf } from './ignition/vars.js';
import { adoptIntoServer } from './inventory/adopt.js';
import { createBootDecision } from './inventory/decision.js';
import { loadConfigInWorker } from './inventory/load-in-worker.js';
import type { Mac } from './inventory/mac.js';
import { formatProblem, type Problem } from './inventory/problems.js';
import type { Config } from './inventory/schema.js';
import { type ConfigSource, watchConfig } from './inventory/source.js';
import { stateDirectoryProblem } from './inventory/validate-checks.js';
import type { MachineRecord } from './lifecycle/states.js';
import { giveHistoryToStateOwner, openLifecycle } from './lifecycle/store.js';
import { componentLogger, type Logger } from './log.js';
import { announceRunningServer } from './running-server.js';
import { StateError } from './state-error.js';
import { startTftpServer } from './tftp/server.js';

/** Held by the server using a state directory, for as long as it runs. */
export const SERVE_LOCK_PATH = 'serve.lock';

/** Startup refused because of the config; each problem is one FILE:LINE:COL line. */
export class ConfigProblemsError extends Error {
  constructor(readonly problems: Problem[]) {
    super(problems.map((problem) => formatProblem(problem)).join('\n'));
  }
}

/** Where a server binds, named by the config keys that choose it. */
export interface BindTarget {
  portKey: string;
  port: number;
  /** Absent when the address is fixed (DHCP listens on 0.0.0.0 for broadcasts). */
  addressKey?: string;
  address: string;
  /** What to do when the port is taken, where stopping the other server or moving the port is wrong. */
  inUseAdvice?: string;
}

/** A server could not bind its socket (port taken, privileged, address not on this host). */
export class BindError extends Error {
  constructor(
    readonly target: BindTarget,
    readonly code: string,
    options: { cause: unknown },
  ) {
    super(`cannot bind ${target.address}:${target.port} (${code})`, options);
  }
}

const PROXY_DHCP_PORT_IN_USE_ADVICE =
  "proxy mode shares it with the LAN's DHCP server on this host only if that server binds its " +
  'interface address instead of 0.0.0.0 (dnsmasq: bind-interfaces); see docs/dhcp.md';

const PROXY_BOOT_SERVER_PORT_IN_USE_ADVICE =
  'another PXE boot server (dnsmasq with pxe-service, pixiecore) holds it, and proxy mode sends every ' +
  'UEFI PXE client there (dhcp.uefi_proxy_style: boot-server): stop that server, or set ' +
  'dhcp.uefi_proxy_style: direct, which needs no boot-server port';

/** Errors of bind(2) and listen(2) that a config change fixes. */
const BIND_ERROR_CODES = new Set(['EADDRINUSE', 'EACCES', 'EADDRNOTAVAIL']);

/**
 * A server's start, with a failure of bind(2) or listen(2) itself turned into a BindError. Other
 * errors of the same codes (an EACCES opening the lease log) are not about the port and pass as they are.
 */
function binding<T>(target: BindTarget, start: Promise<T>, otherTargets: BindTarget[] = []): Promise<T> {
  return start.catch((error: unknown) => {
    const { code, syscall, port } = error as NodeJS.ErrnoException & { port?: number };
    const bindFailure = code && BIND_ERROR_CODES.has(code) && (syscall === 'bind' || syscall === 'listen');
    const failed = otherTargets.find((other) => other.port === port && other.port !== target.port) ?? target;
    throw bindFailure ? new BindError(failed, code, { cause: error }) : error;
  });
}

/**
 * The DHCP port's claim in this network namespace (dhcp/port-claim.ts), or a BindError naming the
 * rackboot that holds it: the shared bind alone would let a second one answer every client too.
 */
async function claimDhcp(target: BindTarget, state: string): Promise<() => Promise<void>> {
  const claim = await claimDhcpPort(target.port, { pid: process.pid, state });
  if (claim.claimed) return claim.release;
  const holder = claim.heldBy
    ? `another rackboot serve (pid ${claim.heldBy.pid}, server.state ${claim.heldBy.state})`
    : 'another rackboot serve';
  const inUseAdvice =
    `${holder} answers DHCP on it in this network namespace, and two would both answer every client ` +
    '(in authoritative mode handing out the same addresses): stop one, or set dhcp.mode: off in one';
  throw new BindError({ ...target, inUseAdvice }, 'EADDRINUSE', { cause: claim });
}

/** Up to this many machines are named in the warning below; more are counted. */
const RETIRED_TOKENS_NAMED = 10;

/**
 * The machine secret was just made, but the history knows machines: the Ignition and events URLs
 * they were handed were signed with a secret that is gone (the file was removed or emptied), so
 * this server refuses them. Without this line an operator sees only their 403s.
 */
function warnTokensRetired(logger: Logger, state: string, machines: MachineRecord[]): void {
  if (machines.length === 0) return;
  const macs = machines.map((machine) => machine.mac);
  const which =
    macs.length <= RETIRED_TOKENS_NAMED ? `machines ${macs.join(', ')}` : `${macs.length} machines`;
  logger.warn(
    { file: join(state, SECRET_FILE_NAME), machines: macs.length },
    `made a new machine secret ${join(state, SECRET_FILE_NAME)}, but the history under ${state} has ${which}: the Ignition and events URLs they were handed before no longer work (403); one in the middle of an install needs a new network boot`,
  );
}

export interface RunningRackboot {
  source: ConfigSource;
  logger: Logger;
  /** The URL the HTTP server answers on (for tests and `lab`). */
  httpUrl: string;
  /** Closes sockets in reverse start order, then flushes and closes the state store. */
  close(): Promise<void>;
}

/**
 * Wiring: config source → event store → boot decision → servers. The only module that knows every
 * component; each server gets the narrow functions it needs, never the others.
 */
export async function startRackboot(options: {
  configFile: string;
  /** Made once the config is known, so server.log_level applies to every component logger. */
  makeLogger: (config: Config) => Logger;
  /** For $RACKBOOT_API_TOKEN. */
  env: Record<string, string | undefined>;
  /** Start-time settings the command line sets over the file's, by dotted name (`server.log_level`). */
  setOnCommandLine?: readonly string[];
}): Promise<RunningRackboot> {
  const load = (file: string) => loadConfigInWorker({ file, missingAssets: 'error', env: options.env });
  const loadedAt = Date.now();
  const loaded = await load(options.configFile);
  if (!loaded.ok) throw new ConfigProblemsError(loaded.problems);
  const initial = loaded.config;
  const logger = options.makeLogger(initial);
  for (const warning of loaded.warnings) logger.warn(formatProblem(warning));
  for (const note of loaded.notes) logger.info(formatProblem(note));
  const stateProblem = await stateDirectoryProblem(initial, { create: true });
  if (stateProblem) throw new ConfigProblemsError([stateProblem]);
  const state = initial.server.state;
  // Two servers on one state would each keep their own lease table and hand out the same addresses;
  // the second one's start-up compaction would even move the lease log from under the first.
  const serveLock = join(state, SERVE_LOCK_PATH);
  const releaseState = await holdFileLock(serveLock, {
    task: 'serve',
    describeHolder: (pid) => `another rackboot serve (pid ${pid}) is using server.state ${state}`,
    remedy: `stop it first, or give this config a server.state of its own (if no such serve runs, remove ${serveLock})`,
    waitMs: 0,
    error: (message) => new StateError(message),
  });

  // Each part that starts adds its closer, so a failure further on closes what did start.
  const closers: (() => Promise<void>)[] = [releaseState];
  const close = async () => {
    for (const closer of closers.reverse()) {
      await closer().catch((error: unknown) => logger.error({ err: error }, 'error while shutting down'));
    }
  };

  try {
    const source = watchConfig(initial, {
      logger: componentLogger(logger, 'config'),
      load,
      loadedAt,
      setOnCommandLine: options.setOnCommandLine,
    });
    closers.push(async () => source.close());
    // The decision needs the store's states, the store the config's machines: while the store opens
    // (it forgets the oldest records past its bound there), the config's list answers.
    const listedAtStart = new Set(initial.machines.map((machine) => machine.mac));
    let listed = (mac: Mac) => listedAtStart.has(mac);
    const lifecycle = openLifecycle({
      stateDir: initial.server.state,
      retention: initial.events.retention,
      logger: componentLogger(logger, 'lifecycle'),
      listed: (mac) => listed(mac),
    });
    closers.push(() => lifecycle.close());
    await giveHistoryToStateOwner(initial.server.state);
    const decision = createBootDecision(source.current, lifecycle.stateOf, lifecycle.bootsFromDisk);
    listed = (mac) => decision.assignmentFor(mac)?.listed ?? false;
    const secrets = await openMachineSecrets(initial.server.state, () => source.current().ignition.token_ttl);
    if (secrets.created) warnTokensRetired(logger, initial.server.state, lifecycle.machines());
    const localOperatorToken = await openOperatorToken(initial.server.state);
    const dhcpTarget: BindTarget = {
      portKey: 'server.dhcp.port',
      port: initial.server.dhcp.port,
      address: '0.0.0.0',
      // The LAN's DHCP server must keep running, and PXE clients broadcast to port 67 only.
      ...(initial.dhcp.mode === 'proxy' ? { inUseAdvice: PROXY_DHCP_PORT_IN_USE_ADVICE } : {}),
    };
    if (initial.dhcp.mode !== 'off') closers.push(await claimDhcp(dhcpTarget, state));
    const dhcp: DhcpServer | undefined =
      initial.dhcp.mode === 'off'
        ? undefined
        : await binding(
            dhcpTarget,
            startDhcpThread({
              config: source.current(),
              onConfigChange: (listener) => source.on('change', listener),
              record: lifecycle.record,
              logger: componentLogger(logger, 'dhcp'),
            }),
            [
              {
                portKey: 'server.dhcp.proxy_port',
                port: initial.server.dhcp.proxy_port,
                address: '0.0.0.0',
                inUseAdvice: PROXY_BOOT_SERVER_PORT_IN_USE_ADVICE,
              },
            ],
          );
    if (dhcp) closers.push(() => dhcp.close());
    const macForIp = (ip: string) => dhcp?.macForIp(ip);
    const tftp = await binding(
      {
        portKey: 'server.tftp.port',
        port: initial.server.tftp.port,
        addressKey: 'server.tftp.listen',
        address: initial.server.tftp.listen,
      },
      startTftpServer({
        config: source.current,
        record: lifecycle.record,
        logger: componentLogger(logger, 'tftp'),
        macForIp,
      }),
    );
    closers.push(() => tftp.close());

    const app = await buildApp({
      config: source.current,
      decision,
      record: lifecycle.record,
      logger: componentLogger(logger, 'http'),
      secrets,
      macForIp: initial.dhcp.mode === 'authoritative' ? macForIp : undefined,
      lifecycle,
      adopt: (request) => adoptIntoServer(source, request),
      operatorToken: () => source.current().server.api_token ?? localOperatorToken,
      dhcpStats: dhcp ? () => dhcp.stats() : undefined,
      tftpStats: () => tftp.stats(),
      onConfigChange: (listener) => source.on('change', (_config, diff) => listener(diff)),
      configStatus: source.status,
    });
    closers.push(() => app.close());
    const { port, listen } = initial.server.http;
    await binding(
      { portKey: 'server.http.port', port, addressKey: 'server.http.listen', address: listen },
      app.listen({ port, host: listen }),
    );
    closers.push(
      await announceRunningServer(state, {
        pid: process.pid,
        url: baseUrlOf(initial),
        secretFingerprint: secrets.fingerprint,
      }),
    );
    const httpUrl = `http://${listen === '0.0.0.0' ? '127.0.0.1' : listen}:${port}`;
    logger.info(
      {
        address: initial.server.address,
        http: port,
        tftp: initial.server.tftp.port,
        dhcp: initial.dhcp.mode,
      },
      'rackboot serving',
    );
    if (!initial.server.api_token) {
      logger.info(
        { file: operatorTokenFile(initial.server.state) },
        'no server.api_token: the operator API takes the token in this file (the CLI on this host reads it)',
      );
    }
    return { source, logger, httpUrl, close };
  } catch (error) {
    await close();
    throw error;
  }
}
