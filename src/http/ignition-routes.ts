import { type Static, Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { machineVars } from '../ignition/vars.js';
import { parseMac } from '../inventory/mac.js';
import { formatProblem } from '../inventory/problems.js';
import type { BootServiceContext } from './boot-service.js';
import { authorizeMachine, requesterIp } from './machine-auth.js';

const IgnitionParams = Type.Object({ name: Type.String({ maxLength: 64 }) });
const IgnitionQuery = Type.Object({ token: Type.Optional(Type.String({ maxLength: 200 })) });

/** Ignition retries 5xx for ever (with back-off) but treats 404 as fatal: a config being fixed is a 503. */
const RETRY_AFTER_SECONDS = 10;

/**
 * `GET /ignition/<mac>.ign?token=…`, the URL `{{ignition_url}}` hands out. Served only to its
 * machine (authorizeMachine); 403 JSON otherwise, logged with the requester.
 */
export async function ignitionRoutes(app: FastifyInstance, context: BootServiceContext): Promise<void> {
  const { deps } = context;
  app.get<{ Params: Static<typeof IgnitionParams>; Querystring: Static<typeof IgnitionQuery> }>(
    '/ignition/:name',
    { schema: { params: IgnitionParams, querystring: IgnitionQuery } },
    async (request, reply) => {
      const mac = request.params.name.endsWith('.ign')
        ? parseMac(request.params.name.slice(0, -4))
        : undefined;
      if (!mac)
        return reply.code(404).send({ error: 'not found', message: 'use /ignition/<mac>.ign?token=…' });
      const ip = requesterIp(request);
      const now = Date.now();
      const authorization = authorizeMachine(deps.secrets, deps.macForIp, {
        mac,
        token: request.query.token,
        ip,
        now,
      });
      if (!authorization.ok) {
        deps.logger.warn({ mac, requester: ip, reason: authorization.reason }, 'Ignition refused');
        return reply.code(403).send({ error: 'forbidden', message: authorization.reason });
      }
      const config = deps.config();
      const assignment = deps.decision.assignmentFor(mac);
      if (!assignment) {
        return reply
          .code(404)
          .send({ error: 'unknown machine', message: `${mac} is no longer in the inventory` });
      }
      const rendered = context.ignition(
        config,
        assignment,
        machineVars(config, assignment, deps.secrets.tokenFor(mac, now)),
      );
      if (!rendered.ok) {
        const problems = rendered.problems.map((problem) => formatProblem(problem));
        deps.logger.error(
          { mac, requester: ip, problems },
          'Ignition cannot be rendered; answering 503 so Ignition retries',
        );
        return reply.code(503).header('retry-after', String(RETRY_AFTER_SECONDS)).send({
          error: 'config unavailable',
          message: "this machine's Ignition cannot be rendered yet",
          problems,
        });
      }
      context.record({
        mac,
        ip,
        source: 'http',
        type: 'ignition-fetch',
        detail: {
          profile: assignment.profile,
          bytes: rendered.text.length,
          userAgent: request.headers['user-agent'],
        },
      });
      return reply.type('application/json').header('cache-control', 'no-store').send(rendered.text);
    },
  );
}
