import { createHmac, timingSafeEqual } from 'node:crypto';
import { setNewest } from '../bounded-map.js';
import type { Mac } from '../inventory/mac.js';
import { readOrCreateStateSecret, readServerSecret, secretFingerprint } from '../state-secret.js';

/**
 * Per-machine credentials for `{{ignition_url}}` and `{{events_url}}`: an HMAC of the purpose, the
 * MAC (and an optional expiry) under a server secret kept in `server.state`. Nothing is stored per
 * machine, so 10,000 machines cost nothing and a restart keeps every handed-out URL valid.
 */
export interface MachineSecrets {
  /** The token for this machine and purpose at `now` (ms since the epoch). Stable across calls when no TTL is set. */
  tokenFor(mac: Mac, purpose: TokenPurpose, now: number): string;
  /**
   * True when `token` was issued for exactly this MAC and purpose by this server and is valid at `now`
   * (ms) under the token_ttl in force now: not expired, and, when a TTL is set, carrying an expiry no
   * later than a token issued now would (so turning the TTL on or shortening it retires older tokens).
   * An `ignition` token also passes for `events`: whoever holds it can read the config anyway, and
   * events URLs handed out before tokens had purposes carried it.
   */
  verify(mac: Mac, token: string, now: number, purpose: TokenPurpose): boolean;
  /** Names the secret without revealing it (secretFingerprint): render checks it is the running server's. */
  readonly fingerprint: string;
}

export interface OpenedMachineSecrets extends MachineSecrets {
  /** The secret file held no secret, so a new one was made: tokens handed out before no longer pass. */
  created: boolean;
}

/**
 * What a token opens. The events URL sits in a world-readable unit file on the installed system
 * (`{{events_url}}`), so its token must not also open the machine's Ignition with its secrets.
 */
export const TOKEN_PURPOSES = ['ignition', 'events'] as const;
export type TokenPurpose = (typeof TOKEN_PURPOSES)[number];

export const SECRET_FILE_NAME = 'rackboot-http-secret';
/** 128 bits of HMAC-SHA256 are far beyond guessing over HTTP and keep URLs short on kernel command lines. */
const SIGNATURE_BYTES = 16;
/**
 * Tokens without expiry kept computed (about 2 MB): more than a large fleet boots, and a bound, as
 * unauthenticated requests name MACs (boot scripts under `unknown_machines`). Past it the oldest goes;
 * a token computed again costs one HMAC (~7 µs).
 */
export const CACHED_TOKENS = 16_384;

/**
 * Reads the server secret from `<stateDir>/rackboot-http-secret`, creating it (mode 0600) on first
 * use. `tokenTtlSeconds` is read at every `tokenFor` and `verify` so a config reload applies at once;
 * 0 = no expiry.
 * Throws at startup when the file exists but is not a secret this server wrote.
 */
export async function openMachineSecrets(
  stateDir: string,
  tokenTtlSeconds: () => number = () => 0,
): Promise<OpenedMachineSecrets> {
  const { secret, created } = await readOrCreateStateSecret(stateDir, SECRET_FILE_NAME);
  return { ...createMachineSecrets(secret, tokenTtlSeconds), created };
}

/**
 * The server's secrets as `openMachineSecrets` would open them, reading only (render must not make
 * a secret the running server does not know): undefined while the server has made none.
 */
export async function readMachineSecrets(
  stateDir: string,
  tokenTtlSeconds: () => number = () => 0,
): Promise<MachineSecrets | undefined> {
  const secret = await readServerSecret(stateDir, SECRET_FILE_NAME);
  return secret && createMachineSecrets(secret, tokenTtlSeconds);
}

/** The pure part, for tests and benchmarks that bring their own secret. */
export function createMachineSecrets(
  secret: Buffer,
  tokenTtlSeconds: () => number = () => 0,
): MachineSecrets {
  // Ignition tokens sign the text they signed before tokens had purposes, so handed-out URLs stay valid.
  const sign = (purpose: TokenPurpose, mac: Mac, expiresAtSeconds: number | undefined): Buffer =>
    createHmac('sha256', secret)
      .update(`${purpose === 'ignition' ? '' : `${purpose}|`}${mac}|${expiresAtSeconds ?? ''}`)
      .digest()
      .subarray(0, SIGNATURE_BYTES);

  // Without expiry a machine's token never changes: computed once per MAC (a boot storm asks often).
  const permanentTokens: Record<TokenPurpose, Map<Mac, string>> = { ignition: new Map(), events: new Map() };
  const signedBy = (purpose: TokenPurpose, mac: Mac, expiresAtSeconds: number | undefined, token: string) => {
    // Compared as text: base64url's last character carries unused bits, so decoding would accept variants.
    const given = Buffer.from(token, 'ascii');
    const expected = Buffer.from(sign(purpose, mac, expiresAtSeconds).toString('base64url'), 'ascii');
    return given.length === expected.length && timingSafeEqual(given, expected);
  };
  return {
    fingerprint: secretFingerprint(secret),
    tokenFor(mac, purpose, now) {
      const ttl = tokenTtlSeconds();
      if (ttl <= 0) {
        const cache = permanentTokens[purpose];
        let token = cache.get(mac);
        if (token === undefined) {
          token = sign(purpose, mac, undefined).toString('base64url');
          setNewest(cache, mac, token, CACHED_TOKENS);
        }
        return token;
      }
      const expiresAtSeconds = Math.floor(now / 1000) + ttl;
      return `${expiresAtSeconds}.${sign(purpose, mac, expiresAtSeconds).toString('base64url')}`;
    },
    verify(mac, token, now, purpose) {
      const match = /^(?:(\d{1,12})\.)?([A-Za-z0-9_-]{22})$/.exec(token);
      if (!match) return false;
      const expiresAtSeconds = match[1] === undefined ? undefined : Number(match[1]);
      if (expiresAtSeconds !== undefined && expiresAtSeconds * 1000 < now) return false;
      const ttl = tokenTtlSeconds();
      if (ttl > 0 && (expiresAtSeconds ?? Number.POSITIVE_INFINITY) > Math.floor(now / 1000) + ttl)
        return false;
      const signature = match[2] ?? '';
      return (
        signedBy(purpose, mac, expiresAtSeconds, signature) ||
        (purpose === 'events' && signedBy('ignition', mac, expiresAtSeconds, signature))
      );
    },
  };
}
