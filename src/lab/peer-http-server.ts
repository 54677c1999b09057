import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { join, normalize } from 'node:path';

/**
 * The "static HTTP server" of the baseline: what a dnsmasq shop would put next to dnsmasq. Serves
 * files under a root (GET and HEAD, as UEFI HTTP Boot needs Content-Length on HEAD), answers every
 * POST with 204, and prints one JSON line per request so the benchmark can time the guest's fetches.
 * Usage: node peer-http-server.js ROOT ADDRESS PORT (lab.ts starts it inside the namespace)
 */
const [root, address, port] = process.argv.slice(2);
if (!root || !address || !port) {
  console.error('usage: peer-http-server ROOT ADDRESS PORT');
  process.exit(2);
}

const server = createServer((request, response) => {
  const path = decodeURIComponent(new URL(request.url ?? '/', 'http://lab').pathname);
  const report = (status: number) =>
    console.log(JSON.stringify({ at: Date.now(), method: request.method, path, status }));
  if (request.method === 'POST') {
    request.resume();
    request.on('end', () => {
      response.writeHead(204).end();
      report(204);
    });
    return;
  }
  const file = join(root, normalize(path).replace(/^(\.\.[/\\])+/, ''));
  stat(file).then(
    (info) => {
      if (!info.isFile()) throw new Error('not a file');
      response.writeHead(200, { 'Content-Length': info.size, 'Content-Type': 'application/octet-stream' });
      if (request.method === 'HEAD') {
        response.end();
        report(200);
        return;
      }
      createReadStream(file)
        .on('end', () => report(200))
        .pipe(response);
    },
    () => {
      response.writeHead(404).end();
      report(404);
    },
  );
});
server.on('error', (error) => {
  console.error(error.message);
  process.exit(1);
});
server.listen(Number(port), address, () => console.log(JSON.stringify({ listening: `${address}:${port}` })));
