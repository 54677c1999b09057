import { type ChildProcess, spawn } from 'node:child_process';
import { copyFile, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { release } from 'node:os';
import { join } from 'node:path';
import { ownedTemporaryDirectory, runCommand, timeoutArguments } from './command.js';
import { onEmergencyCleanup } from './network.js';
import { type Accelerator, type LabFirmware, OVMF_CODE, OVMF_VARS_TEMPLATE } from './qemu.js';

/**
 * KVM when it works, TCG otherwise. On some hosts /dev/kvm exists but firmware fails under it
 * (real-firmware.md: OVMF stops with "KVM internal error", the SeaBIOS iPXE ROM hangs or
 * triple-faults right after it starts). A short probe boots each firmware under KVM on an isolated
 * QEMU hub (no network at all) and checks it reaches its network-boot code; the verdict is cached
 * per QEMU version and host kernel, so only the first lab run on a machine pays for it.
 */

export type AcceleratorChoice = Accelerator | 'auto';
type FirmwareFamily = 'bios' | 'uefi';
type Verdicts = Record<FirmwareFamily, Accelerator>;

const PROBE_LIMIT_MS: Record<FirmwareFamily, number> = { bios: 6000, uefi: 10_000 };
const PROBE_HARD_LIMIT_MARGIN_SECONDS = 5;
/** Output that shows the firmware runs: iPXE finished its device set-up / OVMF started PXE. */
const PROBE_SUCCESS: Record<FirmwareFamily, RegExp> = {
  bios: /iPXE initialising devices\.\.\.ok/,
  uefi: />>Start PXE over IPv4/,
};
const KVM_FAILURE = /KVM internal error|emulation failure|failed to initialize kvm|Could not access KVM/i;

export function firmwareFamily(firmware: LabFirmware): FirmwareFamily {
  return firmware === 'bios' ? 'bios' : 'uefi';
}

export async function chooseAccelerators(
  choice: AcceleratorChoice,
  cacheDirectory: string,
): Promise<Verdicts> {
  if (choice !== 'auto') return { bios: choice, uefi: choice };
  const kvmDevice = await stat('/dev/kvm').then(
    () => true,
    () => false,
  );
  if (!kvmDevice) return { bios: 'tcg', uefi: 'tcg' };
  const qemuVersion = (await runCommand('qemu-system-x86_64', ['--version'])).split('\n')[0] ?? '';
  const key = `${qemuVersion} | ${release()}`;
  const cacheFile = join(cacheDirectory, 'accelerator.json');
  const cached = await readFile(cacheFile, 'utf8')
    .then((text) => JSON.parse(text) as { key: string; verdicts: Verdicts })
    .catch(() => undefined);
  if (cached?.key === key) return cached.verdicts;
  const work = await ownedTemporaryDirectory(cacheDirectory, 'probe-');
  try {
    const verdicts: Verdicts = {
      bios: (await firmwareRunsUnderKvm('bios', work)) ? 'kvm' : 'tcg',
      uefi: (await firmwareRunsUnderKvm('uefi', work)) ? 'kvm' : 'tcg',
    };
    await writeFile(cacheFile, JSON.stringify({ key, verdicts }, null, 2));
    return verdicts;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function firmwareRunsUnderKvm(family: FirmwareFamily, work: string): Promise<boolean> {
  // A hub port with nothing else on the hub: the NIC exists for the firmware, no frame leaves QEMU.
  const args = ['-accel', 'kvm', '-m', '256', '-smp', '1', '-nographic', '-no-reboot'];
  args.push('-netdev', 'hubport,id=net0,hubid=0');
  if (family === 'bios') {
    args.push('-machine', 'pc', '-device', 'virtio-net-pci,netdev=net0,bootindex=1');
  } else {
    const vars = join(work, 'OVMF_VARS.fd');
    await copyFile(OVMF_VARS_TEMPLATE, vars);
    args.push(
      '-machine',
      'q35',
      '-drive',
      `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`,
      '-drive',
      `if=pflash,format=raw,unit=1,file=${vars}`,
      '-device',
      'virtio-net-pci,netdev=net0,bootindex=1,romfile=',
    );
  }
  // The verdict comes from the timer below; `timeout` bounds QEMU when this process is gone first.
  const hardLimitSeconds = PROBE_LIMIT_MS[family] / 1000 + PROBE_HARD_LIMIT_MARGIN_SECONDS;
  return new Promise<boolean>((resolve) => {
    const child = spawn('timeout', timeoutArguments(hardLimitSeconds, 'qemu-system-x86_64', args), {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // This runs before createLabNetwork, whose exit hooks would otherwise leave QEMU behind on Ctrl-C.
    const forgetProbe = onEmergencyCleanup(() => killProbe(child));
    let output = '';
    let settled = false;
    const settle = (verdict: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      killProbe(child);
      forgetProbe();
      resolve(verdict);
    };
    const timer = setTimeout(() => settle(false), PROBE_LIMIT_MS[family]);
    const onData = (chunk: Buffer) => {
      output += chunk.toString('latin1');
      if (KVM_FAILURE.test(output)) settle(false);
      else if (PROBE_SUCCESS[family].test(output)) settle(true);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('error', () => settle(false));
    // An exit before the firmware got going (triple fault with -no-reboot, KVM refused) is a failure.
    child.once('exit', () => settle(false));
  });
}

/**
 * SIGKILL to the probe's process group, which `timeout` leads, so QEMU goes too; and to `timeout`
 * itself in case it has not made its group yet (then QEMU has not started either).
 */
function killProbe(probe: ChildProcess): void {
  if (probe.pid === undefined || probe.exitCode !== null || probe.signalCode !== null) return;
  for (const target of [-probe.pid, probe.pid]) {
    try {
      process.kill(target, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
