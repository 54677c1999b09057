import { readFile } from 'node:fs/promises';
import { STATUS_CODES } from 'node:http';
import { dirname, isAbsolute, resolve } from 'node:path';
import type { Command } from 'commander';
import { CONFIG_REJECTED_HEADER, LAST_EVENT_ID_HEADER } from '../http/api-routes.js';
import { operatorTokenFile, readOperatorToken } from '../http/operator-token.js';
import { parseConfigText, readConfigFile, sectionBefore } from '../inventory/parse.js';
import { formatProblem, type Problem, problemsAfterColon } from '../inventory/problems.js';
import { ConfigSchema } from '../inventory/schema.js';
import { isObject } from '../json.js';
import type { MachineEvent } from '../lifecycle/events.js';
import { readRunningServer } from '../running-server.js';
import { stateFileAdvice } from '../state-error.js';
import { addConfigOption, existingConfigPath, resolveConfigPath } from './config-option.js';

/** A running server as the verbs see it: where it answers and the operator token, if any. */
export interface ServerTarget {
  url: string;
  token: string | undefined;
  /** Why there is no token, for the error of a verb that needs one. */
  noToken?: string;
  /** Where the token came from when the server may not run with it: the config file's value. */
  tokenFrom?: string;
}

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** A JSON call that has not answered by then is given up: undici alone would wait 300 s for headers. */
export const REQUEST_TIMEOUT_MS = 10_000;

/** `--url` and `-c` for a verb that talks to a running server. */
export function addServerOptions(command: Command): Command {
  return addConfigOption(command).option(
    '--url <url>',
    'the server (default: http://<server.address>:<server.http.port> from the config)',
  );
}

/** What the client needs of the config (readServerSettings). */
interface ServerSettings {
  /** `http://<server.address>:<server.http.port>`; undefined without server.address. */
  url: string | undefined;
  /** Origins at which this config's server answers: its address, and its listen address unless 0.0.0.0. */
  origins: string[];
  state: string;
  apiToken: string | undefined;
}

const SERVER_DEFAULTS = {
  port: ConfigSchema.properties.server.properties.http.properties.port.default as number,
  listen: ConfigSchema.properties.server.properties.http.properties.listen.default as string,
  state: ConfigSchema.properties.server.properties.state.default,
};

/**
 * server.address, server.http.port/listen, server.state and server.api_token, with the schema's
 * defaults, from a config that need not be valid: a rejected edit (a duplicate MAC) leaves the
 * server running on its last good config, and the verbs must still reach it.
 */
async function readServerSettings(
  file: string,
  // `problem` follows a colon: on its line when it is one, one per line below it when more.
): Promise<{ ok: true; settings: ServerSettings } | { ok: false; problem: string }> {
  const read = await readConfigFile(file);
  const problemLines = (problems: Problem[]) =>
    problemsAfterColon(problems.map((problem) => formatProblem(problem)));
  if (!read.ok) return { ok: false, problem: problemLines(read.problems) };
  const parsed = parseConfigText(read.text, file);
  // A syntax error below server: is most likely the edit the operator is fixing, while the server
  // runs on its last good config.
  const section = parsed.ok ? parsed.data.server : sectionBefore(read.text, 'server', parsed.problems);
  if (!parsed.ok && section === undefined) return { ok: false, problem: problemLines(parsed.problems) };
  const server = isObject(section) ? section : {};
  const http = objectAt(server, 'http');
  const address = stringAt(server, 'address');
  const listen = stringAt(http, 'listen') ?? SERVER_DEFAULTS.listen;
  const port = Number.isInteger(http.port) ? (http.port as number) : SERVER_DEFAULTS.port;
  const state = stringAt(server, 'state') ?? SERVER_DEFAULTS.state;
  const hosts = [address, listen === '0.0.0.0' ? undefined : listen];
  return {
    ok: true,
    settings: {
      url: address === undefined ? undefined : `http://${address}:${port}`,
      origins: hosts.flatMap((host) =>
        host === undefined ? [] : (originOf(`http://${host}:${port}`) ?? []),
      ),
      state: isAbsolute(state) ? state : resolve(dirname(file), state),
      apiToken: stringAt(server, 'api_token'),
    },
  };
}

