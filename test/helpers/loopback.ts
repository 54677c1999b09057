import { createSocket } from 'node:dgram';
import { createServer as createHttpServer, type RequestListener } from 'node:http';
import { createServer, Server } from 'node:net';
import type { Test } from 'tap';

/**
 * A port free on 127.0.0.1 for both TCP and UDP a moment ago, for a server the test starts as another
 * process (HTTP on TCP, TFTP on UDP). Picked below the kernel's ephemeral range (32768–60999 here):
 * a port from listen(0) is one that any socket of a test running beside this one, a TFTP transfer's
 * for one, could be given before the server binds it.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if ((await bindsOnLoopback('tcp', port)) && (await bindsOnLoopback('udp', port))) return port;
  }
  throw new Error('no port free for TCP and UDP in 20000–31999 after 50 tries');
}

async function bindsOnLoopback(kind: 'tcp' | 'udp', port: number): Promise<boolean> {
  const socket = kind === 'tcp' ? createServer() : createSocket('udp4');
  const bound = await new Promise<boolean>((resolve) => {
    socket.once('error', () => resolve(false));
    if (socket instanceof Server) socket.listen(port, '127.0.0.1', () => resolve(true));
    else socket.bind(port, '127.0.0.1', () => resolve(true));
  });
  if (bound) await new Promise((resolve) => socket.close(() => resolve(undefined)));
  return bound;
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
