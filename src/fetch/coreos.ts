import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { downloadVerified, FetchError, fetchBytes, withRetries, writeAtomically } from './download.js';
import { checkSignatureTools, verifyDetachedSignature } from './gpg.js';
import { withLock } from './lock.js';
import {
  emptyManifest,
  formatManifest,
  MANIFEST_PATH,
  type Manifest,
  type ManifestEntry,
  type ManifestFile,
  PXE_ARTIFACTS,
  parseManifest,
  type Stream,
} from './manifest.js';
import type { FetchReporter } from './progress.js';
import { artifactPath, type PxeFile, type PxeRelease, pickPxeRelease, streamMetadataUrl } from './stream.js';

/** Held while a fetch writes under the assets directory. */
export const LOCK_PATH = 'fedora-coreos/.fetch.lock';

export interface FetchCoreosOptions {
  stream: Stream;
  /** RPM architecture names as in stream metadata: x86_64, aarch64. */
  arches: string[];
  /** Absolute assets directory; files go under `fedora-coreos/<stream>/<arch>/`. */
  dest: string;
  /** Defaults to the official stream document (`streamMetadataUrl`). */
  metadataUrl?: string;
  /** When set, each artifact's detached signature must verify against this keyring (gpgv). */
  keyring?: string;
  retries?: number;
  retryDelayMs?: number;
  idleTimeoutMs?: number;
  reporter: FetchReporter;
  now: () => Date;
}

export interface FetchCoreosResult {
  manifestFile: string;
  entries: { arch: string; entry: ManifestEntry }[];
}

/**
 * Reads stream metadata, downloads kernel, initramfs and rootfs of every requested architecture
 * (one matched release each), and records them in the manifest. Every architecture is checked
 * against the metadata before the first byte is downloaded, so a typo costs nothing.
 */
export async function fetchCoreos(options: FetchCoreosOptions): Promise<FetchCoreosResult> {
  const { stream, reporter } = options;
  if (options.keyring !== undefined) await checkSignatureTools(options.keyring);
  const metadataUrl = options.metadataUrl ?? streamMetadataUrl(stream);
  reporter.line(`stream ${stream}: reading ${metadataUrl}`);
  const metadata = parseJson(await fetchSmall(options, metadataUrl), metadataUrl);
  const releases = options.arches.map((arch) => {
    const release = pickPxeRelease(metadata, stream, arch, metadataUrl);
    if ('error' in release) throw new FetchError(release.error);
    if (options.keyring !== undefined) {
      const unsigned = PXE_ARTIFACTS.filter((artifact) => !release.files[artifact].signature);
      if (unsigned.length > 0) {
        throw new FetchError(`${metadataUrl} lists no signature for ${arch} ${unsigned.join(', ')}`);
      }
    }
    return { arch, release };
  });

  const entries: FetchCoreosResult['entries'] = [];
  await withLock(join(options.dest, LOCK_PATH), async () => {
    for (const { arch, release } of releases) {
      reporter.line(`${arch}: Fedora CoreOS ${release.release}`);
      const entry = await fetchRelease(options, metadataUrl, arch, release);
      await recordInManifest(options.dest, stream, arch, entry, reporter);
      entries.push({ arch, entry });
    }
  });
  return { manifestFile: join(options.dest, MANIFEST_PATH), entries };
}

async function fetchRelease(
  options: FetchCoreosOptions,
  metadataUrl: string,
  arch: string,
  release: PxeRelease,
): Promise<ManifestEntry> {
  const files = {} as Record<(typeof PXE_ARTIFACTS)[number], ManifestFile>;
  for (const artifact of PXE_ARTIFACTS) {
    const source = release.files[artifact];
    const path = artifactPath(options.stream, arch, source.fileName);
    const file = join(options.dest, path);
    const events = options.reporter.download(`${arch} ${artifact}`);
    const keyring = options.keyring;
    const { outcome, bytes } = await downloadVerified({
      url: source.location,
      file,
      sha256: source.sha256,
      events,
      retries: options.retries,
      retryDelayMs: options.retryDelayMs,
      idleTimeoutMs: options.idleTimeoutMs,
      verify:
        keyring === undefined
          ? undefined
          : (candidate) => verifySignature(options, keyring, source, file, candidate),
    }).catch((error: unknown) => {
      events.abandon();
      throw error;
    });
    events.end(outcome, bytes, keyring === undefined ? 'sha256 verified' : 'sha256 and signature verified');
    files[artifact] = { path, sha256: source.sha256, url: source.location };
  }
  return {
    release: release.release,
    metadata_url: metadataUrl,
    fetched_at: options.now().toISOString(),
    ...files,
  };
}

/**
 * The signature is kept next to the artifact (`<file>.sig`, as coreos-installer download does) and
 * reused by later runs; a signature that fails is removed, so the next run fetches it again (a
 * damaged .sig must not fail every later run).
 */
async function verifySignature(
  options: FetchCoreosOptions,
  keyring: string,
  source: PxeFile,
  file: string,
  candidate: string,
): Promise<void> {
  const signatureFile = `${file}.sig`;
  if (!source.signature) throw new FetchError(`no signature listed for ${source.location}`);
  if (!existsSync(signatureFile)) {
    await writeAtomically(signatureFile, await fetchSmall(options, source.signature));
  }
  try {
    await verifyDetachedSignature(keyring, signatureFile, candidate);
  } catch (error) {
    await rm(signatureFile, { force: true });
    throw error;
  }
}

async function recordInManifest(
  dest: string,
  stream: Stream,
  arch: string,
  entry: ManifestEntry,
  reporter: FetchReporter,
): Promise<void> {
  const manifestFile = join(dest, MANIFEST_PATH);
  let manifest: Manifest = emptyManifest();
  const existing = await readFile(manifestFile, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw new FetchError(`cannot read ${manifestFile}: ${error.message}`);
  });
  if (existing !== undefined) {
    const parsed = parseManifest(existing);
    // The manifest only records what fetch wrote; rebuilding it loses nothing a new fetch cannot restore.
    if ('error' in parsed) reporter.line(`replacing unreadable ${manifestFile} (${parsed.error})`);
    else manifest = parsed;
  }
  manifest.streams[stream] = { ...manifest.streams[stream], [arch]: entry };
  await writeAtomically(manifestFile, formatManifest(manifest));
}

function parseJson(bytes: Buffer, source: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch (error) {
    throw new FetchError(`${source} is not JSON: ${(error as Error).message}`);
  }
}

/** The stream metadata or a signature: retried under --retries, as the artifacts are. */
function fetchSmall(options: FetchCoreosOptions, url: string): Promise<Buffer> {
  return withRetries(() => fetchBytes(url, options.idleTimeoutMs), {
    ...options,
    onRetry: (error, delayMs) =>
      options.reporter.line(`${url}: ${error.message}; retrying in ${delayMs / 1000}s`),
  });
}
