import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const SECRET_BYTES = 32;
const SECRET_TEXT = /^[0-9a-f]{64}$/;

/**
 * A 256-bit secret the server keeps in a file of `server.state` (64 hex digits, mode 0600), made
 * on first use and the same after every restart. Throws when the file exists but is not a secret
 * rackboot wrote.
 */
export function readOrCreateStateSecret(stateDir: string, fileName: string): Buffer {
  const file = join(stateDir, fileName);
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  try {
    writeFileSync(file, `${randomBytes(SECRET_BYTES).toString('hex')}\n`, { flag: 'wx', mode: 0o600 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  // Read errors (permissions) are thrown as they are: the server cannot start without its secret.
  const secret = parseSecret(readFileSync(file, 'utf8'));
  if (!secret)
    throw new Error(`${file} is not a rackboot secret (64 hex digits); remove it to make a new one`);
  return secret;
}

/** The secret in that file, or undefined when it is missing, unreadable or not a secret. */
export function readStateSecret(stateDir: string, fileName: string): Buffer | undefined {
  try {
    return parseSecret(readFileSync(join(stateDir, fileName), 'utf8'));
  } catch {
    return undefined;
  }
}

function parseSecret(text: string): Buffer | undefined {
  const trimmed = text.trim();
  return SECRET_TEXT.test(trimmed) ? Buffer.from(trimmed, 'hex') : undefined;
}
