import { createSocket, type Socket } from 'node:dgram';
import { lookup as dnsLookup } from 'node:dns';
import { isIPv4 } from 'node:net';

/**
 * An IPv4 UDP socket that sends to address literals without a resolver round: dgram passes every
 * send's address through `lookup`, and the default one (dns.lookup) answers a literal only on the
 * next tick. Every destination here is a literal (a received packet's source, giaddr, ciaddr, the
 * broadcast address), so a TFTP transfer would pay that detour once per DATA packet.
 */
export function createUdp4Socket(options: { reuseAddr?: boolean } = {}): Socket {
  return createSocket({
    type: 'udp4',
    reuseAddr: options.reuseAddr ?? false,
    lookup: (address, family, callback) => {
      if (isIPv4(address)) callback(null, address, 4);
      else dnsLookup(address, family, callback);
    },
  });
}

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

/**
 * Sends, returning the error instead of throwing it. dgram's `send` throws synchronously for
 * destination port 0 (a datagram's source port is whatever its sender wrote, so a spoofed packet can
 * ask for it) and on a closed socket (a reply finishing after shutdown began); thrown from a socket
 * or promise callback, either would end the whole process. A send that fails later, in the kernel,
 * is still emitted as the socket's 'error' event. `port` and `address` are left out on a connected socket.
 */
export function trySend(
  socket: Socket,
  message: Buffer | Buffer[],
  port?: number,
  address?: string,
): Error | undefined {
  try {
    if (port === undefined) socket.send(message);
    else socket.send(message, port, address);
    return undefined;
  } catch (error) {
    return error as Error;
  }
}
