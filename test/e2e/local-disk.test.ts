import t from 'tap';
import { LOCAL_DISK_MARKER } from '../../src/lab/boot-sector.js';
import {
  assertEventSequence,
  assertInstalled,
  BOOT_TIMEOUT_MS,
  describeEvents,
  describeOutcome,
  INSTALL_TAIL,
  machineEvents,
  scenarioLab,
  verifyCleanup,
} from './scenario.js';

// Issue 7, scenario 4: an installed machine that network-boots again is sent to its local disk
// (not reinstalled); after `rackboot reprovision` it installs again. The VM's disk holds a boot
// sector that prints a marker, so "booted from local disk" is seen, not inferred.

const lab = await scenarioLab(t, {
  subnet: 102,
  server: { kind: 'rackboot', dhcpMode: 'authoritative' },
  machines: [{ firmware: 'bios', hostname: 'reused' }],
});
const [machine] = lab.machines;
if (!machine) throw new Error('lab machine missing');
const boot = () => lab.boot(machine, { timeoutMs: BOOT_TIMEOUT_MS, localDisk: true });
let lastSeenId = 0;
const eventsSinceLastStep = async () => {
  const { state, events } = await machineEvents(lab, machine);
  const fresh = events.filter((event) => event.id > lastSeenId);
  lastSeenId = events.at(-1)?.id ?? lastSeenId;
  return { state, events: fresh };
};

t.test('4a: first boot installs', async (t) => {
  assertInstalled(t, await boot());
  const { state, events } = await eventsSinceLastStep();
  t.equal(state, 'installed');
  assertEventSequence(t, events, [{ type: 'dhcp-ack' }, ...INSTALL_TAIL], 'installed through rackboot');
});

t.test('4b: second boot goes to the local disk, no reinstall', async (t) => {
  const outcome = await boot();
  t.comment(describeOutcome(outcome));
  t.equal(outcome.result, 'local-disk', `the disk's boot sector printed ${LOCAL_DISK_MARKER}`, {
    serial: outcome.tail,
  });
  const { state, events } = await eventsSinceLastStep();
  t.equal(state, 'installed', 'still installed');
  assertEventSequence(
    t,
    events,
    [{ type: 'dhcp-ack' }, { type: 'ipxe-script', detail: { script: 'local-disk' } }],
    'DHCP → local-disk script',
  );
  t.same(
    describeEvents(
      events.filter((event) => ['ignition-fetch', 'asset-download', 'installed'].includes(event.type)),
    ),
    [],
    'no kernel, initrd or Ignition fetched',
  );
});

t.test('4c: after `rackboot reprovision` it installs again', async (t) => {
  const said = await lab.rackbootCli(['reprovision', machine.mac]);
  t.match(said, /installs again at its next network boot/);
  assertInstalled(t, await boot());
  const { state, events } = await eventsSinceLastStep();
  t.equal(state, 'installed');
  assertEventSequence(
    t,
    events,
    [{ type: 'reprovision' }, { type: 'dhcp-ack' }, ...INSTALL_TAIL],
    'reprovision → DHCP → install script → Ignition → installed',
  );
});

verifyCleanup(t, lab);
