import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { durationSeconds, loadConfigFile, loadConfigText } from '../src/inventory/load.js';
import { loadConfigInWorker } from '../src/inventory/load-in-worker.js';
import { parseMac } from '../src/inventory/mac.js';
import { formatProblem } from '../src/inventory/problems.js';
import { VALIDATE_CHECKS } from '../src/inventory/validate-checks.js';
import { asNobody, requireRoot } from './helpers/root.js';

/** A directory with assets and a template, so only the case under test is wrong. */
function workspace(t: Test): string {
  const directory = t.testdir({
    'boot-assets': {
      vmlinuz: 'kernel',
      'initramfs.img': 'initrd',
      'rootfs.img': 'rootfs',
      'undionly.kpxe': 'ipxe',
      'ipxe.efi': 'ipxe',
    },
    ignition: { 'worker.bu': 'variant: fcos\nversion: 1.5.0\n' },
  });
  return directory;
}

const header = `server:
  address: 10.77.0.1
dhcp:
  mode: authoritative
  subnet: 10.77.0.0/24
  range: [10.77.0.100, 10.77.0.199]
profiles:
  plain:
    kind: linux
    kernel: vmlinuz
    initrd: [initramfs.img]
    ignition: ignition/worker.bu
`;

async function problemsOf(t: Test, yaml: string, options: { missingAssets?: 'error' | 'warn' } = {}) {
  const directory = workspace(t);
  const file = join(directory, 'rackboot.yaml');
  const loaded = await loadConfigText(yaml, file, options);
  if (loaded.ok) return [];
  return loaded.problems.map((problem) => formatProblem(problem, directory));
}

t.test('a valid config loads with defaults, absolute paths and canonical MACs', async (t) => {
  const directory = workspace(t);
  const yaml = `${header}machines:\n  - { mac: 52-54-00-AA-BB-CC, profile: plain, ip: 10.77.0.21 }\n`;
  const loaded = await loadConfigText(yaml, join(directory, 'rackboot.yaml'));
  if (!loaded.ok) throw new Error(loaded.problems.map((problem) => formatProblem(problem)).join('\n'));
  const { config } = loaded;
  t.equal(config.server.http.port, 8080);
  t.equal(config.server.tftp.port, 69);
  t.equal(config.server.dhcp.port, 67);
  t.equal(config.server.assets, join(directory, 'boot-assets'));
  t.equal(config.server.state, join(directory, 'state'));
  t.equal(config.dhcp.lease_time, 3600);
  t.equal(config.unknown_machines, 'ignore');
  t.equal(config.machines[0]?.mac, '52:54:00:aa:bb:cc');
  t.same(config.machines[0]?.vars, {});
  t.equal(config.profiles.plain?.ignition, join(directory, 'ignition/worker.bu'));
  t.ok(Object.isFrozen(config.machines), 'config is frozen');
});

t.test('a relay subnet without lease_time takes dhcp.lease_time; its own wins', async (t) => {
  const directory = workspace(t);
  const yaml = header.replace(
    '  range: [10.77.0.100, 10.77.0.199]\n',
    `  range: [10.77.0.100, 10.77.0.199]
  lease_time: 12h
  subnets:
    - { subnet: 10.77.8.0/24, range: [10.77.8.10, 10.77.8.20] }
    - { subnet: 10.77.9.0/24, range: [10.77.9.10, 10.77.9.20], lease_time: 30m }
`,
  );
  const loaded = await loadConfigText(yaml, join(directory, 'rackboot.yaml'));
  if (!loaded.ok) throw new Error(loaded.problems.map((problem) => formatProblem(problem)).join('\n'));
  t.same(
    loaded.config.dhcp.subnets.map((subnet) => subnet.lease_time),
    [43_200, 1_800],
  );
});

