import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const KILL_GRACE_SECONDS = 5;

/**
 * Arguments for coreutils `timeout` that run `command` for at most `hardLimitSeconds` (then
 * SIGTERM, SIGKILL after a grace period): the bound holds even if the harness is SIGKILLed.
 * `timeout` leads its own process group, so signalling -PID reaches the command too.
 */
export function timeoutArguments(
  hardLimitSeconds: number,
  command: string,
  args: readonly string[],
): string[] {
  return ['-k', String(KILL_GRACE_SECONDS), String(Math.ceil(hardLimitSeconds)), command, ...args];
}

/** Runs a command to completion, bounded in time; the error names the command and its stderr. */
export async function runCommand(
  command: string,
  args: readonly string[],
  options: { timeoutMs?: number; cwd?: string } = {},
): Promise<string> {
  try {
    const { stdout } = await execFileAsync(command, [...args], {
      timeout: options.timeoutMs ?? 30_000,
      cwd: options.cwd,
      maxBuffer: 64 << 20,
    });
    return stdout;
  } catch (error) {
    const failure = error as { stderr?: string; message: string };
    throw new Error(`${command} ${args.join(' ')} failed: ${failure.stderr?.trim() || failure.message}`);
  }
}

/**
 * The Debian package of each tool the lab runs. The error names them: an installed rackboot does
 * not ship the repository's .ci/apt-packages.txt.
 */
const TOOL_PACKAGES: Record<string, string> = {
  ip: 'iproute2',
  timeout: 'coreutils',
  curl: 'curl',
  'qemu-system-x86_64': 'qemu-system-x86',
  'apt-get': 'apt',
  'dpkg-deb': 'dpkg',
  radvd: 'radvd',
  dnsmasq: 'dnsmasq-base',
};

/** Fails with the reason (never skips) when a tool the lab needs is missing. */
export async function requireLabTools(tools: readonly string[]): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new Error('the lab needs root (network namespaces, tap devices)');
  }
  const missing: string[] = [];
  for (const tool of tools) {
    await runCommand('sh', ['-c', `command -v ${tool}`]).catch(() => missing.push(tool));
  }
  if (missing.length > 0) {
    const packages = [...new Set(missing.map((tool) => TOOL_PACKAGES[tool] ?? tool))];
    throw new Error(`the lab needs ${missing.join(', ')} on PATH (Debian packages: ${packages.join(' ')})`);
  }
}

/** Whether a process exists (signal 0 checks without sending anything); the lab sweep and src/file-lock.ts use it. */
export function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A new directory `<parent>/<prefix><pid>-XXXXXX`, made after removing the ones of this prefix whose
 * process no longer runs (removeOrphans): a lab killed with SIGKILL, or stopped by Ctrl-C in a
 * download, leaves its directory behind, and the next run sweeps it.
 */
export async function ownedTemporaryDirectory(parent: string, prefix: string): Promise<string> {
  await removeOrphans(parent, prefix);
  return mkdtemp(join(parent, `${prefix}${process.pid}-`));
}

/**
 * Removes the entries of `parent` named `<prefix><pid>-…` whose owner, the PID in the name, is not
 * `alive` (by default: no longer runs). A PID reused by another process keeps its entry until that
 * process ends too (a late sweep, never the removal of a live run's entry). A directory that cannot
 * be listed keeps its entries: the sweep is a courtesy, not what the caller came for.
 */
export async function removeOrphans(
  parent: string,
  prefix: string,
  alive: (pid: number) => boolean = isRunning,
): Promise<void> {
  for (const name of await readdir(parent).catch(() => [] as string[])) {
    if (!name.startsWith(prefix)) continue;
    const owner = /^(\d+)-/.exec(name.slice(prefix.length))?.[1];
    if (owner && !alive(Number(owner))) await rm(join(parent, name), { recursive: true, force: true });
  }
}
