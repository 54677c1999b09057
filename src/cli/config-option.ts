import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';

/**
 * `-c FILE`; default ./rackboot.yaml, then $RACKBOOT_CONFIG (CONTRACT.md). An empty `-c` is refused:
 * a script's `-c "$CFG"` with the variable unset must not fall back to ./rackboot.yaml and serve or
 * edit the wrong file. An empty $RACKBOOT_CONFIG counts as unset, as `RACKBOOT_CONFIG=` does in a shell.
 */
export function addConfigOption(command: Command): Command {
  return command.option(
    '-c, --config <file>',
    'config file (default: ./rackboot.yaml, then $RACKBOOT_CONFIG)',
    nonEmptyFile,
  );
}

function nonEmptyFile(file: string): string {
  if (file === '')
    throw new InvalidArgumentError('it is empty: name a config file, or leave -c out for ./rackboot.yaml');
  return file;
}

export function resolveConfigPath(given: string | undefined): string {
  if (given !== undefined) return resolve(given);
  const local = resolve('rackboot.yaml');
  if (existsSync(local) || !process.env.RACKBOOT_CONFIG) return local;
  return resolve(process.env.RACKBOOT_CONFIG);
}

/**
 * The config file of a verb that cannot do without one (`machines adopt` edits it; the verbs that
 * call a server find it there when no --url is given), refused in one line when there is none:
 * which file was looked for, the ways out, and `outcome`, what the refusal means for this verb (its
 * own way out, or what it did not do). Another failure to read it is the verb's to say, with its
 * reason.
 */
export function existingConfigPath(given: string | undefined, outcome: string): string {
  const file = resolveConfigPath(given);
  if (!isMissing(file)) return file;
  throw new Error(
    `no config file ${file}: name yours with -c FILE (or $RACKBOOT_CONFIG), or create it first (rackboot.yaml in rackboot's repository is a complete example; \`rackboot validate\` checks it); ${outcome}`,
  );
}

function isMissing(file: string): boolean {
  try {
    return statSync(file, { throwIfNoEntry: false }) === undefined;
  } catch {
    return false;
  }
}