// Each case: one mistake, the exact FILE:LINE:COL it must be reported at, and the words of the message.
const cases: [name: string, yaml: string, expected: string[]][] = [
  [
    'YAML syntax error',
    `${header}machines:\n  - mac: 52:54:00:00:00:01\n   profile: plain\n`,
    ['rackboot.yaml:15:1: YAML syntax error'],
  ],
  [
    'unknown key with a did-you-mean',
    `${header}  pxe:\n    kind: linux\n    kernel: vmlinuz\n    kernal: x\n`,
    ['rackboot.yaml:16:5: unknown key "kernal" in profiles.pxe (did you mean "kernel"?)'],
  ],
  [
    'unknown top-level key',
    `${header}machine: []\n`,
    ['rackboot.yaml:13:1: unknown key "machine" (did you mean "machines"?)'],
  ],
  [
    'bad MAC',
    `${header}machines:\n  - { mac: 52:54:00:zz:00:01, profile: plain }\n`,
    ['rackboot.yaml:14:12: "52:54:00:zz:00:01" is not a MAC address'],
  ],
  [
    'duplicate MAC names both lines',
    `${header}machines:\n  - { mac: 52:54:00:00:00:01, profile: plain }\n  - { mac: 52-54-00-00-00-01, profile: plain }\n`,
    [
      'rackboot.yaml:14:12: duplicate MAC 52:54:00:00:00:01: also at line 15:12',
      'rackboot.yaml:15:12: duplicate MAC 52:54:00:00:00:01: also at line 14:12',
    ],
  ],
  [
    'duplicate reserved IP',
    `${header}machines:\n  - { mac: 52:54:00:00:00:01, profile: plain, ip: 10.77.0.5 }\n  - { mac: 52:54:00:00:00:02, profile: plain, ip: 10.77.0.5 }\n`,
    ['rackboot.yaml:15:51: duplicate reserved IP 10.77.0.5: also at line 14:51'],
  ],
  [
    'reserved IP outside subnet',
    `${header}machines:\n  - { mac: 52:54:00:00:00:01, profile: plain, ip: 10.77.9.5 }\n`,
    ['rackboot.yaml:14:51: reserved IP 10.77.9.5 is outside dhcp.subnet 10.77.0.0/24'],
  ],
  [
    'reserved IP outside the subnet and every relay subnet names them all',
    `${header.replace('profiles:', '  subnets:\n    - { subnet: 10.77.8.0/24, range: [10.77.8.10, 10.77.8.20] }\nprofiles:')}machines:\n  - { mac: 52:54:00:00:00:01, profile: plain, ip: 10.77.9.5 }\n`,
    [
      'rackboot.yaml:16:51: reserved IP 10.77.9.5 is outside dhcp.subnet 10.77.0.0/24 and dhcp.subnets[0].subnet 10.77.8.0/24',
    ],
  ],
  [
    'reserved IP outside the only subnets, relay ones, names them (not an undefined dhcp.subnet)',
    `server:\n  address: 10.77.0.1\ndhcp:\n  subnets:\n    - { subnet: 10.77.8.0/24, range: [10.77.8.10, 10.77.8.20] }\nprofiles:\n  plain:\n    kind: linux\n    kernel: vmlinuz\n    initrd: [initramfs.img]\n    ignition: ignition/worker.bu\nmachines:\n  - { mac: 52:54:00:00:00:01, profile: plain, ip: 10.77.9.5 }\n`,
    ['rackboot.yaml:13:51: reserved IP 10.77.9.5 is outside dhcp.subnets[0].subnet 10.77.8.0/24'],
  ],
  [
    'reserved IP at the broadcast address',
    `${header}machines:\n  - { mac: 52:54:00:00:00:01, profile: plain, ip: 10.77.0.255 }\n`,
    ['rackboot.yaml:14:51: reserved IP 10.77.0.255 is the network or broadcast address of 10.77.0.0/24'],
  ],
  [
    'reserved IP that is the server or a router',
    `${header.replace('  range:', '  router: 10.77.0.254\n  range:')}machines:\n  - { mac: 52:54:00:00:00:01, profile: plain, ip: 10.77.0.1 }\n  - { mac: 52:54:00:00:00:02, profile: plain, ip: 10.77.0.254 }\n`,
    [
      'rackboot.yaml:15:51: reserved IP 10.77.0.1 is server.address: give the machine another',
      'rackboot.yaml:16:51: reserved IP 10.77.0.254 is dhcp.router: give the machine another',
    ],
  ],
  [
    'server and router off the served network',
    header
      .replace('address: 10.77.0.1', 'address: 10.77.171.1')
      .replace('  range:', '  router: 10.77.1.1\n  range:'),
    [
      "rackboot.yaml:2:12: server.address 10.77.171.1 is outside dhcp.subnet: dhcp.subnet is the server's own network (relayed networks go under dhcp.subnets)",
      'rackboot.yaml:6:11: dhcp.router 10.77.1.1 is outside dhcp.subnet: clients could not reach it',
    ],
  ],
  [
    'relay subnets overlapping dhcp.subnet or each other',
    header.replace(
      '  range: [10.77.0.100, 10.77.0.199]\n',
      `  range: [10.77.0.100, 10.77.0.199]
  subnets:
    - { subnet: 10.77.0.128/25, range: [10.77.0.140, 10.77.0.150] }
    - { subnet: 10.77.8.0/24, range: [10.77.8.10, 10.77.8.20] }
    - { subnet: 10.77.8.0/25, range: [10.77.8.30, 10.77.8.40] }
`,
    ),
    [
      'rackboot.yaml:8:17: dhcp.subnets[0].subnet 10.77.0.128/25 overlaps dhcp.subnet 10.77.0.0/24, listed before it: a relay or client address in both is served from that subnet alone',
      'rackboot.yaml:10:17: dhcp.subnets[2].subnet 10.77.8.0/25 overlaps dhcp.subnets[1].subnet 10.77.8.0/24',
    ],
  ],
  [
    'range outside subnet',
    header.replace('[10.77.0.100, 10.77.0.199]', '[10.77.0.100, 10.77.1.10]'),
    ['rackboot.yaml:6:24: dhcp.range: 10.77.1.10 is outside the subnet'],
  ],
  [
    'reversed range',
    header.replace('[10.77.0.100, 10.77.0.199]', '[10.77.0.199, 10.77.0.100]'),
    ['rackboot.yaml:6:10: dhcp.range: range is reversed: 10.77.0.199 comes after 10.77.0.100'],
  ],
  [
    'machine naming a missing profile',
    `${header}machines:\n  - { mac: 52:54:00:00:00:01, profile: plian }\n`,
    [
      'rackboot.yaml:14:40: machines[0].profile names profile "plian", which does not exist (did you mean "plain"?)',
    ],
  ],
  [
    'unknown_machines naming a missing profile',
    `${header}unknown_machines: discovery\n`,
    [
      'rackboot.yaml:13:19: unknown_machines names profile "discovery", which does not exist (profiles: plain)',
    ],
  ],
  [
    'unknown_machines: the word ignore misspelt, not a profile',
    `${header}unknown_machines: Ignore\n`,
    [
      'rackboot.yaml:13:19: unknown_machines names profile "Ignore", which does not exist (did you mean "ignore"?)',
    ],
  ],
  [
    'a machine naming an inherited property instead of a profile',
    `${header}machines:\n  - { mac: 52:54:00:00:00:01, profile: toString }\n`,
    ['rackboot.yaml:14:40: machines[0].profile names profile "toString", which does not exist'],
  ],
  [
    'unknown_machines naming an inherited property instead of a profile',
    `${header}unknown_machines: constructor\n`,
    ['rackboot.yaml:13:19: unknown_machines names profile "constructor", which does not exist'],
  ],
  [
    'an alias naming no anchor',
    `${header}unknown_machines: *nope\n`,
    ['rackboot.yaml:13:19: alias *nope has no anchor &nope before it'],
  ],
  [
    'aliases expanding past the guard against alias bombs',
    `a: &a [x, x, x, x, x, x, x, x, x, x]\n${[...'bcdefg']
      .map((level, index) => `${level}: &${level} [${Array(10).fill(`*${'abcdefg'[index]}`).join(', ')}]`)
      .join('\n')}\n${header}`,
    ['rackboot.yaml:2:8: the YAML aliases cannot be expanded: Excessive alias count'],
  ],
  [
    'two YAML documents',
    `${header}---\nmachines: []\n`,
    [
      'rackboot.yaml:13:1: a second YAML document starts here (---); the config is one document: remove the ---',
    ],
  ],
  [
    'bad duration',
    header.replace('mode: authoritative', 'mode: authoritative\n  lease_time: 1 hour'),
    ['rackboot.yaml:5:15: dhcp.lease_time: bad duration "1 hour"'],
  ],
  [
    // Once also as "-5 is -5 s; a lease lasts from 1s …": two lines for one mistake.
    'a negative lease is one problem',
    header.replace('mode: authoritative', 'mode: authoritative\n  lease_time: -5'),
    ['rackboot.yaml:5:15: dhcp.lease_time: bad duration -5'],
  ],
  [
    'a lease that ends as it is bound',
    header.replace('mode: authoritative', 'mode: authoritative\n  lease_time: 400ms'),
    ['rackboot.yaml:5:15: dhcp.lease_time: 400ms is 0 s; a lease lasts from 1s to 4294967294 s'],
  ],
  [
    'a lease longer than option 51 holds',
    header.replace('mode: authoritative', 'mode: authoritative\n  lease_time: 50000d'),
    ['rackboot.yaml:5:15: dhcp.lease_time: 50000d is 4320000000 s; a lease lasts from 1s'],
  ],
  [
    // Rounded to 0 s, it read as 0: no expiry at all, the opposite of a short lifetime.
    'a token lifetime under a second, which would mean no expiry',
    `${header}ignition: { token_ttl: 400ms }\n`,
    [
      'rackboot.yaml:13:24: ignition.token_ttl: 400ms is 0 s, which means no expiry: write 0 for no expiry, or 1s or more',
    ],
  ],
  ['a token lifetime of 0 written with a unit is no expiry', `${header}ignition: { token_ttl: 0ms }\n`, []],
  [
    // Its tokens' expiry had 13 digits, which no token check reads: every Ignition fetch was a 403.
    'a token lifetime no token can carry',
    `${header}ignition: { token_ttl: 999999999999 }\n`,
    [
      'rackboot.yaml:13:24: ignition.token_ttl: 999999999999 is 999999999999 s; a token lifetime is at most 36500d (100 years): write 0 for no expiry',
    ],
  ],
  ['a token lifetime of 100 years', `${header}ignition: { token_ttl: 36500d }\n`, []],
  [
    'missing kernel file under assets',
    header.replace('kernel: vmlinuz', 'kernel: vmlinuz-6.1'),
    ['rackboot.yaml:10:13: vmlinuz-6.1 not found under'],
  ],
  [
    'missing initrd file under assets',
    header.replace('[initramfs.img]', '[initramfs.img, extra.img]'),
    ['rackboot.yaml:11:29: extra.img not found under'],
  ],
  [
    'Ignition template that does not exist',
    header.replace('ignition/worker.bu', 'ignition/wroker.bu'),
    ['rackboot.yaml:12:15: Ignition/Butane template "ignition/wroker.bu" does not exist'],
  ],
  [
    'bad enum value',
    header.replace('mode: authoritative', 'mode: authoritativ'),
    [
      'rackboot.yaml:4:9: dhcp.mode: "authoritativ" is not one of proxy, authoritative, off (did you mean "authoritative"?)',
    ],
  ],
  [
    'bad port type',
    header.replace('address: 10.77.0.1', 'address: 10.77.0.1\n  http: { port: web }'),
    ['rackboot.yaml:3:17: server.http.port: expected integer, got "web"'],
  ],
  [
    'vars names no template can spell, each at its key',
    `${header}machines:\n  - mac: 52:54:00:00:00:01\n    profile: plain\n    vars:\n      a.b: 1\n      rack-row: r7\n      "a b": x\n`,
    [
      'rackboot.yaml:17:7: machines[0].vars: bad vars name "a.b": vars names may hold letters, digits, _ and -',
      'rackboot.yaml:19:7: machines[0].vars: bad vars name "a b": vars names may hold letters, digits, _ and -',
    ],
  ],
  [
    'a profile name outside the rule, at its key',
    header.replace('  plain:\n', '  plain.v2:\n'),
    [
      'rackboot.yaml:8:3: profiles: bad profile name "plain.v2": profile names may hold letters, digits, _ and -',
    ],
  ],
  [
    'a badly named profile is checked all the same: every mistake at once',
    header.replace('  plain:\n    kind: linux\n', '  plain.v2:\n    kind: coreos\n    bogus_key: 1\n'),
    [
      'rackboot.yaml:8:3: profiles: bad profile name "plain.v2": profile names may hold letters, digits, _ and -',
      'rackboot.yaml:9:11: profiles.plain.v2.kind: "coreos" is not one of coreos-install, linux',
      'rackboot.yaml:10:5: unknown key "bogus_key" in profiles.plain.v2',
    ],
  ],
  [
    'a profile name YAML reads as a number, at its own key',
    header.replace(
      '    ignition: ignition/worker.bu\n',
      '    ignition: ignition/worker.bu\n  1.5:\n    kind: linux\n    kernel: vmlinuz\n',
    ),
    ['rackboot.yaml:13:3: profiles: bad profile name "1.5": profile names may hold letters, digits, _ and -'],
  ],
  [
    'bad IPv4',
    header.replace('address: 10.77.0.1', 'address: 10.77.0.300'),
    ['rackboot.yaml:2:12: server.address: "10.77.0.300" is not an IPv4 address'],
  ],
];

