import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { constants, copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type AcceleratorChoice, chooseAccelerators, firmwareFamily } from './accelerator.js';
import { type LabApi, labApi } from './api-client.js';
import { defaultLabCacheDirectory, installBootAssets, prepareLabAssets } from './assets.js';
import { LOCAL_DISK_MARKER, localDiskBootSector } from './boot-sector.js';
import { ownedTemporaryDirectory, requireLabTools } from './command.js';
import { dnsmasqArguments } from './dnsmasq.js';
import { GUEST_MARKERS } from './guest-init.js';
import {
  LAB_IGNITION_TEMPLATE,
  type LabMachine,
  labIgnition,
  labIgnitionTemplate,
  labMachineMac,
  labRackbootConfig,
  peerBootScript,
} from './lab-config.js';
import {
  createLabNetwork,
  LAB_BRIDGE,
  LAN_HOST_INTERFACE,
  type LabNetwork,
  type NamespaceHandle,
  onEmergencyCleanup,
} from './network.js';
import {
  type LabFirmware,
  OVMF_VARS_TEMPLATE,
  requireOvmf,
  type SerialLine,
  startVm,
  type VmRun,
} from './qemu.js';
import { radvdArguments, radvdConfig } from './router-advertisement.js';
import { waitForApi, watchProcess, withTimeout } from './server-process.js';
import { type BootTimeline, bootTimeline } from './timings.js';

/**
 * The lab: a private LAN in a network namespace, a boot server on it (rackboot, or the dnsmasq +
 * static HTTP baseline), and QEMU machines booting through real firmware. Shared by the e2e tests,
 * the baseline benchmark and `rackboot lab`.
 */

export type LabServer =
  | { kind: 'rackboot'; dhcpMode: 'authoritative' | 'proxy' }
  /** dnsmasq (DHCP + TFTP) and a static HTTP server: the baseline rackboot is compared with. */
  | { kind: 'dnsmasq' };

export interface LabOptions {
  /** Third octet of the lab LAN 10.77.<subnet>.0/24; parallel labs need different ones. */
  subnet: number;
  server: LabServer;
  machines: readonly { firmware: LabFirmware; hostname?: string }[];
  cacheDirectory?: string;
  accelerator?: AcceleratorChoice;
  /** Send the IPv6 router advertisement that ends iPXE's IPv6 wait (default true). */
  routerAdvertisement?: boolean;
  /** Upper bound on the life of every process the lab starts, even if the harness dies. */
  hardLimitSeconds?: number;
  progress?: (message: string) => void;
  /** Each line rackboot (or dnsmasq, in the baseline) prints. */
  serverOutput?: (line: string) => void;
  /** Keep the run directory (config, state, serial logs) after close(). */
  keepDirectory?: boolean;
}

export type BootResult = 'installed' | 'failed' | 'local-disk' | 'no-result';

export interface BootOutcome {
  machine: LabMachine;
  result: BootResult;
  /** The marker line, or why there was none. */
  detail: string;
  /** The Ignition text the guest fetched and printed, if it got that far. */
  ignition: string | undefined;
  timeline: BootTimeline;
  serial: SerialLine[];
  /** The last serial lines, for failure messages. */
  tail: string;
}

export interface BootOptions {
  timeoutMs?: number;
  /** Attach the machine's local disk (an "installed OS" that prints LOCAL_DISK_MARKER). */
  localDisk?: boolean;
  onSerialLine?: (line: SerialLine) => void;
}

export interface Lab {
  directory: string;
  network: LabNetwork;
  machines: LabMachine[];
  baseUrl: string;
  /** rackboot's API (rackboot labs only). */
  api: LabApi | undefined;
  /** Powers the machine on and waits for its outcome; the VM is off when this resolves. */
  boot(machine: LabMachine, options?: BootOptions): Promise<BootOutcome>;
  /** Runs a rackboot CLI verb inside the lab namespace (e.g. reprovision) with the lab's config. */
  rackbootCli(args: readonly string[]): Promise<string>;
  /** PIDs of every process the lab started that still runs (QEMU, servers). */
  livePids(): number[];
  close(): Promise<void>;
}

export const LAB_HTTP_PORT = 8080;
const DEFAULT_BOOT_TIMEOUT_MS = 180_000;
const POWER_OFF_GRACE_MS = 15_000;
const SERVER_READY_LIMIT_MS = 60_000;
const OUTCOME = new RegExp(`${GUEST_MARKERS.result} (installed|failed)|${LOCAL_DISK_MARKER}`);
const IGNITION_BLOCK = new RegExp(
  `${GUEST_MARKERS.ignitionBegin}\\n([\\s\\S]*?)\\n${GUEST_MARKERS.ignitionEnd}`,
);
const LOCAL_DISK_BYTES = 1 << 20;

/**
 * The outcome a marker line (one OUTCOME matched) reports. Read from the word after the result
 * marker, not from anywhere in the line: a failure's reason may itself say "installed" (the guest's
 * `fail "posting installed"` when rackboot refused the event).
 */
