import { realpathSync, statSync } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import type { OutgoingHttpHeaders } from 'node:http';
import { resolve } from 'node:path';
import send, { type SendOptions } from '@fastify/send';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { escapesRoot } from '../path-inside.js';
import type { BootServiceContext } from './boot-service.js';
import { sendFileRange } from './file-range.js';
import { requesterIp } from './machine-auth.js';

/**
 * `GET|HEAD /assets/…`: files under `server.assets`. @fastify/send (the engine of @fastify/static)
 * decides the answer: Range and HEAD with Content-Length (UEFI HTTP Boot sends HEAD first and needs
 * the size), conditional requests, no directory listing, no index files, no dotfiles (partial
 * downloads), and no way out of the root: `..` is refused by send, and symlinks leading outside and
 * anything but regular files are refused here. The body of a GET is written by `sendFileRange`
 * instead of send's read stream (see there why). The Host header is never looked at (UEFI HTTP Boot
 * sends it without the port).
 */
export async function assetsRoutes(app: FastifyInstance, context: BootServiceContext): Promise<void> {
  const root = context.deps.config().server.assets;
  const sendOptions: SendOptions = {
    root,
    index: false,
    dotfiles: 'ignore',
    acceptRanges: true,
    cacheControl: false,
  };
  app.get<{ Params: { '*': string } }>('/assets/*', async (request, reply) => {
    const pathname = `/${request.params['*']}`;
    if (!servable(root, pathname)) return reply.callNotFound();
    // RFC 9110 §13.1.5: a weak entity tag never matches If-Range, and ours are weak, so such a
    // request gets the whole file (send compared it as a substring and answered 206).
    if (request.headers['if-range']?.includes('W/')) delete request.raw.headers.range;
    const range = request.raw.headers.range;
    // send reads the Range header from the raw request.
    if (range !== undefined && SUFFIX_RANGE.test(range))
      request.raw.headers.range = wholeFileForLongSuffixes(range, resolve(root, `.${pathname}`));
    return answer(reply, await send(request.raw, encodeURI(pathname), sendOptions));
  });

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

/** Replies with send's decision; a GET of file bytes is written by `sendFileRange`. */
async function answer(reply: FastifyReply, decided: Awaited<ReturnType<typeof send>>): Promise<unknown> {
  if (decided.type !== 'file') {
    decided.stream.destroy();
    return decided.type === 'error' ? refuse(reply, decided.metadata.error) : reply.callNotFound();
  }
  reply.code(decided.statusCode).headers(decided.headers);
  const range = bodyRange(reply, decided.headers);
  // HEAD, 304 Not Modified: send's stream is empty.
  if (!range) return reply.send(decided.stream);
  decided.stream.destroy();
  const path = decided.metadata.path;
  let file: FileHandle;
  try {
    file = await open(path, 'r');
  } catch (error) {
    return refuse(reply, error as Error);
  }
  reply.hijack();
  const response = reply.raw;
  response.writeHead(decided.statusCode, reply.getHeaders() as OutgoingHttpHeaders);
  try {
    await sendFileRange(response, file, path, range.start, range.length);
  } catch (error) {
    reply.log.warn({ err: error, file: path }, 'asset download cut short');
    response.destroy();
  }
  return undefined;
}

/** send answers a dotfile with a 404 before looking for it; a missing file is ENOENT: both are 404s. */
function refuse(reply: FastifyReply, error: Error): unknown {
  const { status, code } = error as NodeJS.ErrnoException & { status?: number };
  return status === 404 || code === 'ENOENT' ? reply.callNotFound() : reply.send(error);
}

/** The file bytes a GET answer carries (200: all of them; 206: its Content-Range); undefined for none. */
function bodyRange(
  reply: FastifyReply,
  headers: Record<string, string>,
): { start: number; length: number } | undefined {
  if (reply.request.method !== 'GET') return undefined;
  const length = Number(headers['Content-Length']);
  if (reply.statusCode === 200) return { start: 0, length };
  const start = /^bytes (\d+)-/.exec(headers['Content-Range'] ?? '')?.[1];
  return reply.statusCode === 206 && start !== undefined ? { start: Number(start), length } : undefined;
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
