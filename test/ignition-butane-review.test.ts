import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { checkTemplate } from '../src/ignition/check.js';
import { type RenderedIgnition, renderIgnition } from '../src/ignition/render.js';
import { parseTemplate } from '../src/ignition/template.js';
import { requireTools } from './helpers/netns.js';
import { bootFixture } from './ignition/boot-fixture.js';
import { CORPUS_VARS } from './ignition/corpus-vars.js';

/** Findings of the review of the Butane translation, each checked against the real tools where one exists. */

const execFileAsync = promisify(execFile);

const scratch = mkdtempSync(join(tmpdir(), 'rackboot-butane-review-'));
t.teardown(() => rmSync(scratch, { recursive: true, force: true }));

function render(text: string, file = join(scratch, 't.bu')): RenderedIgnition {
  return renderIgnition(parseTemplate(file, text), CORPUS_VARS);
}

function problemsOf(rendered: RenderedIgnition): string[] {
  return rendered.ok
    ? []
    : rendered.problems.map((problem) => `${problem.line}:${problem.col}: ${problem.message}`);
}

function unitsOf(
  rendered: RenderedIgnition,
): { name: string; enabled?: boolean; contents?: string; dropins?: unknown[] }[] {
  if (!rendered.ok) throw new Error(problemsOf(rendered).join('\n'));
  return (rendered.config.systemd as { units: { name: string; contents?: string }[] }).units;
}

/** What ignition-validate (Debian's, spec 3.3.0) says about a config: '' when it accepts it. */
async function ignitionValidate(config: string): Promise<string> {
  const file = join(scratch, 'check.ign');
  writeFileSync(file, config);
  return execFileAsync('ignition-validate', [file]).then(
    ({ stdout, stderr }) => `${stdout}${stderr}`,
    (error: { stdout: string; stderr: string }) => `${error.stdout}${error.stderr}`,
  );
}

t.test('1. a filesystem on a Tang-unlocked LUKS volume gets the remote mount unit', async (t) => {
  const luks = (clevis: string) =>
    `variant: fcos\nversion: 1.5.0\nstorage:\n  luks:\n    - name: data\n      device: /dev/disk/by-partlabel/data\n      clevis: ${clevis}\n  filesystems:\n    - device: /dev/mapper/data\n      format: xfs\n      path: /var/lib/data\n      with_mount_unit: true\n`;
  const [remote] = unitsOf(render(luks('{tang: [{url: "http://10.77.181.1:7500", thumbprint: X}]}')));
  t.equal(remote?.name, 'var-lib-data.mount');
  t.match(remote?.contents, /\nOptions=_netdev\n/, 'mounted once the network is up');
  t.match(remote?.contents, /\nRequiredBy=remote-fs\.target\n/);
  t.notMatch(remote?.contents, /local-fs/, 'nothing orders it before local-fs.target');
  const [local] = unitsOf(render(luks('{tpm2: true}')));
  t.match(local?.contents, /\nRequiredBy=local-fs\.target\n/, 'a TPM-unlocked volume is local');
  t.notMatch(local?.contents, /_netdev/);
});

const BAD_CHILD = '{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"rel"}]}}';
const GOOD_CHILD = '{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/x"}]}}';

t.test('2. an invalid inline or local ignition.config child is an error at its node', async (t) => {
  mkdirSync(join(scratch, 'children'), { recursive: true });
  writeFileSync(join(scratch, 'children', 'bad.ign'), BAD_CHILD);
  writeFileSync(join(scratch, 'children', 'good.ign'), GOOD_CHILD);
  const template = (merge: string, replace: string) =>
    `variant: fcos\nversion: 1.4.0\nignition:\n  config:\n    merge:\n      - ${merge}\n    replace:\n      ${replace}\n`;
  const broken = render(template('inline: "variant: fcos\\nversion: 1.4.0\\n"', `inline: '${BAD_CHILD}'`));
  t.match(problemsOf(broken), [
    '6:17: the config given here is not Ignition JSON: syntax error at line 1, column 1 of it',
    /^8:15: in the config given here, storage\.files\.0\.path: path not absolute$/,
  ]);
  t.match(problemsOf(render(template('local: children/bad.ign', 'local: children/good.ign'))), [
    /^6:16: in the config given here, storage\.files\.0\.path: path not absolute$/,
  ]);
  const fine = render(template('local: children/good.ign', 'inline: \'{"ignition":{"version":"3.2.0"}}\''));
  t.strictSame(problemsOf(fine), [], 'valid children, and a child of an older spec left to Ignition');

  await requireTools('ignition-validate');
  t.match(await ignitionValidate('variant: fcos\nversion: 1.4.0\n'), /invalid character 'v'/);
  t.match(await ignitionValidate(BAD_CHILD), /path not absolute/, 'ignition-validate refuses that child too');
  t.equal(await ignitionValidate(GOOD_CHILD), '', 'and takes the valid one');
});

