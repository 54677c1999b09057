import { setNewest } from './bounded-map.js';

/**
 * Bounded rate limits for what any datagram can trigger (an ERROR reply, a recorded refusal): the
 * servers must not become reflectors, nor let a flood fill the history or the log.
 */

/**
 * What a record carries of the refusals left out before it, each field only when there were any:
 * spread into the log line or event as it is.
 */
export interface LeftOut {
  /** Repeats of this key since its last record. */
  suppressed?: number;
  /**
   * Repeats of other keys, left out and then dropped with their key from the full memo before it
   * was recorded again: counted on the next record of any key, so a flood of new keys loses none.
   */
  suppressedElsewhere?: number;
}

/**
 * Whether a refusal under `key` (client IP, file, reason) is recorded: a repeat within `intervalMs`
 * of the last record is not (undefined), and counts toward the `suppressed` number the next record
 * carries; a new key is recorded when `admit` (the client's and the global record budget) allows.
 * At most `maxKeys` keys, the one recorded longest ago dropped for a new one (its count goes to
 * `suppressedElsewhere`).
 */
export function refusalLimiter(
  intervalMs: number,
  maxKeys: number,
): (key: string, now: number, admit: () => boolean) => LeftOut | undefined {
  const memo = new Map<string, { recordedAt: number; suppressed: number }>();
  let suppressedElsewhere = 0;
  const remember = (key: string, entry: { recordedAt: number; suppressed: number }) => {
    suppressedElsewhere += setNewest(memo, key, entry, maxKeys)?.suppressed ?? 0;
  };
  return (key, now, admit) => {
    const entry = memo.get(key);
    if (entry !== undefined && now - entry.recordedAt < intervalMs) {
      entry.suppressed += 1;
      return undefined;
    }
    if (!admit()) {
      // Not recorded, but owed to the history: the key's next record carries it.
      if (entry) entry.suppressed += 1;
      else remember(key, { recordedAt: Number.NEGATIVE_INFINITY, suppressed: 1 });
      return undefined;
    }
    remember(key, { recordedAt: now, suppressed: 0 });
    const leftOut: LeftOut = {};
    if (entry && entry.suppressed > 0) leftOut.suppressed = entry.suppressed;
    if (suppressedElsewhere > 0) leftOut.suppressedElsewhere = suppressedElsewhere;
    suppressedElsewhere = 0;
    return leftOut;
  };
}

/**
 * tokenBucket per key, for at most `maxKeys` keys: the least recently used is dropped for a new one
 * (a flood of new keys resets the buckets of old ones, which a shared limit must still bound).
 */
export function tokenBuckets(rate: Rate, maxKeys: number): (key: string, now: number) => boolean {
  const buckets = new Map<string, (now: number) => boolean>();
  return (key, now) => {
    const bucket = buckets.get(key) ?? tokenBucket(rate);
    setNewest(buckets, key, bucket, maxKeys);
    return bucket(now);
  };
}

/** `perSecond` on average, in bursts of up to `burst` (default: one second's worth). */
export interface Rate {
  perSecond: number;
  burst?: number;
}

/** true while under the rate. */
export function tokenBucket({ perSecond, burst = perSecond }: Rate): (now: number) => boolean {
  let tokens = burst;
  let updatedAt = 0;
  return (now) => {
    tokens = Math.min(burst, tokens + ((now - updatedAt) / 1000) * perSecond);
    updatedAt = now;
    if (tokens < 1) return false;
    tokens -= 1;
    return true;
  };
}

/**
 * Reports of a write that keeps failing (a full disk) while it is tried again on every packet or
 * batch: at most one line per `intervalMs`, carrying what was left out since the line before, and
 * one line once a write succeeds after a failure a line told of. A disk at the edge lets small
 * writes through and fails larger ones: the interval spans those spells, so they make no more lines.
 */
export function failureReporter(options: {
  intervalMs: number;
  /** A line for the failure: `leftOut` counts what was lost since the line before, this one's included. */
  report: (error: unknown, leftOut: number) => void;
  /** Writes succeed again; `leftOut` counts what was lost since the failure began. */
  recovered: (leftOut: number) => void;
}): { failed: (error: unknown, leftOut: number) => void; succeeded: () => void } {
  let reportedAt = Number.NEGATIVE_INFINITY;
  let leftOutSinceReport = 0;
  /** Writes are failing; `reported` once a line told of it. */
  let spell: { reported: boolean; leftOut: number } | undefined;
  return {
    failed(error, leftOut) {
      spell ??= { reported: false, leftOut: 0 };
      spell.leftOut += leftOut;
      leftOutSinceReport += leftOut;
      const now = performance.now();
      if (now - reportedAt < options.intervalMs) return;
      options.report(error, leftOutSinceReport);
      reportedAt = now;
      leftOutSinceReport = 0;
      spell.reported = true;
    },
    succeeded() {
      if (spell?.reported) options.recovered(spell.leftOut);
      spell = undefined;
    },
  };
}
