import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { parseTemplate } from '../src/ignition/template.js';
import { adoptMachine } from '../src/inventory/adopt.js';
import { loadConfigText } from '../src/inventory/load.js';
import { badName, isName, NOT_A_HOSTNAME, nameRule } from '../src/inventory/names.js';
import { runCli } from './helpers/cli.js';
import { API_TOKEN, mac, startLifecycleApp } from './lifecycle-fixture.js';

/** The names a JavaScript object already answers to. */
const RESERVED = ['__proto__', 'constructor', 'prototype'];
const NEW = mac('52:54:00:00:00:0a');

t.test('the name rule refuses the reserved names, and says so', async (t) => {
  for (const name of RESERVED) {
    t.notOk(isName(name), name);
    t.match(nameRule('vars'), name, `the rule in words names ${name}`);
  }
  for (const name of ['__proto__x', 'Constructor', 'my-prototype', 'constructor_', '_proto_']) {
    t.ok(isName(name), `${name} only looks like one`);
  }
});

t.test('a config with a reserved profile or vars name is refused at the name', async (t) => {
  const yaml = `server:
  address: 10.77.0.1
profiles:
  worker: { kind: linux, kernel: https://example.com/vmlinuz }
  constructor: { kind: linux, kernel: https://example.com/vmlinuz }
  __proto__: { kind: linux, kernel: https://example.com/vmlinuz }
machines:
  - mac: 52:54:00:00:00:01
    profile: worker
    vars: { prototype: b, role: c, __proto__: d }
`;
  const loaded = await loadConfigText(yaml, join(t.testdir(), 'rackboot.yaml'), { env: {} });
  t.notOk(loaded.ok);
  if (loaded.ok) return;
  const messages = loaded.problems.map((problem) => problem.message);
  for (const expected of [
    `profiles: ${badName('profile', 'constructor')}`,
    `machines[0].vars: ${badName('vars', 'prototype')}`,
    // Read before the schema's defaults are filled, which drop an own __proto__ key.
    `profiles: ${badName('profile', '__proto__')}`,
    `machines[0].vars: ${badName('vars', '__proto__')}`,
  ]) {
    t.ok(
      messages.some((message) => message.endsWith(expected)),
      expected,
    );
  }
});

t.test('a template cannot spell {{vars.constructor}}', async (t) => {
  const template = parseTemplate(
    '/t/reserved.bu',
    'variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/x\n      contents: { inline: "{{vars.constructor}}" }\n',
  );
  t.same(
    template.problems.map((problem) => problem.message),
    [`unknown template variable {{vars.constructor}}: ${nameRule('vars')}`],
  );
});

t.test('adopt refuses a reserved vars name: library, CLI and API', async (t) => {
  // A config an allowed name is adopted into: only the name can be at fault.
  const profiles = 'profiles:\n  worker: { kind: linux, kernel: https://example.com/vmlinuz }\n';
  for (const name of RESERVED) {
    // JSON.parse makes `__proto__` an own key, as a parsed request body has it.
    const vars = JSON.parse(`{${JSON.stringify(name)}: "x"}`) as Record<string, string>;
    t.match(
      adoptMachine(profiles, { mac: NEW, profile: 'worker', vars }),
      { ok: false, code: 'invalid', message: badName('vars', name) },
      `library: ${name}`,
    );
  }

  const file = join(
    t.testdir({ 'rackboot.yaml': `server:\n  address: 10.77.0.1\n${profiles}` }),
    'rackboot.yaml',
  );
  const before = readFileSync(file, 'utf8');
  const cli = await runCli([
    'machines',
    'adopt',
    NEW,
    '--profile',
    'worker',
    '-c',
    file,
    '--var',
    '__proto__=x',
  ]);
  t.equal(cli.code, 1, 'CLI: refused');
  t.match(cli.stderr, badName('vars', '__proto__'));
  t.equal(readFileSync(file, 'utf8'), before, 'CLI: nothing written');

  const { app, configFile } = await startLifecycleApp(t);
  const configBefore = readFileSync(configFile, 'utf8');
  // A body with a `__proto__` key never reaches the schema: fastify's JSON parser refuses it.
  for (const name of ['constructor', 'prototype']) {
    const refused = await app.inject({
      method: 'POST',
      url: `/api/v1/machines/${NEW}/adopt`,
      headers: { authorization: `Bearer ${API_TOKEN}`, 'content-type': 'application/json' },
      payload: `{"profile": "spare", "vars": {${JSON.stringify(name)}: "x"}}`,
    });
    t.equal(refused.statusCode, 400, `API: ${name}`);
    t.equal(refused.json().message, `body/vars: ${badName('vars', name)}`);
  }
  t.equal(readFileSync(configFile, 'utf8'), configBefore, 'API: nothing written');
});

t.test('a bad host name is refused by the rule in words, never as a regular expression', async (t) => {
  const longLabel = 'a'.repeat(64);
  const yaml = `server:
  address: 10.77.0.1
profiles:
  worker: { kind: linux, kernel: https://example.com/vmlinuz }
machines:
${[
  'node_1',
  '-node',
  'node-',
  'a..b',
  `${longLabel}.rack`,
  `${'a.'.repeat(127)}b`,
  'n1.rack-7.example',
  `${'a'.repeat(63)}.b`,
]
  .map((hostname, index) => `  - { mac: 52:54:00:00:00:1${index}, profile: worker, hostname: "${hostname}" }`)
  .join('\n')}
`;
  const loaded = await loadConfigText(yaml, join(t.testdir(), 'rackboot.yaml'), { env: {} });
  const messages = loaded.ok ? [] : loaded.problems.map((problem) => problem.message);
  t.equal(messages.length, 6, 'labels of 1 to 63, 253 in all; the last two are host names');
  messages.forEach((message, index) => {
    // The 253-character name is shown cut short.
    t.ok(message.startsWith(`machines[${index}].hostname: "`), message);
    t.ok(message.endsWith(`" is ${NOT_A_HOSTNAME}`), message);
  });
  t.match(NOT_A_HOSTNAME, /letters, digits and hyphens.*63.*253/);
  t.notMatch(NOT_A_HOSTNAME, /[\^$[\]]/);

  const { app } = await startLifecycleApp(t);
  const refused = await app.inject({
    method: 'POST',
    url: `/api/v1/machines/${NEW}/adopt`,
    headers: { authorization: `Bearer ${API_TOKEN}` },
    payload: { profile: 'spare', hostname: 'node_7' },
  });
  t.equal(refused.statusCode, 400);
  t.equal(refused.json().message, `body/hostname is ${NOT_A_HOSTNAME}`, 'the API says it in the same words');
});
