import { createSocket } from 'node:dgram';
import { fetchFile } from '../../bench/tftp/client.js';
import type { MachineEventInput } from '../../src/lifecycle/events.js';
import { createAssets, startTestServer } from './harness.js';
import { ackPacket, rrq, udpPeer } from './udp.js';

/**
 * Datagrams from UDP source port 0, which no socket can bind: run inside a namespace whose NAT
 * rewrites the source port `argv[2]` to 0 (test/tftp-robustness.test.ts sets it up). Sends two
 * requests and an ACK to a live transfer's port from there, then fetches a file as a real client,
 * and prints what it saw as one JSON line. Its own process, because one outcome is a crash.
 */
const spoofedPort = Number(process.argv[2]);
const assets = await createAssets();
const running = await startTestServer(assets.root);
const spoofer = createSocket('udp4');
await new Promise<void>((resolve) => spoofer.bind(spoofedPort, '127.0.0.1', resolve));
const sendSpoofed = (message: Buffer, port: number) =>
  new Promise<void>((sent) => spoofer.send(message, port, '127.0.0.1', () => sent()));

await sendSpoofed(rrq(assets.files.small.name), running.port);
await sendSpoofed(rrq('missing.bin'), running.port);

const client = await udpPeer();
client.send(rrq(assets.files.small.name), running.port);
const data = await client.next();
await sendSpoofed(ackPacket(1), data.from.port);
await new Promise((resolve) => setTimeout(resolve, 200));
client.send(ackPacket(1), data.from.port);
const completions = (events: MachineEventInput[]) =>
  events.filter((event) => event.detail?.outcome === 'complete').length;
await running.waitForEvents((events) => completions(events) === 1);

const fetched = await fetchFile({ host: '127.0.0.1', port: running.port, file: assets.files.one.name });
await running.waitForEvents((events) => completions(events) === 2);
process.stdout.write(
  `${JSON.stringify({
    stats: running.server.stats(),
    outcomes: running.events.map((event) => event.detail?.outcome),
    fetchedIntact: fetched.content.equals(assets.files.one.content),
  })}\n`,
);
spoofer.close();
await client.close();
await running.server.close();
await assets.remove();
