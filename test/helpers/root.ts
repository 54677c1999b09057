import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';

/** The service user of the ownership tests. */
export const NOBODY = 65534;

/** Fails the test loudly when not root: CI runs the suite as root, and a skip would hide the check. */
export function requireRoot(why: string): void {
  if (process.getuid?.() !== 0) throw new Error(`this test needs root (${why}); CI runs as root`);
}

/**
 * A directory on its own 64 KiB tmpfs, filled to the last byte, unmounted and removed with the test
 * (outside t.testdir, whose removal would come before the unmount). Returns the directory and the
 * filler file whose removal frees the space.
 */
export function fullTmpfs(t: Test, name: string): { directory: string; filler: string } {
  requireRoot('mounts a tmpfs');
  const parent = mkdtempSync(join(tmpdir(), `rackboot-${name}-`));
  const directory = join(parent, 'full');
  mkdirSync(directory);
  t.teardown(() => rmSync(parent, { recursive: true }));
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', directory], {
    encoding: 'utf8',
  });
  if (mounted.status !== 0) throw new Error(`cannot mount a tmpfs on ${directory}: ${mounted.stderr}`);
  t.teardown(() => {
    spawnSync('umount', [directory]);
  });
  return { directory, filler: join(directory, 'filler') };
}

/** Writes `filler` until its file system is full (64 KiB tmpfs: 16 writes; bounded at 1,000). */
export function fill(filler: string): void {
  const fd = openSync(filler, 'w');
  try {
    for (let written = 0; written < 1000; written++) writeSync(fd, Buffer.alloc(4096, 1));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOSPC') return;
    throw error;
  } finally {
    closeSync(fd);
  }
  throw new Error(`${filler}: 4 MB written and the file system is still not full`);
}

/**
 * Runs `args` with this Node (tsx loaded) as NOBODY; its stdout and stderr. Without tap's
 * NODE_OPTIONS: its process info is written where only root may.
 */
export function asNobody(...args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', ...args], {
    uid: NOBODY,
    gid: NOBODY,
    env: { PATH: process.env.PATH },
    encoding: 'utf8',
    timeout: 60_000,
  });
}

/** asNobody for an ES module given as text; `args` are its process.argv[1…]. */
export function moduleAsNobody(script: string, ...args: string[]) {
  return asNobody('--input-type=module', '-e', script, ...args);
}