for (const [name, yaml, expected] of cases) {
  t.test(name, async (t) => {
    const problems = await problemsOf(t, yaml);
    t.equal(
      problems.length,
      expected.length,
      `exactly ${expected.length} problem(s): ${problems.join(' | ')}`,
    );
    expected.forEach((prefix, index) => {
      t.ok(
        problems[index]?.startsWith(prefix),
        `problem ${index}\n  got:  ${problems[index]}\n  want: ${prefix}…`,
      );
    });
  });
}

t.test('all problems are reported at once, in file order', async (t) => {
  const yaml = `${header.replace('mode: authoritative', 'mode: authoritative\n  lease_time: 1 hour')}machines:\n  - { mac: nope, profile: missing }\n`;
  const problems = await problemsOf(t, yaml);
  t.same(
    problems.map((line) => line.split(': ')[0]),
    ['rackboot.yaml:5:15', 'rackboot.yaml:15:12', 'rackboot.yaml:15:27'],
  );
});

t.test('missing assets are warnings when asked (validate) and errors otherwise (serve)', async (t) => {
  const directory = workspace(t);
  const yaml = header.replace('kernel: vmlinuz', 'kernel: missing-kernel');
  const file = join(directory, 'rackboot.yaml');
  const forValidate = await loadConfigText(yaml, file, { missingAssets: 'warn' });
  t.ok(forValidate.ok, 'loads');
  if (forValidate.ok)
    t.match(
      forValidate.warnings.map((problem) => formatProblem(problem, directory)),
      [/^rackboot.yaml:10:13: /],
    );
  const forServe = await loadConfigText(yaml, file);
  t.notOk(forServe.ok, 'refused for serve');
});

t.test('a boot file that is a directory is no boot file: refused for serve, as a missing one', async (t) => {
  // It was taken as there (it exists), and the machines of the profile failed to boot.
  const directory = workspace(t);
  mkdirSync(join(directory, 'boot-assets', 'fedora-coreos'));
  const yaml = header.replace('kernel: vmlinuz', 'kernel: fedora-coreos');
  const file = join(directory, 'rackboot.yaml');
  const expected = `rackboot.yaml:10:13: fedora-coreos under ${join(directory, 'boot-assets')} is not a file (a directory?)`;
  const forServe = await loadConfigText(yaml, file);
  t.same(forServe.ok ? [] : forServe.problems.map((problem) => formatProblem(problem, directory)), [
    expected,
  ]);
  const forValidate = await loadConfigText(yaml, file, { missingAssets: 'warn' });
  t.same(
    forValidate.ok ? forValidate.warnings.map((problem) => formatProblem(problem, directory)) : [],
    [expected],
    'a warning in validate',
  );
});

t.test('vars names hold letters, digits, _ and -, as {{vars.NAME}} does', async (t) => {
  const directory = workspace(t);
  const yaml = `${header}machines:\n  - { mac: 52:54:00:00:00:01, profile: plain, vars: { rack-row: r7, 2nd: x, _a: 1, B9: true } }\n`;
  const loaded = await loadConfigText(yaml, join(directory, 'rackboot.yaml'));
  if (!loaded.ok) throw new Error(loaded.problems.map((problem) => formatProblem(problem)).join('\n'));
  t.strictSame(loaded.config.machines[0]?.vars, { 'rack-row': 'r7', '2nd': 'x', _a: '1', B9: 'true' });
});

t.test('durations', async (t) => {
  t.equal(durationSeconds('90s'), 90);
  t.equal(durationSeconds('1h30m'), 5400);
  t.equal(durationSeconds('7d'), 604800);
  t.equal(durationSeconds(42), 42);
});

t.test('machines by the thousand may share one anchored vars map', async (t) => {
  const directory = workspace(t);
  const machines = Array.from({ length: 2000 }, (_, index) => {
    const mac = `52:54:00:00:${(index >> 8).toString(16).padStart(2, '0')}:${(index & 255).toString(16).padStart(2, '0')}`;
    return `  - { mac: ${mac}, profile: plain, vars: ${index === 0 ? '&common { role: worker }' : '*common'} }`;
  });
  const loaded = await loadConfigText(
    `${header}machines:\n${machines.join('\n')}\n`,
    join(directory, 'rackboot.yaml'),
  );
  if (!loaded.ok) throw new Error(loaded.problems.map((problem) => formatProblem(problem)).join('\n'));
  t.equal(loaded.config.machines.length, 2000);
  t.same(loaded.config.machines[1999]?.vars, { role: 'worker' });
});

