import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';

/** `-c FILE`; default ./rackboot.yaml, then $RACKBOOT_CONFIG (CONTRACT.md). */
export function addConfigOption(command: Command): Command {
  return command.option(
    '-c, --config <file>',
    'config file (default: ./rackboot.yaml, then $RACKBOOT_CONFIG)',
  );
}

export function resolveConfigPath(given: string | undefined): string {
  if (given) return resolve(given);
  const local = resolve('rackboot.yaml');
  if (existsSync(local) || !process.env.RACKBOOT_CONFIG) return local;
  return resolve(process.env.RACKBOOT_CONFIG);
}
