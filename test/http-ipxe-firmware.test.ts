import { spawn } from 'node:child_process';
import { copyFileSync, existsSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import type { Mac } from '../src/boot-plan.js';
import { requireTools } from './helpers/netns.js';
import { BASE_YAML, type BootFixture, bootFixture, fixtureApp } from './ignition/boot-fixture.js';

/**
 * The scripts against real iPXE (Debian's 2019 build, the ROM QEMU gives virtio-net under SeaBIOS):
 * /boot.ipxe identifies the machine with ${netX/mac:hexhyp} and ${buildarch}, the machine script's
 * bounded retry (iseq on a string counter, goto ${rb-step}) survives two failed kernel downloads,
 * then initrd --name and boot run the downloaded kernel (iPXE's own ipxe.lkrn, a bzImage); an
 * installed machine's `exit` gets back to the firmware through the entry script.
 * Network: QEMU user networking with restrict=on (no route anywhere); its one forwarding rule
 * connects the guest's 10.0.2.100:80 to this test's server on loopback, one busybox nc per connection.
 */
const LKRN = '/usr/lib/ipxe/ipxe.lkrn';
const BOOT_TIMEOUT_MS = 150_000;
const NODE1 = '52:54:00:12:34:56' as Mac;

interface FirmwareRun {
  fixture: BootFixture;
  /** Request URLs the server saw, tokens replaced by T. */
  requests: string[];
  /** The serial console so far, without terminal escapes. */
  serial(): string;
}

/**
 * Serves the fixture on loopback and powers on a SeaBIOS VM with the node1 NIC, until the serial
 * console matches `until` (rejects on timeout or when QEMU exits first). `prepare` runs before the
 * server listens: states, failing routes.
 */
async function bootUntil(
  t: Test,
  until: RegExp,
  prepare: (fixture: BootFixture, app: Awaited<ReturnType<typeof fixtureApp>>) => void,
): Promise<FirmwareRun> {
  await requireTools('qemu-system-x86_64', 'busybox');
  if (!existsSync(LKRN)) throw new Error(`${LKRN} missing: install the Debian package ipxe`);
  const yaml = BASE_YAML.replace('address: 10.77.0.1', 'address: 10.0.2.100').replace(
    'port: 8080',
    'port: 80',
  );
  const fixture = await bootFixture({ yaml });
  copyFileSync(LKRN, join(fixture.dir, 'assets', 'fcos', 'kernel'));
  const app = await fixtureApp(fixture);
  const requests: string[] = [];
  app.addHook('onRequest', async (request) => {
    requests.push(request.url.replace(/token=[^&]+/, 'token=T'));
  });
  prepare(fixture, app);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as AddressInfo).port;

  const qemu = spawn(
    'qemu-system-x86_64',
    [
      ...['-machine', 'pc', '-accel', 'tcg', '-m', '256', '-nographic', '-no-reboot'],
      '-netdev',
      `user,id=n0,restrict=on,bootfile=http://10.0.2.100/boot.ipxe,guestfwd=tcp:10.0.2.100:80-cmd:busybox nc 127.0.0.1 ${port}`,
      ...['-device', `virtio-net-pci,netdev=n0,mac=${NODE1},bootindex=1`],
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let serial = '';
  qemu.stdout.on('data', (chunk: Buffer) => {
    serial += chunk.toString().replace(/\x1b\[[0-9;]*[A-Za-z]|\r/g, '');
  });
  qemu.stderr.on('data', (chunk: Buffer) => {
    serial += chunk.toString();
  });
  t.teardown(async () => {
    if (qemu.exitCode === null) qemu.kill('SIGKILL');
    await app.close();
    await fixture.cleanup();
  });

  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${until} not seen within ${BOOT_TIMEOUT_MS} ms:\n${serial.slice(-3000)}`)),
      BOOT_TIMEOUT_MS,
    );
    const check = () => {
      if (until.test(serial)) {
        clearTimeout(timer);
        resolve();
      }
    };
    qemu.stdout.on('data', check);
    qemu.on('exit', () => {
      clearTimeout(timer);
      reject(new Error(`QEMU exited ${qemu.exitCode}:\n${serial.slice(-3000)}`));
    });
  });
  return { fixture, requests, serial: () => serial };
}

t.test('real iPXE runs the entry and machine scripts, retries failed downloads, boots', async (t) => {
  // The kernel we serve is iPXE itself: once `boot` runs it, a second iPXE banner appears.
  const { fixture, requests, serial } = await bootUntil(
    t,
    /initramfs\.img[\s\S]*iPXE initialising devices/,
    (_fixture, app) => {
      let kernelFailuresLeft = 2;
      app.addHook('onRequest', async (request, reply) => {
        if (request.url === '/assets/fcos/kernel' && kernelFailuresLeft > 0) {
          kernelFailuresLeft -= 1;
          return reply.code(503).send('try again');
        }
      });
    },
  );

  t.match(serial(), 'rackboot: node1 (52:54:00:12:34:56): profile coreos (coreos-install, i386)');
  t.equal(
    serial().match(/rackboot: download of rb-kernel failed, retrying in 5 s/g)?.length,
    2,
    'two retries',
  );
  t.strictSame(requests, [
    '/boot.ipxe',
    '/boot/52-54-00-12-34-56.ipxe?arch=i386&platform=pcbios&uuid=',
    '/assets/fcos/kernel',
    '/assets/fcos/kernel',
    '/assets/fcos/kernel',
    '/assets/fcos/initramfs.img',
  ]);
  t.match(fixture.events, [
    {
      type: 'ipxe-script',
      mac: '52:54:00:12:34:56',
      detail: { script: 'install', arch: 'i386', platform: 'pcbios' },
    },
  ]);
});

t.test('an installed machine whose local-disk script exits gets back to the firmware', async (t) => {
  // The VM has no disk, so `sanboot --drive 0x80` fails and the local-disk script runs `exit`, the
  // same command the UEFI branch runs. Back in SeaBIOS, with no boot option left, it says so; a
  // second look at the machine script would mean the entry script went on to its retry lines.
  const { requests, serial } = await bootUntil(
    t,
    /No bootable device|fetching the boot script of this machine failed/,
    (fixture) => fixture.states.set(NODE1, 'installed'),
  );
  t.match(serial(), 'rackboot: node1 (52:54:00:12:34:56) is installed, booting from the local disk');
  t.notMatch(serial(), 'fetching the boot script of this machine failed');
  t.match(serial(), 'No bootable device', 'SeaBIOS moved on past the network boot');
  t.strictSame(requests, ['/boot.ipxe', '/boot/52-54-00-12-34-56.ipxe?arch=i386&platform=pcbios&uuid=']);
});
