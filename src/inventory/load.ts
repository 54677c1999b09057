import { existsSync, statSync } from 'node:fs';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import { FormatRegistry, Kind, type TSchema } from '@sinclair/typebox';
import { Value, type ValueError, ValueErrorType } from '@sinclair/typebox/value';
import { isKernelWord, NOT_A_KERNEL_WORD } from '../boot-plan.js';
import { counted } from '../counted.js';
import {
  type Cidr,
  cidrContains,
  cidrsOverlap,
  ipToNumber,
  isIpv4,
  numberToIp,
  parseCidr,
  unassignableAddresses,
} from '../ipv4.js';
import { isObject } from '../json.js';
import { readRegularFileSync } from '../regular-file.js';
import { isMachineMac, NOT_A_MACHINE_MAC, parseMac } from './mac.js';
import { badName, isName, type NameKind } from './names.js';
import { type Locator, type Path, parseConfigText, readConfigFile } from './parse.js';
import { byPosition, closestName, type Problem } from './problems.js';
import { type MissingAsset, missingAssets, missingBootPrograms } from './profile-assets.js';
import {
  API_TOKEN_MIN_LENGTH,
  API_TOKEN_PATTERN,
  type Config,
  ConfigSchema,
  DURATION_PATTERN,
  ProfileSchema,
} from './schema.js';

export type { Problem };

FormatRegistry.Set('ipv4', isIpv4);

/**
 * `warnings`: something in a valid config will fail or clash (a missing asset, a split kernel
 * argument, a hostname two machines have);
 * `notes`: something in it has no effect.
 */
export type Loaded =
  | { ok: true; config: Config; warnings: Problem[]; notes: Problem[] }
  | { ok: false; problems: Problem[]; warnings?: Problem[] };

export interface LoadOptions {
  /**
   * Missing kernel/initrd/rootfs files under assets: `error` (serve: refuse to start on them),
   * `warn` (validate: list them without failing; assets are not committed). Default `error`.
   */
  missingAssets?: 'error' | 'warn';
  /** Environment for overrides ($RACKBOOT_API_TOKEN); defaults to process.env. */
  env?: Record<string, string | undefined>;
  /**
   * Renders and validates an Ignition/Butane template for every machine that uses it, so a broken
   * template is a config problem, not a failed boot. Given by the caller (the ignition module) so
   * this module stays free of rendering.
   */
  checkTemplate?: (templateFile: string, config: Config) => Promise<TemplateCheck>;
  /**
   * Fills each profile's args for every machine of it, as the server does for its iPXE script, and
   * returns what cannot be filled (ignition/check.ts). Given by the caller, as checkTemplate.
   */
  checkArguments?: (config: Config) => { path: Path; message: string }[];
}

/**
 * What `checkTemplate` found, and the text it read: the load's own look into the template (the
 * example's SSH key) takes it from there rather than reading the file again. '' when the template
 * could not be read as UTF-8 text.
 */
export interface TemplateCheck {
  problems: Problem[];
  text: string;
}

export async function loadConfigFile(file: string, options: LoadOptions = {}): Promise<Loaded> {
  const read = await readConfigFile(file);
  if (!read.ok) return read;
  return loadConfigText(read.text, file, options);
}

/** YAML text → one validated Config, or every problem found, each at its node. Reads only asset/template paths. */
export async function loadConfigText(text: string, file: string, options: LoadOptions = {}): Promise<Loaded> {
  const absolute = resolve(file);
  const parsed = parseConfigText(text, absolute);
  if (!parsed.ok) return parsed;
  return checkConfigData(parsed.data, parsed.locate, absolute, options);
}

/**
 * Parsed config data (parse.ts) → one validated Config, or every problem found, placed by `locate`.
 * `file` is the config's absolute path.
 */
const notFilledIn = (field: string) =>
  `${field} holds {{…}}, which is not filled in here: only args and the Ignition template are per machine (move the varying part into args)`;

/** `$NAME` or `${NAME}`: what a shell or systemd would expand, and this loader does not. */
const ENVIRONMENT_REFERENCE = /^\$(?:[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*\})$/;

export async function checkConfigData(
  data: Record<string, unknown>,
  locate: Locator,
  file: string,
  options: LoadOptions = {},
): Promise<Loaded> {
  const env = options.env ?? process.env;
  const typed = typedAsMeant(data, locate);
  const { raw, withDefaults } = typed;
  // Names and vars are read before the defaults: TypeBox drops an own `__proto__` key when it fills
  // them, and turns a `vars` list into a mapping of its indexes.
  const problems = [
    ...structuralProblems(typed.errors, locate),
    ...nameProblems(raw, locate),
    ...varsProblems(raw, locate),
    ...listsWrittenAsMappings(raw, locate),
  ];
  const crossField = crossFieldProblems(withDefaults, locate);
  problems.push(...crossField.problems);
  const environmentToken = env.RACKBOOT_API_TOKEN;
  // The override takes the place of server.api_token, so it is held to the same rules; it has no line.
  if (environmentToken && environmentToken.length < API_TOKEN_MIN_LENGTH) {
    problems.push(
      locate.at(
        ['server', 'api_token'],
        `$RACKBOOT_API_TOKEN is ${environmentToken.length} characters; an API token needs at least ${API_TOKEN_MIN_LENGTH}`,
      ),
    );
  } else if (environmentToken && !new RegExp(API_TOKEN_PATTERN).test(environmentToken)) {
    problems.push(locate.at(['server', 'api_token'], `$RACKBOOT_API_TOKEN ${UNSENDABLE_TOKEN}`));
  }
  const writtenToken = (withDefaults.server as { api_token?: unknown } | undefined)?.api_token;
  if (!environmentToken && typeof writtenToken === 'string' && ENVIRONMENT_REFERENCE.test(writtenToken)) {
    // The file is not expanded: the operator API would take this very text as its token.
    problems.push(
      locate.at(
        ['server', 'api_token'],
        'server.api_token reads as an environment variable ($NAME or ${NAME}), but the config is not expanded and RACKBOOT_API_TOKEN is not set: the token would be that text. Set RACKBOOT_API_TOKEN in the environment and remove the key, or write the token itself',
      ),
    );
  }
  if (problems.length > 0) {
    return { ok: false, problems: problems.sort(byPosition), warnings: crossField.warnings.sort(byPosition) };
  }

  const config = normalise(withDefaults as unknown as RawConfig, file, env);
  const assetProblems = missingAssetProblems(config, locate);
  const templates = await checkTemplates(config, locate, options.checkTemplate);
  const argumentProblems = (options.checkArguments?.(config) ?? []).map(({ path, message }) =>
    locate.at(inWrittenArgs(path, (withDefaults as unknown as RawConfig).profiles), message),
  );
  const errors = [
    ...templates.problems,
    ...argumentProblems,
    ...(options.missingAssets === 'warn' ? [] : assetProblems),
  ];
  const warnings = [
    ...(options.missingAssets === 'warn' ? assetProblems : []),
    ...splitArgumentWarnings((withDefaults as unknown as RawConfig).profiles, locate),
    ...spacedArgumentWarnings((withDefaults as unknown as RawConfig).profiles, locate),
    ...missingBootPrograms(config.dhcp, config.server.assets).map((missing) =>
      locate.at(missingAssetPath(missing), missing.message),
    ),
    ...exampleKeyWarnings(config, templates.texts),
    ...loopbackAddressWarnings(config, locate),
    ...crossField.warnings,
  ].sort(byPosition);
  // The warnings go with the errors: an operator fixing the errors should see the rest too.
  if (errors.length > 0) return { ok: false, problems: errors.sort(byPosition), warnings };
  return {
    ok: true,
    config: deepFreeze(config),
    warnings,
    notes: ignoredInProxyModeNotes(config, locate),
  };
}

