/**
 * The one rule for the names an operator gives in the config: profile names (the keys of `profiles`)
 * and the names of a machine's `vars`, the ones a template can spell as `{{vars.NAME}}`. The config
 * schema, template placeholders and adopt (library, CLI `--var`, API body) all take it from here; the
 * dashboard's adopt form (src/http/dashboard/app.js, no build step) repeats the pattern and the rule
 * in words, and tests keep them equal. The rule for machines' host names is here too, for the
 * config schema and the adopt API body. This module imports nothing, so inventory and ignition both
 * import it without a cycle.
 */

/**
 * Names a JavaScript object already answers to. fastify's JSON parser refuses any body with a
 * `__proto__` key (an adopt with such a var could never be sent), and a lookup by name on a plain
 * object finds Object.prototype's `constructor`: no profile or var may take one of them.
 */
const RESERVED_NAMES = ['__proto__', 'constructor', 'prototype'];

/**
 * Letters, digits, `_` and `-`, at least one, and not a reserved name: as a JSON Schema `pattern`
 * (also for ajv and TypeBox).
 */
export const NAME_PATTERN = `^(?!(?:${RESERVED_NAMES.join('|')})$)[A-Za-z0-9_-]+$`;

/** What a name names, as messages say it. */
export type NameKind = 'profile' | 'vars';

/** The rule in words, for every message that refuses a name. */
export function nameRule(kind: NameKind): string {
  return `${kind} names may hold letters, digits, _ and -, except ${RESERVED_NAMES.join(', ')}`;
}

const NAME = new RegExp(NAME_PATTERN);

export function isName(name: string): boolean {
  return NAME.test(name);
}

/** Why `name` is refused, the same words wherever it is refused. */
export function badName(kind: NameKind, name: string): string {
  return `bad ${kind} name ${JSON.stringify(name)}: ${nameRule(kind)}`;
}

/**
 * A host name (RFC 1123): dot-separated labels of letters, digits and hyphens, each 1 to 63 long
 * and neither starting nor ending with a hyphen, 253 characters in all. Machines send it as DHCP
 * option 12 and templates write it into /etc/hostname, where anything else is refused or cut.
 */
const LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
export const HOSTNAME_PATTERN = `^(?=.{1,253}$)${LABEL}(?:\\.${LABEL})*$`;

/** The host name rule in words, for every message that refuses one and the config reference. */
export const HOSTNAME_RULE =
  'letters, digits and hyphens, in dot-separated labels of 1 to 63 characters that neither start nor end with a hyphen, 253 characters at most';

/** Why a value is refused as a host name, after "is" (and for editors, as patternErrorMessage). */
export const NOT_A_HOSTNAME = `not a host name (${HOSTNAME_RULE})`;
