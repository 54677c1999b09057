import { createHash } from 'node:crypto';
import { copyFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { fetchIpxe, missingRequiredIpxe } from '../fetch/ipxe.js';
import { ownedTemporaryDirectory, runCommand } from './command.js';
import { type CpioEntry, writeCpioNewc } from './cpio.js';
import { guestInitScript, jsonCheckAwk, NIC_MODULES, udhcpcScript } from './guest-init.js';

/**
 * Lab assets: a Debian cloud kernel (from the apt archive), the busybox test initramfs built around
 * guest-init.ts, and the system's iPXE binaries. Kernel and initramfs are cached under a directory
 * keyed by versions and content hashes, so a second run prepares nothing.
 */

const BUSYBOX = '/bin/busybox';
const KERNEL_METAPACKAGE = 'linux-image-cloud-amd64';
/** Applets /init and the udhcpc script call by name. */
const BUSYBOX_APPLETS = [
  'sh',
  'mount',
  'dmesg',
  'cat',
  'insmod',
  'sleep',
  'ip',
  'ifconfig',
  'udhcpc',
  'timeout',
  'wget',
  'awk',
  'grep',
  'poweroff',
] as const;

/** File names inside the lab's boot-assets directory (what the profile refers to). */
export const BOOT_ASSET_NAMES = { kernel: 'vmlinuz', initramfs: 'initramfs.img' } as const;

export interface LabAssets {
  /** e.g. `6.1.0-56-cloud-amd64` */
  kernelVersion: string;
  kernel: string;
  initramfs: string;
}

export function defaultLabCacheDirectory(): string {
  return process.getuid?.() === 0 ? '/var/cache/rackboot-lab' : join(tmpdir(), 'rackboot-lab');
}

export async function prepareLabAssets(
  cacheDirectory: string,
  progress: (message: string) => void = () => undefined,
): Promise<LabAssets> {
  await mkdir(cacheDirectory, { recursive: true });
  const kernelVersion = await currentCloudKernelVersion(cacheDirectory);
  const kernelDirectory = await cachedKernel(cacheDirectory, kernelVersion, progress);
  const initramfs = await cachedInitramfs(cacheDirectory, kernelDirectory, kernelVersion, progress);
  return { kernelVersion, kernel: join(kernelDirectory, 'vmlinuz'), initramfs };
}

/**
 * Copies kernel, initramfs and the iPXE binaries into the directory rackboot serves as assets; iPXE
 * the way `rackboot fetch ipxe` does, so the lab boots what an operator's installation would.
 */
export async function installBootAssets(assets: LabAssets, bootAssetsDirectory: string): Promise<void> {
  await mkdir(bootAssetsDirectory, { recursive: true });
  // Copies, not symlinks: the TFTP and HTTP servers refuse links that leave the assets root.
  await copyFile(assets.kernel, join(bootAssetsDirectory, BOOT_ASSET_NAMES.kernel));
  await copyFile(assets.initramfs, join(bootAssetsDirectory, BOOT_ASSET_NAMES.initramfs));
  const missingRequired = missingRequiredIpxe(await fetchIpxe(bootAssetsDirectory));
  if (missingRequired) throw missingRequired;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** The kernel the metapackage points at now; falls back to a cached one when apt knows nothing. */
async function currentCloudKernelVersion(cacheDirectory: string): Promise<string> {
  const query = async () => {
    const output = await runCommand('apt-cache', ['depends', KERNEL_METAPACKAGE]).catch(() => '');
    return /Depends: linux-image-(\S+-cloud-amd64)\b/.exec(output)?.[1];
  };
  const known = (await query()) ?? (await aptGetUpdate().then(query));
  if (known) return known;
  const cached = await readdir(join(cacheDirectory, 'kernel')).catch(() => [] as string[]);
  const newest = cached.sort().at(-1);
  if (newest) return newest;
  throw new Error(`apt knows no ${KERNEL_METAPACKAGE} (is the Debian archive reachable?)`);
}

async function aptGetUpdate(): Promise<void> {
  // Another apt process may hold the lock for a moment (parallel test files); retry, bounded.
  for (let attempt = 1; attempt <= 3; attempt += 1) {
    try {
      await runCommand('apt-get', ['update', '-qq'], { timeoutMs: 180_000 });
      return;
    } catch (error) {
      if (attempt === 3) throw error;
      await new Promise((resolve) => setTimeout(resolve, 5000));
    }
  }
}

/** Builds into a private staging directory and renames it into place, so parallel runs never see half a cache entry. */
async function publishDirectory(staging: string, final: string): Promise<void> {
  try {
    await rename(staging, final);
  } catch (error) {
    if (!(await exists(final))) throw error;
    await rm(staging, { recursive: true, force: true });
  }
}

async function cachedKernel(
  cacheDirectory: string,
  version: string,
  progress: (message: string) => void,
): Promise<string> {
  const final = join(cacheDirectory, 'kernel', version);
  if (await exists(join(final, 'vmlinuz'))) return final;
  await mkdir(join(cacheDirectory, 'kernel'), { recursive: true });
  const work = await ownedTemporaryDirectory(cacheDirectory, 'download-');
  try {
    const packageName = `linux-image-${version}-unsigned`;
    progress(`downloading ${packageName}`);
    const download = () =>
      runCommand('apt-get', ['download', '-qq', packageName], { cwd: work, timeoutMs: 300_000 });
    await download().catch(() => aptGetUpdate().then(download));
    const deb = (await readdir(work)).find((name) => name.endsWith('.deb'));
    if (!deb) throw new Error(`apt-get download ${packageName} produced no .deb`);
    const tree = join(work, 'tree');
    await runCommand('dpkg-deb', ['-x', join(work, deb), tree], { timeoutMs: 120_000 });
    const staging = join(work, 'kernel');
    await mkdir(join(staging, 'modules'), { recursive: true });
    await copyFile(join(tree, 'boot', `vmlinuz-${version}`), join(staging, 'vmlinuz'));
    const moduleFiles = await listFiles(join(tree, 'lib', 'modules', version, 'kernel'));
    for (const module of NIC_MODULES) {
      const source = moduleFiles.find((file) => /\/([^/]+)\.ko(\.xz)?$/.exec(file)?.[1] === module);
      if (!source) throw new Error(`${packageName} has no module ${module}`);
      const target = join(staging, 'modules', `${module}.ko`);
      if (source.endsWith('.xz')) {
        await writeFile(target, await runXzDecompress(source));
      } else {
        await copyFile(source, target);
      }
    }
    await publishDirectory(staging, final);
    return final;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function runXzDecompress(file: string): Promise<Buffer> {
  await runCommand('xz', ['-d', '-k', '-f', file], { timeoutMs: 60_000 });
  return readFile(file.replace(/\.xz$/, ''));
}

async function listFiles(directory: string): Promise<string[]> {
  const entries = await readdir(directory, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => join(entry.parentPath, entry.name));
}

async function cachedInitramfs(
  cacheDirectory: string,
  kernelDirectory: string,
  kernelVersion: string,
  progress: (message: string) => void,
): Promise<string> {
  const busybox = await readFile(BUSYBOX);
  const files: { path: string; data: Buffer; mode: number }[] = [
    { path: 'init', data: Buffer.from(guestInitScript()), mode: 0o755 },
    { path: 'bin/busybox', data: busybox, mode: 0o755 },
    { path: 'bin/udhcpc-script', data: Buffer.from(udhcpcScript()), mode: 0o755 },
    { path: 'bin/json-check.awk', data: Buffer.from(jsonCheckAwk()), mode: 0o644 },
  ];
  for (const module of NIC_MODULES) {
    files.push({
      path: `lib/modules/${module}.ko`,
      data: await readFile(join(kernelDirectory, 'modules', `${module}.ko`)),
      mode: 0o644,
    });
  }
  const hash = createHash('sha256').update(kernelVersion);
  for (const file of files) hash.update(file.path).update(file.data);
  const final = join(cacheDirectory, `initramfs-${hash.digest('hex').slice(0, 16)}.img`);
  if (await exists(final)) return final;

  progress('building the test initramfs');
  const entries: CpioEntry[] = [
    ...['bin', 'dev', 'proc', 'sys', 'tmp', 'lib', 'lib/modules'].map(
      (path): CpioEntry => ({ kind: 'directory', path }),
    ),
    // The kernel opens /dev/console for init before /init can mount devtmpfs.
    { kind: 'character-device', path: 'dev/console', major: 5, minor: 1 },
    ...files.map((file): CpioEntry => ({ kind: 'file', ...file })),
    ...BUSYBOX_APPLETS.map(
      (applet): CpioEntry => ({ kind: 'symlink', path: `bin/${applet}`, target: 'busybox' }),
    ),
  ];
  const staging = `${final}.${process.pid}.tmp`;
  await writeFile(staging, gzipSync(writeCpioNewc(entries)));
  await rename(staging, final);
  return final;
}