/** List indexes become numbers; a key such as `007` stays the text it is. */
const pointerToPath = (pointer: string): Path =>
  pointer
    .split('/')
    .slice(1)
    .map((segment) => segment.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((segment) => (/^(0|[1-9]\d*)$/.test(segment) ? Number(segment) : segment));

/** A MissingAsset's dotted `field` (`initrd.1`, `dhcp.mode`) as a path, list indexes as numbers. */
const missingAssetPath = (missing: MissingAsset): Path =>
  pointerToPath(`/${missing.field.replace(/\./g, '/')}`);

const dotted = (path: Path) =>
  path.reduce<string>(
    (text, segment) =>
      typeof segment === 'number' ? `${text}[${segment}]` : text ? `${text}.${segment}` : segment,
    '',
  );

const SECRET_TOKEN_POINTER = '/server/api_token';
/** What is wrong with a token outside API_TOKEN_PATTERN, without quoting it. */
const UNSENDABLE_TOKEN =
  'holds a space, a control character or a character beyond ASCII; an API token is sent as `Authorization: Bearer <token>` and takes printable ASCII only';

/**
 * The config with its defaults and its schema errors, once what YAML read otherwise than the operator
 * meant is read as meant:
 * - a value YAML read as a number or a boolean where the schema wants text is the text as written:
 *   `profile: 007` names profile "007", not 7; `hostname: 1234`, a bare-hex `mac:`, `kernel: 5.10`
 *   (not 5.1) and `api_token: 1234…` are their text. Quoting is what YAML would ask for, but the
 *   operator's meaning is not in doubt, and the number's own text (7, 5.1) would be a value nobody
 *   wrote. Only plain scalars: a null (`hostname:` with nothing) stays a problem;
 * - a key with nothing under it where a list or a mapping of optional keys is due (`machines:` with
 *   every machine commented out, `vars:`, `http:`) is left out, so it is empty or its default. A
 *   profile, a machine or a list item with nothing stays a problem: it lacks its required keys.
 * The schema is walked again only when a value was read so (a walk of 10,000 machines costs a
 * fraction of a second).
 */
function typedAsMeant(
  data: Record<string, unknown>,
  locate: Locator,
): { raw: Record<string, unknown>; withDefaults: Record<string, unknown>; errors: SchemaError[] } {
  const checked = (raw: Record<string, unknown>) => {
    const withDefaults = Value.Default(ConfigSchema, structuredClone(raw)) as Record<string, unknown>;
    return { raw, withDefaults, errors: schemaErrors(withDefaults) };
  };
  const first = checked(data);
  const misread = first.errors.filter(
    ({ error }) =>
      (error.type === ValueErrorType.String || isChoiceOfTexts(error.schema)) &&
      (typeof error.value === 'number' || typeof error.value === 'boolean'),
  );
  const empty = first.errors.filter(
    ({ error, path }) =>
      error.value === null && typeof path[path.length - 1] === 'string' && isSection(error.schema),
  );
  if (misread.length === 0 && empty.length === 0) return first;
  const copy = structuredClone(data);
  // Defaults add no such value, so every step of these paths is in the data as written.
  const parentOf = (path: Path) =>
    path
      .slice(0, -1)
      .reduce((node, segment) => (node as Record<PropertyKey, unknown>)[segment], copy as unknown) as Record<
      PropertyKey,
      unknown
    >;
  for (const { path } of misread) {
    const text = locate.writtenAt(path);
    if (text !== undefined) parentOf(path)[path[path.length - 1] as PropertyKey] = text;
  }
  for (const { path } of empty) delete parentOf(path)[path[path.length - 1] as PropertyKey];
  return checked(copy);
}

/**
 * One of a few words (`dhcp.mode`): under a `%YAML 1.1` directive `off`, `on`, `yes` and `no` read
 * as booleans, and `mode: off` was refused as "false is not one of proxy, authoritative, off".
 */
function isChoiceOfTexts(schema: TSchema): boolean {
  const members: TSchema[] = schema.anyOf ?? [];
  return members.length > 0 && members.every((member) => typeof member.const === 'string');
}

/** A list, a mapping of names, or a mapping whose keys all have defaults (it has one itself). */
function isSection(schema: TSchema): boolean {
  return (
    schema[Kind] === 'Array' ||
    schema[Kind] === 'Record' ||
    (schema[Kind] === 'Object' && schema.default !== undefined)
  );
}

interface SchemaError {
  error: ValueError;
  path: Path;
}

/**
 * Every schema error with its path: the config's, and those of each profile whose name breaks the
 * rule (its key misses the record's pattern, so the config schema skips it): its other mistakes
 * show now, not after the rename.
 */
function schemaErrors(value: unknown): SchemaError[] {
  const errorsOf = (schema: TSchema, node: unknown, at: Path) =>
    [...Value.Errors(schema, node)].map((error) => ({ error, path: [...at, ...pointerToPath(error.path)] }));
  return [
    ...errorsOf(ConfigSchema, value, []),
    ...Object.entries(asRecord(asRecord(value).profiles))
      .filter(([name]) => !isName(name))
      .flatMap(([name, profile]) => errorsOf(ProfileSchema, profile, ['profiles', name])),
  ];
}

/** Schema errors, one per offending node, in words an operator can act on. */
function structuralProblems(errors: SchemaError[], locate: Locator): Problem[] {
  const problems: Problem[] = [];
  const seen = new Set<string>();
  for (const { error, path } of errors) {
    const key = JSON.stringify(path);
    if (seen.has(key) || VARS_POINTER.test(error.path)) continue;
    seen.add(key);
    if (error.type === ValueErrorType.ObjectAdditionalProperties) {
      problems.push(unknownKeyProblem(error, path, locate));
    } else if (error.type === ValueErrorType.ObjectRequiredProperty) {
      problems.push(locate.at(path.slice(0, -1), `missing required key "${dotted(path)}"`));
    } else if (error.path === SECRET_TOKEN_POINTER && error.type === ValueErrorType.StringPattern) {
      problems.push(locate.at(path, `${dotted(path)} ${UNSENDABLE_TOKEN}`));
    } else if (error.path === SECRET_TOKEN_POINTER) {
      // A problem line ends up in logs and terminals: the token's length, never its value.
      const length = typeof error.value === 'string' ? `${error.value.length} characters` : 'not a string';
      problems.push(
        locate.at(path, `${dotted(path)} is ${length}; an API token needs at least ${API_TOKEN_MIN_LENGTH}`),
      );
    } else {
      problems.push(locate.at(path, `${dotted(path)}: ${describeError(error)}`));
    }
  }
  return problems;
}

/**
 * Profile names and machines[].vars names against the rule of names.ts, which the schema states (a
 * key pattern, propertyNames) but TypeBox's Value.Errors does not check: each bad name at its key,
 * all of them at once.
 */
function nameProblems(value: unknown, locate: Locator): Problem[] {
  const config = asRecord(value);
  const named: { kind: NameKind; path: Path; names: string[] }[] = [
    { kind: 'profile', path: ['profiles'], names: Object.keys(asRecord(config.profiles)) },
    ...asArray(config.machines).map((machine, index) => ({
      kind: 'vars' as const,
      path: ['machines', index, 'vars'],
      names: Object.keys(asRecord(asRecord(machine).vars)),
    })),
  ];
  return named.flatMap(({ kind, path, names }) =>
    names
      .filter((name) => !isName(name))
      .map((name) => locate.atKey([...path, name], `${dotted(path)}: ${badName(kind, name)}`)),
  );
}

/** The lists with a default of their own (machines, dhcp.subnets), by their path in the config. */
const DEFAULTED_LISTS: Path[] = (function listsUnder(schema: TSchema, path: Path): Path[] {
  if (schema[Kind] === 'Array' && schema.default !== undefined) return [path];
  return Object.entries((schema.properties ?? {}) as Record<string, TSchema>).flatMap(([key, child]) =>
    listsUnder(child, [...path, key]),
  );
})(ConfigSchema, []);

/**
 * A list written as a mapping, as `machines:` with the dash of its one entry forgotten. TypeBox's
 * Value.Default merges a mapping into the empty list that is the default, so the schema saw an
 * empty list: the config loaded, and the machine was gone without a word.
 */
function listsWrittenAsMappings(value: unknown, locate: Locator): Problem[] {
  return DEFAULTED_LISTS.flatMap((path) => {
    const written = path.reduce<unknown>((parent, key) => asRecord(parent)[key], value);
    return isObject(written)
      ? [
          locate.at(
            path,
            `${dotted(path)}: expected a list (each entry starting with "- "), got ${shownValue(written)}`,
          ),
        ]
      : [];
  });
}

/** Where the schema's errors are left to varsProblems, which says them in an operator's words. */
const VARS_POINTER = /^\/machines\/\d+\/vars(\/|$)/;

/**
 * Each machine's `vars` that is not a mapping, and each value in one that is not one scalar, at
 * its node, naming the machine: TypeBox said "expected union value", and took a list for a mapping
 * of its indexes (`{{vars.0}}`).
 */
function varsProblems(value: unknown, locate: Locator): Problem[] {
  return asArray(asRecord(value).machines).flatMap((machine, index) => {
    const { mac, vars } = asRecord(machine);
    if (vars === undefined) return [];
    const path = ['machines', index, 'vars'];
    const which = typeof mac === 'string' ? ` (machine ${mac})` : '';
    if (!isObject(vars))
      return [
        locate.at(
          path,
          `${dotted(path)}${which}: a mapping of NAME: value (role: worker) for {{vars.NAME}}, got ${shownValue(vars)}`,
        ),
      ];
    return Object.entries(vars).flatMap(([name, given]) => {
      if (typeof given === 'string' || typeof given === 'number' || typeof given === 'boolean') return [];
      const at = [...path, name];
      return [
        locate.at(
          at,
          given === null
            ? `${dotted(at)}${which} has no value: write one, or "" for an empty text`
            : `${dotted(at)}${which}: {{vars.${name}}} takes one value (text, a number, true or false), got ${shownValue(given)}; quote it to pass it as text`,
        ),
      ];
    });
  });
}

function unknownKeyProblem(error: ValueError, path: Path, locate: Locator): Problem {
  const key = String(path[path.length - 1]);
  const parentSchema = error.schema as TSchema & { properties?: Record<string, unknown> };
  const known = Object.keys(parentSchema.properties ?? {}).filter((name) => name !== '$schema');
  const suggestion = closestName(key, known);
  const where = path.length > 1 ? ` in ${dotted(path.slice(0, -1))}` : '';
  const hint = suggestion ? ` (did you mean "${suggestion}"?)` : ` (known keys: ${known.join(', ')})`;
  return locate.atKey(path, `unknown key "${key}"${where}${hint}`);
}

function describeError(error: ValueError): string {
  const schema = error.schema as TSchema & {
    anyOf?: TSchema[];
    pattern?: string;
    patternErrorMessage?: string;
    format?: string;
  };
  const shown = shownValue(error.value);
  if (schema.anyOf?.some((member) => member.pattern === DURATION_PATTERN)) {
    return `bad duration ${shown}: use a number of seconds or units without spaces, e.g. 90s, 30m, 1h, 7d, 1h30m`;
  }
  const literals = schema.anyOf?.map((member) => (member as { const?: unknown }).const);
  if (literals && literals.length > 0 && literals.every((literal) => typeof literal === 'string')) {
    const choices = literals as string[];
    const suggestion = typeof error.value === 'string' ? closestName(error.value, choices) : undefined;
    return `${shown} is not one of ${choices.join(', ')}${suggestion ? ` (did you mean "${suggestion}"?)` : ''}`;
  }
  if (schema.format === 'ipv4') return `${shown} is not an IPv4 address`;
  if (error.type === ValueErrorType.StringPattern)
    return schema.patternErrorMessage
      ? `${shown} is ${schema.patternErrorMessage}`
      : `${shown} does not match the pattern ${schema.pattern}`;
  return `${error.message.toLowerCase()}, got ${shown}`;
}

/**
 * A value as a problem line shows it: short. A list or mapping in the wrong place (a whole fleet's
 * `machines:` indented under `profiles:`) made one line of 179 KB.
 */
function shownValue(value: unknown): string {
  if (Array.isArray(value)) return `a list of ${value.length} ${value.length === 1 ? 'item' : 'items'}`;
  if (value !== null && typeof value === 'object') {
    const keys = Object.keys(value);
    return `a mapping (${keys.length > 3 ? `${keys.slice(0, 3).join(', ')}, …` : keys.join(', ')})`;
  }
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}…"` : text;
}

