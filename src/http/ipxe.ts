import type { Arch, Mac } from '../boot-plan.js';

/**
 * iPXE script text, pure: no config, no I/O. Every script starts with `#!ipxe` and talks to the
 * console in lines starting `rackboot:` so an operator watching a serial console knows who spoke.
 */

/** Failed downloads allowed per boot before the machine gives up and reboots (each waits RETRY_WAIT_SECONDS). */
const MAX_DOWNLOAD_FAILURES = 5;
const RETRY_WAIT_SECONDS = 5;
/** Time an operator gets to read a message before the machine reboots. */
const MESSAGE_WAIT_SECONDS = 60;

/**
 * The `${buildarch}` names of iPXE that map to an architecture: what `rackboot render --arch` and
 * `/api/v1/explain?arch=` take (default x86_64). A misspelt name would otherwise be explained as
 * an unknown architecture, which is no machine's answer.
 */
export const IPXE_BUILDARCHES: readonly string[] = ['x86_64', 'i386', 'arm32', 'arm64', 'aarch64'];

/** iPXE's `${buildarch}` names → Fedora CoreOS architecture names. */
export function archFromBuildarch(buildarch: string | undefined): Arch {
  switch (buildarch) {
    case 'x86_64':
    case 'i386':
    case 'arm32':
      return buildarch;
    case 'arm64':
    case 'aarch64':
      return 'aarch64';
    default:
      return 'unknown';
  }
}

/**
 * `/boot.ipxe`, the same for every machine: iPXE fills in the booting NIC's MAC (`netX` is the
 * device it booted from, which matters on multi-NIC servers), its build architecture, platform
 * (pcbios/efi) and SMBIOS UUID, and chains to the machine's own script.
 *
 * The `exit` after the chain is what sends an installed machine to its disk. The local-disk script
 * ends with `exit`, and in iPXE that ends only the innermost script: exit_exec() (src/core/exec.c)
 * sets SHELL_STOP_COMMAND_SEQUENCE, the chained script stops on it and shell_stopped() clears it
 * (terminate_on_exit_or_failure() in src/image/script.c), so `chain` returns 0 here. Without this
 * `exit` the entry script would carry on into its retry lines, chain again and reboot into the
 * network boot for ever; with it, control goes back to the firmware, which tries the next boot option.
 */
export function entryScript(baseUrl: string): string {
  const machineUrl =
    `${baseUrl}/boot/\${netX/mac:hexhyp}.ipxe` +
    '?arch=${buildarch:uristring}&platform=${platform:uristring}&uuid=${uuid:uristring}';
  return [
    '#!ipxe',
    ':rb-chain',
    `chain --autofree ${machineUrl} || goto rb-retry`,
    'exit',
    ':rb-retry',
    ...retryLines('fetching the boot script of this machine failed', 'rb-chain'),
    '',
  ].join('\n');
}

export interface InitrdImage {
  /** iPXE image name; the kernel command line names it with `initrd=<name>`. */
  name: string;
  url: string;
}

interface BootScriptInput {
  /** First console line: who this is and what it boots. */
  banner: string;
  kernelUrl: string;
  initrds: InitrdImage[];
  /** Kernel arguments after the `initrd=` ones (which this function adds). */
  args: readonly string[];
}

/**
 * Kernel + initrds + boot, each download retried (bounded: MAX_DOWNLOAD_FAILURES for the whole
 * script) so one lost packet does not cost a boot. Every initrd is named and listed as
 * `initrd=<name>`: the Linux EFI stub loads only initrds named on the command line (seen with
 * OVMF + iPXE: "VFS: Unable to mount root fs" without it); BIOS ignores the argument.
 */
export function bootScript(input: BootScriptInput): string {
  const kernelArgs = [...input.initrds.map((initrd) => `initrd=${initrd.name}`), ...input.args];
  const lines = [
    '#!ipxe',
    `echo rackboot: ${consoleText(input.banner)}`,
    ':rb-kernel',
    'set rb-step rb-kernel',
  ];
  lines.push(`kernel ${[input.kernelUrl, ...kernelArgs].join(' ')} || goto rb-retry`);
  input.initrds.forEach((initrd, index) => {
    lines.push(`:rb-initrd${index}`, `set rb-step rb-initrd${index}`);
    lines.push(`initrd --name ${initrd.name} ${initrd.url} || goto rb-retry`);
  });
  lines.push('boot || goto rb-failed', ':rb-retry');
  return `${lines.join('\n')}\n${DOWNLOAD_RETRY}`;
}

