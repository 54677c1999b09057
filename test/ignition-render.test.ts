import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { gunzipSync } from 'node:zlib';
import t from 'tap';
import type { Mac } from '../src/boot-plan.js';
import { makeDataUrl } from '../src/ignition/butane.js';
import { checkTemplate } from '../src/ignition/check.js';
import { REPORT_UNIT_NAME, renderIgnition } from '../src/ignition/render.js';
import { parseTemplate } from '../src/ignition/template.js';
import {
  CACHED_TOKENS,
  createMachineSecrets,
  openMachineSecrets,
  SECRET_FILE_NAME,
} from '../src/ignition/tokens.js';
import { nameRule } from '../src/inventory/names.js';
import { runCli } from './helpers/cli.js';
import { requireTools } from './helpers/netns.js';
import { BASE_YAML, bootFixture } from './ignition/boot-fixture.js';
import { CORPUS_VARS } from './ignition/corpus-vars.js';

const execFileAsync = promisify(execFile);

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

t.test('data URLs of large contents are lossless, encoded once and told apart by content', async (t) => {
  const text = Buffer.from('rackboot serves fleets\n'.repeat(4096));
  const binary = randomBytes(256 * 1024);
  const percentOnly = Buffer.from('abc-_.~'.repeat(8192));
  for (const [name, bytes, allowCompression] of [
    ['text, gzip allowed', text, true],
    ['text, no gzip', text, false],
    ['random bytes', binary, true],
    ['unreserved characters only', percentOnly, false],
  ] as const) {
    const first = makeDataUrl(bytes, allowCompression);
    const decoded = decodeDataUrl(first.url);
    t.strictSame(first.compression === 'gzip' ? gunzipSync(decoded) : decoded, bytes, `${name}: round trip`);
    t.equal(
      makeDataUrl(Buffer.from(bytes), allowCompression),
      first,
      `${name}: the second time from the memo`,
    );
  }
  t.match(
    makeDataUrl(percentOnly, false).url,
    /^data:,abc-_\.~abc/,
    'percent-encoding wins when nothing is escaped',
  );
  t.match(makeDataUrl(binary, true).url, /^data:;base64,/, 'base64 wins on random bytes');
  const changed = Buffer.from(text);
  changed[changed.length - 2] = 0x21;
  t.not(makeDataUrl(changed, true).url, makeDataUrl(text, true).url, 'one byte changed is another entry');
});

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

t.test(
  'modes with setuid, setgid or sticky bits are taken as written (Butane CheckForDecimalMode)',
  async (t) => {
    const problemsOf = (text: string) => {
      const rendered = renderIgnition(parseTemplate('/t/mode.bu', text), CORPUS_VARS);
      return rendered.ok ? [] : rendered.problems.map((problem) => problem.message);
    };
    const butane = (kind: 'files' | 'directories', mode: string) =>
      problemsOf(
        `variant: fcos\nversion: 1.5.0\nstorage:\n  ${kind}:\n    - path: /srv/x\n      mode: ${mode}\n`,
      );
    for (const [kind, mode] of [
      ['directories', '01777'],
      ['directories', '02775'],
      ['files', '04755'],
      ['files', '02755'],
      ['files', '0600'],
      ['directories', '0750'],
    ] as const) {
      t.strictSame(butane(kind, mode), [], `${kind} ${mode}`);
    }
    t.strictSame(
      problemsOf(
        '{"ignition":{"version":"3.4.0"},"storage":{"directories":[{"path":"/var/shared","mode":1023}]}}',
      ),
      [],
      'JSON 1023 is 01777',
    );
    t.strictSame(butane('files', '644'), [
      'mode 644 is decimal (octal 1204); write 0644 in Butane or 420 in JSON',
    ]);
    t.strictSame(butane('files', '444'), [
      'mode 444 is decimal (octal 0674); write 0444 in Butane or 292 in JSON',
    ]);
    t.strictSame(butane('directories', '1777'), [
      'mode 1777 is decimal (octal 3361); write 01777 in Butane or 1023 in JSON',
    ]);
  },
);

const fileFrom = (source: string) =>
  `"storage":{"files":[{"path":"/a","contents":{"source":${JSON.stringify(source)}}}]}`;
