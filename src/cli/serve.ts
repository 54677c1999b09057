import type { Command } from 'commander';
import { createRootLogger } from '../log.js';
import type { RunningRackboot } from '../rackboot.js';
import { addConfigOption, resolveConfigPath } from './config-option.js';

/** Upper bound on a graceful shutdown; a stuck socket must not keep the process alive forever. */
const SHUTDOWN_LIMIT_MS = 10_000;

export function registerServe(program: Command): void {
  addConfigOption(program.command('serve'))
    .description('run the DHCP, TFTP and HTTP servers (JSON logs on stdout)')
    .option('--pretty', 'human-readable logs instead of JSON')
    .option('--log-level <level>', 'trace, debug, info, warn or error (overrides server.log_level)')
    .action(async (options: { config?: string; pretty?: boolean; logLevel?: string }) => {
      // Loaded here, not at the top: other verbs need not load every server.
      const { ConfigProblemsError, startRackboot } = await import('../rackboot.js');
      let running: RunningRackboot;
      try {
        running = await startRackboot({
          configFile: resolveConfigPath(options.config),
          env: process.env,
          makeLogger: (config) =>
            createRootLogger({ pretty: options.pretty, level: options.logLevel ?? config.server.log_level }),
        });
      } catch (error) {
        if (error instanceof ConfigProblemsError) {
          for (const line of error.message.split('\n')) console.error(line);
        } else {
          console.error(`rackboot could not start: ${(error as Error).stack ?? error}`);
        }
        process.exitCode = 1;
        return;
      }
      const { logger } = running;

      let stopping = false;
      const stop = (signal: NodeJS.Signals) => {
        if (stopping) return;
        stopping = true;
        logger.info({ signal }, 'shutting down');
        const forced = setTimeout(() => {
          logger.error('shutdown took too long; exiting');
          process.exit(1);
        }, SHUTDOWN_LIMIT_MS);
        forced.unref();
        void running.close().then(() => {
          logger.info('stopped');
          logger.flush?.();
        });
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      process.on('SIGHUP', () => void running.source.reload());
      // An unhandled rejection is a bug: log it and exit rather than serve in an unknown state.
      process.on('unhandledRejection', (reason) => {
        logger.fatal({ err: reason }, 'unhandled rejection');
        logger.flush?.();
        process.exit(1);
      });
    });
}
