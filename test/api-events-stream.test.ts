import { mkdtempSync, rmSync } from 'node:fs';
import { type ClientRequest, get, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import Fastify from 'fastify';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { followEvents, type HistoryGap, type ServerTarget } from '../src/cli/client.js';
import {
  type EventsStreamOptions,
  eventsStream,
  MAX_EVENT_STREAMS,
  MAX_EVENT_STREAMS_PER_CLIENT,
} from '../src/http/events-stream.js';
import type { MachineEvent, MachineEventInput } from '../src/lifecycle/events.js';
import { DATABASE_FILE_NAME, type LifecycleOptions, openLifecycle } from '../src/lifecycle/store.js';
import {
  editHistory,
  failHistoryWrites,
  LISTED_MAC,
  mac,
  startLifecycleApp,
  type TestLifecycle,
  UNLISTED_MAC,
  withParsedHistory,
} from './lifecycle-fixture.js';

const progress = (target = LISTED_MAC, step = 0): MachineEventInput => ({
  mac: target,
  source: 'dhcp',
  type: 'dhcp-offer',
  detail: { firmware: 'ipxe', step },
});

const storedCount = (lifecycle: TestLifecycle) => lifecycle.eventsAfter(0, { limit: 10_000 }).length;

/** Collects events from a watcher until `count` arrived (bounded by a timeout). */
function collector(events: AsyncGenerator<MachineEvent>) {
  const seen: MachineEvent[] = [];
  const waiters: { count: number; resolve: () => void }[] = [];
  void (async () => {
    for await (const event of events) {
      seen.push(event);
      for (const waiter of waiters.filter((waiter) => seen.length >= waiter.count)) waiter.resolve();
    }
  })();
  return {
    seen,
    until(count: number, timeoutMs = 10_000): Promise<void> {
      if (seen.length >= count) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`saw ${seen.length} of ${count} events`)), timeoutMs);
        waiters.push({
          count,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        });
      });
    },
  };
}

t.test(
  'a watcher that loses its connection resumes with Last-Event-ID: every event exactly once',
  async (t) => {
    const { app, lifecycle } = await startLifecycleApp(t);
    const address = await app.listen({ port: 0, host: '127.0.0.1' });
    const target: ServerTarget = { url: address, token: undefined };
    const abort = new AbortController();
    t.teardown(() => abort.abort());
    let disconnects = 0;
    const watcher = collector(
      followEvents(target, {
        after: 0,
        signal: abort.signal,
        reconnectDelayMs: 50,
        onDisconnect: () => {
          disconnects += 1;
        },
      }),
    );

    // Before the watcher connects: it gets these from the store (after=0).
    await Promise.all([0, 1, 2].map((step) => lifecycle.record(progress(LISTED_MAC, step))));
    await watcher.until(storedCount(lifecycle));

    // Live, then the connection drops; 1,200 events happen while it is away (more than one replay batch).
    await lifecycle.record(progress(UNLISTED_MAC, 3));
    await watcher.until(storedCount(lifecycle));
    app.server.closeAllConnections();
    const whileAway = Array.from({ length: 1200 }, (_, step) =>
      lifecycle.record(progress(UNLISTED_MAC, 100 + step)),
    );
    await Promise.all(whileAway);
    // And some arrive during the catch-up itself.
    const duringCatchUp = Array.from({ length: 50 }, (_, step) =>
      lifecycle.record(progress(LISTED_MAC, 5000 + step)),
    );
    await Promise.all(duringCatchUp);
    await watcher.until(storedCount(lifecycle));

    const ids = watcher.seen.map((event) => event.id);
    const expected = lifecycle.eventsAfter(0, { limit: 10_000 }).map((event) => event.id);
    t.ok(disconnects >= 1, 'the stream really dropped and was reopened');
    t.equal(ids.length, expected.length, 'as many events as the store holds');
    t.same(ids, expected, 'each event once, in order, none missing');
    t.equal(new Set(ids).size, ids.length, 'no duplicates');
  },
);