/** Sources (arn) that need spec 3.4.0, which Debian's ignition-validate knows as 3.4.0-experimental. */
const at340 = (source: string) => `"ignition":{"version":"3.4.0"},${fileFrom(source)}`;

/**
 * Rules Ignition enforces that a template once passed here and then stopped the machine in the
 * initramfs: [what, config sections (Ignition 3.3.0 JSON unless they set the version), Ignition's
 * message]. Each is also run through Debian's ignition-validate, so the expectation is Ignition's,
 * not ours.
 */
const tangAt = (url: string) =>
  `"storage":{"luks":[{"name":"x","device":"/dev/sdb","clevis":{"tang":[{"url":"${url}","thumbprint":"t"}]}}]}`;

const IGNITION_RULES: [string, string, string][] = [
  ['a Tang URL whose port is not a number', tangAt('http://tang:abc/'), 'unable to parse url'],
  ['a Tang URL with a broken escape', tangAt('http://tang/%zz'), 'unable to parse url'],
  [
    'ext4 label over 16 bytes',
    '"storage":{"filesystems":[{"device":"/dev/sdb","format":"ext4","label":"containers-storage01"}]}',
    'filesystem labels cannot be longer than 16 characters when using ext4',
  ],
  [
    'label without format',
    '"storage":{"filesystems":[{"device":"/dev/sdb","label":"data"}]}',
    'filesystem must specify format if label is specified',
  ],
  [
    'mount path without format',
    '"storage":{"filesystems":[{"device":"/dev/sdb","path":"/var/data"}]}',
    'format cannot be empty when path, label, uuid, wipeFilesystem, options, or mountOptions is specified',
  ],
  [
    'partition label with a colon',
    '"storage":{"disks":[{"device":"/dev/sdb","partitions":[{"number":1,"label":"a:b"}]}]}',
    'partition label will be truncated to text before the colon',
  ],
  [
    'partition without number or label',
    '"storage":{"disks":[{"device":"/dev/sdb","partitions":[{"sizeMiB":10}]}]}',
    'a partition number >= 1 or a label must be specified',
  ],
  [
    'one partition label twice',
    '"storage":{"disks":[{"device":"/dev/sdb","partitions":[{"number":1,"label":"x"},{"number":2,"label":"x"}]}]}',
    'cannot use the same partition label twice',
  ],
  [
    'a partition to delete, described',
    '"storage":{"disks":[{"device":"/dev/sdb","partitions":[{"number":1,"shouldExist":false,"sizeMiB":5}]}]}',
    'shouldExist specified false with other options also specified',
  ],
  [
    'a partition to delete beside a numberless one',
    '"storage":{"disks":[{"device":"/dev/sdb","partitions":[{"number":1,"shouldExist":false},{"label":"z"}]}]}',
    'shouldExist is false for a partition and other partition(s) has start or size 0',
  ],
  [
    'partition GUID',
    '"storage":{"disks":[{"device":"/dev/sdb","partitions":[{"number":1,"typeGuid":"raid_member"}]}]}',
    'doesn\'t match the form "01234567-89AB-CDEF-EDCB-A98765432101"',
  ],
  [
    'raid without level',
    '"storage":{"raid":[{"name":"md0","devices":["/dev/sdb","/dev/sdc"]}]}',
    'raid level is required',
  ],
  [
    'raid level',
    '"storage":{"raid":[{"name":"md0","level":"raid7","devices":["/dev/sdb"]}]}',
    'unrecognized raid level',
  ],
  [
    'raid0 spares',
    '"storage":{"raid":[{"name":"md0","level":"raid0","spares":1,"devices":["/dev/sdb"]}]}',
    'spares unsupported for linear and raid0 arrays',
  ],
  ['raid without devices', '"storage":{"raid":[{"name":"md0","level":"raid1"}]}', 'raid devices required'],
  [
    'luks name with a slash',
    '"storage":{"luks":[{"name":"a/b","device":"/dev/sdb"}]}',
    'device names cannot contain slashes',
  ],
  [
    'luks label over 47 bytes',
    `"storage":{"luks":[{"name":"x","device":"/dev/sdb","label":"${'l'.repeat(48)}"}]}`,
    'luks device labels cannot be longer than 47 characters',
  ],
  [
    'custom clevis without pin',
    '"storage":{"luks":[{"name":"x","device":"/dev/sdb","clevis":{"custom":{"config":"{}"}}}]}',
    'missing required custom clevis pin',
  ],
  [
    'custom clevis pin',
    '"storage":{"luks":[{"name":"x","device":"/dev/sdb","clevis":{"custom":{"pin":"yubikey","config":"{}"}}}]}',
    'unsupported clevis pin',
  ],
  [
    'custom clevis without config',
    '"storage":{"luks":[{"name":"x","device":"/dev/sdb","clevis":{"custom":{"pin":"tpm2"}}}]}',
    'missing required custom clevis config',
  ],
  [
    'custom clevis with tpm2',
    '"storage":{"luks":[{"name":"x","device":"/dev/sdb","clevis":{"tpm2":true,"custom":{"pin":"tpm2","config":"{}"}}}]}',
    'cannot use custom clevis config with tpm2, tang, or threshold',
  ],
  [
    'tang without thumbprint',
    '"storage":{"luks":[{"name":"x","device":"/dev/sdb","clevis":{"tang":[{"url":"http://tang"}]}}]}',
    'thumbprint is required',
  ],
  [
    'tang url scheme',
    '"storage":{"luks":[{"name":"x","device":"/dev/sdb","clevis":{"tang":[{"url":"ftp://tang","thumbprint":"t"}]}}]}',
    'invalid url scheme',
  ],
  ['merge without source', '"ignition":{"version":"3.3.0","config":{"merge":[{}]}}', 'source is required'],
  [
    'certificate authority without source',
    '"ignition":{"version":"3.3.0","security":{"tls":{"certificateAuthorities":[{}]}}}',
    'source is required',
  ],
  [
    'a kernel argument both kept and removed',
    '"kernelArguments":{"shouldExist":["quiet"],"shouldNotExist":["quiet"]}',
    'duplicate entry defined',
  ],
  [
    'directory through a link',
    '"storage":{"links":[{"path":"/a","target":"/b"}],"directories":[{"path":"/a/b"}]}',
    'directory path includes link in config',
  ],
  [
    'link through a link',
    '"storage":{"links":[{"path":"/a","target":"/b"},{"path":"/a/c","target":"/d"}]}',
    'link path includes link in config',
  ],
  ['data URL with a space', fileFrom('data:,hello world'), 'invalid data character'],
  ['data URL with an upper-case prefix', fileFrom('DATA:,x'), 'missing data prefix'],
  ['data URL with a capitalised prefix', fileFrom('Data:,x'), 'missing data prefix'],
  ['data URL with ;BASE64', fileFrom('data:;BASE64,YQ=='), 'expected base64, got BASE64'],
  [
    'data URL with base64 as its media type',
    fileFrom('data:base64,YQ=='),
    'invalid character for media type',
  ],
  ['data URL with a #', fileFrom('data:,a#b'), 'invalid data character'],
  ['data URL with a quote', fileFrom('data:,a"b'), 'invalid data character'],
  ['data URL with a non-ASCII character', fileFrom('data:,é'), 'invalid data character'],
  ['data URL with angle brackets', fileFrom('data:,a<b>'), 'invalid data character'],
  ['data URL with a media type lacking its subtype', fileFrom('data:x,y'), 'missing media type slash'],
  [
    'data URL with two slashes in its media type',
    fileFrom('data:text//plain,x'),
    'invalid character for media subtype',
  ],
  ['data URL with a parameter lacking its value', fileFrom('data:text/plain;a,x'), 'expected base64, got a'],
  ['data URL with a capitalised media type', fileFrom('data:Text/plain,x'), 'invalid media type'],
  ['data URL with a broken escape', fileFrom('data:,%zz'), 'rfc2396: invalid char 0x25 in unescape sequence'],
  ['data URL with a cut escape', fileFrom('data:,a%2'), 'rfc2396: unexpected end of unescape sequence'],
  ['data URL with unpadded base64', fileFrom('data:;base64,YQ'), 'illegal base64 data at input byte 0'],
  [
    'data URL with base64 after its padding',
    fileFrom('data:;base64,YQ==YQ'),
    'illegal base64 data at input byte 4',
  ],
  ['data URL with a Go-invalid quoted escape', fileFrom('data:text/plain;a="\\q",x'), 'invalid syntax'],
  ['S3 URL with an empty versionId', fileFrom('s3://bucket/key?versionId='), 'invalid S3 object VersionId'],
  ['S3 URL with a bare versionId', fileFrom('s3://bucket/key?versionId'), 'invalid S3 object VersionId'],
  ['ARN source before spec 3.4.0', fileFrom('arn:aws:s3:::b/k'), 'invalid url scheme'],
  ['capitalised ARN source before spec 3.4.0', fileFrom('Arn:aws:s3:::b/k'), 'invalid url scheme'],
  ['ARN of another service than S3', at340('arn:aws:iam::123456789012:user/x'), 'invalid S3 ARN format'],
  ['S3 ARN without a key', at340('arn:aws:s3:::bucket-name-but-no-key'), 'invalid S3 ARN format'],
  [
    'S3 access point ARN without an object',
    at340('arn:aws:s3:us-east-1:123456789012:accesspoint/ap'),
    'invalid S3 ARN format',
  ],
  ['S3 ARN with an empty versionId', at340('arn:aws:s3:::b/k?versionId='), 'invalid S3 object VersionId'],
  // Ignition keys every list, plain values by themselves: a key listed inline and again in a
  // ssh_authorized_keys_local file, or a var equal to a listed key, stopped the first boot.
  [
    'one SSH key twice',
    '"passwd":{"users":[{"name":"core","sshAuthorizedKeys":["ssh-ed25519 AAAA a","ssh-ed25519 AAAA a"]}]}',
    'duplicate entry defined',
  ],
  [
    'one supplementary group twice',
    '"passwd":{"users":[{"name":"core","groups":["wheel","docker","wheel"]}]}',
    'duplicate entry defined',
  ],
  [
    'one RAID device twice',
    '"storage":{"raid":[{"name":"md0","level":"raid1","devices":["/dev/sdb","/dev/sdb"]}]}',
    'duplicate entry defined',
  ],
  [
    'one noProxy entry twice',
    '"ignition":{"version":"3.3.0","proxy":{"httpProxy":"http://p","noProxy":["10.0.0.1","10.0.0.1"]}}',
    'duplicate entry defined',
  ],
  [
    'one merged config twice',
    '"ignition":{"version":"3.3.0","config":{"merge":[{"source":"http://x/a.ign"},{"source":"http://x/a.ign"}]}}',
    'duplicate entry defined',
  ],
];

