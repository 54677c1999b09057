import { spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { parse } from 'yaml';
import {
  ADOPT_LOCK_PATH,
  type AdoptResult,
  adoptIntoFile,
  adoptIntoServer,
  adoptInWorker,
  adoptMachine,
} from '../src/inventory/adopt.js';
import { loadConfigFile } from '../src/inventory/load.js';
import { badName, NAME_PATTERN, nameRule } from '../src/inventory/names.js';
import { watchConfig } from '../src/inventory/source.js';
import { VALIDATE_CHECKS } from '../src/inventory/validate-checks.js';
import { runCli } from './helpers/cli.js';
import { fill, fullTmpfs, moduleAsNobody, NOBODY, requireRoot } from './helpers/root.js';
import { API_TOKEN, mac, startLifecycleApp } from './lifecycle-fixture.js';

const NEW = mac('52:54:00:00:00:09');
const PROFILES = 'profiles:\n  worker: {kind: linux}   # the usual\n  "123": {kind: linux}\n';

function adopted(text: string, hostname?: string, profile = 'worker'): string {
  const result = adoptMachine(text, { mac: NEW, profile, hostname });
  if (!result.ok) throw new Error(result.message);
  return result.text;
}

t.test('the new entry is spliced in; every other byte stays', async (t) => {
  const cases: [string, string, string][] = [
    [
      'block list with comments, aligned',
      `${PROFILES}machines:\n    # rack 1\n    -   mac: 52:54:00:00:00:01   # left\n        profile: worker\n# trailing comment\n`,
      `${PROFILES}machines:\n    # rack 1\n    -   mac: 52:54:00:00:00:01   # left\n        profile: worker\n    -   mac: ${NEW}\n        hostname: n9\n        profile: worker\n# trailing comment\n`,
    ],
    [
      'a commented-out key under the last entry stays with it; a comment of the file stays after',
      `${PROFILES}machines:\n  - mac: 52:54:00:00:00:01\n    profile: worker\n    # ip: 10.0.0.5   # its reservation\n\n# end\n`,
      `${PROFILES}machines:\n  - mac: 52:54:00:00:00:01\n    profile: worker\n    # ip: 10.0.0.5   # its reservation\n  - mac: ${NEW}\n    hostname: n9\n    profile: worker\n\n# end\n`,
    ],
    [
      // Once, the dash was looked for back from the first key, and a `-` in a comment or an anchor
      // put the new entry's dash there: a file yaml could not parse, refused as the machine's fault.
      'a comment after the first dash, holding a dash',
      `${PROFILES}machines:\n  - # rack-1\n    mac: 52:54:00:00:00:01\n    profile: worker\n`,
      `${PROFILES}machines:\n  - # rack-1\n    mac: 52:54:00:00:00:01\n    profile: worker\n  - mac: ${NEW}\n    hostname: n9\n    profile: worker\n`,
    ],
    [
      'an anchor after the first dash, holding a dash',
      `${PROFILES}machines:\n  - &node-1\n    mac: 52:54:00:00:00:01\n    profile: worker\n`,
      `${PROFILES}machines:\n  - &node-1\n    mac: 52:54:00:00:00:01\n    profile: worker\n  - mac: ${NEW}\n    hostname: n9\n    profile: worker\n`,
    ],
    [
      'flow maps in a block list',
      `${PROFILES}machines:\n  - { mac: 52:54:00:00:00:01, profile: worker }\n`,
      `${PROFILES}machines:\n  - { mac: 52:54:00:00:00:01, profile: worker }\n  - { mac: ${NEW}, hostname: n9, profile: worker }\n`,
    ],
    [
      'a flow list',
      `${PROFILES}machines: [{mac: 52:54:00:00:00:01, profile: worker}]  # all of them\n`,
      `${PROFILES}machines: [{mac: 52:54:00:00:00:01, profile: worker}, { mac: ${NEW}, hostname: n9, profile: worker } ]  # all of them\n`,
    ],
    [
      'a flow list with a trailing comma keeps one',
      `${PROFILES}machines: [{mac: 52:54:00:00:00:01, profile: worker}, ]  # all of them\n`,
      `${PROFILES}machines: [{mac: 52:54:00:00:00:01, profile: worker}, { mac: ${NEW}, hostname: n9, profile: worker }, ]  # all of them\n`,
    ],
    [
      'a flow list of one entry a line with a trailing comma gets one more line',
      `${PROFILES}machines: [\n    {mac: 52:54:00:00:00:01, profile: worker},  # rack 1\n]\n`,
      `${PROFILES}machines: [\n    {mac: 52:54:00:00:00:01, profile: worker},  # rack 1\n    { mac: ${NEW}, hostname: n9, profile: worker },\n]\n`,
    ],
    [
      'a flow list of one entry a line without a trailing comma gets one more line, and a comma',
      `${PROFILES}machines: [\n    {mac: 52:54:00:00:00:01, profile: worker}  # rack 1, row 2\n]\n`,
      `${PROFILES}machines: [\n    {mac: 52:54:00:00:00:01, profile: worker},  # rack 1, row 2\n    { mac: ${NEW}, hostname: n9, profile: worker }\n]\n`,
    ],
    [
      'an empty flow list becomes a block list, its comment kept',
      `${PROFILES}machines: []  # none yet\n# end\n`,
      `${PROFILES}machines:   # none yet\n  - mac: ${NEW}\n    hostname: n9\n    profile: worker\n# end\n`,
    ],
    [
      'an empty key',
      `machines:\n${PROFILES}`,
      `machines:\n  - mac: ${NEW}\n    hostname: n9\n    profile: worker\n${PROFILES}`,
    ],
    [
      'no machines key, no final newline',
      PROFILES.trimEnd(),
      `${PROFILES}machines:\n  - mac: ${NEW}\n    hostname: n9\n    profile: worker\n`,
    ],
  ];
  for (const [name, before, after] of cases) {
    const text = adopted(before, 'n9');
    t.equal(text, after, name);
    const machines = (parse(text) as { machines: { mac: string }[] }).machines;
    t.equal(machines.at(-1)?.mac, NEW, `${name}: parses with the new machine last`);
  }
});

t.test('an adopt into a config written as one flow map (JSON) with no machines yet', async (t) => {
  // Once, the entry went in as a block list, which a flow map cannot hold: serve then refused the
  // file, and adopt blamed the machine for YAML syntax errors of its own making.
  const head = '{\n  "profiles": {"worker": {"kind": "linux"}}';
  const cases: [string, string, string][] = [
    [
      'an empty list',
      `${head},\n  "machines": []\n}\n`,
      `${head},\n  "machines": [{ mac: ${NEW}, hostname: n9, profile: worker }]\n}\n`,
    ],
    [
      'a null list',
      `${head},\n  "machines": null\n}\n`,
      `${head},\n  "machines": [{ mac: ${NEW}, hostname: n9, profile: worker }]\n}\n`,
    ],
    [
      'no machines key',
      `${head}\n}\n`,
      `{ machines: [{ mac: ${NEW}, hostname: n9, profile: worker }],\n  "profiles": {"worker": {"kind": "linux"}}\n}\n`,
    ],
  ];
  for (const [name, before, after] of cases) {
    const text = adopted(before, 'n9');
    t.equal(text, after, name);
    t.same(
      (parse(text) as { machines: unknown[] }).machines,
      [{ mac: NEW, hostname: 'n9', profile: 'worker' }],
      `${name}: parses`,
    );
  }
});

t.test(
  'an adopt into a file with a document end marker and no machines goes before the marker',
  async (t) => {
    // After `...` the list started a second document, and the adopt was refused for it.
    for (const [name, ending] of [
      ['with comments around it', '# last\n...\n# after\n'],
      ['last in the file', '...'],
    ] as const) {
      const text = adopted(`---\n${PROFILES}${ending}`);
      t.equal(
        text,
        `---\n${PROFILES}${ending.replace('...', `machines:\n  - mac: ${NEW}\n    profile: worker\n...`)}`,
        name,
      );
      t.same((parse(text) as { machines: unknown[] }).machines, [{ mac: NEW, profile: 'worker' }], name);
    }
  },
);

t.test('an adopt into a CRLF file writes CRLF lines, in every layout', async (t) => {
  const layouts: [string, string][] = [
    ['block list', 'machines:\n  - mac: 52:54:00:00:00:01\n    profile: worker\n'],
    ['flow maps in a block list', 'machines:\n  - { mac: 52:54:00:00:00:01, profile: worker }\n'],
    ['flow list, one entry a line', 'machines: [\n  {mac: 52:54:00:00:00:01, profile: worker},\n]\n'],
    ['empty flow list', 'machines: []\n'],
    ['empty key, last line unended', 'machines:'],
    ['no machines key, last line unended', 'server: {}'],
  ];
  for (const [name, machines] of layouts) {
    const text = adopted(`${PROFILES}${machines}`.replace(/\n/g, '\r\n'), 'n9');
    t.notMatch(text, /[^\r]\n/, `${name}: no LF without its CR`);
    const listed = (parse(text) as { machines: { mac: string }[] }).machines;
    t.equal(listed.at(-1)?.mac, NEW, `${name}: parses with the new machine last`);
  }
});

t.test('values YAML would read as something else are quoted', async (t) => {
  const text = adopted(`${PROFILES}machines: []\n`, undefined, '123');
  t.match(text, /profile: "123"/);
  t.same((parse(text) as { machines: unknown[] }).machines, [{ mac: NEW, profile: '123' }]);
});

t.test('a profile whose key YAML reads as a number is adopted by its name as written', async (t) => {
  // The loader reads `007:` as profile "007" (README, "Text is read as it is written"); adopt
  // looked for the key the number 7 and refused: no profile named 007 (did you mean "7"?).
  const text = adopted(`profiles:\n  007: {kind: linux}\nmachines: []\n`, undefined, '007');
  t.same((parse(text) as { machines: unknown[] }).machines, [{ mac: NEW, profile: '007' }]);
  t.match(adoptMachine(`profiles:\n  007: {kind: linux}\n`, { mac: NEW, profile: '7' }), {
    code: 'unknown-profile',
    message: 'no profile named 7 under profiles (did you mean "007"?)',
  });
});

t.test('refusals', async (t) => {
  t.match(adoptMachine(`${PROFILES}machines: []\n`, { mac: NEW, profile: 'nope' }), {
    ok: false,
    code: 'unknown-profile',
  });
  t.match(adoptMachine(`${PROFILES}machines: []\n`, { mac: NEW, profile: 'wroker' }), {
    code: 'unknown-profile',
    message: 'no profile named wroker under profiles (did you mean "worker"?)',
  });
  t.match(
    adoptMachine(`${PROFILES}machines:\n  - {mac: 52-54-00-00-00-09, profile: worker}\n`, {
      mac: NEW,
      profile: 'worker',
    }),
    { ok: false, code: 'already-listed' },
    'the same MAC in another spelling',
  );
  t.match(
    adoptMachine(`${PROFILES}machines:\n  - {mac: 525400000009, profile: worker}\n`, {
      mac: NEW,
      profile: 'worker',
    }),
    { ok: false, code: 'already-listed' },
    'the same MAC as unquoted bare hex, which YAML reads as a number',
  );
  t.match(adoptMachine(`${PROFILES}machines: {a: 1}\n`, { mac: NEW, profile: 'worker' }), {
    ok: false,
    code: 'invalid',
  });
  t.match(adoptMachine('profiles: [\n', { mac: NEW, profile: 'worker' }), { ok: false, code: 'invalid' });
  // Once, an entry that is no map made the list look empty, and the "empty list" rewrite deleted
  // every machine above it.
  for (const [name, item] of [
    ['a bare MAC', '  - 52:54:00:00:00:03\n'],
    ['an empty item', '  -\n'],
  ]) {
    t.match(
      adoptMachine(`${PROFILES}machines:\n  - mac: 52:54:00:00:00:01\n    profile: worker\n${item}`, {
        mac: NEW,
        profile: 'worker',
      }),
      {
        ok: false,
        code: 'invalid',
        message: 'machines[1] is not a machine entry (mac:, profile: …); fix it first',
      },
      `${name} last in the list: refused, nothing rewritten`,
    );
  }
});

t.test('vars are written as a flow map in block and flow entries, quoted where YAML needs it', async (t) => {
  const vars = { role: 'worker', rack: '12', note: 'a, b' };
  const cases: [string, string, string][] = [
    [
      'block list',
      `${PROFILES}machines:\n  - mac: 52:54:00:00:00:01\n    profile: worker\n`,
      `  - mac: ${NEW}\n    profile: worker\n    vars: { role: worker, rack: "12", note: "a, b" }\n`,
    ],
    [
      'flow maps',
      `${PROFILES}machines:\n  - { mac: 52:54:00:00:00:01, profile: worker }\n`,
      `  - { mac: ${NEW}, profile: worker, vars: { role: worker, rack: "12", note: "a, b" } }\n`,
    ],
  ];
  for (const [name, before, entry] of cases) {
    const result = adoptMachine(before, { mac: NEW, profile: 'worker', vars });
    if (!result.ok) throw new Error(result.message);
    t.equal(result.text, `${before}${entry}`, name);
    t.same((parse(result.text) as { machines: { vars?: unknown }[] }).machines.at(-1)?.vars, vars);
  }
  t.match(adoptMachine(PROFILES, { mac: NEW, profile: 'worker', vars: { 'a.b': 'x' } }), {
    ok: false,
    code: 'invalid',
    message: `bad vars name "a.b": ${nameRule('vars')}`,
  });
});

t.test('adopt takes every vars name a template can spell as {{vars.NAME}}', async (t) => {
  const vars = { 'rack-row': 'r7', '2nd': 'x', _a: 'y' };
  const result = adoptMachine(PROFILES, { mac: NEW, profile: 'worker', vars });
  if (!result.ok) return t.fail(result.message);
  t.same((parse(result.text) as { machines: { vars?: unknown }[] }).machines.at(-1)?.vars, vars);
  for (const name of ['a.b', 'a b', '', 'é']) {
    t.match(
      adoptMachine(PROFILES, { mac: NEW, profile: 'worker', vars: { [name]: 'x' } }),
      { ok: false, code: 'invalid', message: badName('vars', name) },
      JSON.stringify(name),
    );
  }
});

t.test("the dashboard's adopt form checks vars names by the same pattern", async (t) => {
  const page = readFileSync(new URL('../src/http/dashboard/app.js', import.meta.url), 'utf8');
  t.equal(/\nconst VAR_NAME = \/(.*)\/;\n/.exec(page)?.[1], NAME_PATTERN);
});

const TEMPLATE =
  'variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/role\n      contents:\n        inline: "{{vars.role}}"\n';
const WITH_A_MACHINE = 'machines:\n  - { mac: 52:54:00:00:00:01, profile: worker, vars: { role: db } }\n';

/**
 * A config whose template needs `{{vars.role}}`, and the machines already in it; its server.state is
 * ../state, beside the config's directory, so the tests see that adopts leave that directory alone.
 */
function configDirectory(machines: string) {
  return {
    config: {
      'worker.bu': TEMPLATE,
      'rackboot.yaml': `server:\n  address: 10.77.0.1\n  state: ../state\nprofiles:\n  worker: { kind: linux, kernel: https://example.com/vmlinuz, ignition: worker.bu }\n  plain: { kind: linux, kernel: https://example.com/vmlinuz }\n${machines}`,
    },
  };
}

function configWithTemplate(t: Test, machines = WITH_A_MACHINE) {
  return join(t.testdir(configDirectory(machines)), 'config', 'rackboot.yaml');
}

/** Where adopts into `file` (a configDirectory config) take turns. */
const adoptLockOf = (file: string) => join(dirname(file), '..', 'state', ADOPT_LOCK_PATH);

/** The PID of a process that has exited. */
function goneProcess(): number {
  return Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout);
}

