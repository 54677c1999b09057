import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { BootDecision, Mac } from '../boot-plan.js';
import type { MachineSecrets } from '../ignition/tokens.js';
import type { Config } from '../inventory/schema.js';
import type { RecordEvent } from '../lifecycle/events.js';
import type { Logger } from '../log.js';

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
}

/** The whole HTTP surface as a fastify instance; never listens (rackboot.ts or a test does). */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    // Every route logs what matters about the machine itself; per-request lines would drown boot storms.
    disableRequestLogging: true,
  });
  return app;
}