/** Debian's Ignition 2.14 has spec 3.4.0 only as 3.4.0-experimental, whose URL rules 3.4.0 kept. */
const forDebianIgnition = (text: string) =>
  text.replace('"version":"3.4.0"', '"version":"3.4.0-experimental"');

t.test('Ignition validation rules, with ignition-validate as the reference', async (t) => {
  await requireTools('ignition-validate');
  const scratch = mkdtempSync(join(tmpdir(), 'rackboot-rules-'));
  t.teardown(() => rmSync(scratch, { recursive: true, force: true }));
  for (const [what, sections, message] of IGNITION_RULES) {
    const text = sections.startsWith('"ignition"')
      ? `{${sections}}`
      : `{"ignition":{"version":"3.3.0"},${sections}}`;
    const rendered = renderIgnition(parseTemplate('/t/rule.ign', text), CORPUS_VARS);
    const ours = rendered.ok ? [] : rendered.problems.map((problem) => problem.message);
    t.ok(ours.includes(message), `${what}: ${message}`, { found: ours });
    const file = join(scratch, 'rule.ign');
    writeFileSync(file, forDebianIgnition(text));
    const theirs = await execFileAsync('ignition-validate', [file]).then(
      () => '',
      (error: { stdout: string; stderr: string }) => `${error.stdout}${error.stderr}`,
    );
    t.match(theirs, `: ${message}\n`, `${what}: ignition-validate says the same`);
  }
  const valid = [
    '"storage":{"filesystems":[{"device":"/dev/sdb","format":"ext4","label":"containers-data1"}]}',
    '"storage":{"filesystems":[{"device":"/dev/sdb","format":"none"}]}',
    '"storage":{"raid":[{"name":"md0","level":"mirror","devices":["/dev/sdb","/dev/sdc"]}]}',
    // The lists Ignition lets repeat (IgnoreDuplicates): filesystem, LUKS and RAID options, appends.
    '"storage":{"filesystems":[{"device":"/dev/sdb","format":"xfs","path":"/x","mountOptions":["ro","ro"],"options":["-f","-f"]}]}',
    '"storage":{"raid":[{"name":"md0","level":"raid1","devices":["/dev/sdb","/dev/sdc"],"options":["-x","-x"]}]}',
    '"storage":{"luks":[{"name":"x","device":"/dev/sdb","options":["-a","-a"]}]}',
    '"storage":{"files":[{"path":"/a","append":[{"source":"data:,x"},{"source":"data:,x"}]}]}',
    '"storage":{"luks":[{"name":"x","device":"/dev/sdb","clevis":{"custom":{"pin":"sss","config":"{}"}}}]}',
    // Go's url.Parse takes these where WHATWG's URL does not: an IPv6 zone, a port above 65535.
    tangAt('http://[fe80::1%25eth0]:7500/'),
    tangAt('http://tang:99999/'),
    fileFrom('data:,hello'),
    fileFrom('data:,'),
    fileFrom('data:;base64,YQ=='),
    fileFrom('data:;base64,'),
    fileFrom('data:text/plain;charset=utf-8,a%20b'),
    fileFrom('data:text/plain;base64,YQ=='),
    fileFrom('data:text/plain;charset=utf-8;base64,YQ=='),
    fileFrom('data:text/,x'),
    fileFrom('data:x-rack/boot;a="q\\"x",y'),
    fileFrom("data:,a?b=c;d:e@f&g+h$i/j!k~l*m'n(o)p"),
    fileFrom('http://example.com/a?b=c'),
    fileFrom('https://example.com/a'),
    fileFrom('tftp://10.0.0.1/a'),
    fileFrom('s3://bucket/key'),
    fileFrom('s3://bucket/key?versionId=abc'),
    fileFrom('s3://bucket/key?versionId=abc&versionId='),
    fileFrom('gs://bucket/key'),
    at340('arn:aws:s3:::b/k'),
    at340('arn:aws:s3:::b/k?versionId=abc'),
    at340('arn:aws:s3:us-east-1:123456789012:accesspoint/ap/object/k'),
    // Go's url.Parse lower-cases the scheme before Ignition rebuilds the ARN from it.
    at340('Arn:aws:s3:::b/k'),
  ];
  for (const sections of valid) {
    const text = sections.startsWith('"ignition"')
      ? `{${sections}}`
      : `{"ignition":{"version":"3.3.0"},${sections}}`;
    const rendered = renderIgnition(parseTemplate('/t/valid.ign', text), CORPUS_VARS);
    t.ok(rendered.ok, sections, rendered.ok ? {} : { problems: rendered.problems });
    const file = join(scratch, 'valid.ign');
    writeFileSync(file, forDebianIgnition(text));
    await t.resolves(execFileAsync('ignition-validate', [file]), `ignition-validate accepts ${sections}`);
  }
});

