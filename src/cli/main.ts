import { Command } from 'commander';
import { registerFetch } from './fetch.js';
import { registerLab } from './lab.js';
import { registerLogs } from './logs.js';
import { registerMachines } from './machines.js';
import { registerRender } from './render.js';
import { registerReprovision } from './reprovision.js';
import { registerSchema } from './schema.js';
import { registerServe } from './serve.js';
import { registerValidate } from './validate.js';

/**
 * The verb table. Each verb lives in its own file and adds itself to the program; a verb that talks
 * to a running server uses client.ts.
 */
export function buildProgram(): Command {
  const program = new Command('rackboot')
    .description('DHCP, TFTP and HTTP network boot for Fedora CoreOS on bare metal')
    .showHelpAfterError()
    .exitOverride();
  registerServe(program);
  registerValidate(program);
  registerSchema(program);
  registerFetch(program);
  registerRender(program);
  registerMachines(program);
  registerLogs(program);
  registerReprovision(program);
  registerLab(program);
  return program;
}

// A reader that stopped (`rackboot logs | head -1`, `logs -f | grep -m1 -q`) has what it wanted.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  console.error(`rackboot: stdout: ${error.message}`);
  process.exit(1);
});

try {
  await buildProgram().parseAsync(process.argv);
} catch (error) {
  const exitCode = (error as { exitCode?: number }).exitCode;
  if (typeof exitCode === 'number') process.exit(exitCode);
  console.error(`rackboot: ${(error as Error).message}`);
  process.exit(1);
}
