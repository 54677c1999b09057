import { createHash, timingSafeEqual } from 'node:crypto';
import { type Static, Type } from '@sinclair/typebox';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest, FastifySchemaValidationError } from 'fastify';
import type { BootDecision } from '../boot-plan.js';
import type { MachineSecrets } from '../ignition/tokens.js';
import type { AdoptRequest, AdoptResult } from '../inventory/adopt.js';
import { type Mac, parseMac } from '../inventory/mac.js';
import { badName, HOSTNAME_PATTERN, NAME_PATTERN, NOT_A_HOSTNAME } from '../inventory/names.js';
import type { Config, ProfileConfig } from '../inventory/schema.js';
import type { ConfigStatus } from '../inventory/source.js';
import { MACHINE_STATES, type MachineEvent } from '../lifecycle/events.js';
import type { Lifecycle, MachineRecord } from '../lifecycle/store.js';
import { authorizeMachine, leaseBinding, refusalLog, requesterIp } from './machine-auth.js';

/** Adds a machine to the config file; rackboot.ts passes inventory/adopt.ts adoptIntoServer on its config source. */
export type AdoptMachine = (request: AdoptRequest) => Promise<AdoptResult>;

export interface ApiRoutesOptions {
  lifecycle: Lifecycle;
  config: () => Config;
  decision: BootDecision;
  /** Checks the per-machine token of `{{events_url}}`. */
  secrets: MachineSecrets;
  /** Authoritative mode: binds a machine's token to the address leased to it (see machine-auth.ts). */
  macForIp?: ((ip: string) => Mac | undefined) | undefined;
  /** Absent: adoption is not available on this server (503). */
  adopt?: AdoptMachine | undefined;
  configStatus?: (() => ConfigStatus) | undefined;
  /**
   * The operator token in force (rackboot.ts: server.api_token, else the server's own in
   * server.state); default server.api_token alone, and without one the operator API is off.
   */
  operatorToken?: (() => string | undefined) | undefined;
  now?: () => number;
}

/** Recent events returned with one machine: about a dozen boots' worth. */
const MACHINE_EVENTS_LIMIT = 300;
/** Types only the servers or the operator may record; a machine reporting them is refused. */
const RESERVED_TYPE =
  /^(dhcp-|tftp-|state-changed$|transition-rejected$|reprovision$|adopt$|ipxe-script$|asset-download$|ignition-fetch$|installer-ignition-fetch$|unknown-machine$)/;
/** Set on the machine list: the newest event its answer includes (the SSE stream's resume point). */
export const LAST_EVENT_ID_HEADER = 'x-rackboot-last-event-id';
/**
 * On the machine list while the config files hold an edit the server refuses: `since=<ISO time>;
 * problems=<count>`. The problems themselves are not served (they can quote the file's values); the
 * log and `rackboot validate` name them.
 */
export const CONFIG_REJECTED_HEADER = 'x-rackboot-config-rejected';
/** The answer when the history could not be written (disk full or failing): nothing is claimed stored. */
const EVENT_NOT_STORED = 'the event could not be written to the history (see the server log)';

const MacParams = Type.Object({ mac: Type.String() });
type MacParams = Static<typeof MacParams>;
const MachineReport = Type.Object(
  {
    type: Type.String({ pattern: '^[a-z][a-z0-9-]{0,63}$' }),
    message: Type.Optional(Type.String({ maxLength: 2000 })),
  },
  { additionalProperties: false },
);
const TokenQuery = Type.Object({ token: Type.Optional(Type.String({ maxLength: 200 })) });
/**
 * A fleet of thousands is one large answer: `state` keeps the machines in those states (`none`: listed,
 * never seen), `after` and `limit` page through them in MAC order (a `Link: <…>; rel="next"` header
 * names the next page while there is one).
 */
