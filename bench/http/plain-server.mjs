/**
 * The ceiling for Node on this machine: a bare node:http handler answering every request with a
 * fixed text of the given size (the size of a rackboot machine script). Plain JavaScript, so it
 * runs without a loader, like the built rackboot. Prints its port.
 *   node bench/http/plain-server.mjs <bytes>
 */
import { createServer } from 'node:http';

const body = Buffer.alloc(Number(process.argv[2] ?? 1000), 'x');
const server = createServer((_request, response) => {
  response.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'content-length': body.length });
  response.end(body);
});
server.listen(0, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
