import { execFile } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import type { Mac } from '../src/boot-plan.js';
import { buildApp } from '../src/http/app.js';
import { DISK_WRITTEN_UNIT_NAME } from '../src/ignition/render.js';
import { createBootDecision } from '../src/inventory/decision.js';
import { requireTools } from './helpers/netns.js';
import { BASE_YAML, bootFixture, fixtureApp } from './ignition/boot-fixture.js';

const execFileAsync = promisify(execFile);
const NODE1 = '52:54:00:12:34:56' as Mac;
const NODE2 = '52:54:00:12:34:57' as Mac;
const NODE3 = '52:54:00:12:34:58' as Mac;
const STRANGER = '52:54:00:aa:bb:cc' as Mac;

async function setup(t: Test, options: Parameters<typeof bootFixture>[0] = {}) {
  const fixture = await bootFixture(options);
  const app = await fixtureApp(fixture);
  t.teardown(async () => {
    await app.close();
    await fixture.cleanup();
  });
  const tokenOf = (mac: Mac) => fixture.deps.secrets.tokenFor(mac, 'ignition', Date.now());
  const script = async (mac: string, query = '') => {
    const response = await app.inject(`/boot/${mac}.ipxe${query}`);
    t.equal(response.statusCode, 200);
    t.match(response.headers['content-type'], /^text\/plain/);
    return response.body;
  };
  /** Snapshots must not depend on the random per-fixture secret. */
  const stable = (text: string) => text.replace(/token=[A-Za-z0-9_.-]+/g, 'token=TOKEN');
  return { fixture, app, tokenOf, script, stable };
}

t.test('/boot.ipxe identifies the machine with iPXE variables and retries, bounded', async (t) => {
  const { app, stable } = await setup(t);
  const response = await app.inject('/boot.ipxe');
  t.equal(response.statusCode, 200);
  t.match(
    response.body,
    'chain --autofree http://10.77.0.1:8080/boot/${netX/mac:hexhyp}.ipxe?arch=${buildarch:uristring}&platform=${platform:uristring}&uuid=${uuid:uristring} || goto rb-retry',
  );
  t.match(response.body, 'iseq ${rb-tries} xxxxx && goto rb-failed');
  // An installed machine's script ends with `exit`, which returns from `chain` with success (real
  // iPXE: test/http-ipxe-firmware.test.ts); the entry script must exit too, not fall into its retry.
  t.match(
    response.body,
    /\|\| goto rb-retry\nexit\n:rb-retry\n/,
    'a machine script that exits ends this one',
  );
  t.matchSnapshot(stable(response.body), 'entry script');
  const withoutPort = await app.inject({ url: '/boot.ipxe', headers: { host: '10.77.0.1' } });
  t.equal(withoutPort.body, response.body, 'the Host header does not matter');
});

t.test('coreos-install scripts per firmware arch: kargs, initrd=main, retries', async (t) => {
  const { script, stable, tokenOf } = await setup(t);
  const efi = await script('52-54-00-12-34-56', '?arch=x86_64&platform=efi&uuid=1234');
  const kernelLine = efi.split('\n').find((line) => line.startsWith('kernel '));
  t.equal(
    kernelLine,
    'kernel http://10.77.0.1:8080/assets/fcos/kernel initrd=main' +
      ' coreos.live.rootfs_url=http://10.77.0.1:8080/assets/fcos/rootfs.img coreos.inst.install_dev=/dev/sda' +
      ` coreos.inst.ignition_url=http://10.77.0.1:8080/ignition/52-54-00-12-34-56.ign?token=${tokenOf(NODE1)}` +
      ' ignition.firstboot ignition.platform.id=metal' +
      ` ignition.config.url=http://10.77.0.1:8080/ignition/installer/52-54-00-12-34-56.ign?token=${tokenOf(NODE1)}` +
      ' console=tty0 console=ttyS0,115200n8 || goto rb-retry',
  );
  t.match(efi, 'initrd --name main http://10.77.0.1:8080/assets/fcos/initramfs.img || goto rb-retry');
  t.matchSnapshot(stable(efi), 'coreos-install x86_64 efi');
  // BIOS iPXE (undionly) is a 32-bit build and reports i386: it gets the x86_64 assets.
  const bios = await script('5254.0012.3456', '?arch=i386&platform=pcbios');
  t.match(bios, 'kernel http://10.77.0.1:8080/assets/fcos/kernel initrd=main');
  t.matchSnapshot(stable(bios), 'coreos-install i386 (BIOS iPXE) gets x86_64');
  const arm = await script('52-54-00-12-34-58', '?arch=arm64&platform=efi');
  t.match(arm, 'kernel http://10.77.0.1:8080/assets/fcos-arm/kernel initrd=main');
  t.match(
    arm,
    'coreos.live.rootfs_url=http://10.77.0.1:8080/assets/fcos-arm/rootfs.img coreos.inst.install_dev=/dev/vda',
  );
  t.match(arm, 'console=tty0 console=ttyS0,115200n8', 'default console args when the profile names none');
  t.matchSnapshot(stable(arm), 'coreos-install per-arch assets, arm64');
});

