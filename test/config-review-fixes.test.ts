import { dirname, join } from 'node:path';
import t from 'tap';
import { stateSecretError } from '../src/cli/render.js';
import { openMachineSecrets, SECRET_FILE_NAME } from '../src/ignition/tokens.js';
import { loadConfigText } from '../src/inventory/load.js';
import { formatProblem } from '../src/inventory/problems.js';
import { runCli } from './helpers/cli.js';
import { asNobody, requireRoot } from './helpers/root.js';

const MAC = '52:54:00:aa:00:01';

t.test('unquoted vars reach the templates as written: 1.30, 01234, 0x1F, true', async (t) => {
  const directory = t.testdir({
    'rackboot.yaml': `server:
  address: 10.77.0.1
  state: ./state
profiles:
  plain:
    kind: linux
    kernel: https://example.com/vmlinuz
    args: ["k8s={{vars.k8s}}", "zip={{vars.zip}}", "hex={{vars.hex}}", "flag={{vars.flag}}"]
    ignition: plain.bu
machines: [{mac: ${MAC}, profile: plain, vars: {k8s: 1.30, zip: 01234, hex: 0x1F, flag: true}}]
`,
    'plain.bu': `variant: fcos
version: 1.5.0
storage:
  files:
    - path: /etc/versions
      contents:
        inline: "{{vars.k8s}} {{vars.zip}} {{vars.hex}} {{vars.flag}}"
`,
  });
  const config = join(directory, 'rackboot.yaml');
  const ipxe = await runCli(['render', 'ipxe', '--mac', MAC, '-c', config]);
  t.equal(ipxe.code, 0, ipxe.stderr);
  t.match(ipxe.stdout, / k8s=1\.30 zip=01234 hex=0x1F flag=true( |$)/m, 'the kernel arguments');

  const ignition = await runCli(['render', 'ignition', '--mac', MAC, '-c', config]);
  t.equal(ignition.code, 0, ignition.stderr);
  const rendered = JSON.parse(ignition.stdout) as {
    storage: { files: { path: string; contents: { source: string } }[] };
  };
  const file = rendered.storage.files.find((entry) => entry.path === '/etc/versions');
  t.equal(
    decodeURIComponent(file?.contents.source.replace(/^data:,/, '') ?? ''),
    '1.30 01234 0x1F true',
    'the Butane inline file',
  );
});

t.test(
  'render ignition for a MAC the server does not answer: one line like every other refusal, exit 1',
  async (t) => {
    const directory = t.testdir({
      'rackboot.yaml': `server:\n  address: 10.77.0.1\n  state: ./state\nprofiles:\n  plain: { kind: linux, kernel: https://example.com/vmlinuz }\nmachines: [{mac: ${MAC}, profile: plain}]\n`,
    });
    const stranger = '52:54:00:aa:00:99';
    const refused = await runCli([
      'render',
      'ignition',
      '--mac',
      stranger,
      '-c',
      join(directory, 'rackboot.yaml'),
    ]);
    t.same(
      { code: refused.code, stdout: refused.stdout, stderr: refused.stderr },
      {
        code: 1,
        stdout: '',
        stderr: `rackboot: ${stranger} is not in the inventory (unknown_machines: ignore); the server answers 404\n`,
      },
    );
  },
);

t.test(
  'a var in an integer field is read as Butane reads it: 0o, 0x, 0b, 0-octal, underscores, floats',
  async (t) => {
    // Kept as written, vars lost the forms the YAML number used to cover (0o644 rendered 420 before).
    const modes = {
      octal: '0o644',
      hex: '0x1A4',
      legacyOctal: '0644',
      float: '420.0',
      underscored: '4_20',
      binary: '0b110100100',
    };
    const directory = t.testdir({
      'rackboot.yaml': `server:
  address: 10.77.0.1
  state: ./state
profiles:
  plain: { kind: linux, kernel: https://example.com/vmlinuz, ignition: plain.bu }
machines: [{mac: ${MAC}, profile: plain, vars: {${Object.entries(modes)
        .map(([name, mode]) => `${name}: ${mode}`)
        .join(', ')}}}]
`,
      'plain.bu': `variant: fcos
version: 1.5.0
storage:
  files:
${Object.keys(modes)
  .map((name) => `    - { path: /etc/${name}, mode: "{{vars.${name}}}" }`)
  .join('\n')}
`,
    });
    const ignition = await runCli([
      'render',
      'ignition',
      '--mac',
      MAC,
      '-c',
      join(directory, 'rackboot.yaml'),
    ]);
    t.equal(ignition.code, 0, ignition.stderr);
    const files = (JSON.parse(ignition.stdout) as { storage: { files: { path: string; mode: number }[] } })
      .storage.files;
    for (const name of Object.keys(modes))
      t.equal(
        files.find((file) => file.path === `/etc/${name}`)?.mode,
        420,
        `${name}: ${modes[name as keyof typeof modes]}`,
      );
  },
);

t.test("an anchored var keeps YAML's reading, so its aliases elsewhere keep their type", async (t) => {
  const loaded = await loadConfigText(
    `profiles:
  plain: { kind: linux, kernel: https://example.com/vmlinuz }
machines: [{mac: ${MAC}, profile: plain, vars: {port: &port 8080}}]
server:
  address: 10.77.0.1
  http: { port: *port }
`,
    join(t.testdir(), 'rackboot.yaml'),
  );
  t.ok(loaded.ok, loaded.ok ? 'loads' : loaded.problems.map((problem) => formatProblem(problem)).join('\n'));
  if (loaded.ok) t.equal(loaded.config.server.http.port, 8080, 'the alias is still the number');
});

