import { join } from 'node:path';
import { type Command, Option } from 'commander';
import type { Arch } from '../boot-plan.js';
import { archFromBuildarch, IPXE_BUILDARCHES } from '../http/ipxe.js';
import { machineScript } from '../http/machine-script.js';
import { checkArguments } from '../ignition/check.js';
import { createMachineIgnition } from '../ignition/machine-ignition.js';
import { type MachineSecrets, readMachineSecrets, SECRET_FILE_NAME } from '../ignition/tokens.js';
import { machineVars } from '../ignition/vars.js';
import { createBootDecision } from '../inventory/decision.js';
import { loadConfigFile } from '../inventory/load.js';
import { isMachineMac, type Mac, NOT_A_MACHINE_MAC, parseMac } from '../inventory/mac.js';
import { formatProblem, type Problem } from '../inventory/problems.js';
import { type MissingAsset, missingAssets, profileAssets } from '../inventory/profile-assets.js';
import type { Config } from '../inventory/schema.js';
import { type MachineRecord, readMachineRecord } from '../lifecycle/store.js';
import { readRunningServer } from '../running-server.js';
import { StateError } from '../state-error.js';
import { addConfigOption, resolveConfigPath } from './config-option.js';

/**
 * `rackboot render ipxe|ignition --mac MAC`: the exact bytes the server sends that machine (same
 * functions, same server secret from server.state, so the token in the URLs is the real one), as
 * for a machine that is not installed yet (an installed one gets the local-disk script). It reads
 * server.state and never writes it: before the server's first start there is no secret, and the
 * tokens are a placeholder, said so on stderr.
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
      // Templates are not checked for every machine here: the server reads them at each request, so
      // one broken for other machines stops only theirs (503), and this machine's own problems are
      // found by rendering it below.
      const loaded = await loadConfigFile(resolveConfigPath(options.config), {
        missingAssets: 'warn',
        checkArguments,
      });
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
      // Read only: a secret made here would be one a running server does not sign with.
      const secrets = await readMachineSecrets(config.server.state, () => config.ignition.token_ttl).catch(
        (error: NodeJS.ErrnoException) => {
          throw stateSecretError(error, config.server.state);
        },
      );
      await refuseIfServerSignsOtherwise(config.server.state, secrets?.fingerprint);
      const vars = assignment && machineVars(config, assignment, secrets ?? NO_SECRET_YET, Date.now());
      if (what === 'ipxe') {
        const arch = archFromBuildarch(options.arch);
        const machine = machineScript(config, mac, assignment, arch, vars);
        print(machine.script, config);
        // The machine gets this script all the same; a script checking a machine before it boots
        // learns from the exit status that it will not install.
        if (machine.kind === 'unknown' || machine.kind === 'unavailable') {
          console.error(
            `rackboot: ${machine.reasons.at(-1)}; the printed script only says so on the machine's console and reboots it`,
          );
          process.exitCode = 1;
        } else if (machine.kind === 'install' && assignment && vars) {
          const missing = missingBootFiles(config, assignment.profile, arch);
          // A warning, as validate gives: rendering before the files are fetched is a preview.
          for (const file of missing) {
            console.error(
              `rackboot: warning: ${file.message}: serve refuses to start without it, and a server running since it was removed answers the machine's download of it 404`,
            );
          }
          const ignition = createMachineIgnition()(config, assignment, vars);
          if (!ignition.ok) {
            reportIgnitionProblems(
              ignition.problems,
              "the server answers this machine's Ignition 503 until this is fixed (the printed script is served all the same)",
            );
          }
        }
        return;
      }
      if (!assignment || !vars) {
        throw new Error(`${mac} is not in the inventory (unknown_machines: ignore); the server answers 404`);
      }
      const rendered = createMachineIgnition()(config, assignment, vars);
      if (!rendered.ok) {
        reportIgnitionProblems(rendered.problems, 'the server answers 503 until this is fixed');
        return;
      }
      print(`${rendered.text}\n`, config);
    });
}

/**
 * The local boot files this machine's script names on `arch` that are not under server.assets.
 * serve refuses to start or reload without them, but one removed since is in the script all the same.
 */
