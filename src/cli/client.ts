import type { Command } from 'commander';
import { OPERATOR_TOKEN_FILE, readOperatorToken } from '../http/operator-token.js';
import { loadConfigFile } from '../inventory/load.js';
import { formatProblem } from '../inventory/problems.js';
import type { MachineEvent } from '../lifecycle/events.js';
import { addConfigOption, resolveConfigPath } from './config-option.js';

/** A running server as the verbs see it: where it answers and the operator token, if any. */
export interface ServerTarget {
  url: string;
  token: string | undefined;
}

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** `--url` and `-c` for a verb that talks to a running server. */
export function addServerOptions(command: Command): Command {
  return addConfigOption(command).option(
    '--url <url>',
    'the server (default: http://<server.address>:<server.http.port> from the config)',
  );
}

/**
 * `--url` as given, else from the config file (CONTRACT.md); the operator token from
 * $RACKBOOT_API_TOKEN, else server.api_token (the loader applies the variable over the file), else
 * the one a server without either keeps in server.state.
 */
export async function resolveServer(options: { url?: string; config?: string }): Promise<ServerTarget> {
  const envToken = process.env.RACKBOOT_API_TOKEN || undefined;
  const file = resolveConfigPath(options.config);
  const loaded = await loadConfigFile(file, { missingAssets: 'warn' });
  const token =
    envToken ??
    (loaded.ok
      ? (loaded.config.server.api_token ?? (await readOperatorToken(loaded.config.server.state)))
      : undefined);
  if (options.url) return { url: options.url.replace(/\/+$/, ''), token };
  if (!loaded.ok) {
    const problems = loaded.problems.map((problem) => formatProblem(problem)).join('\n');
    throw new Error(`no --url given and the config does not load:\n${problems}`);
  }
  const { address, http } = loaded.config.server;
  return { url: `http://${address}:${http.port}`, token };
}

async function request<T>(target: ServerTarget, path: string, init: RequestInit = {}): Promise<T> {
  let response: Response;
  try {
    response = await fetch(`${target.url}${path}`, {
      ...init,
      headers: { accept: 'application/json', ...(init.headers as Record<string, string> | undefined) },
    });
  } catch (error) {
    throw new ApiError(`cannot reach ${target.url}: ${causeOf(error)}`, 0);
  }
  const text = await response.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    // A wrong --url (another web server, a proxy's error page) answers HTML, not the API's JSON.
    const type = response.headers.get('content-type') ?? 'no content type';
    throw new ApiError(
      `${target.url}${path} answered HTTP ${response.status} with ${type}, not JSON: is --url a rackboot server?`,
      response.status,
    );
  }
  if (!response.ok) {
    const answer = body as { error?: string; rejected?: string } | undefined;
    throw new ApiError(
      answer?.rejected ??
        answer?.error ??
        `${target.url}${path} answered HTTP ${response.status} with no explanation: is --url a rackboot server?`,
      response.status,
    );
  }
  return body as T;
}

/** fetch's own message is only "fetch failed"; what failed (ECONNREFUSED …) is its cause. */
function causeOf(error: unknown): string {
  return (error as { cause?: { message?: string } }).cause?.message ?? (error as Error).message;
}

export function getJson<T>(target: ServerTarget, path: string): Promise<T> {
  return request<T>(target, path);
}

/** An operator call: needs the token (resolveServer). */
export function postOperator<T>(target: ServerTarget, path: string, body: unknown = {}): Promise<T> {
  if (!target.token) {
    return Promise.reject(
      new ApiError(
        `no operator token: set $RACKBOOT_API_TOKEN or server.api_token, or run as a user that can read the server's own (<server.state>/${OPERATOR_TOKEN_FILE})`,
        401,
      ),
    );
  }
  return request<T>(target, path, {
    method: 'POST',
    headers: { authorization: `Bearer ${target.token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
}

export interface FollowOptions {
  mac?: string | undefined;
  /** Resume after this event id; without it, live events only. */
  after?: number | undefined;
  signal?: AbortSignal | undefined;
  /** Pause before reconnecting a dropped stream (the server also suggests one with `retry:`). */
  reconnectDelayMs?: number;
  /** Called when the stream drops, before reconnecting. */
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
 * the server no longer holds what was missed: then `onHistoryGap` hears of it.
 */
export async function* followEvents(
  target: ServerTarget,
  options: FollowOptions = {},
): AsyncGenerator<MachineEvent> {
  let lastId = options.after;
  let retryMs = options.reconnectDelayMs ?? 1000;
  const query = options.mac ? `?mac=${encodeURIComponent(options.mac)}` : '';
  while (!options.signal?.aborted) {
    let reason = 'stream ended';
    try {
      const response = await fetch(`${target.url}/api/v1/events${query}`, {
        headers: {
          accept: 'text/event-stream',
          ...(lastId === undefined ? {} : { 'last-event-id': String(lastId) }),
        },
        signal: options.signal,
      });
      if (!response.ok || !response.body) {
        // A full server (503, too many event streams) says when to come back.
        const retryAfter = Number(response.headers.get('retry-after'));
        if (retryAfter > 0) retryMs = Math.max(retryMs, retryAfter * 1000);
        throw new ApiError(`HTTP ${response.status}`, response.status);
      }
      for await (const messages of serverSentEvents(response.body as unknown as AsyncIterable<Uint8Array>)) {
        for (const message of messages) {
          if (message.retry !== undefined) retryMs = message.retry;
          if (message.data === undefined) continue;
          if (message.id !== undefined) lastId = Number(message.id);
          if (message.event === 'history-gap') options.onHistoryGap?.(JSON.parse(message.data) as HistoryGap);
          // Provisioning events are unnamed; a name this client does not know is for newer clients.
          if (message.event === undefined) yield JSON.parse(message.data) as MachineEvent;
        }
      }
    } catch (error) {
      if (options.signal?.aborted) return;
      if (error instanceof ApiError && error.status >= 400 && error.status < 500) throw error;
      reason = `${target.url}: ${causeOf(error)}`;
    }
    options.onDisconnect?.(reason);
    await new Promise((resolve) => setTimeout(resolve, retryMs));
  }
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
