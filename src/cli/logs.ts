import { once } from 'node:events';
import { type Command, InvalidArgumentError } from 'commander';
import { parseMac } from '../inventory/mac.js';
import type { MachineEvent } from '../lifecycle/events.js';
import {
  addServerOptions,
  EVENT_LIST,
  followEvents,
  getJson,
  type HistoryGap,
  lastEventId,
  resolveServer,
} from './client.js';
import { watchPipeReaders } from './pipe-readers.js';
import { wholeNumberIn } from './whole-number.js';

/** The most events `GET /api/v1/events` answers at once (its `limit`, events-stream.ts). */
const MAX_LINES = 10_000;

interface LogsOptions {
  url?: string;
  config?: string;
  follow?: boolean;
  mac?: string;
  json?: boolean;
  lines: number;
}

export function registerLogs(program: Command): void {
  addServerOptions(program.command('logs'))
    .description('provisioning events from a running server; -f follows them live')
    .option('-f, --follow', 'keep printing new events (reconnects and resumes by itself)')
    .option('--mac <mac>', 'only this machine')
    .option('--json', 'one JSON event per line instead of human lines')
    .option(
      '-n, --lines <count>',
      `how many past events to print first (0 to ${MAX_LINES}; -f -n 0: only new ones)`,
      parseLines,
      100,
    )
    .action(async (options: LogsOptions) => {
      const mac = options.mac === undefined ? undefined : parseMac(options.mac);
      if (options.mac !== undefined && !mac) throw new Error(`not a MAC address: ${options.mac}`);
      const target = await resolveServer(options);
      const stop = new AbortController();
      // A reader that stops (`| head`) ends the process in main.ts; a slow one (`| less`) holds it here.
      const print = async (event: MachineEvent) => {
        const line = `${options.json ? JSON.stringify(event) : formatEvent(event)}\n`;
        if (!process.stdout.write(line)) await once(process.stdout, 'drain');
      };
      // With --mac the history's newest event may be long ago, and resuming after it would replay
      // (and report as pruned) every other machine's events since: resume after the server's newest,
      // asked before the history so nothing of this machine falls between the two. With -n 0 there
      // is no history to resume after, as `tail -f -n 0` starts at the end.
      const newest = mac || options.lines === 0 ? await lastEventId(target) : undefined;
      const query = new URLSearchParams({ limit: String(options.lines), ...(mac ? { mac } : {}) });
      const history =
        options.lines === 0
          ? []
          : await getJson<MachineEvent[]>(target, `/api/v1/events?${query}`, EVENT_LIST);
      // Before the first line: `| head -1` reads it and goes.
      if (options.follow) watchPipeReaders(1, stop.signal, () => stop.abort());
      for (const event of history) await print(event);
      if (!options.follow) return;

      process.once('SIGINT', () => stop.abort());
      const events = followEvents(target, {
        mac,
        after: Math.max(newest ?? 0, history.at(-1)?.id ?? 0),
        signal: stop.signal,
        onDisconnect: (reason) => process.stderr.write(`rackboot logs: ${reason}; reconnecting\n`),
        onHistoryGap: (gap) => process.stderr.write(`rackboot logs: ${describeGap(gap)}\n`),
      });
      for await (const event of events) await print(event);
    });
}

function parseLines(text: string): number {
  const lines = wholeNumberIn(text, 0, MAX_LINES);
  if (lines === undefined) {
    throw new InvalidArgumentError(
      `a whole number from 0 to ${MAX_LINES} (the most the server answers at once)`,
    );
  }
  return lines;
}

/** Why events are missing from what `logs -f` printed, in the words of the stderr line. */
export function describeGap(gap: HistoryGap): string {
  const next = gap.resumesAt === null ? 'the next live event' : `event ${gap.resumesAt}`;
  return gap.reason === 'reset'
    ? `the server's history was reset (event ${gap.after} is beyond it); continuing from ${next}`
    : `events after ${gap.after} were pruned by retention before they were printed (with --mac: maybe none of this machine's); continuing at ${next}`;
}

/**
 * One event as a human line: local time (with the date when not today), MAC, source, type, then what
 * matters about it.
 */
export function formatEvent(event: MachineEvent, now = new Date()): string {
  const time = localTime(new Date(event.time), now);
  const detail = event.detail ?? {};
  const facts =
    event.type === 'state-changed'
      ? [`${detail.from ?? 'new'} → ${detail.to}`, `(${detail.cause})`]
      : Object.entries(detail)
          .filter(([, value]) => value !== undefined && value !== null && typeof value !== 'object')
          // DHCP events carry the address in both; it is shown once, as the event's.
          .filter(([key, value]) => !(key === 'ip' && value === event.ip))
          .map(([key, value]) => `${key}=${printable(String(value))}`);
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

/**
 * Details carry what unauthenticated senders wrote (a TFTP file name, iPXE's uuid and platform, DHCP
 * option 60): control characters are shown escaped, so none can move the cursor, clear the screen,
 * retitle the terminal or start a forged line; nor can a bidi override reorder what is shown.
 */
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

export function printable(text: string): string {
  return text.replace(UNPRINTABLE, (character) => {
    const code = character.charCodeAt(0);
    return code < 0x100
      ? `\\x${code.toString(16).padStart(2, '0')}`
      : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

/** `HH:MM:SS.mmm` in the local zone ($TZ), after `YYYY-MM-DD ` unless `time` is on the day of `now`. */
function localTime(time: Date, now: Date): string {
  const pad = (value: number, width = 2) => String(value).padStart(width, '0');
  const day = (date: Date) => `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  const clock = `${pad(time.getHours())}:${pad(time.getMinutes())}:${pad(time.getSeconds())}.${pad(time.getMilliseconds(), 3)}`;
  return day(time) === day(now) ? clock : `${day(time)} ${clock}`;
}
