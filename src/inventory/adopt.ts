import { randomUUID } from 'node:crypto';
import { readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { setTimeout } from 'node:timers/promises';
import { isMap, isScalar, isSeq, parse, parseDocument } from 'yaml';
import { runModuleWorker } from '../worker-thread.js';
import { loadConfigText } from './load.js';
import { type Mac, parseMac } from './mac.js';
import { formatProblem } from './problems.js';
import { VALIDATE_CHECKS } from './validate-checks.js';

export interface AdoptRequest {
  mac: Mac;
  profile: string;
  hostname?: string | undefined;
}

export type AdoptResult =
  | { ok: true; text: string }
  | { ok: false; code: 'already-listed' | 'unknown-profile' | 'invalid' | 'busy'; message: string };

/**
 * Adds `{mac, hostname, profile}` to the end of `machines` in the YAML text. The Document is only
 * read to find where the list is; the entry is spliced into the text, so every other byte (comments,
 * blank lines, alignment, flow collections) stays as the operator wrote it. The entry takes the
 * style of the entries before it (block or flow map, same indentation).
 */
export function adoptMachine(text: string, request: AdoptRequest): AdoptResult {
  const document = parseDocument(text);
  if (document.errors.length > 0) {
    return {
      ok: false,
      code: 'invalid',
      message: `the config does not parse: ${document.errors[0]?.message}`,
    };
  }
  const profiles = document.get('profiles');
  if (!isMap(profiles) || !profiles.has(request.profile)) {
    return {
      ok: false,
      code: 'unknown-profile',
      message: `no profile named ${request.profile} under profiles`,
    };
  }
  const fields: [string, string][] = [
    ['mac', request.mac],
    ...(request.hostname ? [['hostname', request.hostname] as [string, string]] : []),
    ['profile', request.profile],
  ];
  const node = document.get('machines', true);
  if (node !== undefined && !isSeq(node) && !(isScalar(node) && node.value === null)) {
    return { ok: false, code: 'invalid', message: 'machines is not a list' };
  }
  const items = isSeq(node) ? node.items : [];
  const listed = items.some((item) => {
    const mac = isMap(item) ? item.get('mac') : undefined;
    return typeof mac === 'string' && parseMac(mac) === request.mac;
  });
  if (listed)
    return { ok: false, code: 'already-listed', message: `${request.mac} is already under machines` };

  const last = items.at(-1);
  if (isSeq(node) && node.flow && node.range && last) {
    // `machines: [ {...}, {...} ]`: one more flow map before the closing bracket.
    const closing = text.lastIndexOf(']', node.range[1]);
    return { ok: true, text: splice(text, closing, 0, `, ${flowMap(fields)} `) };
  }
  if (isMap(last) && last.range) {
    const first = items[0];
    const firstStart = (isMap(first) && first.range?.[0]) || last.range[0];
    const fieldColumn = columnOf(text, firstStart);
    const dashColumn = columnOf(text, text.lastIndexOf('-', firstStart));
    const entry = last.flow
      ? `${' '.repeat(dashColumn)}- ${flowMap(fields)}\n`
      : blockEntry(fields, dashColumn, fieldColumn);
    return { ok: true, text: insertAfterLine(text, last.range[1], entry) };
  }
  // No entries yet: `machines:`, `machines: []` (flow, emptied into a block list) or no key at all.
  const entry = blockEntry(fields, 2, 4);
  if (node?.range) {
    const emptied = isSeq(node) ? splice(text, node.range[0], node.range[1] - node.range[0], '') : text;
    return { ok: true, text: insertAfterLine(emptied, node.range[0], entry) };
  }
  const separator = text.length === 0 || text.endsWith('\n') ? '' : '\n';
  return { ok: true, text: `${text}${separator}machines:\n${entry}` };
}

function blockEntry(fields: [string, string][], dashColumn: number, fieldColumn: number): string {
  return fields
    .map(([key, value], index) =>
      index === 0
        ? `${' '.repeat(dashColumn)}-${' '.repeat(Math.max(1, fieldColumn - dashColumn - 1))}${key}: ${scalar(value)}\n`
        : `${' '.repeat(fieldColumn)}${key}: ${scalar(value)}\n`,
    )
    .join('');
}

function flowMap(fields: [string, string][]): string {
  return `{ ${fields.map(([key, value]) => `${key}: ${scalar(value)}`).join(', ')} }`;
}

/** Plain when YAML reads it back as the same string (a MAC, a hostname); quoted otherwise (`true`, `123`). */
function scalar(value: string): string {
  return parse(`${value}\n`) === value ? value : JSON.stringify(value);
}

function splice(text: string, at: number, remove: number, insert: string): string {
  return text.slice(0, at) + insert + text.slice(at + remove);
}

function lineStart(text: string, offset: number): number {
  return text.lastIndexOf('\n', offset - 1) + 1;
}

function columnOf(text: string, offset: number): number {
  return offset - lineStart(text, offset);
}

/** Inserts whole lines after the line that holds `offset` (ending that line first at the end of the text). */
function insertAfterLine(text: string, offset: number, lines: string): string {
  const newline = text.indexOf('\n', Math.max(0, offset - 1));
  return newline === -1 ? `${text}\n${lines}` : splice(text, newline + 1, 0, lines);
}

/** How long an adopt waits for another one (the server's, another CLI's) to finish with the file. */
const LOCK_WAIT_MS = 30_000;
const LOCK_POLL_MS = 50;

/**
 * Adopts into the config file: the new text must pass the checks of `rackboot validate`
 * (VALIDATE_CHECKS), then replaces the file atomically, keeping its mode, so a watching server
 * reloads a whole file, never a half-written one. Adopts of one file take turns (lockConfigFile), so
 * two never start from the same text and lose each other's machine; a file changed meanwhile by
 * anything else (an editor) is left alone and the adopt refused.
 */
export async function adoptIntoFile(file: string, request: AdoptRequest): Promise<AdoptResult> {
  const lock = await lockConfigFile(file);
  if (!lock.ok) return lock;
  try {
    const original = await readFile(file, 'utf8');
    const adopted = adoptMachine(original, request);
    if (!adopted.ok) return adopted;
    const loaded = await loadConfigText(adopted.text, file, VALIDATE_CHECKS);
    if (!loaded.ok) {
      const message = loaded.problems.map((problem) => formatProblem(problem)).join('\n');
      return { ok: false, code: 'invalid', message: `the config would not be valid:\n${message}` };
    }
    const temporary = `${file}.adopt-${randomUUID()}`;
    await writeFile(temporary, adopted.text, { mode: (await stat(file)).mode & 0o777 });
    if ((await readFile(file, 'utf8')) !== original) {
      await rm(temporary, { force: true });
      return {
        ok: false,
        code: 'busy',
        message: `${file} changed while adopting; nothing written, run it again`,
      };
    }
    await rename(temporary, file);
    return adopted;
  } finally {
    await lock.release();
  }
}

type ConfigLock = { ok: true; release(): Promise<void> } | { ok: false; code: 'busy'; message: string };

/**
 * An exclusive lock file next to the config, holding the holder's pid; across processes, as the
 * server and a CLI may adopt at once. A lock whose holder no longer runs (a killed CLI) is taken over.
 */
async function lockConfigFile(file: string): Promise<ConfigLock> {
  const path = `${file}.adopt-lock`;
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      await writeFile(path, `${process.pid}\n`, { flag: 'wx' });
      return { ok: true, release: () => rm(path, { force: true }) };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    // Empty while its holder is still writing it: wait, as for a live holder.
    const holder = Number((await readFile(path, 'utf8').catch(() => '')).trim());
    if (holder > 0 && !isRunning(holder)) {
      await rm(path, { force: true });
      continue;
    }
    if (Date.now() >= deadline) {
      return {
        ok: false,
        code: 'busy',
        message: `another adopt still holds ${path} after ${LOCK_WAIT_MS / 1000} s; if none is running, delete that file`,
      };
    }
    await setTimeout(LOCK_POLL_MS);
  }
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it runs, as another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface AdoptInWorker {
  file: string;
  request: AdoptRequest;
}

/**
 * adoptIntoFile in a worker thread, for the running server: with 10,000 machines, parsing the config
 * twice (to find the list, then to validate the result) takes seconds the DHCP and TFTP packet loop
 * must not wait (load-in-worker.ts measures the same parse). One at a time: each worker holds a parse
 * of the whole config, and concurrent ones would only wait on the file's lock.
 */
export function adoptInWorker(file: string, request: AdoptRequest): Promise<AdoptResult> {
  const adopted = serverAdopts.then(() =>
    runModuleWorker<AdoptResult>('adopt-worker', import.meta.url, { file, request } satisfies AdoptInWorker),
  );
  serverAdopts = adopted.catch(() => undefined);
  return adopted;
}

let serverAdopts: Promise<unknown> = Promise.resolve();