const adoptedMacs = (file: string) =>
  (parse(readFileSync(file, 'utf8')) as { machines: { mac: string }[] }).machines.map(
    (machine) => machine.mac,
  );

t.test('adopt refuses what validate refuses, templates included, and leaves the file alone', async (t) => {
  const file = configWithTemplate(t);
  const before = readFileSync(file, 'utf8');
  const result = await adoptIntoFile(file, { mac: NEW, profile: 'worker' });
  t.match(result, {
    ok: false,
    code: 'rejected',
    message: /\{\{vars\.role\}\} is not set for machine 52:54:00:00:00:09/,
    problems: [/worker\.bu:7:\d+: .*\{\{vars\.role\}\} is not set/],
  });
  t.equal(readFileSync(file, 'utf8'), before, 'the file is unchanged');
  const loaded = await loadConfigFile(file, VALIDATE_CHECKS);
  t.ok(loaded.ok, 'and still validates');
});

/** Boot assets in `assets` and `other-assets`; the config's profile needs an initrd. */
function configWithAssets(t: Test, running: Record<string, string>, other: Record<string, string>) {
  const directory = t.testdir({
    assets: running,
    'other-assets': other,
    config: {
      'rackboot.yaml':
        'server:\n  address: 10.77.0.1\n  state: ../state\n  assets: ../assets\nprofiles:\n  lab: { kind: linux, kernel: vmlinuz, initrd: [initrd.img] }\nmachines: []\n',
    },
  });
  return { file: join(directory, 'config', 'rackboot.yaml'), runningAssets: join(directory, 'assets') };
}

