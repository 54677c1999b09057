import type { RequestListener } from 'node:http';
import { createServer as createTcpServer, type Socket } from 'node:net';
import t, { type Test } from 'tap';
import {
  ApiError,
  followEvents,
  getJson,
  MACHINE_LIST,
  resolveServer,
  type ServerTarget,
} from '../src/cli/client.js';
import { fakeHttpServer } from './helpers/loopback.js';

/** A fake server as the client's target. */
const serve = async (t: Test, handler: RequestListener): Promise<ServerTarget> => ({
  url: await fakeHttpServer(t, handler),
  token: undefined,
});

/** client.ts's REQUEST_TIMEOUT_MS, as its message says it. */
const REQUEST_TIMEOUT_MS = 10_000;

t.test('a JSON call to a server that accepts and never answers gives up with one line', async (t) => {
  // What a `kill -STOP`ped serve looks like: the kernel accepts, nobody answers.
  const sockets: Socket[] = [];
  const server = createTcpServer((socket) => sockets.push(socket));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise((resolve) => server.close(resolve));
  });
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('no port');
  const url = `http://127.0.0.1:${address.port}`;
  const started = performance.now();
  const failure = await Promise.race([
    getJson({ url, token: undefined }, '/api/v1/machines', MACHINE_LIST).then(
      () => 'answered',
      (error: Error) => error,
    ),
    new Promise((resolve) => setTimeout(resolve, REQUEST_TIMEOUT_MS + 5000, 'still waiting')),
  ]);
  t.ok(failure instanceof ApiError, String(failure));
  t.equal((failure as Error).message, `${url}/api/v1/machines did not answer within 10 s`);
  t.ok(performance.now() - started >= REQUEST_TIMEOUT_MS - 100, 'after the timeout, not before');
});

t.test('logs -f backs off while the server fails and says so once per reason', async (t) => {
  const attempts: number[] = [];
  const target = await serve(t, (_request, response) => {
    attempts.push(performance.now());
    response.writeHead(502, { 'content-type': 'text/plain' }).end('bad gateway');
  });
  const stop = new AbortController();
  const told: string[] = [];
  const events = followEvents(target, {
    signal: stop.signal,
    reconnectDelayMs: 50,
    onDisconnect: (reason) => told.push(reason),
  });
  const consumed = (async () => {
    for await (const _event of events) t.fail('no event expected');
  })();
  // Pauses of 50, 100, 200, 400 ms: the fifth attempt comes 750 ms after the first.
  while (attempts.length < 5) await new Promise((resolve) => setTimeout(resolve, 20));
  stop.abort();
  await consumed;
  const pauses = attempts.slice(1).map((at, index) => at - (attempts[index] ?? 0));
  t.ok(
    pauses.every((pause, index) => pause >= 50 * 2 ** index - 10),
    `each pause doubles: ${pauses.map(Math.round).join(', ')} ms`,
  );
  t.same(told, [`${target.url}: HTTP 502`], 'one line for an outage, not one per attempt');
});

t.test('logs -f refuses an answer that is not an event stream', async (t) => {
  // A file server, or a JSON API that is not rackboot's, answering 200.
  const target = await serve(t, (_request, response) => {
    response.writeHead(200, { 'content-type': 'application/json' }).end('[]');
  });
  const stop = new AbortController();
  t.teardown(() => stop.abort());
  const disconnects: string[] = [];
  const outcome = await Promise.race([
    (async () => {
      for await (const _event of followEvents(target, {
        signal: stop.signal,
        reconnectDelayMs: 10,
        onDisconnect: (reason) => disconnects.push(reason),
      }))
        t.fail('no event expected');
      return 'ended';
    })().catch((error: Error) => error),
    new Promise((resolve) => setTimeout(resolve, 2000, 'still reconnecting')),
  ]);
  t.ok(outcome instanceof ApiError, `an error, not ${String(outcome)}`);
  t.equal(
    (outcome as Error).message,
    `${target.url}/api/v1/events answered HTTP 200 with application/json, not an event stream: is --url a rackboot server?`,
  );
  t.same(disconnects, [], 'no reconnecting');
});

