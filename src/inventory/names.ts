/**
 * The one rule for the names an operator gives in the config: profile names (the keys of `profiles`)
 * and the names of a machine's `vars`, the ones a template can spell as `{{vars.NAME}}`. The config
 * schema, template placeholders and adopt (library, CLI `--var`, API body) all take it from here; the
 * dashboard's adopt form (src/http/dashboard/app.js, no build step) repeats the pattern, and a test
 * keeps the two equal. This module imports nothing, so inventory and ignition both import it without
 * a cycle.
 */

/** Letters, digits, `_` and `-`, at least one: as a JSON Schema `pattern` (also for ajv and TypeBox). */
export const NAME_PATTERN = '^[A-Za-z0-9_-]+$';

/** What a name names, as messages say it. */
export type NameKind = 'profile' | 'vars';

/** The rule in words, for every message that refuses a name. */
export function nameRule(kind: NameKind): string {
  return `${kind} names may hold letters, digits, _ and -`;
}

const NAME = new RegExp(NAME_PATTERN);

export function isName(name: string): boolean {
  return NAME.test(name);
}

/** Why `name` is refused, the same words wherever it is refused. */
export function badName(kind: NameKind, name: string): string {
  return `bad ${kind} name ${JSON.stringify(name)}: ${nameRule(kind)}`;
}
