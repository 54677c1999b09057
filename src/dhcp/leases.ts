import type { Mac } from '../boot-plan.js';
import { type Cidr, cidrContains } from '../ipv4.js';

/**
 * The authoritative-mode lease table: who holds which address until when. In memory, rebuilt at
 * start by replaying the durable lease log (lease-log.ts); only `LeaseChange`s alter it, and every
 * change except a tentative offer is written to the log before the reply that depends on it leaves.
 * No clock and no I/O here: callers pass `now` (ms since the epoch).
 */

export type LeaseChange =
  /** Tentative hold between OFFER and REQUEST; memory only (a lost offer costs nothing). */
  | { kind: 'offer'; mac: Mac; ip: number; expiresAt: number }
  | { kind: 'bind'; mac: Mac; ip: number; expiresAt: number; hostname?: string | undefined }
  /** RELEASE, or a client that chose another server's offer: the address is free again. */
  | { kind: 'release'; mac: Mac; ip: number; at: number }
  /** RFC 2131 §4.3.3: someone else answers ARP for this address; keep it out of the pool a while. */
  | { kind: 'decline'; ip: number; until: number };

export interface Lease {
  mac: Mac;
  ip: number;
  state: 'offered' | 'bound' | 'free';
  expiresAt: number;
  /**
   * An offer to the holder of a bound lease that ends sooner (a lease_time under the 60 s hold, or
   * one run out): no other client is offered the address until then. The lease stays bound until
   * expiresAt, as the client was told.
   */
  offerHeldUntil?: number;
  hostname?: string | undefined;
}

/** The addresses one subnet hands out, plus the addresses that must never be handed out. */
export interface Pool {
  /** Key for the allocation cursor (the subnet text). */
  name: string;
  subnet: Cidr;
  first: number;
  last: number;
  /** Server, router and similar addresses inside the range that are not for clients. */
  excluded: ReadonlySet<number>;
}

/** Reservations (machines[].ip) as address → MAC, so the pool skips addresses reserved for others. */
export type Reservations = ReadonlyMap<number, Mac>;

/**
 * A search that found no address, kept until something could change its answer: a table change
 * that frees an address, a lease or decline running out (`until`), or another pool or set of
 * reservations (a reload). Without it, every DISCOVER to an exhausted /16 scanned 65,536 addresses
 * and every lease (~14 ms each), so a handful of unknown clients could hold the event loop.
 */
interface Exhaustion {
  reservations: Reservations;
  until: number;
}

export class LeaseTable {
  private readonly byIp = new Map<number, Lease>();
  private readonly byMac = new Map<Mac, Lease>();
  private readonly declinedUntil = new Map<number, number>();
  private readonly cursors = new Map<string, number>();
  /** By pool, so relay subnets exhausted in turn do not wipe each other's. */
  private readonly exhausted = new Map<Pool, Exhaustion>();

  apply(change: LeaseChange): void {
    if (change.kind === 'release') this.exhausted.clear();
    else {
      const ends = change.kind === 'decline' ? change.until : change.expiresAt;
      for (const known of this.exhausted.values()) known.until = Math.min(known.until, ends);
    }
    if (change.kind === 'decline') {
      this.declinedUntil.set(change.ip, change.until);
      const holder = this.byIp.get(change.ip);
      if (holder) this.drop(holder);
      return;
    }
    if (change.kind === 'release') {
      const lease = this.byMac.get(change.mac);
      if (lease && lease.ip === change.ip) {
        lease.state = 'free';
        lease.expiresAt = change.at;
      }
      return;
    }
    const previous = this.byMac.get(change.mac);
    // A bound client that DISCOVERs again (a reboot, iPXE after the firmware) keeps its durable lease
    // until it REQUESTs: replaced by the offer, a lease shorter than the hold left the bound leases
    // (and the lease log's next compaction) until then. The offer only holds the address past the
    // lease's end, or it would be offered to the next client too.
    if (change.kind === 'offer' && previous?.state === 'bound' && previous.ip === change.ip) {
      if (previous.expiresAt < change.expiresAt) previous.offerHeldUntil = change.expiresAt;
      return;
    }
    if (previous && previous.ip !== change.ip) this.drop(previous);
    const displaced = this.byIp.get(change.ip);
    if (displaced && displaced.mac !== change.mac) this.drop(displaced);
    const lease: Lease = {
      mac: change.mac,
      ip: change.ip,
      state: change.kind === 'bind' ? 'bound' : 'offered',
      expiresAt: change.expiresAt,
      hostname: change.kind === 'bind' ? change.hostname : previous?.hostname,
    };
    this.byIp.set(change.ip, lease);
    this.byMac.set(change.mac, lease);
  }

  leaseOf(mac: Mac): Lease | undefined {
    return this.byMac.get(mac);
  }

  holderOf(ip: number): Lease | undefined {
    return this.byIp.get(ip);
  }

  /** Bound and unexpired leases: the state a restart must reproduce. */
  boundLeases(now: number): Lease[] {
    return [...this.byMac.values()].filter((lease) => lease.state === 'bound' && lease.expiresAt > now);
  }

