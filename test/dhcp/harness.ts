import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { DhcpPacket } from '../../src/dhcp/packet.js';
import { decodeDhcpPacket } from '../../src/dhcp/packet.js';
import type { DhcpStats } from '../../src/dhcp/server.js';
import type { MachineEventInput } from '../../src/lifecycle/events.js';
import { type Namespace, waitForOutput } from '../helpers/netns.js';

/** Starts test/dhcp/launch.ts and test/dhcp/probe.ts inside namespaces and talks to them. */

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const LAUNCH = fileURLToPath(new URL('./launch.ts', import.meta.url));
const PROBE = fileURLToPath(new URL('./probe.ts', import.meta.url));

/**
 * Resolves with the first complete stdout line matching `predicate` (waitForOutput may match a
 * partial line, which breaks long JSON lines); bounded by `timeoutMs`.
 */
export function waitForLine(child: ChildProcess, predicate: (line: string) => boolean, timeoutMs: number) {
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no matching line within ${timeoutMs} ms`)), timeoutMs);
    onLines(child, (line) => {
      if (!predicate(line)) return;
      clearTimeout(timer);
      resolve(line);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`process exited (${code}) before the expected line`));
    });
  });
}

/** Calls `handle` with each complete stdout line of `child`. */
export function onLines(child: ChildProcess, handle: (line: string) => void): void {
  let buffered = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) handle(line);
  });
}

export interface RunningDhcp {
  child: ChildProcess;
  events: MachineEventInput[];
  /** The last 4,000 characters the server wrote to stderr. */
  stderr(): string;
  stats(): Promise<DhcpStats>;
  /** The server's macForIp: the MAC an HTTP request from `ip` is taken to come from, or null. */
  macForIp(ip: string): Promise<string | null>;
  /** Waits until an event matching `predicate` was recorded. */
  event(predicate: (event: MachineEventInput) => boolean, timeoutMs?: number): Promise<MachineEventInput>;
}

/** `flags`: launch.ts flags besides --events; `env`: added to this process's environment. */
export async function launchDhcp(
  namespace: Namespace,
  configFile: string,
  flags: string[] = [],
  env: Record<string, string> = {},
): Promise<RunningDhcp> {
  const child = namespace.spawn(
    process.execPath,
    ['--import', 'tsx', LAUNCH, configFile, '--events', ...flags],
    { cwd: REPO_ROOT, env: { ...process.env, ...env } },
  );
  const events: MachineEventInput[] = [];
  /** Answers to stdin commands, by the prefix of their line, oldest question first. */
  const answerWaiters = new Map<string, ((json: string) => void)[]>();
  const eventWaiters = new Set<() => void>();
  onLines(child, (line) => {
    if (line.startsWith('EVENT ')) {
      events.push(JSON.parse(line.slice(6)) as MachineEventInput);
      for (const wake of eventWaiters) wake();
    } else {
      const prefix = line.split(' ')[0] ?? '';
      answerWaiters.get(prefix)?.shift()?.(line.slice(prefix.length + 1));
    }
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  await waitForOutput(child, (line) => line === 'READY', 30_000);
  const ask = <T>(command: string, answerPrefix: string) =>
    new Promise<T>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no answer to ${command} from the server; stderr: ${stderr}`)),
        5000,
      );
      const waiters = answerWaiters.get(answerPrefix) ?? [];
      waiters.push((json) => {
        clearTimeout(timer);
        resolve(JSON.parse(json) as T);
      });
      answerWaiters.set(answerPrefix, waiters);
      child.stdin?.write(`${command}\n`);
    });
  return {
    child,
    events,
    stderr: () => stderr,
    stats: () => ask<DhcpStats>('stats', 'STATS'),
    macForIp: (ip) => ask<string | null>(`mac-for ${ip}`, 'MAC-FOR'),
    event: (predicate, timeoutMs = 10_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const found = events.find(predicate);
          if (!found) return false;
          finish();
          resolve(found);
          return true;
        };
        const timer = setTimeout(() => {
          finish();
          reject(
            new Error(
              `no matching event within ${timeoutMs} ms; events: ${JSON.stringify(events.slice(-5))}`,
            ),
          );
        }, timeoutMs);
        const finish = () => {
          clearTimeout(timer);
          eventWaiters.delete(wake);
        };
        const wake = () => {
          check();
        };
        if (!check()) eventWaiters.add(wake);
      }),
  };
}

export interface Received {
  packet: DhcpPacket;
  from: string;
  port: number;
}

export interface Probe {
  send(bytes: Buffer, to: string, port: number): void;
  /** The next received datagram that decodes and matches; bounded by `timeoutMs`. */
  next(predicate: (received: Received) => boolean, timeoutMs?: number): Promise<Received>;
  /** Datagrams received so far. */
  received: Received[];
}

/** A raw DHCP peer bound to `bind` (e.g. `0.0.0.0:68` as a client, `10.77.2.2:67` as a relay). */
export async function startProbe(namespace: Namespace, bind: string): Promise<Probe> {
  const child = namespace.spawn(process.execPath, ['--import', 'tsx', PROBE, bind], { cwd: REPO_ROOT });
  const received: Received[] = [];
  const waiters = new Set<(received: Received) => void>();
  onLines(child, (line) => {
    if (!line.startsWith('{')) return;
    const { from, port, hex } = JSON.parse(line) as { from: string; port: number; hex: string };
    const decoded = decodeDhcpPacket(Buffer.from(hex, 'hex'));
    if (!decoded.ok) return;
    const entry = { packet: decoded.packet, from, port };
    received.push(entry);
    for (const waiter of waiters) waiter(entry);
  });
  await waitForOutput(child, (line) => line === 'READY', 30_000);
  return {
    received,
    send(bytes, to, port) {
      child.stdin?.write(`${JSON.stringify({ to, port, hex: bytes.toString('hex') })}\n`);
    },
    next(predicate, timeoutMs = 5000) {
      return new Promise((resolve, reject) => {
        const waiter = (entry: Received) => {
          if (!predicate(entry)) return;
          finish();
          resolve(entry);
        };
        const timer = setTimeout(() => {
          finish();
          reject(new Error(`no matching DHCP reply within ${timeoutMs} ms (${received.length} received)`));
        }, timeoutMs);
        const finish = () => {
          clearTimeout(timer);
          waiters.delete(waiter);
        };
        waiters.add(waiter);
      });
    },
  };
}
