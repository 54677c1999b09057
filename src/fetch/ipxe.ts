import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { makeParents } from '../durable-file.js';
import { FetchError, writeAtomically } from './download.js';

/**
 * `rackboot fetch ipxe`: the stock iPXE boot programs, copied from where distributions install
 * them into the assets directory under the names the DHCP server hands out.
 */

/** Debian/Ubuntu package `ipxe`, then Fedora/RHEL `ipxe-bootimgs-x86` / `ipxe-bootimgs-aarch64`. */
export const SYSTEM_IPXE_DIRS = ['/usr/lib/ipxe', '/usr/share/ipxe'];

interface IpxeBinary {
  /** Name under the assets directory (dhcp.efi_binary / dhcp.arm64_efi_binary refer to these). */
  target: string;
  /** Names tried inside each source directory: Debian, Fedora, then an iPXE build tree (src/). */
  names: string[];
  /** x86 binaries are what nearly every rack needs; arm64 is copied when some package provides it. */
  required: boolean;
}

const IPXE_BINARIES: IpxeBinary[] = [
  {
    target: 'undionly.kpxe',
    names: ['undionly.kpxe', 'bin-i386-pcbios/undionly.kpxe', 'bin/undionly.kpxe'],
    required: true,
  },
  { target: 'ipxe.efi', names: ['ipxe.efi', 'ipxe-x86_64.efi', 'bin-x86_64-efi/ipxe.efi'], required: true },
  {
    target: 'snponly.efi',
    names: ['snponly.efi', 'ipxe-snponly-x86_64.efi', 'bin-x86_64-efi/snponly.efi'],
    required: true,
  },
  { target: 'arm64-efi/ipxe.efi', names: ['arm64-efi/ipxe.efi', 'bin-arm64-efi/ipxe.efi'], required: false },
  {
    target: 'arm64-efi/snponly.efi',
    names: ['arm64-efi/snponly.efi', 'bin-arm64-efi/snponly.efi'],
    required: false,
  },
];

const IPXE_PACKAGE_HINT =
  'install the iPXE package: apt-get install ipxe (Debian, Ubuntu) or dnf install ipxe-bootimgs-x86 (Fedora, RHEL)';
export const ARM64_IPXE_HINT =
  'no arm64 iPXE found: dnf install ipxe-bootimgs-aarch64 (Fedora, RHEL); Debian 12 packages none, ' +
  'so build bin-arm64-efi/ipxe.efi from the iPXE source and pass its src/ directory with --source';

export interface IpxeCopy {
  target: string;
  source: string;
  outcome: 'copied' | 'unchanged';
}

export interface FetchIpxeResult {
  copied: IpxeCopy[];
  /** Targets no source directory had; required ones make the verb fail after copying the rest. */
  missing: { target: string; required: boolean }[];
}

export async function fetchIpxe(
  dest: string,
  sourceDirs: string[] = SYSTEM_IPXE_DIRS,
): Promise<FetchIpxeResult> {
  const result: FetchIpxeResult = { copied: [], missing: [] };
  for (const binary of IPXE_BINARIES) {
    const source = sourceDirs
      .flatMap((dir) => binary.names.map((name) => join(dir, name)))
      .find((candidate) => existsSync(candidate));
    if (source === undefined) {
      result.missing.push({ target: binary.target, required: binary.required });
      continue;
    }
    const target = join(dest, binary.target);
    const content = await readFile(source);
    const current = await readFile(target).catch(() => undefined);
    if (current?.equals(content)) {
      result.copied.push({ target: binary.target, source, outcome: 'unchanged' });
      continue;
    }
    await makeParents(dirname(target)).catch((error: Error) => {
      throw new FetchError(`cannot create ${dirname(target)}: ${error.message}`);
    });
    await writeAtomically(target, content);
    result.copied.push({ target: binary.target, source, outcome: 'copied' });
  }
  return result;
}

/**
 * The error for x86 binaries that no source directory had, or undefined when all were found. With
 * `sourceDirs` (--source) the operator chose where to look, so the error names those directories
 * rather than the package, which may well be installed.
 */
export function missingRequiredIpxe(result: FetchIpxeResult, sourceDirs?: string[]): FetchError | undefined {
  const missing = result.missing.filter((binary) => binary.required).map((binary) => binary.target);
  if (missing.length === 0) return undefined;
  if (!sourceDirs) return new FetchError(`${missing.join(', ')} not found; ${IPXE_PACKAGE_HINT}`);
  return new FetchError(
    `${missing.join(', ')} not found under ${sourceDirs.join(', ')} (--source); name the directory ` +
      "holding them (an iPXE build's src/bin*), or leave --source out to copy from the system iPXE package",
  );
}
