import type { RemoteInfo } from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { createUdp4Socket } from '../../src/udp.js';
import { ackPacket, blockOf, errorText, opcodeOf, rrq } from '../../test/tftp/udp.js';

/**
 * A small TFTP read client for the benchmark (and the tests that need windowsize, which curl,
 * tftp-hpa and atftp do not offer): RRQ with blksize/windowsize/tsize, ACK per window (RFC 7440),
 * block numbers wrapping to 0 after 65535, and its own resend of the last ACK on silence.
 */

export interface FetchOptions {
  host: string;
  port: number;
  file: string;
  blksize?: number;
  windowsize?: number;
  tsize?: boolean;
  /** Client-side wait before resending its last packet. */
  resendAfterMs?: number;
  /** Whole-transfer bound. */
  deadlineMs?: number;
}

export interface FetchResult {
  content: Buffer;
  durationMs: number;
  /** Options the server acknowledged (empty without OACK). */
  oack: Record<string, string>;
  /** DATA packets that arrived twice or out of order. */
  unexpectedData: number;
}

export function fetchFile(options: FetchOptions): Promise<FetchResult> {
  const socket = createUdp4Socket();
  const startedAt = performance.now();
  const requestOptions: Record<string, string> = {};
  if (options.blksize !== undefined) requestOptions.blksize = String(options.blksize);
  if (options.windowsize !== undefined) requestOptions.windowsize = String(options.windowsize);
  if (options.tsize) requestOptions.tsize = '0';
  const request = rrq(options.file, requestOptions);

  return new Promise<FetchResult>((resolve, reject) => {
    const chunks: Buffer[] = [];
    const oack: Record<string, string> = {};
    let server: RemoteInfo | undefined;
    let blksize = 512;
    let windowsize = 1;
    let received = 0; // absolute number of the last in-order block
    let inWindow = 0;
    let unexpectedData = 0;
    let lastSent: Buffer = request;
    let done = false;
    let silence: NodeJS.Timeout | undefined;
    const overall = setTimeout(
      () => finish(new Error(`${options.file}: no completion within ${options.deadlineMs} ms`)),
      options.deadlineMs ?? 60_000,
    );

    const resendAfterMs = options.resendAfterMs ?? 1000;
    let lastActivityAt = 0;
    // One timer, moved on only when it fires early: a clearTimeout/setTimeout pair per DATA packet
    // would make this load client, not the server under test, the bench's bottleneck.
    const onSilence = () => {
      silence = undefined;
      if (done) return;
      const quietMs = performance.now() - lastActivityAt;
      if (quietMs >= resendAfterMs) send(lastSent);
      else silence = setTimeout(onSilence, resendAfterMs - quietMs);
    };
    const noteActivity = () => {
      lastActivityAt = performance.now();
      silence ??= setTimeout(onSilence, resendAfterMs);
    };
    const send = (packet: Buffer, afterSent?: () => void) => {
      lastSent = packet;
      socket.send(packet, server?.port ?? options.port, server?.address ?? options.host, afterSent);
      noteActivity();
    };
    const ack = (block: number) => send(ackPacket(block));
    const finish = (error?: Error, finalPacket?: Buffer) => {
      if (done) return;
      done = true;
      clearTimeout(silence);
      clearTimeout(overall);
      // dgram sends are asynchronous: the socket closes once the final ACK has left.
      if (finalPacket) send(finalPacket, () => socket.close());
      else socket.close();
      if (error) reject(error);
      else
        resolve({
          content: Buffer.concat(chunks),
          durationMs: performance.now() - startedAt,
          oack,
          unexpectedData,
        });
    };

    socket.on('error', (error) => finish(error));
    socket.on('message', (message, from) => {
      if (server === undefined) server = from;
      else if (from.port !== server.port || from.address !== server.address) return;
      if (message.length < 4) return;
      const opcode = opcodeOf(message);
      if (opcode === 5) {
        finish(new Error(`${options.file}: server error ${message.readUInt16BE(2)} ${errorText(message)}`));
        return;
      }
      if (opcode === 6) {
        if (received > 0) return;
        const fields = message.toString('latin1', 2, message.length - 1).split('\0');
        for (let index = 0; index + 1 < fields.length; index += 2)
          oack[fields[index] ?? ''] = fields[index + 1] ?? '';
        blksize = Number(oack.blksize ?? 512);
        windowsize = Number(oack.windowsize ?? 1);
        ack(0);
        return;
      }
      if (opcode !== 3) return;
      const wireBlock = blockOf(message);
      if (wireBlock !== ((received + 1) & 0xffff)) {
        // RFC 7440 §4: on a gap, acknowledge the last block received in order.
        unexpectedData += 1;
        inWindow = 0;
        ack(received);
        return;
      }
      received += 1;
      inWindow += 1;
      const payload = message.subarray(4);
      chunks.push(payload);
      if (payload.length < blksize) {
        finish(undefined, ackPacket(received));
        return;
      }
      if (inWindow >= windowsize) {
        inWindow = 0;
        ack(received);
      } else {
        noteActivity();
      }
    });
    socket.bind(0, () => send(request));
  });
}