t.test('?mac= filters; Accept: application/json answers the history', async (t) => {
  const { app, lifecycle } = await startLifecycleApp(t);
  const address = await app.listen({ port: 0, host: '127.0.0.1' });
  const abort = new AbortController();
  t.teardown(() => abort.abort());
  const other = mac('52:54:00:99:99:99');
  const watcher = collector(
    followEvents(
      { url: address, token: undefined },
      { mac: '52-54-00-99-99-99', after: 0, signal: abort.signal },
    ),
  );
  await lifecycle.record(progress(LISTED_MAC));
  await lifecycle.record(progress(other));
  await lifecycle.record(progress(LISTED_MAC));
  await watcher.until(2);
  t.ok(
    watcher.seen.every((event) => event.mac === other),
    'only the filtered machine',
  );
  t.same(
    watcher.seen.map((event) => event.type),
    ['dhcp-offer', 'state-changed'],
  );

  const history = await app.inject({
    url: `/api/v1/events?mac=${LISTED_MAC}&limit=3`,
    headers: { accept: 'application/json' },
  });
  t.equal(history.statusCode, 200);
  const events = history.json() as MachineEvent[];
  t.same(
    events.map((event) => event.id),
    lifecycle
      .eventsAfter(0, { mac: LISTED_MAC })
      .slice(-3)
      .map((event) => event.id),
    'the latest three of that machine',
  );
  t.match(history.headers['content-type'], /^application\/json/);
  t.same(events, lifecycle.latestEvents({ mac: LISTED_MAC, limit: 3 }), 'each event whole, as stored');
  const none = await app.inject({
    url: `/api/v1/events?after=${lifecycle.lastEventId()}`,
    headers: { accept: 'application/json' },
  });
  t.same(none.json(), [], 'nothing after the newest event: an empty JSON array');
  const fourth = lifecycle.eventsAfter(0)[3]?.id as number;
  const after = await app.inject({
    url: `/api/v1/events?after=${fourth}`,
    headers: { accept: 'application/json' },
  });
  const pagedIds = (after.json() as MachineEvent[]).map((event) => event.id);
  t.ok(pagedIds.length > 0, 'the store holds events above the fourth');
  t.same(
    pagedIds,
    lifecycle.eventsAfter(fourth).map((event) => event.id),
    'after= pages forward: every stored event above the fourth, none below',
  );
  const bad = await app.inject({ url: '/api/v1/events?mac=nope', headers: { accept: 'application/json' } });
  t.equal(bad.statusCode, 400);
});

/** The raw text of an event stream, read as far as a test needs. */
function streamText(response: Response) {
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let text = '';
  return {
    async until(done: (text: string) => boolean, timeoutMs = 10_000): Promise<string> {
      const deadline = Date.now() + timeoutMs;
      while (!done(text)) {
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`stream so far:\n${text}`)), deadline - Date.now());
        });
        const chunk = await Promise.race([reader.read(), timeout]).finally(() => clearTimeout(timer));
        if (chunk.done) throw new Error(`stream ended:\n${text}`);
        text += decoder.decode(chunk.value, { stream: true });
      }
      return text;
    },
  };
}

const idsIn = (text: string) => [...text.matchAll(/^id: (\d+)$/gm)].map((match) => Number(match[1]));

t.test('a Last-Event-ID beyond the stored history (state wiped) replays all of it and says so', async (t) => {
  const { app, lifecycle } = await startLifecycleApp(t);
  const address = await app.listen({ port: 0, host: '127.0.0.1' });
  await Promise.all([0, 1, 2].map((step) => lifecycle.record(progress(LISTED_MAC, step))));
  const stored = lifecycle.eventsAfter(0).map((event) => event.id);
  const fromOldHistory = lifecycle.lastEventId() + 1000;
  const abort = new AbortController();
  t.teardown(() => abort.abort());
  const response = await fetch(`${address}/api/v1/events`, {
    headers: { accept: 'text/event-stream', 'last-event-id': String(fromOldHistory) },
    signal: abort.signal,
  });
  const stream = streamText(response);
  const replayed = await stream.until((text) => idsIn(text).length >= stored.length);
  t.equal(
    replayed.slice(0, replayed.indexOf('id: ')),
    `retry: 1000\n\nevent: history-gap\ndata: {"after":${fromOldHistory},"resumesAt":${stored[0]},"reason":"reset"}\n\n`,
    'a named event (EventSource clients see it; it carries no id) says why old ids come again, first',
  );
  t.same(idsIn(replayed), stored, 'every stored event, in order');

  await lifecycle.record(progress(UNLISTED_MAC, 3));
  const live = await stream.until((text) => idsIn(text).length > stored.length);
  t.same(
    idsIn(live),
    lifecycle.eventsAfter(0).map((event) => event.id),
    'then the live ones',
  );
});