type RawConfig = Omit<Config, 'file' | 'machines' | 'dhcp' | 'ignition'> & {
  machines: (Omit<Config['machines'][number], 'mac'> & { mac: string })[];
  dhcp: Omit<Config['dhcp'], 'lease_time' | 'subnets'> & {
    lease_time: string | number;
    subnets: (Omit<Config['dhcp']['subnets'][number], 'lease_time'> & { lease_time?: string | number })[];
  };
  ignition: { token_ttl: string | number; require_leased_address: boolean };
};

const asRecord = (value: unknown): Record<string, unknown> => (isObject(value) ? value : {});
const asArray = (value: unknown): unknown[] => (Array.isArray(value) ? value : []);

/**
 * Checks that span keys. Runs on a possibly ill-typed value, so every read is guarded: the goal is
 * all problems at once, and a type error elsewhere must not hide a duplicate MAC.
 */
function crossFieldProblems(
  value: Record<string, unknown>,
  locate: Locator,
): { problems: Problem[]; warnings: Problem[] } {
  const problems: Problem[] = [];
  const warnings: Problem[] = [];
  const dhcp = asRecord(value.dhcp);
  const profiles = asRecord(value.profiles);
  const profileNames = Object.keys(profiles);
  const authoritative = dhcp.mode === 'authoritative';

  const subnetAt = (path: Path, text: unknown): Cidr | undefined => {
    if (typeof text !== 'string') return undefined;
    const parsed = parseCidr(text);
    if ('error' in parsed) {
      problems.push(locate.at(path, `${dotted(path)}: ${parsed.error}`));
      return undefined;
    }
    return parsed;
  };
  const checkRange = (path: Path, range: unknown, subnet: Cidr | undefined) => {
    const [first, last] = asArray(range);
    if (typeof first !== 'string' || typeof last !== 'string' || !isIpv4(first) || !isIpv4(last)) return;
    if (ipToNumber(first) > ipToNumber(last)) {
      problems.push(locate.at(path, `${dotted(path)}: range is reversed: ${first} comes after ${last}`));
    }
    if (!subnet) return;
    [first, last].forEach((address, index) => {
      if (!cidrContains(subnet, ipToNumber(address))) {
        problems.push(locate.at([...path, index], `${dotted(path)}: ${address} is outside the subnet`));
      }
    });
  };

  const mainSubnet = subnetAt(['dhcp', 'subnet'], dhcp.subnet);
  if (authoritative && dhcp.subnet === undefined) {
    problems.push(locate.at(['dhcp', 'mode'], 'dhcp.mode authoritative needs dhcp.subnet and dhcp.range'));
  } else if (authoritative && dhcp.range === undefined) {
    problems.push(locate.at(['dhcp', 'subnet'], 'dhcp.mode authoritative needs dhcp.range'));
  }
  checkRange(['dhcp', 'range'], dhcp.range, mainSubnet);
  checkLeaseTime(['dhcp', 'lease_time'], dhcp.lease_time, problems, locate);
  checkTokenTtl(asRecord(value.ignition).token_ttl, problems, locate);
  const subnets: Cidr[] = mainSubnet ? [mainSubnet] : [];
  // Addresses the network already uses, by the key that names them: no machine may be reserved one.
  const taken = new Map<string, string>();
  const noteTaken = (address: unknown, key: string) => {
    if (typeof address === 'string' && isIpv4(address) && !taken.has(address)) taken.set(address, key);
  };
  // Off-link, a client is offered a next-server and a gateway it cannot reach, and the boot fails
  // after an offer that looked right.
  const checkInside = (
    path: Path,
    address: unknown,
    subnet: Cidr | undefined,
    subnetKey: string,
    why: string,
  ) => {
    if (!authoritative || !subnet || typeof address !== 'string' || !isIpv4(address)) return;
    if (cidrContains(subnet, ipToNumber(address))) return;
    problems.push(locate.at(path, `${dotted(path)} ${address} is outside ${subnetKey}: ${why}`));
  };
  const serverAddress = asRecord(value.server).address;
  const unusable =
    typeof serverAddress === 'string' && isIpv4(serverAddress)
      ? unusableServerAddress(serverAddress)
      : undefined;
  if (unusable) {
    problems.push(
      locate.at(
        ['server', 'address'],
        `server.address ${serverAddress} is ${unusable}: machines are sent to it (next-server, boot URLs), so it must be this host's address on the provisioning LAN`,
      ),
    );
  }
  checkInside(
    ['server', 'address'],
    serverAddress,
    mainSubnet,
    'dhcp.subnet',
    "dhcp.subnet is the server's own network (relayed networks go under dhcp.subnets)",
  );
  checkInside(['dhcp', 'router'], dhcp.router, mainSubnet, 'dhcp.subnet', 'clients could not reach it');
  noteTaken(asRecord(value.server).address, 'server.address');
  noteTaken(dhcp.router, 'dhcp.router');
  // A request is served from the first subnet holding its relay's (or, renewing, its own) address,
  // so of two overlapping subnets one would silently take the other's clients, pool and options.
  const subnetNames = mainSubnet ? [`dhcp.subnet ${dhcp.subnet}`] : [];
  asArray(dhcp.subnets).forEach((entry, index) => {
    const relay = asRecord(entry);
    const subnet = subnetAt(['dhcp', 'subnets', index, 'subnet'], relay.subnet);
    checkRange(['dhcp', 'subnets', index, 'range'], relay.range, subnet);
    checkInside(
      ['dhcp', 'subnets', index, 'router'],
      relay.router,
      subnet,
      `dhcp.subnets[${index}].subnet`,
      'clients could not reach it',
    );
    checkLeaseTime(['dhcp', 'subnets', index, 'lease_time'], relay.lease_time, problems, locate);
    noteTaken(relay.router, `dhcp.subnets[${index}].router`);
    if (!subnet) return;
    const overlapped = subnetNames[subnets.findIndex((other) => cidrsOverlap(other, subnet))];
    if (authoritative && overlapped) {
      problems.push(
        locate.at(
          ['dhcp', 'subnets', index, 'subnet'],
          `dhcp.subnets[${index}].subnet ${relay.subnet} overlaps ${overlapped}, listed before it: a relay or client address in both is served from that subnet alone`,
        ),
      );
    }
    subnets.push(subnet);
    subnetNames.push(`dhcp.subnets[${index}].subnet ${relay.subnet}`);
  });

  const unknownMachines = value.unknown_machines;
  if (
    typeof unknownMachines === 'string' &&
    unknownMachines !== 'ignore' &&
    !Object.hasOwn(profiles, unknownMachines)
  ) {
    // `Ignore` or `ignor` means the word, not a profile: suggested along with the profiles.
    problems.push(missingProfile(['unknown_machines'], unknownMachines, profileNames, locate, ['ignore']));
  }

  for (const [name, profileValue] of Object.entries(profiles)) {
    const profile = asRecord(profileValue);
    const hasStream = profile.coreos !== undefined;
    if (profile.kernel === undefined && profile.arch === undefined && !hasStream) {
      problems.push(locate.atKey(['profiles', name], `profile "${name}" needs a kernel (or coreos.stream)`));
    }
    if (profile.kind === 'coreos-install' && !hasStream) {
      if (profile.rootfs === undefined && profile.arch === undefined) {
        problems.push(locate.atKey(['profiles', name], `profile "${name}" (coreos-install) needs a rootfs`));
      }
    }
    if (profile.kind === 'coreos-install' && profile.install_device === undefined) {
      problems.push(
        locate.atKey(
          ['profiles', name],
          `profile "${name}" (coreos-install) needs install_device, e.g. /dev/sda`,
        ),
      );
    }
    // Only args and Ignition templates are filled per machine; here `{{vars.disk}}` would reach the
    // kernel line as written.
    for (const field of ['kernel', 'rootfs', 'install_device'] as const) {
      if (typeof profile[field] === 'string' && profile[field].includes('{{')) {
        problems.push(locate.at(['profiles', name, field], notFilledIn(`profiles.${name}.${field}`)));
      }
    }
    if (Array.isArray(profile.initrd)) {
      profile.initrd.forEach((initrd, index) => {
        if (typeof initrd === 'string' && initrd.includes('{{'))
          problems.push(
            locate.at(['profiles', name, 'initrd', index], notFilledIn(`profiles.${name}.initrd[${index}]`)),
          );
      });
    }
    // It becomes one kernel argument (coreos.inst.install_dev=…), which iPXE would split.
    if (typeof profile.install_device === 'string' && !isKernelWord(profile.install_device)) {
      problems.push(
        locate.at(
          ['profiles', name, 'install_device'],
          `profiles.${name}.install_device ${JSON.stringify(profile.install_device)} ${NOT_A_KERNEL_WORD}: a device path is one word`,
        ),
      );
    }
  }

  const macLines = new Map<string, Path>();
  const ipLines = new Map<string, Path>();
  const hostnameLines = new Map<string, { path: Path; hostname: string }>();
  asArray(value.machines).forEach((entry, index) => {
    const machine = asRecord(entry);
    const base: Path = ['machines', index];
    if (typeof machine.mac === 'string') {
      const mac = parseMac(machine.mac);
      if (!mac) {
        problems.push(
          locate.at([...base, 'mac'], `"${machine.mac}" is not a MAC address (e.g. 52:54:00:12:34:56)`),
        );
      } else if (!isMachineMac(mac)) {
        // The boot routes refuse such a MAC, and no DHCP client sends one: the entry would never boot.
        problems.push(locate.at([...base, 'mac'], `${mac} ${NOT_A_MACHINE_MAC}`));
      } else {
        const first = macLines.get(mac);
        if (first) {
          problems.push(
            ...eachNamingTheOther(
              locate,
              [...first, 'mac'],
              [...base, 'mac'],
              (other) => `duplicate MAC ${mac}: also at line ${other.line}:${other.col}`,
            ),
          );
        } else macLines.set(mac, base);
      }
    }
    if (typeof machine.hostname === 'string') {
      // A warning, not an error: configs with one loaded before. Host names are case-insensitive
      // (RFC 4343), so N1 and n1 are one name to DNS and to the machines themselves.
      const key = machine.hostname.toLowerCase();
      const first = hostnameLines.get(key);
      if (first) {
        const later = machine.hostname;
        warnings.push(
          ...eachNamingTheOther(locate, [...first.path, 'hostname'], [...base, 'hostname'], (other, here) =>
            here === 'earlier'
              ? duplicateHostname(first.hostname, other, later)
              : duplicateHostname(later, other, first.hostname),
          ),
        );
      } else hostnameLines.set(key, { path: base, hostname: machine.hostname });
    }
    if (typeof machine.profile === 'string' && !Object.hasOwn(profiles, machine.profile)) {
      problems.push(missingProfile([...base, 'profile'], machine.profile, profileNames, locate));
    }
    if (typeof machine.ip === 'string' && isIpv4(machine.ip)) {
      const first = ipLines.get(machine.ip);
      if (first) {
        const earlier = locate.at([...first, 'ip'], '');
        problems.push(
          locate.at(
            [...base, 'ip'],
            `duplicate reserved IP ${machine.ip}: also at line ${earlier.line}:${earlier.col}`,
          ),
        );
      } else ipLines.set(machine.ip, base);
      const takenBy = taken.get(machine.ip);
      if (takenBy) {
        problems.push(
          locate.at([...base, 'ip'], `reserved IP ${machine.ip} is ${takenBy}: give the machine another`),
        );
      }
      const reserved = ipToNumber(machine.ip);
      const subnet = subnets.find((candidate) => cidrContains(candidate, reserved));
      if (subnets.length > 0 && !subnet) {
        problems.push(
          locate.at([...base, 'ip'], `reserved IP ${machine.ip} is outside ${subnetNames.join(' and ')}`),
        );
      } else if (subnet && unassignableAddresses(subnet).includes(reserved)) {
        problems.push(
          locate.at(
            [...base, 'ip'],
            `reserved IP ${machine.ip} is the network or broadcast address of ${numberToIp(subnet.network)}/${subnet.prefixLength}`,
          ),
        );
      }
    }
  });
  return { problems, warnings };
}

