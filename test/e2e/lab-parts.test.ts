import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { unfinishedReport } from '../../src/cli/lab.js';
import { renderIgnition } from '../../src/ignition/render.js';
import { parseTemplate } from '../../src/ignition/template.js';
import { loadConfigText } from '../../src/inventory/load.js';
import { LOCAL_DISK_MARKER, localDiskBootSector } from '../../src/lab/boot-sector.js';
import { runCommand } from '../../src/lab/command.js';
import { writeCpioNewc } from '../../src/lab/cpio.js';
import { dnsmasqArguments } from '../../src/lab/dnsmasq.js';
import { GUEST_MARKERS, guestInitScript, jsonCheckAwk, udhcpcScript } from '../../src/lab/guest-init.js';
import { bootResult } from '../../src/lab/lab.js';
import {
  ignitionProblem,
  LAB_IGNITION_TEMPLATE,
  labIgnitionTemplate,
  labMachineMac,
  labRackbootConfig,
  peerBootScript,
} from '../../src/lab/lab-config.js';
import type { LabNetwork } from '../../src/lab/network.js';
import { consoleText, qemuArguments, startVm, type VmSpec } from '../../src/lab/qemu.js';
import { radvdArguments, radvdConfig } from '../../src/lab/router-advertisement.js';
import { bootTimeline } from '../../src/lab/timings.js';

// The lab's building blocks, each checked against the real tool that consumes it (cpio, busybox,
// dnsmasq, radvd, rackboot's own config loader and Ignition renderer). Seconds, no VM.

const work = await mkdtemp(join(tmpdir(), 'rackboot-lab-parts-'));
t.teardown(() => rm(work, { recursive: true, force: true }));

t.test('cpio newc archive is read back by GNU cpio', async (t) => {
  const archive = writeCpioNewc([
    { kind: 'directory', path: 'bin' },
    { kind: 'file', path: 'bin/hello', data: Buffer.from('hello\n'), mode: 0o755 },
    { kind: 'file', path: 'odd', data: Buffer.from('12345') },
    { kind: 'symlink', path: 'bin/sh', target: 'hello' },
    { kind: 'character-device', path: 'console', major: 5, minor: 1 },
  ]);
  const file = join(work, 'test.cpio');
  await writeFile(file, archive);
  const listing = await runCommand('sh', ['-c', `cpio -itv --quiet < ${file}`]);
  t.match(listing, /^drwxr-xr-x .* bin$/m);
  t.match(listing, /^-rwxr-xr-x .* 6 .* bin\/hello$/m);
  t.match(listing, /^lrwxrwxrwx .* bin\/sh -> hello$/m);
  t.match(listing, /^crw------- .* 5,\s+1 .* console$/m);
  const out = join(work, 'extracted');
  await runCommand('sh', [
    '-c',
    `mkdir -p ${out} && cd ${out} && cpio -idm --quiet --no-absolute-filenames < ${file} 2>&1; true`,
  ]);
  t.equal(await readFile(join(out, 'bin/hello'), 'utf8'), 'hello\n');
  t.equal(
    await readFile(join(out, 'odd'), 'utf8'),
    '12345',
    'data not a multiple of 4 is padded, not truncated',
  );
  t.throws(() => writeCpioNewc([{ kind: 'directory', path: '/' }]), /empty path/);
});

t.test('guest scripts are valid busybox sh, and the JSON check accepts JSON only', async (t) => {
  for (const [name, text] of [
    ['init', guestInitScript()],
    ['udhcpc-script', udhcpcScript()],
  ] as const) {
    const file = join(work, name);
    await writeFile(file, text);
    await t.resolves(runCommand('busybox', ['sh', '-n', file]), `${name} parses`);
  }
  const checker = join(work, 'json-check.awk');
  await writeFile(checker, jsonCheckAwk());
  const cases: [string, boolean][] = [
    ['{"ignition":{"version":"3.4.0"},"a":[1,-2.5e3,true,false,null,"x\\"y"]}', true],
    ['{\n  "pretty": [ {}, [] ]\n}\n', true],
    ['{"a":1,}', false],
    ['[1 2]', false],
    ['{"a":1', false],
    ['{"a":1} trailing', false],
    ['<html>not json</html>', false],
  ];
  for (const [text, valid] of cases) {
    const file = join(work, 'candidate.json');
    await writeFile(file, text);
    const accepted = await runCommand('busybox', ['awk', '-f', checker, file]).then(
      () => true,
      () => false,
    );
    t.equal(accepted, valid, `${valid ? 'accepts' : 'rejects'} ${JSON.stringify(text)}`);
  }
});

t.test('local disk boot sector: signature, and the code points at the marker', async (t) => {
  const sector = localDiskBootSector();
  t.equal(sector.length, 512);
  t.same([sector[510], sector[511]], [0x55, 0xaa]);
  const messageAddress = (sector[5] ?? 0) | ((sector[6] ?? 0) << 8);
  const message = sector.subarray(messageAddress - 0x7c00).toString('latin1');
  t.ok(message.startsWith(`\r\n${LOCAL_DISK_MARKER}\r\n\0`), 'mov si points at the NUL-terminated marker');
});

