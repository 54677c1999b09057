import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, constants, openSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import t from 'tap';
import { PROJECT_ROOT, runCli } from './helpers/cli.js';
import { asNobody, requireRoot } from './helpers/root.js';

t.test('the example rackboot.yaml validates (exit 0) on a fresh clone', async (t) => {
  const result = await runCli(['validate', '-c', join(PROJECT_ROOT, 'rackboot.yaml')]);
  t.equal(result.code, 0, result.stderr);
  t.match(result.stdout, /valid \(2 machines, 1 profile\)/);
});

t.test('an invalid config exits 1 with one FILE:LINE:COL line per problem on stderr', async (t) => {
  const directory = t.testdir({
    'rackboot.yaml': `server:
  address: 10.77.0.1
  htttp: { port: 80 }
dhcp:
  lease_time: 1 hour
profiles: {}
machines:
  - { mac: 52:54:00:00:00:01, profile: missing }
`,
  });
  const result = await runCli(['validate'], { cwd: directory, env: { RACKBOOT_CONFIG: '' } });
  t.equal(result.code, 1);
  t.same(result.stderr.trim().split('\n'), [
    'rackboot.yaml:3:3: unknown key "htttp" in server (did you mean "http"?)',
    'rackboot.yaml:5:15: dhcp.lease_time: bad duration "1 hour": use a number of seconds or units without spaces, e.g. 90s, 30m, 1h, 7d, 1h30m',
    'rackboot.yaml:8:40: machines[0].profile names profile "missing", which does not exist (no profiles defined)',
  ]);
  t.equal(result.stdout, '');
});

t.test('a vars name no {{vars.NAME}} can spell is a validate error at its key', async (t) => {
  const directory = t.testdir({
    'rackboot.yaml': `server:
  address: 10.77.0.1
profiles:
  plain: { kind: linux, kernel: https://example.com/vmlinuz }
machines:
  - { mac: 52:54:00:00:00:01, profile: plain, vars: { rack-row: r7, 2nd: x } }
  - mac: 52:54:00:00:00:02
    profile: plain
    vars:
      a.b: 1
      "a b": 2
`,
  });
  const result = await runCli(['validate'], { cwd: directory, env: { RACKBOOT_CONFIG: '' } });
  t.equal(result.code, 1);
  t.same(result.stderr.trim().split('\n'), [
    'rackboot.yaml:10:7: machines[1].vars: bad vars name "a.b": vars names may hold letters, digits, _ and -, except __proto__, constructor, prototype',
    'rackboot.yaml:11:7: machines[1].vars: bad vars name "a b": vars names may hold letters, digits, _ and -, except __proto__, constructor, prototype',
  ]);
});

t.test('-c falls back to $RACKBOOT_CONFIG when ./rackboot.yaml does not exist', async (t) => {
  const directory = t.testdir({ 'elsewhere.yaml': 'server: { address: 10.77.0.1 }\n' });
  const result = await runCli(['validate'], {
    cwd: directory,
    env: { RACKBOOT_CONFIG: join(directory, 'elsewhere.yaml') },
  });
  t.equal(result.code, 0, result.stderr);
  t.match(result.stdout, /elsewhere\.yaml: valid \(0 machines, 0 profiles\)/);
});

t.test('a missing config file is one clear line and exit 1', async (t) => {
  const directory = t.testdir({});
  const result = await runCli(['validate', '-c', 'nope.yaml'], { cwd: directory });
  t.equal(result.code, 1);
  t.match(result.stderr, /nope\.yaml:1:1: cannot read config: file not found/);
});

t.test('--help lists the contract verbs', async (t) => {
  const result = await runCli(['--help']);
  t.equal(result.code, 0);
  for (const verb of ['serve', 'validate']) t.match(result.stdout, new RegExp(`\\n  ${verb}\\b`));
});

t.test('listen addresses are IPv4 addresses, as the servers bind them', async (t) => {
  const directory = t.testdir({
    'rackboot.yaml': `server:
  address: 10.77.0.1
  http: { listen: 10.0.0.300 }
  tftp: { listen: eth0 }
dhcp: { mode: off }
`,
  });
  const result = await runCli(['validate', '-c', 'rackboot.yaml'], { cwd: directory });
  t.equal(result.code, 1);
  t.same(result.stderr.trim().split('\n'), [
    'rackboot.yaml:3:19: server.http.listen: "10.0.0.300" is not an IPv4 address',
    'rackboot.yaml:4:19: server.tftp.listen: "eth0" is not an IPv4 address',
  ]);
});