/** The retry tail every boot script ends with, the same text each time: made once. */
const DOWNLOAD_RETRY = `${retryLines('download of ${rb-step} failed', '${rb-step}').join('\n')}\n`;

/** Counts failures in a string (`x` per failure): iPXE has no arithmetic in every build, but has `iseq`. */
function retryLines(what: string, label: string): string[] {
  return [
    'set rb-tries ${rb-tries}x',
    `iseq \${rb-tries} ${'x'.repeat(MAX_DOWNLOAD_FAILURES)} && goto rb-failed || echo rackboot: ${what}, retrying in ${RETRY_WAIT_SECONDS} s`,
    `sleep ${RETRY_WAIT_SECONDS}`,
    `goto ${label}`,
    ':rb-failed',
    `echo rackboot: giving up after ${MAX_DOWNLOAD_FAILURES} failed downloads, rebooting in ${MESSAGE_WAIT_SECONDS} s`,
    `sleep ${MESSAGE_WAIT_SECONDS}`,
    'reboot',
  ];
}

/**
 * An installed machine boots its own disk. BIOS: `sanboot --drive 0x80` hands over to the first
 * hard disk directly; UEFI (and BIOS if that fails): `exit` returns to the firmware, which moves on
 * to the next boot option.
 */
export function localDiskScript(who: string, mac: Mac): string {
  return [
    '#!ipxe',
    `echo rackboot: ${consoleText(who)} is installed, booting from the local disk`,
    `echo rackboot: to install it again run: rackboot reprovision ${mac}`,
    'sleep 3',
    'iseq ${platform} pcbios || exit',
    'sanboot --no-describe --drive 0x80 || exit',
    '',
  ].join('\n');
}

/** A MAC the inventory does not know: say so clearly, then reboot (the operator may adopt it meanwhile). */
export function unknownMachineScript(mac: Mac): string {
  return messageScript([
    `this machine (${mac}) is not in the rackboot inventory`,
    `add it under machines: in rackboot.yaml, or adopt it: rackboot machines adopt ${mac} --profile NAME`,
  ]);
}

/** The machine is known but its boot cannot be built (missing asset, broken template). */
export function unavailableScript(who: string, reason: string): string {
  return messageScript([`cannot boot ${who}: ${reason}`, 'fix the config, the server reloads it by itself']);
}

function messageScript(lines: string[]): string {
  return [
    '#!ipxe',
    'echo',
    ...lines.map((line) => `echo rackboot: ${consoleText(line)}`),
    `echo rackboot: rebooting in ${MESSAGE_WAIT_SECONDS} s`,
    `sleep ${MESSAGE_WAIT_SECONDS}`,
    'reboot',
    '',
  ].join('\n');
}

const NEEDS_CONSOLE_ESCAPE = /[\r\n$;&|"'#]/;

/**
 * Text safe inside an iPXE `echo`: iPXE expands `${...}`, splits commands at `;`, `&&`, `||`, and
 * takes a word starting with `#` as the start of a comment, which would cut the line short.
 * Words starting with `-` stay: every echo line starts with `rackboot:`, and iPXE's getopt stops
 * at the first word that is not an option, so the console shows a fix such as
 * `rackboot fetch coreos --stream stable` as it must be typed.
 */
function consoleText(text: string): string {
  if (!NEEDS_CONSOLE_ESCAPE.test(text)) return text;
  return text
    .replace(/[\r\n]+/g, ' ')
    .replaceAll('${', '$ {')
    .replaceAll(';', ',')
    .replace(/["']/g, '')
    .replaceAll('&&', 'and')
    .replaceAll('||', 'or')
    .replace(/(^|\s)#/g, '$1(#)');
}
