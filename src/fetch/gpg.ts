import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { FetchError } from './download.js';

/**
 * Detached-signature checks with `gpgv`, the verify-only tool that trusts exactly the keys in the
 * keyring it is given (no trust database, no agent). Fedora publishes its keys ASCII-armored
 * (fedora.gpg); gpgv 2.2 reads only binary keyrings, so armored ones are converted first.
 */
export async function verifyDetachedSignature(
  keyring: string,
  signature: string,
  data: string,
): Promise<void> {
  const scratch = await mkdtemp(join(tmpdir(), 'rackboot-gpgv-'));
  try {
    const keyringFile = await binaryKeyring(resolve(keyring), scratch);
    // --homedir: an empty directory, so no ~/.gnupg/trustedkeys.kbx widens what is trusted.
    const result = await run('gpgv', ['--homedir', scratch, '--keyring', keyringFile, signature, data]);
    if (result.code === 0) return;
    const lines = result.stderr
      .split('\n')
      .map((line) => line.replace(/^gpgv: /, '').trim())
      .filter((line) => line !== '');
    const reasons = lines.filter((line) => /BAD signature|No public key|invalid|error|Can't/i.test(line));
    throw new FetchError(
      `signature check of ${data} failed (keyring ${keyring}): ${(reasons.length > 0 ? reasons : lines).join('; ')}`,
    );
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/**
 * Checks up front what `verifyDetachedSignature` needs (gpgv installed, keyring readable), so a
 * typo in --keyring fails before the first download rather than after it.
 */
export async function checkSignatureTools(keyring: string): Promise<void> {
  const scratch = await mkdtemp(join(tmpdir(), 'rackboot-gpgv-'));
  try {
    await binaryKeyring(resolve(keyring), scratch);
    await run('gpgv', ['--version']);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

async function binaryKeyring(keyring: string, scratch: string): Promise<string> {
  let content: Buffer;
  try {
    content = await readFile(keyring);
  } catch (error) {
    throw new FetchError(`cannot read keyring ${keyring}: ${(error as Error).message}`);
  }
  if (!content.subarray(0, 64).toString('latin1').includes('-----BEGIN PGP')) return keyring;
  const converted = join(scratch, 'keyring.gpg');
  await writeFile(converted, dearmor(content.toString('utf8')));
  return converted;
}

/**
 * RFC 4880 §6.2 ASCII armor → binary packets: every armored block, concatenated. Armor headers
 * (`Version: …`) are the only lines with a colon, base64 has none; the `=XXXX` line is the CRC-24,
 * skipped because a damaged key fails gpgv's own packet parsing anyway.
 */
export function dearmor(text: string): Buffer {
  const blocks = text.matchAll(/-----BEGIN PGP [A-Z ]+-----\r?\n([\s\S]*?)-----END PGP [A-Z ]+-----/g);
  const parts: Buffer[] = [];
  for (const [, inner = ''] of blocks) {
    const body = inner
      .split(/\r?\n/)
      .map((line) => line.trim())
      .filter((line) => line !== '' && !line.includes(':') && !line.startsWith('='));
    parts.push(Buffer.from(body.join(''), 'base64'));
  }
  if (parts.length === 0) throw new FetchError('keyring is armored but holds no PGP block');
  return Buffer.concat(parts);
}

const GPGV_LIMIT_MS = 60_000;

function run(command: string, args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    execFile(command, args, { timeout: GPGV_LIMIT_MS }, (error, _stdout, stderr) => {
      const code = (error as NodeJS.ErrnoException | null)?.code;
      if (code === 'ENOENT') {
        reject(
          new FetchError(`${command} is not installed; install the gpgv package (apt-get install gpgv)`),
        );
        return;
      }
      const timedOut = (error as { killed?: boolean } | null)?.killed === true;
      resolvePromise({
        code: error ? Number((error as { code?: unknown }).code ?? 1) || 1 : 0,
        stderr: timedOut ? `${stderr}\n${command} did not finish within ${GPGV_LIMIT_MS / 1000} s` : stderr,
      });
    });
  });
}