t.test(
  'missing iPXE programs are warnings naming the fetch; proxy mode notes the keys it ignores',
  async (t) => {
    const proxy = `server:
  address: 10.77.0.1
dhcp:
  mode: proxy
  subnet: 10.77.0.0/24
  router: 10.77.0.1
  lease_time: 2h
machines:
  - { mac: 52:54:00:00:00:01, profile: p, ip: 10.77.0.5 }
profiles:
  p: { kind: linux, kernel: https://example.com/vmlinuz }
`;
    const directory = t.testdir({ 'rackboot.yaml': proxy, 'boot-assets': { 'undionly.kpxe': 'bios' } });
    const result = await runCli(['validate', '-c', 'rackboot.yaml'], { cwd: directory });
    t.equal(result.code, 0, result.stderr);
    t.same(result.stderr.trim().split('\n'), [
      `rackboot.yaml:4:9: warning: ipxe.efi (iPXE for x86-64 UEFI, dhcp.efi_binary) not found under ${join(directory, 'boot-assets')}; run rackboot fetch ipxe`,
      "rackboot.yaml:4:9: note: dhcp.mode proxy leaves addresses to the LAN's DHCP server, so dhcp.subnet, dhcp.router, dhcp.lease_time, machines[].ip (1 machine) have no effect (they apply in authoritative mode)",
    ]);

    const off = t.testdir({ 'rackboot.yaml': 'server: { address: 10.77.0.1 }\ndhcp: { mode: off }\n' });
    const quiet = await runCli(['validate', '-c', 'rackboot.yaml'], { cwd: off });
    t.equal(quiet.stderr, '', 'no DHCP, no boot programs needed');
  },
);

t.test('--strict makes a missing asset an error and still prints the warnings', async (t) => {
  const directory = t.testdir({
    'rackboot.yaml': `server:
  address: 10.77.0.1
dhcp: { mode: off }
profiles:
  p: { kind: linux, kernel: vmlinuz, args: ["console=ttyS0 quiet"] }
`,
    'boot-assets': {},
  });
  const loose = await runCli(['validate', '-c', 'rackboot.yaml'], { cwd: directory });
  t.equal(loose.code, 0, loose.stderr);
  const strict = await runCli(['validate', '--strict', '-c', 'rackboot.yaml'], { cwd: directory });
  t.equal(strict.code, 1);
  const [error, ...rest] = strict.stderr.trim().split('\n');
  t.match(error, /^rackboot\.yaml:5:29: vmlinuz not found under /, 'the missing kernel is the error');
  t.same(
    rest,
    loose.stderr
      .trim()
      .split('\n')
      .filter((line) => !line.includes('vmlinuz')),
    'every other warning of the plain run is still printed',
  );
  t.ok(rest.length > 0 && rest.every((line) => line.includes(': warning: ')), rest.join('\n'));
});

t.test('a server.state serve could not use is a warning at its line', async (t) => {
  const directory = t.testdir({
    'rackboot.yaml': 'server:\n  address: 10.77.0.1\n  state: taken\ndhcp: { mode: off }\n',
    taken: 'a file',
  });
  const result = await runCli(['validate', '-c', 'rackboot.yaml'], { cwd: directory });
  t.equal(result.code, 0, result.stderr);
  t.match(
    result.stderr,
    `rackboot.yaml:3:10: warning: server.state ${join(directory, 'taken')} is not a directory;`,
  );
});

t.test('a problem on a tab-indented line says tabs are the cause', async (t) => {
  const directory = t.testdir({ 'rackboot.yaml': 'server:\n\t address: 10.77.0.1\n  http: 1\n' });
  const result = await runCli(['validate', '-c', 'rackboot.yaml'], { cwd: directory });
  t.equal(result.code, 1);
  t.match(
    result.stderr,
    'rackboot.yaml:2:12: YAML syntax error: Nested mappings are not allowed in compact mappings (YAML indentation must use spaces, not tabs)',
  );
});

