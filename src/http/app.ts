import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
} from 'fastify';
import type { BootDecision, Mac } from '../boot-plan.js';
import type { MachineSecrets } from '../ignition/tokens.js';
import { parseMac } from '../inventory/mac.js';
import type { Config } from '../inventory/schema.js';
import type { ConfigDiff, ConfigStatus } from '../inventory/source.js';
import type { RecordEvent } from '../lifecycle/events.js';
import type { Lifecycle } from '../lifecycle/store.js';
import type { Logger } from '../log.js';
import { type AdoptMachine, apiRoutes } from './api-routes.js';
import { bootService } from './boot-service.js';
import { dashboardRoutes } from './dashboard/routes.js';
import { eventsStream } from './events-stream.js';
import { requesterIp } from './machine-auth.js';
import { type DhcpCounters, metricsRoutes, type TftpCounters } from './metrics.js';

/** Everything the HTTP routes need, handed in by rackboot.ts (or a test). */
export interface AppDeps {
  /** The current config snapshot; read per request so a reload applies at once. */
  config: () => Config;
  decision: BootDecision;
  record: RecordEvent;
  logger: Logger;
  secrets: MachineSecrets;
  /** Authoritative mode: the MAC holding a lease on this IP, to bind Ignition to the machine's address. */
  macForIp?: (ip: string) => Mac | undefined;
  /** Machine states and history: /api/v1/machines, the SSE stream, the dashboard. */
  lifecycle: Lifecycle;
  /** Writes an adopted machine into the config file and applies it (rackboot.ts: adoptIntoServer on its config source). */
  adopt?: AdoptMachine;
  /** The operator token in force; default server.api_token (api-routes.ts). */
  operatorToken?: () => string | undefined;
  /** The DHCP server's counters for /metrics; absent when DHCP is off. */
  dhcpStats?: () => Promise<DhcpCounters>;
  /** The TFTP server's counters for /metrics. */
  tftpStats?: () => TftpCounters;
  /** Registers a listener for applied config reloads; the events stream tells watchers of them. */
  onConfigChange?: (listener: (diff: ConfigDiff) => void) => void;
  /** Whether the config files hold an edit the server refuses (/metrics, /api/v1/machines); absent in tests without a config source. */
  configStatus?: () => ConfigStatus;
  /** HTTP_TIMEOUTS unless a test needs them short. */
  timeouts?: HttpTimeouts;
}

export interface HttpTimeouts {
  /** A connection with no bytes either way for this long is closed. */
  idleMs: number;
  /** A request whose headers and body have not all arrived by then is answered 408 and closed. */
  requestMs: number;
}

/**
 * Without them a client that sends headers and then stalls (or drips its body) held its connection
 * for good: twenty thousand such connections used up the process's descriptors and stopped TFTP and
 * HTTP for every machine. Boot clients send bodiless GETs, and a download or the events stream (a
 * keep-alive every 15 s) is never idle this long while it is alive.
 */
export const HTTP_TIMEOUTS: HttpTimeouts = { idleMs: 60_000, requestMs: 30_000 };

/** The whole HTTP surface as a fastify instance; never listens (rackboot.ts or a test does). */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const timeouts = deps.timeouts ?? HTTP_TIMEOUTS;
  const app = Fastify({
    connectionTimeout: timeouts.idleMs,
    requestTimeout: timeouts.requestMs,
    loggerInstance: deps.logger as FastifyBaseLogger,
    // Every route logs what matters about the machine itself; per-request lines would drown boot storms.
    logController: new ServerErrorLog({ disableRequestLogging: true }),
    // With no per-request lines there is nothing for a request-id child to tie together, and
    // creating one per request was a tenth of a boot script's CPU (bench/http profile).
    childLoggerFactory: (logger) => logger,
    // fastify's ajv drops the properties a body schema closes out (`additionalProperties: false`):
    // `host_name` in an adopt, or `reason` in a machine's report, was accepted and lost unsaid.
    ajv: { customOptions: { removeAdditional: false } },
  });
  // First: its request counter hooks the whole app, so it must be in place before the other plugins.
  await app.register(metricsRoutes, {
    lifecycle: deps.lifecycle,
    dhcpStats: deps.dhcpStats,
    tftpStats: deps.tftpStats,
    configStatus: deps.configStatus,
  });
  await app.register(apiRoutes, deps);
  await app.register(eventsStream, { lifecycle: deps.lifecycle, onConfigChange: deps.onConfigChange });
  await app.register(dashboardRoutes);
  await app.register(bootService, deps);
  return app;
}

/**
 * fastify gates its log of unhandled errors behind the same switch as the per-request lines, so
 * with those off a 500 left no trace. This logs every 5xx that reaches fastify's default error
 * handler (a route that throws), and nothing for the requests that succeed.
 */
class ServerErrorLog extends LogController {
  override defaultErrorLog(error: Error, request: FastifyRequest, reply: FastifyReply): void {
    if (reply.statusCode < 500) return;
    reply.log.error(
      {
        err: error,
        statusCode: reply.statusCode,
        method: request.method,
        route: request.routeOptions.url,
        url: request.url,
        reqId: request.id,
        requester: requesterIp(request),
        mac: machineNamedBy(request),
      },
      'request failed',
    );
  }
}

/** The MAC in a route parameter (`/boot/<mac>.ipxe`, `/ignition/<mac>.ign`, `/api/v1/machines/<mac>/…`). */
function machineNamedBy(request: FastifyRequest): Mac | undefined {
  const params = (request.params ?? {}) as Record<string, unknown>;
  for (const value of Object.values(params)) {
    const mac = typeof value === 'string' ? parseMac(value.replace(/\.(ipxe|ign)$/, '')) : undefined;
    if (mac) return mac;
  }
  return undefined;
}
