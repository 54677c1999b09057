import type { FastifyRequest } from 'fastify';
import type { Mac } from '../boot-plan.js';
import type { MachineSecrets, TokenPurpose } from '../ignition/tokens.js';
import type { Config } from '../inventory/schema.js';

type MachineAuthorization = { ok: true } | { ok: false; reason: string };

/**
 * The rule for every machine credential (`{{ignition_url}}`, `{{events_url}}`): the token must be
 * this MAC's, for this purpose, unexpired; in authoritative mode (`macForIp` given, see leaseBinding) the request
 * must also come from the address this server leased to that MAC, so a token copied off a console is useless elsewhere.
 */
export function authorizeMachine(
  secrets: MachineSecrets,
  macForIp: ((ip: string) => Mac | undefined) | undefined,
  purpose: TokenPurpose,
  request: { mac: Mac; token: unknown; ip: string; now: number },
): MachineAuthorization {
  if (typeof request.token !== 'string' || request.token === '')
    return { ok: false, reason: 'token missing' };
  if (!secrets.verify(request.mac, request.token, request.now, purpose)) {
    return { ok: false, reason: 'token invalid or expired for this machine' };
  }
  if (macForIp) {
    const leasedTo = macForIp(request.ip);
    if (leasedTo !== request.mac) {
      return {
        ok: false,
        reason: `request from ${request.ip}, which is not leased to this machine (a machine with several NICs on this network may ask from another one's address: ignition.require_leased_address: false takes it)`,
      };
    }
  }
  return { ok: true };
}

/** The lease table authorizeMachine binds credentials to: authoritative mode's, unless the config turns that off. */
export function leaseBinding(
  config: Config,
  macForIp: ((ip: string) => Mac | undefined) | undefined,
): ((ip: string) => Mac | undefined) | undefined {
  return config.ignition.require_leased_address ? macForIp : undefined;
}

/** The peer address as DHCP leased it: IPv4-mapped IPv6 (`::ffff:10.77.0.21`, on a dual-stack socket) unwrapped. */
export function requesterIp(request: FastifyRequest): string {
  return request.ip.startsWith('::ffff:') ? request.ip.slice(7) : request.ip;
}
