import { createRequire } from 'node:module';
import { type DestinationStream, type Logger, pino } from 'pino';

export type { Logger };
export type Component = 'dhcp' | 'tftp' | 'http' | 'lifecycle' | 'config' | 'fetch' | 'lab';

export interface LogOptions {
  level?: string;
  pretty?: boolean;
  /** Where JSON lines go; defaults to stdout. Tests pass a sink. */
  destination?: NodeJS.WritableStream;
}

/**
 * The root logger. Tokens in Ignition and event URLs are redacted here once, so no component can
 * leak a machine's credential into logs.
 */
export function createRootLogger(options: LogOptions = {}): Logger {
  const redact = {
    paths: ['token', '*.token', 'url', '*.url', 'headers.authorization'],
    censor: redactToken,
  };
  const level = options.level ?? 'info';
  if (options.pretty) {
    // In this thread, not as a transport: a transport's worker stops at the reader's end (`serve
    // --pretty | grep`, then Ctrl-C), and the exit then waited the 10 s shutdown limit for it.
    // Written asynchronously, as JSON lines are: a paused reader (`| less`) holds no request.
    // Loaded only here: every other process (JSON logs, the CLI's verbs) would carry it unused.
    const pretty = createRequire(import.meta.url)('pino-pretty') as typeof import('pino-pretty');
    return pino({ level, redact }, pretty({ translateTime: 'SYS:HH:MM:ss.l' }));
  }
  return options.destination
    ? pino({ level, redact }, options.destination as DestinationStream)
    : pino({ level, redact });
}

function redactToken(value: unknown): unknown {
  if (typeof value !== 'string') return '[redacted]';
  return value.replace(/([?&]token=)[^&]+/g, '$1[redacted]').replace(/^Bearer .+$/, 'Bearer [redacted]');
}

/** One child per component; every record about a machine adds `mac` itself. */
export function componentLogger(root: Logger, component: Component): Logger {
  return root.child({ component });
}
