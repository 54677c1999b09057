import { createSocket } from 'node:dgram';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import t from 'tap';
import { startRackboot } from '../src/rackboot.js';
import { freePort } from './helpers/loopback.js';

/**
 * /metrics of the whole server as `serve` wires it: the TFTP server's own counters (requests turned
 * away, malformed packets) reach it, which no transfer event carries.
 */

const metricLine = (text: string, name: string) =>
  text.split('\n').find((line) => line.startsWith(name)) ?? `${name} missing`;

t.test("the TFTP server's drops and gauges are in /metrics", async (t) => {
  const directory = t.testdir({ assets: { 'undionly.kpxe': Buffer.alloc(4096, 1) } });
  const [httpPort, tftpPort] = [await freePort(), await freePort()];
  const configFile = join(directory, 'rackboot.yaml');
  writeFileSync(
    configFile,
    `server:
  address: 127.0.0.1
  http: { port: ${httpPort}, listen: 127.0.0.1 }
  tftp: { port: ${tftpPort}, listen: 127.0.0.1 }
  assets: assets
  state: state
dhcp: { mode: off }
`,
  );
  const rackboot = await startRackboot({
    configFile,
    makeLogger: () => pino({ level: 'silent' }),
    env: {},
  });
  t.teardown(() => rackboot.close());

  /** A datagram to the TFTP port from a port of its own: a client of its own (a transfer ID). */
  const sendFromNewPort = async (packet: Buffer) => {
    const client = createSocket('udp4');
    await new Promise<void>((resolve) => client.bind(0, '127.0.0.1', resolve));
    await new Promise<void>((resolve, reject) =>
      client.send(packet, tftpPort, '127.0.0.1', (error) => (error ? reject(error) : resolve())),
    );
    client.close();
  };
  /** /metrics once the line `name` ends with ` value` (counters are read at scrape time), or as it is after 5 s. */
  const metricsWhen = async (name: string, value: number) => {
    let text = '';
    for (let tries = 0; tries < 50; tries += 1) {
      text = await (await fetch(`${rackboot.httpUrl}/metrics`)).text();
      if (metricLine(text, name).endsWith(` ${value}`)) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return text;
  };
  // Opcode 9 does not exist; an RRQ without its mode's NUL does not decode either.
  await sendFromNewPort(Buffer.from([0, 9, 1, 2]));
  await sendFromNewPort(Buffer.from('\u0000\u0001undionly.kpxe\u0000octet', 'binary'));
  let text = await metricsWhen('rackboot_tftp_dropped_total{reason="malformed"}', 2);
  t.equal(
    metricLine(text, 'rackboot_tftp_dropped_total{reason="malformed"}'),
    'rackboot_tftp_dropped_total{reason="malformed"} 2',
  );
  t.equal(
    metricLine(text, 'rackboot_tftp_dropped_total{reason="busy"}'),
    'rackboot_tftp_dropped_total{reason="busy"} 0',
  );
  t.equal(metricLine(text, 'rackboot_tftp_active_transfers'), 'rackboot_tftp_active_transfers 0');
  t.match(metricLine(text, 'rackboot_tftp_cache_bytes'), /^rackboot_tftp_cache_bytes \d+$/);
  t.match(
    metricLine(text, 'rackboot_tftp_retransmitted_packets_total'),
    /^rackboot_tftp_retransmitted_packets_total \d+$/,
  );
  t.match(metricLine(text, 'rackboot_tftp_io_errors_total'), /^rackboot_tftp_io_errors_total 0$/);

  // The same missing file asked for by three clients of one host within 10 s (three ports: a
  // request repeated from one port is a retransmission): one event, three refusals counted.
  for (let index = 0; index < 3; index += 1)
    await sendFromNewPort(Buffer.from('\u0000\u0001missing.efi\u0000octet\u0000', 'binary'));
  text = await metricsWhen('rackboot_tftp_refusals_suppressed_total', 2);
  t.equal(
    metricLine(text, 'rackboot_tftp_refusals_suppressed_total'),
    'rackboot_tftp_refusals_suppressed_total 2',
  );
  // Once, refusals were counted from the history's events: the two left out waited for a later
  // recorded refusal of the same key to carry their count, and were never counted without one.
  t.equal(
    metricLine(text, 'rackboot_tftp_transfers_total{outcome="refused"}'),
    'rackboot_tftp_transfers_total{outcome="refused"} 3',
    'every refusal counted, recorded or not',
  );
  t.equal(
    metricLine(text, 'rackboot_tftp_errors_total{outcome="refused"}'),
    'rackboot_tftp_errors_total{outcome="refused"} 3',
  );
  // The recorded refusal's event arrives once the history commits it; it must not count again.
  await new Promise((resolve) => setTimeout(resolve, 500));
  const again = await (await fetch(`${rackboot.httpUrl}/metrics`)).text();
  t.equal(
    metricLine(again, 'rackboot_tftp_transfers_total{outcome="refused"}'),
    'rackboot_tftp_transfers_total{outcome="refused"} 3',
    'a second scrape adds nothing, nor does the recorded event',
  );
});
