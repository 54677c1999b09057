import { parseArgs } from 'node:util';
import {
  BOOT_PHASES,
  type BootPhase,
  type BootTimeline,
  formatTimeline,
  LAB_FIRMWARES,
  type Lab,
  type LabFirmware,
  startLab,
} from '../../src/lab/index.js';
import { median } from '../plumbing.js';

/**
 * Boot timings per firmware, rackboot against the classic set-up (dnsmasq for DHCP + TFTP and a
 * static HTTP server), same VMs, same host, same run. Boots alternate between the two labs one at
 * a time, so both see the same host load; phases come from the serial console (timings.ts), so both
 * are measured by one yardstick. Usage:
 *   node --import tsx bench/e2e/run.ts [--rounds 2] [--firmware bios,uefi-pxe,uefi-http] [--no-ra]
 */

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '2' },
    firmware: { type: 'string', default: LAB_FIRMWARES.join(',') },
    'no-ra': { type: 'boolean', default: false },
  },
});
const rounds = Number(values.rounds);
const firmwares = values.firmware.split(',') as LabFirmware[];
if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds must be a positive integer');
for (const firmware of firmwares) {
  if (!LAB_FIRMWARES.includes(firmware)) throw new Error(`unknown firmware ${firmware}`);
}
const routerAdvertisement = !values['no-ra'];
const machines = firmwares.map((firmware) => ({ firmware, hostname: firmware }));

type Peer = 'rackboot' | 'dnsmasq';
const labs: Record<Peer, Lab> = {
  rackboot: await startLab({
    subnet: 110,
    server: { kind: 'rackboot', dhcpMode: 'authoritative' },
    machines,
    routerAdvertisement,
  }),
  dnsmasq: await startLab({ subnet: 111, server: { kind: 'dnsmasq' }, machines, routerAdvertisement }),
};
const results: Record<Peer, Map<LabFirmware, BootTimeline[]>> = { rackboot: new Map(), dnsmasq: new Map() };

try {
  for (let round = 1; round <= rounds; round++) {
    for (const [index, firmware] of firmwares.entries()) {
      // Alternate which peer goes first so a drift in host load does not favour one of them.
      const order: Peer[] = (round + index) % 2 === 0 ? ['rackboot', 'dnsmasq'] : ['dnsmasq', 'rackboot'];
      for (const peer of order) {
        const lab = labs[peer];
        const machine = lab.machines[index];
        if (!machine) throw new Error('machine missing');
        if (peer === 'rackboot' && round > 1) {
          // An installed machine would boot its local disk; every round measures an install.
          await lab.rackbootCli(['reprovision', machine.mac]);
        }
        const outcome = await lab.boot(machine, { timeoutMs: 300_000 });
        if (outcome.result !== 'installed') {
          throw new Error(`${peer} ${firmware} round ${round}: ${outcome.result}\n${outcome.tail}`);
        }
        console.log(
          `round ${round} ${firmware.padEnd(9)} ${peer.padEnd(8)} ${formatTimeline(outcome.timeline)}`,
        );
        const list = results[peer].get(firmware) ?? [];
        list.push(outcome.timeline);
        results[peer].set(firmware, list);
      }
    }
  }
} finally {
  await Promise.all([labs.rackboot.close(), labs.dnsmasq.close()]);
}

const phaseMedian = (timelines: BootTimeline[], phase: BootPhase) =>
  median(timelines.flatMap((timeline) => (timeline[phase] === undefined ? [] : [timeline[phase]])));

console.log(
  `\nmedian seconds since power-on, ${rounds} round(s), router advertisement ${routerAdvertisement ? 'on' : 'off'}`,
);
console.log(['firmware', 'server', ...BOOT_PHASES].map((cell) => cell.padEnd(14)).join(''));
for (const firmware of firmwares) {
  const total: Partial<Record<Peer, number>> = {};
  const network: Partial<Record<Peer, number>> = {};
  for (const peer of ['rackboot', 'dnsmasq'] as const) {
    const timelines = results[peer].get(firmware) ?? [];
    const cells = BOOT_PHASES.map((phase) => phaseMedian(timelines, phase)?.toFixed(1) ?? '-');
    total[peer] = phaseMedian(timelines, 'installed');
    // From the firmware's first console line: leaves out its CPU-bound initialisation, which no
    // server influences and which varies most with host load under TCG.
    network[peer] = median(
      timelines.flatMap((timeline) =>
        timeline.installed === undefined || timeline.console === undefined
          ? []
          : [timeline.installed - timeline.console],
      ),
    );
    console.log([firmware, peer, ...cells].map((cell) => cell.padEnd(14)).join(''));
  }
  const ratio = (values: Partial<Record<Peer, number>>) =>
    values.rackboot !== undefined && values.dnsmasq ? (values.rackboot / values.dnsmasq).toFixed(2) : '-';
  console.log(
    `${firmware}: rackboot / dnsmasq: power-on → installed ${ratio(total)}, first console line → installed ${ratio(network)}` +
      ` (${network.rackboot?.toFixed(1)} s vs ${network.dnsmasq?.toFixed(1)} s)`,
  );
}
