import type { FastifyRequest } from 'fastify';
import type { Mac } from '../boot-plan.js';
import type { MachineSecrets, TokenPurpose } from '../ignition/tokens.js';
import type { Config } from '../inventory/schema.js';
import type { Logger } from '../log.js';
import { refusalLimiter, tokenBucket, tokenBuckets } from '../rate-limit.js';

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

/**
 * A refused machine credential is logged once per (requester, MAC, reason) per interval, the next
 * line saying how many were left out: a machine retrying a stale URL, or a flood of bad ones, would
 * otherwise fill the log. A flood can name ever new MACs, so new keys are also budgeted per
 * requester and for all; the memo holds at most REFUSAL_LOG_KEYS keys, the one logged longest ago
 * dropped first, its count carried by the next line as `suppressedElsewhere`.
 */
const REFUSAL_LOG_INTERVAL_MS = 10_000;
const REFUSAL_LOG_KEYS = 1024;
const REFUSAL_LOG_REQUESTERS = 1024;
const REFUSAL_LOGS_PER_REQUESTER = { perSecond: 0.5, burst: 20 };
const REFUSAL_LOGS = { perSecond: 5, burst: 50 };

export interface MachineRefusal {
  mac: Mac;
  requester: string;
  reason: string;
}

/** Logs refusals as warnings under `message`, within the limits above; one per route, so routes do not share them. */
export function refusalLog(
  message: string,
): (logger: Pick<Logger, 'warn'>, refusal: MachineRefusal, now: number) => void {
  const toLog = refusalLimiter(REFUSAL_LOG_INTERVAL_MS, REFUSAL_LOG_KEYS);
  const requesterBudget = tokenBuckets(REFUSAL_LOGS_PER_REQUESTER, REFUSAL_LOG_REQUESTERS);
  const budget = tokenBucket(REFUSAL_LOGS);
  return (logger, refusal, now) => {
    const leftOut = toLog(
      `${refusal.requester}\0${refusal.mac}\0${refusal.reason}`,
      now,
      () => requesterBudget(refusal.requester, now) && budget(now),
    );
    if (leftOut === undefined) return;
    logger.warn({ ...refusal, ...leftOut }, message);
  };
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
