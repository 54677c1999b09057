import { realpathSync } from 'node:fs';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';
import type { BootServiceContext } from './boot-service.js';
import { requesterIp } from './machine-auth.js';

/**
 * `GET|HEAD /assets/…`: files under `server.assets` via @fastify/static (send): streamed, Range and
 * HEAD with Content-Length (UEFI HTTP Boot sends HEAD first and needs the size), no directory
 * listing, no index files, no dotfiles (partial downloads), and no way out of the root: `..` is
 * refused by send and symlinks leading outside are refused here. The Host header is never looked
 * at (UEFI HTTP Boot sends it without the port).
 */
export async function assetsRoutes(app: FastifyInstance, context: BootServiceContext): Promise<void> {
  const root = context.deps.config().server.assets;
  await app.register(fastifyStatic, {
    root,
    prefix: '/assets/',
    decorateReply: false,
    index: false,
    list: false,
    dotfiles: 'ignore',
    acceptRanges: true,
    cacheControl: false,
    allowedPath: (pathname) => staysInside(root, pathname),
  });

  app.addHook('onResponse', async (request, reply) => {
    if (request.method !== 'GET' || (reply.statusCode !== 200 && reply.statusCode !== 206)) return;
    const ip = requesterIp(request);
    context.record({
      mac: context.machineAt(ip),
      ip,
      source: 'http',
      type: 'asset-download',
      detail: {
        file: decodeURIComponent(request.url.slice('/assets/'.length).split('?')[0] ?? ''),
        status: reply.statusCode,
        bytes: Number(reply.getHeader('content-length') ?? 0),
        range: request.headers.range,
        userAgent: request.headers['user-agent'],
      },
    });
  });
}

/** True unless the file resolves (through symlinks) outside `root`; a missing file is left to send's 404. */
function staysInside(root: string, pathname: string): boolean {
  let real: string;
  try {
    real = realpathSync(resolve(root, `.${pathname.startsWith('/') ? '' : '/'}${pathname}`));
  } catch {
    return true;
  }
  const within = relative(realpathSync(root), real);
  return (
    within === '' || !(within === '..' || within.startsWith(`..${sep}`) || resolve('/', within) === within)
  );
}