t.test('QEMU command lines per firmware', async (t) => {
  const base: VmSpec = {
    name: 'vm',
    mac: '52:54:00:77:64:01',
    tap: 'rbtap1',
    firmware: 'bios',
    accelerator: 'tcg',
  };
  const bios = qemuArguments(base).join(' ');
  t.match(bios, /-machine pc /);
  t.match(bios, /virtio-net-pci,netdev=net0,mac=52:54:00:77:64:01,bootindex=1( |$)/, 'default iPXE ROM');
  t.notMatch(bios, /pflash/);
  const pxe = qemuArguments({ ...base, firmware: 'uefi-pxe', ovmfVars: '/tmp/vars.fd' }).join(' ');
  t.match(pxe, /-machine q35 /);
  t.match(pxe, /bootindex=1,romfile= /, "EDK2's own PXE client, not iPXE");
  t.match(pxe, /if=pflash,format=raw,unit=0,readonly=on,file=\/usr\/share\/OVMF\/OVMF_CODE_4M\.fd/);
  t.match(pxe, /if=pflash,format=raw,unit=1,file=\/tmp\/vars\.fd/);
  t.notMatch(pxe, /PXESupport/);
  const http = qemuArguments({ ...base, firmware: 'uefi-http', ovmfVars: '/tmp/vars.fd' }).join(' ');
  t.match(http, /-fw_cfg name=opt\/org\.tianocore\/IPv4PXESupport,string=n/);
  t.match(http, /-fw_cfg name=opt\/org\.tianocore\/IPv6PXESupport,string=n/);
  t.throws(() => qemuArguments({ ...base, firmware: 'uefi-pxe' }), /OVMF_VARS/);
  const disk = qemuArguments({ ...base, disk: '/tmp/disk.img' }).join(' ');
  t.match(disk, /ide-hd,drive=disk0,bootindex=2/);
  t.match(disk, /isa-debug-exit,iobase=0xf4/);
});

t.test('generated rackboot.yaml loads with rackboot itself, in both DHCP modes', async (t) => {
  const machines = [1, 2].map((index) => ({
    hostname: `lab-${index}`,
    mac: labMachineMac(100, index),
    firmware: 'bios' as const,
  }));
  t.equal(machines[0]?.mac, '52:54:00:77:64:01');
  await mkdir(join(work, 'ignition'), { recursive: true });
  await writeFile(join(work, LAB_IGNITION_TEMPLATE), labIgnitionTemplate());
  for (const dhcpMode of ['authoritative', 'proxy'] as const) {
    const text = labRackbootConfig({
      serverAddress: '10.77.100.1',
      prefix: '10.77.100',
      httpPort: 8080,
      dhcpMode,
      apiToken: '0123456789abcdef0123456789abcdef',
      machines,
    });
    const loaded = await loadConfigText(text, join(work, 'rackboot.yaml'), {
      missingAssets: 'warn',
      env: {},
    });
    t.ok(loaded.ok, `${dhcpMode}: ${loaded.ok ? 'loads' : JSON.stringify(loaded.problems)}`);
    if (!loaded.ok) continue;
    t.equal(loaded.config.dhcp.mode, dhcpMode);
    t.same(
      loaded.config.machines.map((machine) => machine.mac),
      machines.map((machine) => machine.mac),
    );
    t.equal(loaded.config.profiles.lab?.kind, 'linux');
  }
});

t.test('the Ignition template renders through rackboot and names the machine', async (t) => {
  const template = parseTemplate(join(work, LAB_IGNITION_TEMPLATE), labIgnitionTemplate());
  const mac = labMachineMac(100, 1);
  const rendered = renderIgnition(template, {
    mac,
    hostname: 'lab-1',
    ip: '10.77.100.100',
    profile: 'lab',
    base_url: 'http://10.77.100.1:8080',
    ignition_url: 'http://10.77.100.1:8080/ignition?token=x',
    installer_ignition_url: 'http://10.77.100.1:8080/ignition/installer?token=x',
    events_url: 'http://10.77.100.1:8080/api/v1/machines/x/events?token=x',
    vars: {},
  });
  t.ok(rendered.ok, 'renders and validates');
  if (!rendered.ok) return;
  t.equal(ignitionProblem(rendered.text, mac), undefined);
  t.match(ignitionProblem(rendered.text, labMachineMac(100, 2)) ?? '', /expected data:,52:54:00:77:64:02/);
  t.match(ignitionProblem('{"ignition":', mac) ?? '', /not JSON/);
  t.match(ignitionProblem('{"ignition":{"version":"3.4.0"}}', mac) ?? '', /no \/etc\/rackboot-lab\/mac/);
});

