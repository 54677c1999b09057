import { type Command, InvalidArgumentError } from 'commander';
import type { MachineView } from '../http/api-routes.js';
import { adoptIntoFile } from '../inventory/adopt.js';
import { parseMac } from '../inventory/mac.js';
import { badName, isName, nameRule } from '../inventory/names.js';
import { addServerOptions, getJson, MACHINE_LIST, resolveServer, warnOfRejectedConfig } from './client.js';
import { addConfigOption, existingConfigPath } from './config-option.js';

export function registerMachines(program: Command): void {
  const machines = addServerOptions(program.command('machines'))
    .description('table of machines and their provisioning state, from a running server')
    .option('--json', 'the API answer as JSON')
    .option('--state <states>', 'only machines in these states, comma-separated (none: listed, never seen)')
    .action(async (options: { url?: string; config?: string; json?: boolean; state?: string }) => {
      const target = await resolveServer(options);
      const query = options.state === undefined ? '' : `?${new URLSearchParams({ state: options.state })}`;
      const list = await getJson<MachineView[]>(
        target,
        `/api/v1/machines${query}`,
        MACHINE_LIST,
        warnOfRejectedConfig,
      );
      console.log(options.json ? JSON.stringify(list, null, 2) : machinesTable(list, Date.now()));
    });

  addConfigOption(machines.command('adopt <mac>'))
    .description('add a discovered machine to the config file, keeping its comments and layout')
    .requiredOption('--profile <name>', 'profile the machine boots')
    .option('--hostname <name>', 'its hostname')
    .option('--var <NAME=VALUE>', 'a template variable, {{vars.NAME}} (repeatable)', collectVar)
    .action(async (macText: string, _options: unknown, command: Command) => {
      // -c may be given before or after `adopt`; commander files it under either command.
      const options = command.optsWithGlobals<{
        config?: string;
        url?: string;
        profile: string;
        hostname?: string;
        var?: Record<string, string>;
      }>();
      // `machines`' own --url is parsed after `adopt` too; taking it silently, the adopt went to
      // the local file, not to the server the operator named.
      if (options.url !== undefined)
        throw new Error(
          `--url ${options.url}: machines adopt edits the config file (-c), which the server on it reloads, and calls no server; run it where that file is (or POST /api/v1/machines/{mac}/adopt). Nothing written`,
        );
      const mac = parseMac(macText);
      if (!mac) throw new Error(`not a MAC address: ${macText}`);
      const file = existingConfigPath(options.config, 'nothing written');
      const adopted = await adoptIntoFile(file, {
        mac,
        profile: options.profile,
        hostname: options.hostname,
        vars: options.var,
      });
      if (!adopted.ok) throw new Error(adopted.message);
      const name = options.hostname ? ` (${options.hostname})` : '';
      console.log(`${mac}${name} added to ${file} with profile ${options.profile}`);
      for (const warning of adopted.warnings ?? []) console.error(`warning: ${warning}`);
    });
}

/** `--var role=worker`, repeated: the value is everything after the first `=`. */
function collectVar(text: string, vars: Record<string, string> = {}): Record<string, string> {
  const separator = text.indexOf('=');
  const name = separator === -1 ? text : text.slice(0, separator);
  if (separator === -1) throw new InvalidArgumentError(`expected NAME=VALUE (${nameRule('vars')})`);
  if (!isName(name)) throw new InvalidArgumentError(badName('vars', name));
  if (Object.hasOwn(vars, name)) throw new InvalidArgumentError(`${name} is given twice`);
  return { ...vars, [name]: text.slice(separator + 1) };
}

const COLUMNS = ['MAC', 'HOSTNAME', 'PROFILE', 'STATE', 'IP', 'LAST EVENT', 'AGE'] as const;

/** The `rackboot machines` table: one row per machine, columns padded to the widest cell. */
export function machinesTable(machines: MachineView[], nowMs: number): string {
  const rows = machines.map((machine) => [
    machine.mac,
    machine.hostname ?? (machine.listed ? '' : '(discovered)'),
    machine.profile ?? '',
    machine.state ?? 'not seen',
    machine.ip ?? '',
    machine.last_event ?? '',
    machine.updated_at ? age(nowMs - Date.parse(machine.updated_at)) : '',
  ]);
  const all = [[...COLUMNS], ...rows];
  const widths = COLUMNS.map((_, column) => Math.max(...all.map((row) => row[column]?.length ?? 0)));
  return all
    .map((row) =>
      row
        .map((cell, column) => cell.padEnd(widths[column] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function age(milliseconds: number): string {
  const seconds = Math.max(0, Math.round(milliseconds / 1000));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86_400)}d`;
}
