import type { Mac } from '../boot-plan.js';
import { setNewest } from '../bounded-map.js';
import { ipToNumber } from '../ipv4.js';
import { type LeaseChange, LeaseTable } from './leases.js';

/** Proxy mode learns addresses from requests it overhears; bounded so a busy LAN cannot grow it. */
const LEARNED_ADDRESSES_MAX = 65_536;

/** One change to an AddressBook, as the DHCP thread sends it to the main thread's copy. */
export type AddressNews = { kind: 'lease'; change: LeaseChange } | { kind: 'learned'; ip: string; mac: Mac };

/**
 * Which MAC is behind an address: the lease table (authoritative mode) and the addresses proxy mode
 * overhears. The DHCP server owns one and changes it; the TFTP and HTTP servers ask a copy on the
 * main thread, kept by replaying its changes in the same order (`onNews` → `take`), offers left out.
 */
export class AddressBook {
  readonly leases = new LeaseTable();
  private readonly learned = new Map<string, Mac>();

  constructor(private readonly onNews?: (news: AddressNews) => void) {}

  applyLease(change: LeaseChange): void {
    this.leases.apply(change);
    // macForIp names only holders of bound leases. An offer never takes an address from another
    // client's (LeaseTable.isAvailable), and the bind after it drops the client's own older lease
    // on the copy too: so the copy does without offers, half the lease changes a DORA sends.
    if (change.kind !== 'offer') this.onNews?.({ kind: 'lease', change });
  }

  learn(ip: string, mac: Mac): void {
    setNewest(this.learned, ip, mac, LEARNED_ADDRESSES_MAX);
    this.onNews?.({ kind: 'learned', ip, mac });
  }

  /**
   * Takes what `previous` (a dead thread's copy) learned, as older than what this book learned
   * itself: a new thread starts knowing nothing it overheard, and the TFTP and HTTP events of boots
   * in progress would lose their MAC until each machine's next DHCP packet.
   */
  inheritLearned(previous: AddressBook): void {
    const own = [...this.learned];
    this.learned.clear();
    for (const [ip, mac] of [...previous.learned, ...own])
      setNewest(this.learned, ip, mac, LEARNED_ADDRESSES_MAX);
  }

  take(news: AddressNews): void {
    if (news.kind === 'lease') this.applyLease(news.change);
    else this.learn(news.ip, news.mac);
  }

  /** The MAC holding a bound lease on (authoritative) or last asking for (proxy) an address. */
  macForIp(ip: string, now: number): Mac | undefined {
    // Only proxy mode learns. Its lease table holds what an authoritative run left in the lease log,
    // while the LAN's server now hands out the addresses.
    const learned = this.learned.get(ip);
    if (learned) return learned;
    const lease = this.leases.holderOf(ipToNumber(ip));
    // Bound only: an offer goes to whoever asks in a MAC's name, and the address binding of the
    // Ignition and events tokens rests on this answer.
    return lease && lease.state === 'bound' && lease.expiresAt > now ? lease.mac : undefined;
  }
}