t.test('adopt refuses what serve would refuse: a missing boot asset, in the CLI too', async (t) => {
  // Before, adopt checked as validate does (a missing asset only a warning): the file was written,
  // and the server, which refuses a config missing an asset, went on serving the machine unlisted.
  const { file } = configWithAssets(t, { vmlinuz: 'k' }, {});
  const before = readFileSync(file, 'utf8');
  t.match(await adoptIntoFile(file, { mac: NEW, profile: 'lab' }), {
    ok: false,
    code: 'rejected',
    message: /^nothing written: rackboot serve would refuse the config/,
    problems: [/rackboot\.yaml:6:\d+: initrd\.img not found under .*assets$/],
  });
  t.equal(readFileSync(file, 'utf8'), before, 'the file is unchanged');
  const cli = await runCli(['machines', 'adopt', NEW, '--profile', 'lab', '-c', file]);
  t.equal(cli.code, 1, 'machines adopt exits 1');
  t.match(cli.stderr, /rackboot\.yaml:6:\d+: initrd\.img not found under/);
  t.equal(readFileSync(file, 'utf8'), before, 'and leaves the file alone');
});

t.test('an adopt into a file that is refused without the machine says so, with its problems', async (t) => {
  // Before: "rackboot serve would refuse the config with this machine", listing an edit the running
  // server had already rejected (a duplicate MAC): the new machine was blamed for it.
  const { file } = configWithAssets(t, { vmlinuz: 'k', 'initrd.img': 'i' }, {});
  const entry = '  - { mac: 52:54:00:00:00:01, profile: lab }\n';
  writeFileSync(file, readFileSync(file, 'utf8').replace('machines: []\n', `machines:\n${entry}${entry}`));
  t.match(await adoptIntoFile(file, { mac: NEW, profile: 'lab' }), {
    ok: false,
    code: 'rejected',
    message:
      /^nothing written: rackboot serve would refuse the config even without this machine; fix it first:\n/,
    problems: [/rackboot\.yaml:8:\d+: duplicate MAC/, /rackboot\.yaml:9:\d+: duplicate MAC/],
  });
});

