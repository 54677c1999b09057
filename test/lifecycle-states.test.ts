import t from 'tap';
import { parseMac } from '../src/inventory/mac.js';
import type { MachineEventInput, MachineState } from '../src/lifecycle/events.js';
import { BOOT_GAP_MS, type MachineRecord, type Stamp, step } from '../src/lifecycle/states.js';

const mac = parseMac('52:54:00:12:34:56');
if (!mac) throw new Error('fixture MAC');
const T0 = Date.parse('2026-11-25T10:00:00.000Z');
const stampAt = (id: number, ms: number): Stamp => ({ id, time: new Date(ms).toISOString(), ms });

/** Steps a new machine through `sequence` (each input at T0 + its ms): the last record and step. */
function replay(sequence: readonly (readonly [MachineEventInput, number])[]) {
  let record: MachineRecord | undefined;
  let last: ReturnType<typeof step> | undefined;
  for (const [index, [input, atMs]] of sequence.entries()) {
    last = step(record, input, stampAt(index + 1, T0 + atMs));
    record = last.record;
  }
  return { record, last };
}

// The events of one boot, as the servers report them (names and detail per the event vocabulary).
const firmwareDhcp = (firmware = 'bios-pxe'): MachineEventInput => ({
  mac,
  source: 'dhcp',
  type: 'dhcp-ack',
  ip: '10.77.0.100',
  detail: { firmware, arch: 'x86_64', xid: 1 },
});
const osDhcp: MachineEventInput = { mac, source: 'dhcp', type: 'dhcp-ack', ip: '10.77.0.100', detail: {} };
const tftp = (outcome: string): MachineEventInput => ({
  mac,
  source: 'tftp',
  type: 'tftp-transfer',
  detail: { file: 'undionly.kpxe', outcome },
});
const script = (kind: string): MachineEventInput => ({
  mac,
  source: 'http',
  type: 'ipxe-script',
  detail: { script: kind },
});
const ignition: MachineEventInput = { mac, source: 'http', type: 'ignition-fetch' };
const installed: MachineEventInput = { mac, source: 'machine', type: 'installed' };
const diskWritten: MachineEventInput = { mac, source: 'machine', type: 'disk-written' };
const failed: MachineEventInput = { mac, source: 'machine', type: 'failed', detail: { message: 'disk' } };
const reprovision: MachineEventInput = { mac, source: 'operator', type: 'reprovision' };

interface Folded {
  states: (MachineState | undefined)[];
  derived: string[][];
  correlationIds: (string | undefined)[];
  record: MachineRecord | undefined;
}

/** Folds events one second apart (or `gapMs` before the events listed in `gaps`). */
function fold(events: MachineEventInput[], gaps: Record<number, number> = {}): Folded {
  let record: MachineRecord | undefined;
  let time = T0;
  const folded: Folded = { states: [], derived: [], correlationIds: [], record: undefined };
  events.forEach((input, index) => {
    time += gaps[index] ?? 1000;
    const result = step(record, input, stampAt(index + 1, time));
    record = result.record;
    folded.states.push(record?.state);
    folded.derived.push(result.derived.map((event) => `${event.type}:${String(event.detail?.to)}`));
    folded.correlationIds.push(result.event.correlationId);
  });
  folded.record = record;
  return folded;
}