t.test('3. a unit or drop-in line of 2048 bytes or more is refused, as go-systemd refuses it', async (t) => {
  const unitWith = (line: string) =>
    JSON.stringify({
      ignition: { version: '3.3.0' },
      systemd: {
        units: [
          { name: 'a.service', contents: `[Service]\n${line}\n` },
          { name: 'b.service', dropins: [{ name: 'x.conf', contents: `[Service]\n${line}\n` }] },
        ],
      },
    });
  const echo = (bytes: number) => `ExecStart=/bin/echo ${'x'.repeat(bytes - 'ExecStart=/bin/echo '.length)}`;
  const tooLong = 'invalid unit content: line too long (max 2048 bytes)';
  const cases: [string, string, boolean][] = [
    ['2047 bytes', echo(2047), true],
    ['2048 bytes', echo(2048), false],
    ['2048 bytes in 1025 characters', `ExecStart=/bin/echo ${'é'.repeat(1014)}`, false],
    ['a comment of 3000 bytes', `# ${'x'.repeat(3000)}`, false],
    ['3000 bytes over two physical lines', `${echo(1500)} \\\n  ${'y'.repeat(1500)}`, true],
  ];
  await requireTools('ignition-validate');
  for (const [what, line, valid] of cases) {
    const text = unitWith(line);
    const ours = problemsOf(render(text, join(scratch, 'unit.ign'))).map((problem) =>
      problem.replace(/^\d+:\d+: /, ''),
    );
    t.strictSame(
      ours,
      valid ? [] : [tooLong, tooLong],
      `${what}: ${valid ? 'valid' : 'unit and drop-in refused'}`,
    );
    const theirs = await ignitionValidate(text);
    if (valid) t.equal(theirs, '', `${what}: ignition-validate agrees`);
    else t.match(theirs, tooLong, `${what}: ignition-validate agrees`);
  }
});

t.test(
  '3b. a long line is refused exactly where go-systemd looks: checked against ignition-validate',
  async (t) => {
    // Units with long lines at many places, early and late, in options, comments and continuations:
    // go-systemd looks for a line end only before each lexer step and only with 2048 bytes buffered,
    // so a long line late in a unit is often accepted (and systemd reads lines up to 1 MiB).
    let seed = 7;
    const random = (below: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % below;
    };
    const shortLine = () =>
      [`Environment=A${random(1000)}=${'v'.repeat(random(120))}`, `# ${'c'.repeat(random(200))}`, ''][
        random(3)
      ] ?? '';
    const longLine = () =>
      [
        `ExecStart=/bin/echo ${'x'.repeat(2040 + random(400))}`,
        `# ${'c'.repeat(2050 + random(300))}`,
        `ExecStart=/bin/echo ${'y'.repeat(1200)} \\\n  ${'z'.repeat(1000 + random(300))}`,
      ][random(3)] ?? '';
    const units = Array.from({ length: 40 }, () => {
      const lines = ['[Unit]', 'Description=long lines', '[Service]', 'Type=oneshot'];
      const before = random(90);
      for (let index = 0; index < before; index += 1) lines.push(shortLine());
      lines.push(longLine());
      for (let index = random(5); index > 0; index -= 1) lines.push(shortLine());
      lines.push('[Install]', 'WantedBy=multi-user.target', '');
      return lines.join('\n');
    });
    await requireTools('ignition-validate');
    const verdicts = { refused: 0, accepted: 0 };
    for (const [index, contents] of units.entries()) {
      const text = JSON.stringify({
        ignition: { version: '3.3.0' },
        systemd: { units: [{ name: 'long.service', contents }] },
      });
      const theirs = /line too long/.test(await ignitionValidate(text));
      const ours = problemsOf(render(text, join(scratch, 'long.ign'))).some((line) =>
        /line too long/.test(line),
      );
      t.equal(
        ours,
        theirs,
        `unit ${index} (${contents.length} bytes): ${theirs ? 'refused' : 'accepted'} by ignition-validate`,
      );
      verdicts[theirs ? 'refused' : 'accepted'] += 1;
    }
    t.ok(
      verdicts.refused > 0 && verdicts.accepted > 0,
      `both verdicts among the cases: ${JSON.stringify(verdicts)}`,
    );
  },
);