function objectAt(data: Record<string, unknown>, key: string): Record<string, unknown> {
  const value = data[key];
  return isObject(value) ? value : {};
}

function stringAt(data: Record<string, unknown>, key: string): string | undefined {
  const value = data[key];
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function originOf(url: string): string | undefined {
  try {
    return new URL(url).origin;
  } catch {
    return undefined;
  }
}

/**
 * `--url` as given, else from the config file (CONTRACT.md). The operator token: $RACKBOOT_API_TOKEN,
 * else, only for the config's own server (no --url, or a --url of the same origin), server.api_token
 * or the one a server without either keeps in server.state. Another --url never gets the config's
 * token: it may be any server, or whatever listens on a port after the server stopped.
 */
export async function resolveServer(options: { url?: string; config?: string }): Promise<ServerTarget> {
  if (options.url !== undefined) refuseUnlessServerUrl(options.url);
  const given = options.url?.replace(/\/+$/, '');
  // With --url the config only may hold the token, and a missing one is said when a token is needed.
  const file =
    given === undefined
      ? existingConfigPath(options.config, 'or name the server with --url URL')
      : resolveConfigPath(options.config);
  const read = await readServerSettings(file);
  let url: string;
  const running = given === undefined && read.ok ? await readRunningServer(read.settings.state) : undefined;
  if (given !== undefined) url = given;
  else if (!read.ok) throw new Error(`no --url given and the config does not load:${read.problem}`);
  else if (running) {
    url = running.url;
    if (running.url !== read.settings.url) {
      process.stderr.write(
        `rackboot: the server on ${read.settings.state} (pid ${running.pid}) answers at ${running.url}; ${file} says ${read.settings.url ?? 'no server.address'}, not in force until a restart (or, if the server refused the edit, a fix of it: see its log)\n`,
      );
    }
  } else if (read.settings.url === undefined)
    throw new Error(`no --url given and ${file} has no server.address`);
  else url = read.settings.url;
  const envToken = process.env.RACKBOOT_API_TOKEN || undefined;
  if (envToken) return { url, token: envToken };
  if (!read.ok) {
    return {
      url,
      token: undefined,
      noToken: `set $RACKBOOT_API_TOKEN (the config does not load:${read.problem})`,
    };
  }
  const { settings } = read;
  if (given !== undefined && !settings.origins.includes(originOf(given) ?? given)) {
    const own = settings.url ?? 'no server.address';
    return {
      url,
      token: undefined,
      noToken: `set $RACKBOOT_API_TOKEN: --url ${given} is not the server of ${file} (${own}), which is the only one its token is sent to`,
    };
  }
  if (settings.apiToken) return { url, token: settings.apiToken, tokenFrom: `server.api_token of ${file}` };
  const token = await readOperatorToken(settings.state);
  return token
    ? { url, token }
    : { url, token: undefined, noToken: await whyNoOperatorToken(settings.state) };
}

/**
 * --url must be an http(s) URL with a host, checked before any request: at the request a malformed
 * one fails as a network error about something the operator never wrote (`--url http://` joined to
 * the API path reads as host `api`; `--url 10.77.0.1:8080`, no scheme, as "Invalid URL").
 */
function refuseUnlessServerUrl(given: string): void {
  const url = URL.canParse(given) ? new URL(given) : undefined;
  if ((url?.protocol === 'http:' || url?.protocol === 'https:') && url.hostname !== '') return;
  throw new Error(`--url "${given}" is not an http(s) URL of a server; name it as http://ADDRESS:PORT`);
}

/** Why the server's own token file of `state` gave no token, and what to do. */
async function whyNoOperatorToken(state: string): Promise<string> {
  const file = operatorTokenFile(state);
  const fixes = 'set $RACKBOOT_API_TOKEN or server.api_token';
  try {
    // Read, not only checked for access: a directory passes access(R_OK) and then reads as no token.
    await readFile(file);
    return `${file} holds no token; ${fixes}`;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      return `${file} does not exist (the server makes it at its first start without server.api_token); is the server running with this config? Or ${fixes}`;
    }
    if (code === 'EACCES' || code === 'EPERM')
      return `${file} is not readable by this user: run as the server's user or root, or ${fixes}`;
    if (code === 'EISDIR') return `${file}: ${stateFileAdvice(code)}; or ${fixes}`;
    return `cannot read ${file}: ${(error as Error).message}; ${fixes}`;
  }
}

