import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Mac } from '../boot-plan.js';
import { setNewest } from '../bounded-map.js';
import { createMachineIgnition, type MachineIgnition } from '../ignition/machine-ignition.js';
import { baseUrlOf } from '../ignition/vars.js';
import type { MachineEventInput } from '../lifecycle/events.js';
import { refusalLimiter, tokenBuckets } from '../rate-limit.js';
import type { AppDeps } from './app.js';
import { assetsRoutes } from './assets-routes.js';
import { bootRoutes } from './boot-routes.js';
import { explainRoutes } from './explain-routes.js';
import { ignitionRoutes } from './ignition-routes.js';
import { requesterIp } from './machine-auth.js';

/** What the boot plugins share; built once per app. */
export interface BootServiceContext {
  deps: AppDeps;
  baseUrl(): string;
  ignition: MachineIgnition;
  /**
   * Records what `request` fetched. Fire and forget: boot routes answer without waiting for the event
   * to be durable (RecordEvent's hot-path rule). Nothing for a HEAD: fastify answers it by running the
   * GET handler, but it delivers nothing, so it must not move a machine along (booting → installing).
   * Nor past `events.http_rate` for the requester's address (eventBudget).
   */
  record(request: FastifyRequest, event: MachineEventInput): void;
  /** The MAC that last fetched its boot script from `ip`, so asset downloads name their machine in proxy mode too. */
  rememberMachineAddress(ip: string, mac: Mac): void;
  machineAt(ip: string): Mac | undefined;
}

/** Addresses remembered for asset events: a boot storm of 10,000 machines fits, memory stays bounded. */
const REMEMBERED_ADDRESSES = 16_384;

/** The boot service: scripts, Ignition, assets and explain, each its own encapsulated plugin. */
export async function bootService(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const addresses = new Map<string, Mac>();
  const admitEvent = eventBudget(deps);
  const context: BootServiceContext = {
    deps,
    baseUrl: () => baseUrlOf(deps.config()),
    ignition: createMachineIgnition(),
    record(request, event) {
      if (request.method === 'HEAD' || !admitEvent(requesterIp(request), event)) return;
      deps
        .record(event)
        .catch((error: unknown) =>
          deps.logger.error({ err: error, event: event.type }, 'event not recorded'),
        );
    },
    rememberMachineAddress(ip, mac) {
      setNewest(addresses, ip, mac, REMEMBERED_ADDRESSES);
    },
    machineAt: (ip) => deps.macForIp?.(ip) ?? addresses.get(ip),
  };
  await app.register(bootRoutes, context);
  await app.register(ignitionRoutes, context);
  await app.register(assetsRoutes, context);
  await app.register(explainRoutes, context);
}

/**
 * Whether an HTTP request's event goes into the history: at most `events.http_rate` a second from one
 * address, in bursts of ten seconds' worth (read per request, so a reload applies it). The request is
 * answered either way; what is left out is counted in a warning, one per address every 10 s.
 */
function eventBudget(deps: AppDeps): (ip: string, event: MachineEventInput) => boolean {
  // Made again when a reload changes the rate.
  let limit: { perSecond: number; admit: (ip: string, now: number) => boolean } | undefined;
  const warnLimiter = refusalLimiter(10_000, REMEMBERED_ADDRESSES);
  return (ip, event) => {
    const perSecond = deps.config().events.http_rate;
    if (perSecond === 0) return true;
    if (limit?.perSecond !== perSecond)
      limit = { perSecond, admit: tokenBuckets({ perSecond, burst: perSecond * 10 }, REMEMBERED_ADDRESSES) };
    const now = performance.now();
    if (limit.admit(ip, now)) return true;
    const leftOut = warnLimiter(ip, now, () => true);
    if (leftOut !== undefined) {
      deps.logger.warn(
        { ip, mac: event.mac, type: event.type, ...leftOut, perSecond },
        'HTTP requests from this address are over events.http_rate: answered, their events not recorded',
      );
    }
    return false;
  };
}