/** One of two machines' places names the other's, with the other's spelling when it differs. */
function duplicateHostname(hostname: string, other: Problem, otherHostname: string): string {
  const spelled = otherHostname === hostname ? '' : ` as ${otherHostname}`;
  return `duplicate hostname ${hostname}: also at line ${other.line}:${other.col}${spelled}; two machines would answer to one name`;
}

/**
 * A value two machines share, at both places, each naming the other's line, so either line leads
 * to the fix: the later place first. `describe` gets the other place and which one this is.
 */
function eachNamingTheOther(
  locate: Locator,
  earlierPath: Path,
  laterPath: Path,
  describe: (other: Problem, here: 'earlier' | 'later') => string,
): Problem[] {
  const earlier = locate.at(earlierPath, '');
  const later = locate.at(laterPath, '');
  return [
    { ...later, message: describe(earlier, 'later') },
    { ...earlier, message: describe(later, 'earlier') },
  ];
}

function missingProfile(
  path: Path,
  name: string,
  known: string[],
  locate: Locator,
  words: string[] = [],
): Problem {
  const suggestion = closestName(name, [...words, ...known]);
  const hint = suggestion
    ? ` (did you mean "${suggestion}"?)`
    : known.length > 0
      ? ` (profiles: ${known.join(', ')})`
      : ' (no profiles defined)';
  return locate.at(path, `${dotted(path)} names profile "${name}", which does not exist${hint}`);
}