export function bootResult(markerLine: string): BootResult {
  if (markerLine.includes(LOCAL_DISK_MARKER)) return 'local-disk';
  return markerLine.includes(`${GUEST_MARKERS.result} installed`) ? 'installed' : 'failed';
}

const moduleFile = fileURLToPath(import.meta.url);
const runningFromSource = moduleFile.endsWith('.ts');
const packageRoot = resolve(dirname(moduleFile), '..', '..');

/** `node` arguments that run one of rackboot's own modules, from source (tests) or from dist. */
function nodeModuleArgs(modulePath: 'cli/main' | 'lab/peer-http-server'): string[] {
  if (!runningFromSource) return [join(packageRoot, 'dist', `${modulePath}.js`)];
  return ['--import', 'tsx', join(packageRoot, 'src', `${modulePath}.ts`)];
}

export async function startLab(options: LabOptions): Promise<Lab> {
  const progress = options.progress ?? (() => undefined);
  const hardLimitSeconds = options.hardLimitSeconds ?? 1200;
  const serverOutput = options.serverOutput ?? (() => undefined);
  const tools = ['ip', 'timeout', 'curl', 'qemu-system-x86_64', 'apt-get', 'dpkg-deb'];
  if (options.routerAdvertisement !== false) tools.push('radvd');
  if (options.server.kind === 'dnsmasq' || options.server.dhcpMode === 'proxy') tools.push('dnsmasq');
  await requireLabTools(tools);
  await requireOvmf(options.machines.map((machine) => machine.firmware));

  const cacheDirectory = options.cacheDirectory ?? defaultLabCacheDirectory();
  const assets = await prepareLabAssets(cacheDirectory, progress);
  const accelerators = await chooseAccelerators(options.accelerator ?? 'auto', cacheDirectory);
  // A kept directory (--keep) is the operator's to inspect: named so that no sweep takes it.
  const directory = options.keepDirectory
    ? await mkdtemp(join(tmpdir(), 'rackboot-lab-kept-'))
    : await ownedTemporaryDirectory(tmpdir(), 'rackboot-lab-');
  const forgetDirectory = onEmergencyCleanup(() => {
    if (!options.keepDirectory) rmSync(directory, { recursive: true, force: true });
  });
  const network = await createLabNetwork(options.subnet).catch(async (error: unknown) => {
    forgetDirectory();
    await rm(directory, { recursive: true, force: true });
    throw error;
  });
  const machines: LabMachine[] = options.machines.map((machine, index) => ({
    hostname: machine.hostname ?? `lab-${index + 1}`,
    mac: labMachineMac(options.subnet, index + 1),
    firmware: machine.firmware,
  }));
  const baseUrl = `http://${network.serverAddress}:${LAB_HTTP_PORT}`;
  const configFile = join(directory, 'rackboot.yaml');
  const apiToken = randomBytes(16).toString('hex');
  const taps = new Map<string, string>();
  const running = new Set<VmRun>();
  let bootCount = 0;

  let closing: Promise<void> | undefined;
  // Idempotent: a test's last step and its teardown may both close the lab.
  const close = () =>
    (closing ??= (async () => {
      await Promise.all([...running].map((vm) => vm.stop()));
      await network.cleanup();
      if (!options.keepDirectory) await rm(directory, { recursive: true, force: true });
      forgetDirectory();
    })());

  try {
    const spawnServer = (where: NamespaceHandle, name: string, command: string, args: string[]) => {
      const child = where.spawn(command, args, { hardLimitSeconds, cwd: packageRoot });
      return watchProcess(child, name, (line) => serverOutput(`${name}: ${line}`));
    };
    if (options.routerAdvertisement !== false) {
      await writeFile(join(directory, 'radvd.conf'), radvdConfig(), { mode: 0o644 });
      const radvd = spawnServer(
        network,
        'radvd',
        'radvd',
        radvdArguments(join(directory, 'radvd.conf'), join(directory, 'radvd.pid')),
      );
      await radvd.waitFor(/started/, 10_000);
    }

    let api: LabApi | undefined;
    if (options.server.kind === 'rackboot') {
      await installBootAssets(assets, join(directory, 'boot-assets'));
      await mkdir(join(directory, 'ignition'));
      await writeFile(join(directory, LAB_IGNITION_TEMPLATE), labIgnitionTemplate());
      await writeFile(
        configFile,
        labRackbootConfig({
          serverAddress: network.serverAddress,
          prefix: network.prefix,
          httpPort: LAB_HTTP_PORT,
          dhcpMode: options.server.dhcpMode,
          apiToken,
          machines,
        }),
      );
      if (options.server.dhcpMode === 'proxy') {
        // The LAN's own DHCP server, on another host: rackboot in proxy mode adds only the boot.
        const lan = network.lanHost;
        const dnsmasq = spawnServer(
          lan,
          'dnsmasq',
          'dnsmasq',
          dnsmasqArguments({
            interface: LAN_HOST_INTERFACE,
            prefix: network.prefix,
            leaseFile: join(directory, 'dnsmasq.leases'),
            role: { kind: 'addresses-only' },
          }),
        );
        await dnsmasq.waitFor(/DHCP, IP range/, 10_000);
      }
      progress(`starting rackboot (${options.server.dhcpMode} DHCP) on ${network.serverAddress}`);
      const rackboot = spawnServer(network, 'rackboot', process.execPath, [
        ...nodeModuleArgs('cli/main'),
        'serve',
        '-c',
        configFile,
      ]);
      api = labApi(network, baseUrl);
      await waitForApi(api, rackboot, SERVER_READY_LIMIT_MS);
    } else {
      const root = join(directory, 'www');
      await installBootAssets(assets, join(root, 'assets'));
      await writeFile(join(root, 'boot.ipxe'), peerBootScript(baseUrl));
      await mkdir(join(root, 'ignition'));
      for (const machine of machines) {
        await writeFile(
          join(root, 'ignition', `${machine.mac}.json`),
          labIgnition(machine.mac, machine.hostname),
        );
      }
      progress(`starting the baseline: dnsmasq + static HTTP on ${network.serverAddress}`);
      const http = spawnServer(network, 'http', process.execPath, [
        ...nodeModuleArgs('lab/peer-http-server'),
        root,
        network.serverAddress,
        String(LAB_HTTP_PORT),
      ]);
      const dnsmasq = spawnServer(
        network,
        'dnsmasq',
        'dnsmasq',
        dnsmasqArguments({
          interface: LAB_BRIDGE,
          prefix: network.prefix,
          leaseFile: join(directory, 'dnsmasq.leases'),
          role: { kind: 'boot-peer', tftpRoot: join(root, 'assets'), httpBase: baseUrl },
        }),
      );
      await http.waitFor(/listening/, SERVER_READY_LIMIT_MS);
      await dnsmasq.waitFor(/DHCP, IP range/, 10_000);
    }

    const machineFiles = async (machine: LabMachine, localDisk: boolean) => {
      const machineDirectory = join(directory, 'vms', machine.hostname);
      await mkdir(machineDirectory, { recursive: true });
      let tap = taps.get(machine.mac);
      if (!tap) {
        tap = await network.addTap();
        taps.set(machine.mac, tap);
      }
      // Like a real machine's NVRAM, the UEFI variable store persists across its boots.
      let ovmfVars: string | undefined;
      if (machine.firmware !== 'bios') {
        ovmfVars = join(machineDirectory, 'OVMF_VARS.fd');
        await copyFile(OVMF_VARS_TEMPLATE, ovmfVars, constants.COPYFILE_EXCL).catch(() => undefined);
      }
      let disk: string | undefined;
      if (localDisk) {
        disk = join(machineDirectory, 'disk.img');
        const image = Buffer.alloc(LOCAL_DISK_BYTES);
        localDiskBootSector().copy(image, 0);
        await writeFile(disk, image, { flag: 'wx' }).catch(() => undefined);
      }
      return { machineDirectory, tap, ovmfVars, disk };
    };

    return {
      directory,
      network,
      machines,
      baseUrl,
      api,
      async boot(machine, bootOptions = {}) {
        const timeoutMs = bootOptions.timeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS;
        const files = await machineFiles(machine, bootOptions.localDisk ?? false);
        bootCount += 1;
        const accelerator = accelerators[firmwareFamily(machine.firmware)];
        progress(`powering on ${machine.hostname} (${machine.mac}, ${machine.firmware}, ${accelerator})`);
        const vm = startVm(
          network,
          {
            name: machine.hostname,
            mac: machine.mac,
            tap: files.tap,
            firmware: machine.firmware,
            accelerator,
            ovmfVars: files.ovmfVars,
            disk: files.disk,
          },
          {
            hardLimitSeconds: timeoutMs / 1000 + 30,
            serialLog: join(files.machineDirectory, `serial-${bootCount}.log`),
            onLine: bootOptions.onSerialLine,
          },
        );
        running.add(vm);
        try {
          let result: BootResult = 'no-result';
          let detail: string;
          try {
            const line = await vm.waitForLine(OUTCOME, timeoutMs);
            detail = line.text;
            result = bootResult(line.text);
            // The guest powers off (or the boot sector ends QEMU) right after its marker.
            await withTimeout(vm.exited, POWER_OFF_GRACE_MS);
          } catch (error) {
            detail = (error as Error).message;
          }
          const serialText = vm.lines.map((line) => line.text).join('\n');
          return {
            machine,
            result,
            detail,
            ignition: IGNITION_BLOCK.exec(serialText)?.[1],
            timeline: bootTimeline(machine.firmware, vm.lines),
            serial: vm.lines,
            tail: vm.tail(),
          };
        } finally {
          await vm.stop();
          running.delete(vm);
        }
      },
      rackbootCli: (args) =>
        network.exec(process.execPath, [...nodeModuleArgs('cli/main'), ...args, '-c', configFile], 60_000),
      livePids: network.livePids,
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}
