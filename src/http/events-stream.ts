import type { ServerResponse } from 'node:http';
import { type Static, Type } from '@sinclair/typebox';
import type { FastifyPluginAsync } from 'fastify';
import { type Mac, parseMac } from '../inventory/mac.js';
import type { ConfigDiff } from '../inventory/source.js';
import type { Lifecycle, StoredEvent } from '../lifecycle/store.js';

export interface EventsStreamOptions {
  lifecycle: Lifecycle;
  /** Comment line sent this often so proxies and browsers keep an idle stream open. */
  keepAliveMs?: number;
  /**
   * A watcher this far behind (bytes queued in the socket, with the batch at hand) is sent no live
   * events: it catches up from the store, a replay batch at a time as its socket drains, so a slow
   * browser costs bounded memory and a large batch never drops a watcher that reads.
   */
  maxQueuedBytes?: number;
  /** A watcher that takes nothing of a replay for this long is disconnected (it stopped reading). */
  drainTimeoutMs?: number;
  /** Registers a listener for applied config reloads (ConfigSource's `change`). */
  onConfigChange?: (listener: (diff: ConfigDiff) => void) => void;
}

/**
 * Open streams at most, and from one client address: each may hold up to `maxQueuedBytes` (plus the
 * kernel's socket buffers) and the endpoint is unauthenticated. A fleet needs a few dashboards and
 * `rackboot logs -f`, not hundreds.
 */
export const MAX_EVENT_STREAMS = 32;
export const MAX_EVENT_STREAMS_PER_CLIENT = 8;
/** What a refused watcher is told to wait before trying again. */
const STREAMS_FULL_RETRY_AFTER_SECONDS = 10;

const EventsQuery = Type.Object({
  mac: Type.Optional(Type.String()),
  /** Resume point for clients that cannot set Last-Event-ID (the dashboard's first connection). */
  after: Type.Optional(Type.Integer({ minimum: 0 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000 })),
});
type EventsQuery = Static<typeof EventsQuery>;

const REPLAY_BATCH = 500;
/** Browsers reconnect after this long when the stream drops. */
const RETRY_MS = 1000;

/** Where a watcher resumes: after `afterId` as it asked, or from the first event when `reset`. */
interface Resume {
  afterId: number;
  reset: boolean;
}

/**
 * `GET /api/v1/events`: Server-Sent Events of every durable event (`?mac=` filters). `id:` is the
 * event id, so a watcher reconnecting with `Last-Event-ID` (or `?after=`) first gets every event it
 * missed, from the store, then the live ones, each exactly once. An applied config reload is sent
 * to every stream as the named event `config-changed` (counts of what changed), never replayed.
 * With `Accept: application/json`
 * (and no `text/event-stream`) it answers the history instead: events after `?after=`, or the latest.
 */