t.test("logs -f refuses an event stream of another application's messages", async (t) => {
  // Not rackboot's events: they were "Cannot read properties of undefined (reading 'padEnd')", or a
  // JSON parse error repeated at every reconnect.
  for (const [name, data, what] of [
    ['not JSON', 'data: hello', 'an event'],
    ['JSON of another shape', 'data: {"a":1}', 'an event'],
    ['null', 'data: null', 'an event'],
    ['a history-gap of another shape', 'event: history-gap\ndata: {}', 'a history gap'],
  ] as const) {
    const target = await serve(t, (_request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' }).write(`${data}\n\n`);
    });
    const stop = new AbortController();
    t.teardown(() => stop.abort());
    const outcome = await Promise.race([
      (async () => {
        for await (const _event of followEvents(target, {
          signal: stop.signal,
          reconnectDelayMs: 10,
          onHistoryGap: () => t.fail('no gap expected'),
        }))
          t.fail('no event expected');
        return 'ended';
      })().catch((error: Error) => error),
      new Promise((resolve) => setTimeout(resolve, 2000, 'still reconnecting')),
    ]);
    t.equal(
      (outcome as Error).message,
      `${target.url}/api/v1/events sent a message that is not the API's (${what} expected): is --url a rackboot server?`,
      name,
    );
    t.ok(outcome instanceof ApiError, `${name}: ends, as retrying would not change it`);
  }
});

t.test('logs -f reopens a stream that went silent, resuming after the last event', async (t) => {
  const lastEventIds: (string | undefined)[] = [];
  const target = await serve(t, (request, response) => {
    const header = request.headers['last-event-id'];
    lastEventIds.push(typeof header === 'string' ? header : undefined);
    response.writeHead(200, { 'content-type': 'text/event-stream' });
    // The first connection sends one event and then nothing, not even a keep-alive.
    if (lastEventIds.length === 1)
      response.write('id: 7\ndata: {"id":7,"source":"dhcp","type":"dhcp-ack"}\n\n');
  });
  const stop = new AbortController();
  t.teardown(() => stop.abort());
  const told: string[] = [];
  const events = followEvents(target, {
    signal: stop.signal,
    after: 6,
    reconnectDelayMs: 10,
    idleTimeoutMs: 300,
    onDisconnect: (reason) => told.push(reason),
  });
  const received: unknown[] = [];
  const consumed = (async () => {
    for await (const event of events) received.push(event);
  })();
  const deadline = performance.now() + 5000;
  while (lastEventIds.length < 2 && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  stop.abort();
  await consumed;
  t.same(received, [{ id: 7, source: 'dhcp', type: 'dhcp-ack' }]);
  t.same(lastEventIds.slice(0, 2), ['6', '7'], 'reconnected with the last id it got');
  t.same(told, [`${target.url}/api/v1/events: nothing received for 0.3 s`]);
});

t.test('logs -f says why a full server refused the stream, in its words', async (t) => {
  // What serve answers a ninth watcher from one address (events-stream.ts), e.g. through an SSH tunnel.
  const refusal = {
    error: 'too many event streams',
    message: '8 streams are open, 8 of them from 127.0.0.1 (at most 32, 8 per client); retry later',
  };
  const target = await serve(t, (_request, response) => {
    response.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify(refusal));
  });
  const stop = new AbortController();
  t.teardown(() => stop.abort());
  const told: string[] = [];
  const events = followEvents(target, {
    signal: stop.signal,
    reconnectDelayMs: 10,
    onDisconnect: (reason) => {
      told.push(reason);
      stop.abort();
    },
  });
  for await (const _event of events) t.fail('no event expected');
  t.same(told, [`${target.url}: HTTP 503: ${refusal.error}: ${refusal.message}`]);
});

t.test('a --url that is not an http(s) URL with a host is refused before any request', async (t) => {
  // Before, `http://` failed at the request as "getaddrinfo ENOTFOUND api" (the API path read as its host).
  for (const url of ['http://', 'bogus', '10.77.0.1:8080', 'localhost:8080', 'ftp://10.77.0.1']) {
    await t.rejects(
      resolveServer({ url, config: '/nonexistent/rackboot.yaml' }),
      { message: `--url "${url}" is not an http(s) URL of a server; name it as http://ADDRESS:PORT` },
      url,
    );
  }
  const target = await resolveServer({ url: 'http://10.77.0.1:8080/', config: '/nonexistent/rackboot.yaml' });
  t.equal(target.url, 'http://10.77.0.1:8080', 'a URL with a host passes, without its trailing slash');
});