t.test('a tree whose local is a file is a template problem at its line, not an exception', async (t) => {
  const fixture = await bootFixture();
  t.teardown(fixture.cleanup);
  const worker = join(fixture.dir, 'ignition', 'worker.bu');
  writeFileSync(join(fixture.dir, 'ignition', 'motd.txt'), 'hello\n');
  writeFileSync(
    worker,
    'variant: fcos\nversion: 1.5.0\nstorage:\n  trees:\n    - local: motd.txt\n      path: /etc\n',
  );
  const expected = { file: worker, line: 5, col: 14, message: 'root of tree must be a directory' };
  t.match(renderIgnition(parseTemplate(worker, readFileSync(worker, 'utf8')), CORPUS_VARS), {
    ok: false,
    problems: [expected],
  });
  const { loadConfigText } = await import('../src/inventory/load.js');
  const loaded = await loadConfigText(BASE_YAML, join(fixture.dir, 'rackboot.yaml'), { checkTemplate });
  t.match(loaded, { ok: false, problems: [expected] }, 'rackboot validate shows FILE:LINE:COL');
});

t.test('a local file that is a FIFO is a template problem, not a read that waits for a writer', async (t) => {
  const fixture = await bootFixture();
  t.teardown(fixture.cleanup);
  const worker = join(fixture.dir, 'ignition', 'worker.bu');
  execFileSync('mkfifo', [join(fixture.dir, 'ignition', 'pipe')]);
  writeFileSync(
    worker,
    'variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/motd\n      contents:\n        local: pipe\n',
  );
  // In a process of its own: the blocked read held the whole process (the server renders on its
  // main thread), and the timeout kills it.
  const validated = await runCli(['validate', '-c', join(fixture.dir, 'rackboot.yaml')], {
    timeoutMs: 20_000,
  }).catch((error: Error) => ({ code: null, stdout: '', stderr: error.message }));
  t.equal(validated.code, 1, 'validate ends', { stderr: validated.stderr });
  t.match(validated.stdout + validated.stderr, `${worker}:7:16: local file pipe is not a regular file`);
});