t.test('$RACKBOOT_API_TOKEN is held to the length server.api_token must have', async (t) => {
  const directory = workspace(t);
  const loaded = await loadConfigText(header, join(directory, 'rackboot.yaml'), {
    env: { RACKBOOT_API_TOKEN: 'abc' },
  });
  t.notOk(loaded.ok);
  if (!loaded.ok) {
    t.match(
      formatProblem(loaded.problems[0] as (typeof loaded.problems)[0], directory),
      /\$RACKBOOT_API_TOKEN is 3 characters; an API token needs at least 16/,
    );
  }
});

t.test('a short server.api_token is refused by its length, never echoed', async (t) => {
  const directory = workspace(t);
  const yaml = header.replace('  address: 10.77.0.1', '  address: 10.77.0.1\n  api_token: hunter2-secret');
  const loaded = await loadConfigText(yaml, join(directory, 'rackboot.yaml'), { env: {} });
  t.notOk(loaded.ok);
  if (!loaded.ok) {
    const lines = loaded.problems.map((problem) => formatProblem(problem, directory));
    t.same(lines, ['rackboot.yaml:3:14: server.api_token is 14 characters; an API token needs at least 16']);
    t.notMatch(lines.join('\n'), 'hunter2');
  }
});

t.test('an operator token an Authorization header cannot carry is refused, never echoed', async (t) => {
  const directory = workspace(t);
  // Once, `validate` passed a token with a space, and every operator call was then refused as
  // "operator token required": the server reads `Bearer <token>` up to the first space.
  for (const written of [
    '"correct horse battery staple"',
    '"tab\tseparated-token-0123"',
    'prix-en-€-0123456789',
  ]) {
    const yaml = header.replace('  address: 10.77.0.1', `  address: 10.77.0.1\n  api_token: ${written}`);
    const loaded = await loadConfigText(yaml, join(directory, 'rackboot.yaml'), { env: {} });
    t.notOk(loaded.ok, `${written}: refused`);
    if (!loaded.ok) {
      const lines = loaded.problems.map((problem) => formatProblem(problem, directory));
      t.same(
        lines,
        [
          'rackboot.yaml:3:14: server.api_token holds a space, a control character or a character beyond ASCII; an API token is sent as `Authorization: Bearer <token>` and takes printable ASCII only',
        ],
        `${written}: at its line`,
      );
      t.notMatch(lines.join('\n'), /horse|separated|prix/, `${written}: not echoed`);
    }
  }
  const fromEnvironment = await loadConfigText(header, join(directory, 'rackboot.yaml'), {
    env: { RACKBOOT_API_TOKEN: 'correct horse battery staple' },
  });
  t.notOk(fromEnvironment.ok, '$RACKBOOT_API_TOKEN is held to the same rule');
  if (!fromEnvironment.ok) {
    t.match(
      formatProblem(fromEnvironment.problems[0] as (typeof fromEnvironment.problems)[0], directory),
      /\$RACKBOOT_API_TOKEN holds a space, a control character or a character beyond ASCII/,
    );
  }
  const printable = header.replace(
    '  address: 10.77.0.1',
    '  address: 10.77.0.1\n  api_token: "Tr0ub4dor&3!~+/=-_.:@[]{}"',
  );
  t.ok(
    (await loadConfigText(printable, join(directory, 'rackboot.yaml'), { env: {} })).ok,
    'printable ASCII',
  );
});

t.test(
  'a server.api_token that reads as an environment variable is refused unless the environment sets one',
  async (t) => {
    const directory = workspace(t);
    for (const written of ['"${RACKBOOT_API_TOKEN}"', '$RACKBOOT_API_TOKEN', '$OPERATOR_TOKEN_FROM_VAULT']) {
      const yaml = header.replace('  address: 10.77.0.1', `  address: 10.77.0.1\n  api_token: ${written}`);
      // Once, the operator API then took this very text as its token.
      const unset = await loadConfigText(yaml, join(directory, 'rackboot.yaml'), { env: {} });
      t.notOk(unset.ok, `${written}: refused`);
      if (!unset.ok) {
        t.match(
          formatProblem(unset.problems[0] as (typeof unset.problems)[0], directory),
          /^rackboot\.yaml:3:14: server\.api_token reads as an environment variable/,
          `${written}: at its line`,
        );
      }
      const set = await loadConfigText(yaml, join(directory, 'rackboot.yaml'), {
        env: { RACKBOOT_API_TOKEN: 'from-the-environment-0123' },
      });
      t.ok(set.ok, `${written}: the environment's token is the one in force`);
    }
    const literal = header.replace(
      '  address: 10.77.0.1',
      '  address: 10.77.0.1\n  api_token: $ecret-with-a-dollar-0123',
    );
    t.ok(
      (await loadConfigText(literal, join(directory, 'rackboot.yaml'), { env: {} })).ok,
      'a token that only starts with $',
    );
  },
);

t.test('a YAML tag yaml does not know is refused at its line, not read as the text after it', async (t) => {
  const directory = workspace(t);
  const yaml = header.replace(
    '  address: 10.77.0.1',
    '  address: 10.77.0.1\n  api_token: !env RACKBOOT_API_TOKEN',
  );
  const loaded = await loadConfigText(yaml, join(directory, 'rackboot.yaml'), { env: {} });
  t.notOk(loaded.ok, 'once, the token was the text RACKBOOT_API_TOKEN');
  if (!loaded.ok) {
    t.same(
      loaded.problems.map((problem) => formatProblem(problem, directory)),
      [
        'rackboot.yaml:3:14: YAML tag !env is not one rackboot reads: the value would be the plain text after it (nothing here is expanded from the environment); remove the tag',
      ],
    );
  }
});

t.test('a template path that is a directory is called one, not missing', async (t) => {
  const directory = workspace(t);
  const loaded = await loadConfigText(
    header.replace('ignition: ignition/worker.bu', 'ignition: ignition'),
    join(directory, 'rackboot.yaml'),
    { env: {} },
  );
  t.notOk(loaded.ok);
  if (!loaded.ok) {
    t.same(
      loaded.problems.map((problem) => formatProblem(problem, directory)),
      ['rackboot.yaml:12:15: Ignition/Butane template "ignition" is not a file (a directory?)'],
    );
  }
});

t.test('$RACKBOOT_API_TOKEN overrides server.api_token', async (t) => {
  const directory = workspace(t);
  const loaded = await loadConfigText(header, join(directory, 'rackboot.yaml'), {
    env: { RACKBOOT_API_TOKEN: 'from-the-environment-0123' },
  });
  t.ok(loaded.ok);
  if (loaded.ok) t.equal(loaded.config.server.api_token, 'from-the-environment-0123');
});

t.test('the committed editor schema is the one the code generates', async (t) => {
  const { readFileSync } = await import('node:fs');
  const { editorJsonSchema } = await import('../src/inventory/schema.js');
  const committed = JSON.parse(
    readFileSync(new URL('../schema/rackboot.schema.json', import.meta.url), 'utf8'),
  );
  t.same(committed, JSON.parse(JSON.stringify(editorJsonSchema())), 'run `npm run schema` to regenerate it');
});

t.test("the README's config reference is the one generated from the schema", async (t) => {
  const { readFileSync } = await import('node:fs');
  const { configReferenceMarkdown } = await import('../src/inventory/reference.js');
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const section = /<!-- config-reference:start -->\n([\s\S]*?)\n<!-- config-reference:end -->/.exec(
    readme,
  )?.[1];
  t.equal(
    section,
    configReferenceMarkdown(),
    'paste the output of `rackboot schema --markdown` into README.md',
  );
});

