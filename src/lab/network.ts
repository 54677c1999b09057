import { type ChildProcess, execFileSync, type SpawnOptions, spawn } from 'node:child_process';
import { isRunning, runCommand, timeoutArguments } from './command.js';

/**
 * The lab's private network: one namespace holding a bridge on 10.77.<subnet>.0/24 with rackboot's
 * address (.1), a veth port (so the bridge has carrier and an IPv6 link-local address before any
 * VM starts), and one tap per VM. Nothing routes out of the namespace. Every process started here
 * runs under coreutils `timeout`, so it ends at its hard limit even if this Node process is killed
 * before it can clean up; `cleanup()` ends processes by PID and deletes the namespace (which takes
 * the bridge and taps with it).
 */

export const LAB_NAMESPACE_PREFIX = 'rblab-';
export const LAB_BRIDGE = 'rblab0';
const CARRIER_PORT = 'rblabport0';
const CARRIER_PEER = 'rblabpeer0';
/** The interface of the LAN host namespace (the far end of the carrier veth). */
export const LAN_HOST_INTERFACE = 'lan0';

export interface LabProcessOptions extends SpawnOptions {
  /** Hard limit after which `timeout` ends the process whatever happens to the harness. */
  hardLimitSeconds: number;
}

export interface NamespaceHandle {
  namespace: string;
  /** This namespace's address on the lab LAN. */
  address: string;
  /** Runs a command inside the namespace to completion. */
  exec(command: string, args: readonly string[], timeoutMs?: number): Promise<string>;
  /** Starts a long-running process inside the namespace; cleanup() ends it. */
  spawn(command: string, args: readonly string[], options: LabProcessOptions): ChildProcess;
}

export interface LabNetwork extends NamespaceHandle {
  subnet: number;
  /** rackboot's address on the bridge: 10.77.<subnet>.1 */
  serverAddress: string;
  /** 10.77.<subnet> */
  prefix: string;
  /** Creates a tap device attached to the bridge and returns its name. */
  addTap(): Promise<string>;
  /**
   * A second host on the same LAN (10.77.<subnet>.2, interface lan0), in its own namespace: the
   * place for the LAN's own DHCP server in proxy mode, which must not share rackboot's port 67.
   */
  lanHost: NamespaceHandle;
  /** PIDs of the processes this lab started that are still running. */
  livePids(): number[];
  cleanup(): Promise<void>;
}

const activeLabs = new Set<{ namespaces: string[]; pids: () => number[] }>();

const emergencyHooks = new Set<() => void>();

/**
 * Adds a synchronous step to the last-resort cleanup (e.g. removing a lab's scratch directory, or
 * ending the KVM probe that runs before any network exists); returns the function that takes it
 * out again once the lab closed normally.
 */
export function onEmergencyCleanup(hook: () => void): () => void {
  installExitHooks();
  emergencyHooks.add(hook);
  return () => emergencyHooks.delete(hook);
}

/**
 * Last-resort cleanup when the harness process is being torn down (signal, or tap's test timeout):
 * synchronous, so it finishes before the process dies. The `timeout` wrappers and what they run
 * are all inside the lab namespaces, so the namespace's own PID list is the complete set; if that
 * listing fails (the signal that ends us may also hit our children), SIGTERM goes to the wrappers,
 * which pass it on to QEMU and the servers.
 */
function cleanupActiveLabsNow(): void {
  for (const hook of emergencyHooks) hook();
  emergencyHooks.clear();
  for (const lab of activeLabs) {
    for (const namespace of lab.namespaces) {
      try {
        killAll(parsePids(execFileSync('ip', ['netns', 'pids', namespace], { timeout: 5000 }).toString()));
      } catch {
        killAll(lab.pids(), 'SIGTERM');
      }
      try {
        execFileSync('ip', ['netns', 'del', namespace], { stdio: 'ignore', timeout: 5000 });
      } catch {
        // already gone
      }
    }
  }
  activeLabs.clear();
}

function parsePids(listing: string): number[] {
  return listing
    .split('\n')
    .filter((line) => /^\d+$/.test(line.trim()))
    .map(Number);
}

function killAll(pids: readonly number[], signal: NodeJS.Signals = 'SIGKILL'): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/**
 * Every process inside a lab namespace was started by that lab (QEMU, rackboot, radvd, dnsmasq);
 * the ones a SIGKILLed `timeout` wrapper left behind are found here and ended by PID.
 */
async function killNamespaceProcesses(namespace: string): Promise<void> {
  killAll(parsePids(await runCommand('ip', ['netns', 'pids', namespace]).catch(() => '')));
}

let exitHooksInstalled = false;
function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.on('exit', cleanupActiveLabsNow);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = () => {
      cleanupActiveLabsNow();
      process.removeListener(signal, onSignal);
      // Raise it again: with no listener left the default action ends the process; a handler that
      // stays (tap's signal-exit defers while other listeners exist) now sees only itself and exits.
      process.kill(process.pid, signal);
    };
    process.on(signal, onSignal);
  }
}

/**
 * Removes namespaces left by a lab whose process died without cleaning up (SIGKILL): the owner PID
 * is part of the name, so only namespaces of dead harness processes are touched.
 */
export async function removeStaleLabNamespaces(): Promise<string[]> {
  const listing = await runCommand('ip', ['netns', 'list']);
  const removed: string[] = [];
  for (const line of listing.split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const owner = new RegExp(`^${LAB_NAMESPACE_PREFIX}(\\d+)-\\d+(-lan)?$`).exec(name)?.[1];
    if (!owner || isRunning(Number(owner))) continue;
    await killNamespaceProcesses(name);
    await runCommand('ip', ['netns', 'del', name]).catch(() => undefined);
    removed.push(name);
  }
  return removed;
}

