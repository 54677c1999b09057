import type { Command } from 'commander';
import { parseMac } from '../inventory/mac.js';
import type { MachineEvent } from '../lifecycle/events.js';
import { addServerOptions, followEvents, getJson, type HistoryGap, resolveServer } from './client.js';

interface LogsOptions {
  url?: string;
  config?: string;
  follow?: boolean;
  mac?: string;
  json?: boolean;
  lines: string;
}

export function registerLogs(program: Command): void {
  addServerOptions(program.command('logs'))
    .description('provisioning events from a running server; -f follows them live')
    .option('-f, --follow', 'keep printing new events (reconnects and resumes by itself)')
    .option('--mac <mac>', 'only this machine')
    .option('--json', 'one JSON event per line instead of human lines')
    .option('-n, --lines <count>', 'how many past events to print first', '100')
    .action(async (options: LogsOptions) => {
      const mac = options.mac === undefined ? undefined : parseMac(options.mac);
      if (options.mac !== undefined && !mac) throw new Error(`not a MAC address: ${options.mac}`);
      const lines = Number(options.lines);
      if (!Number.isInteger(lines) || lines < 1)
        throw new Error(`--lines must be a positive number: ${options.lines}`);
      const target = await resolveServer(options);
      const print = (event: MachineEvent) =>
        process.stdout.write(`${options.json ? JSON.stringify(event) : formatEvent(event)}\n`);
      const query = new URLSearchParams({ limit: String(lines), ...(mac ? { mac } : {}) });
      const history = await getJson<MachineEvent[]>(target, `/api/v1/events?${query}`);
      for (const event of history) print(event);
      if (!options.follow) return;

      const stop = new AbortController();
      process.once('SIGINT', () => stop.abort());
      const events = followEvents(target, {
        mac,
        after: history.at(-1)?.id ?? 0,
        signal: stop.signal,
        onDisconnect: (reason) => process.stderr.write(`rackboot logs: ${reason}; reconnecting\n`),
        onHistoryGap: (gap) => process.stderr.write(`rackboot logs: ${describeGap(gap)}\n`),
      });
      for await (const event of events) print(event);
    });
}

/** Why events are missing from what `logs -f` printed, in the words of the stderr line. */
export function describeGap(gap: HistoryGap): string {
  const next = gap.resumesAt === null ? 'the next live event' : `event ${gap.resumesAt}`;
  return gap.reason === 'reset'
    ? `the server's history was reset (event ${gap.after} is beyond it); continuing from ${next}`
    : `events after ${gap.after} were pruned by retention before they were printed (with --mac: maybe none of this machine's); continuing at ${next}`;
}

/** One event as a human line: time, MAC, source, type, then what matters about it. */
export function formatEvent(event: MachineEvent): string {
  const time = event.time.slice(11, 23);
  const detail = event.detail ?? {};
  const facts =
    event.type === 'state-changed'
      ? [`${detail.from ?? 'new'} → ${detail.to}`, `(${detail.cause})`]
      : Object.entries(detail)
          .filter(([, value]) => value !== undefined && value !== null && typeof value !== 'object')
          // DHCP events carry the address in both; it is shown once, as the event's.
          .filter(([key, value]) => !(key === 'ip' && value === event.ip))
          .map(([key, value]) => `${key}=${String(value)}`);
  const columns = [
    time,
    (event.mac ?? '-').padEnd(17),
    event.source.padEnd(9),
    event.type.padEnd(19),
    ...(event.ip ? [`ip=${event.ip}`] : []),
    ...facts,
  ];
  return columns.join(' ').trimEnd();
}