t.test('6. validate names only machines that exist, whatever a render repeats', async (t) => {
  t.strictSame(
    problemsOf(
      render(
        'variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/rack\n      contents: { inline: "{{vars.rack}}-{{ vars.rack }}" }\n',
      ),
    ),
    ["6:27: {{vars.rack}} is not set for machine 52:54:00:12:34:56 (add it under the machine's vars)"],
    'the render says it once',
  );
  const fixture = await bootFixture();
  t.teardown(fixture.cleanup);
  const worker = join(fixture.dir, 'ignition', 'worker.bu');
  mkdirSync(join(fixture.dir, 'ignition', 'tools', 'bin'), { recursive: true });
  for (const name of ['a', 'b', 'bin/c']) writeFileSync(join(fixture.dir, 'ignition', 'tools', name), name);
  const messages = async (storage: string) => {
    writeFileSync(worker, `variant: fcos\nversion: 1.5.0\nstorage:\n${storage}`);
    return (await checkTemplate(worker, fixture.config)).problems.map(
      (problem) => `${problem.line}:${problem.col}: ${problem.message}`,
    );
  };
  t.strictSame(
    await messages(
      '  files:\n    - path: /etc/rack\n      contents: { inline: "rack={{vars.rack}} row={{vars.rack}}\\n" }\n',
    ),
    ["6:27: {{vars.rack}} is not set for machine 52:54:00:12:34:56 (add it under the machine's vars)"],
    'a var missing twice in one string: one problem, no other machine',
  );
  t.strictSame(
    await messages('  trees:\n    - local: tools\n      path: opt/tools\n'),
    ['4:3: path not absolute'],
    'three files of one tree with a relative path: one problem of the one machine',
  );
});

t.test('5. the keys of a storage.trees entry are checked like every other key', async (t) => {
  mkdirSync(join(scratch, 'files', 'tree'), { recursive: true });
  writeFileSync(join(scratch, 'files', 'tree', 'run.sh'), 'echo hi\n');
  const trees = (entry: string) =>
    problemsOf(
      render(`variant: fcos\nversion: 1.5.0\nstorage:\n  trees:\n    - local: files/tree\n      ${entry}\n`),
    );
  t.strictSame(trees('pth: /opt/tools'), ['6:7: unknown key pth; did you mean path?']);
  t.strictSame(trees('path: [/opt]'), ['6:13: expected a string, found a list']);
  const rendered = render(
    'variant: fcos\nversion: 1.5.0\nstorage:\n  trees:\n    - local: files/tree\n      path: /opt/tools\n',
  );
  t.match(rendered.ok && rendered.config.storage, { files: [{ path: '/opt/tools/run.sh', mode: 0o644 }] });
});

