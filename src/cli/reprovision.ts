import type { Command } from 'commander';
import { parseMac } from '../inventory/mac.js';
import { addServerOptions, postOperator, resolveServer } from './client.js';

export function registerReprovision(program: Command): void {
  addServerOptions(program.command('reprovision <mac>'))
    .description('the machine installs again at its next network boot (needs the operator token)')
    .action(async (macText: string, options: { url?: string; config?: string }) => {
      const mac = parseMac(macText);
      if (!mac) throw new Error(`not a MAC address: ${macText}`);
      const target = await resolveServer(options);
      const answer = await postOperator<{ state: string }>(target, `/api/v1/machines/${mac}/reprovision`);
      console.log(`${mac}: installs again at its next network boot (now ${answer.state})`);
    });
}