const DURATION_UNITS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 };

/** `1h30m` → 5400 seconds; numbers are seconds already. The schema has checked the form. */
export function durationSeconds(value: string | number): number {
  if (typeof value === 'number') return value;
  let total = 0;
  for (const [, amount, unit] of value.matchAll(/(\d+)(ms|s|m|h|d)/g)) {
    total += Number(amount) * (DURATION_UNITS[unit ?? 's'] ?? 1);
  }
  return Math.round(total);
}

/**
 * A 0 s lease (also `400ms`, rounded) is free the moment it is bound, so the next client is given
 * the same address; option 51 is 32 bits, and 0xFFFFFFFF means infinite (RFC 2132 §9.2), which
 * these leases are not. Short leases stay allowed: tests and labs use seconds to see renewals.
 */
const LEASE_SECONDS_MIN = 1;
const LEASE_SECONDS_MAX = 0xfffffffe;

/**
 * A duration the schema takes (`90s`, `1h30m`, or whole seconds), in seconds; undefined for what it
 * refuses (`1 hour`, -5, 1.5), which it reports already: one line for one mistake.
 */
function schemaDuration(value: unknown): number | undefined {
  if (typeof value === 'string')
    return new RegExp(DURATION_PATTERN).test(value) ? durationSeconds(value) : undefined;
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 ? value : undefined;
}