t.test('a server adopt checks the profiles’ files under the assets it runs with', async (t) => {
  // The file names another server.assets than the running server's, which keeps its own until a
  // restart: the server's reload checks the files under the running one.
  const { file, runningAssets } = configWithAssets(t, { vmlinuz: 'k' }, { vmlinuz: 'k', 'initrd.img': 'i' });
  writeFileSync(file, readFileSync(file, 'utf8').replace('assets: ../assets', 'assets: ../other-assets'));
  t.match(await adoptIntoFile(file, { mac: NEW, profile: 'lab' }, { runningAssets }), {
    ok: false,
    code: 'rejected',
    problems: [/rackboot\.yaml: profiles\.lab\.initrd\.0: initrd\.img not found under .*\/assets$/],
  });
  t.match(await adoptIntoFile(file, { mac: NEW, profile: 'lab' }), { ok: true }, 'by the file alone, valid');
});

t.test('a server adopt whose reload is rejected all the same says so, with the problems', async (t) => {
  const { file } = configWithAssets(t, { vmlinuz: 'k', 'initrd.img': 'i' }, {});
  const loaded = await loadConfigFile(file);
  if (!loaded.ok) throw new Error('fixture config must load');
  // What a template edited between the adopt's check and the reload does.
  const problem = { file, line: 6, col: 3, message: 'broken meanwhile' };
  const source = watchConfig(loaded.config, {
    logger: pino({ level: 'silent' }),
    load: async () => ({ ok: false, problems: [problem] }),
  });
  t.teardown(() => source.close());
  t.match(await adoptIntoServer(source, { mac: NEW, profile: 'lab' }), {
    ok: false,
    code: 'not-applied',
    message: /^52:54:00:00:00:09 was written to .*rackboot\.yaml, but the running server rejected its reload/,
    problems: [/rackboot\.yaml:6:3: broken meanwhile$/],
  });
  t.same(adoptedMacs(file), [NEW], 'the file has the machine');
  t.equal(source.current(), loaded.config, 'the running config does not');
});

t.test('a server adopt whose reload applies a file saved over it without the machine says so', async (t) => {
  const { file } = configWithAssets(t, { vmlinuz: 'k', 'initrd.img': 'i' }, {});
  const before = readFileSync(file, 'utf8');
  const loaded = await loadConfigFile(file);
  if (!loaded.ok) throw new Error('fixture config must load');
  // An editor that opened the file before the adopt saves its buffer before the reload reads it.
  const source = watchConfig(loaded.config, {
    logger: pino({ level: 'silent' }),
    load: async (path) => {
      writeFileSync(path, before.replace('machines: []', 'machines: [] # edited by hand'));
      return loadConfigFile(path);
    },
  });
  t.teardown(() => source.close());
  t.match(await adoptIntoServer(source, { mac: NEW, profile: 'lab' }), {
    ok: false,
    code: 'busy',
    message: /^52:54:00:00:00:09 was written to .*rackboot\.yaml, but the file was saved over without it/,
  });
  t.same(source.current().machines, [], 'the running server does not list it, as the answer says');
});

t.test('machines adopt --url is refused, not ignored while the local file is edited', async (t) => {
  const file = configWithTemplate(t);
  const before = readFileSync(file, 'utf8');
  const result = await runCli([
    'machines',
    'adopt',
    NEW,
    '--profile',
    'worker',
    '--var',
    'role=storage',
    '-c',
    file,
    '--url',
    'http://127.0.0.1:9',
  ]);
  t.equal(result.code, 1, result.stdout);
  t.match(result.stderr, /^rackboot: --url http:\/\/127\.0\.0\.1:9: machines adopt edits the config file/);
  t.equal(readFileSync(file, 'utf8'), before, 'nothing written');
});

t.test('machines adopt --var sets the vars a template needs', async (t) => {
  const file = configWithTemplate(t);
  const adoptCli = (...extra: string[]) =>
    runCli(['machines', 'adopt', NEW, '--profile', 'worker', '-c', file, ...extra]);
  const refused = await adoptCli('--var', 'role');
  t.equal(refused.code, 1, 'NAME without =VALUE');
  t.match(refused.stderr, /expected NAME=VALUE/);
  const badName = await adoptCli('--var', 'role=storage', '--var', 'a.b=1');
  t.equal(badName.code, 1, 'a name no template can spell');
  t.match(badName.stderr, `bad vars name "a.b": ${nameRule('vars')}`);
  const result = await adoptCli('--var', 'role=storage', '--var', 'zone=b=2', '--var', 'rack-row=r7');
  t.equal(result.code, 0, result.stderr);
  const machines = (parse(readFileSync(file, 'utf8')) as { machines: { mac: string; vars?: unknown }[] })
    .machines;
  t.same(machines.at(-1), {
    mac: NEW,
    profile: 'worker',
    vars: { role: 'storage', zone: 'b=2', 'rack-row': 'r7' },
  });
});

