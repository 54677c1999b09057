import type { Command } from 'commander';
import type { MachineView } from '../http/api-routes.js';
import { parseMac } from '../inventory/mac.js';
import { addServerOptions, getJson, MACHINE, OUTCOME, postOperator, resolveServer } from './client.js';

export function registerReprovision(program: Command): void {
  addServerOptions(program.command('reprovision <mac>'))
    .description('the machine installs again at its next network boot (needs the operator token)')
    .action(async (macText: string, options: { url?: string; config?: string }) => {
      const mac = parseMac(macText);
      if (!mac) throw new Error(`not a MAC address: ${macText}`);
      const target = await resolveServer(options);
      const answer = await postOperator<{ state: string }>(
        target,
        `/api/v1/machines/${mac}/reprovision`,
        OUTCOME,
      );
      console.log(`${mac}: installs again at its next network boot (now ${answer.state})`);
      // The server reprovisions any machine it has seen; one taken out of the config since then is
      // served at its next boot as unknown_machines says, which may be not at all.
      const machine = await getJson<MachineView>(target, `/api/v1/machines/${mac}`, MACHINE).catch(
        (error: Error) => {
          console.error(
            `rackboot reprovision: cannot tell whether ${mac} is in the config: ${error.message}`,
          );
          return undefined;
        },
      );
      if (machine && !machine.listed) console.error(`rackboot reprovision: warning: ${notListed(machine)}`);
    });
}

function notListed(machine: MachineView): string {
  const next = machine.profile
    ? `its next network boot gets profile ${machine.profile}, as unknown_machines says`
    : 'unknown_machines is ignore, so its next network boot gets no answer until it is listed again (rackboot machines adopt)';
  return `${machine.mac} is not in the config: ${next}`;
}
