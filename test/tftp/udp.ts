import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';

/** A raw UDP endpoint for tests that speak TFTP packet by packet. */
export interface UdpPeer {
  socket: Socket;
  send(bytes: Buffer, port: number, address?: string): void;
  /** The next datagram, or an error after `timeoutMs`. */
  next(timeoutMs?: number): Promise<{ message: Buffer; from: RemoteInfo }>;
  /** Every datagram arriving within `durationMs`. */
  collect(durationMs: number): Promise<Buffer[]>;
  /** Closes once the sends already issued have left (dgram sends complete asynchronously). */
  close(): Promise<void>;
}

export async function udpPeer(address = '127.0.0.1'): Promise<UdpPeer> {
  const socket = createSocket('udp4');
  const queue: { message: Buffer; from: RemoteInfo }[] = [];
  const waiters: ((item: { message: Buffer; from: RemoteInfo }) => void)[] = [];
  socket.on('message', (message, from) => {
    const waiter = waiters.shift();
    if (waiter) waiter({ message, from });
    else queue.push({ message, from });
  });
  await new Promise<void>((resolve) => socket.bind(0, address, resolve));
  let lastSend: Promise<void> = Promise.resolve();
  return {
    socket,
    send: (bytes, port, to = address) => {
      lastSend = new Promise((sent) => socket.send(bytes, port, to, () => sent()));
    },
    next: (timeoutMs = 3000) => {
      const queued = queue.shift();
      if (queued) return Promise.resolve(queued);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(onItem), 1);
          reject(new Error(`no datagram within ${timeoutMs} ms`));
        }, timeoutMs);
        const onItem = (item: { message: Buffer; from: RemoteInfo }) => {
          clearTimeout(timer);
          resolve(item);
        };
        waiters.push(onItem);
      });
    },
    collect: async (durationMs) => {
      await new Promise((resolve) => setTimeout(resolve, durationMs));
      return queue.splice(0).map((item) => item.message);
    },
    close: async () => {
      await lastSend;
      socket.close();
    },
  };
}

export function rrq(file: string, options: Record<string, string> = {}, opcode = 1, mode = 'octet'): Buffer {
  const fields = [file, mode, ...Object.entries(options).flat()];
  return Buffer.concat([
    Buffer.from([0, opcode]),
    Buffer.from(fields.map((field) => `${field}\0`).join(''), 'latin1'),
  ]);
}

export function ackPacket(block: number): Buffer {
  return Buffer.from([0, 4, (block >> 8) & 0xff, block & 0xff]);
}

export const opcodeOf = (message: Buffer) => message.readUInt16BE(0);
export const blockOf = (message: Buffer) => message.readUInt16BE(2);
export const errorText = (message: Buffer) => message.toString('latin1', 4, message.length - 1);
