import { macFromBytes } from '../inventory/mac.js';
import { numberToIp } from '../ipv4.js';
import type { Outcome } from './decide.js';
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

export function operatorWarning(request: DhcpRequest, outcome: Outcome): OperatorWarning | undefined {
  if (outcome.kind !== 'silent' || outcome.leaseChange?.kind !== 'decline') return undefined;
  const mac = macFromBytes(request.chaddr);
  const ip = numberToIp(outcome.leaseChange.ip);
  const until = new Date(outcome.leaseChange.until).toISOString();
  return {
    fields: { mac, ip, until, xid: request.xid },
    message:
      `address conflict: ${mac} declined ${ip}, which another host on the network already uses ` +
      `(a static address inside the DHCP range?); ${ip} is kept out of the pool until ${until} ` +
      `(dhcp.lease_time) and ${mac} is offered another address when it asks again. Find the host using ${ip}`,
  };
}
