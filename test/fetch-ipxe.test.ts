import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { fetchIpxe, missingRequiredIpxe, SYSTEM_IPXE_DIRS } from '../src/fetch/ipxe.js';

const run = promisify(execFile);

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'rackboot-ipxe-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function layout(root: string, files: Record<string, string>): void {
  for (const [name, content] of Object.entries(files)) {
    mkdirSync(dirname(join(root, name)), { recursive: true });
    writeFileSync(join(root, name), content);
  }
}

t.test('copies the Debian package binaries installed on this machine', async (t) => {
  const dest = tempDir(t);
  const result = await fetchIpxe(dest);
  t.same(
    result.copied.map((copy) => [copy.target, copy.source, copy.outcome]),
    [
      ['undionly.kpxe', '/usr/lib/ipxe/undionly.kpxe', 'copied'],
      ['ipxe.efi', '/usr/lib/ipxe/ipxe.efi', 'copied'],
      ['snponly.efi', '/usr/lib/ipxe/snponly.efi', 'copied'],
    ],
  );
  t.ok(readFileSync(join(dest, 'ipxe.efi')).equals(readFileSync('/usr/lib/ipxe/ipxe.efi')));
  t.same(result.missing, [
    { target: 'arm64-efi/ipxe.efi', required: false },
    { target: 'arm64-efi/snponly.efi', required: false },
  ]);
  const again = await fetchIpxe(dest);
  t.same(
    again.copied.map((copy) => copy.outcome),
    ['unchanged', 'unchanged', 'unchanged'],
  );
  t.same(SYSTEM_IPXE_DIRS, ['/usr/lib/ipxe', '/usr/share/ipxe']);
});

t.test('Fedora names and an iPXE build tree map to the names DHCP hands out', async (t) => {
  const fedora = tempDir(t);
  layout(fedora, {
    'undionly.kpxe': 'bios',
    'ipxe-x86_64.efi': 'x64 native',
    'ipxe-snponly-x86_64.efi': 'x64 snp',
    'arm64-efi/snponly.efi': 'arm snp',
  });
  const tree = tempDir(t);
  layout(tree, { 'bin-arm64-efi/ipxe.efi': 'arm native from source' });
  const dest = tempDir(t);
  const result = await fetchIpxe(dest, [fedora, tree]);
  t.same(result.missing, []);
  const read = (name: string) => readFileSync(join(dest, name), 'utf8');
  t.equal(read('undionly.kpxe'), 'bios');
  t.equal(read('ipxe.efi'), 'x64 native');
  t.equal(read('snponly.efi'), 'x64 snp');
  t.equal(read('arm64-efi/ipxe.efi'), 'arm native from source');
  t.equal(read('arm64-efi/snponly.efi'), 'arm snp');

  layout(fedora, { 'ipxe-x86_64.efi': 'x64 native, updated package' });
  const update = await fetchIpxe(dest, [fedora, tree]);
  t.same(
    update.copied.filter((copy) => copy.outcome === 'copied').map((copy) => copy.target),
    ['ipxe.efi'],
  );
  t.equal(read('ipxe.efi'), 'x64 native, updated package');
});

t.test(
  'binaries missing under --source: the CLI names those directories, not the package, and exits 1',
  async (t) => {
    const empty = tempDir(t);
    const dest = tempDir(t);
    const failure = await run(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', 'fetch', 'ipxe', '--dest', dest, '--source', empty],
      { cwd: join(import.meta.dirname, '..') },
    ).then(
      () => ({ code: 0, stdout: '', stderr: '' }),
      (error: { code: number; stdout: string; stderr: string }) => error,
    );
    t.equal(failure.code, 1);
    t.match(
      failure.stderr,
      `undionly.kpxe, ipxe.efi, snponly.efi not found under ${empty} (--source); name the directory holding them`,
    );
    t.notMatch(
      failure.stderr,
      'install the iPXE package',
      'the package may well be installed: --source was looked in',
    );
    t.match(failure.stdout, 'no arm64 iPXE found: dnf install ipxe-bootimgs-aarch64');
  },
);

t.test(
  'without --source, binaries missing from the system locations: the error names the package to install',
  async (t) => {
    const result = await fetchIpxe(tempDir(t), [tempDir(t)]);
    t.equal(
      missingRequiredIpxe(result)?.message,
      'undionly.kpxe, ipxe.efi, snponly.efi not found; install the iPXE package: apt-get install ipxe (Debian, Ubuntu) ' +
        'or dnf install ipxe-bootimgs-x86 (Fedora, RHEL)',
    );
  },
);
