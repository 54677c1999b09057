/**
 * The DHCP server with its state on a tmpfs that fills up, in namespaces of its own:
 *   unshare --mount --net sh -c 'mount -t tmpfs -o size=64k tmpfs DIR && exec node --import tsx test/dhcp/full-disk-server.ts DIR'
 * The server listens on a veth link (10.77.255.1/24, nothing on its other end). Once it is up the file
 * system is filled, and 60 clients REQUEST an address in three rounds; the space is freed and they
 * REQUEST again; then both once more. Prints `RESULT {"full","freed","fullAgain","freedAgain","lines"}`:
 * the server's ACK counts after each phase, and the lines it logged at warn or above, and about the
 * lease log.
 */
import { spawnSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import type { Mac } from '../../src/boot-plan.js';
import { type DhcpStats, startDhcpServer } from '../../src/dhcp/server.js';
import { loadConfigText } from '../../src/inventory/load.js';
import { fill } from '../helpers/root.js';
import { requestBytes, testConfigYaml, testDecision } from './fixtures.js';

const directory = process.argv[2];
if (!directory) throw new Error('usage: full-disk-server.ts DIRECTORY');
const SERVER = '10.77.255.1';
const CLIENTS = 60;

for (const args of [
  ['link', 'set', 'lo', 'up'],
  ['link', 'add', 'rvcfull0', 'type', 'veth', 'peer', 'name', 'rvcfull1'],
  ['addr', 'add', `${SERVER}/24`, 'dev', 'rvcfull0'],
  ['link', 'set', 'rvcfull0', 'up'],
  ['link', 'set', 'rvcfull1', 'up'],
]) {
  const done = spawnSync('ip', args, { encoding: 'utf8' });
  if (done.status !== 0) throw new Error(`ip ${args.join(' ')}: ${done.stderr}`);
}

const loaded = await loadConfigText(
  testConfigYaml({
    subnet: 255,
    mode: 'authoritative',
    state: directory,
    pool: { subnet: '10.77.255.0/24', range: ['10.77.255.100', '10.77.255.199'] },
  }),
  join(directory, 'rackboot.yaml'),
  { missingAssets: 'warn' },
);
if (!loaded.ok) throw new Error(JSON.stringify(loaded.problems));
const config = loaded.config;

const lines: { level: number; msg: string }[] = [];
const logged = new Writable({
  write(chunk: Buffer, _encoding, done) {
    const line = JSON.parse(chunk.toString()) as { level: number; msg: string };
    if (line.level >= 40 || line.msg.includes('lease log')) lines.push({ level: line.level, msg: line.msg });
    done();
  },
});
const server = await startDhcpServer({
  config: () => config,
  decision: testDecision(() => config),
  record: async () => {},
  logger: pino({ level: 'info' }, logged),
});

const filler = join(directory, 'filler');
const client = createSocket('udp4');
await new Promise<void>((resolve) => client.bind(0, '0.0.0.0', resolve));
/** Every client REQUESTs the address it was offered, in rounds a little apart (clients retry). */
const requestAll = async () => {
  for (let round = 0; round < 3; round += 1) {
    for (let index = 0; index < CLIENTS / 3; index += 1) {
      const n = round * (CLIENTS / 3) + index;
      const mac = `52:54:00:ff:00:${n.toString(16).padStart(2, '0')}` as Mac;
      const bytes = requestBytes({
        type: 'request',
        mac,
        xid: n,
        requested: `10.77.255.${100 + n}`,
        serverId: SERVER,
      });
      client.send(bytes, 67, SERVER);
    }
    await sleep(100);
  }
};
const acks = (stats: DhcpStats) => {
  const count = (decision: string) =>
    stats.messages
      .filter((entry) => entry.decision === decision)
      .reduce((sum, entry) => sum + entry.count, 0);
  return { ack: count('ack'), withheld: count('ack-withheld') };
};
/** The ACK counts once `total` REQUESTs were decided (ACKed or withheld), or after 10 s. */
const decided = async (total: number) => {
  const deadline = performance.now() + 10_000;
  for (;;) {
    const counts = acks(await server.stats());
    if (counts.ack + counts.withheld >= total || performance.now() > deadline) return counts;
    await sleep(50);
  }
};

fill(filler);
await requestAll();
const full = await decided(CLIENTS);
unlinkSync(filler);
await requestAll();
const freed = await decided(2 * CLIENTS);
// The disk at the edge: full again, then not, within the minute.
fill(filler);
await requestAll();
const fullAgain = await decided(3 * CLIENTS);
unlinkSync(filler);
await requestAll();
const freedAgain = await decided(4 * CLIENTS);
client.close();
await server.close();
process.stdout.write(`RESULT ${JSON.stringify({ full, freed, fullAgain, freedAgain, lines })}\n`);