t.test('dnsmasq accepts both roles, radvd accepts its config', async (t) => {
  for (const role of [
    { kind: 'addresses-only' as const },
    { kind: 'boot-peer' as const, tftpRoot: work, httpBase: 'http://10.77.100.1:8080' },
  ]) {
    const args = dnsmasqArguments({
      interface: 'lan0',
      prefix: '10.77.100',
      leaseFile: join(work, 'leases'),
      role,
    });
    await t.resolves(runCommand('dnsmasq', ['--test', ...args]), `dnsmasq --test accepts ${role.kind}`);
  }
  await t.rejects(runCommand('dnsmasq', ['--test', '--dhcp-range=nonsense']), 'and the check can fail');
  const config = join(work, 'radvd.conf');
  await writeFile(config, radvdConfig());
  const [first, ...rest] = radvdArguments(config, join(work, 'radvd.pid'));
  t.equal(first, '--nodaemon');
  t.ok(rest.includes(config));
  const check = await runCommand('radvd', ['--configtest', '--config', config]).then(
    () => 'ok',
    (error: Error) => error.message,
  );
  t.equal(check, 'ok', 'radvd --configtest');
});

t.test('boot timeline from serial lines', async (t) => {
  const mac = '52:54:00:77:8c:01';
  const lines = [
    [400, 'iPXE initialising devices...ok'],
    [8400, '  Station IP address is 10.77.140.190'],
    [9000, '  NBP file downloaded successfully.'],
    [13400, 'iPXE initialising devices...ok'],
    [15500, `Configuring (net0 ${mac})... ok`],
    [17200, '[    0.000000] Linux version 6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org)'],
    [20500, 'RB-LAB-IGNITION-FETCHED'],
    [20600, `RB-LAB-RESULT installed mac=${mac} ip=10.77.140.190`],
  ].map(([atMs, text]) => ({ atMs: Number(atMs), text: String(text) }));
  t.same(bootTimeline('uefi-pxe', lines), {
    console: 0.4,
    dhcp: 8.4,
    'boot-program': 13.4,
    'ipxe-dhcp': 15.5,
    kernel: 17.2,
    ignition: 20.5,
    installed: 20.6,
  });
  t.same(bootTimeline('bios', lines), {
    console: 0.4,
    dhcp: 15.5,
    kernel: 17.2,
    ignition: 20.5,
    installed: 20.6,
  });
  t.same(
    bootTimeline('bios', lines.slice(0, 3)),
    { console: 0.4 },
    'phases that never printed stay undefined',
  );
  t.same(bootTimeline('bios', []), {});
});

t.test('the baseline script names the initrd for the EFI stub', async (t) => {
  const script = peerBootScript('http://10.77.100.1:8080');
  t.match(script, /^#!ipxe\n/);
  t.match(script, /kernel http:\/\/10\.77\.100\.1:8080\/assets\/vmlinuz initrd=initramfs\.img /);
  t.match(script, /rb\.ignition=http:\/\/10\.77\.100\.1:8080\/ignition\/\$\{mac\}\.json/);
});

t.test('serial console lines lose the control sequences SeaBIOS and OVMF send', async (t) => {
  t.equal(consoleText('\x1b[=3h\x1b[=3h\x1b[=3hBdsDxe: loading Boot0001   '), 'BdsDxe: loading Boot0001');
  t.equal(consoleText('\x1b[2J\x1b[01;01H\x1b[0m\x1b[35m\x1b[40mSeaBIOS'), 'SeaBIOS');
  t.equal(consoleText('\x1b(Bplain\x1bc'), 'plain');
});

t.test('the boot result is the word after the marker, whatever a failure reason says', async (t) => {
  const mac = '52:54:00:77:64:01';
  t.equal(bootResult(`${GUEST_MARKERS.result} installed mac=${mac} ip=10.77.100.100`), 'installed');
  t.equal(bootResult(`${GUEST_MARKERS.result} failed mac=${mac} reason=insmod virtio_net`), 'failed');
  // What the guest prints when rackboot refused its installed event: rackboot never recorded it.
  t.ok(guestInitScript().includes('fail "posting installed"'));
  t.equal(bootResult(`${GUEST_MARKERS.result} failed mac=${mac} reason=posting installed`), 'failed');
  t.equal(bootResult(LOCAL_DISK_MARKER), 'local-disk');
});

t.test('a VM that did not install is reported with its reason and its console tail once', async (t) => {
  // A stand-in for QEMU that prints two console lines and exits, as QEMU does when it cannot start.
  const network = {
    spawn: () => spawn('sh', ['-c', 'echo "SeaBIOS (version 1.16)"; echo "qemu: cannot start" >&2; exit 1']),
  } as unknown as LabNetwork;
  const spec: VmSpec = {
    name: 'lab-1',
    mac: '52:54:00:77:64:01',
    tap: 'rbtap1',
    firmware: 'bios',
    accelerator: 'tcg',
  };
  const vm = startVm(network, spec, { hardLimitSeconds: 10 });
  const detail = await vm.waitForLine(/RB-LAB-RESULT/, 10_000).then(
    () => 'unexpected marker',
    (error: Error) => error.message,
  );
  const report = unfinishedReport({ detail, tail: vm.tail() }).join('\n');
  t.match(report, /^ {2}lab-1: QEMU exited \(1\) before \S+\n {2}last console lines:\n/);
  t.equal(report.split('qemu: cannot start').length - 1, 1, 'the console tail appears once');
  t.match(report, /last console lines:\nSeaBIOS \(version 1\.16\)\nqemu: cannot start$/);
});