t.test('POST /api/v1/machines/{mac}/adopt takes vars; a bad name is refused, not dropped', async (t) => {
  const { app, configFile, lifecycle } = await startLifecycleApp(t);
  // The kernel its profiles boot: an adopt writes nothing serve would refuse.
  mkdirSync(join(dirname(configFile), 'assets'));
  writeFileSync(join(dirname(configFile), 'assets', 'vmlinuz'), 'k');
  const adopt = (vars: Record<string, string>) =>
    app.inject({
      method: 'POST',
      url: `/api/v1/machines/${NEW}/adopt`,
      headers: { authorization: `Bearer ${API_TOKEN}` },
      payload: { profile: 'spare', vars },
    });
  const refused = await adopt({ role: 'db', 'bad.name': 'x' });
  t.equal(refused.statusCode, 400, refused.body);
  t.equal(refused.json().message, `body/vars: bad vars name "bad.name": ${nameRule('vars')}`);
  t.notMatch(readFileSync(configFile, 'utf8'), NEW, 'nothing written');
  const misspelled = await app.inject({
    method: 'POST',
    url: `/api/v1/machines/${NEW}/adopt`,
    headers: { authorization: `Bearer ${API_TOKEN}` },
    payload: { profile: 'spare', host_name: 'n4' },
  });
  t.equal(misspelled.statusCode, 400, 'a field adopt does not have is refused, not dropped');
  t.equal(misspelled.json().message, 'body has no field "host_name"');
  t.notMatch(readFileSync(configFile, 'utf8'), NEW, 'nothing written');
  const created = await adopt({ role: 'db', 'rack-row': 'r7' });
  t.equal(created.statusCode, 201, created.body);
  t.match(created.json(), { mac: NEW, profile: 'spare', vars: { role: 'db', 'rack-row': 'r7' } });
  t.same(created.json().warnings, [], 'the loader warns of nothing on the new entry');
  const machines = (
    parse(readFileSync(configFile, 'utf8')) as { machines: { mac: string; vars?: unknown }[] }
  ).machines;
  t.same(machines.at(-1), { mac: NEW, profile: 'spare', vars: { role: 'db', 'rack-row': 'r7' } });
  const recorded = lifecycle.latestEvents({ mac: NEW }).find((event) => event.type === 'adopt');
  t.same(
    recorded?.detail,
    { profile: 'spare', vars: ['role', 'rack-row'] },
    'the history names the vars, not their values',
  );
  t.notOk(
    lifecycle.latestEvents({ mac: NEW }).some((event) => event.type === 'transition-rejected'),
    'adopting a MAC never seen is no rejected transition',
  );
});

t.test(
  'concurrent adopts all land in the file, in one process and through the server’s workers',
  async (t) => {
    const macs = [2, 3, 4, 5].map((last) => mac(`52:54:00:00:00:0${last}`));
    const inProcess = configWithTemplate(t, 'machines: []\n');
    const results = await Promise.all(
      macs.map((each) => adoptIntoFile(inProcess, { mac: each, profile: 'plain' })),
    );
    t.ok(
      results.every((result) => result.ok),
      'every adopt succeeds',
    );
    t.same(adoptedMacs(inProcess).sort(), macs, 'every machine is in the file');

    const viaWorkers = configWithTemplate(t, 'machines: []\n');
    const inWorkers = await Promise.all(
      macs.map((each) => adoptInWorker(viaWorkers, { mac: each, profile: 'plain' })),
    );
    t.ok(
      inWorkers.every((result) => result.ok),
      'every adopt succeeds',
    );
    t.same(adoptedMacs(viaWorkers).sort(), macs, 'every machine is in the file');
    t.same(
      readdirSync(dirname(viaWorkers)).sort(),
      ['rackboot.yaml', 'worker.bu'],
      'no temporary or lock file is left beside the config',
    );
    const lockEntries = readdirSync(adoptLockOf(viaWorkers));
    t.equal(lockEntries.length, 1, 'the lock under server.state keeps only its newest entry');
    t.equal(readFileSync(join(adoptLockOf(viaWorkers), lockEntries[0] ?? ''), 'utf8'), 'released');
  },
);

t.test('a lock left by a process that no longer runs does not block adopts', async (t) => {
  const file = configWithTemplate(t, 'machines: []\n');
  // What a holder killed while adopting leaves: the newest entry names its PID.
  mkdirSync(adoptLockOf(file), { recursive: true });
  writeFileSync(join(adoptLockOf(file), '1'), `${goneProcess()}\n`);
  t.match(await adoptIntoFile(file, { mac: NEW, profile: 'plain' }), { ok: true });
  t.same(adoptedMacs(file), [NEW]);
});

t.test('adopters in separate processes that find the same stale lock never hold it together', async (t) => {
  const ROUNDS = 5;
  const ADOPTERS = 4;
  const ROUND_MS = 500;
  // Each round is a config whose lock was left by a killed holder; a round's adopters all start on it
  // at the same instant. Were two to hold the lock together, both would start from the same text: one
  // would be refused (the file changed meanwhile) or lose the other's machine.
  const gone = goneProcess();
  const directory = t.testdir(
    Object.fromEntries(
      Array.from({ length: ROUNDS }, (_, round) => [
        `round-${round}`,
        { ...configDirectory('machines: []\n'), state: { [ADOPT_LOCK_PATH]: { '1': `${gone}\n` } } },
      ]),
    ),
  );
  const files = Array.from({ length: ROUNDS }, (_, round) =>
    join(directory, `round-${round}`, 'config', 'rackboot.yaml'),
  );
  const roundMacs = (round: number) =>
    Array.from({ length: ADOPTERS }, (_, adopter) => mac(`52:54:00:00:0${round}:0${adopter}`));
  const adoptModule = join(import.meta.dirname, '..', 'src', 'inventory', 'adopt.ts');
  // Says `ready` once loaded (seconds on a busy host), then reads the start time from stdin.
  const adopter = `
    import { text } from 'node:stream/consumers';
    import { adoptIntoFile } from ${JSON.stringify(adoptModule)};
    const [adopter, ...files] = process.argv.slice(1);
    process.stdout.write('ready\\n');
    const startAt = Number(await text(process.stdin));
    const results = [];
    for (const [round, file] of files.entries()) {
      while (Date.now() < startAt + round * ${ROUND_MS}) {} // every adopter leaves this loop together
      results.push(await adoptIntoFile(file, { mac: '52:54:00:00:0' + round + ':0' + adopter, profile: 'plain' }));
    }
    process.stdout.write(JSON.stringify(results) + '\\n');`;
  const adopters = Array.from({ length: ADOPTERS }, (_, index) =>
    spawn(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', adopter, String(index), ...files],
      { stdio: ['pipe', 'pipe', 'inherit'], timeout: 60_000 },
    ),
  );
  const lines = adopters.map((child) => createInterface({ input: child.stdout })[Symbol.asyncIterator]());
  t.same(
    (await Promise.all(lines.map((each) => each.next()))).map((line) => line.value),
    Array(ADOPTERS).fill('ready'),
    'every adopter is loaded',
  );
  const startAt = Date.now() + 200;
  for (const child of adopters) child.stdin.end(String(startAt));
  const results = await Promise.all(
    lines.map(async (each) => JSON.parse((await each.next()).value ?? '[]') as AdoptResult[]),
  );
  t.ok(
    Date.now() - startAt < ROUNDS * ROUND_MS + 10_000,
    'the rounds end long before an adopter would give up waiting',
  );

  for (const [round, file] of files.entries()) {
    t.same(
      results.map((each) => each[round]?.ok),
      Array(ADOPTERS).fill(true),
      `round ${round}: every adopt succeeds`,
    );
    t.same(adoptedMacs(file).sort(), roundMacs(round), `round ${round}: every machine is in the file`);
  }
});

