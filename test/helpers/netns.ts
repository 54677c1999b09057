import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCommand } from '../../src/lab/command.js';
import { stopChild } from '../../src/lab/network.js';

/**
 * Private test networks: network namespaces joined by veth pairs or a bridge, with addresses from
 * 10.77.0.0/16 only and no route out. Everything made here is removed by `cleanup()`, also when a
 * test fails; processes are killed by PID, never by name.
 */

/** runCommand (src/lab) with the timeout as a plain argument, as the tests call it. */
export function run(command: string, args: string[], timeoutMs = 30_000): Promise<string> {
  return runCommand(command, args, { timeoutMs });
}

/** Fails loudly (never skips) when the test cannot create namespaces or lacks a tool. */
export async function requireTools(...tools: string[]): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('this test needs root (network namespaces); CI runs as root');
  for (const tool of tools) {
    try {
      await run('sh', ['-c', `command -v ${tool}`]);
    } catch {
      throw new Error(`this test needs \`${tool}\` on PATH: .ci/run installs it (see .ci/apt-packages.txt)`);
    }
  }
}

/** iptables arguments that drop this share of the UDP packets a namespace receives (the kernel has no netem). */
export function randomUdpDrop(probability: number): string[] {
  return [
    '-A',
    'INPUT',
    '-p',
    'udp',
    '-m',
    'statistic',
    '--mode',
    'random',
    '--probability',
    String(probability),
    '-j',
    'DROP',
  ];
}

let sequence = 0;
/** A short unique name (interface names are limited to 15 characters). */
export function uniqueName(prefix: string): string {
  sequence += 1;
  return `${prefix}${process.pid.toString(36)}${sequence.toString(36)}`.slice(0, 15);
}

export interface Namespace {
  name: string;
  /** Runs a command inside the namespace and returns stdout. */
  exec(command: string, args: string[], timeoutMs?: number): Promise<string>;
  /** Starts a long-running process inside the namespace; it is killed by `cleanup()`. */
  spawn(command: string, args: string[], options?: SpawnOptions): ChildProcess;
}

export interface TestNetwork {
  namespace(role: string): Namespace;
  cleanup(): Promise<void>;
}

export interface LinkedPair {
  network: TestNetwork;
  server: Namespace;
  client: Namespace;
  serverAddress: string;
  clientAddress: string;
  /** The interface names inside the namespaces. */
  serverInterface: string;
  clientInterface: string;
}

/** Creates an empty set of namespaces owned by one test; call `cleanup` in `t.teardown`. */
export function createTestNetwork(): TestNetwork & { createNamespace(role: string): Promise<Namespace> } {
  const namespaces = new Map<string, Namespace>();
  const children = new Set<ChildProcess>();

  const makeNamespace = (name: string): Namespace => ({
    name,
    exec: (command, args, timeoutMs) => run('ip', ['netns', 'exec', name, command, ...args], timeoutMs),
    spawn: (command, args, options = {}) => {
      const child = spawn('ip', ['netns', 'exec', name, command, ...args], { stdio: 'pipe', ...options });
      children.add(child);
      child.once('exit', () => children.delete(child));
      return child;
    },
  });

  return {
    async createNamespace(role: string) {
      const name = uniqueName(`rb${role.slice(0, 4)}`);
      await run('ip', ['netns', 'add', name]);
      const namespace = makeNamespace(name);
      namespaces.set(role, namespace);
      await namespace.exec('ip', ['link', 'set', 'lo', 'up']);
      return namespace;
    },
    namespace(role: string) {
      const found = namespaces.get(role);
      if (!found) throw new Error(`no namespace for role ${role}`);
      return found;
    },
    async cleanup() {
      await Promise.all([...children].map((child) => stopChild(child)));
      for (const namespace of namespaces.values()) {
        // Deleting the namespace also removes the veth ends and bridges inside it.
        await run('ip', ['netns', 'del', namespace.name]).catch(() => undefined);
      }
      namespaces.clear();
    },
  };
}

/**
 * Two namespaces joined by a veth pair on 10.77.<subnet>.0/24: server .1, client .2.
 * Each test file uses its own subnet number so files can run in parallel.
 */
export async function createLinkedPair(subnet: number): Promise<LinkedPair> {
  if (!Number.isInteger(subnet) || subnet < 0 || subnet > 255) throw new Error(`bad subnet ${subnet}`);
  const network = createTestNetwork();
  try {
    const server = await network.createNamespace('server');
    const client = await network.createNamespace('client');
    const serverInterface = 'rbsrv0';
    const clientInterface = 'rbcli0';
    const hostSide = uniqueName('rbv');
    const peerSide = uniqueName('rbp');
    await run('ip', ['link', 'add', hostSide, 'type', 'veth', 'peer', 'name', peerSide]);
    await run('ip', ['link', 'set', hostSide, 'netns', server.name]);
    await run('ip', ['link', 'set', peerSide, 'netns', client.name]);
    await server.exec('ip', ['link', 'set', hostSide, 'name', serverInterface]);
    await client.exec('ip', ['link', 'set', peerSide, 'name', clientInterface]);
    const serverAddress = `10.77.${subnet}.1`;
    const clientAddress = `10.77.${subnet}.2`;
    await server.exec('ip', ['addr', 'add', `${serverAddress}/24`, 'dev', serverInterface]);
    await client.exec('ip', ['addr', 'add', `${clientAddress}/24`, 'dev', clientInterface]);
    await server.exec('ip', ['link', 'set', serverInterface, 'up']);
    await client.exec('ip', ['link', 'set', clientInterface, 'up']);
    return { network, server, client, serverAddress, clientAddress, serverInterface, clientInterface };
  } catch (error) {
    await network.cleanup();
    throw error;
  }
}

export interface RoutedPair {
  pair: LinkedPair;
  /** Scratch directory (configs, state); removed by `cleanup`. */
  directory: string;
  /** Removes the namespaces, their processes and the directory. */
  cleanup(): Promise<void>;
}

/**
 * A linked pair whose client routes everything out through its veth, so that DHCP clients there
 * reach the limited broadcast and a server's whole pool (a route inside the test's own namespace),
 * plus a scratch directory named `rackboot-<scratchName>-…`.
 */
export async function createRoutedPair(subnet: number, scratchName: string): Promise<RoutedPair> {
  const pair = await createLinkedPair(subnet);
  const directory = await mkdtemp(join(tmpdir(), `rackboot-${scratchName}-`)).catch(async (error) => {
    await pair.network.cleanup();
    throw error;
  });
  const cleanup = async () => {
    await pair.network.cleanup();
    await rm(directory, { recursive: true, force: true });
  };
  try {
    await pair.client.exec('ip', ['route', 'add', 'default', 'dev', pair.clientInterface]);
  } catch (error) {
    await cleanup();
    throw error;
  }
  return { pair, directory, cleanup };
}

/** Resolves when `predicate` is true for a line of the child's stdout or stderr; bounded by `timeoutMs`. */
export function waitForOutput(child: ChildProcess, predicate: (line: string) => boolean, timeoutMs: number) {
  return new Promise<string>((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(() => {
      finish();
      reject(new Error(`no matching output within ${timeoutMs} ms; last output:\n${buffered.slice(-2000)}`));
    }, timeoutMs);
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split('\n');
      for (const line of lines) {
        if (predicate(line)) {
          finish();
          resolve(line);
          return;
        }
      }
    };
    const onExit = (code: number | null) => {
      finish();
      reject(new Error(`process exited (${code}) before the expected output:\n${buffered.slice(-2000)}`));
    };
    const finish = () => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
  });
}
