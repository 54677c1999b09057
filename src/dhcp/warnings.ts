import { macFromBytes } from '../inventory/mac.js';
import { numberToIp } from '../ipv4.js';
import { refusalLimiter } from '../rate-limit.js';
import type { Outcome } from './decide.js';
import type { LeaseChange, Pool } from './leases.js';
import type { DhcpRequest } from './packet.js';

/**
 * The log lines a DHCP decision owes the operator: trouble on the network that only they can fix,
 * and that an event in one machine's history brings to no one's attention. No I/O: the shell
 * (server.ts) logs what this returns.
 */
export interface OperatorWarning {
  fields: Record<string, unknown>;
  message: string;
}

/**
 * An exhausted pool stays so while every client asks again every few seconds: one warning per pool
 * and minute, each with the number of DISCOVERs turned away since the one before.
 */
export const EXHAUSTION_WARNING_INTERVAL_MS = 60_000;
/** Pools remembered by the limiter; more than any config has. */
const EXHAUSTION_MEMO_POOLS = 256;

/** `(request, outcome, now)` → the warning to log, if any; holds the rate limit's memory. */
export function operatorWarnings(): (
  request: DhcpRequest,
  outcome: Outcome,
  now: number,
) => OperatorWarning | undefined {
  const exhaustionWarnings = refusalLimiter(EXHAUSTION_WARNING_INTERVAL_MS, EXHAUSTION_MEMO_POOLS);
  return (request, outcome, now) => {
    if (outcome.kind !== 'silent') return undefined;
    if (!outcome.pool) return undefined;
    if (outcome.leaseChange?.kind === 'decline')
      return declineWarning(request, outcome.leaseChange, outcome.pool);
    // No shared budget: the key is a pool of the config, not anything a client chooses.
    const leftOut = exhaustionWarnings(outcome.pool.name, now, () => true);
    return leftOut && exhaustionWarning(request, outcome.pool, leftOut.suppressed ?? 0);
  };
}

/**
 * Names the subnet whose lease time keeps the address out: a `dhcp.subnets` entry may set its own,
 * so `dhcp.lease_time` is not always the key to look at.
 */
function declineWarning(
  request: DhcpRequest,
  change: Extract<LeaseChange, { kind: 'decline' }>,
  pool: Pool,
): OperatorWarning {
  const mac = macFromBytes(request.chaddr);
  const ip = numberToIp(change.ip);
  const until = new Date(change.until).toISOString();
  return {
    fields: { mac, ip, until, subnet: pool.name, xid: request.xid },
    message:
      `address conflict: ${mac} declined ${ip}, which another host on the network already uses ` +
      `(a static address inside the DHCP range?); ${ip} is kept out of the pool until ${until} ` +
      `(one lease_time of ${pool.name}) and ${mac} is offered another address when it asks again. ` +
      `Find the host using ${ip}`,
  };
}

function exhaustionWarning(request: DhcpRequest, pool: Pool, suppressed: number): OperatorWarning {
  const mac = macFromBytes(request.chaddr);
  const range = `${numberToIp(pool.first)}-${numberToIp(pool.last)}`;
  return {
    fields: { subnet: pool.name, range, mac, turnedAwaySinceLastWarning: suppressed, xid: request.xid },
    message:
      `DHCP pool of ${pool.name} (${range}) exhausted: no address to offer ${mac}; ` +
      `${suppressed} more DISCOVERs were turned away since the last warning (at most one a minute). ` +
      'Widen the range, shorten lease_time, or find what holds the addresses',
  };
}