t.test("the config reference states every key's shortest length, which the loader enforces", async (t) => {
  const { configReferenceMarkdown } = await import('../src/inventory/reference.js');
  const { ConfigSchema } = await import('../src/inventory/schema.js');
  type Node = { minLength?: number; properties?: Record<string, Node> };
  const limited: [string, number][] = [];
  const walk = (node: Node, path: string) => {
    if (node.minLength !== undefined) limited.push([path, node.minLength]);
    for (const [key, child] of Object.entries(node.properties ?? {}))
      walk(child, path ? `${path}.${key}` : key);
  };
  walk(ConfigSchema as Node, '');
  t.ok(limited.length > 0, 'server.api_token has a shortest length');
  const rows = configReferenceMarkdown().split('\n');
  for (const [path, minLength] of limited) {
    const row = rows.find((line) => line.startsWith(`| \`${path}\` |`));
    t.match(row, `at least ${minLength} characters`, path);
  }
});

t.test('the config reference shows every unit a duration key takes', async (t) => {
  const { configReferenceMarkdown } = await import('../src/inventory/reference.js');
  const { DURATION_PATTERN } = await import('../src/inventory/schema.js');
  const units = /\(([a-z|]+)\)/.exec(DURATION_PATTERN)?.[1]?.split('|') ?? [];
  t.same(units, ['ms', 's', 'm', 'h', 'd']);
  const rows = configReferenceMarkdown()
    .split('\n')
    .filter((row) => row.split(' | ')[1] === 'duration');
  t.equal(rows.length, 3, 'dhcp.lease_time, dhcp.subnets[].lease_time, ignition.token_ttl');
  for (const row of rows)
    for (const unit of units) t.match(row, new RegExp(`\\d${unit}\\b`), `${row.split(' | ')[0]}: ${unit}`);
});

t.test('an argument split at a comma by a YAML flow sequence is a warning with the fix', async (t) => {
  const directory = workspace(t);
  // CONTRACT.md's example is written so: a serial console's options are joined back.
  const yaml = `${header}    args: [console=tty0, console=ttyS0,115200n8, quiet, rd.x=1,2a, console=ttyS1, "3"]\n`;
  const loaded = await loadConfigText(yaml, join(directory, 'rackboot.yaml'));
  if (!loaded.ok) throw new Error('must load');
  t.same(loaded.config.profiles.plain?.args, [
    'console=tty0',
    'console=ttyS0,115200n8',
    'quiet',
    'rd.x=1',
    '2a',
    'console=ttyS1',
    '3',
  ]);
  t.same(
    loaded.warnings.map((problem) => formatProblem(problem, directory)),
    [
      'rackboot.yaml:13:40: "115200n8" is the rest of "console=ttyS0,115200n8" split at a comma by YAML; joined back, quote it to say so: "console=ttyS0,115200n8"',
      'rackboot.yaml:13:64: "2a" looks like the rest of "rd.x=1,2a" split at a comma by YAML; quote it: "rd.x=1,2a"',
      'rackboot.yaml:13:83: "3" looks like the rest of "console=ttyS1,3" split at a comma by YAML; quote it: "console=ttyS1,3"',
    ],
  );
});

t.test('a bare-hex MAC left unquoted, which YAML reads as a number, is read as written', async (t) => {
  const directory = workspace(t);
  const yaml = `${header}machines:
  - mac: 525400123456
    profile: plain
    vars: { mac: 12 }
  - { mac: 001122334455, profile: plain }
  - mac: 1e2233445566
    profile: plain
`;
  const loaded = await loadConfigText(yaml, join(directory, 'rackboot.yaml'), { env: {} });
  t.ok(loaded.ok, loaded.ok ? 'loads' : JSON.stringify(loaded.problems));
  if (loaded.ok)
    t.same(
      loaded.config.machines.map((machine) => machine.mac),
      ['52:54:00:12:34:56', '00:11:22:33:44:55', '1e:22:33:44:55:66'],
    );
  if (loaded.ok)
    t.equal(loaded.config.machines[0]?.vars?.mac, '12', 'a var named mac is a var, read as written');
});

/**
 * `yaml` written to `file` and loaded as `validate` loads it and as `serve`'s check thread does, each
 * result with its label: in one thread the problems are placed in the parsed document; serve's check
 * thread parses the file again.
 */
async function loadBothWays(file: string, yaml: string) {
  writeFileSync(file, yaml);
  return [
    ['validate', await loadConfigText(yaml, file, { env: {} })],
    ['serve', await loadConfigInWorker({ file, missingAssets: 'error', env: {} })],
  ] as const;
}

t.test('a text key YAML reads as a number or true/false is its text as written, key or value', async (t) => {
  const directory = workspace(t);
  const file = join(directory, 'rackboot.yaml');
  const yaml = `server:
  address: 10.77.0.1
  api_token: 12345678901234567890
profiles:
  007:
    kind: linux
    kernel: vmlinuz
    initrd: [initramfs.img]
    args: [console=ttyS0, 115200, 1.10]
  true: { kind: linux, kernel: vmlinuz }
machines:
  - mac: 52:54:00:00:00:01
    hostname: 1234
    profile: 007
    vars: { 01: x }
  - { mac: 52:54:00:00:00:02, hostname: &name 0x1F, profile: true }
  - { mac: 52:54:00:00:00:03, hostname: *name, profile: 007 }
`;
  for (const [how, loaded] of await loadBothWays(file, yaml)) {
    t.ok(loaded.ok, `${how}: ${loaded.ok ? 'loads' : JSON.stringify(loaded.problems)}`);
    if (!loaded.ok) continue;
    t.same(Object.keys(loaded.config.profiles), ['007', 'true'], `${how}: profile names`);
    t.same(loaded.config.profiles['007']?.args, ['console=ttyS0,115200', '1.10'], `${how}: args`);
    t.equal(loaded.config.server.api_token, '12345678901234567890', `${how}: api_token`);
    t.same(
      loaded.config.machines.map(({ hostname, profile, vars }) => ({ hostname, profile, vars })),
      [
        { hostname: '1234', profile: '007', vars: { '01': 'x' } },
        { hostname: '0x1F', profile: 'true', vars: {} },
        { hostname: '0x1F', profile: '007', vars: {} },
      ],
      `${how}: machines`,
    );
  }

  const wrong = `server: { address: 10.77.0.1 }
profiles:
  007: { kind: linux, kernel: vmlinuz }
machines:
  - { mac: 52:54:00:00:00:01, profile: 7 }
  - { mac: 52:54:00:00:00:02, profile: 007, hostname: }
`;
  for (const [how, refused] of await loadBothWays(file, wrong)) {
    t.same(
      refused.ok ? [] : refused.problems.map((problem) => formatProblem(problem, directory)),
      [
        'rackboot.yaml:5:40: machines[0].profile names profile "7", which does not exist (did you mean "007"?)',
        'rackboot.yaml:6:55: machines[1].hostname: expected string, got null',
      ],
      `${how}: 7 is not 007, and a key with nothing is no text`,
    );
  }
});

