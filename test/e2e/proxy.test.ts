import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import {
  assertEventSequence,
  assertInstalled,
  BOOT_TIMEOUT_MS,
  INSTALL_TAIL,
  machineEvents,
  scenarioLab,
  verifyCleanup,
} from './scenario.js';

// Issue 7, scenario 3: the LAN already has a DHCP server (dnsmasq on another host of the lab LAN,
// handing out addresses only, knowing nothing of network boot); rackboot in proxy mode supplies
// only the boot. SeaBIOS (iPXE ROM) and OVMF's own PXE client boot together.

const lab = await scenarioLab(t, {
  subnet: 101,
  server: { kind: 'rackboot', dhcpMode: 'proxy' },
  machines: [
    { firmware: 'bios', hostname: 'proxy-bios' },
    { firmware: 'uefi-pxe', hostname: 'proxy-uefi' },
  ],
});
const [bios, uefi] = lab.machines;
if (!bios || !uefi) throw new Error('lab machines missing');
const bootUrl = `${lab.baseUrl}/boot.ipxe`;
const outcomes = Promise.all(
  [bios, uefi].map((machine) => lab.boot(machine, { timeoutMs: BOOT_TIMEOUT_MS })),
);

t.test('3a: SeaBIOS + iPXE ROM: address from the LAN server, boot script from rackboot', async (t) => {
  const [outcome] = await outcomes;
  if (!outcome) throw new Error('no outcome');
  assertInstalled(t, outcome);
  const { state, events } = await machineEvents(lab, bios);
  t.equal(state, 'installed');
  assertEventSequence(
    t,
    events,
    [{ type: 'dhcp-offer', detail: { firmware: 'ipxe', mode: 'proxy', bootFile: bootUrl } }, ...INSTALL_TAIL],
    'proxy offer (script URL) → script → kernel, initrd → Ignition → installed',
  );
});

t.test('3b: OVMF PXE: address from the LAN server, ipxe.efi and the script from rackboot', async (t) => {
  const [, outcome] = await outcomes;
  if (!outcome) throw new Error('no outcome');
  assertInstalled(t, outcome);
  const { state, events } = await machineEvents(lab, uefi);
  t.equal(state, 'installed');
  assertEventSequence(
    t,
    events,
    [
      { type: 'dhcp-offer', detail: { firmware: 'uefi-pxe', mode: 'proxy' } },
      { type: 'tftp-transfer', detail: { file: 'ipxe.efi', outcome: 'complete' } },
      { type: 'dhcp-offer', detail: { firmware: 'ipxe', mode: 'proxy', bootFile: bootUrl } },
      ...INSTALL_TAIL,
    ],
    'proxy offer → TFTP ipxe.efi → proxy offer to iPXE (script URL) → script → Ignition → installed',
  );
});

t.test('3: the addresses came from the LAN DHCP server, not from rackboot', async (t) => {
  await outcomes;
  const leases = await readFile(join(lab.directory, 'dnsmasq.leases'), 'utf8');
  for (const machine of [bios, uefi]) {
    t.match(
      leases,
      new RegExp(` ${machine.mac} 10\\.77\\.101\\.\\d+ `),
      `dnsmasq leased ${machine.hostname} its address`,
    );
    const { events } = await machineEvents(lab, machine);
    t.same(
      events.filter((event) => event.type === 'dhcp-offer' && event.detail?.mode === 'authoritative'),
      [],
      `rackboot made ${machine.hostname} no address offer`,
    );
  }
});

verifyCleanup(t, lab);
