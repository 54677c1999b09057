import { closeSync, constants, existsSync, openSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { type Arch, BIOS_BOOT_PROGRAM } from '../boot-plan.js';
import {
  isInsideRoot,
  MANIFEST_PATH,
  type Manifest,
  type ManifestEntry,
  parseManifest,
  type Stream,
} from '../fetch/manifest.js';
import type { Config, ProfileConfig } from './schema.js';

/** What a profile boots on one architecture. Each value is a path under server.assets or an http(s) URL. */
export interface ProfileAssets {
  kernel: string;
  initrd: string[];
  rootfs: string | undefined;
}

/** One asset that is not on disk; `field` is the key path that names it. */
export interface MissingAsset {
  /** Inside a profile (`kernel`, `initrd.1`, `arch.aarch64.rootfs`, `coreos.stream`), or in the config (`dhcp.mode`). */
  field: string;
  /** Absolute path that was looked for. */
  path: string;
  message: string;
}

/**
 * Keys of `profile.arch` and of the manifest tried for a booting architecture, most specific first.
 * BIOS iPXE (undionly.kpxe) is a 32-bit build and reports i386 even on 64-bit CPUs, and Fedora
 * CoreOS has no i386 build, so i386 falls back to x86_64. `unknown` (no arch reported, e.g.
 * `render ipxe` without --arch) means the common case, x86_64.
 */
function archKeys(arch: Arch): string[] {
  switch (arch) {
    case 'i386':
      return ['i386', 'x86_64'];
    case 'unknown':
      return ['x86_64'];
    default:
      return [arch];
  }
}

/**
 * Kernel, initrds and rootfs of a profile for one architecture. Each field resolves on its own:
 * the per-arch override, then the profile's own value, then (when `coreos.stream` is set) the
 * manifest `rackboot fetch coreos` wrote under `assetsRoot`. The manifest is re-read when its file
 * changes, so `fetch` followed by a config hot reload boots the new release.
 */
export function profileAssets(
  profile: ProfileConfig,
  arch: Arch,
  assetsRoot: string,
): ProfileAssets | { error: string } {
  const keys = archKeys(arch);
  const override = keys.map((key) => profile.arch?.[key]).find((entry) => entry !== undefined);
  let kernel = override?.kernel ?? profile.kernel;
  let initrd = override?.initrd ?? profile.initrd;
  let rootfs = override?.rootfs ?? profile.rootfs;
  const stream = profile.coreos?.stream;
  if (stream && (kernel === undefined || initrd === undefined || rootfs === undefined)) {
    const entry = streamEntry(assetsRoot, stream, keys);
    if ('error' in entry) return entry;
    kernel ??= entry.kernel.path;
    initrd ??= [entry.initramfs.path];
    rootfs ??= entry.rootfs.path;
  }
  if (kernel === undefined) {
    return {
      error: `no kernel for ${keys.at(-1)}: set kernel, arch.${keys.at(-1)}.kernel, or coreos.stream`,
    };
  }
  if (profile.kind === 'coreos-install' && (initrd === undefined || initrd.length === 0)) {
    return {
      error: `no initramfs for ${keys.at(-1)}: set initrd, arch.${keys.at(-1)}.initrd, or coreos.stream`,
    };
  }
  return { kernel, initrd: initrd ?? [], rootfs };
}

/**
 * Local files a profile names that do not exist, for every architecture it covers: its own paths,
 * each `arch.*` override, and, when `coreos.stream` supplies anything, the manifest and the files
 * it lists. URLs are not checked (no network at load time).
 */
export function missingAssets(profile: ProfileConfig, assetsRoot: string): MissingAsset[] {
  const missing: MissingAsset[] = [];
  const check = (field: string, value: string | undefined) => {
    if (value === undefined || isUrl(value)) return;
    const path = join(assetsRoot, value);
    if (!isInsideRoot(value)) {
      missing.push({ field, path, message: `${value} is outside the assets directory ${assetsRoot}` });
    } else if (!existsSync(path)) {
      missing.push({ field, path, message: `${value} not found under ${assetsRoot}` });
    } else if (!statSync(path).isFile()) {
      // A directory exists, but HTTP and TFTP serve it as nothing a machine can boot.
      missing.push({ field, path, message: `${value} under ${assetsRoot} is not a file (a directory?)` });
    } else if (!isReadable(path)) {
      missing.push({ field, path, message: `${value} under ${assetsRoot} ${UNREADABLE}` });
    }
  };
  const checkSet = (prefix: string, set: { kernel?: string; initrd?: string[]; rootfs?: string }) => {
    check(`${prefix}kernel`, set.kernel);
    for (const [index, initrd] of (set.initrd ?? []).entries()) check(`${prefix}initrd.${index}`, initrd);
    check(`${prefix}rootfs`, set.rootfs);
  };
  checkSet('', profile);
  for (const [arch, set] of Object.entries(profile.arch ?? {})) checkSet(`arch.${arch}.`, set);

  const stream = profile.coreos?.stream;
  const needsManifest =
    profile.kernel === undefined || profile.initrd === undefined || profile.rootfs === undefined;
  if (stream && needsManifest) missing.push(...missingStreamFiles(assetsRoot, stream));
  return missing;
}

/**
 * The iPXE programs DHCP offers that are not under assets: firmware that is told to fetch them gets
 * a TFTP error and stops. `field` is dhcp.mode, which makes DHCP offer them. The arm64 build
 * is offered only when present, so its absence is no mistake.
 */
export function missingBootPrograms(dhcp: Config['dhcp'], assetsRoot: string): MissingAsset[] {
  if (dhcp.mode === 'off') return [];
  const offered = [
    { file: BIOS_BOOT_PROGRAM, firmware: 'BIOS PXE' },
    { file: dhcp.efi_binary, firmware: 'x86-64 UEFI, dhcp.efi_binary' },
  ];
  return offered
    .map(({ file, firmware }) => ({ file, firmware, path: join(assetsRoot, file) }))
    .filter(({ path }) => !existsSync(path))
    .map(({ file, firmware, path }) => ({
      field: 'dhcp.mode',
      path,
      message: `${file} (iPXE for ${firmware}) not found under ${assetsRoot}; run rackboot fetch ipxe`,
    }));
}

function missingStreamFiles(assetsRoot: string, stream: Stream): MissingAsset[] {
  const manifestFile = join(assetsRoot, MANIFEST_PATH);
  const manifest = readManifest(manifestFile);
  const fetchHint = `run rackboot fetch coreos --stream ${stream}`;
  if ('error' in manifest) {
    return [{ field: 'coreos.stream', path: manifestFile, message: `${manifest.error}; ${fetchHint}` }];
  }
  const entries = Object.entries(manifest.streams[stream] ?? {});
  if (entries.length === 0) {
    return [
      {
        field: 'coreos.stream',
        path: manifestFile,
        message: `${manifestFile} has no entry for stream ${stream}; ${fetchHint}`,
      },
    ];
  }
  return entries.flatMap(([arch, entry]) =>
    [entry.kernel, entry.initramfs, entry.rootfs]
      .map((file) => join(assetsRoot, file.path))
      .filter((path) => !existsSync(path) || !isReadable(path))
      .map((path) => {
        const file = `${path} (stream ${stream}, ${arch}, release ${entry.release})`;
        return {
          field: 'coreos.stream',
          path,
          message: existsSync(path)
            ? `${file} ${UNREADABLE}`
            : `${file} is missing; ${fetchHint} --arch ${arch}`,
        };
      }),
  );
}

/** What to do about a boot file that exists but that HTTP and TFTP would refuse to every machine. */
const UNREADABLE = 'cannot be read by this user: make it readable by the user rackboot runs as (chmod a+r)';

/**
 * A kernel left 0600 by a fetch run as root exists, and a booting machine still gets none. Opened as
 * HTTP and TFTP open it (access(2) would ask for the real user, not the effective one they run as);
 * without waiting, should a named pipe stand where the manifest names a file.
 */
function isReadable(path: string): boolean {
  try {
    closeSync(openSync(path, constants.O_RDONLY | constants.O_NONBLOCK));
    return true;
  } catch {
    return false;
  }
}

function streamEntry(assetsRoot: string, stream: Stream, keys: string[]): ManifestEntry | { error: string } {
  const manifestFile = join(assetsRoot, MANIFEST_PATH);
  const fetchHint = `run rackboot fetch coreos --stream ${stream} --arch ${keys.at(-1)}`;
  const manifest = readManifest(manifestFile);
  if ('error' in manifest) {
    return { error: `profile names stream ${stream} but ${manifest.error}; ${fetchHint}` };
  }
  const entry = keys.map((key) => manifest.streams[stream]?.[key]).find((found) => found !== undefined);
  if (entry === undefined) {
    return {
      error: `profile names stream ${stream} but ${manifestFile} has no ${keys.at(-1)} entry; ${fetchHint}`,
    };
  }
  return entry;
}

interface CachedManifest {
  ino: number;
  mtimeMs: number;
  size: number;
  result: Manifest | { error: string };
}

/**
 * Parsed manifests by file, reused while inode, mtime and size are unchanged. `fetch` replaces
 * the file by rename, which always changes the inode, so a stale entry cannot survive a fetch.
 * A memo of file contents, not state: dropping it changes nothing but speed.
 */
const manifestCache = new Map<string, CachedManifest>();

function readManifest(file: string): Manifest | { error: string } {
  let stats: { ino: number; mtimeMs: number; size: number };
  try {
    stats = statSync(file);
  } catch {
    manifestCache.delete(file);
    return { error: `${file} does not exist` };
  }
  const cached = manifestCache.get(file);
  if (cached && cached.ino === stats.ino && cached.mtimeMs === stats.mtimeMs && cached.size === stats.size) {
    return cached.result;
  }
  let result: Manifest | { error: string };
  try {
    const parsed = parseManifest(readFileSync(file, 'utf8'));
    result = 'error' in parsed ? { error: `${file} is unreadable: ${parsed.error}` } : parsed;
  } catch (error) {
    result = { error: `${file} is unreadable: ${(error as Error).message}` };
  }
  manifestCache.set(file, { ino: stats.ino, mtimeMs: stats.mtimeMs, size: stats.size, result });
  return result;
}

function isUrl(value: string): boolean {
  return /^https?:\/\//i.test(value);
}