t.test('under a %YAML 1.1 directive, mode: off and MACs are read as written', async (t) => {
  // YAML 1.1 reads off/on/yes/no as booleans and 52:54:00:12:34:56 as a base-60 number. The MACs
  // were read as written already; `mode: off` was refused as "false is not one of proxy, …, off".
  const directory = workspace(t);
  const file = join(directory, 'rackboot.yaml');
  const yaml = `%YAML 1.1
---
server: { address: 10.77.0.1 }
dhcp: { mode: off }
profiles:
  plain: { kind: linux, kernel: vmlinuz }
machines:
  - { mac: 52:54:00:12:34:56, profile: plain }
`;
  for (const [how, loaded] of await loadBothWays(file, yaml)) {
    t.ok(loaded.ok, `${how}: ${loaded.ok ? 'loads' : JSON.stringify(loaded.problems)}`);
    if (!loaded.ok) continue;
    t.equal(loaded.config.dhcp.mode, 'off', `${how}: dhcp.mode`);
    t.same(
      loaded.config.machines.map((machine) => machine.mac),
      ['52:54:00:12:34:56'],
      `${how}: MAC`,
    );
  }
  for (const [how, refused] of await loadBothWays(file, yaml.replace('mode: off', 'mode: on'))) {
    t.same(
      refused.ok ? [] : refused.problems.map((problem) => formatProblem(problem, directory)),
      ['rackboot.yaml:4:15: dhcp.mode: "on" is not one of proxy, authoritative, off (did you mean "off"?)'],
      `${how}: a word that is not a mode is named as written`,
    );
  }
});

t.test('MAC spellings: every common form becomes the canonical one, anything else is refused', async (t) => {
  const canonical = '52:54:00:ab:cd:ef';
  for (const spelling of [
    '52:54:00:ab:cd:ef',
    '52-54-00-AB-CD-EF',
    ' 52:54:00:Ab:cD:eF ',
    '5254.00ab.cdef',
    '525400ABCDEF',
  ])
    t.equal(parseMac(spelling), canonical, spelling);
  for (const wrong of [
    '52:54-00:ab:cd:ef',
    '52:54:00:ab:cd',
    '52:54:00:ab:cd:ef:01',
    '5254.00ab.cdeg',
    '525400abcde',
    '52.54.00.ab.cd.ef',
    '',
  ])
    t.equal(parseMac(wrong), undefined, JSON.stringify(wrong));
});

t.test("a template still holding the example's SSH key is a warning at the key", async (t) => {
  const directory = workspace(t);
  const shipped = readFileSync(new URL('../ignition/worker.bu', import.meta.url), 'utf8');
  writeFileSync(join(directory, 'ignition', 'worker.bu'), shipped);
  const warned = await loadConfigText(header, join(directory, 'rackboot.yaml'));
  if (!warned.ok) throw new Error(`must load: ${JSON.stringify(warned.problems)}`);
  const line = shipped.split('\n').findIndex((text) => text.includes('ReplaceThisWithYourOwnPublicKey')) + 1;
  t.same(
    warned.warnings.map((problem) => formatProblem(problem, directory)),
    [
      `ignition/worker.bu:${line}:48: the example's placeholder SSH key: put your own public key here, or nobody can log in to the machines`,
    ],
  );
  writeFileSync(
    join(directory, 'ignition', 'worker.bu'),
    shipped.replace(
      /ssh-ed25519 \S+/,
      'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl',
    ),
  );
  const own = await loadConfigText(header, join(directory, 'rackboot.yaml'));
  t.same(own.ok && own.warnings, [], 'no warning once the key is the operator’s own');
});

t.test(
  'a template this user cannot read is its problem in validate, not a crash of the loader',
  async (t) => {
    // Before: "rackboot: EACCES: permission denied, open '…/worker.bu'", thrown by the look for the
    // example's SSH key, which had found a regular file and then could not open it.
    requireRoot('makes a template only another user cannot read');
    const directory = workspace(t);
    writeFileSync(join(directory, 'rackboot.yaml'), header);
    chmodSync(join(directory, 'ignition', 'worker.bu'), 0o000);
    const main = join(import.meta.dirname, '..', 'src', 'cli', 'main.ts');
    const validated = asNobody(main, 'validate', '-c', join(directory, 'rackboot.yaml'));
    t.equal(validated.status, 1);
    // Its first line: under tap, the child's coverage hook adds its own complaint as nobody after it.
    t.match(validated.stderr.split('\n')[0], /ignition\/worker\.bu:1:1: cannot read template \(EACCES\)$/);
  },
);

t.test(
  'an argument written with spaces is that many arguments; an install_device with one is refused',
  async (t) => {
    const directory = workspace(t);
    const yaml = `${header}    args: ["console=ttyS0 quiet", "role={{ vars.role }}", "  "]\n`;
    const loaded = await loadConfigText(yaml, join(directory, 'rackboot.yaml'));
    if (!loaded.ok) throw new Error(`must load: ${JSON.stringify(loaded.problems)}`);
    t.same(loaded.config.profiles.plain?.args, ['console=ttyS0', 'quiet', 'role={{ vars.role }}']);
    t.same(
      loaded.warnings.map((problem) => formatProblem(problem, directory)),
      [
        'rackboot.yaml:13:12: "console=ttyS0 quiet" is 2 kernel arguments, split at whitespace: write each as its own list item',
        'rackboot.yaml:13:59: an empty kernel argument is left out',
      ],
    );
    // A comment mark is refused for what it does, not as whitespace (the message once said only that).
    for (const installDevice of ['/dev/sda quiet', '#/dev/sda']) {
      const device = await loadConfigText(
        header.replace(
          'kind: linux',
          `kind: coreos-install\n    rootfs: rootfs.img\n    install_device: "${installDevice}"`,
        ),
        join(directory, 'rackboot.yaml'),
      );
      t.match(device, {
        ok: false,
        problems: [
          {
            message: `profiles.plain.install_device "${installDevice}" holds whitespace, a control character or an iPXE command separator (; && ||), or starts an iPXE comment (#…), which would split the kernel line or drop the rest of it: a device path is one word`,
          },
        ],
      });
    }
  },
);

t.test(
  'a server.address machines can never be sent to is refused; a loopback one is a warning',
  async (t) => {
    for (const [address, why] of [
      ['0.0.0.0', /the unspecified address/],
      ['255.255.255.255', /the limited broadcast address/],
      ['239.1.2.3', /a multicast address/],
    ] as const) {
      const problems = await problemsOf(
        t,
        header.replace('10.77.0.1', address).replace('mode: authoritative', 'mode: proxy'),
      );
      t.match(problems, [
        new RegExp(`^rackboot.yaml:2:12: server.address ${address.replaceAll('.', '\\.')} is `),
      ]);
      t.match(problems[0], why);
    }
    const directory = workspace(t);
    const file = join(directory, 'rackboot.yaml');
    const proxy = header.replace('10.77.0.1', '127.0.0.1').replace('mode: authoritative', 'mode: proxy');
    const loaded = await loadConfigText(proxy, file, { missingAssets: 'warn' });
    t.ok(loaded.ok, 'a loopback address loads');
    if (loaded.ok)
      t.match(
        loaded.warnings.map((problem) => formatProblem(problem, directory)),
        [/^rackboot.yaml:2:12: server.address 127\.0\.0\.1 is a loopback address, yet dhcp.mode proxy/],
      );
    const off = await loadConfigText(proxy.replace('mode: proxy', 'mode: off'), file, {
      missingAssets: 'warn',
    });
    t.same(off.ok ? off.warnings : off.problems, [], 'and no warning with DHCP off');
  },
);

