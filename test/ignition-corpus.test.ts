import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import t from 'tap';
import { REPORT_UNIT_NAME, renderIgnition } from '../src/ignition/render.js';
import { readTemplate } from '../src/ignition/template.js';
import { requireTools } from './helpers/netns.js';
import { CORPUS_VARS } from './ignition/corpus-vars.js';

const execFileAsync = promisify(execFile);
const corpusDir = join(import.meta.dirname, 'ignition', 'corpus');
const errorsDir = join(import.meta.dirname, 'ignition', 'errors');

/**
 * Butane inputs with the Ignition a reviewer checked by hand against Butane's rules (coreos/butane
 * base/v0_6/translate.go). gzip bytes depend on the zlib build, so gzip sources are compared by
 * their decompressed text.
 */
function comparable(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(comparable);
  if (value === null || typeof value !== 'object') return value;
  const object = value as Record<string, unknown>;
  const source = object.source;
  if (object.compression === 'gzip' && typeof source === 'string' && source.startsWith('data:;base64,')) {
    const text = gunzipSync(Buffer.from(source.slice('data:;base64,'.length), 'base64')).toString('utf8');
    return { ...object, source: `gunzipped:${text}` };
  }
  return Object.fromEntries(Object.entries(object).map(([key, item]) => [key, comparable(item)]));
}

function withoutReportUnit(config: Record<string, unknown>): Record<string, unknown> {
  const systemd = config.systemd as { units: { name: string }[] } | undefined;
  const units = systemd?.units.filter((unit) => unit.name !== REPORT_UNIT_NAME) ?? [];
  const { systemd: _dropped, ...rest } = config;
  return units.length > 0 ? { ...rest, systemd: { ...systemd, units } } : rest;
}

const cases = readdirSync(corpusDir)
  .filter((file) => file.endsWith('.bu'))
  .sort();
t.ok(cases.length >= 20, `at least 20 corpus cases (${cases.length})`);
const scratch = mkdtempSync(join(tmpdir(), 'rackboot-corpus-'));
t.teardown(() => rmSync(scratch, { recursive: true, force: true }));

for (const file of cases) {
  t.test(file, async (t) => {
    const rendered = renderIgnition(readTemplate(join(corpusDir, file)), CORPUS_VARS);
    if (!rendered.ok) {
      t.fail(
        rendered.problems.map((problem) => `${problem.line}:${problem.col}: ${problem.message}`).join('\n'),
      );
      return;
    }
    const expected = JSON.parse(readFileSync(join(corpusDir, file.replace(/\.bu$/, '.ign')), 'utf8'));
    t.strictSame(comparable(withoutReportUnit(rendered.config)), comparable(expected));
    const units = (rendered.config.systemd as { units: { name: string; contents: string }[] }).units;
    const report = units.find((unit) => unit.name === REPORT_UNIT_NAME);
    t.match(
      report?.contents,
      CORPUS_VARS.events_url,
      'every config reports installed to the machine events_url',
    );

    const version = (rendered.config.ignition as { version: string }).version;
    if (version !== '3.3.0') return;
    // Debian's ignition-validate (Ignition 2.14) knows specs up to 3.3.0: run it on the exact bytes served.
    await requireTools('ignition-validate');
    const served = join(scratch, file.replace(/\.bu$/, '.ign'));
    writeFileSync(served, rendered.text);
    const { stdout, stderr } = await execFileAsync('ignition-validate', [served]);
    t.equal(`${stdout}${stderr}`, '', 'ignition-validate: no errors and no warnings');
  });
}

/** Broken templates: each problem is FILE:LINE:COL at the offending node, with Ignition's/Butane's wording. */
const errorCases: [string, string][] = [
  ['bad-hash.bu', '8:31: incorrect size for hash sum'],
  ['bad-unit-contents.bu', '6:17: invalid unit content, line 1: option outside a [Section]'],
  ['boot-device.bu', "3:1: boot_device is not supported by rackboot's Butane translator"],
  ['cex-too-old.bu', '7:7: cex needs Ignition spec 3.5.0 or later'],
  ['decimal-mode.bu', '6:13: mode 644 is decimal (octal 1204); write 0644 in Butane or 420 in JSON'],
  ['dropin-name.bu', '7:17: invalid systemd drop-in extension'],
  ['duplicate-path.bu', '7:13: duplicate entry defined'],
  ['inline-and-source.bu', '7:9: only one of the following can be set: inline, local, source'],
  ['local-escape.bu', '6:26: local file ../../../../../etc/passwd is outside the files directory'],
  ['local-escape-missing.bu', '6:26: local file ../outside/secret is outside the files directory'],
  ['missing-var.bu', '6:27: {{vars.rack}} is not set for machine 52:54:00:12:34:56'],
  ['path-through-link.bu', '8:13: file path includes link in config'],
  ['relative-path.bu', '5:13: path not absolute'],
  ['typo-key.bu', '6:7: unknown key ssh_authorised_keys; did you mean ssh_authorized_keys?'],
  ['unit-extension.bu', '5:13: invalid systemd unit extension'],
  // A comment after a section header was "option outside a [Section]": no option was.
  ['unit-section-comment.bu', '6:17: invalid unit content, line 1: found garbage after section name'],
  ['unknown-variable.bu', '6:28: unknown template variable {{hostnme}}'],
  ['unsupported-version.bu', '2:10: Butane version 1.7.0 is not supported; use 1.4.0, 1.5.0, 1.6.0'],
  ['wrong-type.bu', '6:12: expected an integer, found string "one thousand"'],
  ['yaml-syntax.bu', '6:1: '],
];

t.test('broken templates point at the offending line and column', async (t) => {
  t.strictSame(
    errorCases.map(([file]) => file).sort(),
    readdirSync(errorsDir)
      .filter((file) => file.endsWith('.bu'))
      .sort(),
    'every error fixture has an expectation',
  );
  for (const [file, expected] of errorCases) {
    const rendered = renderIgnition(readTemplate(join(errorsDir, file)), CORPUS_VARS);
    const lines = rendered.ok
      ? []
      : rendered.problems.map((problem) => `${problem.line}:${problem.col}: ${problem.message}`);
    t.ok(
      lines.some((line) => line.startsWith(expected)),
      `${file}: ${expected}`,
      { found: lines },
    );
    if (!rendered.ok)
      t.ok(
        rendered.problems.every((problem) => problem.file === join(errorsDir, file)),
        `${file}: FILE is the template`,
      );
  }
});
