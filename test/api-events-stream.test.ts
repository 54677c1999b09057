import t from 'tap';
import { followEvents, type ServerTarget } from '../src/cli/client.js';
import type { MachineEvent, MachineEventInput } from '../src/lifecycle/events.js';
import { LISTED_MAC, mac, startLifecycleApp, UNLISTED_MAC } from './lifecycle-fixture.js';

const progress = (target = LISTED_MAC, step = 0): MachineEventInput => ({
  mac: target,
  source: 'dhcp',
  type: 'dhcp-offer',
  detail: { firmware: 'ipxe', step },
});

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
    await watcher.until(lifecycle.lastEventId());

    // Live, then the connection drops; 1,200 events happen while it is away (more than one replay batch).
    await lifecycle.record(progress(UNLISTED_MAC, 3));
    await watcher.until(lifecycle.lastEventId());
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
    await watcher.until(lifecycle.lastEventId());

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
    url: '/api/v1/events?after=1000000',
    headers: { accept: 'application/json' },
  });
  t.same(none.json(), [], 'an empty history is an empty JSON array');
  const after = await app.inject({ url: '/api/v1/events?after=4', headers: { accept: 'application/json' } });
  const pagedIds = (after.json() as MachineEvent[]).map((event) => event.id);
  t.ok(pagedIds.length > 0, 'the store holds events above id 4');
  t.same(
    pagedIds,
    lifecycle.eventsAfter(4).map((event) => event.id),
    'after= pages forward: every stored event above id 4, none below',
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
  const newest = lifecycle.lastEventId();
  const fromOldHistory = newest + 1000;
  const abort = new AbortController();
  t.teardown(() => abort.abort());
  const response = await fetch(`${address}/api/v1/events`, {
    headers: { accept: 'text/event-stream', 'last-event-id': String(fromOldHistory) },
    signal: abort.signal,
  });
  const stream = streamText(response);
  const replayed = await stream.until((text) => idsIn(text).length >= stored.length);
  t.match(
    replayed,
    `: history reset: event ${fromOldHistory} is beyond the newest stored event ${newest}; replaying from the first\n\n`,
    'a comment (ignored by EventSource) says why old ids come again',
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
