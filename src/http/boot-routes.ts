import { type Static, Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { machineVars } from '../ignition/vars.js';
import { isMachineMac, parseMac } from '../inventory/mac.js';
import type { BootServiceContext } from './boot-service.js';
import { archFromBuildarch, entryScript } from './ipxe.js';
import { requesterIp } from './machine-auth.js';
import { machineScript } from './machine-script.js';

const ScriptQuery = Type.Object({
  arch: Type.Optional(Type.String({ maxLength: 32 })),
  platform: Type.Optional(Type.String({ maxLength: 32 })),
  uuid: Type.Optional(Type.String({ maxLength: 64 })),
});
const ScriptParams = Type.Object({ name: Type.String({ maxLength: 64 }) });

/**
 * `GET /boot.ipxe` (one script for every iPXE) and `GET /boot/<mac>.ipxe?arch=&platform=&uuid=`,
 * the machine's own script. Both are 200 `text/plain` even for unknown or broken machines: the
 * script then tells the console why, which a 404 would not.
 */
export async function bootRoutes(app: FastifyInstance, context: BootServiceContext): Promise<void> {
  const { deps } = context;

  app.get('/boot.ipxe', async (_request, reply) => sendScript(reply, entryScript(context.baseUrl())));

  app.get<{ Params: Static<typeof ScriptParams>; Querystring: Static<typeof ScriptQuery> }>(
    '/boot/:name',
    { schema: { params: ScriptParams, querystring: ScriptQuery } },
    async (request, reply) => {
      const mac = request.params.name.endsWith('.ipxe')
        ? parseMac(request.params.name.slice(0, -5))
        : undefined;
      if (!mac || !isMachineMac(mac))
        return reply.code(404).type('text/plain').send('not a machine script: use /boot/<mac>.ipxe\n');
      const ip = requesterIp(request);
      if (request.method === 'GET') context.rememberMachineAddress(ip, mac);
      const config = deps.config();
      const arch = archFromBuildarch(request.query.arch);
      const assignment = deps.decision.assignmentFor(mac);
      const vars = assignment && machineVars(config, assignment, deps.secrets, Date.now());
      const result = machineScript(config, mac, assignment, arch, vars);
      const detail = {
        script: result.kind,
        profile: assignment?.profile,
        arch,
        platform: request.query.platform,
        uuid: request.query.uuid || undefined,
      };
      if (result.kind === 'unknown') {
        deps.logger.info({ mac, ip, detail }, 'unknown machine asked for a boot script');
      } else if (result.kind === 'unavailable') {
        deps.logger.warn({ mac, ip, reasons: result.reasons }, 'boot script unavailable');
      }
      context.record(request, {
        mac,
        ip,
        source: 'http',
        type: result.kind === 'unknown' ? 'unknown-machine' : 'ipxe-script',
        detail,
      });
      return sendScript(reply, result.script);
    },
  );
}

function sendScript(reply: FastifyReply, script: string): FastifyReply {
  return reply.type('text/plain; charset=utf-8').header('cache-control', 'no-store').send(script);
}