t.test(
  'a template replaced by a FIFO while serving is a problem of the template, not a read that waits',
  async (t) => {
    const directory = mkdtempSync(join(tmpdir(), 'rackboot-fifo-template-'));
    t.teardown(() => rmSync(directory, { recursive: true, force: true }));
    const template = join(directory, 'worker.bu');
    execFileSync('mkfifo', [template]);
    // readTemplate is what the server calls at an Ignition request once the file changed: in a process
    // of its own, as the blocked read held the whole process, and the timeout kills it.
    const script = `import { readTemplate } from './src/ignition/template.ts';
process.stdout.write(JSON.stringify(readTemplate(${JSON.stringify(template)}).problems));`;
    const read = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script],
      {
        cwd: new URL('..', import.meta.url).pathname,
        timeout: 20_000,
        // tsx handles SIGTERM in JavaScript, which a process blocked in the open never runs.
        killSignal: 'SIGKILL',
      },
    ).catch((error: Error) => ({ stdout: `failed: ${error.message}` }));
    t.match(
      JSON.parse(read.stdout.startsWith('[') ? read.stdout : '[]'),
      [{ file: template, line: 1, col: 1, message: 'the template is not a regular file' }],
      read.stdout,
    );
  },
);

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

t.test('{{vars.NAME}} takes the names machines[].vars may have, and says the rule otherwise', async (t) => {
  const template = parseTemplate(
    '/t/names.bu',
    'variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/rack\n      contents: { inline: "{{vars.rack-row}} {{ vars.2nd }} {{vars.a.b}}" }\n',
  );
  t.same(
    template.problems.map((problem) => `${problem.line}: ${problem.message}`),
    [`6: unknown template variable {{vars.a.b}}: ${nameRule('vars')}`],
  );
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
  t.strictSame((await checkTemplate(worker, fixture.config)).problems, [], 'the fixture template is fine');

  writeFileSync(
    worker,
    `${readFileSync(worker, 'utf8')}    - path: /etc/rack\n      contents: { inline: "{{vars.rack}}" }\n`,
  );
  const problems = (await checkTemplate(worker, fixture.config)).problems;
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
    const first = await openMachineSecrets(join(dir, 'state'));
    const token = first.tokenFor(MAC_A, 'ignition', now);
    t.equal(statSync(join(dir, 'state', SECRET_FILE_NAME)).mode & 0o777, 0o600);
    t.ok(first.verify(MAC_A, token, now, 'ignition'));
    t.notOk(first.verify(MAC_B, token, now, 'ignition'), "another machine's token is refused");
    for (const index of [0, 10, token.length - 1]) {
      const changed = `${token.slice(0, index)}${token[index] === 'A' ? 'B' : 'A'}${token.slice(index + 1)}`;
      t.notOk(
        first.verify(MAC_A, changed, now, 'ignition'),
        `a token changed at character ${index} is refused`,
      );
    }
    t.notOk(first.verify(MAC_A, '', now, 'ignition'));
    t.ok(
      (await openMachineSecrets(join(dir, 'state'))).verify(MAC_A, token, now, 'ignition'),
      'same secret after a restart',
    );
    t.notOk(
      createMachineSecrets(Buffer.alloc(32, 1)).verify(MAC_A, token, now, 'ignition'),
      'another server secret refuses it',
    );

    const ttl = 600;
    const expiring = await openMachineSecrets(join(dir, 'state'), () => ttl);
    const short = expiring.tokenFor(MAC_A, 'ignition', now);
    t.ok(expiring.verify(MAC_A, short, now + 599_000, 'ignition'));
    t.notOk(expiring.verify(MAC_A, short, now + 601_000, 'ignition'), 'expired');
    const [expiry, signature] = short.split('.');
    t.notOk(
      expiring.verify(MAC_A, `${Number(expiry) + 3600}.${signature}`, now + 601_000, 'ignition'),
      'a stretched expiry is refused',
    );

    writeFileSync(join(dir, 'state', SECRET_FILE_NAME), 'not a secret\n');
    await t.rejects(openMachineSecrets(join(dir, 'state')), /is not a rackboot secret/);
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
  t.strictSame(
    (await checkTemplate(worker, unused)).problems,
    [],
    'no machine uses it: rendered with placeholder vars',
  );
  const forStrangers = { ...fixture.config, unknown_machines: 'coreos' };
  const problems = (await checkTemplate(worker, forStrangers)).problems;
  t.equal(problems.length, 1);
  t.match(problems[0], {
    file: worker,
    line: 14,
    message:
      /\{\{vars\.role\}\} cannot be filled for machines not in the inventory \(unknown_machines: coreos\)/,
  });
});