/**
 * What a verb expects the API to answer: a list or one record, each record with these keys as text.
 * Anything else means --url is not a rackboot server; read as the API's, it would be printed as
 * `undefined` (and the verb succeed) or fail as a type error.
 */
export interface Shape {
  what: string;
  list: boolean;
  textKeys: readonly string[];
}

export const MACHINE_LIST: Shape = { what: 'a list of machines', list: true, textKeys: ['mac'] };
export const MACHINE: Shape = { what: 'a machine', list: false, textKeys: ['mac'] };
export const EVENT_LIST: Shape = { what: 'a list of events', list: true, textKeys: ['source', 'type'] };
/** The answer to an operator action (reprovision): the machine and its state. */
export const OUTCOME: Shape = { what: "a machine's state", list: false, textKeys: ['mac'] };
const EVENT: Shape = { what: 'an event', list: false, textKeys: ['source', 'type'] };
const HISTORY_GAP: Shape = { what: 'a history gap', list: false, textKeys: ['reason'] };

function fitsShape(body: unknown, shape: Shape): boolean {
  const isRecord = (value: unknown) =>
    isObject(value) && shape.textKeys.every((key) => typeof value[key] === 'string');
  return shape.list ? Array.isArray(body) && body.every(isRecord) : isRecord(body);
}

/**
 * One API call under REQUEST_TIMEOUT_MS, its answer read whole. A server that accepts and never
 * answers (stopped with SIGSTOP, a hung proxy) would otherwise hold the verb for minutes.
 */
