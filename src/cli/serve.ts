import { type Command, Option } from 'commander';
import { formatProblem } from '../inventory/problems.js';
import { ConfigSchema } from '../inventory/schema.js';
import { createRootLogger } from '../log.js';
import type { BindError, RunningRackboot } from '../rackboot.js';
import { addConfigOption, resolveConfigPath } from './config-option.js';

/** Upper bound on a graceful shutdown; a stuck socket must not keep the process alive forever. */
const SHUTDOWN_LIMIT_MS = 10_000;

const LOG_LEVELS = ConfigSchema.properties.server.properties.log_level.anyOf.map((level) => level.const);

/** One line naming the setting to change, for the errors an operator causes by configuration. */
function bindFailure({ target, code }: BindError): string {
  const { portKey, port, addressKey, address, inUseAdvice } = target;
  switch (code) {
    case 'EADDRINUSE':
      return `${portKey} ${port} is already in use on ${address}; ${inUseAdvice ?? `stop the other server or change ${portKey}`}`;
    case 'EACCES': {
      const dhcpOff = portKey === 'server.dhcp.port' ? ', set dhcp.mode: off,' : '';
      return (
        `${portKey} ${port} needs root or CAP_NET_BIND_SERVICE (a port below 1024); ` +
        `run as root, grant the capability${dhcpOff} or change ${portKey}`
      );
    }
    default:
      // EADDRNOTAVAIL: the address is not one of this host's.
      return addressKey
        ? `${addressKey} ${address} is not an address of this host; use one of its addresses or 0.0.0.0`
        : `cannot bind ${address}:${port} (${code})`;
  }
}

export function registerServe(program: Command): void {
  addConfigOption(program.command('serve'))
    .description('run the DHCP, TFTP and HTTP servers (JSON logs on stdout)')
    .option('--pretty', 'human-readable logs instead of JSON')
    .addOption(
      new Option('--log-level <level>', 'least severe level logged (overrides server.log_level)').choices(
        LOG_LEVELS,
      ),
    )
    .action(async (options: { config?: string; pretty?: boolean; logLevel?: string }) => {
      // Loaded here, not at the top: other verbs need not load every server.
      const { BindError, ConfigProblemsError, startRackboot } = await import('../rackboot.js');
      const { StateError } = await import('../state-error.js');
      // Set before the start, which takes seconds with a large config: a signal without a handler
      // ends the process at once, with nothing logged. One that comes during the start is acted on
      // once it is done.
      const signals = handleSignals();
      let running: RunningRackboot;
      try {
        running = await startRackboot({
          configFile: resolveConfigPath(options.config),
          env: process.env,
          makeLogger: (config) =>
            createRootLogger({ pretty: options.pretty, level: options.logLevel ?? config.server.log_level }),
          setOnCommandLine: options.logLevel ? ['server.log_level'] : [],
        });
      } catch (error) {
        if (error instanceof ConfigProblemsError) {
          for (const problem of error.problems) console.error(formatProblem(problem));
        } else if (error instanceof BindError) {
          console.error(`rackboot could not start: ${bindFailure(error)}`);
        } else if (error instanceof StateError) {
          console.error(`rackboot could not start: ${error.message}`);
        } else {
          console.error(`rackboot could not start: ${(error as Error).stack ?? error}`);
        }
        process.exitCode = 1;
        signals.remove();
        return;
      }
      const { logger } = running;
      // An unhandled rejection is a bug: log it and exit rather than serve in an unknown state.
      process.on('unhandledRejection', (reason) => {
        logger.fatal({ err: reason }, 'unhandled rejection');
        logger.flush?.();
        process.exit(1);
      });
      signals.started(running);
    });
}

/**
 * SIGINT and SIGTERM stop the server gracefully, SIGHUP reloads its config. Until `started`, a stop
 * waits for the start to finish (nothing it opened can be closed before), and any number of SIGHUPs
 * come to one reload after it.
 */
function handleSignals() {
  let running: RunningRackboot | undefined;
  let stopSignal: NodeJS.Signals | undefined;
  let stopping = false;
  let reloadAfterStart = false;

  const stop = (signal: NodeJS.Signals) => {
    stopSignal ??= signal;
    if (running === undefined || stopping) return;
    stopping = true;
    const { logger, close } = running;
    logger.info({ signal: stopSignal }, 'shutting down');
    const forced = setTimeout(() => {
      logger.error('shutdown took too long; exiting');
      process.exit(1);
    }, SHUTDOWN_LIMIT_MS);
    forced.unref();
    void close().then(() => {
      logger.info('stopped');
      logger.flush?.();
    });
  };
  const reload = () => {
    if (running) void running.source.reload();
    else reloadAfterStart = true;
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  process.on('SIGHUP', reload);

  return {
    started(started: RunningRackboot) {
      running = started;
      if (stopSignal) return stop(stopSignal);
      if (!reloadAfterStart) return;
      started.logger.info({ signal: 'SIGHUP' }, 'reloading the config: SIGHUP came during the start');
      reload();
    },
    /** The start failed: the signals take their default action again. */
    remove() {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      process.off('SIGHUP', reload);
    },
  };
}
