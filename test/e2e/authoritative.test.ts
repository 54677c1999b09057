import t from 'tap';
import type { BootOutcome } from '../../src/lab/lab.js';
import {
  assertEventSequence,
  assertInstalled,
  BOOT_TIMEOUT_MS,
  describeEvents,
  INSTALL_TAIL,
  machineEvents,
  scenarioLab,
  verifyCleanup,
} from './scenario.js';

// Real firmware through rackboot alone, authoritative DHCP (issue 7, scenarios 1, 2, 5 and 6):
// SeaBIOS with the NIC's iPXE ROM, OVMF's own PXE client, OVMF UEFI HTTP Boot, and three machines
// at once. One rackboot for the whole file; the two UEFI boots run together, as do the three.

const lab = await scenarioLab(t, {
  subnet: 100,
  server: { kind: 'rackboot', dhcpMode: 'authoritative' },
  machines: [
    { firmware: 'bios', hostname: 'seabios' },
    { firmware: 'uefi-pxe', hostname: 'ovmf-pxe' },
    { firmware: 'uefi-http', hostname: 'ovmf-http' },
    { firmware: 'bios', hostname: 'trio-1' },
    { firmware: 'uefi-pxe', hostname: 'trio-2' },
    { firmware: 'bios', hostname: 'trio-3' },
  ],
});
const [seabios, ovmfPxe, ovmfHttp, ...trio] = lab.machines;
if (!seabios || !ovmfPxe || !ovmfHttp || trio.length !== 3) throw new Error('lab machines missing');
const bootUrl = `${lab.baseUrl}/boot.ipxe`;

t.test('1: SeaBIOS + iPXE ROM gets the script URL at once, no TFTP', async (t) => {
  assertInstalled(t, await lab.boot(seabios, { timeoutMs: BOOT_TIMEOUT_MS }));
  const { state, events } = await machineEvents(lab, seabios);
  t.equal(state, 'installed');
  assertEventSequence(
    t,
    events,
    [
      {
        type: 'dhcp-offer',
        detail: { firmware: 'ipxe', archCode: 0, mode: 'authoritative', bootFile: bootUrl },
      },
      { type: 'dhcp-ack', detail: { firmware: 'ipxe', bootFile: bootUrl } },
      ...INSTALL_TAIL,
    ],
    'DHCP (iPXE ROM) → boot script → kernel, initrd → Ignition → installed',
  );
  t.same(
    describeEvents(events.filter((event) => event.type === 'tftp-transfer')),
    [],
    'the iPXE ROM needs no TFTP',
  );
});

let uefiBoots: Promise<BootOutcome[]> | undefined;
const bootBothUefi = () =>
  (uefiBoots ??= Promise.all(
    [ovmfPxe, ovmfHttp].map((machine) => lab.boot(machine, { timeoutMs: BOOT_TIMEOUT_MS })),
  ));

t.test(
  "2: OVMF's own PXE: DHCP arch 7 → TFTP ipxe.efi (size probe, transfer) → iPXE DHCP → HTTP",
  async (t) => {
    const [outcome] = await bootBothUefi();
    if (!outcome) throw new Error('no outcome');
    assertInstalled(t, outcome);
    const { state, events } = await machineEvents(lab, ovmfPxe);
    t.equal(state, 'installed');
    assertEventSequence(
      t,
      events,
      [
        { type: 'dhcp-offer', detail: { firmware: 'uefi-pxe', archCode: 7, bootFile: 'ipxe.efi' } },
        { type: 'dhcp-ack', detail: { firmware: 'uefi-pxe', bootFile: 'ipxe.efi' } },
        { type: 'tftp-transfer', detail: { file: 'ipxe.efi', outcome: 'probe' } },
        { type: 'tftp-transfer', detail: { file: 'ipxe.efi', outcome: 'complete' } },
        { type: 'dhcp-offer', detail: { firmware: 'ipxe', archCode: 7, bootFile: bootUrl } },
        { type: 'dhcp-ack', detail: { firmware: 'ipxe', bootFile: bootUrl } },
        ...INSTALL_TAIL,
      ],
      'EDK2 DHCP → TFTP probe + transfer → iPXE DHCP → script → kernel, initrd → Ignition → installed',
    );
    const probe = events.find((event) => event.type === 'tftp-transfer' && event.detail?.outcome === 'probe');
    t.match(probe?.detail?.options, { tsize: /^\d+$/ }, 'the probe asked for tsize and got the size');
  },
);

t.test('6: OVMF UEFI HTTP Boot (vendor class HTTPClient) fetches ipxe.efi over HTTP', async (t) => {
  const [, outcome] = await bootBothUefi();
  if (!outcome) throw new Error('no outcome');
  assertInstalled(t, outcome);
  const { state, events } = await machineEvents(lab, ovmfHttp);
  t.equal(state, 'installed');
  const efiUrl = `${lab.baseUrl}/assets/ipxe.efi`;
  assertEventSequence(
    t,
    events,
    [
      { type: 'dhcp-offer', detail: { firmware: 'uefi-http', bootFile: efiUrl } },
      { type: 'dhcp-ack', detail: { firmware: 'uefi-http', bootFile: efiUrl } },
      { type: 'asset-download', detail: { file: 'ipxe.efi' } },
      { type: 'dhcp-offer', detail: { firmware: 'ipxe', bootFile: bootUrl } },
      { type: 'dhcp-ack', detail: { firmware: 'ipxe', bootFile: bootUrl } },
      ...INSTALL_TAIL,
    ],
    'HTTP Boot DHCP → ipxe.efi over HTTP → iPXE DHCP → script → kernel, initrd → Ignition → installed',
  );
  t.same(
    describeEvents(events.filter((event) => event.type === 'tftp-transfer')),
    [],
    'HTTP Boot uses no TFTP',
  );
});

t.test('5: three machines booting at once each get their own Ignition', async (t) => {
  const outcomes = await Promise.all(
    trio.map((machine) => lab.boot(machine, { timeoutMs: BOOT_TIMEOUT_MS })),
  );
  const addresses = new Set<string>();
  for (const outcome of outcomes) {
    assertInstalled(t, outcome);
    const address = / ip=(\S+)/.exec(outcome.detail)?.[1];
    if (address) addresses.add(address);
    const { state, events } = await machineEvents(lab, outcome.machine);
    t.equal(state, 'installed', `${outcome.machine.hostname} is installed`);
    t.equal(
      events.filter((event) => event.type === 'ignition-fetch').length,
      1,
      `${outcome.machine.hostname}: exactly one Ignition fetch, recorded under its own MAC`,
    );
    assertEventSequence(
      t,
      events,
      [{ type: 'dhcp-ack' }, ...INSTALL_TAIL],
      `${outcome.machine.hostname}: DHCP → script → kernel, initrd → Ignition → installed`,
    );
  }
  t.equal(addresses.size, 3, 'three different leases');
});

verifyCleanup(t, lab);
