/**
 * Ceilings for Node on this machine, answering every request with a fixed text of the given size
 * (the size of a rackboot machine script): `node` = a bare node:http handler (the issue's
 * reference), `fastify` = a bare fastify route (what the framework alone costs). Plain JavaScript,
 * so it runs without a loader, like the built rackboot. Prints its port.
 *   node bench/http/plain-server.mjs <bytes> [node|fastify]
 */
import { createServer } from 'node:http';
import Fastify from 'fastify';

const body = Buffer.alloc(Number(process.argv[2] ?? 1000), 'x');
const kind = process.argv[3] ?? 'node';
const announce = (port) => console.log(`listening ${port}`);

if (kind === 'fastify') {
  const app = Fastify();
  app.get('/*', (_request, reply) => reply.type('text/plain; charset=utf-8').send(body));
  await app.listen({ port: 0, host: '127.0.0.1' });
  announce(app.server.address().port);
} else {
  const server = createServer((_request, response) => {
    response.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'content-length': body.length });
    response.end(body);
  });
  server.listen(0, '127.0.0.1', () => announce(server.address().port));
}