t.test('a var missing for a listed machine and for unknown_machines is reported for both', async (t) => {
  const directory = t.testdir({
    'rackboot.yaml': `server:
  address: 10.77.0.1
unknown_machines: plain
profiles:
  plain:
    kind: linux
    kernel: https://example.com/vmlinuz
    args: ["role={{vars.role}}"]
    ignition: role.bu
machines:
  - { mac: 52:54:00:00:00:01, profile: plain }
`,
    'role.bu': `variant: fcos
version: 1.5.0
storage:
  files:
    - path: /etc/role
      contents: { inline: "{{vars.role}}" }
`,
  });
  const result = await runCli(['validate'], { cwd: directory, env: { RACKBOOT_CONFIG: '' } });
  t.equal(result.code, 1);
  const unknownMachinesProblem =
    '{{vars.role}} cannot be filled for machines not in the inventory (unknown_machines: plain): they have no vars';
  const problems = result.stderr
    .trim()
    .split('\n')
    .filter((line) => !line.includes('warning:'));
  t.same(problems, [
    `rackboot.yaml:8:12: {{vars.role}} is not set for machine 52:54:00:00:00:01 (add it under the machine's vars)`,
    `rackboot.yaml:8:12: ${unknownMachinesProblem}`,
    `role.bu:6:27: {{vars.role}} is not set for machine 52:54:00:00:00:01 (add it under the machine's vars)`,
    `role.bu:6:27: ${unknownMachinesProblem}`,
  ]);
});

t.test('a profile no machine uses yet validates with vars alone in integer and boolean fields', async (t) => {
  const directory = t.testdir({
    'rackboot.yaml': `server:
  address: 10.77.0.1
profiles:
  app:
    kind: linux
    kernel: https://example.com/vmlinuz
    ignition: app.bu
machines: []
`,
    'app.bu': `variant: fcos
version: 1.5.0
passwd:
  users:
    - name: app
      uid: "{{vars.uid}}"
      system: "{{ vars.system }}"
      gecos: "app {{vars.uid}}"
`,
  });
  const result = await runCli(['validate'], { cwd: directory, env: { RACKBOOT_CONFIG: '' } });
  t.equal(result.code, 0, result.stderr);
  t.match(result.stdout, /valid \(0 machines, 1 profile\)/);
});

t.test(
  'a binary template or config is one "not a text file" problem, not a parse of its bytes',
  async (t) => {
    // Before: every YAML syntax error the bytes made, each quoting them to the terminal (a 1 MB binary
    // gave 2 MB of such lines); the reviewer saw validate reach 4.4 GB on one.
    const binary = randomBytes(4096);
    binary[1000] = 0;
    const nul = binary.indexOf(0);
    const directory = t.testdir({
      'rackboot.yaml': `server:
  address: 10.77.0.1
profiles:
  lab: { kind: linux, kernel: https://example.com/vmlinuz, ignition: lab.bu }
machines:
  - { mac: 52:54:00:00:00:01, profile: lab }
`,
    });
    writeFileSync(join(directory, 'lab.bu'), binary);
    writeFileSync(join(directory, 'binary.yaml'), binary);

    const template = await runCli(['validate'], { cwd: directory, env: { RACKBOOT_CONFIG: '' } });
    t.equal(template.code, 1);
    t.same(
      template.stderr.split('\n').filter((line) => !line.includes('warning:') && line !== ''),
      [`lab.bu:1:1: not a text file (NUL byte at offset ${nul}): rackboot reads it as YAML or JSON text`],
    );

    const config = await runCli(['validate', '-c', 'binary.yaml'], { cwd: directory });
    t.equal(config.code, 1);
    t.equal(
      config.stderr,
      `binary.yaml:1:1: not a text file (NUL byte at offset ${nul}): rackboot reads it as YAML or JSON text\n`,
    );
  },
);

t.test(
  'a config that is a directory is one line and exit 1; a named pipe is read from its writer',
  async (t) => {
    const directory = t.testdir({ 'conf.d': {} });
    const refusal =
      'cannot read config: not a file (a socket, a device or a directory): name the YAML file itself';
    const result = await runCli(['validate', '-c', 'conf.d'], { cwd: directory, timeoutMs: 20_000 });
    t.equal(result.code, 1, 'validate -c conf.d');
    t.equal(result.stderr, `conf.d:1:1: ${refusal}\n`, 'validate -c conf.d');
    const verb = await runCli(['machines', '-c', 'conf.d'], { cwd: directory, timeoutMs: 20_000 });
    t.equal(verb.code, 1, 'machines -c conf.d');
    t.match(verb.stderr, refusal, 'machines -c conf.d');

    // As with process substitution (`-c <(sops -d …)`): the pipe's writer hands over the whole config.
    const pipe = join(directory, 'pipe.yaml');
    execFileSync('mkfifo', [pipe]);
    const validated = runCli(['validate', '-c', 'pipe.yaml'], { cwd: directory, timeoutMs: 20_000 });
    const written = writeFile(pipe, 'server:\n  address: 10.77.0.1\n');
    const piped = await validated;
    // A writer still waiting for a reader (validate failed before it read) is let go.
    closeSync(openSync(pipe, constants.O_RDONLY | constants.O_NONBLOCK));
    await written;
    t.equal(piped.code, 0, `a config read from a named pipe validates: ${piped.stderr}`);
  },
);

