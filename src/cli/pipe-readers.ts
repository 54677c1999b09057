import { fstatSync, readdirSync, readFileSync, type Stats, statSync } from 'node:fs';
import { isRunning } from '../lab/command.js';

/** How often the readers are looked at: their PIDs only, a few kill(2) calls. */
const CHECK_MS = 500;

/**
 * Calls `onGone` once the pipe on `fd` has lost its readers, without writing to it: `logs -f |
 * head -1` would otherwise learn that head is gone (EPIPE) only at the next event, maybe hours
 * later. Linux answers a zero-length write to such a pipe with 0, not EPIPE, and Node cannot poll(2)
 * an fd for POLLERR, so the readers are found in /proc: the processes holding the pipe open for
 * reading, looked up once, then watched by PID; when all are gone, /proc is asked again (a reader
 * may have handed the pipe to a child). Processes whose fds this user may not see (another user's,
 * a setuid `sudo tee`) can be readers too: with none seen, this says nothing unless it saw them all;
 * the next write still ends the process (main.ts). Not a pipe, or no /proc: nothing to watch.
 * Call it before writing anything: a reader that reads one line and goes (`head -1`) may be gone
 * unseen otherwise. Stops when `signal` aborts.
 */
export function watchPipeReaders(fd: number, signal: AbortSignal, onGone: () => void): void {
  let pipe: Stats;
  try {
    pipe = fstatSync(fd);
  } catch {
    return;
  }
  if (!pipe.isFIFO()) return;
  const lookUp = (seenBefore: boolean) => {
    const found = pipeReaders(pipe.dev, pipe.ino);
    if (signal.aborted || found === undefined) return;
    if (found.readers.length > 0) watch(found.readers);
    // Readers seen to go leave unseen ones unlikely; none ever seen is news only if all were seen.
    else if (seenBefore || found.sawAll) onGone();
  };
  const watch = (readers: number[]) => {
    setTimeout(() => {
      if (signal.aborted) return;
      if (readers.some(isRunning)) watch(readers);
      else lookUp(true);
    }, CHECK_MS).unref();
  };
  lookUp(false);
}

/**
 * The PIDs of other processes with the pipe `dev`/`ino` open for reading, and whether every
 * process's fds could be looked at; undefined without /proc. Synchronous: the tens of thousands
 * of fds of a busy host take milliseconds so, and seconds as that many promises.
 */
function pipeReaders(dev: number, ino: number): { readers: number[]; sawAll: boolean } | undefined {
  let processes: string[];
  try {
    processes = readdirSync('/proc');
  } catch {
    return undefined;
  }
  const readers: number[] = [];
  let sawAll = true;
  for (const name of processes) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${name}/fd`);
    } catch (error) {
      // A process that ended meanwhile had nothing to hide.
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') sawAll = false;
      continue;
    }
    if (fds.some((fd) => readsPipe(`/proc/${name}`, fd, dev, ino))) readers.push(Number(name));
  }
  return { readers, sawAll };
}

function readsPipe(processDirectory: string, fd: string, dev: number, ino: number): boolean {
  try {
    const target = statSync(`${processDirectory}/fd/${fd}`);
    if (target.dev !== dev || target.ino !== ino) return false;
    const flags = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`${processDirectory}/fdinfo/${fd}`, 'utf8'))?.[1];
    // O_WRONLY is 1 in the access mode bits: any other mode reads.
    return flags !== undefined && (Number.parseInt(flags, 8) & 3) !== 1;
  } catch {
    // Closed meanwhile.
    return false;
  }
}
