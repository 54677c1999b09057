import { realpathSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import fastifyStatic, { type SendOptions } from '@fastify/static';
import type { FastifyInstance } from 'fastify';
import { escapesRoot } from '../path-inside.js';
import type { BootServiceContext } from './boot-service.js';
import { requesterIp } from './machine-auth.js';

/**
 * Bytes read from disk per chunk. send's default (64 KiB) moved 64 MiB over loopback at about a
 * quarter of the speed of 1 MiB chunks on this machine (243 MB/s vs 1.06 GB/s, bench/http); bigger
 * chunks gained nothing more.
 */
const READ_AHEAD_BYTES = 1024 * 1024;
/** @fastify/send takes highWaterMark; @fastify/static's SendOptions type does not list it. */
const SEND_OPTIONS: SendOptions & { highWaterMark: number } = { highWaterMark: READ_AHEAD_BYTES };

/**
 * `GET|HEAD /assets/…`: files under `server.assets` via @fastify/static (send): streamed, Range and
 * HEAD with Content-Length (UEFI HTTP Boot sends HEAD first and needs the size), no directory
 * listing, no index files, no dotfiles (partial downloads), and no way out of the root: `..` is
 * refused by send, and symlinks leading outside and anything but regular files are refused here. The Host header is never looked
 * at (UEFI HTTP Boot sends it without the port).
 */
export async function assetsRoutes(app: FastifyInstance, context: BootServiceContext): Promise<void> {
  const root = context.deps.config().server.assets;
  // serve: false: @fastify/static only decorates reply.sendFile; the route below adds the
  // read-ahead option its own route does not pass on.
  await app.register(fastifyStatic, {
    root,
    serve: false,
    index: false,
    list: false,
    dotfiles: 'ignore',
    acceptRanges: true,
    cacheControl: false,
  });
  app.get<{ Params: { '*': string } }>(
    '/assets/*',
    {
      errorHandler(error, request, reply) {
        // A client that hangs up mid-download (iPXE retrying, a firmware timeout) is not an error.
        if ((error as NodeJS.ErrnoException).code === 'ERR_STREAM_PREMATURE_CLOSE') {
          request.raw.destroy();
          return;
        }
        reply.send(error);
      },
    },
    (request, reply) => {
      const pathname = `/${request.params['*']}`;
      if (!servable(root, pathname)) return reply.callNotFound();
      // RFC 9110 §13.1.5: a weak entity tag never matches If-Range, and ours are weak, so such a
      // request gets the whole file (send compared it as a substring and answered 206).
      if (request.headers['if-range']?.includes('W/')) delete request.raw.headers.range;
      const range = request.raw.headers.range;
      // send reads the Range header from the raw request.
      if (range !== undefined && SUFFIX_RANGE.test(range))
        request.raw.headers.range = wholeFileForLongSuffixes(range, resolve(root, `.${pathname}`));
      return reply.sendFile(pathname, root, SEND_OPTIONS);
    },
  );

  app.addHook('onResponse', async (request, reply) => {
    if (request.method !== 'GET' || (reply.statusCode !== 200 && reply.statusCode !== 206)) return;
    const ip = requesterIp(request);
    context.record(request, {
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

/** A Range header with a suffix range (`bytes=-N`, the last N bytes) anywhere in its list. */
const SUFFIX_RANGE = /^\s*bytes=(.*,)?\s*-\d/;

/**
 * RFC 9110 §14.1.1: a suffix range longer than the file means the whole file. send's parser drops
 * such a range (416 for `bytes=-1000` on a 24-byte file), so it is rewritten as `0-` first.
 */
function wholeFileForLongSuffixes(range: string, file: string): string {
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    return range;
  }
  if (size === 0) return range;
  return range.replace(/([=,]\s*)-(\d+)(?=\s*(,|$))/g, (whole, before: string, length: string) =>
    Number(length) > size ? `${before}0-` : whole,
  );
}

/**
 * False when the file resolves (through symlinks) outside `root`, or is not a regular file: opening
 * a FIFO blocks a thread of libuv's pool for good, and four of them stop every file read in the
 * process (assets, TFTP, config reloads). A missing file is left to send's 404.
 */
function servable(root: string, pathname: string): boolean {
  let real: string;
  let regular: boolean;
  try {
    real = realpathSync(resolve(root, `.${pathname.startsWith('/') ? '' : '/'}${pathname}`));
    regular = statSync(real).isFile();
  } catch {
    return true;
  }
  return regular && !escapesRoot(realpathSync(root), real);
}