t.test('render ipxe with a history it cannot read warns and renders for a machine not seen', async (t) => {
  const directory = t.testdir({
    'rackboot.yaml': `server:
  address: 10.77.0.1
  state: ./state
profiles:
  plain: { kind: linux, kernel: https://example.com/vmlinuz }
machines: [{mac: ${MAC}, profile: plain}]
`,
    state: { 'lifecycle.sqlite': 'not a database, a file damaged or from something else' },
  });
  const ipxe = await runCli(['render', 'ipxe', '--mac', MAC, '-c', join(directory, 'rackboot.yaml')]);
  t.equal(ipxe.code, 0, ipxe.stderr);
  t.match(ipxe.stderr, /cannot read the history under .*state .*rendering for a machine it has not seen/);
  t.match(ipxe.stdout, /^kernel https:\/\/example\.com\/vmlinuz/m, 'the install script');
  const ignition = await runCli(['render', 'ignition', '--mac', MAC, '-c', join(directory, 'rackboot.yaml')]);
  t.notMatch(ignition.stderr, /cannot read the history/, 'render ignition does not read it');
});

t.test(
  'render refuses a group or all-zero MAC, as the server does, instead of printing a script',
  async (t) => {
    const directory = t.testdir({
      'rackboot.yaml': `server:
  address: 10.77.0.1
  state: ./state
unknown_machines: plain
profiles:
  plain: { kind: linux, kernel: https://example.com/vmlinuz }
`,
    });
    for (const mac of ['ff:ff:ff:ff:ff:ff', '01:00:5e:00:00:01', '00:00:00:00:00:00']) {
      const rendered = await runCli(['render', 'ipxe', '--mac', mac, '-c', join(directory, 'rackboot.yaml')]);
      t.equal(rendered.code, 1, mac);
      t.match(rendered.stderr, `${mac} is a group (multicast or broadcast) or all-zero address`);
      t.equal(rendered.stdout, '', 'no script');
    }
  },
);

const TWO_NAMED_N1 = `server:
  address: 10.77.0.1
  state: ./state
dhcp: { mode: 'off' }
profiles:
  plain: { kind: linux, kernel: https://example.com/vmlinuz }
machines:
  - { mac: 52:54:00:aa:00:01, hostname: n1, profile: plain }
  - { mac: 52:54:00:aa:00:02, hostname: n2, profile: plain }
  - { mac: 52:54:00:aa:00:03, hostname: N1, profile: plain }
`;

t.test('a hostname two machines have is a warning at both, in any case', async (t) => {
  const file = join(t.testdir({ 'rackboot.yaml': TWO_NAMED_N1 }), 'rackboot.yaml');
  const loaded = await loadConfigText(TWO_NAMED_N1, file, { env: {} });
  t.ok(loaded.ok, 'the config still loads');
  t.strictSame(loaded.ok && loaded.warnings.map((warning) => formatProblem(warning, dirname(file))), [
    'rackboot.yaml:8:41: duplicate hostname n1: also at line 10:41 as N1; two machines would answer to one name',
    'rackboot.yaml:10:41: duplicate hostname N1: also at line 8:41 as n1; two machines would answer to one name',
  ]);

  const broken = await loadConfigText(TWO_NAMED_N1.replace('profile: plain }\n', 'profile: nope }\n'), file, {
    env: {},
  });
  t.match(broken, { ok: false, warnings: [{ line: 8 }, { line: 10 }] }, 'listed beside errors too');

  const validated = await runCli(['validate', '-c', file]);
  t.equal(validated.code, 0, 'validate passes it');
  t.match(validated.stderr, /rackboot\.yaml:8:41: warning: duplicate hostname n1: also at line 10:41/);
  t.match(validated.stderr, /rackboot\.yaml:10:41: warning: duplicate hostname N1: also at line 8:41/);
});

t.test('render by a user who cannot read server.state says whose it is and what to do', async (t) => {
  requireRoot('renders as root, then as nobody');
  const directory = t.testdir({
    'rackboot.yaml': `server:\n  address: 10.77.0.1\n  state: ./state\ndhcp: { mode: 'off' }\nprofiles:\n  plain: { kind: linux, kernel: https://example.com/vmlinuz }\nmachines:\n  - { mac: ${MAC}, profile: plain }\n`,
  });
  const config = join(directory, 'rackboot.yaml');
  await openMachineSecrets(join(directory, 'state'));
  const byRoot = await runCli(['render', 'ipxe', '--mac', MAC, '-c', config]);
  t.equal(byRoot.code, 0, byRoot.stderr);
  const main = join(import.meta.dirname, '..', 'src', 'cli', 'main.ts');
  const byOther = asNobody(main, 'render', 'ipxe', '--mac', MAC, '-c', config);
  t.equal(byOther.status, 1);
  // Its first line: under tap, the child's coverage hook adds its own complaint as nobody after it.
  t.equal(
    byOther.stderr.split('\n')[0],
    `rackboot: cannot read the server's secret ${join(directory, 'state', SECRET_FILE_NAME)} (EACCES): the state under server.state is the server's; run render as the server's user or as root`,
  );
});

t.test('render errors other than a permission pass as they are', async (t) => {
  const other = Object.assign(new Error('EIO: i/o error'), { code: 'EIO' });
  t.equal(stateSecretError(other, '/srv/rackboot/state'), other);
});
