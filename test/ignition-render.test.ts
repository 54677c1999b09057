import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import t from 'tap';
import type { Mac } from '../src/boot-plan.js';
import { makeDataUrl } from '../src/ignition/butane.js';
import { checkTemplate } from '../src/ignition/check.js';
import { REPORT_UNIT_NAME, renderIgnition } from '../src/ignition/render.js';
import { parseTemplate } from '../src/ignition/template.js';
import { createMachineSecrets, openMachineSecrets, SECRET_FILE_NAME } from '../src/ignition/tokens.js';
import { BASE_YAML, bootFixture } from './ignition/boot-fixture.js';
import { CORPUS_VARS } from './ignition/corpus-vars.js';

const MAC_A = '52:54:00:12:34:56' as Mac;
const MAC_B = '52:54:00:12:34:57' as Mac;

function decodeDataUrl(source: string): Buffer {
  const comma = source.indexOf(',');
  const data = source.slice(comma + 1);
  return source.slice(0, comma).endsWith(';base64')
    ? Buffer.from(data, 'base64')
    : Buffer.from(decodeURIComponent(data), 'latin1');
}

t.test(
  'data URLs: percent-encoding, base64 or gzip, whichever is shortest, and always lossless',
  async (t) => {
    const short = makeDataUrl(Buffer.from('node1'), true);
    t.strictSame(short, { url: 'data:,node1', compression: '' });
    const binary = makeDataUrl(Buffer.from([0, 1, 2, 250, 251, 252, 253, 254, 255]), true);
    t.match(binary.url, /^data:;base64,/);
    const repetitive = Buffer.from('rackboot '.repeat(200));
    const compressed = makeDataUrl(repetitive, true);
    t.equal(compressed.compression, 'gzip');
    t.ok(compressed.url.length < 200, 'gzip wins on repetitive text');
    t.strictSame(gunzipSync(decodeDataUrl(compressed.url)), repetitive);
    const userCompressed = makeDataUrl(repetitive, false);
    t.equal(userCompressed.compression, '', 'no automatic gzip when the template sets compression itself');
    for (const sample of ['a b/c?d=e&f', 'üñî©ødé ☃\n', "!~*'()-_."]) {
      const { url } = makeDataUrl(Buffer.from(sample), false);
      t.equal(decodeDataUrl(url).toString('utf8'), sample, `round trip of ${JSON.stringify(sample)}`);
    }
  },
);

t.test('modes follow Butane: 0644 is octal, 0o644 too, a quoted mode is a type error', async (t) => {
  const render = (mode: string) =>
    renderIgnition(
      parseTemplate(
        '/t/mode.bu',
        `variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/x\n      mode: ${mode}\n`,
      ),
      CORPUS_VARS,
    );
  for (const mode of ['0644', '0o644']) {
    const rendered = render(mode);
    t.ok(rendered.ok && JSON.stringify(rendered.config).includes('"mode":420'), `${mode} → 420`);
  }
  const quoted = render('"0644"');
  t.ok(!quoted.ok && quoted.problems[0]?.message.startsWith('expected an integer'), 'quoted mode refused');
});

t.test('variables are substituted after parsing: a value cannot change the YAML structure', async (t) => {
  const template = parseTemplate(
    '/t/inject.bu',
    'variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/role\n      contents: { inline: "{{vars.role}}" }\n',
  );
  const hostile = 'x"\n  - path: /etc/shadow\n    contents: {inline: owned}';
  const rendered = renderIgnition(template, { ...CORPUS_VARS, vars: { role: hostile } });
  if (!rendered.ok) return t.fail(JSON.stringify(rendered.problems));
  const files = (rendered.config.storage as { files: { path: string; contents: { source: string } }[] })
    .files;
  t.strictSame(
    files.map((file) => file.path),
    ['/etc/role'],
  );
  t.equal(decodeDataUrl(files[0]?.contents.source ?? '').toString('utf8'), hostile);
});

