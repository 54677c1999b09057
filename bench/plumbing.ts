/**
 * Start-up plumbing the benches share: where the repository is, their `--name value` options, and
 * for the benches that run in network namespaces the linked pair and scratch directory, removed
 * also on Ctrl-C.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cp, readFile, rm } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { DoraOptions, DoraResult } from '../test/dhcp/dora-client.js';
import { waitForLine } from '../test/dhcp/harness.js';
import { createRoutedPair, type Namespace, type RoutedPair } from '../test/helpers/netns.js';

export const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));

/**
 * The V8 flags the rackboot executable runs with, read from bin/rackboot.js's `#!/usr/bin/env -S
 * node …` line, so a bench launching its own server script measures the same runtime as
 * `npx rackboot serve`.
 */
const SERVER_NODE_FLAGS: string[] = (() => {
  const shebang = readFileSync(join(REPO_ROOT, 'bin', 'rackboot.js'), 'utf8').split('\n')[0] ?? '';
  const match = /^#!\/usr\/bin\/env -S node((?: --[\w-]+(?:=\S+)?)*)$/.exec(shebang);
  if (!match) throw new Error(`bin/rackboot.js starts with an unexpected line: ${shebang}`);
  return (match[1] ?? '').split(' ').filter(Boolean);
})();

/**
 * Node options for a measured server process: the executable's flags and, given a directory
 * (RACKBOOT_BENCH_PROFILE=DIR by default), a CPU profile of its main thread written there when it
 * exits.
 */
export function serverNodeOptions(profileDirectory = process.env.RACKBOOT_BENCH_PROFILE): string[] {
  return [
    ...SERVER_NODE_FLAGS,
    ...(profileDirectory ? ['--cpu-prof', '--cpu-prof-dir', profileDirectory] : []),
  ];
}

const COMPILED_DIRECTORY = join(REPO_ROOT, '.scratch', 'bench-build');
let compiled: Promise<void> | undefined;

/**
 * The compiled JavaScript of a TypeScript entry point of the repository (a server launcher, a load
 * client), so the measured processes run the way `npx rackboot serve` runs from dist/: no loader
 * hooks, no esbuild `__name` wrappers. (Measured on the DHCP bench: 265–280 µs of server CPU per
 * DORA compiled against 240–295 through tsx, so within the host's noise, but the figures are now of
 * the code operators run.) Compiles src/, test/ and bench/ once per bench process into
 * .scratch/bench-build (git-ignored), with the dashboard's static files beside them.
 */
export async function compiledScript(sourceFile: string): Promise<string> {
  compiled ??= (async () => {
    await rm(COMPILED_DIRECTORY, { recursive: true, force: true });
    await promisify(execFile)(
      'npx',
      ['tsc', '-p', 'tsconfig.json', '--outDir', COMPILED_DIRECTORY, '--sourceMap', 'false'],
      { cwd: REPO_ROOT, timeout: 300_000 },
    );
    const dashboard = join('src', 'http', 'dashboard');
    await cp(join(REPO_ROOT, dashboard), join(COMPILED_DIRECTORY, dashboard), {
      recursive: true,
      filter: (path) => !path.endsWith('.ts'),
    });
  })();
  await compiled;
  const source = relative(REPO_ROOT, sourceFile);
  return join(COMPILED_DIRECTORY, source.replace(/\.ts$/, '.js'));
}

const DORA_CLIENT = join(REPO_ROOT, 'test', 'dhcp', 'dora-client.ts');

/**
 * Starts the DHCP load client (test/dhcp/dora-client.ts, compiled) in `namespace`: `warmed` once its
 * unmeasured warm-up clients are done (bench/dhcp reads the server's CPU time then), `result` at
 * the end. Both are bounded by the deadlines in `options`.
 */
export async function startDoraLoad(namespace: Namespace, options: DoraOptions) {
  const child = namespace.spawn(
    process.execPath,
    [await compiledScript(DORA_CLIENT), JSON.stringify(options)],
    {
      cwd: REPO_ROOT,
    },
  );
  const timeoutMs = (options.warmupDeadlineMs ?? 0) + options.deadlineMs + 30_000;
  const warmed = waitForLine(child, (line) => line === 'WARMED', timeoutMs);
  // A client that dies before warming up fails `result` too, which every caller awaits.
  warmed.catch(() => {});
  return {
    warmed,
    result: waitForLine(child, (line) => line.startsWith('RESULT '), timeoutMs).then(
      (line) => JSON.parse(line.slice('RESULT '.length)) as DoraResult,
    ),
  };
}

/** The value after `--name` on the command line, or undefined when the option is not given. */
export function textOption(name: string): string | undefined {
  const index = process.argv.indexOf(`--${name}`);
  return index === -1 ? undefined : process.argv[index + 1];
}

/** The number after `--name` on the command line, or `fallback` when the option is not given. */
export function numberOption(name: string, fallback: number): number {
  const text = textOption(name);
  return text === undefined ? fallback : Number(text);
}

/** The namespace pair and scratch directory of a bench, removed also when it is stopped with Ctrl-C. */
export async function startNamespaceBench(subnet: number, name: string): Promise<RoutedPair> {
  const bench = await createRoutedPair(subnet, `bench-${name}`);
  process.on('SIGINT', () => {
    bench.cleanup().finally(() => process.exit(130));
  });
  return bench;
}

/**
 * CPU time of a process in ms, all its threads (/proc/PID/stat utime + stime, in 10 ms ticks); with
 * `mainThreadOnly`, of its main thread alone (/proc/PID/task/PID/stat).
 */
export async function cpuTimeMs(pid: number | undefined, mainThreadOnly = false): Promise<number> {
  const stat = await readFile(mainThreadOnly ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** The middle value (the mean of the two middle ones for an even count); undefined for none. */
export function median(values: number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}
