import { join } from 'node:path';
import { type Command, Option } from 'commander';
import { archFromBuildarch, IPXE_BUILDARCHES } from '../http/ipxe.js';
import { machineScript } from '../http/machine-script.js';
import { createMachineIgnition } from '../ignition/machine-ignition.js';
import { openMachineSecrets, SECRET_FILE_NAME } from '../ignition/tokens.js';
import { machineVars } from '../ignition/vars.js';
import { createBootDecision } from '../inventory/decision.js';
import { loadConfigFile } from '../inventory/load.js';
import { isMachineMac, type Mac, NOT_A_MACHINE_MAC, parseMac } from '../inventory/mac.js';
import { formatProblem } from '../inventory/problems.js';
import { VALIDATE_CHECKS } from '../inventory/validate-checks.js';
import { type MachineRecord, readMachineRecord } from '../lifecycle/store.js';
import { readRunningServer } from '../running-server.js';
import { StateError } from '../state-error.js';
import { addConfigOption, resolveConfigPath } from './config-option.js';

/**
 * `rackboot render ipxe|ignition --mac MAC`: the exact bytes the server sends that machine (same
 * functions, same server secret from server.state, so the token in the URLs is the real one), as
 * for a machine that is not installed yet (an installed one gets the local-disk script).
 */
export function registerRender(program: Command): void {
  addConfigOption(program.command('render'))
    .description('print the iPXE script or Ignition config a machine would get')
    .argument('<what>', 'ipxe or ignition')
    .requiredOption('--mac <mac>', 'the machine, any MAC spelling')
    .addOption(
      new Option('--arch <arch>', "the machine's architecture as iPXE reports it")
        .choices(IPXE_BUILDARCHES)
        .default('x86_64'),
    )
    .action(async (what: string, options: { config?: string; mac: string; arch: string }) => {
      if (what !== 'ipxe' && what !== 'ignition')
        throw new Error(`render ipxe or render ignition, not ${what}`);
      const mac = parseMac(options.mac);
      if (!mac) throw new Error(`not a MAC address: ${options.mac}`);
      // The server answers no script or config for such a MAC: printing one would show what never happens.
      if (!isMachineMac(mac)) throw new Error(`${mac} ${NOT_A_MACHINE_MAC}`);
      const loaded = await loadConfigFile(resolveConfigPath(options.config), VALIDATE_CHECKS);
      if (!loaded.ok) {
        for (const problem of loaded.problems) console.error(formatProblem(problem));
        process.exitCode = 1;
        return;
      }
      const config = loaded.config;
      // The script depends on the machine's state (an installed one boots its disk); its Ignition does not.
      const record = what === 'ipxe' ? stateFromHistory(config.server.state, mac) : undefined;
      const assignment = createBootDecision(
        () => config,
        () => record?.state,
        () => record?.bootsFromDisk ?? false,
      ).assignmentFor(mac);
      // Before the server's first start this makes the secret the server will then use, so the
      // tokens printed are the ones it checks; made by `sudo rackboot render`, the secret (and a
      // state directory made for it) belongs to the owner of the directory it is in, not to root,
      // so the service can still read it (state-secret.ts).
      const secrets = await openMachineSecrets(config.server.state, () => config.ignition.token_ttl).catch(
        (error: NodeJS.ErrnoException) => {
          throw stateSecretError(error, config.server.state);
        },
      );
      await refuseIfServerSignsOtherwise(config.server.state, secrets.fingerprint);
      const vars = assignment && machineVars(config, assignment, secrets, Date.now());
      if (what === 'ipxe') {
        process.stdout.write(
          machineScript(config, mac, assignment, archFromBuildarch(options.arch), vars).script,
        );
        return;
      }
      if (!assignment || !vars) {
        console.error(`${mac} is not in the inventory (unknown_machines: ignore); the server answers 404`);
        process.exitCode = 1;
        return;
      }
      const rendered = createMachineIgnition()(config, assignment, vars);
      if (!rendered.ok) {
        for (const problem of rendered.problems) console.error(formatProblem(problem));
        console.error('the server answers 503 until this is fixed');
        process.exitCode = 1;
        return;
      }
      process.stdout.write(`${rendered.text}\n`);
    });
}

/**
 * Tokens rendered with the file's secret pass only if the running server signs with the same one:
 * a secret file replaced (or removed and made again) after its start would print URLs it answers 403.
 */
async function refuseIfServerSignsOtherwise(state: string, fingerprint: string): Promise<void> {
  const running = await readRunningServer(state);
  if (running?.secretFingerprint === undefined || running.secretFingerprint === fingerprint) return;
  throw new Error(
    `the server running on ${state} (pid ${running.pid}) signs machine tokens with another secret than ${join(state, SECRET_FILE_NAME)} now holds (the file was replaced after it started), so the URLs rendered here would be refused with 403; restart rackboot serve so it takes the file's secret, then render again`,
  );
}

/** The machine's record in the history, or undefined with a warning when the history cannot be read. */
function stateFromHistory(state: string, mac: Mac): MachineRecord | undefined {
  try {
    return readMachineRecord(state, mac);
  } catch (error) {
    console.error(
      `rackboot: cannot read the history under ${state} (${(error as Error).message}); rendering for a machine it has not seen`,
    );
    return undefined;
  }
}

/**
 * The server's secret could not be read or made: the bare errno named a path and no way out. Other
 * errors (a file that is not a secret, a state directory others could write) say so already.
 * state-secret.ts words its read errors for the server's own user; render's may be another, so the
 * advice here is made from the errno under them.
 */
export function stateSecretError(thrown: NodeJS.ErrnoException, state: string): Error {
  const error = thrown instanceof StateError ? ((thrown.cause ?? thrown) as NodeJS.ErrnoException) : thrown;
  const file = join(state, SECRET_FILE_NAME);
  const blocked = error.path ?? file;
  const where = blocked === file ? error.code : `${error.code} at ${blocked}`;
  switch (error.code) {
    case 'EACCES':
    case 'EPERM':
      return new Error(
        `cannot read the server's secret ${file} (${where}): the state under server.state is the server's; run render as the server's user or as root`,
        { cause: error },
      );
    case 'ENOENT':
      return new Error(
        `the server's secret ${file} does not exist (${blocked} is missing): the server has not created it yet; start the server once, or run render as the server's user or as root to create it`,
        { cause: error },
      );
    default:
      return thrown;
  }
}
