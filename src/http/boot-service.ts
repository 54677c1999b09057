import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Mac } from '../boot-plan.js';
import { setNewest } from '../bounded-map.js';
import { createMachineIgnition, type MachineIgnition } from '../ignition/machine-ignition.js';
import { baseUrlOf } from '../ignition/vars.js';
import type { MachineEventInput } from '../lifecycle/events.js';
import type { AppDeps } from './app.js';
import { assetsRoutes } from './assets-routes.js';
import { bootRoutes } from './boot-routes.js';
import { explainRoutes } from './explain-routes.js';
import { ignitionRoutes } from './ignition-routes.js';

/** What the boot plugins share; built once per app. */
export interface BootServiceContext {
  deps: AppDeps;
  baseUrl(): string;
  ignition: MachineIgnition;
  /**
   * Records what `request` fetched. Fire and forget: boot routes answer without waiting for the event
   * to be durable (RecordEvent's hot-path rule). Nothing for a HEAD: fastify answers it by running the
   * GET handler, but it delivers nothing, so it must not move a machine along (booting → installing).
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
  const context: BootServiceContext = {
    deps,
    baseUrl: () => baseUrlOf(deps.config()),
    ignition: createMachineIgnition(),
    record(request, event) {
      if (request.method === 'HEAD') return;
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