t.test('transition table: event sequences and the states they lead to', async (t) => {
  const cases: [string, MachineEventInput[], (MachineState | undefined)[]][] = [
    [
      'BIOS PXE install',
      [firmwareDhcp(), tftp('complete'), firmwareDhcp('ipxe'), script('install'), ignition, installed],
      ['discovered', 'booting', 'booting', 'booting', 'installing', 'installed'],
    ],
    [
      'iPXE ROM (no TFTP) install',
      [firmwareDhcp('ipxe'), script('install'), ignition, installed],
      ['discovered', 'booting', 'installing', 'installed'],
    ],
    [
      'a TFTP size probe is not a boot',
      [firmwareDhcp('uefi-pxe'), tftp('probe')],
      ['discovered', 'discovered'],
    ],
    [
      'an installed machine booting again stays installed (local disk)',
      [
        firmwareDhcp('ipxe'),
        script('install'),
        ignition,
        installed,
        firmwareDhcp('ipxe'),
        script('local-disk'),
      ],
      ['discovered', 'booting', 'installing', 'installed', 'installed', 'installed'],
    ],
    [
      'reprovision takes an installed machine back; its next boot installs',
      [
        firmwareDhcp('ipxe'),
        script('install'),
        ignition,
        installed,
        reprovision,
        firmwareDhcp('ipxe'),
        script('install'),
      ],
      ['discovered', 'booting', 'installing', 'installed', 'discovered', 'discovered', 'booting'],
    ],
    [
      'a failed report after the install: its boots change nothing until reprovision',
      [
        firmwareDhcp('ipxe'),
        script('install'),
        ignition,
        installed,
        failed,
        firmwareDhcp('ipxe'),
        script('local-disk'),
        ignition,
        reprovision,
        firmwareDhcp('ipxe'),
        script('install'),
      ],
      [
        'discovered',
        'booting',
        'installing',
        'installed',
        'failed',
        'failed',
        'failed',
        'failed',
        'discovered',
        'discovered',
        'booting',
      ],
    ],
    [
      'failed from installing; a new boot retries',
      [firmwareDhcp('ipxe'), script('install'), ignition, failed, firmwareDhcp('ipxe')],
      ['discovered', 'booting', 'installing', 'failed', 'discovered'],
    ],
    ['failed from discovered', [firmwareDhcp(), failed], ['discovered', 'failed']],
    [
      'a reboot in the middle of an install starts over at discovered',
      [firmwareDhcp('ipxe'), script('install'), ignition, osDhcp, firmwareDhcp('ipxe')],
      ['discovered', 'booting', 'installing', 'installing', 'discovered'],
    ],
    [
      'network-first firmware: the reboot after the disk is written stays installing, then installed',
      [
        firmwareDhcp(),
        tftp('complete'),
        firmwareDhcp('ipxe'),
        script('install'),
        ignition,
        diskWritten,
        firmwareDhcp(),
        tftp('complete'),
        firmwareDhcp('ipxe'),
        script('local-disk'),
        installed,
      ],
      [
        'discovered',
        'booting',
        'booting',
        'booting',
        'installing',
        'installing',
        'installing',
        'installing',
        'installing',
        'installing',
        'installed',
      ],
    ],
    [
      'disk written without a seen Ignition fetch: installing',
      [firmwareDhcp('ipxe'), script('install'), diskWritten],
      ['discovered', 'booting', 'installing'],
    ],
    [
      'disk written before any installer was booted is rejected',
      [firmwareDhcp(), diskWritten],
      ['discovered', 'discovered'],
    ],
    [
      'installed before any installer was booted is rejected',
      [firmwareDhcp(), installed],
      ['discovered', 'discovered'],
    ],
    [
      'Ignition fetched by an installed machine is rejected',
      [firmwareDhcp('ipxe'), script('install'), installed, ignition],
      ['discovered', 'booting', 'installed', 'installed'],
    ],
    [
      'reprovision of a machine on its way to the installer changes nothing',
      [firmwareDhcp(), reprovision],
      ['discovered', 'discovered'],
    ],
    ['a plain DHCP client is history only, not a machine', [osDhcp], [undefined]],
    ['reprovision of a MAC never seen', [reprovision], [undefined]],
    ['a report from a MAC never seen (a wiped history) is history only', [installed], [undefined]],
    ['HTTP first (DHCP elsewhere): straight to booting', [script('install')], ['booting']],
  ];
  for (const [name, events, expected] of cases) {
    t.same(fold(events).states, expected, name);
  }
});

t.test('disk-written sends the network boots to the disk until reprovision', async (t) => {
  const install = [firmwareDhcp('ipxe'), script('install'), ignition];
  t.equal(fold(install).record?.bootsFromDisk, false, 'not while the installer runs');
  t.equal(fold([...install, diskWritten]).record?.bootsFromDisk, true, 'from the report on');
  t.equal(
    fold([...install, diskWritten, firmwareDhcp('ipxe'), ignition]).derived.at(-1)?.[0],
    'transition-rejected:installing',
    'an Ignition fetch after the disk was written is rejected',
  );
  t.equal(fold([...install, diskWritten, failed]).record?.bootsFromDisk, true, 'a failed report keeps it');
  t.equal(
    fold([...install, diskWritten, installed, reprovision]).record?.bootsFromDisk,
    false,
    'reprovision ends it',
  );
  t.equal(fold([firmwareDhcp(), diskWritten]).record?.bootsFromDisk, false, 'a rejected report sets nothing');
  // The installed system never reported (its first boot failed): the operator reinstalls it.
  const stuck = fold([...install, diskWritten, firmwareDhcp('ipxe'), script('local-disk'), reprovision]);
  t.equal(stuck.states.at(-1), 'discovered', 'reprovision while installing with the disk written');
  t.equal(stuck.record?.bootsFromDisk, false, 'and its next boot installs again');
});