t.test('a profile that brings its own live Ignition config gets no installer hook', async (t) => {
  const yaml = `server: { address: 10.77.0.1, assets: assets, state: state }
profiles:
  own:
    kind: coreos-install
    kernel: fcos/kernel
    initrd: [fcos/initramfs.img]
    rootfs: fcos/rootfs.img
    install_device: /dev/sda
    args: [ignition.firstboot, ignition.platform.id=qemu, "ignition.config.url=http://10.77.0.9/live.ign"]
  platform:
    kind: coreos-install
    kernel: fcos/kernel
    initrd: [fcos/initramfs.img]
    rootfs: fcos/rootfs.img
    install_device: /dev/sda
    args: [ignition.platform.id=qemu]
machines:
  - { mac: "52:54:00:12:34:56", profile: own }
  - { mac: "52:54:00:12:34:57", profile: platform }
`;
  const { script } = await setup(t, { yaml });
  const own = await script('52-54-00-12-34-56');
  t.notMatch(own, '/ignition/installer/', 'the profile owns the live config');
  t.equal(own.match(/ignition\.(firstboot|platform\.id|config\.url)/g)?.length, 3, 'its args, once each');
  const platform = await script('52-54-00-12-34-57');
  t.match(
    platform,
    /ignition\.firstboot ignition\.config\.url=http:\/\/10\.77\.0\.1:8080\/ignition\/installer\//,
  );
  t.equal(
    platform.match(/ignition\.platform\.id=/g)?.length,
    1,
    "the profile's platform id, not metal as well",
  );
});

t.test(
  'network-first firmware: the installer reports the disk written, the reboot boots the disk',
  async (t) => {
    const fixture = await bootFixture();
    const { lifecycle } = fixture;
    // The real lifecycle drives the boot decision here, as in `rackboot serve`.
    const app = await buildApp({
      ...fixture.deps,
      decision: createBootDecision(() => fixture.config, lifecycle.stateOf, lifecycle.bootsFromDisk),
      record: lifecycle.record,
    });
    t.teardown(async () => {
      await app.close();
      await fixture.cleanup();
    });
    const firmwareBoot = async () => {
      await lifecycle.record({
        mac: NODE1,
        source: 'dhcp',
        type: 'dhcp-ack',
        detail: { firmware: 'bios-pxe', arch: 'x86_64' },
      });
      await lifecycle.record({
        mac: NODE1,
        source: 'tftp',
        type: 'tftp-transfer',
        detail: { outcome: 'complete' },
      });
      await lifecycle.record({
        mac: NODE1,
        source: 'dhcp',
        type: 'dhcp-ack',
        detail: { firmware: 'ipxe', arch: 'i386' },
      });
      const response = await app.inject('/boot/52-54-00-12-34-56.ipxe?arch=i386&platform=pcbios');
      t.equal(response.statusCode, 200);
      return response.body;
    };
    const get = (url: string) => app.inject(url.replace('http://10.77.0.1:8080', ''));

    const installer = await firmwareBoot();
    const installerUrl = /ignition\.config\.url=(\S+)/.exec(installer)?.[1] ?? '';
    const installedUrl = /coreos\.inst\.ignition_url=(\S+)/.exec(installer)?.[1] ?? '';
    t.match(installerUrl, '/ignition/installer/52-54-00-12-34-56.ign?token=');

    const refused = await get(installerUrl.replace(/token=.*/, 'token=forged'));
    t.equal(refused.statusCode, 403, 'the installer config is only for its machine');
    const live = await get(installerUrl);
    t.equal(live.statusCode, 200);
    const liveConfig = live.json() as {
      ignition: { version: string };
      systemd: { units: { name: string; enabled: boolean; contents: string }[] };
    };
    const [hook] = liveConfig.systemd.units;
    t.equal(hook?.name, DISK_WRITTEN_UNIT_NAME);
    t.equal(hook?.enabled, true);
    for (const line of [
      'Requires=coreos-installer.service',
      'After=coreos-installer.service',
      'Before=coreos-installer.target',
      'WantedBy=coreos-installer.target',
      'TimeoutStartSec=3min',
    ])
      t.match(hook?.contents, line);
    const report = /--data '(\{[^']*\})' (\S+)/.exec(hook?.contents ?? '');
    t.equal(report?.[1], '{"type":"disk-written"}');
    t.equal(lifecycle.stateOf(NODE1), 'booting', 'fetching the live config is not the install');

    // Debian's ignition-validate (Ignition 2.14, specs up to 3.3.0) on the exact bytes served.
    await requireTools('ignition-validate');
    const served = join(fixture.dir, 'installer.ign');
    writeFileSync(served, live.body);
    const validated = await execFileAsync('ignition-validate', [served]);
    t.equal(`${validated.stdout}${validated.stderr}`, '', 'ignition-validate: no errors, no warnings');

    t.equal((await get(installedUrl)).statusCode, 200, 'coreos-installer fetches the installed config');
    t.equal(lifecycle.stateOf(NODE1), 'installing');
    const eventsPath = (report?.[2] ?? '').replace('http://10.77.0.1:8080', '');
    const postReport = (payload: string) =>
      app.inject({
        method: 'POST',
        url: eventsPath,
        headers: { 'content-type': 'application/json' },
        payload,
      });
    const posted = await postReport(report?.[1] ?? '');
    t.equal(posted.statusCode, 202, 'the hook reports with the URL and token it carries');

    // coreos-installer reboots; the firmware tries the network first.
    const reboot = await firmwareBoot();
    t.match(reboot, 'sanboot --no-describe --drive 0x80', 'the reboot boots the disk');
    t.notMatch(reboot, 'coreos.inst', 'no second install');
    t.equal(lifecycle.stateOf(NODE1), 'installing', 'installed only once the installed system says so');

    const installed = await postReport('{"type":"installed"}');
    t.equal(installed.statusCode, 202);
    t.equal(lifecycle.stateOf(NODE1), 'installed');
    const types = lifecycle.latestEvents({ mac: NODE1 }).map((event) => event.type);
    await lifecycle.close();
    t.ok(types.includes('installer-ignition-fetch'), 'the live config fetch is in the history');
  },
);