t.test('a list written as a mapping is refused, not read as an empty list', async (t) => {
  // The dash forgotten: TypeBox merged the mapping into the default [] and the config loaded with
  // no machines (and no relay subnets) at all.
  t.same(
    await problemsOf(
      t,
      `${header.replace('profiles:', '  subnets:\n    subnet: 10.77.9.0/24\n    range: [10.77.9.10, 10.77.9.20]\nprofiles:')}machines:\n  mac: 52:54:00:00:00:01\n  profile: plain\n`,
    ),
    [
      'rackboot.yaml:8:5: dhcp.subnets: expected a list (each entry starting with "- "), got a mapping (subnet, range)',
      'rackboot.yaml:17:3: machines: expected a list (each entry starting with "- "), got a mapping (mac, profile)',
    ],
  );
});

t.test('a list or mapping in the wrong place is named by its size, not printed whole', async (t) => {
  const machines = Array.from(
    { length: 300 },
    (_, index) =>
      `    - { mac: 52:54:00:00:${(index >> 8).toString(16).padStart(2, '0')}:${(index & 255).toString(16).padStart(2, '0')}, profile: plain }`,
  ).join('\n');
  const problems = await problemsOf(t, `${header}  machines:\n${machines}\n`);
  const typeProblem = problems.find((line) => line.includes('profiles.machines: expected object'));
  t.equal(typeProblem, 'rackboot.yaml:14:5: profiles.machines: expected object, got a list of 300 items');
  t.ok(
    problems.every((line) => line.length < 200),
    'every line is short',
  );
});

t.test(
  'profile args are filled for every machine at load: what cannot be is refused at its line',
  async (t) => {
    const directory = workspace(t);
    const withArgs = (args: string, machines: string, unknown = 'ignore') =>
      header.replace('    ignition: ignition/worker.bu\n', `    args: ${args}\n`) +
      `unknown_machines: ${unknown}\nmachines:\n${machines}`;
    const problems = async (yaml: string) => {
      const loaded = await loadConfigText(yaml, join(directory, 'rackboot.yaml'), {
        ...VALIDATE_CHECKS,
        env: {},
      });
      return loaded.ok ? [] : loaded.problems.map((problem) => formatProblem(problem, directory));
    };
    const two =
      '  - { mac: 52:54:00:00:00:01, profile: plain, vars: { role: db } }\n  - { mac: 52:54:00:00:00:02, profile: plain }\n';
    // Once, each of these passed validate and sent every machine of the profile into an error script.
    t.same(await problems(withArgs('[console=ttyS0, "x={{ignition_ur}}"]', two)), [
      'rackboot.yaml:12:27: unknown template variable {{ignition_ur}}',
    ]);
    t.same(await problems(withArgs('["role={{vars.role}}"]', two)), [
      "rackboot.yaml:12:12: {{vars.role}} is not set for machine 52:54:00:00:00:02 (add it under the machine's vars)",
    ]);
    t.same(
      await problems(
        withArgs(
          '["role={{vars.role}}"]',
          '  - { mac: 52:54:00:00:00:01, profile: plain, vars: { role: "a b" } }\n',
        ),
      ),
      [
        'rackboot.yaml:12:12: filled in, this argument holds whitespace, a control character or an iPXE command separator (; && ||), or starts an iPXE comment (#…), which would split the kernel line or drop the rest of it: a var used in one must be a single word',
      ],
    );
    t.match(
      await problems(
        withArgs(
          '["role={{vars.role}}"]',
          '  - { mac: 52:54:00:00:00:01, profile: plain, vars: { role: db } }\n',
          'plain',
        ),
      ),
      [/^rackboot\.yaml:12:12: \{\{vars\.role\}\} cannot be filled for machines not in the inventory/],
    );
    t.same(
      await problems(
        withArgs(
          '["host={{hostname}}", "role={{vars.role}}"]',
          '  - { mac: 52:54:00:00:00:01, profile: plain, hostname: n1, vars: { role: db } }\n',
        ),
      ),
      [],
      'what fills is fine',
    );
    // Written so in the file, not through a var: the server answered every machine of the profile
    // with an error script, and validate said nothing.
    t.same(await problems(withArgs('[console=ttyS0, "#rd.break", ";"]', two)), [
      'rackboot.yaml:12:27: this argument holds whitespace, a control character or an iPXE command separator (; && ||), or starts an iPXE comment (#…), which would split the kernel line or drop the rest of it: no machine of the profile could boot',
      'rackboot.yaml:12:40: this argument holds whitespace, a control character or an iPXE command separator (; && ||), or starts an iPXE comment (#…), which would split the kernel line or drop the rest of it: no machine of the profile could boot',
    ]);
    // Each at the item it was written in, after items the loader splits (spaces) or joins (a console's
    // speed): these were shown one or two items further on, at an argument that was fine.
    t.same(await problems(withArgs('["quiet splash", "x={{ignition_ur}}", ok=1, "#rd.break"]', two)), [
      'rackboot.yaml:12:28: unknown template variable {{ignition_ur}}',
      'rackboot.yaml:12:55: this argument holds whitespace, a control character or an iPXE command separator (; && ||), or starts an iPXE comment (#…), which would split the kernel line or drop the rest of it: no machine of the profile could boot',
    ]);
    t.same(await problems(withArgs('[console=ttyS0, 115200n8, "x={{ignition_ur}}", "#rd.break"]', two)), [
      'rackboot.yaml:12:37: unknown template variable {{ignition_ur}}',
      'rackboot.yaml:12:58: this argument holds whitespace, a control character or an iPXE command separator (; && ||), or starts an iPXE comment (#…), which would split the kernel line or drop the rest of it: no machine of the profile could boot',
    ]);
  },
);

t.test('{{…}} in a profile field that is not filled per machine is refused', async (t) => {
  const directory = workspace(t);
  const loaded = await loadConfigText(
    header.replace('    kernel: vmlinuz\n', '    kernel: "{{vars.kernel}}"\n'),
    join(directory, 'rackboot.yaml'),
    { env: {} },
  );
  t.notOk(loaded.ok);
  if (!loaded.ok)
    t.match(
      loaded.problems.map((problem) => formatProblem(problem, directory)),
      [/^rackboot\.yaml:10:13: profiles\.plain\.kernel holds \{\{…\}\}, which is not filled in here/],
    );
});

t.test(
  'a group or all-zero MAC under machines is refused: no card has one, it would never boot',
  async (t) => {
    const directory = workspace(t);
    for (const mac of ['ff:ff:ff:ff:ff:ff', '01:00:5e:00:00:01', '00:00:00:00:00:00']) {
      const loaded = await loadConfigText(
        `${header}machines:\n  - { mac: "${mac}", profile: plain }\n`,
        join(directory, 'rackboot.yaml'),
        { env: {} },
      );
      t.notOk(loaded.ok, mac);
      if (!loaded.ok)
        t.match(
          loaded.problems.map((problem) => formatProblem(problem, directory)),
          [
            new RegExp(
              `^rackboot\\.yaml:14:\\d+: ${mac} is a group \\(multicast or broadcast\\) or all-zero address`,
            ),
          ],
        );
    }
  },
);

t.test('a YAML merge key in the config is one problem saying so, not two that contradict', async (t) => {
  const directory = workspace(t);
  const yaml = header.replace(
    '  plain:\n    kind: linux\n',
    '  base: &base\n    kind: linux\n    kernel: vmlinuz\n  plain:\n    <<: *base\n    kind: linux\n',
  );
  const loaded = await loadConfigText(yaml, join(directory, 'rackboot.yaml'), { env: {} });
  t.notOk(loaded.ok);
  if (!loaded.ok)
    t.same(
      loaded.problems.map((problem) => formatProblem(problem, directory)),
      [
        'rackboot.yaml:12:5: YAML merge keys (<<: *anchor) are not read in the config: write the keys out (Butane templates do read them)',
      ],
    );
});