t.test('every transition is a state-changed event; forbidden ones are recorded as rejected', async (t) => {
  const folded = fold([firmwareDhcp('ipxe'), installed, script('install'), ignition, installed, installed]);
  t.same(folded.derived, [
    ['state-changed:discovered'],
    ['transition-rejected:installed'],
    ['state-changed:booting'],
    ['state-changed:installing'],
    ['state-changed:installed'],
    [],
  ]);
  const rejected = step(folded.record, ignition, stampAt(99, T0 + 60_000));
  const rejection = rejected.derived[0];
  t.equal(rejection?.type, 'transition-rejected');
  t.match(rejection?.detail, { from: 'installed', to: 'installing', cause: 'ignition-fetch', causeId: 99 });
  t.match(String(rejection?.detail?.reason), /reprovision/);
  t.equal(rejected.event.state, undefined, 'a rejected event does not carry a state');
  const unknown = step(undefined, reprovision, stampAt(1, T0));
  t.equal(unknown.derived[0]?.type, 'transition-rejected', 'reprovisioning a MAC never seen is rejected');
  t.match(String(unknown.derived[0]?.detail?.reason), /never network-booted here/);
  const adoptedFirst = step(undefined, { ...reprovision, type: 'adopt' }, stampAt(1, T0));
  t.same(
    adoptedFirst.derived,
    [],
    'adopting a MAC before its first boot asks for no state: nothing is rejected',
  );
  t.equal(adoptedFirst.record, undefined, 'and it makes no record: the first boot does');
  const stray = step(undefined, installed, stampAt(1, T0));
  t.match(
    stray.derived,
    [
      {
        type: 'transition-rejected',
        detail: { from: null, to: 'installed', reason: /never network-booted here/ },
      },
    ],
    "a machine's report for a MAC never seen is rejected, and makes no record",
  );
  for (const events of [[firmwareDhcp()], [firmwareDhcp('ipxe'), script('install')]]) {
    const before = fold(events).record;
    const asked = step(before, reprovision, stampAt(50, T0 + 60_000));
    t.same(asked.derived, [], `reprovision while ${before?.state}: no change, nothing rejected`);
    t.equal(asked.record?.state, before?.state);
  }
});

t.test('state-changed detail: cause, time in the previous state and since the boot began', async (t) => {
  let record: MachineRecord | undefined;
  const times = [0, 2000, 5000, 65_000];
  const changes = [firmwareDhcp('ipxe'), script('install'), ignition, installed].map((input, index) => {
    const result = step(record, input, stampAt(index + 1, T0 + (times[index] ?? 0)));
    record = result.record;
    return result;
  });
  t.match(changes[3]?.derived[0]?.detail, {
    from: 'installing',
    to: 'installed',
    cause: 'installed',
    causeId: 4,
    inStateMs: 60_000,
    sinceBootMs: 65_000,
  });
  t.equal(changes[3]?.event.state, 'installed', 'the causing event carries the new state');
  t.equal(record?.installedAt, new Date(T0 + 65_000).toISOString());
  t.equal(changes[3]?.derived[0]?.detail?.sinceInstallStartMs, 65_000, 'reported in the same boot');
});

t.test(
  "an install's duration runs from the boot that fetched its Ignition to the installed system's report",
  async (t) => {
    // The documented flow: the installer writes the disk and reboots; the firmware tries the network
    // first and gets the local-disk script; the installed system reports.
    const sequence = [
      [firmwareDhcp('ipxe'), 0],
      [script('install'), 5_000],
      [ignition, 60_000],
      [diskWritten, 600_000],
      [firmwareDhcp('ipxe'), 640_000],
      [script('local-disk'), 641_000],
      [installed, 700_000],
    ] as const;
    const { last } = replay(sequence);
    t.match(last?.derived[0]?.detail, {
      to: 'installed',
      sinceBootMs: 60_000,
      sinceInstallStartMs: 700_000,
    });
  },
);

