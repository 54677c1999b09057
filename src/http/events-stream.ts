import type { ServerResponse } from 'node:http';
import { type Static, Type } from '@sinclair/typebox';
import type { FastifyPluginAsync } from 'fastify';
import { type Mac, parseMac } from '../inventory/mac.js';
import type { Lifecycle } from '../lifecycle/store.js';

export interface EventsStreamOptions {
  lifecycle: Lifecycle;
  /** Comment line sent this often so proxies and browsers keep an idle stream open. */
  keepAliveMs?: number;
  /**
   * A watcher that falls this far behind (bytes queued in the socket) is disconnected; it reconnects
   * with Last-Event-ID and catches up from the store, so a slow browser costs bounded memory.
   */
  maxQueuedBytes?: number;
}

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

/**
 * `GET /api/v1/events`: Server-Sent Events of every durable event (`?mac=` filters). `id:` is the
 * event id, so a watcher reconnecting with `Last-Event-ID` (or `?after=`) first gets every event it
 * missed, from the store, then the live ones, each exactly once. With `Accept: application/json`
 * (and no `text/event-stream`) it answers the history instead: events after `?after=`, or the latest.
 */
export const eventsStream: FastifyPluginAsync<EventsStreamOptions> = async (app, options) => {
  const { lifecycle } = options;
  const keepAliveMs = options.keepAliveMs ?? 15_000;
  const maxQueuedBytes = options.maxQueuedBytes ?? 4 << 20;
  const open = new Set<ServerResponse>();
  // Long-lived streams would hold app.close() open forever; end them before the server closes.
  app.addHook('preClose', async () => {
    for (const response of open) response.end();
  });

  app.get<{ Querystring: EventsQuery }>(
    '/api/v1/events',
    { schema: { querystring: EventsQuery } },
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
      const lastEventId = request.headers['last-event-id'];
      const requestedResume =
        typeof lastEventId === 'string' && /^\d+$/.test(lastEventId)
          ? Number(lastEventId)
          : request.query.after;
      // Ids only grow and a watcher only sees committed ones, so an id beyond the newest stored
      // event means the history was reset (state directory wiped): every stored event is new to it.
      const newestId = lifecycle.lastEventId();
      const historyReset = requestedResume !== undefined && requestedResume > newestId;
      const resumeFrom = historyReset ? 0 : requestedResume;

      reply.hijack();
      const response = reply.raw;
      response.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        // nginx would otherwise buffer the stream.
        'x-accel-buffering': 'no',
      });
      response.write(`retry: ${RETRY_MS}\n\n`);
      if (historyReset) {
        response.write(
          `: history reset: event ${requestedResume} is beyond the newest stored event ${newestId}; replaying from the first\n\n`,
        );
      }
      open.add(response);
      streamEvents(lifecycle, response, { mac, resumeFrom, maxQueuedBytes });
      const keepAlive = setInterval(() => response.write(': keep-alive\n\n'), keepAliveMs);
      response.on('close', () => {
        clearInterval(keepAlive);
        open.delete(response);
      });
      response.on('error', () => response.destroy());
    },
  );
};

/**
 * Replays from the store after `resumeFrom` (nothing without one: a fresh watcher sees live events
 * only), then live events. Subscribing before the replay and skipping ids already sent makes the
 * hand-over gap-free and duplicate-free: the store notifies only after commit, so an event is
 * either in the replayed rows or still to come from the listener.
 */
function streamEvents(
  lifecycle: Lifecycle,
  response: ServerResponse,
  stream: {
    mac: Mac | undefined;
    resumeFrom: number | undefined;
    maxQueuedBytes: number;
  },
): void {
  let sentId = stream.resumeFrom ?? lifecycle.lastEventId();
  let replaying = stream.resumeFrom !== undefined;
  const held: [number, string][] = [];
  // The store hands over a committed batch event by event; one socket write per batch, not per event.
  let queued: string[] = [];
  const writeQueued = () => {
    if (queued.length === 0 || response.destroyed) return;
    response.write(queued.join(''));
    queued = [];
    if (response.writableLength > stream.maxQueuedBytes) response.destroy();
  };
  // `json` is the event as the store serialised it once, for every watcher and its own writes.
  const send = (id: number, json: string) => {
    if (id <= sentId || response.destroyed) return;
    sentId = id;
    if (queued.length === 0) queueMicrotask(writeQueued);
    queued.push(`id: ${id}\ndata: ${json}\n\n`);
  };
  const unsubscribe = lifecycle.subscribe((event, json) => {
    if (stream.mac !== undefined && event.mac !== stream.mac) return;
    if (replaying) held.push([event.id, json]);
    else send(event.id, json);
  });
  response.on('close', unsubscribe);
  if (!replaying) return;

  const replay = () => {
    const batch = lifecycle.storedEventsAfter(sentId, { mac: stream.mac, limit: REPLAY_BATCH });
    for (const stored of batch) send(stored.id, stored.event);
    writeQueued();
    if (batch.length === REPLAY_BATCH && !response.destroyed) {
      // Let the socket drain between batches so a long catch-up does not sit in memory.
      if (response.writableNeedDrain) response.once('drain', replay);
      else setImmediate(replay);
      return;
    }
    replaying = false;
    for (const [id, json] of held.splice(0)) send(id, json);
  };
  replay();
}
