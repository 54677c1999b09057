import type { ChildProcess } from 'node:child_process';
import { constants, createWriteStream } from 'node:fs';
import { access } from 'node:fs/promises';
import { DEBUG_EXIT_PORT } from './boot-sector.js';
import type { LabNetwork } from './network.js';
import { stopChild } from './network.js';

/**
 * QEMU command lines for the three firmware paths the lab exercises (real-firmware.md), and a
 * runner that timestamps each serial line so the harness can wait on markers and measure phases.
 */

export type LabFirmware = 'bios' | 'uefi-pxe' | 'uefi-http';
export const LAB_FIRMWARES: readonly LabFirmware[] = ['bios', 'uefi-pxe', 'uefi-http'];
export type Accelerator = 'tcg' | 'kvm';

export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS_TEMPLATE = '/usr/share/OVMF/OVMF_VARS_4M.fd';
const MEMORY_MB = 768;

/**
 * Fails in one line, before any network or server exists, when a UEFI VM's firmware images are
 * missing: QEMU would otherwise report it only as each VM's early exit after the lab was built.
 */
export async function requireOvmf(firmwares: readonly LabFirmware[]): Promise<void> {
  if (firmwares.every((firmware) => firmware === 'bios')) return;
  for (const file of [OVMF_CODE, OVMF_VARS_TEMPLATE]) {
    await access(file, constants.R_OK).catch(() => {
      throw new Error(`UEFI VMs need ${file} (Debian package ovmf)`);
    });
  }
}

export interface VmSpec {
  name: string;
  mac: string;
  tap: string;
  firmware: LabFirmware;
  accelerator: Accelerator;
  /** Per-VM writable copy of OVMF_VARS (UEFI only): OVMF stores boot options there. */
  ovmfVars?: string;
  /** Raw disk image, booted after the network (bootindex 2). */
  disk?: string;
}

export function qemuArguments(spec: VmSpec): string[] {
  const uefi = spec.firmware !== 'bios';
  const args = [
    '-accel',
    spec.accelerator,
    '-machine',
    uefi ? 'q35' : 'pc',
    '-m',
    String(MEMORY_MB),
    '-smp',
    '1',
    // Firmware, iPXE and kernel text all go to the serial port, which QEMU puts on stdout.
    '-nographic',
    // A guest reset (triple fault, reboot) ends QEMU instead of looping through the boot again.
    '-no-reboot',
    '-name',
    spec.name,
    '-netdev',
    `tap,id=net0,ifname=${spec.tap},script=no,downscript=no`,
  ];
  // Without `romfile=` QEMU loads iPXE into the NIC and UEFI's own PXE/HTTP client never runs.
  const nic = `virtio-net-pci,netdev=net0,mac=${spec.mac},bootindex=1${uefi ? ',romfile=' : ''}`;
  args.push('-device', nic);
  if (uefi) {
    if (!spec.ovmfVars) throw new Error(`${spec.name}: UEFI needs a writable OVMF_VARS copy`);
    args.push(
      '-drive',
      `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`,
      '-drive',
      `if=pflash,format=raw,unit=1,file=${spec.ovmfVars}`,
    );
  }
  if (spec.firmware === 'uefi-http') {
    // Leaves OVMF only its HTTP Boot options, so it does not try PXE first.
    for (const option of ['IPv4PXESupport', 'IPv6PXESupport']) {
      args.push('-fw_cfg', `name=opt/org.tianocore/${option},string=n`);
    }
  }
  if (spec.disk) {
    args.push(
      '-drive',
      `file=${spec.disk},format=raw,if=none,id=disk0`,
      '-device',
      'ide-hd,drive=disk0,bootindex=2',
      // The local-disk boot sector ends the VM through this port (boot-sector.ts).
      '-device',
      `isa-debug-exit,iobase=0x${DEBUG_EXIT_PORT.toString(16)},iosize=0x04`,
    );
  }
  return args;
}

export interface SerialLine {
  /** Milliseconds since QEMU was started. */
  atMs: number;
  text: string;
}

export interface VmRun {
  spec: VmSpec;
  /** Epoch milliseconds at power-on. */
  startedAt: number;
  lines: SerialLine[];
  /** Resolves with the first serial line (past or future) matching; rejects on timeout or VM exit. */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<SerialLine>;
  /** Resolves when QEMU has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The last serial lines, for failure messages. */
  tail(count?: number): string;
  stop(): Promise<void>;
}

// ANSI sequences SeaBIOS and OVMF write to the serial console (OVMF's mode sets are `ESC[=3h`).
const ANSI_ESCAPE = /\x1b\[[0-9;?=>]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1bc/g;

/** A serial console line as a person reads it: no terminal control sequences, no trailing blanks. */
export function consoleText(raw: string): string {
  return raw.replace(ANSI_ESCAPE, '').trimEnd();
}

export function startVm(
  network: LabNetwork,
  spec: VmSpec,
  options: { hardLimitSeconds: number; serialLog?: string; onLine?: (line: SerialLine) => void },
): VmRun {
  const startedAt = Date.now();
  const child: ChildProcess = network.spawn('qemu-system-x86_64', qemuArguments(spec), {
    hardLimitSeconds: options.hardLimitSeconds,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = options.serialLog ? createWriteStream(options.serialLog) : undefined;
  const lines: SerialLine[] = [];
  const listeners = new Set<(line: SerialLine) => void>();
  let partial = '';
  const onData = (chunk: Buffer) => {
    log?.write(chunk);
    const atMs = Date.now() - startedAt;
    const pieces = (partial + chunk.toString('latin1')).split(/\r\n|\n|\r/);
    partial = pieces.pop() ?? '';
    for (const piece of pieces) {
      const text = consoleText(piece);
      if (text === '') continue;
      const line = { atMs, text };
      lines.push(line);
      options.onLine?.(line);
      for (const listener of listeners) listener(line);
    }
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);

  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      if (partial.trim() !== '') onData(Buffer.from('\n'));
      log?.end();
      resolve({ code, signal });
    });
    child.once('error', () => resolve({ code: null, signal: null }));
  });
  let hasExited = false;
  void exited.then(() => {
    hasExited = true;
  });

  const tail = (count = 25) =>
    lines
      .slice(-count)
      .map((line) => line.text)
      .join('\n');

  return {
    spec,
    startedAt,
    lines,
    exited,
    tail,
    waitForLine(pattern, timeoutMs) {
      const seen = lines.find((line) => pattern.test(line.text));
      if (seen) return Promise.resolve(seen);
      return new Promise<SerialLine>((resolve, reject) => {
        const finish = () => {
          clearTimeout(timer);
          listeners.delete(onLine);
        };
        const onLine = (line: SerialLine) => {
          if (!pattern.test(line.text)) return;
          finish();
          resolve(line);
        };
        const timer = setTimeout(() => {
          finish();
          reject(
            new Error(
              `${spec.name}: no serial line ${pattern} within ${timeoutMs} ms; last lines:\n${tail()}`,
            ),
          );
        }, timeoutMs);
        listeners.add(onLine);
        void exited.then(({ code, signal }) => {
          if (!listeners.has(onLine)) return;
          finish();
          reject(
            new Error(
              `${spec.name}: QEMU exited (${code ?? signal}) before ${pattern}; last lines:\n${tail()}`,
            ),
          );
        });
      });
    },
    stop: () => (hasExited ? Promise.resolve() : stopChild(child)),
  };
}
