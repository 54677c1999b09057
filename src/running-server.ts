import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isObject } from './json.js';
import { isRunning } from './lab/command.js';

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
}

/** Written once HTTP listens; the returned function removes it (the server's close). */
export async function announceRunningServer(
  state: string,
  running: RunningServer,
): Promise<() => Promise<void>> {
  const file = join(state, RUNNING_SERVER_FILE);
  const draft = `${file}.${process.pid}`;
  await writeFile(draft, `${JSON.stringify(running)}\n`);
  await rename(draft, file);
  return () => rm(file, { force: true });
}

/** The server running on `state`, or undefined: none announced, or its process is gone (killed). */
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
  return isRunning(data.pid) ? { pid: data.pid, url: data.url } : undefined;
}
