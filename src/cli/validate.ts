import type { Command } from 'commander';
import { counted } from '../counted.js';
import { loadConfigFile } from '../inventory/load.js';
import { byPosition, formatProblem, type Problem } from '../inventory/problems.js';
import { stateDirectoryProblem, VALIDATE_CHECKS } from '../inventory/validate-checks.js';
import { addConfigOption, resolveConfigPath } from './config-option.js';

/**
 * `rackboot validate`: exit 0 when the config is valid, else exit 1 with one `FILE:LINE:COL: message`
 * line per problem (CONTRACT.md). Missing boot assets are listed as warnings (assets are downloaded,
 * not committed); `--strict` makes them errors, as `serve` does.
 */
export function registerValidate(program: Command): void {
  addConfigOption(program.command('validate'))
    .description('check a config file; one FILE:LINE:COL line per problem')
    .option('--strict', 'treat missing boot assets as errors, as serve does')
    .action(async (options: { config?: string; strict?: boolean }) => {
      const file = resolveConfigPath(options.config);
      const loaded = await loadConfigFile(
        file,
        options.strict ? { ...VALIDATE_CHECKS, missingAssets: 'error' } : VALIDATE_CHECKS,
      );
      if (!loaded.ok) {
        for (const problem of loaded.problems) console.error(formatProblem(problem));
        printLabelled('warning', loaded.warnings ?? []);
        process.exitCode = 1;
        return;
      }
      // serve refuses a state directory it cannot write; validate may run where serve will not.
      const stateProblem = await stateDirectoryProblem(loaded.config, { create: false });
      printLabelled(
        'warning',
        [...loaded.warnings, ...(stateProblem ? [stateProblem] : [])].sort(byPosition),
      );
      printLabelled('note', loaded.notes);
      const { machines, profiles } = loaded.config;
      console.log(
        `${file}: valid (${counted(machines.length, 'machine')}, ${counted(Object.keys(profiles).length, 'profile')})`,
      );
    });
}

function printLabelled(label: 'warning' | 'note', problems: Problem[]): void {
  for (const problem of problems)
    console.error(formatProblem({ ...problem, message: `${label}: ${problem.message}` }));
}