/** A config that refers to no other file, so it validates wherever a link to it is. */
const PLAIN_CONFIG =
  'server:\n  address: 10.77.0.1\n  state: ../state\nprofiles:\n  plain: { kind: linux, kernel: https://example.com/vmlinuz }\nmachines: []\n';

t.test(
  'machines adopt into a CRLF file with a trailing-comma flow list writes a config that loads',
  async (t) => {
    const crlf = PLAIN_CONFIG.replace(
      'machines: []\n',
      'machines: [\n  {mac: 52:54:00:aa:00:01, profile: plain},\n]\n',
    ).replace(/\n/g, '\r\n');
    const file = join(t.testdir({ config: { 'rackboot.yaml': crlf } }), 'config', 'rackboot.yaml');
    const result = await runCli(['machines', 'adopt', '52:54:00:aa:00:0b', '--profile', 'plain', '-c', file]);
    t.equal(result.code, 0, result.stderr);
    const text = readFileSync(file, 'utf8');
    t.notMatch(text, /[^\r]\n/, 'CRLF everywhere');
    t.equal(
      text,
      crlf.replace(
        '  {mac: 52:54:00:aa:00:01, profile: plain},\r\n',
        '  {mac: 52:54:00:aa:00:01, profile: plain},\r\n  { mac: 52:54:00:aa:00:0b, profile: plain },\r\n',
      ),
    );
    const loaded = await loadConfigFile(file, VALIDATE_CHECKS);
    t.same(loaded.ok && loaded.config.machines.map((machine) => machine.mac), [
      '52:54:00:aa:00:01',
      '52:54:00:aa:00:0b',
    ]);
  },
);

t.test('adopting through a symbolic link changes its target and keeps the link', async (t) => {
  // Before, the link was replaced by a plain file and the target (which a server watches) kept the
  // old text.
  const directory = t.testdir({ repo: { 'rackboot.yaml': PLAIN_CONFIG }, etc: {} });
  const target = join(directory, 'repo', 'rackboot.yaml');
  const link = join(directory, 'etc', 'rackboot.yaml');
  symlinkSync('../repo/rackboot.yaml', link);
  t.match(await adoptIntoFile(link, { mac: NEW, profile: 'plain' }), { ok: true });
  t.ok(lstatSync(link).isSymbolicLink(), 'the link is still a link');
  t.equal(readlinkSync(link), '../repo/rackboot.yaml', 'to the same target');
  t.same(adoptedMacs(target), [NEW], 'the target has the machine');
  t.same(readdirSync(join(directory, 'repo')), ['rackboot.yaml'], 'no temporary file beside the target');
  t.same(readdirSync(join(directory, 'etc')), ['rackboot.yaml'], 'nor beside the link');
});

t.test('an adopt run as root leaves the config, its state and lock to their owner', async (t) => {
  requireRoot('gives files to nobody');
  // Before, the config became root:root (mode kept, owner not) and the adopt lock root's: the
  // service user's adopts then failed.
  const directory = t.testdir({ config: { 'rackboot.yaml': PLAIN_CONFIG } });
  const file = join(directory, 'config', 'rackboot.yaml');
  for (const path of [directory, dirname(file), file]) chownSync(path, NOBODY, NOBODY);
  chmodSync(file, 0o640);
  t.match(await adoptIntoFile(file, { mac: NEW, profile: 'plain' }), { ok: true });
  const owner = (path: string) => {
    const { uid, gid } = statSync(path);
    return { uid, gid };
  };
  t.same(owner(file), { uid: NOBODY, gid: NOBODY }, 'the config keeps its owner');
  t.equal(statSync(file).mode & 0o777, 0o640, 'and its mode');
  t.same(owner(join(directory, 'state')), { uid: NOBODY, gid: NOBODY }, 'the state directory it made');
  t.same(owner(adoptLockOf(file)), { uid: NOBODY, gid: NOBODY }, 'the adopt lock it made');

  // The service user adopts next, in its own process.
  const adoptModule = join(import.meta.dirname, '..', 'src', 'inventory', 'adopt.ts');
  const next = mac('52:54:00:00:00:0a');
  const adopter = `
    import { adoptIntoFile } from ${JSON.stringify(adoptModule)};
    process.stdout.write(JSON.stringify(await adoptIntoFile(process.argv[1], { mac: process.argv[2], profile: 'plain' })));`;
  const run = moduleAsNobody(adopter, file, next);
  t.match(JSON.parse(run.stdout || '{}'), { ok: true }, 'the service user can adopt after root did', {
    stderr: run.stderr,
  });
  t.same(adoptedMacs(file), [NEW, next]);
});

