import { isObject } from '../json.js';
/**
 * The manifest `rackboot fetch coreos` writes under the assets root, and the only reader of it.
 * One file for every stream and architecture fetched, so a profile naming a stream finds its
 * kernel, initramfs and rootfs without knowing release numbers. Pure: text in, value out.
 */

/** Where the manifest lives, relative to the assets root. */
export const MANIFEST_PATH = 'fedora-coreos/manifest.json';
export const MANIFEST_FORMAT = 1;

export const STREAMS = ['stable', 'testing', 'next'] as const;
export type Stream = (typeof STREAMS)[number];

/** Names of the three live PXE artifacts, as stream metadata spells them. */
export const PXE_ARTIFACTS = ['kernel', 'initramfs', 'rootfs'] as const;
export type PxeArtifact = (typeof PXE_ARTIFACTS)[number];

export interface ManifestFile {
  /** Relative to the assets root, forward slashes. */
  path: string;
  sha256: string;
  /** Where it was downloaded from. */
  url: string;
}

/** One release of one stream for one architecture: a matched kernel/initramfs/rootfs set. */
export interface ManifestEntry extends Record<PxeArtifact, ManifestFile> {
  release: string;
  metadata_url: string;
  /** ISO 8601 time of the fetch that wrote this entry. */
  fetched_at: string;
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  /** stream → architecture (RPM name: x86_64, aarch64) → entry. */
  streams: Partial<Record<Stream, Record<string, ManifestEntry>>>;
}

export function emptyManifest(): Manifest {
  return { format: MANIFEST_FORMAT, streams: {} };
}

export function isStream(value: string): value is Stream {
  return (STREAMS as readonly string[]).includes(value);
}

/** The manifest as JSON text, stable key order so diffs between fetches stay readable. */
export function formatManifest(manifest: Manifest): string {
  return `${JSON.stringify(manifest, null, 2)}\n`;
}

/** Parses and checks the manifest; refuses rather than guesses, since a wrong path boots nothing. */
export function parseManifest(text: string): Manifest | { error: string } {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    return { error: `not JSON: ${(error as Error).message}` };
  }
  if (!isObject(data) || data['format'] !== MANIFEST_FORMAT || !isObject(data['streams'])) {
    return { error: `not a rackboot manifest of format ${MANIFEST_FORMAT}` };
  }
  const streams: Manifest['streams'] = {};
  for (const [stream, arches] of Object.entries(data['streams'])) {
    if (!isStream(stream)) return { error: `unknown stream "${stream}"` };
    if (!isObject(arches)) return { error: `streams.${stream} is not an object` };
    const entries: Record<string, ManifestEntry> = {};
    for (const [arch, entry] of Object.entries(arches)) {
      const checked = checkEntry(entry);
      if (typeof checked === 'string') return { error: `streams.${stream}.${arch}: ${checked}` };
      entries[arch] = checked;
    }
    streams[stream] = entries;
  }
  return { format: MANIFEST_FORMAT, streams };
}

function checkEntry(entry: unknown): ManifestEntry | string {
  if (!isObject(entry)) return 'not an object';
  for (const key of ['release', 'metadata_url', 'fetched_at']) {
    if (typeof entry[key] !== 'string') return `${key} is missing`;
  }
  for (const artifact of PXE_ARTIFACTS) {
    const file = entry[artifact];
    if (!isObject(file) || typeof file['path'] !== 'string' || typeof file['sha256'] !== 'string') {
      return `${artifact} needs path and sha256`;
    }
    if (!isInsideRoot(file['path'])) return `${artifact}.path must stay under the assets root`;
  }
  return entry as unknown as ManifestEntry;
}

/** A relative path that cannot climb out of the directory it is joined to. */
export function isInsideRoot(path: string): boolean {
  return path !== '' && !path.startsWith('/') && !path.split(/[\\/]/).includes('..');
}
