/**
 * The lease log on a file system that fills up mid-write, run on a small tmpfs of its own:
 *   unshare -m sh -c 'mount -t tmpfs -o size=16k tmpfs DIR && exec node --import tsx test/dhcp/full-disk.ts DIR'
 * One lease is appended, the file system is filled, 100 more are appended at once (their batch
 * fits only in part), the space is freed and one last lease is appended. Prints
 * `RESULT {"resolved","replayed","tornLines"}`: the MACs whose append resolved, and what a reopen
 * replays.
 */
import { unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Mac } from '../../src/boot-plan.js';
import { LeaseLog } from '../../src/dhcp/lease-log.js';
import { type LeaseChange, LeaseTable } from '../../src/dhcp/leases.js';
import { fill } from '../helpers/root.js';

const directory = process.argv[2];
if (!directory) throw new Error('usage: full-disk.ts DIRECTORY');
const NOW = Date.UTC(2026, 10, 25, 12);
const failOnCompaction = (error: Error) => {
  throw error;
};

type Bind = Extract<LeaseChange, { kind: 'bind' }>;
const bind = (index: number): Bind => ({
  kind: 'bind',
  mac: `52:54:00:51:00:${index.toString(16).padStart(2, '0')}` as Mac,
  ip: 0x0a4d0900 + index,
  expiresAt: NOW + 3_600_000,
});
const resolved: string[] = [];
const append = (log: LeaseLog, change: Bind) =>
  log.append(change).then(
    () => resolved.push(change.mac),
    () => undefined,
  );

const table = new LeaseTable();
const opened = await LeaseLog.open(directory, () => table.snapshot(NOW), failOnCompaction);
await opened.log.compact();
await append(opened.log, bind(0));

const filler = join(directory, 'filler');
fill(filler);
await Promise.all(Array.from({ length: 100 }, (_, index) => append(opened.log, bind(index + 1))));
unlinkSync(filler);
await append(opened.log, bind(101));
await opened.log.close();

const reopened = await LeaseLog.open(directory, () => [], failOnCompaction);
await reopened.log.close();
const replayed = reopened.changes.flatMap((change) => (change.kind === 'bind' ? [change.mac] : []));
process.stdout.write(`RESULT ${JSON.stringify({ resolved, replayed, tornLines: reopened.tornLines })}\n`);