t.test('a missing {{vars.NAME}} says what to do, for listed and unlisted machines alike', async (t) => {
  const template = parseTemplate(
    '/t/role.bu',
    'variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/role\n      contents: { inline: "{{vars.role}}" }\n',
  );
  const listed = renderIgnition(template, { ...CORPUS_VARS, vars: {} });
  t.match(listed, {
    ok: false,
    problems: [
      {
        line: 6,
        message: `{{vars.role}} is not set for machine ${CORPUS_VARS.mac} (add it under the machine's vars)`,
      },
    ],
  });
  // A machine booted through unknown_machines has no inventory entry, so no vars to add to.
  const unlisted = renderIgnition(template, { ...CORPUS_VARS, vars: undefined });
  t.match(unlisted, {
    ok: false,
    problems: [
      {
        line: 6,
        message: `{{vars.role}} cannot be filled for machines not in the inventory (unknown_machines: ${CORPUS_VARS.profile}): they have no vars`,
      },
    ],
  });
});

t.test('Ignition JSON templates are type-checked and validated too', async (t) => {
  const good = renderIgnition(
    parseTemplate(
      '/t/a.ign',
      '{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"core","groups":["{{vars.role}}"]}]}}',
    ),
    CORPUS_VARS,
  );
  t.ok(good.ok);
  if (good.ok) {
    t.match(good.text, '"groups":["worker"]');
    t.match(good.text, REPORT_UNIT_NAME);
  }
  const typo = renderIgnition(
    parseTemplate(
      '/t/b.ign',
      '{"ignition":{"version":"3.4.0"},\n"passwd":{"users":[{"name":"core","sshKeys":[]}]}}',
    ),
    CORPUS_VARS,
  );
  t.ok(!typo.ok && typo.problems[0]?.line === 2 && /unknown key sshKeys/.test(typo.problems[0].message));
  const version = renderIgnition(parseTemplate('/t/c.ign', '{"ignition":{"version":"2.2.0"}}'), CORPUS_VARS);
  t.ok(!version.ok && /unsupported config version 2\.2\.0/.test(version.problems[0]?.message ?? ''));
  const overwrite = renderIgnition(
    parseTemplate(
      '/t/d.ign',
      '{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/x","overwrite":true}]}}',
    ),
    CORPUS_VARS,
  );
  t.ok(
    !overwrite.ok && overwrite.problems[0]?.message === 'overwrite must be false if source is unspecified',
  );
});

t.test('a template may replace the report unit with its own', async (t) => {
  const template = parseTemplate(
    '/t/own.bu',
    `variant: fcos\nversion: 1.5.0\nsystemd:\n  units:\n    - name: ${REPORT_UNIT_NAME}\n      mask: true\n`,
  );
  const rendered = renderIgnition(template, CORPUS_VARS);
  if (!rendered.ok) return t.fail(JSON.stringify(rendered.problems));
  t.strictSame((rendered.config.systemd as { units: unknown[] }).units, [
    { name: REPORT_UNIT_NAME, mask: true },
  ]);
});

t.test('checkTemplate renders for the machines that use the template, as load.ts calls it', async (t) => {
  const fixture = await bootFixture();
  t.teardown(fixture.cleanup);
  const worker = join(fixture.dir, 'ignition', 'worker.bu');
  t.strictSame(await checkTemplate(worker, fixture.config), [], 'the fixture template is fine');

  writeFileSync(
    worker,
    `${readFileSync(worker, 'utf8')}    - path: /etc/rack\n      contents: { inline: "{{vars.rack}}" }\n`,
  );
  const problems = await checkTemplate(worker, fixture.config);
  t.equal(problems.length, 1, 'one problem, not one per machine');
  t.match(problems[0], {
    file: worker,
    line: 16,
    message: /\{\{vars\.rack\}\} is not set for machine 52:54:00:12:34:56/,
  });

  const loaded = await import('../src/inventory/load.js').then((load) =>
    load.loadConfigText(BASE_YAML, join(fixture.dir, 'rackboot.yaml'), { checkTemplate }),
  );
  t.ok(
    !loaded.ok && loaded.problems.some((problem) => problem.file === worker && problem.line === 16),
    'the loader reports it',
  );
});