const MachinesQuery = Type.Object({
  state: Type.Optional(Type.String({ maxLength: 100 })),
  after: Type.Optional(Type.String({ maxLength: 32 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
});
const STATE_FILTERS: readonly string[] = [...MACHINE_STATES, 'none'];
const AdoptBody = Type.Object(
  {
    profile: Type.String({ minLength: 1, maxLength: 200 }),
    hostname: Type.Optional(Type.String({ pattern: HOSTNAME_PATTERN })),
    // propertyNames, not a pattern-keyed record: a badly named var is then refused in adopt's words
    // (bodyError), not as an additional property.
    vars: Type.Optional(
      Type.Record(Type.String(), Type.String({ maxLength: 2000 }), {
        propertyNames: { pattern: NAME_PATTERN },
        maxProperties: 100,
      }),
    ),
  },
  { additionalProperties: false },
);

/**
 * A body's validation errors as fastify words them (`body/profile must NOT be shorter …`), except
 * a field the schema does not have, named (ajv's own says only "must NOT have additional
 * properties"), a badly named var, refused in the words adopt and the CLI use (ajv's own says
 * only "property name must be valid"), and a host name, refused by the rule in words, not the
 * pattern.
 */
function bodyError(errors: FastifySchemaValidationError[], dataVar: string): Error {
  const misnamed = errors.find(
    (error) => error.keyword === 'propertyNames' && error.instancePath === '/vars',
  );
  if (misnamed) return new Error(`${dataVar}/vars: ${badName('vars', String(misnamed.params.propertyName))}`);
  return new Error(
    errors
      .map((error) =>
        error.keyword === 'additionalProperties'
          ? `${dataVar}${error.instancePath} has no field "${String(error.params.additionalProperty)}"`
          : error.keyword === 'pattern' && error.instancePath === '/hostname'
            ? `${dataVar}/hostname is ${NOT_A_HOSTNAME}`
            : `${dataVar}${error.instancePath} ${error.message}`,
      )
      .join(', '),
  );
}

/** What the API and the dashboard show for one machine: its record merged with its config entry. */
export interface MachineView {
  mac: Mac;
  hostname: string | null;
  profile: string | null;
  /** Listed under `machines` in the config (false: discovered, adopt it to keep it). */
  listed: boolean;
  /** null: listed but never seen network-booting. */
  state: MachineRecord['state'] | null;
  ip: string | null;
  updated_at: string | null;
  state_since: string | null;
  first_seen_at: string | null;
  installed_at: string | null;
  /** Its installer wrote the disk (or it reported installed): its network boots go to that disk until a reprovision. */
  boots_from_disk: boolean;
  last_event: string | null;
  arch: string | null;
  firmware: string | null;
  vendor: string | null;
  /** Correlation id of the latest boot. */
  boot: string | null;
}

/** What the API and the dashboard's adopt form show for one profile of the config. */
export interface ProfileView {
  name: string;
  kind: ProfileConfig['kind'];
  /** The architectures it names assets of their own for (`profiles.<name>.arch`), sorted; [] for none. */
  arch: string[];
  /** Machines listed with it: 0 for a profile written before any machine is adopted into it. */
  machines: number;
  /** `unknown_machines` names it: every MAC not listed boots it. */
  unknown_machines: boolean;
}

/**
 * `/api/v1/profiles`, and `/api/v1/machines…`: the fleet, one machine with its history, machine reports (authorised by the
 * machine's own token) and operator actions (authorised by server.api_token).
 */
export const apiRoutes: FastifyPluginAsync<ApiRoutesOptions> = async (app, options) => {
  const { lifecycle, config, decision } = options;
  const operatorToken = options.operatorToken ?? (() => config().server.api_token);
  const isOperator = (request: FastifyRequest, reply: FastifyReply) =>
    operatorAuthorized(request, reply, operatorToken(), config().server.api_token !== undefined);
  const now = options.now ?? Date.now;
  const logEventRefusal = refusalLog('machine event refused');

  const view = (mac: Mac): MachineView => {
    const record = lifecycle.machine(mac);
    const assignment = decision.assignmentFor(mac);
    return {
      mac,
      hostname: assignment?.hostname ?? null,
      profile: assignment?.profile ?? null,
      listed: assignment?.listed ?? false,
      state: record?.state ?? null,
      // A reservation is the address of a machine not yet seen, where this server hands addresses
      // out; once seen, its record says (none after it declined or released one).
      ip: (record ? record.ip : config().dhcp.mode === 'authoritative' ? assignment?.ip : undefined) ?? null,
      updated_at: record?.lastEvent.time ?? null,
      state_since: record?.stateSince ?? null,
      first_seen_at: record?.firstSeen ?? null,
      installed_at: record?.installedAt ?? null,
      boots_from_disk: record?.bootsFromDisk ?? false,
      last_event: record?.lastEvent.type ?? null,
      arch: record?.arch ?? null,
      firmware: record?.firmware ?? null,
      vendor: record?.vendor ?? null,
      boot: record?.boot.correlationId ?? null,
    };
  };
  const knownMacs = (): Mac[] => {
    const macs = new Set<Mac>(config().machines.map((machine) => machine.mac));
    for (const record of lifecycle.machines()) macs.add(record.mac);
    return [...macs].sort();
  };
  const isKnown = (mac: Mac) => lifecycle.machine(mac) !== undefined || decision.assignmentFor(mac)?.listed;
  // What a listing answers comes from the config in force, the previous one while an edit is refused.
  const markRejectedConfig = (reply: FastifyReply) => {
    const rejected = options.configStatus?.().rejected;
    if (rejected)
      reply.header(
        CONFIG_REJECTED_HEADER,
        `since=${new Date(rejected.since).toISOString()}; problems=${rejected.problems}`,
      );
  };

  app.get<{ Querystring: Static<typeof MachinesQuery> }>(
    '/api/v1/machines',
    { schema: { querystring: MachinesQuery } },
    async (request, reply) => {
      const { state, after, limit } = request.query;
      const states = state?.split(',');
      const unknownState = states?.find((name) => !STATE_FILTERS.includes(name));
      if (unknownState !== undefined)
        return reply.code(400).send({
          error: `not a state: ${unknownState}; use one or more of ${STATE_FILTERS.join(', ')}, comma-separated`,
        });
      const afterMac = after === undefined ? undefined : parseMac(after);
      if (after !== undefined && !afterMac)
        return reply.code(400).send({ error: `not a MAC address: ${after}` });
      reply.header(LAST_EVENT_ID_HEADER, String(lifecycle.lastEventId()));
      markRejectedConfig(reply);
      const wanted = knownMacs()
        .filter((mac) => afterMac === undefined || mac > afterMac)
        .filter((mac) => !states || states.includes(lifecycle.machine(mac)?.state ?? 'none'));
      const page = limit === undefined ? wanted : wanted.slice(0, limit);
      const last = page.at(-1);
      if (last !== undefined && page.length < wanted.length) {
        const next = new URLSearchParams({ ...(state ? { state } : {}), after: last, limit: String(limit) });
        reply.header('link', `</api/v1/machines?${next}>; rel="next"`);
      }
      return page.map(view);
    },
  );

  // Read like the machine list, without a token: the names are in that list already, and a profile's
  // kernel, args and template (which may hold credentials) are left out.
  app.get('/api/v1/profiles', async (_request, reply): Promise<ProfileView[]> => {
    const { profiles, machines, unknown_machines } = config();
    const machinesOf = new Map<string, number>();
    for (const machine of machines)
      machinesOf.set(machine.profile, (machinesOf.get(machine.profile) ?? 0) + 1);
    markRejectedConfig(reply);
    return Object.entries(profiles)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([name, profile]) => ({
        name,
        kind: profile.kind,
        arch: Object.keys(profile.arch ?? {}).sort(),
        machines: machinesOf.get(name) ?? 0,
        // `ignore` is never a profile there, even when one is named so (decision.ts).
        unknown_machines: unknown_machines !== 'ignore' && unknown_machines === name,
      }));
  });

  app.get<{ Params: MacParams }>(
    '/api/v1/machines/:mac',
    { schema: { params: MacParams } },
    async (request, reply) => {
      const mac = macParam(request, reply);
      if (!mac) return reply;
      if (!isKnown(mac)) return reply.code(404).send({ error: `no machine ${mac}` });
      reply.header(LAST_EVENT_ID_HEADER, String(lifecycle.lastEventId()));
      return { ...view(mac), events: lifecycle.latestEvents({ mac, limit: MACHINE_EVENTS_LIMIT }) };
    },
  );

  // Machines report with whatever their image has: `curl -d` and busybox `wget --post-data` label
  // the JSON as a form, some tools send no type at all. The body is read as JSON whatever its label.
  await app.register(async (machineReports) => {
    machineReports.removeAllContentTypeParsers();
    machineReports.addContentTypeParser('*', { parseAs: 'string' }, parseJsonBody);
    machineReports.post<{
      Params: MacParams;
      Body: Static<typeof MachineReport>;
      Querystring: Static<typeof TokenQuery>;
    }>(
      '/api/v1/machines/:mac/events',
      {
        schema: { params: MacParams, body: MachineReport, querystring: TokenQuery },
        schemaErrorFormatter: bodyError,
        bodyLimit: 16 * 1024,
      },
      async (request, reply) => {
        const mac = macParam(request, reply);
        if (!mac) return reply;
        const ip = requesterIp(request);
        const token = request.query.token ?? bearerToken(request);
        const at = now();
        const authorization = authorizeMachine(
          options.secrets,
          leaseBinding(config(), options.macForIp),
          'events',
          {
            mac,
            token,
            ip,
            now: at,
          },
        );
        // Same rule as the Ignition URL (issue 5): a machine credential that does not fit is 403, logged with who asked.
        if (!authorization.ok) {
          logEventRefusal(request.log, { mac, requester: ip, reason: authorization.reason }, at);
          return reply.code(403).send({ error: authorization.reason });
        }
        const { type, message } = request.body;
        if (RESERVED_TYPE.test(type)) {
          return reply.code(400).send({ error: `a machine cannot report ${type}` });
        }
        const appended = lifecycle.append({
          mac,
          ip,
          source: 'machine',
          type,
          ...(message === undefined ? {} : { detail: { message } }),
        });
        if (!(await appended.stored)) return reply.code(503).send({ error: EVENT_NOT_STORED });
        return reply.code(202).send(outcome(lifecycle, mac, appended.events));
      },
    );
  });

  app.post<{ Params: MacParams }>(
    '/api/v1/machines/:mac/reprovision',
    { schema: { params: MacParams } },
    async (request, reply) => {
      if (!isOperator(request, reply)) return reply;
      const mac = macParam(request, reply);
      if (!mac) return reply;
      // Most likely a mistyped MAC: recorded, it would be a machine of its own in every listing.
      if (!isKnown(mac))
        return reply.code(404).send({
          error: `${mac} is not in the config and has never network-booted here: nothing to reprovision, nothing recorded (\`rackboot machines\` lists the machines)`,
        });
      const appended = lifecycle.append({
        mac,
        ip: requesterIp(request),
        source: 'operator',
        type: 'reprovision',
      });
      if (!(await appended.stored)) return reply.code(503).send({ error: EVENT_NOT_STORED });
      const result = outcome(lifecycle, mac, appended.events);
      return reply.code(result.rejected ? 409 : 200).send(result);
    },
  );

  app.post<{ Params: MacParams; Body: Static<typeof AdoptBody> }>(
    '/api/v1/machines/:mac/adopt',
    { schema: { params: MacParams, body: AdoptBody }, schemaErrorFormatter: bodyError },
    async (request, reply) => {
      if (!isOperator(request, reply)) return reply;
      const mac = macParam(request, reply);
      if (!mac) return reply;
      if (!options.adopt) return reply.code(503).send({ error: 'this server cannot edit its config file' });
      const adopted = await options.adopt({ mac, ...request.body });
      if (!adopted.ok) {
        const { message: error, ...refusal } = adopted;
        return reply.code(ADOPT_REFUSAL_STATUS[adopted.code]).send({ error, ...refusal });
      }
      await lifecycle.record({
        mac,
        ip: requesterIp(request),
        source: 'operator',
        type: 'adopt',
        // The history is readable without a token; a var's value may be a secret, so only its name.
        detail: {
          profile: request.body.profile,
          hostname: request.body.hostname,
          ...(request.body.vars ? { vars: Object.keys(request.body.vars) } : {}),
        },
      });
      return reply.code(201).send({ mac, ...request.body, warnings: adopted.warnings ?? [] });
    },
  );
};

/**
 * A conflict with the file's state (listed already, edited or being adopted into meanwhile, written
 * but not taken by the running server) is 409: trying again, or after a fix, may succeed. A config
 * the machine would make unloadable (a template needing a var it lacks, a missing boot asset) is
 * 422, with its problems. A bad request stays bad.
 */
const ADOPT_REFUSAL_STATUS: Record<Exclude<AdoptResult, { ok: true }>['code'], number> = {
  'already-listed': 409,
  busy: 409,
  'not-applied': 409,
  rejected: 422,
  'unknown-profile': 400,
  invalid: 400,
};

function macParam(request: FastifyRequest<{ Params: MacParams }>, reply: FastifyReply): Mac | undefined {
  const mac = parseMac(request.params.mac);
  if (!mac) void reply.code(400).send({ error: `not a MAC address: ${request.params.mac}` });
  return mac;
}

/** The answer to a recorded event: its id, the machine's state after it, and a rejection's reason. */
function outcome(lifecycle: Lifecycle, mac: Mac, events: MachineEvent[]) {
  const rejected = events.find((event) => event.type === 'transition-rejected');
  return {
    mac,
    id: events[0]?.id ?? null,
    state: lifecycle.stateOf(mac) ?? null,
    ...(rejected ? { rejected: String(rejected.detail?.reason) } : {}),
  };
}

function bearerToken(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  const match = header ? /^Bearer\s+(\S+)$/i.exec(header) : null;
  return match?.[1];
}

/**
 * Operator calls need `Authorization: Bearer <token>`. Without a token the operator API is off
 * (403), so a server never runs with operator actions open to the LAN. `configured`: the token in
 * force is server.api_token (or $RACKBOOT_API_TOKEN), not the server's own in server.state, which the
 * CLI still finds there and sends when it has no other.
 */
function operatorAuthorized(
  request: FastifyRequest,
  reply: FastifyReply,
  expected: string | undefined,
  configured: boolean,
): boolean {
  if (!expected) {
    void reply
      .code(403)
      .send({ error: 'operator API disabled: set server.api_token or $RACKBOOT_API_TOKEN' });
    return false;
  }
  const given = bearerToken(request);
  // Compare digests so neither the length nor the content leaks through timing.
  const digest = (text: string) => createHash('sha256').update(text).digest();
  if (!given || !timingSafeEqual(digest(given), digest(expected))) {
    const wrong = configured
      ? 'this server takes server.api_token ($RACKBOOT_API_TOKEN in its environment overrides it), not the one in <server.state>/operator-token'
      : 'this server has no server.api_token or $RACKBOOT_API_TOKEN and takes the one in <server.state>/operator-token';
    const error = given
      ? `wrong operator token: ${wrong}`
      : 'operator token required: Authorization: Bearer <server.api_token>';
    void reply.code(401).send({ error });
    return false;
  }
  return true;
}

function parseJsonBody(
  _request: FastifyRequest,
  body: string | Buffer,
  done: (error: Error | null, body?: unknown) => void,
) {
  try {
    done(null, JSON.parse(body.toString()));
  } catch (error) {
    done(Object.assign(new Error(`the body is not JSON: ${(error as Error).message}`), { statusCode: 400 }));
  }
}
