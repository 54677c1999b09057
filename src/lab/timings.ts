import { GUEST_MARKERS } from './guest-init.js';
import type { LabFirmware, SerialLine } from './qemu.js';

/**
 * Boot phases read from the serial console, the same way whichever server answered, so rackboot
 * and the dnsmasq baseline are timed by one yardstick. Each phase is the first matching line after
 * the previous phase's line; a phase that never printed stays undefined.
 */
export const BOOT_PHASES = [
  'console',
  'dhcp',
  'boot-program',
  'ipxe-dhcp',
  'kernel',
  'ignition',
  'installed',
] as const;
export type BootPhase = (typeof BOOT_PHASES)[number];
export type BootTimeline = Partial<Record<BootPhase, number>>;

const IPXE_DHCP_DONE = /Configuring \(net0 [0-9a-f:]+\)[. ]*ok/;

/** What each phase looks like on the console, per firmware (text seen in real-firmware.md runs). */
function phasePatterns(firmware: LabFirmware): [BootPhase, RegExp][] {
  const firmwareDhcp: [BootPhase, RegExp][] =
    firmware === 'bios'
      ? // The NIC's iPXE ROM is the firmware's network stack: its DHCP is the first one.
        [['dhcp', IPXE_DHCP_DONE]]
      : [
          // EDK2 prints the leased address once its DHCP is done (PXE and HTTP Boot alike).
          ['dhcp', /Station IP address is/],
          // ipxe.efi has arrived (TFTP or HTTP) and runs.
          ['boot-program', /iPXE initialising devices/],
          ['ipxe-dhcp', IPXE_DHCP_DONE],
        ];
  return [
    // The firmware's first console output: before it, the firmware only initialises the machine
    // (OVMF under TCG: 6 to 20 s depending on host load), which no boot server influences.
    ['console', /./],
    ...firmwareDhcp,
    ['kernel', /Linux version \d/],
    ['ignition', new RegExp(GUEST_MARKERS.ignitionFetched)],
    ['installed', new RegExp(`${GUEST_MARKERS.result} installed`)],
  ];
}

/** Seconds since power-on at which each phase was reached. */
export function bootTimeline(firmware: LabFirmware, lines: readonly SerialLine[]): BootTimeline {
  const timeline: BootTimeline = {};
  let from = 0;
  for (const [phase, pattern] of phasePatterns(firmware)) {
    const index = lines.findIndex((line, position) => position >= from && pattern.test(line.text));
    if (index < 0) continue;
    timeline[phase] = (lines[index]?.atMs ?? 0) / 1000;
    from = index + 1;
  }
  return timeline;
}

export function formatTimeline(timeline: BootTimeline): string {
  return BOOT_PHASES.filter((phase) => timeline[phase] !== undefined)
    .map((phase) => `${phase} ${timeline[phase]?.toFixed(1)}s`)
    .join(' → ');
}
