import { realpathSync, statSync } from 'node:fs';
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { resolve } from 'node:path';
import send, { type FileSendResult, type SendOptions, type SendResult } from '@fastify/send';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { escapesRoot } from '../path-inside.js';
import type { BootServiceContext } from './boot-service.js';
import {
  ChunkPool,
  type OpenedFile,
  openAsDecided,
  sendFileRange,
  transfersController,
} from './file-range.js';
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
  // A download in flight would hold the server's close (and so `rackboot serve`'s shutdown) until
  // it ends; it is cut instead, as the SSE streams are (firmware and installers retry), and the
  // close waits until the cut downloads are recorded.
  const closing = transfersController();
  const inFlight = new Set<Promise<void>>();
  const chunks = new ChunkPool();
  app.addHook('preClose', async () => {
    closing.abort();
    await Promise.allSettled(inFlight);
  });

  app.get<{ Params: { '*': string } }>('/assets/*', async (request, reply) => {
    const pathname = `/${request.params['*']}`;
    if (!insideRoot(root, pathname)) return reply.callNotFound();
    // RFC 9110 §13.1.5: a weak entity tag never matches If-Range, and ours are weak, so such a
    // request gets the whole file (send compared it as a substring and answered 206).
    if (request.headers['if-range']?.includes('W/')) delete request.raw.headers.range;
    const range = request.raw.headers.range;
    // send reads the Range header from the raw request.
    if (range !== undefined && SUFFIX_RANGE.test(range))
      request.raw.headers.range = wholeFileForLongSuffixes(range, resolve(root, `.${pathname}`));
    for (let attempt = 1; attempt <= DECISION_ATTEMPTS; attempt += 1) {
      // send reads only the method and the headers. Asked as a HEAD it decides everything a GET
      // gets (status, Range, conditions, headers) without opening the file: opening a FIFO blocks a
      // thread of libuv's pool for good, and four of them stop every file read in the process
      // (assets, TFTP, config reloads).
      const decided = await decide(request.raw, pathname);
      if (decided.type !== 'file')
        return decided.type === 'error' ? refuse(reply, decided.metadata.error) : reply.callNotFound();
      if (!decided.metadata.stat.isFile()) return reply.callNotFound();
      const body = request.method === 'GET' ? bodyRange(decided) : undefined;
      // HEAD, 304 Not Modified: no body.
      if (!body) return reply.code(decided.statusCode).headers(decided.headers).send(decided.stream);
      let file: Awaited<ReturnType<typeof openAsDecided>>;
      try {
        file = await openAsDecided(root, decided.metadata.path, decided.metadata.stat);
      } catch (error) {
        return refuse(reply, error as Error);
      }
      if (file === 'not-a-file' || file === 'outside-root') return reply.callNotFound();
      if (file === 'changed') continue;
      const delivered = deliver(request, reply, decided, file, body);
      inFlight.add(delivered);
      try {
        await delivered;
      } finally {
        inFlight.delete(delivered);
      }
      return undefined;
    }
    return reply
      .code(503)
      .header('retry-after', '1')
      .send({ error: 'asset-changing', message: `${pathname} is being replaced; try again` });
  });

  /**
   * send's answer to the request asked as a HEAD. RFC 9110 §13.1.5: an If-Range date lets the Range
   * apply only when it is exactly the Last-Modified, and send took any later date too. So a file
   * replaced by an older one (a rollback, copied with its mtime) resumed a download begun on the
   * newer one: the older file's tail after the newer one's head. That answer is decided again
   * without the Range: the whole file.
   */
  async function decide(raw: IncomingMessage, pathname: string): Promise<SendResult> {
    const decided = await send(asHead(raw), encodeURI(pathname), sendOptions);
    const ifRange = raw.headers['if-range'];
    if (
      decided.statusCode !== 206 ||
      typeof ifRange !== 'string' ||
      ifRange.includes('"') ||
      Date.parse(ifRange) === Date.parse(decided.headers['Last-Modified'] ?? '')
    )
      return decided;
    delete raw.headers.range;
    return send(asHead(raw), encodeURI(pathname), sendOptions);
  }

  /** Writes the file's bytes as decided, and records the download with what really left. */
  async function deliver(
    request: FastifyRequest<{ Params: { '*': string } }>,
    reply: FastifyReply,
    decided: FileSendResult,
    file: OpenedFile,
    body: { start: number; length: number },
  ): Promise<void> {
    // Read now: once the connection is gone its address is too.
    const ip = requesterIp(request);
    reply.code(decided.statusCode).headers(decided.headers).hijack();
    reply.countWhenClosed?.();
    const sent = await sendFileRange(reply.raw, {
      file,
      ...body,
      status: decided.statusCode,
      headers: reply.getHeaders() as OutgoingHttpHeaders,
      abort: closing.signal,
      chunks,
    }).catch((error: unknown) => {
      reply.log.warn({ err: error, file: decided.metadata.path }, 'asset download failed');
      return { outcome: 'read-error' as const, bytesSent: 0 };
    });
    if (sent.outcome === 'file-shortened' || sent.outcome === 'file-changed')
      reply.log.warn(
        { file: decided.metadata.path, outcome: sent.outcome },
        'asset written while it was sent; connection cut (the client gets a short body, and retries)',
      );
    // A body cut short must not look complete, and a connection left open would hold the server's close.
    if (sent.outcome !== 'complete') reply.raw.destroy();
    context.record(request, {
      mac: context.machineAt(ip),
      ip,
      source: 'http',
      type: 'asset-download',
      detail: {
        file: decodeURIComponent(request.url.slice('/assets/'.length).split('?')[0] ?? ''),
        status: decided.statusCode,
        bytes: sent.bytesSent,
        outcome: sent.outcome,
        range: request.headers.range,
        userAgent: request.headers['user-agent'],
      },
    });
  }
}

/** Tries at deciding and opening a file that keeps being replaced under the request, then 503. */
const DECISION_ATTEMPTS = 3;

/** The request as send sees it, asked as a HEAD (send reads nothing else of it). */
function asHead(raw: IncomingMessage): IncomingMessage {
  return { method: 'HEAD', headers: raw.headers } as IncomingMessage;
}

/** send answers a dotfile with a 404 before looking for it; a missing file is ENOENT: both are 404s. */
function refuse(reply: FastifyReply, error: Error): unknown {
  const { status, code } = error as NodeJS.ErrnoException & { status?: number };
  return status === 404 || code === 'ENOENT' ? reply.callNotFound() : reply.send(error);
}

/** The file bytes a 200 or 206 answer carries (206: its Content-Range); undefined for none. */
function bodyRange(decided: {
  statusCode: number;
  headers: Record<string, string>;
}): { start: number; length: number } | undefined {
  const length = Number(decided.headers['Content-Length']);
  if (decided.statusCode === 200) return { start: 0, length };
  const start = /^bytes (\d+)-/.exec(decided.headers['Content-Range'] ?? '')?.[1];
  return decided.statusCode === 206 && start !== undefined ? { start: Number(start), length } : undefined;
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
 * False when the file resolves (through symlinks) outside `root`. A missing file is left to send's
 * 404; anything but a regular file is refused on send's own stat (see the route).
 */
function insideRoot(root: string, pathname: string): boolean {
  let real: string;
  try {
    real = realpathSync(resolve(root, `.${pathname.startsWith('/') ? '' : '/'}${pathname}`));
  } catch {
    return true;
  }
  return !escapesRoot(realpathSync(root), real);
}
