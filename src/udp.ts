import type { Socket } from 'node:dgram';

/** Binds a UDP socket; a bind failure rejects, and closing the socket is left to its owner. */
export function bindUdp(socket: Socket, address: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind({ address, port }, () => {
      socket.off('error', reject);
      resolve();
    });
  });
}
