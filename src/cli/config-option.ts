import { existsSync } from 'node:fs';
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