t.test(
  'without DHCP, an install rebooted before it wrote the disk is timed from the boot that installed',
  async (t) => {
    // dhcp.mode off: the reboot's script starts the next boot, and the machine stays installing.
    const sequence = [
      [script('install'), 0],
      [ignition, 60_000],
      [script('install'), 900_000],
      [ignition, 960_000],
      [diskWritten, 1_500_000],
      [script('local-disk'), 1_540_000],
      [installed, 1_600_000],
    ] as const;
    const { record, last } = replay(sequence);
    t.equal(record?.boot.number, 3, 'the reboot was a boot of its own');
    t.match(last?.derived[0]?.detail, { to: 'installed', sinceInstallStartMs: 700_000 });
  },
);

t.test(
  'reprovision during an install: its reports are refused and the next boot installs again',
  async (t) => {
    const install = [firmwareDhcp('ipxe'), script('install'), ignition];
    const folded = fold([...install, reprovision, diskWritten, firmwareDhcp('ipxe')]);
    t.same(folded.states, ['discovered', 'booting', 'installing', 'discovered', 'discovered', 'discovered']);
    t.same(
      folded.derived[4],
      ['transition-rejected:installing'],
      "the old install's disk-written is refused",
    );
    t.equal(folded.record?.bootsFromDisk, false, 'so the next network boot installs again');
    const reported = step(folded.record, installed, stampAt(90, T0 + 600_000));
    t.equal(reported.derived[0]?.type, 'transition-rejected', 'and so is its installed report');
    t.match(String(reported.derived[0]?.detail?.reason), /reprovision/);
    const again = fold([
      ...install,
      reprovision,
      diskWritten,
      firmwareDhcp('ipxe'),
      script('install'),
      ignition,
      diskWritten,
    ]);
    t.equal(again.record?.bootsFromDisk, true, 'the install after the reprovision is counted');
  },
);

t.test('correlation id: one per boot, from the first firmware DHCP packet', async (t) => {
  const uefiBoot = [
    firmwareDhcp('uefi-pxe'), // DISCOVER/OFFER
    firmwareDhcp('uefi-pxe'), // REQUEST/ACK: same boot
    tftp('probe'),
    tftp('complete'),
    firmwareDhcp('ipxe'), // iPXE's own DHCP, still before any HTTP: same boot
    script('install'),
    ignition,
    osDhcp,
    installed,
  ];
  const folded = fold([
    ...uefiBoot,
    firmwareDhcp('uefi-pxe'),
    tftp('complete'),
    firmwareDhcp('ipxe'),
    script('local-disk'),
  ]);
  const first = new Set(folded.correlationIds.slice(0, uefiBoot.length));
  const second = new Set(folded.correlationIds.slice(uefiBoot.length));
  t.same([...first], ['525400123456-1'], 'the whole install is one story');
  t.same([...second], ['525400123456-2'], 'the reboot after installed is the next boot');

  const retries = fold([firmwareDhcp(), firmwareDhcp(), firmwareDhcp()], { 2: BOOT_GAP_MS + 1 });
  t.same(
    retries.correlationIds,
    ['525400123456-1', '525400123456-1', '525400123456-2'],
    'DHCP retries join the boot; after a long silence a new boot begins',
  );
});

t.test('correlation id: UEFI HTTP Boot downloading iPXE itself stays one boot', async (t) => {
  const ipxeDownload: MachineEventInput = {
    mac,
    source: 'http',
    type: 'asset-download',
    detail: { file: 'ipxe.efi', status: 200 },
  };
  const folded = fold([
    firmwareDhcp('uefi-http'),
    ipxeDownload,
    firmwareDhcp('ipxe'),
    script('install'),
    ignition,
  ]);
  t.same(new Set(folded.correlationIds), new Set(['525400123456-1']), 'firmware to Ignition is one boot');
  t.equal(folded.record?.firmware, 'uefi-http', "the boot is the firmware HTTP client's");
});

t.test(
  'correlation id without DHCP (dhcp.mode off): each script fetch after a later stage is a boot',
  async (t) => {
    const folded = fold([
      script('install'),
      script('install'), // iPXE fetching again: the same boot
      ignition,
      diskWritten,
      script('local-disk'), // the reboot into the installed system
      reprovision,
      tftp('complete'), // the LAN's DHCP pointing at our TFTP: the next boot begins here
      script('install'),
      ignition,
      installed,
    ]);
    t.same(
      folded.correlationIds,
      [1, 1, 1, 1, 2, 2, 3, 3, 3, 3].map((boot) => `525400123456-${boot}`),
      'install, the reboot after it, and the reinstall are three stories',
    );
    const reinstalled = folded.record;
    t.equal(reinstalled?.state, 'installed');
    t.equal(
      reinstalled?.installStartedAt,
      new Date(T0 + 7000).toISOString(),
      'the reinstall is timed from its own boot',
    );
  },
);