t.test('linux profile: every initrd named and listed as initrd=, templated args', async (t) => {
  const { script, stable, tokenOf, fixture } = await setup(t);
  const linux = await script('525400123457', '?arch=x86_64&platform=efi');
  const token = tokenOf(NODE2);
  const eventsToken = fixture.deps.secrets.tokenFor(NODE2, 'events', Date.now());
  t.match(
    linux,
    'kernel http://10.77.0.1:8080/assets/linux/vmlinuz initrd=initramfs.img initrd=extra.cpio console=ttyS0' +
      ` my.ignition=http://10.77.0.1:8080/ignition/52-54-00-12-34-57.ign?token=${token}` +
      ` my.report=http://10.77.0.1:8080/api/v1/machines/52-54-00-12-34-57/events?token=${eventsToken} role=storage || goto rb-retry`,
  );
  t.match(
    linux,
    'initrd --name initramfs.img http://10.77.0.1:8080/assets/linux/initramfs.img || goto rb-retry',
  );
  t.match(linux, 'initrd --name extra.cpio http://10.77.0.1:8080/assets/linux/extra.cpio || goto rb-retry');
  t.notMatch(linux, 'coreos.', 'kind linux gets exactly its own args');
  t.matchSnapshot(stable(linux), 'linux x86_64');
});

t.test('installed machines boot their disk; unknown ones are told so; events name the script', async (t) => {
  const { fixture, script, stable } = await setup(t);
  fixture.states.set(NODE1, 'installed');
  const local = await script('52-54-00-12-34-56', '?arch=x86_64&platform=pcbios');
  t.match(local, 'iseq ${platform} pcbios || exit');
  t.match(local, 'sanboot --no-describe --drive 0x80 || exit');
  t.match(local, 'rackboot reprovision 52:54:00:12:34:56');
  t.notMatch(local, 'kernel');
  t.matchSnapshot(stable(local), 'installed: local disk');

  const unknown = await script('52-54-00-AA-BB-CC');
  t.match(unknown, 'echo rackboot: this machine (52:54:00:aa:bb:cc) is not in the rackboot inventory');
  t.match(unknown, /sleep 60\nreboot/);
  t.match(
    unknown,
    'rackboot machines adopt 52:54:00:aa:bb:cc --profile ',
    'the adopt command as it is typed',
  );
  t.matchSnapshot(unknown, 'unknown machine');

  t.match(fixture.events, [
    { mac: NODE1, source: 'http', type: 'ipxe-script', detail: { script: 'local-disk', platform: 'pcbios' } },
    { mac: STRANGER, source: 'http', type: 'unknown-machine', detail: { script: 'unknown' } },
  ]);
  t.equal(fixture.events.length, 2);

  fixture.states.set(NODE1, 'discovered');
  t.match(
    await script('52-54-00-12-34-56'),
    'coreos.inst.install_dev=/dev/sda',
    'reprovisioned: the installer again',
  );
});