t.test(
  '4. a user unit of a with_mount_unit name is merged into the generated one, as Butane merges',
  async (t) => {
    const template = (unit: string) =>
      `variant: fcos\nversion: 1.4.0\nstorage:\n  filesystems:\n    - device: /dev/vdb\n      format: xfs\n      path: /var/lib/data\n      with_mount_unit: true\nsystemd:\n  units:\n    - name: other.service\n      contents: "[Service]\\nExecStart=/bin/true\\n"\n    - name: var-lib-data.mount\n${unit}`;
    const dropin = template(
      '      dropins: [{ name: 10-t.conf, contents: "[Mount]\\nTimeoutSec=300\\n" }]\n',
    );
    const rendered = render(dropin);
    const [data, other, ...rest] = unitsOf(rendered);
    t.match(data, {
      name: 'var-lib-data.mount',
      enabled: true,
      contents: /\nWhere=\/var\/lib\/data\n/,
      dropins: [{ name: '10-t.conf', contents: '[Mount]\nTimeoutSec=300\n' }],
    });
    t.match(other, { name: 'other.service' }, 'the other units follow, as in Butane');
    t.strictSame(
      rest.map((unit) => unit.name),
      ['rackboot-report-installed.service'],
      'one unit of the name, not a duplicate',
    );
    const own = unitsOf(
      render(
        template(
          '      enabled: false\n      contents: "[Mount]\\nWhat=/dev/vdc\\nWhere=/var/lib/data\\n"\n',
        ),
      ),
    );
    t.match(
      own[0],
      {
        name: 'var-lib-data.mount',
        enabled: false,
        contents: '[Mount]\nWhat=/dev/vdc\nWhere=/var/lib/data\n',
      },
      'the user unit wins',
    );

    await requireTools('ignition-validate');
    t.equal(
      await ignitionValidate(rendered.ok ? rendered.text : ''),
      '',
      'ignition-validate takes the merged config',
    );
  },
);

t.test('7. {{"{{"}} writes a literal {{; every other {{…}} is still a placeholder', async (t) => {
  const unit = (line: string) =>
    `variant: fcos\nversion: 1.5.0\nsystemd:\n  units:\n    - name: t.service\n      contents: |\n        [Service]\n        ${line}\n`;
  const contentsOf = (line: string) => unitsOf(render(unit(line)))[0]?.contents;
  t.equal(
    contentsOf(`ExecStart=/usr/bin/podman ps --format '{{"{{"}}.Names}}' --filter name={{hostname}}`),
    "[Service]\nExecStart=/usr/bin/podman ps --format '{{.Names}}' --filter name=node1\n",
  );
  t.equal(
    contentsOf(
      `ExecStart=/bin/sh -c "docker inspect -f {{ '{{' }}.State.Running}} x; echo {{'{{'}} $labels.instance }}"`,
    ),
    '[Service]\nExecStart=/bin/sh -c "docker inspect -f {{.State.Running}} x; echo {{ $labels.instance }}"\n',
    'both quote styles, spaces allowed',
  );
  t.equal(contentsOf('ExecStart=/bin/echo {{"{{"}}end}}'), '[Service]\nExecStart=/bin/echo {{end}}\n');
  t.match(problemsOf(render(unit('ExecStart=/bin/echo {{.Names}}'))), [
    /unknown template variable \{\{\.Names\}\}/,
  ]);
  t.match(
    problemsOf(render(unit('ExecStart=/bin/echo {{hostnme}}'))),
    [/unknown template variable \{\{hostnme\}\}/],
    'a typo stays an error',
  );
  const fixture = await bootFixture();
  t.teardown(fixture.cleanup);
  const worker = join(fixture.dir, 'ignition', 'worker.bu');
  writeFileSync(worker, unit('ExecStart=/bin/echo {{"{{"}}.Names}} {{vars.role}}'));
  t.strictSame(
    (await checkTemplate(worker, fixture.config)).problems,
    [],
    'validate takes it, the escape is no variable',
  );
});

t.test('8. scalars read as go-yaml reads them into Butane fields; merge keys are merged', async (t) => {
  const files = (file: string) => {
    const rendered = render(`variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/x\n${file}`);
    if (!rendered.ok) return problemsOf(rendered);
    const [entry] = (rendered.config.storage as { files: { contents?: { source: string }; mode?: number }[] })
      .files;
    return { source: entry?.contents?.source, mode: entry?.mode };
  };
  t.strictSame(files('      contents: { inline: 1 }\n'), { source: 'data:,1', mode: undefined }, 'inline: 1');
  t.strictSame(
    files('      contents: { inline: 1.10 }\n'),
    { source: 'data:,1.10', mode: undefined },
    'the text as written',
  );
  t.strictSame(
    files('      mode: 0644\n      contents: { inline: 0644 }\n'),
    { source: 'data:,0644', mode: 0o644 },
    'octal for the mode only',
  );
  t.strictSame(files('      contents: { inline: yes }\n'), { source: 'data:,yes', mode: undefined });
  t.strictSame(
    files('      contents:\n        inline: folded\n          text\n'),
    { source: 'data:,folded%20text', mode: undefined },
    'a plain string folded over lines stays folded',
  );
  t.match(
    files('      mode: "0644"\n'),
    [/expected an integer, found string "0644"/],
    'a quoted mode is still a string',
  );

  const units = unitsOf(
    render(
      'variant: fcos\nversion: 1.5.0\nsystemd:\n  units:\n    - &base\n      name: a.service\n      enabled: yes\n      contents: "[Unit]\\n[Install]\\nWantedBy=multi-user.target\\n"\n    - <<: *base\n      name: b.service\n      enabled: off\n',
    ),
  );
  t.match(
    units,
    [
      { name: 'a.service', enabled: true, contents: /WantedBy/ },
      { name: 'b.service', enabled: false, contents: /WantedBy/ },
    ],
    'yes/off in a boolean field, and the merge key merged',
  );
  t.match(
    problemsOf(
      render('{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":1}]}}', join(scratch, 't.ign')),
    ),
    [/expected a string, found number 1/],
    'Ignition JSON converts nothing',
  );
});