t.test('checkTemplate renders each machine with the hostname and address the server gives it', async (t) => {
  const fixture = await bootFixture();
  t.teardown(fixture.cleanup);
  const worker = join(fixture.dir, 'ignition', 'worker.bu');
  const machine = (
    mac: string,
    extra: { hostname?: string; ip?: string; vars?: Record<string, string> },
  ) => ({
    mac: mac as Mac,
    profile: 'coreos',
    vars: { role: 'worker' },
    ...extra,
  });
  const fleet = {
    ...fixture.config,
    machines: [
      machine('52:54:00:00:00:01', { hostname: 'node1', ip: '10.77.0.21' }),
      machine('52:54:00:00:00:02', { hostname: 'storage-node-17' }),
      machine('52:54:00:00:00:03', { vars: {} }),
    ],
  };
  const check = async (template: string) => {
    writeFileSync(worker, `variant: fcos\nversion: 1.5.0\nstorage:\n${template}`);
    return (await checkTemplate(worker, fleet)).problems.map(
      (problem) => `${problem.line}:${problem.col}: ${problem.message}`,
    );
  };

  t.strictSame(
    await check('  filesystems:\n    - device: /dev/sdb\n      format: xfs\n      label: "{{hostname}}"\n'),
    ['7:14: filesystem labels cannot be longer than 12 characters when using xfs (for 52:54:00:00:00:02)'],
    'a hostname too long for an xfs label, on the one machine that has it',
  );
  t.strictSame(
    await check('  directories:\n    - path: "/var/lib/nodes/{{hostname}}"\n'),
    ['5:13: path is not fully simplified (for 52:54:00:00:00:03)'],
    'no hostname is an empty string, as the server fills it in',
  );
  t.strictSame(
    await check('  directories:\n    - path: "/srv/{{ip}}/"\n'),
    ['5:13: path is not fully simplified'],
    'a problem every machine has names none',
  );
  t.strictSame(
    await check('  files:\n    - path: /etc/role\n      contents: { inline: "{{vars.role}}" }\n'),
    ["6:27: {{vars.role}} is not set for machine 52:54:00:00:00:03 (add it under the machine's vars)"],
  );
  const racked = {
    ...fleet,
    machines: [...fleet.machines, machine('52:54:00:00:00:04', { vars: { rack: 'r1' } })],
  };
  writeFileSync(
    worker,
    'variant: fcos\nversion: 1.5.0\nstorage:\n  directories:\n    - path: "/srv/{{vars.rack}}"\n',
  );
  t.match(
    (await checkTemplate(worker, racked)).problems,
    [{ line: 5, message: /is not set for machine 52:54:00:00:00:01 .*\(and 2 other machines\)$/ }],
    'one problem for the three machines without the var, saying how many',
  );
});