export const eventsStream: FastifyPluginAsync<EventsStreamOptions> = async (app, options) => {
  const { lifecycle } = options;
  const keepAliveMs = options.keepAliveMs ?? 15_000;
  const maxQueuedBytes = options.maxQueuedBytes ?? 4 << 20;
  const drainTimeoutMs = options.drainTimeoutMs ?? 30_000;
  const open = new Set<ServerResponse>();
  /** Each client address's open streams, oldest first. */
  const openPerClient = new Map<string, Set<ServerResponse>>();
  /**
   * With every place taken, the client holding the most streams gives up its oldest to a client
   * holding fewer, so a few addresses that open streams and idle on them cannot lock the operator
   * out of the live view: the places end up shared evenly between the addresses that want them.
   */
  const makeRoomFor = (client: string): boolean => {
    const held = openPerClient.get(client)?.size ?? 0;
    let largest: Set<ServerResponse> | undefined;
    for (const streams of openPerClient.values()) if (streams.size > (largest?.size ?? 0)) largest = streams;
    const oldest = largest?.values().next().value;
    if (!largest || largest.size <= held + 1 || !oldest) return false;
    // It reconnects with Last-Event-ID and, once there is room again, misses nothing.
    oldest.end();
    open.delete(oldest);
    largest.delete(oldest);
    return true;
  };
  // Long-lived streams would hold app.close() open forever; end them before the server closes.
  app.addHook('preClose', async () => {
    for (const response of open) response.end();
  });
  // A reload is no machine's event and is not stored, but what a watcher shows (the fleet's
  // hostnames, profiles, which machines are listed) came from the config: a named event, so the
  // dashboard reads the fleet again. Counts, not MACs: an edit of a large fleet names thousands.
  options.onConfigChange?.((diff) => {
    const summary = JSON.stringify({
      machinesAdded: diff.machinesAdded.length,
      machinesRemoved: diff.machinesRemoved.length,
      machinesChanged: diff.machinesChanged.length,
      profilesChanged: diff.profilesChanged.length,
      settingsChanged: diff.otherKeysChanged.length,
    });
    for (const response of open)
      if (!response.destroyed) response.write(`event: config-changed\ndata: ${summary}\n\n`);
  });

  app.get<{ Querystring: EventsQuery }>(
    '/api/v1/events',
    // A HEAD would run this handler and hold a stream slot open with nothing to send.
    { schema: { querystring: EventsQuery }, exposeHeadRoute: false },
    async (request, reply) => {
      const mac = request.query.mac === undefined ? undefined : parseMac(request.query.mac);
      if (request.query.mac !== undefined && !mac) {
        return reply.code(400).send({ error: `not a MAC address: ${request.query.mac}` });
      }
      const accept = request.headers.accept ?? '';
      if (accept.includes('application/json') && !accept.includes('text/event-stream')) {
        const filter = { mac, limit: request.query.limit };
        const stored =
          request.query.after === undefined
            ? lifecycle.storedLatestEvents(filter)
            : lifecycle.storedEventsAfter(request.query.after, filter);
        // The events as stored are JSON already: up to 10,000 of them, not parsed to be serialised again.
        return reply
          .type('application/json; charset=utf-8')
          .send(`[${stored.map((row) => row.event).join(',')}]`);
      }
      const client = request.ip;
      const fromClient = openPerClient.get(client)?.size ?? 0;
      if (
        fromClient >= MAX_EVENT_STREAMS_PER_CLIENT ||
        (open.size >= MAX_EVENT_STREAMS && !makeRoomFor(client))
      ) {
        return reply
          .code(503)
          .header('retry-after', String(STREAMS_FULL_RETRY_AFTER_SECONDS))
          .send({
            error: 'too many event streams',
            message: `${open.size} streams are open, ${fromClient} of them from ${client} (at most ${MAX_EVENT_STREAMS}, ${MAX_EVENT_STREAMS_PER_CLIENT} per client); retry later`,
          });
      }
      const lastEventId = request.headers['last-event-id'];
      const requestedResume =
        typeof lastEventId === 'string' && /^\d+$/.test(lastEventId)
          ? Number(lastEventId)
          : request.query.after;
      const resume =
        requestedResume === undefined
          ? undefined
          : { afterId: requestedResume, reset: fromAnotherHistory(lifecycle, requestedResume) };

      reply.hijack();
      // fastify counts a request when its response finishes; a stream usually ends by a close.
      reply.countWhenClosed?.();
      const response = reply.raw;
      response.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        // nginx would otherwise buffer the stream.
        'x-accel-buffering': 'no',
      });
      response.write(`retry: ${RETRY_MS}\n\n`);
      open.add(response);
      const streams = openPerClient.get(client) ?? new Set<ServerResponse>();
      streams.add(response);
      openPerClient.set(client, streams);
      const onReadError = (error: unknown) =>
        app.log.error({ err: error, client }, 'event history could not be read: event stream closed');
      streamEvents(lifecycle, response, { mac, resume, maxQueuedBytes, drainTimeoutMs, onReadError });
      const keepAlive = setInterval(() => response.write(': keep-alive\n\n'), keepAliveMs);
      response.on('close', () => {
        clearInterval(keepAlive);
        open.delete(response);
        streams.delete(response);
        if (streams.size === 0 && openPerClient.get(client) === streams) openPerClient.delete(client);
      });
      response.on('error', () => response.destroy());
    },
  );
};

/**
 * Replays from the store after the resume point (nothing without one: a fresh watcher sees live
 * events only), then live events. Subscribing before the replay and skipping ids already sent makes
 * the hand-over gap-free and duplicate-free: the store notifies only after commit, so an event heard
 * while replaying is in the store for a later replay batch, and the replay ends in the same turn as
 * its last read, after which events are sent as they are heard. Nothing is held for a watcher: what
 * it has not taken yet stays in the store. So a watcher that falls `maxQueuedBytes` behind, or is
 * handed a committed batch larger than that (a writer thread that fell behind under a flood commits
 * seconds of events at once), is not sent the live events: it catches up from the store the same
 * way, paced by its socket draining, and is disconnected only when it takes nothing for
 * `drainTimeoutMs` (it stopped reading).
 */