t.test('9. a placeholder alone in an integer or boolean field gives that type', async (t) => {
  const template =
    'variant: fcos\nversion: 1.5.0\npasswd:\n  users:\n    - name: app\n      uid: "{{vars.uid}}"\n      system: "{{ vars.system }}"\n      gecos: "{{vars.uid}}"\n';
  const renderFor = (machineVars: Record<string, string | number | boolean>) =>
    renderIgnition(parseTemplate(join(scratch, 't.bu'), template), { ...CORPUS_VARS, vars: machineVars });
  const rendered = renderFor({ uid: 1001, system: 'yes' });
  t.match(rendered.ok && rendered.config.passwd, {
    users: [{ name: 'app', uid: 1001, system: true, gecos: '1001' }],
  });
  const octal = renderFor({ uid: '0750', system: false });
  t.match(
    octal.ok && octal.config.passwd,
    { users: [{ uid: 0o750, system: false }] },
    'as Butane reads it in place',
  );
  t.strictSame(problemsOf(renderFor({ uid: 'one', system: 'maybe' })), [
    '6:12: {{vars.uid}} is not an integer as uid takes',
    '7:15: {{ vars.system }} is not a boolean as system takes',
  ]);
  t.notMatch(
    problemsOf(renderFor({ uid: 'hunter2-secret', system: false })).join('\n'),
    'hunter2-secret',
    'the value is not quoted: problems reach the log and the unauthenticated explain',
  );
  t.match(
    problemsOf(
      render(
        'variant: fcos\nversion: 1.5.0\npasswd:\n  users:\n    - name: app\n      uid: "1{{vars.dc}}"\n',
      ),
    ),
    [/expected an integer, found string "1\{\{vars.dc\}\}"/],
    'a placeholder with other text stays a string',
  );
});

t.test('10. a type problem quotes the template as written, never a value a var filled in', async (t) => {
  const secretVars = { ...CORPUS_VARS, vars: { token: 'hunter2-secret' } };
  const renderWith = (text: string, file: string) =>
    problemsOf(renderIgnition(parseTemplate(join(scratch, file), text), secretVars));
  const butane = renderWith(
    'variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/token\n      contents: "{{vars.token}}"\n',
    't.bu',
  );
  t.strictSame(butane, ['6:17: expected a mapping, found string "{{vars.token}}"']);
  const json = renderWith(
    '{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"app","groups":"x{{vars.token}}"}]}}',
    't.ign',
  );
  t.strictSame(json, ['1:75: expected a list, found string "x{{vars.token}}"']);
  t.notMatch(
    [...butane, ...json].join('\n'),
    'hunter2-secret',
    'problems reach the log and the unauthenticated explain',
  );
});