t.test('an adopt that fills the disk leaves no temporary file and names the config', async (t) => {
  // Before, a 0-byte rackboot.yaml.adopt-<uuid> stayed beside the config and the error was only
  // "ENOSPC: no space left on device, write".
  const { directory: config, filler } = fullTmpfs(t, 'adopt-enospc');
  const file = join(config, 'rackboot.yaml');
  writeFileSync(file, PLAIN_CONFIG);
  fill(filler);
  await t.rejects(adoptIntoFile(file, { mac: NEW, profile: 'plain' }), {
    message: /^cannot write .*rackboot\.yaml: ENOSPC/,
  });
  t.same(readdirSync(config).sort(), ['filler', 'rackboot.yaml'], 'no temporary file left');
  t.equal(readFileSync(file, 'utf8'), PLAIN_CONFIG, 'the config is unchanged');
  rmSync(filler);
  t.match(await adoptIntoFile(file, { mac: NEW, profile: 'plain' }), { ok: true }, 'with room, it adopts');
  t.same(readdirSync(config), ['rackboot.yaml']);
});

t.test(
  'a draft an adopt killed mid-write left is removed by the next adopt; a live writer’s stays',
  async (t) => {
    // Before, the rackboot.yaml.adopt-<uuid> of an adopt killed before its rename stayed for good.
    const directory = t.testdir({ config: { 'rackboot.yaml': PLAIN_CONFIG } });
    const file = join(directory, 'config', 'rackboot.yaml');
    const drafts = () => readdirSync(dirname(file)).filter((name) => name !== 'rackboot.yaml');
    // An adopt that hangs in its fsync, after writing its draft, until it is killed.
    const script = join(directory, 'hang-in-fsync.mts');
    writeFileSync(
      script,
      `import { open } from 'node:fs/promises';
const probe = await open(process.argv[2], 'r');
Object.getPrototypeOf(probe).sync = () => new Promise(() => {});
await probe.close();
const { adoptIntoFile } = await import(${JSON.stringify(join(import.meta.dirname, '..', 'src', 'inventory', 'adopt.ts'))});
await adoptIntoFile(process.argv[2], { mac: '52:54:00:00:00:0a', profile: 'plain' });
`,
    );
    const adopter = spawn(process.execPath, ['--import', 'tsx', script, file], { stdio: 'ignore' });
    t.teardown(() => adopter.kill('SIGKILL'));
    const deadline = Date.now() + 30_000;
    while (drafts().length === 0 && Date.now() < deadline) await new Promise((done) => setTimeout(done, 50));
    adopter.kill('SIGKILL');
    await new Promise((done) => adopter.once('exit', done));
    const [left] = drafts();
    t.match(left, new RegExp(`^rackboot\\.yaml\\.adopt-${adopter.pid}-`), 'the killed adopt left its draft');
    // A live adopt's draft (here another process's) stays; one with this process's PID is a dead one's.
    const live = `rackboot.yaml.adopt-${process.ppid}-000000000000`;
    const ours = `rackboot.yaml.adopt-${process.pid}-000000000000`;
    for (const name of [live, ours]) writeFileSync(join(dirname(file), name), 'partial');
    t.match(await adoptIntoFile(file, { mac: NEW, profile: 'plain' }), { ok: true });
    t.same(adoptedMacs(file), [NEW]);
    t.same(drafts(), [live], 'only the live writer’s draft is left');
  },
);

t.test(
  'drafts earlier versions named adopt-<uuid> or adopt-<pid> are removed once an hour old',
  async (t) => {
    // Before, no adopt removed them: their names carry no owner a sweep by PID could check.
    const directory = t.testdir({ config: { 'rackboot.yaml': PLAIN_CONFIG } });
    const file = join(directory, 'config', 'rackboot.yaml');
    const drafts = () => readdirSync(dirname(file)).filter((name) => name !== 'rackboot.yaml');
    const twoHoursAgo = new Date(Date.now() - 2 * 60 * 60 * 1000);
    const left = (name: string, modified: Date) => {
      writeFileSync(join(dirname(file), name), 'partial');
      utimesSync(join(dirname(file), name), modified, modified);
    };
    left('rackboot.yaml.adopt-0b5fa2c4-3f0e-4d1a-9c8e-5e4f2a7b1d93', twoHoursAgo);
    left('rackboot.yaml.adopt-12345', twoHoursAgo);
    // One being written right now by an older rackboot still running, during an upgrade.
    const young = 'rackboot.yaml.adopt-7d9c1e20-5b4a-4c3f-8e2d-1a6b9f0c4e57';
    left(young, new Date());
    // Not a draft's name: the operator's own file.
    left('rackboot.yaml.adopt-notes', twoHoursAgo);
    t.match(await adoptIntoFile(file, { mac: NEW, profile: 'plain' }), { ok: true });
    t.same(
      drafts().sort(),
      ['rackboot.yaml.adopt-notes', young].sort(),
      'the old drafts are gone, the young one stays',
    );
  },
);

t.test('an adopt fsyncs the new file before the rename and its directory after', async (t) => {
  // Before, nothing was fsynced: a power cut soon after an adopt could leave an empty config.
  const directory = t.testdir({ config: { 'rackboot.yaml': PLAIN_CONFIG } });
  const file = join(directory, 'config', 'rackboot.yaml');
  const probe = await open(file, 'r');
  const prototype = Object.getPrototypeOf(probe) as { sync: (this: FileHandle) => Promise<void> };
  await probe.close();
  const synced: { path: string; fileHasMachine: boolean }[] = [];
  const sync = prototype.sync;
  prototype.sync = function (this: FileHandle) {
    synced.push({
      path: readlinkSync(`/proc/self/fd/${this.fd}`),
      fileHasMachine: readFileSync(file, 'utf8').includes(NEW),
    });
    return sync.call(this);
  };
  t.teardown(() => {
    prototype.sync = sync;
  });
  t.match(await adoptIntoFile(file, { mac: NEW, profile: 'plain' }), { ok: true });
  prototype.sync = sync;
  const temporary = synced.find((each) => /rackboot\.yaml\.adopt-/.test(each.path));
  t.ok(temporary, `the new file is fsynced (synced: ${JSON.stringify(synced)})`);
  t.equal(temporary?.fileHasMachine, false, 'before it is renamed over the config');
  const configDirectory = synced.find((each) => each.path === dirname(file));
  t.ok(configDirectory, 'the directory is fsynced');
  t.equal(configDirectory?.fileHasMachine, true, 'after the rename');
});