  /**
   * The changes that rebuild this table (offers left out: they are tentative). Free leases are kept
   * so a returning client still gets its previous address.
   */
  snapshot(now: number): LeaseChange[] {
    const changes: LeaseChange[] = [];
    for (const lease of this.byMac.values()) {
      if (lease.state === 'offered') continue;
      const { mac, ip, expiresAt, hostname } = lease;
      changes.push({ kind: 'bind', mac, ip, expiresAt, hostname });
      if (lease.state === 'free') changes.push({ kind: 'release', mac, ip, at: expiresAt });
    }
    for (const [ip, until] of this.declinedUntil) {
      if (until > now) changes.push({ kind: 'decline', ip, until });
    }
    return changes;
  }

  /** Whether `ip` may be given to `mac` now: not held by another client, not declined, not reserved for another. */
  isAvailable(ip: number, mac: Mac, reservations: Reservations, now: number): boolean {
    const reservedFor = reservations.get(ip);
    if (reservedFor !== undefined && reservedFor !== mac) return false;
    const declined = this.declinedUntil.get(ip);
    if (declined !== undefined && declined > now) return false;
    const holder = this.byIp.get(ip);
    return !holder || holder.mac === mac || holder.state === 'free' || heldUntil(holder) <= now;
  }

  /**
   * RFC 2131 §4.3.1 order: the client's reservation, its current or previous address, then the
   * address it asks for, then a free one. Never-used addresses go first so an expired lease stays with its old
   * owner as long as possible; undefined when the pool is exhausted.
   */
  chooseAddress(request: {
    mac: Mac;
    reserved: number | undefined;
    requested: number | undefined;
    pool: Pool;
    reservations: Reservations;
    now: number;
  }): number | undefined {
    const { mac, reserved, requested, pool, reservations, now } = request;
    if (
      reserved !== undefined &&
      cidrContains(pool.subnet, reserved) &&
      !pool.excluded.has(reserved) &&
      this.isAvailable(reserved, mac, reservations, now)
    ) {
      return reserved;
    }
    const usable = (ip: number) =>
      ip >= pool.first &&
      ip <= pool.last &&
      !pool.excluded.has(ip) &&
      this.isAvailable(ip, mac, reservations, now);
    const own = this.byMac.get(mac);
    if (own && usable(own.ip)) return own.ip;
    if (requested !== undefined && usable(requested)) return requested;

    const known = this.exhausted.get(pool);
    if (known && known.reservations === reservations && now < known.until) return undefined;
    const found = this.searchPool(pool, reservations, usable);
    // Pools of configs reloaded since stay until a drop or release clears them all: bounded here.
    if (this.exhausted.size >= 64) this.exhausted.clear();
    if (found === undefined) this.exhausted.set(pool, { reservations, until: this.nextRelease(pool, now) });
    else this.exhausted.delete(pool);
    return found;
  }

  /** A never-used address from the cursor on, else the address whose lease ended longest ago. */
  private searchPool(
    pool: Pool,
    reservations: Reservations,
    usable: (ip: number) => boolean,
  ): number | undefined {
    const size = pool.last - pool.first + 1;
    // A cursor outside the range is from before a reload moved it.
    const cursor = this.cursors.get(pool.name);
    const start = cursor !== undefined && cursor >= pool.first && cursor <= pool.last ? cursor : pool.first;
    for (let step = 0; step < size; step += 1) {
      const ip = pool.first + ((start - pool.first + step) % size);
      if (!this.byIp.has(ip) && !reservations.has(ip) && !pool.excluded.has(ip) && usable(ip)) {
        this.cursors.set(pool.name, ip + 1 > pool.last ? pool.first : ip + 1);
        return ip;
      }
    }
    let oldest: Lease | undefined;
    for (const lease of this.byIp.values()) {
      if (!cidrContains(pool.subnet, lease.ip) || !usable(lease.ip)) continue;
      if (!oldest || lease.expiresAt < oldest.expiresAt) oldest = lease;
    }
    return oldest?.ip;
  }

  /** When the first held or declined address of the pool becomes free again, as things stand. */
  private nextRelease(pool: Pool, now: number): number {
    let until = Number.POSITIVE_INFINITY;
    const inPool = (ip: number) => ip >= pool.first && ip <= pool.last;
    for (const lease of this.byIp.values()) {
      const held = heldUntil(lease);
      if (inPool(lease.ip) && held > now) until = Math.min(until, held);
    }
    for (const [ip, declined] of this.declinedUntil) {
      if (inPool(ip) && declined > now) until = Math.min(until, declined);
    }
    return until;
  }

  private drop(lease: Lease): void {
    this.exhausted.clear();
    if (this.byIp.get(lease.ip) === lease) this.byIp.delete(lease.ip);
    if (this.byMac.get(lease.mac) === lease) this.byMac.delete(lease.mac);
  }
}

/** When the address of `lease` is free for another client, as far as the lease and its offer go. */
function heldUntil(lease: Lease): number {
  return Math.max(lease.expiresAt, lease.offerHeldUntil ?? lease.expiresAt);
}