t.test('machines adopt without a config file says which file and how to name or make one', async (t) => {
  const directory = t.testdir({});
  const adopt = ['machines', 'adopt', '52:54:00:00:00:01', '--profile', 'worker'];
  for (const [how, args, env, file] of [
    ['default', adopt, { RACKBOOT_CONFIG: '' }, join(directory, 'rackboot.yaml')],
    [
      '$RACKBOOT_CONFIG',
      adopt,
      { RACKBOOT_CONFIG: join(directory, 'env.yaml') },
      join(directory, 'env.yaml'),
    ],
    ['-c', [...adopt, '-c', 'given.yaml'], {}, join(directory, 'given.yaml')],
  ] as const) {
    const result = await runCli([...args], { cwd: directory, env });
    t.equal(result.code, 1, how);
    t.equal(
      result.stderr,
      `rackboot: no config file ${file}: name yours with -c FILE (or $RACKBOOT_CONFIG), or create it first (rackboot.yaml in rackboot's repository is a complete example; \`rackboot validate\` checks it); nothing written\n`,
      how,
    );
  }
});

t.test('machines adopt of a config it cannot read says why in one line, exit 1', async (t) => {
  // Before: "nothing written: the config cannot be read as it is; fix it first:" and, on a second
  // line, "conf.d:1:1: cannot read config: …", where the other verbs say it in one.
  requireRoot('makes a config only another user cannot read');
  const directory = t.testdir({ 'conf.d': {}, 'rackboot.yaml': 'server: { address: 10.77.0.1 }\n' });
  const adopt = ['machines', 'adopt', '52:54:00:00:00:01', '--profile', 'worker'];
  const refusal = 'rackboot: nothing written: the config cannot be read as it is; fix it first:';
  const directoryGiven = await runCli([...adopt, '-c', 'conf.d'], { cwd: directory });
  t.equal(directoryGiven.code, 1, '-c conf.d');
  t.equal(
    directoryGiven.stderr,
    `${refusal} conf.d:1:1: cannot read config: not a file (a socket, a device or a directory): name the YAML file itself\n`,
    '-c conf.d',
  );

  const file = join(directory, 'rackboot.yaml');
  chmodSync(file, 0o000);
  const main = join(PROJECT_ROOT, 'src', 'cli', 'main.ts');
  const unreadable = asNobody(main, ...adopt, '-c', file);
  t.equal(unreadable.status, 1, 'mode 000, as nobody');
  // Its first line: under tap, the child's coverage hook adds its own complaint as nobody after it.
  // The child shares this process's working directory, which the problem's FILE is shown relative to.
  t.equal(
    unreadable.stderr.split('\n')[0],
    `${refusal} ${relative(process.cwd(), file)}:1:1: cannot read config: EACCES: permission denied, open '${file}'`,
    'mode 000, as nobody',
  );
});

t.test('the verbs that call a server, without a config file or --url, say so in one line', async (t) => {
  // Before: "no --url given and the config does not load:" and, on a second line,
  // "rackboot.yaml:1:1: cannot read config: file not found".
  const directory = t.testdir({ 'conf.d': {} });
  const file = join(directory, 'rackboot.yaml');
  for (const verb of [['machines'], ['logs'], ['reprovision', '52:54:00:00:00:01']]) {
    const name = verb.join(' ');
    const missing = await runCli(verb, { cwd: directory, env: { RACKBOOT_CONFIG: '' } });
    t.equal(missing.code, 1, name);
    t.equal(
      missing.stderr,
      `rackboot: no config file ${file}: name yours with -c FILE (or $RACKBOOT_CONFIG), or create it first (rackboot.yaml in rackboot's repository is a complete example; \`rackboot validate\` checks it); or name the server with --url URL\n`,
      name,
    );
    const unreadable = await runCli([...verb, '-c', 'conf.d'], { cwd: directory });
    t.equal(unreadable.code, 1, `${name} -c conf.d`);
    t.equal(
      unreadable.stderr,
      `rackboot: no --url given and the config does not load: conf.d:1:1: cannot read config: not a file (a socket, a device or a directory): name the YAML file itself\n`,
      `${name} -c conf.d`,
    );
  }
});