t.test(
  "a Last-Event-ID from a wiped history, below the new history's newest id, still replays all of it",
  async (t) => {
    const wipedDir = mkdtempSync(join(tmpdir(), 'rackboot-wiped-'));
    t.teardown(() => rmSync(wipedDir, { recursive: true, force: true }));
    const wiped = openLifecycle({ stateDir: wipedDir, retention: 1000, logger: pino({ level: 'silent' }) });
    for (let step = 0; step < 3; step += 1) await wiped.record(progress(LISTED_MAC, step));
    const seenBeforeTheWipe = wiped.lastEventId();
    await wiped.close();
    rmSync(wipedDir, { recursive: true, force: true });

    const { lifecycle, address } = await startStreamServer(t);
    for (let step = 0; step < 10; step += 1) await lifecycle.record(progress(UNLISTED_MAC, step));
    const stored = lifecycle.eventsAfter(0).map((event) => event.id);
    t.ok(stored.length > 3, 'the new history holds more events than the watcher saw of the old one');
    const abort = new AbortController();
    t.teardown(() => abort.abort());
    const response = await fetch(`${address}/api/v1/events`, {
      headers: { accept: 'text/event-stream', 'last-event-id': String(seenBeforeTheWipe) },
      signal: abort.signal,
    });
    const replayed = await streamText(response).until((text) => idsIn(text).at(-1) === stored.at(-1));
    t.match(replayed, /event: history-gap\ndata: \{[^\n]*"reason":"reset"\}/, 'told the history was reset');
    t.same(idsIn(replayed), stored, 'every event of the new history, none skipped');
  },
);

/**
 * The events stream alone over a real store in a temporary directory, for what the app's defaults
 * hide: a short retention, a short drain timeout, a store whose writes fail.
 */
async function startStreamServer(
  t: Test,
  store: Partial<LifecycleOptions> = {},
  stream: Partial<EventsStreamOptions> = {},
) {
  const stateDir = mkdtempSync(join(tmpdir(), 'rackboot-stream-'));
  const lifecycle = withParsedHistory(
    openLifecycle({ stateDir, retention: 100_000, logger: pino({ level: 'silent' }), ...store }),
  );
  const app = Fastify();
  await app.register(eventsStream, { lifecycle, ...stream });
  const address = await app.listen({ port: 0, host: '127.0.0.1' });
  t.teardown(async () => {
    await app.close();
    await lifecycle.close();
    rmSync(stateDir, { recursive: true, force: true });
  });
  return { app, lifecycle, address, stateDir };
}

/** A whole response body. */
async function text(body: AsyncIterable<Buffer | string>): Promise<string> {
  let whole = '';
  for await (const chunk of body) whole += chunk.toString();
  return whole;
}

