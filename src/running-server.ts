import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { isObject } from './json.js';
import { isRunning } from './lab/command.js';
import { stateFileError } from './state-error.js';

/**
 * Where a running `serve` says what it runs with. The CLI's verbs find a server through its config
 * file, but the file may hold an edit the server has not taken: a new server.http.port waits for a
 * restart, and an edit the server refused leaves the file saying things the server does not run
 * with. The server's own word on where it answers is this file in its server.state.
 */
export const RUNNING_SERVER_FILE = 'serve-running.json';

export interface RunningServer {
  pid: number;
  /** `http://<server.address>:<server.http.port>` as the server runs. */
  url: string;
  /**
   * The fingerprint of the secret its machine tokens are signed with (secretFingerprint): the file
   * in server.state may have been replaced since it started. Absent in files older servers wrote.
   */
  secretFingerprint?: string;
}

/**
 * What tells the announcing process from a later one with its PID (a server killed with -9 leaves
 * the file; after a reboot, or in a container where the server is PID 1, that PID runs again):
 * the host, and the process's start time in clock ticks since boot (/proc/PID/stat, field 22).
 */
interface Announcement extends RunningServer {
  host: string;
  startTicks: string | undefined;
}

/** Written once HTTP listens; the returned function removes it (the server's close). */
export async function announceRunningServer(
  state: string,
  running: RunningServer,
): Promise<() => Promise<void>> {
  const file = join(state, RUNNING_SERVER_FILE);
  const draft = `${file}.${process.pid}`;
  const announcement: Announcement = {
    ...running,
    host: hostname(),
    startTicks: await processStartTicks(running.pid),
  };
  try {
    await writeFile(draft, `${JSON.stringify(announcement)}\n`);
    await rename(draft, file);
  } catch (error) {
    // Every start names its draft by its own PID: one left behind would stay for good.
    await rm(draft, { force: true });
    throw stateFileError('cannot write', file, error);
  }
  return () => rm(file, { force: true });
}

/**
 * The server running on `state`, or undefined: none announced, or the one that did is gone (killed)
 * and its PID may now be another process's, or it runs on another host (a shared state directory).
 */
export async function readRunningServer(state: string): Promise<RunningServer | undefined> {
  let text: string;
  try {
    text = await readFile(join(state, RUNNING_SERVER_FILE), 'utf8');
  } catch {
    return undefined;
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isObject(data) || typeof data.pid !== 'number' || typeof data.url !== 'string') return undefined;
  if (data.host !== hostname() || !isRunning(data.pid)) return undefined;
  if (data.startTicks !== (await processStartTicks(data.pid))) return undefined;
  const running: RunningServer = { pid: data.pid, url: data.url };
  if (typeof data.secretFingerprint === 'string') running.secretFingerprint = data.secretFingerprint;
  return running;
}

async function processStartTicks(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // Field 2, the command name, may hold spaces and parentheses: count from the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}
