import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { PassThrough } from 'node:stream';
import t from 'tap';
import { checkTemplate } from '../src/ignition/check.js';
import { loadConfigFile } from '../src/inventory/load.js';
import { loadConfigInWorker } from '../src/inventory/load-in-worker.js';
import { formatProblem } from '../src/inventory/problems.js';
import { watchConfig } from '../src/inventory/source.js';
import { createRootLogger } from '../src/log.js';

/**
 * `serve` loads in two threads, the parse's and then the check's, which places problems by parsing
 * the text again (load-in-worker.ts); `validate` loads in one. Whatever the case, both must answer
 * the same: the same config, the same problems and warnings at the same FILE:LINE:COL.
 */

const header = `server:
  address: 10.77.0.1
profiles:
  plain:
    kind: linux
    kernel: vmlinuz
    initrd: [initramfs.img]
    ignition: ignition/worker.bu
`;
const machine = (mac: string) => `  - { mac: ${mac}, profile: plain, hostname: node-${mac.slice(-2)} }`;
const machines = `machines:\n${machine('52:54:00:00:00:01')}\n${machine('52:54:00:00:00:02')}\n`;
const template = 'variant: fcos\nversion: 1.5.0\n';

// Each case: the config, a template, how missing assets count, and the first problem or warning it
// must give ('' for none), so that the comparison is never between two empty answers.
const cases: [
  name: string,
  yaml: string,
  template: string,
  missingAssets: 'error' | 'warn',
  first: string,
][] = [
  ['a valid config', `${header}${machines}`, template, 'error', ''],
  [
    'a warning that places a node (an argument split at a comma)',
    `${header}    args: [console=tty0, console=ttyS0,115200n8]\n${machines}`,
    template,
    'error',
    'rackboot.yaml:9:40: "115200n8" is the rest',
  ],
  [
    'missing assets as warnings',
    header.replace('kernel: vmlinuz', 'kernel: vmlinuz-6.1') + machines,
    template,
    'warn',
    'rackboot.yaml:6:13: vmlinuz-6.1 not found under',
  ],
  [
    'a note on keys proxy mode ignores, placed at dhcp.mode',
    `${header}dhcp:\n  mode: proxy\n  router: 10.77.0.1\n${machines}`,
    template,
    'error',
    '',
  ],
  [
    'missing assets as errors',
    header.replace('kernel: vmlinuz', 'kernel: vmlinuz-6.1') + machines,
    template,
    'error',
    'rackboot.yaml:6:13: vmlinuz-6.1 not found under',
  ],
  [
    'problems that name another line (a duplicate MAC) and a key (unknown)',
    `${header}    kernal: x\n${machines}${machine('52:54:00:00:00:01')}\n`,
    template,
    'error',
    'rackboot.yaml:9:5: unknown key "kernal" in profiles.plain',
  ],
  [
    'a YAML syntax error',
    `${header}machines:\n  - mac: 52:54:00:00:00:01\n   profile: plain\n`,
    template,
    'error',
    'rackboot.yaml:11:1: YAML syntax error',
  ],
  [
    'an alias naming no anchor',
    `${header}unknown_machines: *nope\n`,
    template,
    'error',
    'rackboot.yaml:9:19: alias *nope has no anchor',
  ],
  [
    'a config that is not a mapping',
    '- just\n- a list\n',
    template,
    'error',
    'rackboot.yaml:1:1: the config must be a mapping',
  ],
  [
    'a template that does not render, named per machine',
    `${header}${machines}`,
    'variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/hostname\n      mode: 0644\n      contents: { inline: "{{hostname}}", source: https://example.com/x }\n',
    'error',
    'ignition/worker.bu:',
  ],
];

for (const [name, yaml, templateText, missingAssets, first] of cases) {
  t.test(name, async (t) => {
    const directory = t.testdir({
      'boot-assets': {
        vmlinuz: 'kernel',
        'initramfs.img': 'initrd',
        'undionly.kpxe': 'ipxe',
        'ipxe.efi': 'ipxe',
      },
      ignition: { 'worker.bu': templateText },
      'rackboot.yaml': yaml,
    });
    const file = join(directory, 'rackboot.yaml');
    const inOneThread = await loadConfigFile(file, { missingAssets, env: {}, checkTemplate });
    const reported = inOneThread.ok ? inOneThread.warnings : inOneThread.problems;
    t.equal(
      reported.map((problem) => formatProblem(problem, directory))[0]?.slice(0, first.length) ?? '',
      first,
      'the case gives what it is about',
    );
    if (inOneThread.ok && yaml.includes('mode: proxy'))
      t.match(
        inOneThread.notes.map((note) => formatProblem(note, directory)),
        [/^rackboot.yaml:10:9: dhcp.mode proxy .*dhcp.router/],
      );
    t.same(await loadConfigInWorker({ file, missingAssets, env: {} }), inOneThread, 'the same answer');
  });
}

t.test('a config file that cannot be read', async (t) => {
  const file = join(t.testdir(), 'rackboot.yaml');
  const inOneThread = await loadConfigFile(file, { env: {}, checkTemplate });
  t.match(inOneThread, {
    ok: false,
    problems: [{ file, line: 1, col: 1, message: 'cannot read config: file not found' }],
  });
  t.same(await loadConfigInWorker({ file, missingAssets: 'error', env: {} }), inOneThread);
});

t.test(
  'a template saved as a binary file is one problem, and a reload keeps the previous config',
  async (t) => {
    // Before: the reload's worker parsed the bytes as YAML; the reviewer saw serve die of it, out of memory.
    const directory = t.testdir({
      'boot-assets': { vmlinuz: 'k', 'initramfs.img': 'i' },
      ignition: { 'worker.bu': template },
      'rackboot.yaml': `${header}${machines}`,
    });
    // As serve loads (rackboot.ts): in the worker threads, templates checked.
    const load = (file: string) => loadConfigInWorker({ file, missingAssets: 'error', env: {} });
    const loaded = await load(join(directory, 'rackboot.yaml'));
    if (!loaded.ok) throw new Error(`fixture config must load: ${JSON.stringify(loaded.problems)}`);
    const source = watchConfig(loaded.config, {
      logger: createRootLogger({ destination: new PassThrough() }),
      load,
    });
    t.teardown(() => source.close());

    const binary = Buffer.concat([Buffer.from(template), randomBytes(4096)]);
    binary[2000] = 0;
    writeFileSync(join(directory, 'ignition', 'worker.bu'), binary);
    const outcome = await source.reload();
    t.same(outcome, {
      applied: false,
      problems: [
        `${relative(process.cwd(), join(directory, 'ignition', 'worker.bu'))}:1:1: not a text file (NUL byte at offset ${binary.indexOf(0)}): rackboot reads it as YAML or JSON text`,
      ],
    });
    t.equal(source.current(), loaded.config, 'the previous config is in force');
  },
);
