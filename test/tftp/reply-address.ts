import { createAssets, startTestServer } from './harness.js';
import { rrq, udpPeer } from './udp.js';

/**
 * Run inside a namespace whose loopback also holds 10.77.20.1 (the harness's server.address) and
 * 10.77.20.2 (test/tftp-robustness.test.ts sets it up): a server listening on the wildcard gets a
 * request for server.address from 10.77.20.2, and this prints the address its first reply came from.
 */
const assets = await createAssets();
const running = await startTestServer(assets.root, { listen: '0.0.0.0' });
const client = await udpPeer('10.77.20.2');
client.send(rrq(assets.files.small.name), running.port, '10.77.20.1');
const reply = await client.next(5000);
await client.close();
await running.server.close();
await assets.remove();
process.stdout.write(`${JSON.stringify({ from: reply.from.address })}\n`);