t.test('correlation id without DHCP: a script a while after the last script is the next boot', async (t) => {
  // An installed machine's local-disk script ends its boot, and so do an unknown or unavailable
  // machine's (they reboot): the next script is the next boot, unless it is iPXE retrying at once.
  const hour = 3_600_000;
  const folded = fold(
    [
      script('install'),
      ignition,
      installed,
      script('local-disk'),
      script('local-disk'),
      script('local-disk'),
      script('local-disk'),
    ],
    { 4: hour, 5: hour, 6: 5000 },
  );
  t.same(
    folded.correlationIds,
    [1, 1, 1, 2, 3, 4, 4].map((boot) => `525400123456-${boot}`),
    'an hour apart: boots of their own; five seconds apart: the same boot',
  );
});

t.test("BIOS iPXE's i386 build arch does not replace the arch the firmware told", async (t) => {
  const bios: MachineEventInput = {
    mac,
    source: 'http',
    type: 'ipxe-script',
    detail: { script: 'install', arch: 'i386', platform: 'pcbios' },
  };
  t.equal(fold([firmwareDhcp(), tftp('complete'), firmwareDhcp('ipxe'), bios]).record?.arch, 'x86_64');
  const efiI386 = { ...bios, detail: { script: 'install', arch: 'i386', platform: 'efi' } };
  t.equal(fold([firmwareDhcp(), efiI386]).record?.arch, 'i386', 'a 32-bit EFI iPXE is a 32-bit machine');
});

t.test('discovery: arch, firmware kind and vendor from the OUI', async (t) => {
  const folded = fold([firmwareDhcp('uefi-pxe'), tftp('complete'), firmwareDhcp('ipxe')]);
  t.match(folded.record, {
    mac,
    state: 'booting',
    arch: 'x86_64',
    firmware: 'uefi-pxe',
    vendor: 'QEMU',
    ip: '10.77.0.100',
    firstSeen: new Date(T0 + 1000).toISOString(),
  });
  const supermicro = parseMac('ac:1f:6b:00:00:01');
  const unknownVendor = parseMac('02:00:00:00:00:01');
  if (!supermicro || !unknownVendor) throw new Error('fixture MACs');
  const stamp = stampAt(1, T0);
  t.equal(step(undefined, { ...firmwareDhcp(), mac: supermicro }, stamp).record?.vendor, 'Supermicro');
  t.equal(step(undefined, { ...firmwareDhcp(), mac: unknownVendor }, stamp).record?.vendor, undefined);
});

t.test('a declined or released address is no longer the machine’s, until its next address', async (t) => {
  for (const [type, why] of [
    ['dhcp-decline', 'another host uses it'],
    ['dhcp-release', 'the client gave it back'],
  ] as const) {
    const givenUp: MachineEventInput = {
      mac,
      source: 'dhcp',
      type,
      ip: '10.77.0.100',
      detail: { xid: '00000002' },
    };
    const after = fold([firmwareDhcp(), givenUp]);
    t.equal(after.record?.ip, undefined, `${type}: ${why}`);
    t.equal(after.record?.state, 'discovered', `${type}: the state is the boot’s, as before`);
    const next = fold([firmwareDhcp(), givenUp, { ...firmwareDhcp(), ip: '10.77.0.101' }]);
    t.equal(next.record?.ip, '10.77.0.101', `${type}: the next offer or ACK gives it one again`);
  }
});

t.test(
  'bootsFromDisk: set by the install report, kept through a failed report, cleared by reprovision',
  async (t) => {
    const marks = (events: MachineEventInput[]) => {
      let record: MachineRecord | undefined;
      return events.map((input, index) => {
        record = step(record, input, stampAt(index + 1, T0 + index * 1000)).record;
        return record?.bootsFromDisk;
      });
    };
    t.same(
      marks([
        firmwareDhcp('ipxe'),
        script('install'),
        ignition,
        installed,
        failed,
        firmwareDhcp('ipxe'),
        reprovision,
      ]),
      [false, false, false, true, true, true, false],
    );
    t.same(
      marks([firmwareDhcp('ipxe'), script('install'), ignition, failed, firmwareDhcp('ipxe')]),
      [false, false, false, false, false],
      'a failed install leaves it to install again',
    );
  },
);