t.test(
  '11. an integer written in place is read as go-yaml reads it: 0b binary, _ between digits',
  async (t) => {
    const rendered = render(
      'variant: fcos\nversion: 1.5.0\npasswd:\n  users:\n    - name: app\n      uid: 1_001\nstorage:\n  disks:\n    - device: /dev/vda\n      partitions:\n        - label: data\n          size_mib: 10_240\n          start_mib: 0b1010\n  files:\n    - path: /etc/x\n      mode: 0o6_44\n',
    );
    t.strictSame(problemsOf(rendered), [], 'Butane (go-yaml v3) takes these integers');
    t.match(rendered.ok && rendered.config, {
      passwd: { users: [{ name: 'app', uid: 1001 }] },
      storage: {
        disks: [{ partitions: [{ label: 'data', sizeMiB: 10240, startMiB: 10 }] }],
        files: [{ path: '/etc/x', mode: 0o644 }],
      },
    });
    t.match(
      problemsOf(
        render('variant: fcos\nversion: 1.5.0\npasswd:\n  users:\n    - name: app\n      uid: _1001\n'),
      ),
      [/expected an integer, found string "_1001"/],
      'a leading underscore is a string to go-yaml',
    );
  },
);

t.test(
  '12. a generated mount unit is not ordered before its target by rackboot: nofail must not hold the boot',
  async (t) => {
    const [unit] = unitsOf(
      render(
        'variant: fcos\nversion: 1.5.0\nstorage:\n  filesystems:\n    - device: /dev/disk/by-partlabel/scratch\n      format: xfs\n      path: /var/scratch\n      mount_options: [nofail]\n      with_mount_unit: true\n',
      ),
    );
    // Butane's template: systemd adds Before=local-fs.target itself unless the mount is nofail; an
    // explicit one, with RequiredBy=, made a missing nofail disk fail local-fs.target (emergency mode).
    t.match(
      unit?.contents,
      /\n\[Unit\]\nRequires=systemd-fsck@dev-disk-by\\x2dpartlabel-scratch\.service\nAfter=systemd-fsck@dev-disk-by\\x2dpartlabel-scratch\.service\n\n\[Mount\]\n/,
    );
    t.notMatch(unit?.contents, /^Before=/m);
    t.match(unit?.contents, /\nOptions=nofail\n[\s\S]*\nRequiredBy=local-fs\.target\n/);
  },
);

t.test('13. a local path written absolute is inside the files directory, as Butane joins it', async (t) => {
  const dir = join(scratch, 'absolute-local');
  mkdirSync(join(dir, 'keys'), { recursive: true });
  writeFileSync(join(dir, 'keys', 'motd'), 'hello\n');
  const rendered = renderIgnition(
    parseTemplate(
      join(dir, 't.bu'),
      'variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/motd\n      contents:\n        local: /keys/motd\n',
    ),
    CORPUS_VARS,
  );
  t.strictSame(problemsOf(rendered), [], 'filepath.Join(files-dir, "/keys/motd") is files-dir/keys/motd');
  t.match(rendered.ok && rendered.config.storage, {
    files: [{ path: '/etc/motd', contents: { source: 'data:,hello%0A' } }],
  });
  t.match(
    problemsOf(
      renderIgnition(
        parseTemplate(
          join(dir, 't.bu'),
          'variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/x\n      contents:\n        local: /../outside\n',
        ),
        CORPUS_VARS,
      ),
    ),
    [/local file \/\.\.\/outside is outside the files directory/],
    'a leading / does not let it climb out',
  );
});

t.test('14. a local that is not a string is an error, not a file served empty', async (t) => {
  const problems = problemsOf(
    render(
      'variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/motd\n      contents:\n        local: [motd]\n      append:\n        - local: {path: motd}\n',
    ),
  );
  t.strictSame(problems, ['7:16: expected a string', '9:18: expected a string']);
});

t.test(
  '15. a with_mount_unit that is not a boolean is an error, not a filesystem left without its unit',
  async (t) => {
    const mount = (value: string) =>
      render(
        `variant: fcos\nversion: 1.5.0\nstorage:\n  filesystems:\n    - device: /dev/vdb\n      format: xfs\n      path: /var/data\n      with_mount_unit: ${value}\n`,
      );
    t.strictSame(problemsOf(mount('ture')), ['8:24: expected a boolean']);
    t.strictSame(
      problemsOf(mount('"true"')),
      ['8:24: expected a boolean'],
      'quoted, a string as for go-yaml',
    );
    t.match(unitsOf(mount('yes')), [{ name: 'var-data.mount' }], 'yes is true in a boolean field');
    t.strictSame(
      unitsOf(mount('false')).map((unit) => unit.name),
      ['rackboot-report-installed.service'],
    );
  },
);