/** Polls `done` every 50 ms, failing after `timeoutMs`. */
async function eventually(done: () => Promise<boolean> | boolean, what: string, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

t.test(
  'a Last-Event-ID that retention pruned past: a history-gap event before the replay, and logs -f says so',
  async (t) => {
    // A snapshot with every batch, so retention alone decides what is pruned.
    const { lifecycle, address } = await startStreamServer(t, { retention: 10, snapshotIntervalMs: 0 });
    for (let step = 0; step < 40; step += 1) await lifecycle.record(progress(UNLISTED_MAC, step));
    const stored = lifecycle.eventsAfter(0).map((event) => event.id);
    const oldest = stored[0] as number;
    const fifth = lifecycle.historyStartId() + 5;
    t.ok(oldest > fifth + 15, `events up to ${oldest - 1} were pruned`);
    const read = async (lastEventId: number) => {
      const abort = new AbortController();
      t.teardown(() => abort.abort());
      const response = await fetch(`${address}/api/v1/events`, {
        headers: { accept: 'text/event-stream', 'last-event-id': String(lastEventId) },
        signal: abort.signal,
      });
      const replayed = await streamText(response).until((text) => idsIn(text).at(-1) === stored.at(-1));
      return replayed.slice(0, replayed.indexOf('id: '));
    };
    t.equal(
      await read(fifth),
      `retry: 1000\n\nevent: history-gap\ndata: {"after":${fifth},"resumesAt":${oldest},"reason":"pruned"}\n\n`,
    );
    t.equal(await read(oldest - 1), 'retry: 1000\n\n', 'no gap when the next stored event is the next one');

    const abort = new AbortController();
    t.teardown(() => abort.abort());
    const gaps: HistoryGap[] = [];
    const watcher = collector(
      followEvents(
        { url: address, token: undefined },
        { after: fifth, signal: abort.signal, onHistoryGap: (gap) => gaps.push(gap) },
      ),
    );
    await watcher.until(stored.length);
    t.same(gaps, [{ after: fifth, resumesAt: oldest, reason: 'pruned' }], 'the client hears of the gap');
    t.same(
      watcher.seen.map((event) => event.id),
      stored,
      'and yields only the events, not the gap as one',
    );
  },
);

t.test(
  'a ?mac= replay after a failed history write goes on to the newest event, not stopping short',
  async (t) => {
    const { lifecycle, address, stateDir } = await startStreamServer(t);
    await lifecycle.record(progress(LISTED_MAC, 0));
    // Every insert fails, as on a full disk; then the disk recovers.
    const repair = failHistoryWrites(stateDir);
    t.equal(await lifecycle.append(progress(LISTED_MAC, 1)).stored, false);
    repair();
    // More than one replay batch of this MAC's events after the hole.
    await Promise.all(
      Array.from({ length: 600 }, (_, step) => lifecycle.record(progress(LISTED_MAC, 2 + step))),
    );
    const stored = lifecycle.eventsAfter(0, { mac: LISTED_MAC, limit: 10_000 }).map((event) => event.id);

    const abort = new AbortController();
    t.teardown(() => abort.abort());
    const response = await fetch(`${address}/api/v1/events?mac=${LISTED_MAC}`, {
      headers: { accept: 'text/event-stream', 'last-event-id': '0' },
      signal: abort.signal,
    });
    const replayed = await streamText(response).until((text) => idsIn(text).at(-1) === stored.at(-1));
    t.same(idsIn(replayed), stored, 'every stored event of the MAC, in order');
  },
);

t.test(
  'a live batch larger than maxQueuedBytes reaches a watcher that reads, whole and without a disconnect',
  async (t) => {
    const maxQueuedBytes = 64 << 10;
    const { lifecycle, address } = await startStreamServer(t, {}, { maxQueuedBytes });
    const abort = new AbortController();
    t.teardown(() => abort.abort());
    const response = await fetch(`${address}/api/v1/events`, {
      headers: { accept: 'text/event-stream' },
      signal: abort.signal,
    });
    const stream = streamText(response);
    await stream.until((text) => text.startsWith('retry:'));
    // One batch of ~2 MB, as a writer thread that fell behind under a flood hands over at once: before,
    // the first write of it put the socket past the bound and every watcher, reading or not, was dropped.
    const padding = 'x'.repeat(1000);
    const recorded = await Promise.all(
      Array.from({ length: 2000 }, (_, step) =>
        lifecycle.append({ ...progress(UNLISTED_MAC, step), detail: { padding } }),
      ),
    );
    t.ok(await recorded[0]?.stored, 'the batch was stored');
    const ids = recorded.flatMap((appended) => appended.events.map((event) => event.id));
    const seen = idsIn(await stream.until((text) => idsIn(text).at(-1) === ids.at(-1), 20_000));
    t.same(seen, ids, 'every event once, in order, on the same connection');
    // And it stays live: the next event comes on the same stream.
    const next = lifecycle.append(progress(UNLISTED_MAC, 2000));
    await next.stored;
    const nextId = next.events.at(-1)?.id;
    t.ok(idsIn(await stream.until((text) => idsIn(text).at(-1) === nextId)).includes(nextId as number));
  },
);

for (const phase of ['the replay', 'live events'] as const)
  t.test(
    `a watcher that stops reading during ${phase} is disconnected, holding no live events`,
    async (t) => {
      const drainTimeoutMs = 300;
      const { app, lifecycle, address } = await startStreamServer(t, {}, { drainTimeoutMs });
      // ~20 MB, as history or live: more than loopback's socket buffers take from a reader that stopped.
      const rounds = { before: phase === 'the replay' ? 20 : 0, connected: phase === 'the replay' ? 1 : 20 };
      const padding = 'x'.repeat(1000);
      const record = (count: number) =>
        Promise.all(
          Array.from({ length: count }, (_, step) =>
            lifecycle.record({ ...progress(UNLISTED_MAC, step), detail: { padding } }),
          ),
        );
      for (let round = 0; round < rounds.before; round += 1) await record(1000);
      const connections = () =>
        new Promise<number>((resolve, reject) =>
          app.server.getConnections((error, count) => (error ? reject(error) : resolve(count))),
        );
      const socket = connect(Number(new URL(address).port), '127.0.0.1');
      t.teardown(() => socket.destroy());
      socket.pause();
      socket.write(
        `GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n${phase === 'the replay' ? 'Last-Event-ID: 0\r\n' : ''}\r\n`,
      );
      await eventually(async () => (await connections()) === 1, 'the watcher connected');
      // Live events while it does not read: once, each was held in memory for the watcher.
      for (let round = 0; round < rounds.connected; round += 1) await record(1000);
      await eventually(
        async () => (await connections()) === 0,
        'the server dropped the stalled watcher',
        drainTimeoutMs + 10_000,
      );
      t.pass('disconnected');
    },
  );

t.test(
  'a watcher that stops reading while live events come in small batches is disconnected, its queue bounded',
  async (t) => {
    const drainTimeoutMs = 300;
    const maxQueuedBytes = 1 << 20;
    const { app, lifecycle, address } = await startStreamServer(t, {}, { drainTimeoutMs, maxQueuedBytes });
    let watcher: ServerResponse | undefined;
    app.server.on('request', (_request: IncomingMessage, response: ServerResponse) => {
      watcher = response;
    });
    const socket = connect(Number(new URL(address).port), '127.0.0.1');
    t.teardown(() => socket.destroy());
    socket.pause();
    socket.write('GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n');
    await eventually(() => watcher !== undefined, 'the watcher connected');
    // A busy fleet's events, as a server commits them: batches far smaller than a replay batch.
    // Before, each catch-up read back the batch it had just withheld and wrote it anyway.
    const padding = 'x'.repeat(1000);
    let mostQueued = 0;
    for (let round = 0; round < 200 && !watcher?.destroyed; round += 1) {
      await Promise.all(
        Array.from({ length: 100 }, (_, step) =>
          lifecycle.record({ ...progress(UNLISTED_MAC, step), detail: { padding } }),
        ),
      );
      mostQueued = Math.max(mostQueued, watcher?.writableLength ?? 0);
    }
    await eventually(
      () => watcher?.destroyed === true,
      'the server dropped the stalled watcher',
      drainTimeoutMs + 5000,
    );
    t.ok(mostQueued <= 2 * maxQueuedBytes, `at most ${mostQueued} bytes queued for it`);
  },
);

t.test(
  `at most ${MAX_EVENT_STREAMS} streams, ${MAX_EVENT_STREAMS_PER_CLIENT} per client address; then 503 with Retry-After`,
  async (t) => {
    const { app } = await startLifecycleApp(t);
    const address = await app.listen({ port: 0, host: '127.0.0.1' });
    // One connection per stream (no agent), so closing one is at once a socket closed on the server.
    const streams: ClientRequest[] = [];
    const responses: IncomingMessage[] = [];
    t.teardown(() => {
      for (const stream of streams) stream.destroy();
    });
    const openStream = () =>
      new Promise<IncomingMessage>((resolve, reject) => {
        const stream = get(`${address}/api/v1/events`, { agent: false }, (response) => {
          responses.push(response);
          resolve(response);
        });
        stream.on('error', reject);
        streams.push(stream);
      });
    for (let stream = 0; stream < MAX_EVENT_STREAMS_PER_CLIENT; stream += 1)
      t.equal((await openStream()).statusCode, 200);
    const refused = await openStream();
    t.equal(refused.statusCode, 503, 'one more from the same address is refused');
    t.equal(refused.headers['retry-after'], '10');
    t.match(JSON.parse(await text(refused)), {
      error: 'too many event streams',
      message: /8 of them from 127\.0\.0\.1/,
    });

    streams[0]?.destroy();
    await eventually(async () => (await openStream()).statusCode === 200, 'a closed stream frees its place');

    // Other addresses fill the server (injected requests: tests bind loopback only); each injected
    // stream answers once its head is written.
    const others = await Promise.all(
      Array.from({ length: MAX_EVENT_STREAMS - MAX_EVENT_STREAMS_PER_CLIENT }, (_, index) =>
        app.inject({ url: '/api/v1/events', remoteAddress: `10.0.0.${index + 1}`, payloadAsStream: true }),
      ),
    );
    t.ok(
      others.every((stream) => stream.statusCode === 200),
      `${others.length} streams from other addresses`,
    );
    // Full: a new address takes the oldest place of the address holding the most (127.0.0.1's 8),
    // so addresses that idle on streams cannot lock the operator out.
    const oldest = responses[1];
    const endedOldest = new Promise<void>((resolve) => oldest?.once('end', () => resolve()).resume());
    const newcomer = await app.inject({
      url: '/api/v1/events',
      remoteAddress: '10.9.9.9',
      payloadAsStream: true,
    });
    t.equal(newcomer.statusCode, 200, 'a new address gets a place on a full server');
    await endedOldest;
    t.pass("127.0.0.1's oldest stream was ended for it");
    // Spread evenly, no address holding two more than another, a newcomer is refused.
    const spread = await Promise.all(
      Array.from({ length: 6 }, (_, index) =>
        app.inject({ url: '/api/v1/events', remoteAddress: `10.1.0.${index + 1}`, payloadAsStream: true }),
      ),
    );
    t.ok(
      spread.every((stream) => stream.statusCode === 200),
      "six more addresses each take one of 127.0.0.1's places, down to its last",
    );
    const full = await app.inject({
      url: '/api/v1/events',
      remoteAddress: '10.9.9.10',
      payloadAsStream: true,
    });
    t.equal(full.statusCode, 503, 'with every address holding one, a new one is refused');
    t.equal(full.headers['retry-after'], '10');
    t.match(JSON.parse(await text(full.stream())), {
      error: 'too many event streams',
      message: /^32 streams are open/,
    });
  },
);

t.test('closing the app ends open streams instead of hanging', async (t) => {
  const { app } = await startLifecycleApp(t);
  const address = await app.listen({ port: 0, host: '127.0.0.1' });
  const response = await fetch(`${address}/api/v1/events`, { headers: { accept: 'text/event-stream' } });
  t.equal(response.headers.get('content-type'), 'text/event-stream; charset=utf-8');
  const started = Date.now();
  await app.close();
  t.ok(Date.now() - started < 5000, 'app.close() returned with a stream open');
  const body = await response.text();
  t.match(body, /^retry: \d+/, 'the stream opened with a reconnect hint and then ended');
});

t.test('retention pruning past a stalled replay is announced where the ids jump', async (t) => {
  const { lifecycle, address } = await startStreamServer(
    t,
    { retention: 4000, snapshotIntervalMs: 0 },
    { drainTimeoutMs: 60_000 },
  );
  const socket = connect(Number(new URL(address).port), '127.0.0.1');
  t.teardown(() => socket.destroy());
  // Large events, so that the replay fills the socket buffers and waits for a drain.
  const padding = 'x'.repeat(6000);
  const record = (count: number) =>
    Promise.all(
      Array.from({ length: count }, (_, step) =>
        lifecycle.record({ mac: LISTED_MAC, source: 'dhcp', type: 'dhcp-offer', detail: { step, padding } }),
      ),
    );
  for (let round = 0; round < 12; round += 1) await record(500);
  const first = lifecycle.storedEventsAfter(0, { limit: 1 })[0]?.id ?? 0;
  // Resuming right before the oldest stored event: nothing is missing when the replay starts.
  socket.pause();
  socket.write(
    `GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nLast-Event-ID: ${first - 1}\r\n\r\n`,
  );
  await new Promise((resolve) => setTimeout(resolve, 1000));
  // Retention prunes past the stalled replay's cursor.
  for (let round = 0; round < 12; round += 1) await record(500);
  let text = '';
  socket.on('data', (chunk: Buffer) => {
    text += chunk.toString();
  });
  socket.resume();
  const newest = lifecycle.lastEventId();
  for (let waited = 0; !text.includes(`id: ${newest}\n`); waited += 50) {
    if (waited > 30_000) throw new Error(`the stream did not reach event ${newest}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const lines = text.split('\n');
  const ids = lines.flatMap((line) => (/^id: \d+$/.test(line) ? [Number(line.slice(4))] : []));
  const jumps = ids.flatMap((id, index) => (index > 0 && id !== (ids[index - 1] as number) + 1 ? [id] : []));
  t.ok(jumps.length > 0, 'the stalled replay did lose events to retention');
  const gaps = lines.flatMap((line, index) =>
    line === 'event: history-gap' ? [JSON.parse((lines[index + 1] as string).slice(6)) as HistoryGap] : [],
  );
  t.same(
    gaps.map((gap) => gap.resumesAt),
    jumps,
    'each jump is announced, with the id it resumes at',
  );
  t.ok(gaps.every((gap) => gap.reason === 'pruned'));
});

t.test('the history never lists a batch the writer committed before the server settled it', async (t) => {
  const { lifecycle, stateDir } = await startStreamServer(t, { batchIntervalMs: 0 });
  const side = new Database(join(stateDir, DATABASE_FILE_NAME), { readonly: true });
  t.teardown(() => side.close());
  for (let step = 0; step < 5; step += 1) await lifecycle.record(progress(LISTED_MAC, step));
  void lifecycle.record(progress(LISTED_MAC, 99));
  await new Promise((resolve) => setImmediate(resolve));
  // This thread stays busy (as under a DHCP storm) until the writer thread has committed the batch,
  // so the writer's answer has not been handled yet.
  const newest = side.prepare('SELECT max(id) AS id FROM events');
  const settled = lifecycle.lastEventId();
  const deadline = performance.now() + 10_000;
  while ((newest.get() as { id: number }).id <= settled) {
    if (performance.now() > deadline) throw new Error('the writer did not commit within 10 s');
  }
  t.equal(lifecycle.storedEventsAfter(0, {}).at(-1)?.id, settled, 'the replay read stops at lastEventId()');
  t.equal(lifecycle.storedLatestEvents({}).at(-1)?.id, settled, 'and so does the history');
});

t.test(
  'a damaged history row is left out of the history and the replay, with one warning naming it',
  async (t) => {
    // Before: each row's text was spliced into the answer as stored, so one damaged row (a disk
    // error, a hand edit) made the whole history invalid JSON and sent an SSE line no client parses.
    const warnings: { eventId?: number; msg: string }[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => warnings.push(JSON.parse(line)) });
    const { app, lifecycle, address, stateDir } = await startStreamServer(t, { logger });
    for (let step = 0; step < 4; step += 1) await lifecycle.record(progress(LISTED_MAC, step));
    const stored = lifecycle.eventsAfter(0);
    const [cut, blob, pretty] = stored.map((event) => event.id);
    if (cut === undefined || blob === undefined || pretty === undefined) throw new Error('fixture events');
    const damage = (id: number, text: unknown) =>
      editHistory(stateDir, 'UPDATE events SET event = ? WHERE id = ?', text, id);
    const cutShort = JSON.stringify(stored[0]).slice(0, 10);
    damage(cut, cutShort);
    damage(blob, Buffer.from('{"id":'));
    // A hand edit that left the event whole but over several lines: sent again, on one line.
    damage(pretty, JSON.stringify(stored[2], null, 2));
    const file = join(stateDir, DATABASE_FILE_NAME);
    const sound = stored.filter((event) => event.id !== cut && event.id !== blob);

    const history = await app.inject({ url: '/api/v1/events', headers: { accept: 'application/json' } });
    t.equal(history.statusCode, 200);
    t.same(
      JSON.parse(history.body),
      sound,
      'valid JSON: every event but the damaged ones, the pretty one whole',
    );

    const abort = new AbortController();
    t.teardown(() => abort.abort());
    const response = await fetch(`${address}/api/v1/events`, {
      headers: { accept: 'text/event-stream', 'last-event-id': '0' },
      signal: abort.signal,
    });
    const replayed = await streamText(response).until((text) => text.includes(`id: ${sound.at(-1)?.id}\n`));
    const data = [...replayed.matchAll(/^data: (.*)$/gm)].map((match) => JSON.parse(match[1] as string));
    t.same(data, sound, 'the replay: one data line of JSON per event, the damaged ones left out');
    t.same(lifecycle.latestEvents({ mac: LISTED_MAC }), sound, 'a machine’s events leave them out too');

    const ways = (id: number) =>
      `restore ${file} from a backup, or delete that row with sqlite3 ${file} "DELETE FROM events WHERE id = ${id}" while rackboot is stopped (that event is lost), or move the file with its -wal and -shm files away to start a new history; until then the API and the event streams leave it out`;
    t.match(
      warnings,
      [
        {
          eventId: cut,
          msg: `lifecycle: history ${file}: events row ${cut} is damaged (${parseError(cutShort)}); ${ways(cut)}`,
        },
        {
          eventId: blob,
          msg: `lifecycle: history ${file}: events row ${blob} is damaged (${parseError('{"id":')}); ${ways(blob)}`,
        },
      ],
      'each damaged row named once, with the way to delete it, however often it was read',
    );
    t.equal(warnings.length, 2, 'and nothing else');
  },
);

t.test('a damaged row left out of a replay batch does not end the catch-up early', async (t) => {
  const { app, lifecycle, address, stateDir } = await startStreamServer(t, {
    logger: pino({ level: 'silent' }),
  });
  await Promise.all(Array.from({ length: 600 }, (_, step) => lifecycle.record(progress(LISTED_MAC, step))));
  const stored = lifecycle.eventsAfter(0, { limit: 10_000 });
  const damaged = stored[10]?.id;
  editHistory(stateDir, 'UPDATE events SET event = ? WHERE id = ?', 'null', damaged);
  const sound = stored.filter((event) => event.id !== damaged).map((event) => event.id);

  const abort = new AbortController();
  t.teardown(() => abort.abort());
  const response = await fetch(`${address}/api/v1/events`, {
    headers: { accept: 'text/event-stream', 'last-event-id': '0' },
    signal: abort.signal,
  });
  // Before: the first batch of the replay came back one row short of 500 and was taken for the
  // last, so the 100 events after it were never sent.
  const replayed = await streamText(response).until((text) => text.includes(`id: ${sound.at(-1)}\n`), 3000);
  t.same(idsIn(replayed), sound, 'every sound event, once, in order');
  const page = await app.inject({
    url: '/api/v1/events?after=0&limit=500',
    headers: { accept: 'application/json' },
  });
  t.same(
    (JSON.parse(page.body) as MachineEvent[]).map((event) => event.id),
    sound.slice(0, 500),
    'a page of the history is full, so a client paging with ?after= does not stop there',
  );
});

/** JSON.parse's own words for `text`. */
function parseError(text: string): string {
  try {
    JSON.parse(text);
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error(`${text} parses`);
}

t.test('a history read that fails mid-replay closes that stream and leaves the server up', async (t) => {
  const stateDir = mkdtempSync(join(tmpdir(), 'rackboot-stream-'));
  const store = openLifecycle({ stateDir, retention: 100_000, logger: pino({ level: 'silent' }) });
  // A disk error cannot be had on demand here: the second replay batch's read fails as one would.
  let reads = 0;
  const failing = {
    ...store,
    storedEventsAfter: (id: number, filter?: Parameters<typeof store.storedEventsAfter>[1]) => {
      reads += 1;
      if (reads === 2) throw new Error('disk I/O error');
      return store.storedEventsAfter(id, filter);
    },
  };
  const logged: string[] = [];
  const app = Fastify({
    logger: { level: 'error', stream: { write: (line: string) => logged.push(line) } },
  });
  await app.register(eventsStream, { lifecycle: failing });
  const address = await app.listen({ port: 0, host: '127.0.0.1' });
  t.teardown(async () => {
    await app.close();
    await store.close();
    rmSync(stateDir, { recursive: true, force: true });
  });
  await Promise.all(Array.from({ length: 600 }, (_, step) => store.record(progress(LISTED_MAC, step))));

  // Before: the read threw inside the replay's setImmediate, an uncaught exception that ended the
  // process (here: the test runner).
  const response = await fetch(`${address}/api/v1/events`, {
    headers: { accept: 'text/event-stream', 'last-event-id': '0' },
  });
  const body = await response.text();
  t.equal(idsIn(body).length, 500, 'the first batch was sent, then the stream ended');
  t.equal(reads, 2, 'the replay read again after its first batch');
  t.match(logged.join(''), /event history could not be read: event stream closed/);
  const history = await app.inject({ url: '/api/v1/events', headers: { accept: 'application/json' } });
  t.equal(history.statusCode, 200, 'the server still answers');
});
