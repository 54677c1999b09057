import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { REPORT_UNIT_NAME, type RenderedIgnition, renderIgnition } from '../src/ignition/render.js';
import { parseTemplate } from '../src/ignition/template.js';
import { requireTools } from './helpers/netns.js';
import { CORPUS_VARS } from './ignition/corpus-vars.js';

/** Findings of the review of what Ignition problems reveal and of `ignition.config.replace`. */

const execFileAsync = promisify(execFile);

const scratch = mkdtempSync(join(tmpdir(), 'rackboot-ignition-review-'));
t.teardown(() => rmSync(scratch, { recursive: true, force: true }));

const SECRET = 'hunter2-secret';

function render(text: string, vars: Record<string, string> = {}): RenderedIgnition {
  return renderIgnition(parseTemplate(join(scratch, 't.bu'), text), {
    ...CORPUS_VARS,
    vars: { ...CORPUS_VARS.vars, ...vars },
  });
}

function problemsOf(rendered: RenderedIgnition): string[] {
  return rendered.ok
    ? []
    : rendered.problems.map((problem) => `${problem.line}:${problem.col}: ${problem.message}`);
}

/** A Butane template merging one child config given inline, as a YAML block scalar. */
function mergingInline(child: string): string {
  const indented = child
    .split('\n')
    .map((line) => `          ${line}`)
    .join('\n');
  return `variant: fcos\nversion: 1.4.0\nignition:\n  config:\n    merge:\n      - inline: |-\n${indented}\n`;
}

t.test('an inline child that is not JSON is located, never quoted', async (t) => {
  const child =
    '{"ignition": {"version": "3.3.0"},\n "passwd": {"users": [{"name": "svc",\n   "passwordHash": {{vars.secret}} }]}}';
  const problems = problemsOf(render(mergingInline(child), { secret: SECRET }));
  t.strictSame(problems, [
    '6:17: the config given here is not Ignition JSON: syntax error at line 3, column 20 of it',
  ]);
  t.notMatch(problems.join('\n'), 'hunter2', 'the substituted var stays out of the problem');
});

t.test('the syntax error is located where JSON.parse stops', async (t) => {
  // [text, column]: where V8's message names a position, the column is that position + 1.
  const broken: [string, number][] = [
    ['{"a": 1 "b": 2}', 9],
    ['{"a" 1}', 6],
    ['{"a": 1,}', 9],
    ['[1, 2,]', 7],
    ['[1, 2', 6],
    ['{"a": "x\u0001"}', 9],
    ['{"a": "\\x"}', 9],
    ['{"a": 01}', 8],
    ['{"a": -}', 8],
    ['[1.]', 4],
    ['[1.5e+]', 7],
    ['{"a": tru}', 7],
    ['{"a": [1, {"b": null}]} x', 25],
    ['"unterminated', 14],
    ['', 1],
    // A backslash where a key's quote must be is the error itself, not the character after it.
    ['{\\}', 2],
    ['{"a": 1, \\"b": 2}', 10],
  ];
  for (const [text, column] of broken) {
    let reference = '';
    try {
      JSON.parse(text);
    } catch (error) {
      reference = (error as Error).message;
    }
    const position = /at position (\d+)/.exec(reference)?.[1];
    if (position !== undefined)
      t.equal(column, Number(position) + 1, `the table agrees with V8: ${reference}`);
    t.strictSame(
      problemsOf(render(mergingInline(text))),
      [`6:17: the config given here is not Ignition JSON: syntax error at line 1, column ${column} of it`],
      JSON.stringify(text),
    );
  }
});

t.test('a child with a string of 12 million characters is located, not a stack overflow', async (t) => {
  // V8 ran the old string pattern on its regex stack: "Maximum call stack size exceeded" from ~8M.
  const length = 12_000_000;
  const problems = problemsOf(render(mergingInline(`{"a": "${'x'.repeat(length)}" x}`)));
  t.strictSame(problems, [
    `6:17: the config given here is not Ignition JSON: syntax error at line 1, column ${length + 10} of it`,
  ]);
});

const REPLACE_TEMPLATE = `variant: fcos
version: 1.4.0
ignition:
  timeouts: { http_total: 60 }
  proxy: { https_proxy: "https://proxy.example:3128", no_proxy: [10.77.0.1] }
  security:
    tls:
      certificate_authorities: [{ source: "https://ca.example/ca.pem" }]
  config:
    merge: [{ source: "https://config.example/ignored.ign" }]
    replace:
      source: "https://config.example/{{hostname}}.ign"
      http_headers: [{ name: Authorization, value: "Bearer key" }]
storage:
  files: [{ path: /etc/ignored, contents: { inline: "Ignition drops this with replace" } }]
`;