t.test(
  'machine tokens: HMAC per MAC, optional expiry, secret file 0600 reused across restarts',
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'rackboot-secret-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const now = Date.UTC(2026, 10, 25, 12, 0, 0);
    const first = openMachineSecrets(join(dir, 'state'));
    const token = first.tokenFor(MAC_A, now);
    t.equal(statSync(join(dir, 'state', SECRET_FILE_NAME)).mode & 0o777, 0o600);
    t.ok(first.verify(MAC_A, token, now));
    t.notOk(first.verify(MAC_B, token, now), "another machine's token is refused");
    for (const index of [0, 10, token.length - 1]) {
      const changed = `${token.slice(0, index)}${token[index] === 'A' ? 'B' : 'A'}${token.slice(index + 1)}`;
      t.notOk(first.verify(MAC_A, changed, now), `a token changed at character ${index} is refused`);
    }
    t.notOk(first.verify(MAC_A, '', now));
    t.ok(openMachineSecrets(join(dir, 'state')).verify(MAC_A, token, now), 'same secret after a restart');
    t.notOk(
      createMachineSecrets(Buffer.alloc(32, 1)).verify(MAC_A, token, now),
      'another server secret refuses it',
    );

    const ttl = 600;
    const expiring = openMachineSecrets(join(dir, 'state'), () => ttl);
    const short = expiring.tokenFor(MAC_A, now);
    t.ok(expiring.verify(MAC_A, short, now + 599_000));
    t.notOk(expiring.verify(MAC_A, short, now + 601_000), 'expired');
    const [expiry, signature] = short.split('.');
    t.notOk(
      expiring.verify(MAC_A, `${Number(expiry) + 3600}.${signature}`, now + 601_000),
      'a stretched expiry is refused',
    );

    writeFileSync(join(dir, 'state', SECRET_FILE_NAME), 'not a secret\n');
    t.throws(() => openMachineSecrets(join(dir, 'state')), /is not a rackboot secret/);
  },
);

t.test('the example templates in ignition/ render and validate', async (t) => {
  const repo = join(import.meta.dirname, '..');
  const { loadConfigFile } = await import('../src/inventory/load.js');
  const loaded = await loadConfigFile(join(repo, 'rackboot.yaml'), { missingAssets: 'warn', checkTemplate });
  t.ok(loaded.ok, 'rackboot.yaml with ignition/worker.bu for its machines');
  for (const file of ['worker.bu', 'storage-node.bu']) {
    const { readTemplate } = await import('../src/ignition/template.js');
    const rendered = renderIgnition(readTemplate(join(repo, 'ignition', file)), {
      ...CORPUS_VARS,
      vars: { role: 'worker', data_disk: 'pci-0000:00:1f.2-ata-2' },
    });
    t.ok(rendered.ok, file, rendered.ok ? {} : { problems: rendered.problems });
  }
});

t.test('checkTemplate: unused profiles get sample vars; unknown_machines profiles have none', async (t) => {
  const fixture = await bootFixture();
  t.teardown(fixture.cleanup);
  const worker = join(fixture.dir, 'ignition', 'worker.bu');
  const unused = { ...fixture.config, machines: [] };
  t.strictSame(await checkTemplate(worker, unused), [], 'no machine uses it: rendered with placeholder vars');
  const forStrangers = { ...fixture.config, unknown_machines: 'coreos' };
  const problems = await checkTemplate(worker, forStrangers);
  t.equal(problems.length, 1);
  t.match(problems[0], {
    file: worker,
    line: 14,
    message:
      /\{\{vars\.role\}\} cannot be filled for machines not in the inventory \(unknown_machines: coreos\)/,
  });
});
