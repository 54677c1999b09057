import { isObject } from '../json.js';
import { PXE_ARTIFACTS, type PxeArtifact, type Stream } from './manifest.js';

/**
 * Fedora CoreOS stream metadata → the live PXE artifacts of one architecture. Pure. The document
 * shape is coreos/stream-metadata-go `stream/stream.go`:
 * `architectures.<arch>.artifacts.metal.{release, formats.pxe.{kernel,initramfs,rootfs}}`.
 */

/** stream-metadata-go `GetStreamURL`: the official location, one document per stream. */
export const DEFAULT_STREAM_BASE_URL = 'https://builds.coreos.fedoraproject.org/streams';

export function streamMetadataUrl(stream: Stream, baseUrl = DEFAULT_STREAM_BASE_URL): string {
  return `${baseUrl}/${stream}.json`;
}

export interface PxeFile {
  location: string;
  /** Detached GPG signature of the file (stream metadata always lists one for FCOS builds). */
  signature: string | undefined;
  sha256: string;
  /** Last path segment of `location`, checked to be a plain file name. */
  fileName: string;
}

export interface PxeRelease {
  release: string;
  files: Record<PxeArtifact, PxeFile>;
}

/** Names people type for the RPM architecture names stream metadata uses. */
const ARCH_ALIASES: Record<string, string> = { amd64: 'x86_64', x64: 'x86_64', arm64: 'aarch64' };

/** A file name safe to join under the assets root: no separators, no dot-only names. */
const SAFE_FILE_NAME = /^[A-Za-z0-9._+-]+$/;

export function pickPxeRelease(
  metadata: unknown,
  stream: Stream,
  arch: string,
  source: string,
): PxeRelease | { error: string } {
  if (!isObject(metadata) || !isObject(metadata['architectures'])) {
    return { error: `${source} is not Fedora CoreOS stream metadata (no "architectures")` };
  }
  if (typeof metadata['stream'] === 'string' && metadata['stream'] !== stream) {
    return { error: `${source} describes stream ${metadata['stream']}, not ${stream}` };
  }
  const architectures = metadata['architectures'];
  const entry = architectures[arch];
  if (!isObject(entry)) {
    const known = Object.keys(architectures).sort().join(', ');
    const alias = ARCH_ALIASES[arch.toLowerCase()];
    const hint = alias ? ` (did you mean ${alias}?)` : '';
    return { error: `unknown architecture ${arch}${hint}; the ${stream} stream has ${known}` };
  }
  const metal = path(entry, ['artifacts', 'metal']);
  const pxe = path(metal, ['formats', 'pxe']);
  if (!isObject(metal) || typeof metal['release'] !== 'string' || !isObject(pxe)) {
    return { error: `the ${stream} stream has no metal PXE artifacts for ${arch}` };
  }
  const files = {} as Record<PxeArtifact, PxeFile>;
  for (const artifact of PXE_ARTIFACTS) {
    const file = pxe[artifact];
    if (!isObject(file) || typeof file['location'] !== 'string' || typeof file['sha256'] !== 'string') {
      return { error: `${source}: ${arch} metal pxe ${artifact} lacks location or sha256` };
    }
    if (!/^[0-9a-f]{64}$/i.test(file['sha256'])) {
      return { error: `${source}: ${arch} metal pxe ${artifact} has a malformed sha256` };
    }
    const fileName = lastSegment(file['location']);
    if (fileName === undefined || !SAFE_FILE_NAME.test(fileName) || /^\.+$/.test(fileName)) {
      return { error: `${source}: ${arch} ${artifact} location ${file['location']} has no usable file name` };
    }
    files[artifact] = {
      location: file['location'],
      signature: typeof file['signature'] === 'string' ? file['signature'] : undefined,
      sha256: file['sha256'].toLowerCase(),
      fileName,
    };
  }
  return { release: metal['release'], files };
}

/** Where an artifact goes, relative to the assets root: one folder per stream and architecture. */
export function artifactPath(stream: Stream, arch: string, fileName: string): string {
  return `fedora-coreos/${stream}/${arch}/${fileName}`;
}

function lastSegment(location: string): string | undefined {
  try {
    return decodeURIComponent(new URL(location).pathname.split('/').pop() ?? '') || undefined;
  } catch {
    return undefined;
  }
}

function path(value: unknown, keys: string[]): unknown {
  return keys.reduce<unknown>((node, key) => (isObject(node) ? node[key] : undefined), value);
}