function checkLeaseTime(path: Path, value: unknown, problems: Problem[], locate: Locator): void {
  const seconds = schemaDuration(value);
  if (seconds === undefined || (seconds >= LEASE_SECONDS_MIN && seconds <= LEASE_SECONDS_MAX)) return;
  problems.push(
    locate.at(
      path,
      `${dotted(path)}: ${value} is ${seconds} s; a lease lasts from 1s to ${LEASE_SECONDS_MAX} s (about 136 years)`,
    ),
  );
}

/**
 * The longest token_ttl, 100 years. A token carries its expiry in seconds since the epoch, read
 * back as at most 12 digits (ignition/tokens.ts): from about 31,000 years on, every token the
 * server handed out was refused (403), as was every Ignition fetch.
 */
const TOKEN_TTL_SECONDS_MAX = 36_500 * 86_400;

/**
 * A token_ttl of 0 s means no expiry, so one written shorter than a second (`500ms`), which is
 * rounded to 0 s, would give the credentials no expiry at all: the opposite of what it asks.
 */
function checkTokenTtl(value: unknown, problems: Problem[], locate: Locator): void {
  const seconds = schemaDuration(value);
  if (seconds === undefined) return;
  const at = (message: string) =>
    problems.push(locate.at(['ignition', 'token_ttl'], `ignition.token_ttl: ${message}`));
  if (seconds === 0 && /[1-9]/.test(String(value)))
    at(`${value} is 0 s, which means no expiry: write 0 for no expiry, or 1s or more`);
  else if (seconds > TOKEN_TTL_SECONDS_MAX)
    at(`${value} is ${seconds} s; a token lifetime is at most 36500d (100 years): write 0 for no expiry`);
}