function missingBootFiles(config: Config, profileName: string, arch: Arch): MissingAsset[] {
  const profile = config.profiles[profileName];
  const assets = profile && profileAssets(profile, arch, config.server.assets);
  if (!profile || !assets || 'error' in assets) return [];
  const booted = [assets.kernel, ...assets.initrd];
  if (profile.kind === 'coreos-install' && assets.rootfs !== undefined) booted.push(assets.rootfs);
  const paths = new Set(booted.map((asset) => join(config.server.assets, asset)));
  return missingAssets(profile, config.server.assets).filter((missing) => paths.has(missing.path));
}

/** The machine's Ignition cannot be rendered: why and what follows, on stderr, and exit 1. */
function reportIgnitionProblems(problems: readonly Problem[], consequence: string): void {
  for (const problem of problems) console.error(formatProblem(problem));
  console.error(consequence);
  process.exitCode = 1;
}

/** In place of each token while server.state has no secret: visibly not one, in the output itself. */
const PLACEHOLDER_TOKEN = 'NO-SERVER-SECRET-YET';
const NO_SECRET_YET: Pick<MachineSecrets, 'tokenFor'> = { tokenFor: () => PLACEHOLDER_TOKEN };

/** Writes what was rendered, saying on stderr when it carries placeholder tokens. */
function print(text: string, config: Config): void {
  if (text.includes(PLACEHOLDER_TOKEN)) {
    console.error(
      `rackboot: ${join(config.server.state, SECRET_FILE_NAME)} does not exist yet (rackboot serve makes it at its first start; render changes nothing under server.state), so the machine tokens below read ${PLACEHOLDER_TOKEN}, which no server accepts; render again once the server has started`,
    );
  }
  process.stdout.write(text);
}

/**
 * Tokens rendered with the file's secret pass only if the running server signs with the same one:
 * a secret file replaced (or removed and made again) after its start would print URLs it answers
 * 403, and one removed (`fingerprint` undefined) leaves render no token the server takes.
 */
async function refuseIfServerSignsOtherwise(state: string, fingerprint: string | undefined): Promise<void> {
  const running = await readRunningServer(state);
  if (running?.secretFingerprint === undefined || running.secretFingerprint === fingerprint) return;
  const file = join(state, SECRET_FILE_NAME);
  const server = `the server running on ${state} (pid ${running.pid}) signs machine tokens with`;
  throw new Error(
    fingerprint === undefined
      ? `${server} a secret ${file} no longer holds (the file was removed after it started), so render has no token it would take; restore the file, or restart rackboot serve so it makes a new one (URLs handed out before stop working), then render again`
      : `${server} another secret than ${file} now holds (the file was replaced after it started), so the URLs rendered here would be refused with 403; restart rackboot serve so it takes the file's secret, then render again`,
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
 * The server's secret could not be read: the bare errno named a path and no way out. Other errors
 * (a file that is not a secret) say so already. state-secret.ts words its read errors for the
 * server's own user; render's may be another, so the advice here is made from the errno under them.
 */
export function stateSecretError(thrown: NodeJS.ErrnoException, state: string): Error {
  const error = thrown instanceof StateError ? ((thrown.cause ?? thrown) as NodeJS.ErrnoException) : thrown;
  if (error.code !== 'EACCES' && error.code !== 'EPERM') return thrown;
  const file = join(state, SECRET_FILE_NAME);
  const blocked = error.path ?? file;
  const where = blocked === file ? error.code : `${error.code} at ${blocked}`;
  return new Error(
    `cannot read the server's secret ${file} (${where}): the state under server.state is the server's; run render as the server's user or as root`,
    { cause: error },
  );
}
