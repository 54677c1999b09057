import { type Static, Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { installerIgnition } from '../ignition/render.js';
import { machineVars } from '../ignition/vars.js';
import { parseMac } from '../inventory/mac.js';
import { formatProblem } from '../inventory/problems.js';
import type { BootServiceContext } from './boot-service.js';
import { authorizeMachine, leaseBinding, refusalLog, requesterIp } from './machine-auth.js';

const IgnitionParams = Type.Object({ name: Type.String({ maxLength: 64 }) });
const IgnitionQuery = Type.Object({ token: Type.Optional(Type.String({ maxLength: 200 })) });

/** Ignition retries 5xx for ever (with back-off) but treats 404 as fatal: a config being fixed is a 503. */
const RETRY_AFTER_SECONDS = 10;

/**
 * `GET /ignition/<mac>.ign?token=…`, the URL `{{ignition_url}}` hands out, and
 * `GET /ignition/installer/<mac>.ign?token=…` (`{{installer_ignition_url}}`), the live installer
 * environment's own config. Each is served only to its machine (authorizeMachine); 403 JSON
 * otherwise, logged with the requester (refusalLog's limits).
 */
export async function ignitionRoutes(app: FastifyInstance, context: BootServiceContext): Promise<void> {
  const { deps } = context;
  type IgnitionRequest = FastifyRequest<{
    Params: Static<typeof IgnitionParams>;
    Querystring: Static<typeof IgnitionQuery>;
  }>;
  const schema = { params: IgnitionParams, querystring: IgnitionQuery };
  const logRefusal = refusalLog('Ignition refused');

  /** The machine named by `<mac>.ign` once its credential fits; undefined once an error was sent. */
  const authorizedMachine = (request: IgnitionRequest, reply: FastifyReply, usage: string) => {
    const mac = request.params.name.endsWith('.ign') ? parseMac(request.params.name.slice(0, -4)) : undefined;
    if (!mac) {
      void reply.code(404).send({ error: 'not found', message: `use ${usage}` });
      return undefined;
    }
    const ip = requesterIp(request);
    const now = Date.now();
    const authorization = authorizeMachine(
      deps.secrets,
      leaseBinding(deps.config(), deps.macForIp),
      'ignition',
      {
        mac,
        token: request.query.token,
        ip,
        now,
      },
    );
    if (!authorization.ok) {
      logRefusal(deps.logger, { mac, requester: ip, reason: authorization.reason }, now);
      void reply.code(403).send({ error: 'forbidden', message: authorization.reason });
      return undefined;
    }
    const assignment = deps.decision.assignmentFor(mac);
    if (!assignment) {
      void reply
        .code(404)
        .send({ error: 'unknown machine', message: `${mac} is no longer in the inventory` });
      return undefined;
    }
    const config = deps.config();
    return {
      mac,
      ip,
      assignment,
      config,
      vars: machineVars(config, assignment, deps.secrets, now),
    };
  };

  const sendIgnition = (reply: FastifyReply, text: string) =>
    reply.type('application/json').header('cache-control', 'no-store').send(text);

  app.get('/ignition/:name', { schema }, async (request: IgnitionRequest, reply) => {
    const machine = authorizedMachine(request, reply, '/ignition/<mac>.ign?token=…');
    if (!machine) return reply;
    const { mac, ip, assignment, config, vars } = machine;
    const rendered = context.ignition(config, assignment, vars);
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
    context.record(request, {
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
    return sendIgnition(reply, rendered.text);
  });

  app.get('/ignition/installer/:name', { schema }, async (request: IgnitionRequest, reply) => {
    const machine = authorizedMachine(request, reply, '/ignition/installer/<mac>.ign?token=…');
    if (!machine) return reply;
    const text = installerIgnition(machine.vars.events_url);
    context.record(request, {
      mac: machine.mac,
      ip: machine.ip,
      source: 'http',
      type: 'installer-ignition-fetch',
      detail: { profile: machine.assignment.profile, userAgent: request.headers['user-agent'] },
    });
    return sendIgnition(reply, text);
  });
}