t.test('a machine whose boot cannot be built is told why on its console', async (t) => {
  const yaml = `server: { address: 10.77.0.1, assets: assets, state: state }
profiles:
  streamed: { kind: coreos-install, coreos: { stream: stable }, install_device: /dev/sda }
machines:
  - { mac: "52:54:00:12:34:56", profile: streamed }
`;
  const fixture = await bootFixture({ yaml, allowMissingAssets: true });
  const app = await fixtureApp(fixture);
  t.teardown(async () => {
    await app.close();
    await fixture.cleanup();
  });
  const response = await app.inject('/boot/52-54-00-12-34-56.ipxe?arch=x86_64');
  t.equal(response.statusCode, 200);
  t.match(response.body, /echo rackboot: cannot boot 52:54:00:12:34:56: .*rackboot fetch coreos/);
  // After `echo rackboot:` iPXE's getopt has stopped, so the command is shown as it must be typed.
  t.match(
    response.body,
    'run rackboot fetch coreos --stream stable --arch x86_64',
    'the fix, options and all',
  );
  t.notMatch(response.body, /\$\{(?!platform)/, 'no text iPXE would expand');
  t.match(fixture.events, [{ type: 'ipxe-script', detail: { script: 'unavailable' } }]);
});

t.test('a kernel argument that is an iPXE command separator is refused', async (t) => {
  // `kernel … ; reboot || goto rb-retry`: real iPXE ended the kernel command at the `;` and rebooted.
  const machines = [';', '&&', '||'].map(
    (separator, index) =>
      `  - { mac: "52:54:00:12:34:6${index}", profile: plain, vars: { role: storage, extra: "${separator}" } }`,
  );
  const yaml = `${BASE_YAML.replace('"role={{vars.role}}"', '"role={{vars.role}}", "{{vars.extra}}"')}${machines.join('\n')}\n`;
  const fixture = await bootFixture({ yaml });
  const app = await fixtureApp(fixture);
  t.teardown(async () => {
    await app.close();
    await fixture.cleanup();
  });
  for (const [index, separator] of [';', '&&', '||'].entries()) {
    const body = (await app.inject(`/boot/52-54-00-12-34-6${index}.ipxe`)).body;
    t.notMatch(body, /^kernel /m, `${separator}: no kernel line`);
    t.match(body, 'an iPXE command separator (, and or)', `${separator}: the console says why`);
  }
});

t.test(
  'a kernel argument starting with # is refused: iPXE would take the rest of the line as a comment',
  async (t) => {
    // exec.c command_terminator(): a token starting with `#` ends the command, so `kernel … #x
    // console=… || goto rb-retry` lost its later arguments and its retry without a word.
    const yaml = `${BASE_YAML.replace('"role={{vars.role}}"', '"role={{vars.role}}", "{{vars.extra}}", "quiet"')}  - { mac: "52:54:00:12:34:60", profile: plain, vars: { role: storage, extra: "#rest" } }\n`;
    const fixture = await bootFixture({ yaml });
    const app = await fixtureApp(fixture);
    t.teardown(async () => {
      await app.close();
      await fixture.cleanup();
    });
    const body = (await app.inject('/boot/52-54-00-12-34-60.ipxe')).body;
    t.notMatch(body, /^kernel /m, 'no kernel line');
    const why = body.split('\n').find((line) => line.includes('cannot boot')) ?? '';
    t.match(why, /\(#\)rest .* starts an iPXE comment/, 'the console says why, naming the word');
    t.notMatch(why, /\s#/, 'and no word of its echo starts with # (which would cut the line short)');
  },
);

t.test('a var or value that would split the kernel line or add iPXE commands is refused', async (t) => {
  const yaml = BASE_YAML.replace(
    '"role={{vars.role}}"',
    '"role={{vars.role}}", "tier={{vars.tier}}"',
  ).replace(
    'vars: { role: storage }',
    'vars: { role: storage, tier: "w\\nshell\\nchain http://10.77.0.9/x" }',
  );
  const fixture = await bootFixture({ yaml });
  const app = await fixtureApp(fixture);
  t.teardown(async () => {
    await app.close();
    await fixture.cleanup();
  });
  // (Whitespace written into the config itself is split or refused by validate: config.test.ts.)
  for (const [mac, word] of [['52-54-00-12-34-57', 'tier=w\\nshell\\nchain http://10.77.0.9/x']] as const) {
    const body = (await app.inject(`/boot/${mac}.ipxe`)).body;
    t.notMatch(body, /^(shell|chain|kernel)/m, `${mac}: no command of its own, no kernel line`);
    t.match(body, `holds whitespace, a control character`, `${mac}: the console says why`);
    t.ok(body.includes(word), `${mac}: and names the word (quotes left out on the console)`);
  }
  t.match(
    (await app.inject('/boot/52-54-00-12-34-56.ipxe')).body,
    /^kernel /m,
    'the other machines still boot',
  );
});

t.test(
  'an install profile fills its args per machine and refuses only the machine whose var breaks the line',
  async (t) => {
    // The profile's shared words are checked once; a var filled in per machine must still be checked.
    const yaml = BASE_YAML.replace(
      'args: [console=tty0, "console=ttyS0,115200n8"]',
      'args: [console=tty0, "role={{vars.role}}"]',
    )
      .replace('vars: { role: worker }', 'vars: { role: "worker\\nshell" }')
      .replace(
        '  - { mac: "52:54:00:12:34:58", hostname: node3, profile: multiarch }',
        '  - { mac: "52:54:00:12:34:58", hostname: node3, profile: coreos, vars: { role: storage } }',
      );
    const { script } = await setup(t, { yaml });
    const refused = await script('52-54-00-12-34-56');
    t.notMatch(refused, /^(shell|kernel)/m, 'no kernel line, no command of its own');
    t.match(refused, 'holds whitespace, a control character', 'the console says why');
    const booted = await script('52-54-00-12-34-58');
    t.match(
      booted,
      /^kernel \S+ initrd=main .* role=storage \|\| goto rb-retry$/m,
      'the same profile boots the other machine',
    );
    t.match(booted, / console=tty0 role=storage /, 'its own console arg, so no default console args');
  },
);

t.test(
  'one address past events.http_rate is answered, its events left out and counted in a warning',
  async (t) => {
    const { fixture, app } = await setup(t, { yaml: `${BASE_YAML}events:\n  http_rate: 2\n` });
    const fetchScript = (remoteAddress: string) =>
      app.inject({ url: '/boot/52-54-00-12-34-56.ipxe', remoteAddress });
    const answers = [];
    for (let request = 0; request < 25; request++) answers.push((await fetchScript('10.77.0.50')).statusCode);
    t.same(new Set(answers), new Set([200]), 'every request answered');
    t.equal(fixture.events.length, 20, "a burst of ten seconds' worth recorded");
    t.equal((await fetchScript('10.77.0.51')).statusCode, 200);
    t.equal(fixture.events.length, 21, 'another address has its own budget');
    t.equal(fixture.events.at(-1)?.ip, '10.77.0.51');
    const warnings = fixture.logs.filter((line) => String(line.msg).includes('events.http_rate'));
    t.equal(warnings.length, 1, 'one warning per address every 10 s, not one per request');
    t.match(warnings[0], {
      level: 40,
      ip: '10.77.0.50',
      mac: NODE1,
      type: 'ipxe-script',
      perSecond: 2,
    });
    t.notOk('suppressed' in (warnings[0] ?? {}), 'nothing left out before the first warning: no count');

    // A reload that turns the limit off applies to the next request.
    const reloaded = { ...fixture.config, events: { ...fixture.config.events, http_rate: 0 } };
    fixture.deps.config = () => reloaded;
    await fetchScript('10.77.0.50');
    t.equal(fixture.events.length, 22, 'http_rate 0: no limit');
  },
);

t.test('malformed script requests', async (t) => {
  const { app } = await setup(t);
  t.equal((await app.inject('/boot/not-a-mac.ipxe')).statusCode, 404);
  t.equal((await app.inject('/boot/52-54-00-12-34-56.txt')).statusCode, 404);
  for (const group of ['ff-ff-ff-ff-ff-ff', '01-00-5e-00-00-01', '00-00-00-00-00-00']) {
    t.equal((await app.inject(`/boot/${group}.ipxe`)).statusCode, 404, `${group} is no machine's own MAC`);
  }
  t.equal((await app.inject(`/boot/52-54-00-12-34-56.ipxe?arch=${'x'.repeat(100)}`)).statusCode, 400);
});

t.test('require_leased_address: false takes a machine credential from another address', async (t) => {
  // A machine with two NICs on the provisioning LAN may fetch from the one it did not boot from.
  const leases = new Map<string, Mac>([
    ['10.77.0.21', NODE1],
    ['10.77.0.50', '52:54:00:12:34:99' as Mac],
  ]);
  const fromSecondNic = async (yaml: string) => {
    const { app, tokenOf } = await setup(t, { yaml, macForIp: (ip) => leases.get(ip) });
    return app.inject({
      url: `/ignition/52-54-00-12-34-56.ign?token=${tokenOf(NODE1)}`,
      remoteAddress: '10.77.0.50',
    });
  };
  const bound = await fromSecondNic(BASE_YAML);
  t.equal(bound.statusCode, 403, 'bound to the lease by default');
  t.match(
    bound.json().message,
    'ignition.require_leased_address: false takes it',
    'the refusal names the way out',
  );
  const unbound = await fromSecondNic(`${BASE_YAML}ignition: { require_leased_address: false }\n`);
  t.equal(unbound.statusCode, 200, 'the token alone, with the setting off');
});

t.test('Ignition only for its machine: token, address, 503 while broken, 404 for strangers', async (t) => {
  const leases = new Map<string, Mac>([['10.77.0.21', NODE1]]);
  const { fixture, app, tokenOf } = await setup(t, { macForIp: (ip) => leases.get(ip) });
  const url = (mac: string, token?: string) =>
    `/ignition/${mac}.ign${token === undefined ? '' : `?token=${token}`}`;
  const get = (path: string, remoteAddress = '10.77.0.21') => app.inject({ url: path, remoteAddress });

  const ok = await get(url('52-54-00-12-34-56', tokenOf(NODE1)));
  t.equal(ok.statusCode, 200);
  t.match(ok.headers['content-type'], /^application\/json/);
  const config = ok.json();
  t.equal(config.ignition.version, '3.4.0');
  t.match(JSON.stringify(config), 'rackboot-report-installed.service');
  // The installed system keeps its events URL in a world-readable unit file.
  const eventsToken = /\/events\?token=([\w.-]+)/.exec(JSON.stringify(config))?.[1];
  t.ok(eventsToken, 'the served config carries the events URL with its token');
  t.not(eventsToken, tokenOf(NODE1), 'a token of its own, not the Ignition token');
  t.match(fixture.events.at(-1), {
    mac: NODE1,
    type: 'ignition-fetch',
    ip: '10.77.0.21',
    detail: { profile: 'coreos' },
  });

  for (const [name, response] of [
    ["machine B's token", await get(url('52-54-00-12-34-56', tokenOf(NODE2)))],
    ['no token', await get(url('52-54-00-12-34-56'))],
    ['empty token', await get(url('52-54-00-12-34-56', ''))],
    ['garbage token', await get(url('52-54-00-12-34-56', 'AAAAAAAAAAAAAAAAAAAAAA'))],
    ['right token, another IP', await get(url('52-54-00-12-34-56', tokenOf(NODE1)), '10.77.0.99')],
    ["the machine's events token", await get(url('52-54-00-12-34-56', eventsToken))],
  ] as const) {
    t.equal(response.statusCode, 403, name);
    t.equal(response.json().error, 'forbidden', `${name}: JSON error`);
  }
  const refusals = fixture.logs.filter((line) => line.msg === 'Ignition refused');
  t.equal(refusals.length, 3, 'each requester, MAC and reason is logged once (the rest within 10 s)');
  t.match(refusals.at(-1), { mac: NODE1, requester: '10.77.0.99', level: 40 });
  t.notMatch(JSON.stringify(fixture.logs), tokenOf(NODE1), 'no log line carries the token');

  const unknown = await get(url('52-54-00-aa-bb-cc', tokenOf(STRANGER)), '10.77.0.21');
  t.equal(unknown.statusCode, 403, 'a stranger is not leased this address either');
  leases.set('10.77.0.30', STRANGER);
  t.equal((await get(url('52-54-00-aa-bb-cc', tokenOf(STRANGER)), '10.77.0.30')).statusCode, 404);

  writeFileSync(
    join(fixture.dir, 'ignition', 'plain.ign'),
    '{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"relative"}]}}',
  );
  leases.set('10.77.0.22', NODE2);
  const broken = await get(url('52-54-00-12-34-57', tokenOf(NODE2)), '10.77.0.22');
  t.equal(broken.statusCode, 503, 'Ignition retries 5xx; 404 would be fatal');
  t.equal(broken.headers['retry-after'], '10');
  t.match(broken.json().problems, [/plain\.ign:1:\d+: path not absolute/]);
});

t.test(
  'refusal logs: one per requester, MAC and reason per 10 s, the next one counting the rest',
  async (t) => {
    let clock = Date.UTC(2026, 10, 29, 12);
    t.capture(Date, 'now', () => clock);
    const { fixture, app } = await setup(t);
    const refuse = async (mac: string, remoteAddress: string, query = '?token=AAAAAAAAAAAAAAAAAAAAAA') => {
      const response = await app.inject({ url: `/ignition/${mac}.ign${query}`, remoteAddress });
      t.equal(response.statusCode, 403);
    };
    const logged = () => fixture.logs.filter((line) => line.msg === 'Ignition refused');

    for (let attempt = 0; attempt < 5; attempt += 1) await refuse('52-54-00-12-34-56', '10.77.0.21');
    t.match(
      logged(),
      [{ mac: NODE1, requester: '10.77.0.21', reason: /token invalid/ }],
      'five refusals, one line',
    );
    t.notOk('suppressed' in (logged()[0] ?? {}), 'the first line of a key counts nothing');
    await refuse('52-54-00-12-34-56', '10.77.0.22');
    await refuse('52-54-00-12-34-57', '10.77.0.21');
    await refuse('52-54-00-12-34-56', '10.77.0.21', '');
    t.match(
      logged().slice(1),
      [
        { mac: NODE1, requester: '10.77.0.22' },
        { mac: NODE2, requester: '10.77.0.21' },
        { mac: NODE1, requester: '10.77.0.21', reason: 'token missing' },
      ],
      'another requester, MAC or reason is a key of its own',
    );

    clock += 9_999;
    await refuse('52-54-00-12-34-56', '10.77.0.21');
    t.equal(logged().length, 4, 'still within 10 s: not logged');
    clock += 10_000;
    await refuse('52-54-00-12-34-56', '10.77.0.21');
    t.match(
      logged().at(-1),
      { mac: NODE1, requester: '10.77.0.21', suppressed: 5 },
      'the next line counts the rest',
    );
    clock += 10_000;
    await refuse('52-54-00-12-34-56', '10.77.0.21');
    t.equal(logged().length, 6);
    t.notOk('suppressed' in (logged().at(-1) ?? {}), 'nothing left out since: no count');

    // The machine event endpoint has the same limits, counted apart from Ignition's.
    const report = () =>
      app.inject({
        method: 'POST',
        url: `/api/v1/machines/${NODE1}/events?token=AAAAAAAAAAAAAAAAAAAAAA`,
        payload: { type: 'installed' },
        remoteAddress: '10.77.0.21',
      });
    for (let attempt = 0; attempt < 3; attempt += 1) t.equal((await report()).statusCode, 403);
    clock += 10_000;
    await report();
    t.match(
      fixture.logs.filter((line) => line.msg === 'machine event refused'),
      [
        { mac: NODE1, requester: '10.77.0.21' },
        { mac: NODE1, suppressed: 2 },
      ],
    );

    // A flood naming ever new MACs gets a budget of lines, not one line each.
    const before = logged().length;
    for (let index = 0; index < 200; index += 1) {
      await refuse(
        `52-54-00-77-${(index >> 8).toString(16).padStart(2, '0')}-${(index & 0xff).toString(16).padStart(2, '0')}`,
        '10.77.0.66',
      );
    }
    const flood = logged().length - before;
    t.ok(flood > 0 && flood <= 20, `200 MACs from one requester: ${flood} lines`);
    await refuse('52-54-00-12-34-56', '10.77.0.23');
    t.match(logged().at(-1), { requester: '10.77.0.23' }, 'another requester is still heard');
  },
);

t.test('token expiry (ignition.token_ttl)', async (t) => {
  const { app, fixture } = await setup(t, { tokenTtlSeconds: 60 });
  const stale = fixture.deps.secrets.tokenFor(NODE1, 'ignition', Date.now() - 61_000);
  t.equal((await app.inject(`/ignition/52-54-00-12-34-56.ign?token=${stale}`)).statusCode, 403);
  const fresh = fixture.deps.secrets.tokenFor(NODE1, 'ignition', Date.now());
  t.equal((await app.inject(`/ignition/52-54-00-12-34-56.ign?token=${fresh}`)).statusCode, 200);
});

t.test('explain: profile, reasons, script and Ignition, credentials redacted', async (t) => {
  const { app, tokenOf, fixture } = await setup(t);
  const response = await app.inject('/api/v1/explain?mac=52-54-00-12-34-56&arch=arm64');
  t.equal(response.statusCode, 200);
  const explanation = response.json();
  t.match(explanation, { mac: NODE1, listed: true, profile: 'coreos', script: 'install', arch: 'aarch64' });
  t.match(explanation.reasons[0], 'listed under machines: with profile coreos');
  t.match(
    explanation.ipxe,
    'coreos.inst.ignition_url=http://10.77.0.1:8080/ignition/52-54-00-12-34-56.ign?token=[redacted]',
  );
  t.equal(explanation.ignition.passwd.users[0].passwordHash, '[redacted]');
  t.notMatch(response.body, tokenOf(NODE1));
  t.notMatch(response.body, fixture.deps.secrets.tokenFor(NODE1, 'events', Date.now()));
  t.notMatch(response.body, 'secret-hash');

  const stranger = (await app.inject('/api/v1/explain?mac=52:54:00:aa:bb:cc')).json();
  t.match(stranger, { script: 'unknown', listed: false });
  t.match(stranger.reasons[0], 'unknown_machines is ignore');
  t.equal((await app.inject('/api/v1/explain?mac=nope')).statusCode, 400);
});

t.test('explain redacts HTTP header values and URL credentials, keeps header names', async (t) => {
  const template = `variant: fcos
version: 1.5.0
ignition:
  proxy: { https_proxy: "http://proxyuser:proxypass@proxy.example:3128" }
storage:
  files:
    - path: /etc/app/secret.env
      contents:
        source: https://deploy:hunter2@vault.example/app.env
        http_headers: [{ name: Authorization, value: "Bearer s3cr3t-api-key" }]
    - path: /etc/app/other.env
      contents: { source: "https://ghp_t0ken@git.example/raw/other.env" }
    - path: /etc/app/presigned.env
      contents: { source: "https://bucket.example/app.env?X-Amz-Signature=s1gnature&X-Amz-Expires=600" }
`;
  const { app } = await setup(t, { files: { 'ignition/worker.bu': template } });
  const response = await app.inject('/api/v1/explain?mac=52:54:00:12:34:56');
  t.equal(response.statusCode, 200);
  const { ignition } = response.json();
  t.strictSame(ignition.storage.files[0].contents, {
    source: 'https://deploy:[redacted]@vault.example/app.env',
    httpHeaders: [{ name: 'Authorization', value: '[redacted]' }],
  });
  t.equal(ignition.storage.files[1].contents.source, 'https://[redacted]@git.example/raw/other.env');
  t.equal(ignition.ignition.proxy.httpsProxy, 'http://proxyuser:[redacted]@proxy.example:3128');
  t.equal(
    ignition.storage.files[2].contents.source,
    'https://bucket.example/app.env?X-Amz-Signature=[redacted]&X-Amz-Expires=[redacted]',
    'query values are redacted, their names kept',
  );
  for (const secret of ['hunter2', 's3cr3t-api-key', 'ghp_t0ken', 'proxypass', 's1gnature'])
    t.notMatch(response.body, secret, `${secret} stays on the server`);
});

t.test('explain shows systemd unit and drop-in contents by their size only', async (t) => {
  const template = `variant: fcos
version: 1.5.0
systemd:
  units:
    - name: app.service
      enabled: true
      contents: |
        [Service]
        Environment=API_KEY=unit-s3cr3t
        ExecStart=/usr/bin/app
      dropins:
        - name: token.conf
          contents: "[Service]\\nEnvironment=DB_PASSWORD=dropin-s3cr3t\\n"
`;
  const { app } = await setup(t, { files: { 'ignition/worker.bu': template } });
  const response = await app.inject('/api/v1/explain?mac=52:54:00:12:34:56');
  t.equal(response.statusCode, 200);
  const units = response.json().ignition.systemd.units as {
    name: string;
    contents?: string;
    dropins?: { contents: string }[];
  }[];
  const unit = units.find((candidate) => candidate.name === 'app.service');
  t.match(unit, {
    contents: /^\[redacted, \d+ characters\]$/,
    dropins: [{ name: 'token.conf', contents: /^\[redacted, \d+ characters\]$/ }],
  });
  for (const secret of ['unit-s3cr3t', 'dropin-s3cr3t'])
    t.notMatch(response.body, secret, `${secret} stays on the server`);
});

t.test('explain asks for no token for a MAC the inventory does not assign', async (t) => {
  const { app, fixture } = await setup(t);
  const secrets = fixture.deps.secrets;
  const tokenFor = secrets.tokenFor;
  const asked: Mac[] = [];
  secrets.tokenFor = (mac, purpose, now) => {
    asked.push(mac);
    return tokenFor(mac, purpose, now);
  };
  t.teardown(() => {
    secrets.tokenFor = tokenFor;
  });
  t.equal((await app.inject(`/api/v1/explain?mac=${STRANGER}`)).statusCode, 200);
  t.same(asked, [], 'any caller names any MAC: no token (and no cached one) for a stranger');
  await app.inject(`/api/v1/explain?mac=${NODE1}`);
  t.ok(
    asked.length > 0 && asked.every((mac) => mac === NODE1),
    'a listed machine still gets its URLs, redacted',
  );
});

t.test(
  'an unhandled error is a 500 logged with route, request and machine; successes log nothing',
  async (t) => {
    const { app, fixture } = await setup(t);
    t.equal((await app.inject('/boot/52-54-00-12-34-56.ipxe')).statusCode, 200);
    t.strictSame(fixture.logs, [], 'no line for a request that succeeded');
    fixture.decision.assignmentFor = () => {
      throw new Error('inventory index broken');
    };
    const response = await app.inject({
      url: '/boot/52-54-00-12-34-56.ipxe?arch=x86_64',
      remoteAddress: '10.77.0.21',
    });
    t.equal(response.statusCode, 500);
    t.match(fixture.logs, [
      {
        level: 50,
        msg: 'request failed',
        statusCode: 500,
        method: 'GET',
        route: '/boot/:name',
        url: '/boot/52-54-00-12-34-56.ipxe?arch=x86_64',
        reqId: String,
        requester: '10.77.0.21',
        mac: NODE1,
        err: { message: 'inventory index broken', stack: String },
      },
    ]);
    t.equal(fixture.logs.length, 1);
  },
);

t.test('rackboot render prints exactly what the server sends', async (t) => {
  const { app, fixture, tokenOf } = await setup(t);
  const cli = (...args: string[]) => runRender(fixture.dir, ...args);
  const ipxe = await cli('ipxe', '--mac', '52-54-00-12-34-57', '--arch', 'x86_64');
  t.equal(ipxe.stdout, (await app.inject('/boot/52-54-00-12-34-57.ipxe?arch=x86_64')).body);
  const ignition = await cli('ignition', '--mac', '525400123456');
  t.equal(
    ignition.stdout,
    `${(await app.inject(`/ignition/52-54-00-12-34-56.ign?token=${tokenOf(NODE1)}`)).body}\n`,
  );
  await t.rejects(cli('ignition', '--mac', '52:54:00:aa:bb:cc'), /not in the inventory/);

  // Installed, by the history under server.state: the server sends it to its disk, and so does render.
  const node2 = '52:54:00:12:34:57' as Mac;
  for (const event of [
    { source: 'dhcp', type: 'dhcp-ack', detail: { firmware: 'ipxe', arch: 'x86_64' } },
    { source: 'http', type: 'ipxe-script', detail: { script: 'install' } },
    { source: 'http', type: 'ignition-fetch' },
    { source: 'machine', type: 'installed' },
  ] as const)
    await fixture.lifecycle.record({ mac: node2, ...event });
  fixture.states.set(node2, 'installed');
  const installed = await cli('ipxe', '--mac', '52-54-00-12-34-57', '--arch', 'x86_64');
  t.match(installed.stdout, 'is installed, booting from the local disk');
  t.equal(installed.stdout, (await app.inject('/boot/52-54-00-12-34-57.ipxe?arch=x86_64')).body);
  await t.rejects(
    cli('ipxe', '--mac', '52-54-00-12-34-57', '--arch', 'x86-64'),
    /argument 'x86-64' is invalid\. Allowed choices are x86_64, i386, arm32, arm64, aarch64/,
    'an arch iPXE never reports is refused, not rendered as x86_64 boot files',
  );
});

/** `rackboot render …` on the fixture's config; rejects when it exits non-zero. */
function runRender(dir: string, ...args: string[]) {
  return execFileAsync(process.execPath, [
    '--import',
    'tsx',
    'src/cli/main.ts',
    'render',
    ...args,
    '-c',
    join(dir, 'rackboot.yaml'),
  ]);
}

/** `rackboot render …` on the fixture's config, with its exit status. */
function render(dir: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return runRender(dir, ...args).then(
    (done) => ({ code: 0, ...done }),
    (failed: { code: number; stdout: string; stderr: string }) => failed,
  );
}

t.test(
  "render is not refused by another machine's broken template, and names its own as the 503",
  async (t) => {
    const { app, fixture, tokenOf } = await setup(t);
    const cli = (...args: string[]) => render(fixture.dir, ...args);
    // The server reads templates at each request: node1's (worker.bu) broken after its start stops node1 only.
    const worker = join(fixture.dir, 'ignition', 'worker.bu');
    writeFileSync(worker, readFileSync(worker, 'utf8').replace('{{vars.role}}', '{{vars.nosuch}}'));
    const node2Ignition = await app.inject(`/ignition/52-54-00-12-34-57.ign?token=${tokenOf(NODE2)}`);
    t.equal(node2Ignition.statusCode, 200, 'the server serves node2');
    const rendered = await cli('ignition', '--mac', NODE2);
    t.equal(rendered.code, 0, rendered.stderr);
    t.equal(rendered.stdout, `${node2Ignition.body}\n`, 'render prints what node2 gets');
    const script = await cli('ipxe', '--mac', NODE2);
    t.equal(script.code, 0, script.stderr);
    t.equal(script.stdout, (await app.inject('/boot/52-54-00-12-34-57.ipxe?arch=x86_64')).body);

    t.equal((await app.inject(`/ignition/52-54-00-12-34-56.ign?token=${tokenOf(NODE1)}`)).statusCode, 503);
    const broken = await cli('ignition', '--mac', NODE1);
    t.equal(broken.code, 1);
    t.equal(broken.stdout, '');
    t.match(
      broken.stderr,
      /worker\.bu:\d+:\d+: \{\{vars\.nosuch\}\} is not set for machine 52:54:00:12:34:56/,
    );
    t.match(broken.stderr, 'the server answers 503 until this is fixed');
  },
);

t.test(
  'render ipxe prints the script of a machine that cannot boot as served, says why and exits 1',
  async (t) => {
    const { app, fixture } = await setup(t);
    const served = async (mac: string, arch: string) =>
      (await app.inject(`/boot/${mac}.ipxe?arch=${arch}&platform=efi`)).body;

    const stranger = await render(fixture.dir, 'ipxe', '--mac', STRANGER);
    t.equal(stranger.stdout, await served('52-54-00-aa-bb-cc', 'x86_64'), 'the script the server sends it');
    t.equal(stranger.code, 1, 'not in the inventory: it installs nothing');
    t.match(stranger.stderr, `${STRANGER} is not under machines: and unknown_machines is ignore`);

    // node3's profile has files for x86_64 and aarch64 only.
    const noFiles = await render(fixture.dir, 'ipxe', '--mac', NODE3, '--arch', 'arm32');
    t.equal(noFiles.stdout, await served('52-54-00-12-34-58', 'arm32'));
    t.match(noFiles.stdout, 'cannot boot node3');
    t.equal(noFiles.code, 1);
    t.match(noFiles.stderr, 'cannot build its script: no kernel for arm32');

    const worker = join(fixture.dir, 'ignition', 'worker.bu');
    writeFileSync(worker, readFileSync(worker, 'utf8').replace('{{vars.role}}', '{{vars.nosuch}}'));
    const noIgnition = await render(fixture.dir, 'ipxe', '--mac', NODE1);
    t.equal(noIgnition.stdout, await served('52-54-00-12-34-56', 'x86_64'), 'the install script, as served');
    t.equal(noIgnition.code, 1, 'its installer would wait on a 503');
    t.match(
      noIgnition.stderr,
      /worker\.bu:\d+:\d+: \{\{vars\.nosuch\}\} is not set for machine 52:54:00:12:34:56/,
    );
    t.match(noIgnition.stderr, "the server answers this machine's Ignition 503 until this is fixed");

    const fine = await render(fixture.dir, 'ipxe', '--mac', NODE2);
    t.equal(fine.code, 0, fine.stderr);
    t.equal(fine.stderr, '');

    // Removed after the server's start (it refuses to start or reload without it): the script still names it.
    rmSync(join(fixture.dir, 'assets', 'linux', 'extra.cpio'));
    const noInitrd = await render(fixture.dir, 'ipxe', '--mac', NODE2);
    t.equal(noInitrd.stdout, await served('52-54-00-12-34-57', 'x86_64'), 'the install script, as served');
    t.equal(noInitrd.code, 0, 'a warning, as validate gives: rendering before a fetch is a preview');
    t.match(
      noInitrd.stderr,
      /warning: linux\/extra\.cpio not found under \S+: serve refuses to start without it, .* answers the machine's download of it 404/,
    );
    t.equal((await app.inject('/assets/linux/extra.cpio')).statusCode, 404, 'as the server answers it');
  },
);

t.test('an edited template applies to the next request; a broken edit answers 503 until fixed', async (t) => {
  const { app, fixture, tokenOf } = await setup(t);
  const url = `/ignition/52-54-00-12-34-56.ign?token=${tokenOf(NODE1)}`;
  t.notMatch((await app.inject(url)).body, '/etc/motd');
  const worker = join(fixture.dir, 'ignition', 'worker.bu');
  const original = readFileSync(worker, 'utf8');
  writeFileSync(worker, `${original}    - path: /etc/motd\n      contents: { inline: edited }\n`);
  t.match((await app.inject(url)).body, '"path":"/etc/motd"');
  writeFileSync(worker, `${original}    - path: etc/motd\n`);
  const broken = await app.inject(url);
  t.equal(broken.statusCode, 503);
  t.match(broken.json().problems, [/worker\.bu:15:13: path not absolute/]);
  writeFileSync(worker, original);
  t.equal((await app.inject(url)).statusCode, 200);
});
