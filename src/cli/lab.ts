import { constants as osConstants } from 'node:os';
import type { Command } from 'commander';
import type { AcceleratorChoice, BootOutcome, LabFirmware } from '../lab/index.js';
import { formatEvent } from './logs.js';
import { wholeNumberIn } from './whole-number.js';

interface LabCommandOptions {
  firmware: string;
  vms: string;
  subnet: string;
  accel: string;
  serial?: boolean;
  keep?: boolean;
}

const FIRMWARE_NAMES: Record<string, LabFirmware> = {
  bios: 'bios',
  uefi: 'uefi-pxe',
  'uefi-pxe': 'uefi-pxe',
  'uefi-http': 'uefi-http',
};
const MAX_VMS = 8;
/** A VM that has not installed by then has failed (TCG on a busy host is slow; KVM much faster). */
const BOOT_LIMIT_MS = 420_000;

/**
 * `rackboot lab`: the e2e harness for people. Builds a private LAN in a network namespace, runs
 * rackboot on it, boots QEMU VMs through real firmware, prints the provisioning events live, and
 * removes everything on exit or Ctrl-C.
 */
export function registerLab(program: Command): void {
  program
    .command('lab')
    .description(
      'boot VMs in a private network through DHCP, TFTP, iPXE, Ignition; live log; cleans up (root, QEMU)',
    )
    .option('--firmware <firmware>', 'bios | uefi (OVMF PXE) | uefi-http (OVMF HTTP Boot)', 'bios')
    .option('--vms <count>', `how many VMs boot at once (1-${MAX_VMS})`, '1')
    .option('--subnet <n>', 'lab LAN 10.77.<n>.0/24, private to the lab namespace', '120')
    .option('--accel <accelerator>', 'auto (KVM if the firmware runs under it, else TCG) | kvm | tcg', 'auto')
    .option('--serial', 'also print the VMs’ serial consoles')
    .option('--keep', 'keep the lab directory (config, state, serial logs) afterwards')
    .action(async (options: LabCommandOptions) => {
      const firmware = FIRMWARE_NAMES[options.firmware];
      if (!firmware) throw new Error(`--firmware must be one of ${Object.keys(FIRMWARE_NAMES).join(', ')}`);
      const vms = wholeNumberIn(options.vms, 1, MAX_VMS);
      if (vms === undefined) throw new Error(`--vms must be 1 to ${MAX_VMS}`);
      const subnet = wholeNumberIn(options.subnet, 0, 255);
      if (subnet === undefined) throw new Error('--subnet must be 0 to 255');
      if (!['auto', 'kvm', 'tcg'].includes(options.accel))
        throw new Error('--accel must be auto, kvm or tcg');
      process.exitCode = await runLab({
        firmware,
        vms,
        subnet,
        accelerator: options.accel as AcceleratorChoice,
        serial: options.serial ?? false,
        keep: options.keep ?? false,
      });
    });
}

async function runLab(options: {
  firmware: LabFirmware;
  vms: number;
  subnet: number;
  accelerator: AcceleratorChoice;
  serial: boolean;
  keep: boolean;
}): Promise<number> {
  const { startLab, formatTimeline } = await import('../lab/index.js');
  const say = (line: string) => process.stdout.write(`rackboot lab: ${line}\n`);
  const lab = await startLab({
    subnet: options.subnet,
    server: { kind: 'rackboot', dhcpMode: 'authoritative' },
    machines: Array.from({ length: options.vms }, () => ({ firmware: options.firmware })),
    accelerator: options.accelerator,
    keepDirectory: options.keep,
    hardLimitSeconds: BOOT_LIMIT_MS / 1000 + 120,
    progress: say,
  });
  let interrupted: number | undefined;
  const onSignal = (signal: 'SIGINT' | 'SIGTERM') => {
    // 128 + the signal's number, as a shell reports it (130 after Ctrl-C, 143 after SIGTERM); the
    // exit hooks of the lab network then remove by PID and namespace whatever a failed close left.
    const status = 128 + osConstants.signals[signal];
    interrupted = status;
    say(`${signal === 'SIGINT' ? 'interrupted' : 'terminated'}: stopping the VMs and removing the lab`);
    // A --keep run is often stopped because a VM hangs: its serial logs are what the operator wants.
    if (options.keep) say(`lab directory kept: ${lab.directory}`);
    void lab
      .close()
      .catch((error: unknown) => say(`cleanup failed: ${(error as Error).message}`))
      .finally(() => process.exit(status));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    say(`LAN ${lab.network.prefix}.0/24 in namespace ${lab.network.namespace}; rackboot at ${lab.baseUrl}`);
    const hostnames = new Map(lab.machines.map((machine) => [machine.mac, machine.hostname]));
    const events = lab.api?.followEvents(
      (event) => {
        const host = (event.mac && hostnames.get(event.mac)) ?? '';
        process.stdout.write(`${host.padEnd(6)} ${formatEvent(event)}\n`);
      },
      BOOT_LIMIT_MS / 1000 + 60,
    );
    const outcomes = await Promise.all(
      lab.machines.map((machine) =>
        lab.boot(machine, {
          timeoutMs: BOOT_LIMIT_MS,
          onSerialLine: options.serial
            ? (line) => process.stdout.write(`${machine.hostname.padEnd(6)} | ${line.text}\n`)
            : undefined,
        }),
      ),
    );
    events?.stop();
    if (interrupted !== undefined) return interrupted;
    say('results (seconds since power-on, read from the serial console):');
    for (const outcome of outcomes) {
      say(
        `  ${outcome.machine.hostname} ${outcome.machine.mac} ${outcome.result}: ${formatTimeline(outcome.timeline)}`,
      );
      if (outcome.result !== 'installed') for (const line of unfinishedReport(outcome)) say(line);
    }
    if (options.keep) say(`lab directory kept: ${lab.directory}`);
    return outcomes.every((outcome) => outcome.result === 'installed') ? 0 : 1;
  } finally {
    if (!interrupted) {
      await lab.close();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }
}

/**
 * Why a VM did not install (a time limit, QEMU's exit, or the guest's own result line), then its
 * console's last lines, once: the message of a time limit or an exit already ends with those lines.
 */
export function unfinishedReport(outcome: Pick<BootOutcome, 'detail' | 'tail'>): string[] {
  const reason = (outcome.detail.split('\n')[0] ?? '').replace(/; last lines:$/, '');
  return [`  ${reason}`, `  last console lines:\n${outcome.tail}`];
}