function streamEvents(
  lifecycle: Lifecycle,
  response: ServerResponse,
  stream: {
    mac: Mac | undefined;
    resume: Resume | undefined;
    maxQueuedBytes: number;
    drainTimeoutMs: number;
    onReadError: (error: unknown) => void;
  },
): void {
  const { resume } = stream;
  let sentId = resume === undefined ? lifecycle.lastEventId() : resume.reset ? 0 : resume.afterId;
  let replaying = resume !== undefined;
  // The store hands over a committed batch event by event; one socket write per batch, not per event.
  let queued: string[] = [];
  let queuedLength = 0;
  /** The last id written before the queued events: where a catch-up starts if they are not written. */
  let writtenId = sentId;
  const writeQueued = () => {
    if (queued.length === 0 || response.destroyed) return;
    const text = queued.join('');
    const tooFarBehind = response.writableLength + queuedLength > stream.maxQueuedBytes;
    queued = [];
    queuedLength = 0;
    if (!replaying && tooFarBehind) {
      sentId = writtenId;
      replaying = true;
      // Read the store again only once the socket took what it holds: a watcher that stopped
      // reading would otherwise be written every batch it missed, each as a replay too small to wait.
      if (response.writableNeedDrain) afterDrain(response, stream.drainTimeoutMs, replay);
      else replay();
      return;
    }
    response.write(text);
    writtenId = sentId;
  };
  // `json` is the event as the store serialised it once, for every watcher and its own writes.
  const send = (id: number, json: string) => {
    if (id <= sentId || response.destroyed) return;
    sentId = id;
    if (queued.length === 0) queueMicrotask(writeQueued);
    const message = `id: ${id}\ndata: ${json}\n\n`;
    queued.push(message);
    queuedLength += message.length;
  };
  const unsubscribe = lifecycle.subscribe((event, json) => {
    if (replaying || (stream.mac !== undefined && event.mac !== stream.mac)) return;
    send(event.id, json);
  });
  response.on('close', unsubscribe);

  let firstBatch = true;
  function replay(): void {
    if (response.destroyed) return;
    let batch: StoredEvent[];
    try {
      batch = lifecycle.storedEventsAfter(sentId, { mac: stream.mac, limit: REPLAY_BATCH });
    } catch (error) {
      // A failed read (a disk error, a damaged database) thrown from a timer or the store's
      // notification would end the whole process: this stream ends instead, after what it was
      // sent, and the watcher reconnects with its Last-Event-ID after `retry`.
      stream.onReadError(error);
      response.end();
      return;
    }
    // Every batch: retention may prune past a slow replay's cursor between two reads.
    const reason =
      firstBatch && resume?.reset ? 'reset' : prunedPast(lifecycle, sentId) ? 'pruned' : undefined;
    if (reason) {
      const after = firstBatch && resume ? resume.afterId : sentId;
      const gap = { after, resumesAt: batch[0]?.id ?? null, reason };
      // A named event, not a comment: EventSource clients (the dashboard) see it and refetch.
      writeQueued();
      response.write(`event: history-gap\ndata: ${JSON.stringify(gap)}\n\n`);
    }
    firstBatch = false;
    for (const stored of batch) send(stored.id, stored.event);
    writeQueued();
    if (batch.length < REPLAY_BATCH) {
      replaying = false;
      return;
    }
    // Let the socket drain between batches so a long catch-up does not sit in memory.
    if (response.writableNeedDrain) afterDrain(response, stream.drainTimeoutMs, replay);
    else setImmediate(replay);
  }
  if (resume !== undefined) replay();
}

/**
 * Whether retention removed events the watcher had not seen: ids are dense but for failed writes,
 * so the oldest stored event sits right after `afterId` unless the events before it were pruned.
 * Asked after each replay read, so a prune between the two cannot go unreported. For a `?mac=`
 * stream it says events were pruned, not that this MAC had any among them.
 */
function prunedPast(lifecycle: Lifecycle, afterId: number): boolean {
  return (lifecycle.firstStoredEventId() ?? 0) > Math.max(afterId, lifecycle.historyStartId()) + 1;
}

/**
 * Whether a resume id was handed out by another history (the state directory was wiped or
 * replaced): every stored event is then new to the watcher. A history starts above every id an
 * earlier one on this host gave (store.ts historyStartId), and a watcher only sees committed ids, so
 * an id below the start or beyond the newest event is not this history's. 0 is "from the start".
 */
function fromAnotherHistory(lifecycle: Lifecycle, afterId: number): boolean {
  return (afterId > 0 && afterId < lifecycle.historyStartId()) || afterId > lifecycle.lastEventId();
}

/**
 * Calls `next` once the socket took what was written. A watcher that stopped reading never drains:
 * it is disconnected after `timeoutMs`, and catches up from the store if it comes back.
 */
function afterDrain(response: ServerResponse, timeoutMs: number, next: () => void): void {
  const stalled = setTimeout(() => response.destroy(), timeoutMs);
  const stopWaiting = () => {
    clearTimeout(stalled);
    response.off('drain', drained);
    response.off('close', stopWaiting);
  };
  const drained = () => {
    stopWaiting();
    next();
  };
  response.once('drain', drained);
  response.once('close', stopWaiting);
}