t.test('tokens for MACs without end (unauthenticated requests name them) keep memory bounded', async (t) => {
  setFlagsFromString('--expose-gc');
  const collectGarbage = runInNewContext('gc') as () => void;
  const secrets = createMachineSecrets(Buffer.alloc(32, 9));
  const now = Date.UTC(2026, 10, 26, 12, 0, 0);
  const macOf = (index: number) =>
    `52:54:${[index >>> 24, (index >>> 16) & 0xff, (index >>> 8) & 0xff, index & 0xff]
      .map((byte) => byte.toString(16).padStart(2, '0'))
      .join(':')}` as Mac;
  const first = secrets.tokenFor(macOf(0), 'ignition', now);
  collectGarbage();
  const before = process.memoryUsage().heapUsed;
  const asked = 20 * CACHED_TOKENS;
  for (let index = 1; index <= asked; index += 1) secrets.tokenFor(macOf(index), 'ignition', now);
  collectGarbage();
  const grownMb = (process.memoryUsage().heapUsed - before) / 1e6;
  t.ok(grownMb < 15, `${asked} MACs grew the heap by ${grownMb.toFixed(1)} MB`);
  t.equal(
    secrets.tokenFor(macOf(0), 'ignition', now),
    first,
    'a token evicted from the cache is the same when made again',
  );
});