t.test(
  'an editor saving while an adopt renames its draft over the config never loses its edit',
  async (t) => {
    // The check that the file still holds what the adopt read, and the rename over it, were two
    // awaited calls: a save landing between them (here an editor in this process, after each delay
    // from the moment the draft is written) was renamed over, and the adopt answered ok.
    const directory = t.testdir({ config: { 'rackboot.yaml': PLAIN_CONFIG } });
    const file = join(directory, 'config', 'rackboot.yaml');
    // The draft is written once it has the config's mode (it is made 0600, then given that mode).
    const mode = statSync(file).mode & 0o777;
    const draftWritten = () =>
      readdirSync(dirname(file)).some(
        (name) =>
          name.startsWith('rackboot.yaml.adopt-') &&
          (statSync(join(dirname(file), name)).mode & 0o777) === mode,
      );
    const saveLikeAnEditor = (edit: string) => {
      writeFileSync(`${file}.swp`, `${readFileSync(file, 'utf8')}${edit}`);
      renameSync(`${file}.swp`, file);
    };
    const lost: string[] = [];
    for (let step = 0; step < 80; step += 1) {
      const adopting = adoptIntoFile(file, {
        mac: mac(`52:54:00:00:01:${step.toString(16).padStart(2, '0')}`),
        profile: 'plain',
      });
      let done = false;
      void adopting.finally(() => {
        done = true;
      });
      while (!done && !draftWritten()) await new Promise((resolve) => setImmediate(resolve));
      const start = performance.now();
      while (!done && performance.now() - start < step * 0.1)
        await new Promise((resolve) => setImmediate(resolve));
      const edit = `# edit ${step}\n`;
      saveLikeAnEditor(edit);
      const adopted = await adopting;
      if (!readFileSync(file, 'utf8').includes(edit))
        lost.push(`${edit.trim()} (the adopt: ${adopted.ok ? 'ok' : adopted.code})`);
    }
    t.same(lost, [], 'every edit saved during an adopt is in the file');
  },
);

t.test('machines adopt --hostname warns of a hostname another machine has, and still adopts', async (t) => {
  const config = PLAIN_CONFIG.replace(
    'machines: []\n',
    'machines:\n  - { mac: 52:54:00:aa:00:01, hostname: db1, profile: plain }\n  - { mac: 52:54:00:aa:00:02, hostname: db1, profile: plain }\n',
  );
  const file = join(t.testdir({ config: { 'rackboot.yaml': config } }), 'config', 'rackboot.yaml');
  const taken = await runCli([
    'machines',
    'adopt',
    '52:54:00:aa:00:0b',
    '--profile',
    'plain',
    '--hostname',
    'db1',
    '-c',
    file,
  ]);
  t.equal(taken.code, 0, taken.stderr);
  const warnings = taken.stderr.split('\n').filter((line) => line.startsWith('warning: '));
  t.equal(warnings.length, 1, 'one warning: the new entry’s, not the two machines that already clashed');
  t.match(warnings[0], /rackboot\.yaml:9:\d+: duplicate hostname db1: also at line 7:/);
  t.match(readFileSync(file, 'utf8'), /52:54:00:aa:00:0b, hostname: db1/, 'adopted all the same');

  const fresh = await runCli([
    'machines',
    'adopt',
    '52:54:00:aa:00:0c',
    '--profile',
    'plain',
    '--hostname',
    'db2',
    '-c',
    file,
  ]);
  t.equal(fresh.code, 0, fresh.stderr);
  t.notMatch(fresh.stderr, /warning/, 'a hostname of its own: no warning');
});

t.test('adopt warns only of the new entry also in a flow list, where it shares lines', async (t) => {
  for (const [layout, machines] of [
    [
      'one entry a line',
      'machines: [\n  {mac: 52:54:00:aa:00:01, hostname: db1, profile: plain}  # first\n  ]\n',
    ],
    ['all on one line', 'machines: [ {mac: 52:54:00:aa:00:01, hostname: db1, profile: plain} ]\n'],
  ] as const) {
    const file = join(
      t.testdir({ config: { 'rackboot.yaml': PLAIN_CONFIG.replace('machines: []\n', machines) } }),
      'config',
      'rackboot.yaml',
    );
    const result = await adoptIntoFile(file, {
      mac: mac('52:54:00:aa:00:0b'),
      profile: 'plain',
      hostname: 'db1',
    });
    if (!result.ok) throw new Error(result.message);
    // Once, the old entry's warning came too: its line had been given a comma, or the new entry.
    t.equal(result.warnings?.length, 1, `${layout}: one warning, the new entry's`);
    t.match(result.warnings?.[0] ?? '', /duplicate hostname db1/, layout);
  }
});

t.test(
  'an adopt into a config with a YAML syntax error refuses with FILE:LINE:COL, 422 over HTTP',
  async (t) => {
    // Before: "rackboot: the config does not parse: Sequence item without - indicator at line 9,
    // column 1:" and a snippet of the file, and 400 from the API, as for a bad request.
    const { app, configFile } = await startLifecycleApp(t);
    const broken = `${readFileSync(configFile, 'utf8')}  - mac: 52:54:00:00:00:01\n    profile: spare\n   hostname: x\n`;
    writeFileSync(configFile, broken);
    const brokenLine = broken.split('\n').indexOf('   hostname: x') + 1;
    const problem = new RegExp(
      `rackboot\\.yaml:${brokenLine}:1: YAML syntax error: Sequence item without - indicator$`,
      'm',
    );

    const answer = await app.inject({
      method: 'POST',
      url: `/api/v1/machines/${NEW}/adopt`,
      headers: { authorization: `Bearer ${API_TOKEN}` },
      payload: { profile: 'spare' },
    });
    t.equal(answer.statusCode, 422, answer.body);
    t.match(answer.json(), {
      code: 'rejected',
      error:
        /^nothing written: the config cannot be read as it is; fix it first: .*rackboot\.yaml:\d+:1: YAML syntax error/,
      problems: [problem],
    });

    const cli = await runCli(['machines', 'adopt', NEW, '--profile', 'spare', '-c', configFile]);
    t.equal(cli.code, 1);
    t.match(cli.stderr, problem);
    t.equal(readFileSync(configFile, 'utf8'), broken, 'nothing written');
  },
);
