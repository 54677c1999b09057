/**
 * The one rule for the names of a machine's `vars`: the names a template can spell as
 * `{{vars.NAME}}`. The config schema (machines[].vars), template placeholders, adopt (library, CLI
 * `--var`, API body) all take it from here; the dashboard's adopt form (src/http/dashboard/app.js,
 * no build step) repeats the pattern, and a test keeps the two equal. This module imports nothing, so
 * inventory and ignition both import it without a cycle.
 */

/** Letters, digits, `_` and `-`, at least one: as a JSON Schema `pattern` (also for ajv and TypeBox). */
export const VAR_NAME_PATTERN = '^[A-Za-z0-9_-]+$';

/** The rule in words, for every message that refuses a name. */
export const VAR_NAME_RULE = 'vars names may hold letters, digits, _ and -';

const VAR_NAME = new RegExp(VAR_NAME_PATTERN);

export function isVarName(name: string): boolean {
  return VAR_NAME.test(name);
}

/** Why `name` is refused, the same words wherever it is refused. */
export function badVarName(name: string): string {
  return `bad vars name ${JSON.stringify(name)}: ${VAR_NAME_RULE}`;
}
