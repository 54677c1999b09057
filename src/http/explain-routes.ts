import { type Static, Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { Arch, Mac } from '../boot-plan.js';
import { isJsonObject } from '../ignition/shape.js';
import { TOKEN_PURPOSES } from '../ignition/tokens.js';
import { machineVars } from '../ignition/vars.js';
import { isMachineMac, NOT_A_MACHINE_MAC, parseMac } from '../inventory/mac.js';
import { formatProblem } from '../inventory/problems.js';
import type { BootServiceContext } from './boot-service.js';
import { archFromBuildarch, IPXE_BUILDARCHES } from './ipxe.js';
import { machineScript, type ScriptKind } from './machine-script.js';

const ExplainQuery = Type.Object({
  mac: Type.String({ maxLength: 32 }),
  arch: Type.Optional(Type.String({ maxLength: 32 })),
});

interface Explanation {
  mac: Mac;
  arch: Arch;
  listed: boolean;
  profile: string | undefined;
  state: string | undefined;
  script: ScriptKind;
  /** Why, in order: inventory match, state, profile and assets. */
  reasons: string[];
  /** The iPXE script the machine gets now, credentials redacted. */
  ipxe: string;
  /** Its Ignition config, credentials and password hashes redacted; undefined for unknown machines. */
  ignition: unknown;
  /** Why its Ignition cannot be rendered (the machine gets 503 until fixed). */
  ignitionProblems: string[];
}

/**
 * The answer to "why didn't my machine boot": the same decision the boot routes take, with reasons.
 * `rackboot render` calls the same functions (machineVars, machineScript, the Ignition renderer) and
 * prints their output unredacted.
 */
function explainMachine(
  context: Pick<BootServiceContext, 'deps' | 'ignition'>,
  mac: Mac,
  arch: Arch,
  now: number,
): Explanation {
  const { deps } = context;
  const config = deps.config();
  const assignment = deps.decision.assignmentFor(mac);
  // Only a machine with an assignment is handed URLs with a token, and any caller may name any MAC:
  // no token work for the others.
  const vars = assignment && machineVars(config, assignment, deps.secrets, now);
  const tokens = assignment ? TOKEN_PURPOSES.map((purpose) => deps.secrets.tokenFor(mac, purpose, now)) : [];
  const script = machineScript(config, mac, assignment, arch, vars);
  const explanation: Explanation = {
    mac,
    arch,
    listed: assignment?.listed ?? false,
    profile: assignment?.profile,
    state: assignment?.state,
    script: script.kind,
    reasons: script.reasons.map(redactUrlCredentials),
    ipxe: redactUrlCredentials(redactTokens(script.script, tokens)),
    ignition: undefined,
    ignitionProblems: [],
  };
  if (assignment && vars) {
    const rendered = context.ignition(config, assignment, vars);
    if (rendered.ok)
      explanation.ignition = JSON.parse(redactTokens(JSON.stringify(redactSecrets(rendered.config)), tokens));
    else
      explanation.ignitionProblems = rendered.problems.map((problem) =>
        redactUrlCredentials(redactTokens(formatProblem(problem), tokens)),
      );
  }
  return explanation;
}

export async function explainRoutes(app: FastifyInstance, context: BootServiceContext): Promise<void> {
  app.get<{ Querystring: Static<typeof ExplainQuery> }>(
    '/api/v1/explain',
    { schema: { querystring: ExplainQuery } },
    async (request, reply) => {
      const mac = parseMac(request.query.mac);
      if (!mac)
        return reply
          .code(400)
          .send({ error: 'bad request', message: `not a MAC address: ${request.query.mac}` });
      // The boot routes answer such a MAC 404 and render refuses it: an install explained would be none.
      if (!isMachineMac(mac))
        return reply.code(400).send({ error: 'bad request', message: `${mac} ${NOT_A_MACHINE_MAC}` });
      const buildarch = request.query.arch ?? 'x86_64';
      if (!IPXE_BUILDARCHES.includes(buildarch))
        return reply.code(400).send({
          error: 'bad request',
          message: `arch ${buildarch} is not one iPXE reports; use one of ${IPXE_BUILDARCHES.join(', ')} (default x86_64)`,
        });
      return explainMachine(context, mac, archFromBuildarch(buildarch), Date.now());
    },
  );
}

const REDACTED = '[redacted]';

function redactTokens(text: string, tokens: string[]): string {
  return tokens.reduce((redacted, token) => redacted.replaceAll(token, REDACTED), text);
}

/**
 * `scheme://userinfo@`: up to the last `@` of the authority, where Go's url.Parse (Ignition's) splits
 * it, so a password with an `@` in it is a password all through.
 */
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s/?#]*)@/gi;
/** The query of a URL: `?` up to whitespace or a fragment. */
const URL_QUERY = /(\b[a-z][a-z0-9+.-]*:\/\/[^\s?#]*\?)([^\s#]*)/gi;

/**
 * In every URL of `text`: the password of `user:password@`, or the whole userinfo when it has no
 * password, and each query value (presigned S3 URLs, `?token=`, `?auth=` carry their credential
 * there), names kept. iPXE's own `${…}` settings are not secrets and say what the machine sends.
 */
function redactUrlCredentials(text: string): string {
  return text
    .replace(URL_USERINFO, (_whole, scheme: string, userinfo: string) => {
      // The user ends at the first `:`, as for url.Parse; a lone userinfo is usually a token.
      const colon = userinfo.indexOf(':');
      return colon < 0 ? `${scheme}${REDACTED}@` : `${scheme}${userinfo.slice(0, colon)}:${REDACTED}@`;
    })
    .replace(URL_QUERY, (_whole, start: string, query: string) => `${start}${redactQueryValues(query)}`);
}

function redactQueryValues(query: string): string {
  return query
    .split('&')
    .map((pair) => {
      const equals = pair.indexOf('=');
      if (equals < 0) return pair;
      const value = pair.slice(equals + 1);
      return /^(\$\{[^}]*\})+$/.test(value) || value === REDACTED
        ? pair
        : `${pair.slice(0, equals)}=${REDACTED}`;
    })
    .join('&');
}

/** What is left of a secret-bearing text: its size, which still tells an empty file from a full one. */
function sizeOnly(text: string, prefix = ''): string {
  return `${prefix}[redacted, ${text.length} characters]`;
}

/**
 * Password hashes, inline file contents (keys, certificates), systemd unit and drop-in contents
 * (`Environment=` secrets), HTTP header values (Authorization, API keys) and URL credentials
 * (sources, proxies, Tang servers) stay on the server; header names and the rest of each URL are
 * kept so the answer still explains what the machine fetches.
 */
function redactSecrets(value: unknown, key = ''): unknown {
  if (key === 'passwordHash' && typeof value === 'string') return REDACTED;
  if (key === 'source' && typeof value === 'string' && value.startsWith('data:'))
    return sizeOnly(value, 'data:');
  // Units and drop-ins carry their text in a string `contents`; a file's `contents` is an object.
  if (key === 'contents' && typeof value === 'string') return sizeOnly(value);
  if (key === 'httpHeaders' && Array.isArray(value)) {
    return value.map((header) =>
      isJsonObject(header) && header.value !== undefined ? { ...header, value: REDACTED } : header,
    );
  }
  if (typeof value === 'string') return redactUrlCredentials(value);
  if (Array.isArray(value)) return value.map((item) => redactSecrets(item));
  if (isJsonObject(value))
    return Object.fromEntries(Object.entries(value).map(([k, item]) => [k, redactSecrets(item, k)]));
  return value;
}