t.test('a config or template not in UTF-8 is one "not UTF-8" problem naming the file', async (t) => {
  // Before: UTF-16 (with a byte order mark or without) was "the config must be a mapping of keys";
  // a Latin-1 é was a hostname pattern error quoting U+FFFD, and in a template no error at all.
  const directory = workspace(t);
  const config = `${header}machines:\n  - { mac: 52:54:00:00:00:01, profile: plain }\n`;
  const loadedProblems = async (bytes: Buffer, template?: Buffer) => {
    const file = join(directory, 'rackboot.yaml');
    writeFileSync(file, bytes);
    writeFileSync(join(directory, 'ignition', 'worker.bu'), template ?? 'variant: fcos\nversion: 1.5.0\n');
    const loaded = await loadConfigFile(file, VALIDATE_CHECKS);
    return loaded.ok ? [] : loaded.problems.map((problem) => formatProblem(problem, directory));
  };
  const utf16le = Buffer.from(config, 'utf16le');
  t.same(await loadedProblems(Buffer.concat([Buffer.from([0xff, 0xfe]), utf16le])), [
    'rackboot.yaml:1:1: not UTF-8 (UTF-16 little-endian, by its byte order mark): save it as UTF-8',
  ]);
  t.same(await loadedProblems(utf16le), [
    'rackboot.yaml:1:1: not UTF-8 (it reads as UTF-16 little-endian: every other byte is NUL): save it as UTF-8',
  ]);
  t.same(await loadedProblems(utf16le.swap16()), [
    'rackboot.yaml:1:1: not UTF-8 (it reads as UTF-16 big-endian: every other byte is NUL): save it as UTF-8',
  ]);
  const latin1 = Buffer.from(
    config.replace('profile: plain }', 'profile: plain, hostname: café }'),
    'latin1',
  );
  t.same(await loadedProblems(latin1), [
    `rackboot.yaml:14:60: not UTF-8 (byte 0xE9 at offset ${latin1.indexOf(0xe9)} is not UTF-8; Latin-1 or Windows-1252?): save it as UTF-8`,
  ]);
  t.same(
    await loadedProblems(
      Buffer.from(config),
      Buffer.from('variant: fcos\nversion: 1.5.0\n# café\n', 'latin1'),
    ),
    [
      'ignition/worker.bu:3:6: not UTF-8 (byte 0xE9 at offset 34 is not UTF-8; Latin-1 or Windows-1252?): save it as UTF-8',
    ],
  );
  t.same(
    await loadedProblems(Buffer.from(config), Buffer.from('variant: fcos\nversion: 1.5.0\n# caf\uFFFD\n')),
    [],
    'U+FFFD written as UTF-8 is text',
  );
});

t.test('a byte order mark takes no column: first-line problems are where an editor shows them', async (t) => {
  // Before: every column of line 1 was one too far right (1:2 for a key at the start of the line).
  t.same(await problemsOf(t, `\uFEFFbogus: 1\n${header}`), [
    'rackboot.yaml:1:1: unknown key "bogus" (known keys: server, dhcp, unknown_machines, profiles, machines, events, ignition)',
  ]);
  t.same(await problemsOf(t, `\uFEFF{server: {address: 10.77.0.1, htttp: {}}}\n`), [
    'rackboot.yaml:1:31: unknown key "htttp" in server (did you mean "http"?)',
  ]);
  t.same(await problemsOf(t, `\uFEFF${header}    bogus: 1\n`), [
    'rackboot.yaml:13:5: unknown key "bogus" in profiles.plain (known keys: kind, kernel, initrd, rootfs, coreos, arch, install_device, ignition, args)',
  ]);
});

t.test('a vars value of the wrong type names the machine and the key, in words', async (t) => {
  // Before: "machines[0].vars.role: expected union value, got a list of 2 items", and a `vars` list
  // was taken for a mapping of its indexes ({{vars.0}}), the config valid.
  const problems = await problemsOf(
    t,
    `${header}machines:
  - mac: 52:54:00:00:00:01
    profile: plain
    vars:
      role: [a, b]
      disk: { dev: sda }
      empty:
      rack: 7
  - { mac: 52:54:00:00:00:02, profile: plain, vars: [role, x] }
  - { mac: 52:54:00:00:00:03, profile: plain, vars: plain }
`,
  );
  t.same(problems, [
    'rackboot.yaml:17:13: machines[0].vars.role (machine 52:54:00:00:00:01): {{vars.role}} takes one value (text, a number, true or false), got a list of 2 items; quote it to pass it as text',
    'rackboot.yaml:18:13: machines[0].vars.disk (machine 52:54:00:00:00:01): {{vars.disk}} takes one value (text, a number, true or false), got a mapping (dev); quote it to pass it as text',
    'rackboot.yaml:19:13: machines[0].vars.empty (machine 52:54:00:00:00:01) has no value: write one, or "" for an empty text',
    'rackboot.yaml:21:53: machines[1].vars (machine 52:54:00:00:00:02): a mapping of NAME: value (role: worker) for {{vars.NAME}}, got a list of 2 items',
    'rackboot.yaml:22:53: machines[2].vars (machine 52:54:00:00:00:03): a mapping of NAME: value (role: worker) for {{vars.NAME}}, got "plain"',
  ]);
});

t.test('a list or mapping key with nothing under it is empty, or its defaults', async (t) => {
  const directory = workspace(t);
  const file = join(directory, 'rackboot.yaml');
  const yaml = `server:
  address: 10.77.0.1
  http:
dhcp:
  dns:
  subnets:
events:
ignition:
profiles:
  plain:
    kind: linux
    kernel: vmlinuz
    initrd:
    args:
    arch:
machines:
`;
  const loaded = await loadConfigText(yaml, file, { env: {} });
  t.ok(loaded.ok, loaded.ok ? 'loads' : JSON.stringify(loaded.problems));
  if (loaded.ok) {
    t.same(loaded.config.machines, [], 'machines: with every machine commented out');
    t.equal(loaded.config.server.http.port, 8080, 'http: takes its defaults');
    t.same(loaded.config.dhcp.subnets, []);
    t.equal(loaded.config.events.retention, 200000);
    t.same(loaded.config.profiles.plain?.args, undefined);
  }
  const withVars = await loadConfigText(
    `${yaml}  - { mac: 52:54:00:00:00:01, profile: plain, vars: }\n`,
    file,
    {
      env: {},
    },
  );
  t.same(withVars.ok ? withVars.config.machines[0]?.vars : withVars.problems, {}, 'vars: is no vars');

  const nothing = await loadConfigText(
    `server:\n  address: 10.77.0.1\nprofiles:\n  plain:\nmachines:\n  -\n`,
    file,
    { env: {} },
  );
  t.same(
    nothing.ok ? [] : nothing.problems.map((problem) => formatProblem(problem, directory)),
    [
      'rackboot.yaml:4:3: profile "plain" needs a kernel (or coreos.stream)',
      'rackboot.yaml:4:9: profiles.plain: expected object, got null',
      'rackboot.yaml:6:4: machines[0]: expected object, got null',
    ],
    'a profile or a machine with nothing is still refused: it lacks its required keys',
  );
});