const DEFAULT_LEASE_SECONDS = durationSeconds(ConfigSchema.properties.dhcp.properties.lease_time.default);

function normalise(raw: RawConfig, file: string, env: Record<string, string | undefined>): Config {
  const base = dirname(file);
  const inBase = (path: string) => (isAbsolute(path) ? path : resolve(base, path));
  const leaseTime = durationSeconds(raw.dhcp.lease_time);
  const apiToken = env.RACKBOOT_API_TOKEN || raw.server.api_token;
  return {
    ...raw,
    file,
    server: {
      ...raw.server,
      assets: inBase(raw.server.assets),
      state: inBase(raw.server.state),
      ...(apiToken ? { api_token: apiToken } : {}),
    },
    dhcp: {
      ...raw.dhcp,
      lease_time: leaseTime,
      subnets: raw.dhcp.subnets.map((subnet) => ({
        ...subnet,
        lease_time: subnet.lease_time === undefined ? leaseTime : durationSeconds(subnet.lease_time),
      })),
    },
    profiles: Object.fromEntries(
      Object.entries(raw.profiles).map(([name, profile]) => [
        name,
        {
          ...profile,
          ...(profile.args ? { args: kernelArguments(profile.args).map(({ argument }) => argument) } : {}),
          ...(profile.ignition === undefined ? {} : { ignition: inBase(profile.ignition) }),
        },
      ]),
    ),
    machines: raw.machines.map((machine) => ({
      ...machine,
      mac: parseMac(machine.mac) ?? (machine.mac as never),
    })),
    ignition: {
      token_ttl: durationSeconds(raw.ignition.token_ttl),
      require_leased_address: raw.ignition.require_leased_address,
    },
  };
}

/**
 * `args: [console=ttyS0,115200n8]` is valid YAML but a flow sequence splits it at the comma, so the
 * kernel would get `console=ttyS0` and a stray `115200n8`. An argument with no `=` that follows one
 * with `=` is almost always such a tail; say how to quote it. (Flags such as `quiet` or `rd.shell`
 * have letters and no digits-first shape, so they are not flagged.) A serial console's options are
 * joined back (CONTRACT.md's own example is written so); the others are left as written.
 */
function splitArgumentWarnings(profiles: RawConfig['profiles'], locate: Locator): Problem[] {
  return Object.entries(profiles).flatMap(([name, profile]) =>
    (profile.args ?? []).flatMap((argument, index) => {
      const previous = profile.args?.[index - 1];
      if (!previous?.includes('=') || argument.includes('=') || !/^[\d,]/.test(argument)) return [];
      const whole = `${previous},${argument}`;
      return [
        locate.at(
          ['profiles', name, 'args', index],
          isConsoleOptions(previous, argument)
            ? `"${argument}" is the rest of "${whole}" split at a comma by YAML; joined back, quote it to say so: "${whole}"`
            : `"${argument}" looks like the rest of "${whole}" split at a comma by YAML; quote it: "${whole}"`,
        ),
      ];
    }),
  );
}

/**
 * An argument written with spaces (`"console=ttyS0 quiet"`) is that many kernel arguments, as iPXE's
 * kernel line always made it; they are split here, so that a space a var brings in later can be
 * refused (machine-script.ts) without refusing these. A `{{ … }}` placeholder stays whole.
 */
function kernelWords(argument: string): string[] {
  return argument.match(/(?:\{\{[^}]*\}\}|\S)+/g) ?? [];
}

/** Arguments written with whitespace in them: split (kernelWords), with a warning saying how to write them. */
function spacedArgumentWarnings(profiles: RawConfig['profiles'], locate: Locator): Problem[] {
  return Object.entries(profiles).flatMap(([name, profile]) =>
    (profile.args ?? []).flatMap((argument, index) => {
      const words = kernelWords(argument);
      if (words.length === 1 && words[0] === argument) return [];
      return [
        locate.at(
          ['profiles', name, 'args', index],
          words.length === 0
            ? 'an empty kernel argument is left out'
            : `${JSON.stringify(argument)} is ${words.length} kernel arguments, split at whitespace: write each as its own list item`,
        ),
      ];
    }),
  );
}

/** `console=ttyS0` followed by `115200n8`: a serial console and its speed (a runlevel is one digit). */
const isConsoleOptions = (previous: string, argument: string) =>
  /^console=[^,]+$/.test(previous) && /^\d{3,7}([noe]\d?r?)?$/.test(argument);

/**
 * The kernel arguments a profile's `args` make: each item split into kernelWords, a console's speed
 * joined back to it. `item` is the list item each came from, where a problem with it is shown.
 */
function kernelArguments(written: string[]): { argument: string; item: number }[] {
  const made: { argument: string; item: number }[] = [];
  for (const [item, text] of written.entries()) {
    for (const word of kernelWords(text)) {
      const previous = made.at(-1);
      if (previous !== undefined && isConsoleOptions(previous.argument, word))
        previous.argument = `${previous.argument},${word}`;
      else made.push({ argument: word, item });
    }
  }
  return made;
}