t.test('a token opens only what it was issued for; an Ignition token also posts events', async (t) => {
  const now = Date.UTC(2026, 10, 27, 12, 0, 0);
  for (const ttl of [0, 600]) {
    const secrets = createMachineSecrets(Buffer.alloc(32, 3), () => ttl);
    const events = secrets.tokenFor(MAC_A, 'events', now);
    const ignition = secrets.tokenFor(MAC_A, 'ignition', now);
    t.not(events, ignition, `ttl ${ttl}: two tokens`);
    t.ok(secrets.verify(MAC_A, events, now, 'events'), `ttl ${ttl}: the events token posts events`);
    t.notOk(secrets.verify(MAC_A, events, now, 'ignition'), `ttl ${ttl}: it does not open the Ignition`);
    t.ok(
      secrets.verify(MAC_A, ignition, now, 'events'),
      `ttl ${ttl}: URLs handed out before purposes still report`,
    );
    t.notOk(
      secrets.verify(MAC_B, events, now, 'events'),
      `ttl ${ttl}: another machine's events token is refused`,
    );
  }
});

t.test('a TTL turned on or shortened retires the tokens issued before', async (t) => {
  let ttl = 0;
  const secrets = createMachineSecrets(Buffer.alloc(32, 7), () => ttl);
  const now = Date.UTC(2026, 10, 26, 12, 0, 0);
  const permanent = secrets.tokenFor(MAC_A, 'ignition', now);
  t.ok(
    secrets.verify(MAC_A, permanent, now + 86_400_000, 'ignition'),
    'without a TTL a token does not expire',
  );
  ttl = 3600;
  t.notOk(
    secrets.verify(MAC_A, permanent, now, 'ignition'),
    'a token without expiry is refused once a TTL is set',
  );
  const fresh = secrets.tokenFor(MAC_A, 'ignition', now);
  t.ok(secrets.verify(MAC_A, fresh, now + 1000, 'ignition'));
  ttl = 600;
  t.notOk(
    secrets.verify(MAC_A, fresh, now + 1000, 'ignition'),
    'a token outliving the shortened TTL is refused',
  );
  t.ok(
    secrets.verify(MAC_A, secrets.tokenFor(MAC_A, 'ignition', now), now + 1000, 'ignition'),
    'one issued under it is not',
  );
  ttl = 0;
  t.ok(
    secrets.verify(MAC_A, fresh, now + 1000, 'ignition'),
    'with the TTL off, an expiring token lives to its expiry',
  );
  t.notOk(secrets.verify(MAC_A, fresh, now + 3_601_000, 'ignition'));
});
