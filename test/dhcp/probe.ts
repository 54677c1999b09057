/**
 * A scriptable DHCP peer for socket tests, run inside the client namespace:
 *   ip netns exec NS node --import tsx test/dhcp/probe.ts ADDRESS:PORT
 * Binds the address (0.0.0.0:68 for a client, <relay address>:67 for a relay), prints `READY`, sends
 * each stdin line `{"to","port","hex"}` and prints every datagram received as `{"from","port","hex"}`.
 */
import { createSocket } from 'node:dgram';
import { createInterface } from 'node:readline';

const [address = '0.0.0.0', port = '68'] = (process.argv[2] ?? '').split(':');
const socket = createSocket({ type: 'udp4', reuseAddr: true });
socket.on('error', (error) => process.stderr.write(`probe socket error: ${error.message}\n`));
socket.on('message', (bytes, peer) => {
  process.stdout.write(
    `${JSON.stringify({ from: peer.address, port: peer.port, hex: bytes.toString('hex') })}\n`,
  );
});
socket.bind({ address, port: Number(port) }, () => {
  socket.setBroadcast(true);
  process.stdout.write('READY\n');
});
createInterface({ input: process.stdin }).on('line', (line) => {
  const { to, port: toPort, hex } = JSON.parse(line) as { to: string; port: number; hex: string };
  socket.send(Buffer.from(hex, 'hex'), toPort, to);
});
process.stdin.on('end', () => socket.close());
