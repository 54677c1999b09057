import { createServer as createHttpServer, type RequestListener } from 'node:http';
import { createServer } from 'node:net';
import type { Test } from 'tap';

/** A TCP port free on 127.0.0.1 a moment ago, for a server the test starts as another process. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (typeof address !== 'object' || address === null) throw new Error('no port');
  return address.port;
}

/** An HTTP server on loopback answering with `handler`, closed at teardown; resolves with its URL. */
export async function fakeHttpServer(t: Test, handler: RequestListener): Promise<string> {
  const server = createHttpServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(resolve));
  });
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('no port');
  return `http://127.0.0.1:${address.port}`;
}
