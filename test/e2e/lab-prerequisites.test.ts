import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { runCommand } from '../../src/lab/command.js';
import { OVMF_CODE } from '../../src/lab/qemu.js';

// A missing prerequisite stops the lab in one line before it builds anything. The host's files
// stay as they are: the lab runs in a private mount namespace where the firmware directory is an
// empty tmpfs. No VM boots.

const SUBNET = 105;
const root = fileURLToPath(new URL('../..', import.meta.url));
const firmwareDirectory = OVMF_CODE.slice(0, OVMF_CODE.lastIndexOf('/'));

function startLabWithout(directory: string, firmware: string) {
  const script = `
    import { startLab } from './src/lab/index.ts';
    const lab = await startLab({
      subnet: ${SUBNET},
      server: { kind: 'rackboot', dhcpMode: 'authoritative' },
      machines: [{ firmware: '${firmware}' }],
      accelerator: 'tcg',
    });
    console.log('started in ' + lab.network.namespace);
    await lab.close();`;
  const child = spawn(
    'unshare',
    [
      '--mount',
      '--propagation',
      'slave',
      'sh',
      '-c',
      `mount -t tmpfs none ${directory} && exec "$@"`,
      'sh',
      process.execPath,
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      script,
    ],
    { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return new Promise<{ code: number | null; output: string; pid: number }>((resolve) =>
    child.once('exit', (code) => resolve({ code, output, pid: child.pid ?? 0 })),
  );
}

t.test('a UEFI lab without OVMF is refused before any namespace exists', async (t) => {
  const before = await runCommand('ip', ['netns', 'list']);
  const { code, output } = await startLabWithout(firmwareDirectory, 'uefi-pxe');
  t.not(code, 0, 'the lab refused to start');
  t.match(output, `UEFI VMs need ${OVMF_CODE} (Debian package ovmf)`);
  t.notMatch(output, /started in/);
  t.equal(await runCommand('ip', ['netns', 'list']), before, 'no namespace was made or left');
});

t.test('a missing tool is named with the Debian package that brings it', async (t) => {
  // Every tool of a rackboot lab but QEMU, on a PATH of their own.
  const bin = await mkdtemp(join(tmpdir(), 'rackboot-lab-tools-'));
  t.teardown(() => rm(bin, { recursive: true, force: true }));
  for (const tool of ['sh', 'ip', 'timeout', 'curl', 'apt-get', 'dpkg-deb', 'radvd']) {
    const found = (await runCommand('sh', ['-c', `command -v ${tool}`])).trim();
    await symlink(found, join(bin, tool));
  }
  const main = join(root, 'src', 'cli', 'main.ts');
  const stderr = await new Promise<string>((resolve) => {
    const args = ['--import', 'tsx', main, 'lab', '--subnet', String(SUBNET)];
    execFile(process.execPath, args, { cwd: root, env: { ...process.env, PATH: bin } }, (_error, _out, err) =>
      resolve(err),
    );
  });
  t.equal(stderr, 'rackboot: the lab needs qemu-system-x86_64 on PATH (Debian packages: qemu-system-x86)\n');
});