async function call(
  target: ServerTarget,
  path: string,
  init: RequestInit,
): Promise<{ response: Response; text: string }> {
  const url = `${target.url}${path}`;
  try {
    const response = await fetch(url, { ...init, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    return { response, text: await response.text() };
  } catch (error) {
    if ((error as Error).name === 'TimeoutError') {
      throw new ApiError(`${url} did not answer within ${REQUEST_TIMEOUT_MS / 1000} s`, 0);
    }
    throw new ApiError(noServerAt(target.url, error) ?? `cannot reach ${target.url}: ${causeOf(error)}`, 0);
  }
}

async function request<T>(
  target: ServerTarget,
  path: string,
  shape: Shape,
  init: RequestInit = {},
  onHeaders?: (headers: Headers) => void,
): Promise<T> {
  const url = `${target.url}${path}`;
  const { response, text } = await call(target, path, {
    ...init,
    headers: { accept: 'application/json', ...(init.headers as Record<string, string> | undefined) },
  });
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    // A wrong --url (another web server, a proxy's error page) answers HTML, not the API's JSON.
    const type = response.headers.get('content-type') ?? 'no content type';
    throw new ApiError(
      `${url} answered HTTP ${response.status} with ${type}, not JSON: is --url a rackboot server?`,
      response.status,
    );
  }
  if (!response.ok) throw new ApiError(explainRefusal(url, response.status, body), response.status);
  onHeaders?.(response.headers);
  if (!fitsShape(body, shape)) {
    throw new ApiError(
      `${url} answered JSON that is not the API's (${shape.what} expected): is --url a rackboot server?`,
      response.status,
    );
  }
  return body as T;
}

/**
 * The server's words for a 4xx/5xx. rackboot says it in `rejected`, or in `error` (with details in
 * `message`); fastify's own answers (a query out of range, an unknown route) put the bare reason
 * phrase in `error` and what went wrong in `message`.
 */
function explainRefusal(url: string, status: number, body: unknown): string {
  const answer = isObject(body) ? body : {};
  const said = (key: string) => stringAt(answer, key);
  const error = said('error');
  const isReasonPhrase = error?.toLowerCase() === STATUS_CODES[status]?.toLowerCase();
  const headline = isReasonPhrase ? undefined : error;
  const detail = said('message');
  const explanation =
    said('rejected') ?? (headline && detail ? `${headline}: ${detail}` : (headline ?? detail ?? error));
  if (explanation === undefined) {
    return `${url} answered HTTP ${status} with no explanation: is --url a rackboot server?`;
  }
  // An unknown route: a --url with a path, or another fastify application.
  if (status === 404 && headline === undefined) {
    return `${url} answered HTTP 404 (${explanation}): is --url a rackboot server?`;
  }
  return explanation;
}

/** fetch's own message is only "fetch failed"; what failed (ECONNREFUSED …) is its cause. */
function causeOf(error: unknown): string {
  return (error as { cause?: { message?: string } }).cause?.message ?? (error as Error).message;
}

/**
 * A refused connection (`connect ECONNREFUSED …`) as what it means, in one line: no server runs at
 * `url`. Undefined for any other failure, which causeOf words.
 */
function noServerAt(url: string, error: unknown): string | undefined {
  if ((error as { cause?: { code?: string } }).cause?.code !== 'ECONNREFUSED') return undefined;
  return `no rackboot server answers at ${url}: is \`rackboot serve\` running (or is --url wrong)?`;
}

export function getJson<T>(
  target: ServerTarget,
  path: string,
  shape: Shape,
  onHeaders?: (headers: Headers) => void,
): Promise<T> {
  return request<T>(target, path, shape, {}, onHeaders);
}

/**
 * Says on stderr that the server refuses its config files' current contents (CONFIG_REJECTED_HEADER):
 * what the verb shows is then the previous config's, which an operator who just edited the file
 * would not expect.
 */
export function warnOfRejectedConfig(headers: Headers): void {
  const match = /since=(\S+); problems=(\d+)/.exec(headers.get(CONFIG_REJECTED_HEADER) ?? '');
  if (!match) return;
  process.stderr.write(
    `rackboot: the server refuses its config files as they are (${match[2]} ${match[2] === '1' ? 'problem' : 'problems'}, since ${match[1]}) and serves the config it had: \`rackboot validate\` names them\n`,
  );
}

/** An operator call: needs the token (resolveServer). */
export function postOperator<T>(
  target: ServerTarget,
  path: string,
  shape: Shape,
  body: unknown = {},
): Promise<T> {
  if (!target.token) {
    const why = target.noToken ?? `set $RACKBOOT_API_TOKEN or server.api_token`;
    return Promise.reject(new ApiError(`no operator token: ${why}`, 401));
  }
  return request<T>(target, path, shape, {
    method: 'POST',
    headers: { authorization: `Bearer ${target.token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  }).catch((error: unknown) => {
    if (!(error instanceof ApiError) || error.status !== 401 || !target.tokenFrom) throw error;
    throw new ApiError(
      `${error.message} (sent: ${target.tokenFrom}; a server that refused the file's last edit, or has not reloaded it yet, still takes the token it had: see its log)`,
      401,
    );
  });
}

/**
 * The newest event id the server holds (`x-rackboot-last-event-id` of `HEAD /api/v1/machines`);
 * undefined from a server that does not say.
 */
export async function lastEventId(target: ServerTarget): Promise<number | undefined> {
  const { response } = await call(target, '/api/v1/machines', { method: 'HEAD' });
  const header = response.headers.get(LAST_EVENT_ID_HEADER);
  return header !== null && /^\d+$/.test(header) ? Number(header) : undefined;
}

/** The longest pause between two attempts to reopen a dropped event stream. */
const MAX_RECONNECT_DELAY_MS = 30_000;

/** The server sends a keep-alive comment every 15 s; a stream silent for three of them is dead. */
const IDLE_TIMEOUT_MS = 45_000;

export interface FollowOptions {
  mac?: string | undefined;
  /** Resume after this event id; without it, live events only. */
  after?: number | undefined;
  signal?: AbortSignal | undefined;
  /**
   * Pause before reconnecting a dropped stream (the server also suggests one with `retry:`); it
   * doubles with each attempt that gets no stream, up to MAX_RECONNECT_DELAY_MS.
   */
  reconnectDelayMs?: number;
  /** A stream that sends nothing (not even a keep-alive) for this long is reopened. */
  idleTimeoutMs?: number;
  /**
   * Called when the stream drops, before reconnecting; not again for the same reason until a stream
   * delivers (an outage of an hour is one line, not one per attempt).
   */
  onDisconnect?: (reason: string) => void;
  /** Called when the server could not send every event after the resume point (`history-gap`). */
  onHistoryGap?: (gap: HistoryGap) => void;
}

/** The `history-gap` event: events after `after` are gone; the stream goes on at `resumesAt`. */
export interface HistoryGap {
  after: number;
  /** The next event's id; null when none is stored yet (the next one will be live). */
  resumesAt: number | null;
  /** `pruned`: retention removed them; `reset`: the server's history was replaced, ids start over. */
  reason: 'pruned' | 'reset';
}

/**
 * The provisioning events from `GET /api/v1/events` (Server-Sent Events), following until `signal`
 * aborts. A dropped stream is reopened with `Last-Event-ID`, so nothing is missed or repeated, unless
 * the server no longer holds what was missed: then `onHistoryGap` hears of it. A refusal (4xx) or an
 * answer that is not an event stream ends it with an ApiError: retrying would not change either.
 */
export async function* followEvents(
  target: ServerTarget,
  options: FollowOptions = {},
): AsyncGenerator<MachineEvent> {
  let lastId = options.after;
  let baseDelayMs = options.reconnectDelayMs ?? 1000;
  const idleTimeoutMs = options.idleTimeoutMs ?? IDLE_TIMEOUT_MS;
  const url = `${target.url}/api/v1/events${options.mac ? `?mac=${encodeURIComponent(options.mac)}` : ''}`;
  // Attempts in a row that got no message, and the reason last told to onDisconnect since one did.
  let failures = 0;
  let toldReason: string | undefined;
  while (!options.signal?.aborted) {
    let reason = 'stream ended';
    let retryAfterMs = 0;
    const connection = new AbortController();
    let idle: NodeJS.Timeout | undefined;
    const watchIdle = () => {
      clearTimeout(idle);
      idle = setTimeout(() => connection.abort(), idleTimeoutMs);
    };
    watchIdle();
    try {
      const response = await fetch(url, {
        headers: {
          accept: 'text/event-stream',
          ...(lastId === undefined ? {} : { 'last-event-id': String(lastId) }),
        },
        signal: options.signal ? AbortSignal.any([options.signal, connection.signal]) : connection.signal,
      });
      const type = response.headers.get('content-type') ?? 'no content type';
      if (response.status >= 500) {
        // A full server (503, too many event streams) says when to come back.
        retryAfterMs = (Number(response.headers.get('retry-after')) || 0) * 1000;
        // rackboot's refusal names the cap and who holds the streams; a proxy's error page says nothing.
        const answer = parseOrUndefined(await response.text());
        const why =
          isObject(answer) && answer.error ? `: ${explainRefusal(url, response.status, answer)}` : '';
        throw new Error(`HTTP ${response.status}${why}`);
      }
      if (!response.ok) {
        throw new ApiError(
          explainRefusal(url, response.status, parseOrUndefined(await response.text())),
          response.status,
        );
      }
      if (!type.startsWith('text/event-stream') || !response.body) {
        throw new ApiError(
          `${url} answered HTTP ${response.status} with ${type}, not an event stream: is --url a rackboot server?`,
          response.status,
        );
      }
      for await (const messages of serverSentEvents(
        eachChunk(response.body as unknown as AsyncIterable<Uint8Array>, watchIdle),
      )) {
        failures = 0;
        toldReason = undefined;
        for (const message of messages) {
          if (message.retry !== undefined) baseDelayMs = message.retry;
          if (message.data === undefined) continue;
          if (message.id !== undefined) lastId = Number(message.id);
          if (message.event === 'history-gap') {
            options.onHistoryGap?.(streamRecord<HistoryGap>(url, message.data, HISTORY_GAP));
          }
          // Provisioning events are unnamed; a name this client does not know is for newer clients.
          if (message.event !== undefined) continue;
          // The consumer may take its time (a paused pager): that is not the stream's silence.
          clearTimeout(idle);
          yield streamRecord<MachineEvent>(url, message.data, EVENT);
          watchIdle();
        }
      }
    } catch (error) {
      if (options.signal?.aborted) return;
      if (error instanceof ApiError) throw error;
      reason = connection.signal.aborted
        ? `${url}: nothing received for ${idleTimeoutMs / 1000} s`
        : (noServerAt(target.url, error) ?? `${target.url}: ${causeOf(error)}`);
    } finally {
      clearTimeout(idle);
    }
    if (reason !== toldReason) options.onDisconnect?.(reason);
    toldReason = reason;
    const delayMs = Math.max(retryAfterMs, Math.min(baseDelayMs * 2 ** failures, MAX_RECONNECT_DELAY_MS));
    failures += 1;
    await sleep(delayMs, options.signal);
  }
}

/** The chunks of a body, calling `onChunk` as each arrives. */
async function* eachChunk(
  chunks: AsyncIterable<Uint8Array>,
  onChunk: () => void,
): AsyncGenerator<Uint8Array> {
  for await (const chunk of chunks) {
    onChunk();
    yield chunk;
  }
}

/**
 * One message of the event stream as the record `shape` describes. Anything else is another
 * application's event stream, which reconnecting would not change.
 */
function streamRecord<T>(url: string, data: string, shape: Shape): T {
  const record = parseOrUndefined(data);
  if (fitsShape(record, shape)) return record as T;
  throw new ApiError(
    `${url} sent a message that is not the API's (${shape.what} expected): is --url a rackboot server?`,
    200,
  );
}

function parseOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** A pause that ends early, without an error, when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

export interface SseMessage {
  id?: string;
  /** The `event:` name; absent for the default `message` type. */
  event?: string;
  data?: string;
  retry?: number;
}

/**
 * The event-stream format (HTML Living Standard §9.2.6): fields per line, a blank line ends a message.
 * Yields the messages each chunk completes, together: a watcher of a busy server gets hundreds per
 * chunk, and a generator step per message cost more than parsing it.
 */
export async function* serverSentEvents(chunks: AsyncIterable<Uint8Array>): AsyncGenerator<SseMessage[]> {
  const decoder = new TextDecoder();
  let buffered = '';
  let message: SseMessage = {};
  const endLine = (line: string, messages: SseMessage[]) => {
    if (line === '') {
      if (message.data !== undefined || message.retry !== undefined) messages.push(message);
      message = {};
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    const value = colon === -1 ? '' : line.slice(line.startsWith(' ', colon + 1) ? colon + 2 : colon + 1);
    if (field === 'data') message.data = message.data === undefined ? value : `${message.data}\n${value}`;
    else if (field === 'id') message.id = value;
    else if (field === 'event' && value !== '' && value !== 'message') message.event = value;
    else if (field === 'retry' && /^\d+$/.test(value)) message.retry = Number(value);
  };
  for await (const chunk of chunks) {
    buffered += decoder.decode(chunk, { stream: true });
    const messages: SseMessage[] = [];
    let start = 0;
    // Lines end in \n, \r\n or \r; rackboot sends \n, so look for \r once per chunk, not per line.
    let carriageReturn = buffered.indexOf('\r');
    for (;;) {
      if (carriageReturn !== -1 && carriageReturn < start) carriageReturn = buffered.indexOf('\r', start);
      const lineFeed = buffered.indexOf('\n', start);
      const end =
        carriageReturn === -1
          ? lineFeed
          : lineFeed === -1
            ? carriageReturn
            : Math.min(lineFeed, carriageReturn);
      // A \r last in the chunk may be the first half of a \r\n: decide with the next chunk.
      if (end === -1 || (end === carriageReturn && end === buffered.length - 1)) break;
      endLine(buffered.slice(start, end), messages);
      start = end + (end === carriageReturn && buffered.startsWith('\n', end + 1) ? 2 : 1);
    }
    buffered = buffered.slice(start);
    if (messages.length > 0) yield messages;
  }
}