/**
 * A problem checkArguments found at the config's `args` index, moved to the list item of the file
 * it came from: items written with spaces or a console's speed apart shift those indexes.
 */
function inWrittenArgs(path: Path, profiles: RawConfig['profiles']): Path {
  const [root, name, key, index] = path;
  if (root !== 'profiles' || key !== 'args' || typeof name !== 'string' || typeof index !== 'number')
    return path;
  const item = kernelArguments(profiles[name]?.args ?? [])[index]?.item;
  return item === undefined ? path : ['profiles', name, 'args', item, ...path.slice(4)];
}

/**
 * Keys set in the file that only authoritative mode reads. lease_time has a default, so it is named
 * only when it differs from it.
 */
function ignoredInProxyModeNotes(config: Config, locate: Locator): Problem[] {
  if (config.dhcp.mode !== 'proxy') return [];
  const { dhcp } = config;
  const reservations = config.machines.filter((machine) => machine.ip !== undefined).length;
  const ignored = [
    ['dhcp.subnet', dhcp.subnet !== undefined],
    ['dhcp.range', dhcp.range !== undefined],
    ['dhcp.router', dhcp.router !== undefined],
    ['dhcp.dns', dhcp.dns !== undefined],
    ['dhcp.domain', dhcp.domain !== undefined],
    ['dhcp.lease_time', dhcp.lease_time !== DEFAULT_LEASE_SECONDS],
    ['dhcp.subnets', dhcp.subnets.length > 0],
    [`machines[].ip (${counted(reservations, 'machine')})`, reservations > 0],
  ].flatMap(([key, set]) => (set ? [key as string] : []));
  if (ignored.length === 0) return [];
  return [
    locate.at(
      ['dhcp', 'mode'],
      `dhcp.mode proxy leaves addresses to the LAN's DHCP server, so ${ignored.join(', ')} ` +
        'have no effect (they apply in authoritative mode)',
    ),
  ];
}

function missingAssetProblems(config: Config, locate: Locator): Problem[] {
  return Object.entries(config.profiles).flatMap(([name, profile]) =>
    missingAssets(profile, config.server.assets).map((missing) =>
      locate.at(['profiles', name, ...missingAssetPath(missing)], missing.message),
    ),
  );
}

/** The templates' problems, and the text of each template `checkTemplate` read, by path. */
async function checkTemplates(
  config: Config,
  locate: Locator,
  checkTemplate: LoadOptions['checkTemplate'],
): Promise<{ problems: Problem[]; texts: Map<string, string> }> {
  const problems: Problem[] = [];
  const texts = new Map<string, string>();
  for (const [name, profile] of Object.entries(config.profiles)) {
    if (profile.ignition === undefined) continue;
    if (!isRegularFile(profile.ignition)) {
      const shown = relative(dirname(config.file), profile.ignition);
      const what = existsSync(profile.ignition) ? 'is not a file (a directory?)' : 'does not exist';
      problems.push(locate.at(['profiles', name, 'ignition'], `Ignition/Butane template "${shown}" ${what}`));
    } else if (checkTemplate && !texts.has(profile.ignition)) {
      const checked = await checkTemplate(profile.ignition, config);
      texts.set(profile.ignition, checked.text);
      problems.push(...checked.problems);
    }
  }
  return { problems, texts };
}

/** In the shipped templates' SSH key, which no one holds the private half of. */
const EXAMPLE_KEY_MARK = 'ReplaceThisWithYourOwnPublicKey';

/** Why an address can never be where machines reach this server, if so. */
function unusableServerAddress(address: string): string | undefined {
  const value = ipToNumber(address);
  if (value === 0)
    return 'the unspecified address (it means "every interface" for a listener, never a destination)';
  if (value === 0xffffffff) return 'the limited broadcast address';
  if (value >>> 28 === 0xe) return 'a multicast address';
  return undefined;
}

/** A loopback server.address is fine while DHCP is off (a test bench, a proxy in front); booting machines cannot reach it. */
function loopbackAddressWarnings(config: Config, locate: Locator): Problem[] {
  if (config.dhcp.mode === 'off' || ipToNumber(config.server.address) >>> 24 !== 127) return [];
  return [
    locate.at(
      ['server', 'address'],
      `server.address ${config.server.address} is a loopback address, yet dhcp.mode ${config.dhcp.mode} sends machines to it: set this host's address on the provisioning LAN`,
    ),
  ];
}

/**
 * Templates still holding the example's key install machines nobody can log in to. `checked`: the
 * texts checkTemplate read; a template it did not read (a load without it) is read here.
 */
function exampleKeyWarnings(config: Config, checked: Map<string, string>): Problem[] {
  const templates = new Set(Object.values(config.profiles).flatMap((profile) => profile.ignition ?? []));
  return [...templates].flatMap((template) => {
    // '' is also checkTemplate's text of a template that is not UTF-8 text: that one is read here,
    // decoded as it comes, so a key in it is still pointed at beside the template's error.
    const text = checked.get(template) || regularFileTextOrNothing(template);
    const at = text.indexOf(EXAMPLE_KEY_MARK);
    if (at < 0) return [];
    return [
      {
        file: template,
        line: text.slice(0, at).split('\n').length,
        col: at - text.lastIndexOf('\n', at),
        message:
          "the example's placeholder SSH key: put your own public key here, or nobody can log in to the machines",
      },
    ];
  });
}

/**
 * The text of `template` when it is a regular file it can read, else '', from one open whose answer
 * tells both. A check of the path before the read passed a file this user may not read (or one
 * removed in between), and the read's error stopped the whole load; a template that is missing, not
 * a file or unreadable is templateFileProblems' to report.
 */
function regularFileTextOrNothing(template: string): string {
  try {
    return readRegularFileSync(template)?.toString('utf8') ?? '';
  } catch {
    return '';
  }
}

export function isRegularFile(path: string): boolean {
  return existsSync(path) && statSync(path).isFile();
}

/** The config contract is a frozen snapshot; also used for a config that crossed a thread. */
export function deepFreeze<T>(value: T): Readonly<T> {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
