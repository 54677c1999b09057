import { spawn } from 'node:child_process';
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