t.test('ignition.config.replace is served as a merge beside the report unit', async (t) => {
  const rendered = render(REPLACE_TEMPLATE);
  if (!rendered.ok) throw new Error(problemsOf(rendered).join('\n'));
  const units = (rendered.config.systemd as { units: { name: string; contents: string }[] }).units;
  t.strictSame(rendered.config, {
    ignition: {
      version: '3.3.0',
      config: {
        merge: [
          {
            source: `https://config.example/${CORPUS_VARS.hostname}.ign`,
            httpHeaders: [{ name: 'Authorization', value: 'Bearer key' }],
          },
        ],
      },
      timeouts: { httpTotal: 60 },
      security: { tls: { certificateAuthorities: [{ source: 'https://ca.example/ca.pem' }] } },
      proxy: { httpsProxy: 'https://proxy.example:3128', noProxy: ['10.77.0.1'] },
    },
    systemd: { units: [{ name: REPORT_UNIT_NAME, enabled: true, contents: units[0]?.contents }] },
  });
  t.match(units[0]?.contents, CORPUS_VARS.events_url, 'the report unit posts to the machine');
  t.equal(rendered.text, JSON.stringify(rendered.config));

  const own = render(
    `${REPLACE_TEMPLATE}systemd:\n  units: [{ name: ${REPORT_UNIT_NAME}, enabled: true, contents: "[Service]\\nExecStart=/bin/true\\n" }]\n`,
  );
  t.match(
    own.ok && own.config.systemd,
    { units: [{ name: REPORT_UNIT_NAME, contents: '[Service]\nExecStart=/bin/true\n' }] },
    "a template's own report unit is kept",
  );
  const merged = render(
    'variant: fcos\nversion: 1.4.0\nignition:\n  config:\n    merge: [{ source: "https://config.example/a.ign" }]\n',
  );
  t.match(
    merged.ok && merged.config.ignition,
    { config: { merge: [{ source: 'https://config.example/a.ign' }] } },
    'a merge stays as written',
  );

  await requireTools('ignition-validate');
  const file = join(scratch, 'served.ign');
  writeFileSync(file, rendered.text);
  const { stdout, stderr } = await execFileAsync('ignition-validate', [file]);
  t.equal(`${stdout}${stderr}`, '', 'ignition-validate takes the config served');
});

t.test('YAML trouble in a template is a problem at its line, never a throw', async (t) => {
  const problems = (text: string) =>
    parseTemplate(join(scratch, 'y.bu'), text).problems.map(
      (problem) => `${problem.line}:${problem.col}: ${problem.message}`,
    );
  const head = 'variant: fcos\nversion: 1.5.0\n';
  // Once, these two were thrown: a 500 from the server, a stack trace from validate.
  t.same(problems(`${head}storage:\n  files:\n    - *nope\n`), [
    '5:7: alias *nope has no anchor &nope before it',
  ]);
  const files = Array.from({ length: 150 }, (_, index) => `    - { path: /etc/f${index}, mode: *m }`).join(
    '\n',
  );
  t.same(
    problems(`${head}x-mode: &m 0644\nstorage:\n  files:\n${files}\n`),
    [],
    'more aliases than yaml allows by default: Butane (go-yaml) takes them, so do we',
  );
  t.match(
    problems(`${head}passwd: !env USERS\n`),
    ['3:9: YAML tag !env is not one rackboot reads: the value would be the plain text after it'],
    'a tag yaml does not know is refused, not read as the text after it',
  );
  t.match(problems(`${head}---\nvariant: fcos\n`), [
    /^3:1: a second YAML document starts here \(---\); a template is one document/,
  ]);
  t.match(
    problems(
      `${head}storage:\n  files:\n    - path: /etc/hostname\n      contents:\n        inline: {{hostname}}\n`,
    ),
    [
      /^7:18: a key that is itself a map or a list: unquoted, a \{\{…\}\} placeholder reads as one in YAML; quote it/,
    ],
  );
});

t.test('a template saved with a byte order mark has its problems where an editor shows them', async (t) => {
  const problems = (text: string) =>
    parseTemplate(join(scratch, 'bom.bu'), text).problems.map(
      (problem) => `${problem.line}:${problem.col}: ${problem.message}`,
    );
  const text = '{variant: fcos, version: 1.5.0, storage: {files: [*nope]}}\n';
  // Before: one column too far right on line 1 (1:52), the mark counted as a character.
  t.same(problems(`\uFEFF${text}`), ['1:51: alias *nope has no anchor &nope before it']);
  t.same(problems(text), problems(`\uFEFF${text}`), 'as without the mark');
});