function namespaceHandle(namespace: string, address: string, children: Set<ChildProcess>): NamespaceHandle {
  return {
    namespace,
    address,
    exec: (command, args, timeoutMs) =>
      runCommand('ip', ['netns', 'exec', namespace, command, ...args], { timeoutMs }),
    spawn(command, args, options) {
      const { hardLimitSeconds, ...spawnOptions } = options;
      const limited = timeoutArguments(hardLimitSeconds, command, args);
      const child = spawn('ip', ['netns', 'exec', namespace, 'timeout', ...limited], {
        stdio: 'pipe',
        ...spawnOptions,
      });
      children.add(child);
      child.once('exit', () => children.delete(child));
      // A failed spawn is reported through 'exit'/'error' to whoever waits on the child.
      child.on('error', () => children.delete(child));
      return child;
    },
  };
}

export async function createLabNetwork(subnet: number): Promise<LabNetwork> {
  if (!Number.isInteger(subnet) || subnet < 0 || subnet > 255) throw new Error(`bad lab subnet ${subnet}`);
  installExitHooks();
  await removeStaleLabNamespaces();
  const namespace = `${LAB_NAMESPACE_PREFIX}${process.pid}-${subnet}`;
  const prefix = `10.77.${subnet}`;
  const serverAddress = `${prefix}.1`;
  const children = new Set<ChildProcess>();
  const lanNamespace = `${namespace}-lan`;
  const namespaces = [namespace, lanNamespace];
  let tapCount = 0;
  const livePids = () =>
    [...children].flatMap((child) =>
      child.pid !== undefined && child.exitCode === null && child.signalCode === null ? [child.pid] : [],
    );
  const registration = { namespaces, pids: livePids };
  const main = namespaceHandle(namespace, serverAddress, children);
  const lanHost = namespaceHandle(lanNamespace, `${prefix}.2`, children);
  const inNamespace = (name: string, ...args: string[]) => runCommand('ip', ['-n', name, ...args]);
  const removeAll = async () => {
    for (const name of namespaces) {
      await killNamespaceProcesses(name);
      // Deleting a namespace also removes the bridge, taps and veths inside it.
      await runCommand('ip', ['netns', 'del', name]).catch(() => undefined);
    }
  };

  activeLabs.add(registration);
  try {
    await runCommand('ip', ['netns', 'add', namespace]);
    await runCommand('ip', ['netns', 'add', lanNamespace]);
    await inNamespace(namespace, 'link', 'set', 'lo', 'up');
    await inNamespace(lanNamespace, 'link', 'set', 'lo', 'up');
    // No DAD: the bridge's link-local address is usable at once, so radvd can start immediately.
    // Forwarding on (inside this namespace only) because radvd refuses to advertise without it.
    await main.exec('sysctl', [
      '-qw',
      'net.ipv6.conf.default.accept_dad=0',
      'net.ipv6.conf.all.accept_dad=0',
      'net.ipv6.conf.all.forwarding=1',
    ]);
    await inNamespace(namespace, 'link', 'add', LAB_BRIDGE, 'type', 'bridge', 'forward_delay', '0');
    // A veth pair from the bridge to the LAN host gives the bridge carrier before any VM starts
    // (the dummy driver is not in every kernel). Its far end must leave rackboot's namespace: a
    // second interface on the same segment there would hand every broadcast to rackboot twice.
    await inNamespace(namespace, 'link', 'add', CARRIER_PORT, 'type', 'veth', 'peer', 'name', CARRIER_PEER);
    await inNamespace(namespace, 'link', 'set', CARRIER_PEER, 'netns', lanNamespace);
    await inNamespace(lanNamespace, 'link', 'set', CARRIER_PEER, 'name', LAN_HOST_INTERFACE);
    await inNamespace(lanNamespace, 'addr', 'add', `${prefix}.2/24`, 'dev', LAN_HOST_INTERFACE);
    await inNamespace(lanNamespace, 'link', 'set', LAN_HOST_INTERFACE, 'up');
    await inNamespace(namespace, 'link', 'set', CARRIER_PORT, 'master', LAB_BRIDGE, 'up');
    await inNamespace(namespace, 'addr', 'add', `${serverAddress}/24`, 'dev', LAB_BRIDGE);
    await inNamespace(namespace, 'link', 'set', LAB_BRIDGE, 'up');
  } catch (error) {
    await removeAll();
    activeLabs.delete(registration);
    throw error;
  }

  return {
    ...main,
    subnet,
    serverAddress,
    prefix,
    async addTap() {
      tapCount += 1;
      const tap = `rbtap${tapCount}`;
      await inNamespace(namespace, 'tuntap', 'add', 'dev', tap, 'mode', 'tap');
      await inNamespace(namespace, 'link', 'set', tap, 'master', LAB_BRIDGE, 'up');
      return tap;
    },
    lanHost,
    livePids,
    async cleanup() {
      await Promise.all([...children].map((child) => stopChild(child)));
      await removeAll();
      activeLabs.delete(registration);
    },
  };
}

/** SIGTERM, then SIGKILL after a grace period; resolves when the process is gone. */
export function stopChild(child: ChildProcess, graceMs = 3000): Promise<void> {
  return new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return resolve();
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}
