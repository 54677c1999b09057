import { randomBytes } from 'node:crypto';
import { renameSync } from 'node:fs';
import { lstat, open, readdir, realpath, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { type Document, isMap, isNode, isScalar, isSeq, parse, parseDocument } from 'yaml';
import { giveTo, makeDirectory, syncDirectory } from '../durable-file.js';
import { type FileLockOptions, withFileLock } from '../file-lock.js';
import { checkArguments, checkTemplate } from '../ignition/check.js';
import { isRunning, removeOrphans } from '../lab/command.js';
import { readRegularFileSync } from '../regular-file.js';
import { runModuleWorker } from '../worker-thread.js';
import { type LoadOptions, loadConfigText } from './load.js';
import { type Mac, parseMac } from './mac.js';
import { badName, isName } from './names.js';
import { parseWithPositions, readConfigFile, textAsWritten, yamlProblems } from './parse.js';
import { closestName, formatProblem, type Problem, problemsAfterColon } from './problems.js';
import { ConfigSchema } from './schema.js';
import { type ConfigSource, missingUnderRunningAssets } from './source.js';

export interface AdoptRequest {
  mac: Mac;
  profile: string;
  hostname?: string | undefined;
  /** The machine's `vars` (for `{{vars.NAME}}` in its templates); names follow names.ts. */
  vars?: Record<string, string> | undefined;
}

export type AdoptResult =
  /**
   * `warnings`: what the config loader warns of on the new entry's own lines (a hostname another
   * machine has too), one FILE:LINE:COL line each; written all the same, as the server serves it.
   */
  | { ok: true; text: string; warnings?: string[] }
  | { ok: false; code: 'already-listed' | 'unknown-profile' | 'invalid' | 'busy'; message: string }
  /**
   * `rejected`: the config with the machine would not load in `rackboot serve`, nothing written;
   * `not-applied`: written, but the running server's reload of it was rejected all the same.
   * `problems`: one FILE:LINE:COL line each.
   */
  | { ok: false; code: 'rejected' | 'not-applied'; message: string; problems: string[] };

/**
 * What the new text is checked with: what `rackboot serve` checks a config with at start and at
 * each reload (source.ts), so an adopt never writes a file the server would refuse while the
 * machine stays unlisted. Boot assets must exist, unlike in `rackboot validate`.
 */
export interface AdoptChecks {
  /** As the server's own loads take them; default `error`, as `serve` does. */
  missingAssets?: LoadOptions['missingAssets'];
  /**
   * The server.assets a running server serves from (it keeps it until a restart): while the file
   * names another one, the profiles' files must exist under this one too.
   */
  runningAssets?: string | undefined;
}

/**
 * Adds `{mac, hostname, profile, vars}` to the end of `machines` in the YAML text. The Document is only
 * read to find where the list is; the entry is spliced into the text, so every other byte (comments,
 * blank lines, alignment, flow collections) stays as the operator wrote it. The entry takes the
 * style of the entries before it (block or flow map, same indentation). `document` is the text's
 * parse, when the caller has it already.
 */
export function adoptMachine(
  text: string,
  request: AdoptRequest,
  document: Document = parseDocument(text),
): AdoptResult {
  if (document.errors.length > 0) {
    return {
      ok: false,
      code: 'invalid',
      message: `the config does not parse: ${document.errors[0]?.message}`,
    };
  }
  const profiles = document.get('profiles');
  // As the loader reads profile keys: `007:` names profile "007", which YAML reads as the number 7.
  const names = isMap(profiles)
    ? profiles.items.map((item) =>
        isScalar(item.key) ? (textAsWritten(item.key) ?? String(item.key.value)) : String(item.key),
      )
    : [];
  if (!names.includes(request.profile)) {
    const closest = closestName(request.profile, names);
    const hint = closest
      ? ` (did you mean "${closest}"?)`
      : names.length > 0
        ? ` (there are ${names.join(', ')})`
        : '';
    return {
      ok: false,
      code: 'unknown-profile',
      message: `no profile named ${request.profile} under profiles${hint}`,
    };
  }
  const misnamed = Object.keys(request.vars ?? {}).find((name) => !isName(name));
  if (misnamed !== undefined) return { ok: false, code: 'invalid', message: badName('vars', misnamed) };
  const vars = Object.entries(request.vars ?? {});
  // Each value is YAML text already: `vars` is a flow map in block and flow entries alike.
  const fields: [string, string][] = [
    ['mac', scalar(request.mac)],
    ...(request.hostname ? [['hostname', scalar(request.hostname)] as [string, string]] : []),
    ['profile', scalar(request.profile)],
    ...(vars.length > 0
      ? [['vars', flowMap(vars.map(([name, value]) => [name, scalar(value)]))] as [string, string]]
      : []),
  ];
  const node = document.get('machines', true);
  if (node !== undefined && !isSeq(node) && !(isScalar(node) && node.value === null)) {
    return { ok: false, code: 'invalid', message: 'machines is not a list' };
  }
  const items = isSeq(node) ? node.items : [];
  const listed = items.some((item) => {
    const mac = isMap(item) ? item.get('mac', true) : undefined;
    const written = isScalar(mac) ? textAsWritten(mac) : undefined;
    return written !== undefined && parseMac(written) === request.mac;
  });
  if (listed)
    return { ok: false, code: 'already-listed', message: `${request.mac} is already under machines` };

  // The file's own line ending: an entry in LF lines would leave a CRLF file with mixed endings.
  const newline = lineEndingOf(text);
  const last = items.at(-1);
  if (isSeq(node) && node.flow && node.range && last) {
    const closing = text.lastIndexOf(']', node.range[1]);
    const entry = flowMap(fields);
    // An item that is no node (`[mac: …]` reads as a pair) has no range: the entry goes before the bracket.
    const lastRange = (isNode(last) && last.range) || undefined;
    if (!lastRange) return { ok: true, text: splice(text, closing, 0, `, ${entry} `) };
    const trailingComma = trailingCommaOffset(text, lastRange[1], closing);
    const separatorEnd = trailingComma === undefined ? lastRange[1] : trailingComma + 1;
    if (text.slice(separatorEnd, closing).includes('\n')) {
      // The bracket on a later line: one entry a line, so the new one gets its own line at the last
      // one's column, and a comma before it (a comma or none after it, as after the last one).
      const separated = trailingComma === undefined ? splice(text, separatorEnd, 0, ',') : text;
      const line = `${' '.repeat(columnOf(text, lastRange[0]))}${entry}${trailingComma === undefined ? '' : ','}${newline}`;
      return { ok: true, text: insertAfterLine(separated, separatorEnd, line, newline) };
    }
    // `machines: [ {...}, {...} ]` or `[ {...}, ]`: one more flow map on the same line, with the
    // list's own trailing comma kept.
    return {
      ok: true,
      text:
        trailingComma === undefined
          ? splice(text, closing, 0, `, ${entry} `)
          : splice(text, separatorEnd, 0, ` ${entry},`),
    };
  }
  if (isSeq(node) && node.range && isMap(last) && last.range) {
    const first = items[0];
    const firstStart = (isMap(first) && first.range?.[0]) || last.range[0];
    const fieldColumn = columnOf(text, firstStart);
    // A block list starts at its first dash, and all its dashes share that column; a `-` looked for
    // back from the first key can be one in a comment or an anchor (`- &node-1`).
    const dashColumn = columnOf(text, node.range[0]);
    const entry = last.flow
      ? `${' '.repeat(dashColumn)}- ${flowMap(fields)}${newline}`
      : blockEntry(fields, dashColumn, fieldColumn, newline);
    return {
      ok: true,
      text: insertAfterLine(text, entryEnd(text, last.range[1], dashColumn), entry, newline),
    };
  }
  // The list below is rewritten only when it has no entry: one that is no map (`- 52:54:…`, a bare
  // `-`) would go with it, and every machine listed before it.
  if (items.length > 0) {
    return {
      ok: false,
      code: 'invalid',
      message: `machines[${items.length - 1}] is not a machine entry (mac:, profile: …); fix it first`,
    };
  }
  const root = document.contents;
  if (isMap(root) && root.flow && root.range) {
    // A config written as one flow map (JSON) cannot hold a block list: a flow list of one entry
    // takes the place of the empty one, or goes first in the map.
    const list = `[${flowMap(fields)}]`;
    if (node?.range)
      return { ok: true, text: splice(text, node.range[0], node.range[1] - node.range[0], list) };
    const opening = root.range[0] + 1;
    return {
      ok: true,
      text: splice(text, opening, 0, ` machines: ${list}${root.items.length > 0 ? ',' : ' '}`),
    };
  }
  // No entries yet: `machines:`, `machines: []` (flow, emptied into a block list) or no key at all.
  const entry = blockEntry(fields, 2, 4, newline);
  if (node?.range) {
    const emptied = isSeq(node) ? splice(text, node.range[0], node.range[1] - node.range[0], '') : text;
    return { ok: true, text: insertAfterLine(emptied, node.range[0], entry, newline) };
  }
  // Before a document end marker (`...`): after it the list would start a second document.
  const endMarker = documentEndMarker(text, document);
  if (endMarker !== undefined)
    return { ok: true, text: splice(text, endMarker, 0, `machines:${newline}${entry}`) };
  const separator = text.length === 0 || text.endsWith('\n') ? '' : newline;
  return { ok: true, text: `${text}${separator}machines:${newline}${entry}` };
}

/** The offset of the document's end marker (`...` at the start of a line), if it has one. */
function documentEndMarker(text: string, document: Document): number | undefined {
  if (!document.directives?.docEnd || !document.range) return undefined;
  // Only comments and blank lines lie between the end of the contents and the marker.
  const contentsEnd = document.range[1];
  const marker = /^\.\.\.(?=\s|$)/m.exec(text.slice(contentsEnd));
  return marker ? contentsEnd + marker.index : undefined;
}

/** CRLF when the file's first line ends so, LF otherwise (and for a file of one line). */
function lineEndingOf(text: string): '\r\n' | '\n' {
  const firstNewline = text.indexOf('\n');
  return firstNewline > 0 && text[firstNewline - 1] === '\r' ? '\r\n' : '\n';
}

/**
 * The offset of a comma between the end of a flow list's last item and its closing bracket, if the
 * list has a trailing comma. Only spaces, line breaks, comments and that comma can be there.
 */
function trailingCommaOffset(text: string, lastItemEnd: number, closing: number): number | undefined {
  const between = text
    .slice(lastItemEnd, closing)
    .replace(/#[^\r\n]*/g, (comment) => ' '.repeat(comment.length));
  const comma = between.indexOf(',');
  return comma === -1 ? undefined : lastItemEnd + comma;
}

function blockEntry(
  fields: [string, string][],
  dashColumn: number,
  fieldColumn: number,
  newline: string,
): string {
  return fields
    .map(([key, value], index) =>
      index === 0
        ? `${' '.repeat(dashColumn)}-${' '.repeat(Math.max(1, fieldColumn - dashColumn - 1))}${key}: ${value}${newline}`
        : `${' '.repeat(fieldColumn)}${key}: ${value}${newline}`,
    )
    .join('');
}

function flowMap(fields: [string, string][]): string {
  return `{ ${fields.map(([key, value]) => `${key}: ${value}`).join(', ')} }`;
}

/**
 * Plain when YAML reads it back as the same string in a block and in a flow map (a MAC, a hostname);
 * quoted otherwise (`true`, `123`, `a, b`, `{x}`).
 */
function scalar(value: string): string {
  const readsBack = (text: string, read: (parsed: unknown) => unknown) => {
    try {
      return read(parse(text)) === value;
    } catch {
      return false;
    }
  };
  const plain =
    readsBack(`${value}\n`, (parsed) => parsed) &&
    readsBack(`{ value: ${value} }`, (parsed) => (parsed as { value?: unknown } | null)?.value);
  return plain ? value : JSON.stringify(value);
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

/**
 * Inserts whole lines after the line that holds `offset` (ending that line first, with `newline`,
 * at the end of the text).
 */
/**
 * Where a block list's last entry ends for an insert after it: past the comment lines indented
 * deeper than its dash that follow it (a commented-out key of that entry, `    # ip: …`), and the
 * blank lines among them. A comment at the dash's column or left of it is the file's, not the entry's.
 */
function entryEnd(text: string, valueEnd: number, dashColumn: number): number {
  let end = valueEnd;
  for (let lineStart = text.indexOf('\n', Math.max(0, valueEnd - 1)) + 1; lineStart > 0; ) {
    const next = text.indexOf('\n', lineStart);
    const line = text.slice(lineStart, next === -1 ? text.length : next).replace(/\r$/, '');
    const content = line.trimStart();
    if (content !== '') {
      if (!content.startsWith('#') || line.length - content.length <= dashColumn) break;
      end = lineStart + line.length;
    }
    lineStart = next + 1;
  }
  return end;
}

function insertAfterLine(text: string, offset: number, lines: string, newline: string): string {
  const lineEnd = text.indexOf('\n', Math.max(0, offset - 1));
  return lineEnd === -1 ? `${text}${newline}${lines}` : splice(text, lineEnd + 1, 0, lines);
}

/** The adopt lock, under server.state: beside the config it would clutter a directory often kept in git. */
export const ADOPT_LOCK_PATH = 'adopt.lock';
/** How long an adopt waits for another one (the server's, another CLI's) to finish with the file. */
const LOCK_WAIT_MS = 30_000;
const DEFAULT_STATE_DIRECTORY: string = ConfigSchema.properties.server.properties.state.default;

/**
 * Adopts into the config file: the new text must pass the checks of `rackboot serve` (AdoptChecks),
 * then replaces the file atomically (replaceFile), keeping its mode and owner, so a watching server
 * reloads a whole file, never a half-written one. Adopts of one file take turns, holding the lock
 * `<server.state>/adopt.lock` from reading the file to renaming over it, so two never start from the
 * same text and lose each other's machine; a file changed meanwhile by anything else (an editor) is
 * left alone and the adopt refused.
 */
export async function adoptIntoFile(
  file: string,
  request: AdoptRequest,
  checks: AdoptChecks = {},
): Promise<AdoptResult> {
  // The file names its own lock's place, so the server and a CLI find the same one whatever state
  // directory the server started with. It is read again under the lock; the first parse (a second
  // for 10,000 machines) is kept when nothing changed in between.
  const beforeLock = await readToEdit(file);
  if (!beforeLock.ok) return unreadableRefusal(beforeLock.problems);
  const stateDirectory = stateDirectoryOf(file, beforeLock.document);
  // As the server creates it at start: the CLI may adopt before a server ever ran (as root, the new
  // directory goes to the owner of the directory it is in, so the server can still use it).
  await makeDirectory(stateDirectory, 0o750);
  const lockOptions: FileLockOptions = {
    task: 'adopt',
    describeHolder: (pid) => `another adopt (pid ${pid}) is still running`,
    waitMs: LOCK_WAIT_MS,
    error: (message, reason) => (reason === 'held' ? new AdoptLockHeld(message) : new Error(message)),
  };
  try {
    return await withFileLock(join(stateDirectory, ADOPT_LOCK_PATH), lockOptions, async () => {
      const read = await readToEdit(file, beforeLock);
      if (!read.ok) return unreadableRefusal(read.problems);
      // server.state changed meanwhile: adopts of the file as it is now take another lock, not this one.
      if (stateDirectoryOf(file, read.document) !== stateDirectory) return changedWhileAdopting(file);
      return adoptHoldingLock(file, read.text, read.document, request, checks);
    });
  } catch (error) {
    if (error instanceof AdoptLockHeld) return { ok: false, code: 'busy', message: error.message };
    throw error;
  }
}

type Editable = { ok: true; text: string; document: Document };

/**
 * The config's text and its parse, or why an adopt cannot edit it, as `rackboot validate` says it
 * (not UTF-8, a YAML syntax error at FILE:LINE:COL): the refusal said only "the config does not
 * parse" with yaml's own message and a snippet, and a Latin-1 file would have been written back
 * with U+FFFD for each of its bytes beyond ASCII. `earlier`: a read whose parse is kept when the
 * text is the same (a second for 10,000 machines).
 */
async function readToEdit(
  file: string,
  earlier?: Editable,
): Promise<Editable | { ok: false; problems: Problem[] }> {
  const read = await readConfigFile(file);
  if (!read.ok) return read;
  if (earlier?.text === read.text) return earlier;
  const { document, lineCounter } = parseWithPositions(read.text);
  const problems = yamlProblems(document, lineCounter, resolve(file), read.text, 'the config');
  return problems.length > 0 ? { ok: false, problems } : { ok: true, text: read.text, document };
}

/** The file cannot be edited as it is: the server's API answers 422 with its problems. */
function unreadableRefusal(problems: Problem[]): AdoptResult {
  const lines = problems.map((problem) => formatProblem(problem));
  return {
    ok: false,
    code: 'rejected',
    message: `nothing written: the config cannot be read as it is; fix it first:${problemsAfterColon(lines)}`,
    problems: lines,
  };
}

/** The lock stayed held for the whole wait: a busy refusal, not a failure. */
class AdoptLockHeld extends Error {}

/** server.state as load.ts resolves it: relative to the config file. */
function stateDirectoryOf(file: string, document: Document): string {
  const state = document.getIn(['server', 'state']);
  return resolve(dirname(resolve(file)), typeof state === 'string' ? state : DEFAULT_STATE_DIRECTORY);
}

async function adoptHoldingLock(
  file: string,
  original: string,
  document: Document,
  request: AdoptRequest,
  checks: AdoptChecks,
): Promise<AdoptResult> {
  const adopted = adoptMachine(original, request, document);
  if (!adopted.ok) return adopted;
  const { loaded, problems } = await checkAsServe(adopted.text, file, checks);
  if (problems.length > 0) {
    // The file may be refused as it is (an edit the running server rejected, a boot asset deleted):
    // then its own problems are what to fix, and the machine is not their cause.
    const problemsWithout = (await checkAsServe(original, file, checks)).problems;
    const refusedAlready = problemsWithout.length > 0;
    const listed = refusedAlready ? problemsWithout : problems;
    const because = refusedAlready ? 'even without this machine; fix it first' : 'with this machine';
    return {
      ok: false,
      code: 'rejected',
      message: `nothing written: rackboot serve would refuse the config ${because}:\n${listed.join('\n')}`,
      problems: listed,
    };
  }
  const written = await replaceFile(file, adopted.text, original);
  if (!written) return changedWhileAdopting(file);
  const added = textAdded(original, adopted.text);
  const lineStarts = [0];
  for (let index = adopted.text.indexOf('\n'); index !== -1; index = adopted.text.indexOf('\n', index + 1))
    lineStarts.push(index + 1);
  const warnings = (loaded.ok ? loaded.warnings : [])
    .filter((warning) => {
      if (resolve(warning.file) !== resolve(file)) return false;
      const offset = (lineStarts[warning.line - 1] ?? Number.NaN) + warning.col - 1;
      return offset >= added.start && offset < added.end;
    })
    .map((warning) => formatProblem(warning));
  return { ...adopted, warnings };
}

/** `text` as `rackboot serve` loads it (AdoptChecks), and its problems, one FILE:LINE:COL line each. */
async function checkAsServe(text: string, file: string, checks: AdoptChecks) {
  const loaded = await loadConfigText(text, file, {
    missingAssets: checks.missingAssets ?? 'error',
    checkTemplate,
    checkArguments,
  });
  const problems = !loaded.ok
    ? loaded.problems.map((problem) => formatProblem(problem))
    : checks.runningAssets !== undefined
      ? missingUnderRunningAssets(loaded.config, checks.runningAssets)
      : [];
  return { loaded, problems };
}

/**
 * The offsets of `after` that `before` lacks, as an adopt splices one entry into the text. By
 * offset, not by line: in a flow list the entry can share a line with the one before it, or give
 * that one a comma, and a warning about that entry is not the new one's.
 */
function textAdded(before: string, after: string): { start: number; end: number } {
  let prefix = 0;
  while (prefix < before.length && before[prefix] === after[prefix]) prefix += 1;
  let suffix = 0;
  while (
    suffix < before.length - prefix &&
    before[before.length - 1 - suffix] === after[after.length - 1 - suffix]
  )
    suffix += 1;
  return { start: prefix, end: after.length - suffix };
}

/**
 * Writes `text` to a temporary file beside the file `file` names (its target, when `file` is a
 * symbolic link: the link stays, and a server watching the target sees the change), with the
 * file's mode and owner (an adopt run as root leaves the file to its owner), fsynced, then renames
 * it over the file, unless the file no longer holds `original`: false then, nothing written.
 * Whole or not at all, even across a power cut; a failure (a full disk) leaves no temporary file
 * and names the file, and one an adopt killed mid-write left is removed by the next.
 */
async function replaceFile(file: string, text: string, original: string): Promise<boolean> {
  let target = file;
  let temporary: string | undefined;
  let renamed = false;
  try {
    target = await realpath(file);
    const { mode, uid, gid } = await stat(target);
    // Drafts are named by their writer's PID: one whose writer is gone was left by an adopt killed
    // mid-write, and would stay for good. One with this process's PID is such a draft too (a server
    // restarted as PID 1 in a container has the PID of the one killed): this process's adopts take
    // turns, under the lock.
    const draftPrefix = `${basename(target)}.adopt-`;
    await removeOrphans(dirname(target), draftPrefix, (pid) => pid !== process.pid && isRunning(pid));
    await removeEarlierVersionsDrafts(dirname(target), draftPrefix);
    temporary = join(dirname(target), `${draftPrefix}${process.pid}-${randomBytes(6).toString('hex')}`);
    const handle = await open(temporary, 'wx', 0o600);
    try {
      await handle.writeFile(text);
      await giveTo(temporary, { uid, gid });
      // Set here, not by `open`, which applies the umask (a 0664 file would become 0644).
      await handle.chmod(mode & 0o777);
      await handle.sync();
    } finally {
      await handle.close();
    }
    // Checked and renamed in one go, nothing between them: awaited, each waited its turn in libuv's
    // thread pool (shared with every TFTP and HTTP file read), and an editor's save landing in
    // between was renamed over, its edit lost while the adopt said it was done.
    if (readRegularFileSync(target)?.toString('utf8') !== original) return false;
    renameSync(temporary, target);
    renamed = true;
    await syncDirectory(dirname(target));
    return true;
  } catch (error) {
    const named = target === file ? file : `${file} (${target})`;
    throw new Error(`cannot write ${named}: ${(error as Error).message}`, { cause: error });
  } finally {
    if (temporary !== undefined && !renamed) await rm(temporary, { force: true });
  }
}

/**
 * The names of the drafts of rackboot before they were named by PID: `adopt-<uuid>`, and first
 * `adopt-<pid>` with nothing after it. Neither is in the form removeOrphans reads an owner from.
 */
const EARLIER_VERSIONS_DRAFT = /^(?:\d+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;

/**
 * How long a draft of an earlier version is left alone. Its writer renamed it within the seconds a
 * write and an fsync take, so one this old was left by an adopt killed mid-write; a younger one may
 * be an older rackboot's still running beside this one (an upgrade), whose adopt it would fail.
 */
const EARLIER_VERSIONS_DRAFT_AGE_MS = 60 * 60 * 1000;

/**
 * Removes the drafts earlier versions left beside the config (EARLIER_VERSIONS_DRAFT), which would
 * otherwise stay for good, once they are EARLIER_VERSIONS_DRAFT_AGE_MS old by their modification
 * time: a uuid names no writer to ask after (the first form's PID is judged the same way, one rule
 * for what only an upgrade meets).
 */
async function removeEarlierVersionsDrafts(directory: string, draftPrefix: string): Promise<void> {
  for (const name of await readdir(directory).catch(() => [] as string[])) {
    if (!name.startsWith(draftPrefix) || !EARLIER_VERSIONS_DRAFT.test(name.slice(draftPrefix.length)))
      continue;
    const draft = join(directory, name);
    const written = await lstat(draft).catch(() => undefined);
    if (written?.isFile() && Date.now() - written.mtimeMs > EARLIER_VERSIONS_DRAFT_AGE_MS)
      await rm(draft, { force: true });
  }
}

function changedWhileAdopting(file: string): AdoptResult {
  return {
    ok: false,
    code: 'busy',
    message: `${file} changed while adopting; nothing written, run it again`,
  };
}

export interface AdoptInWorker {
  file: string;
  request: AdoptRequest;
  checks: AdoptChecks;
}

/**
 * adoptIntoFile in a worker thread, for the running server: with 10,000 machines, parsing the config
 * twice (to find the list, then to validate the result) takes seconds the DHCP and TFTP packet loop
 * must not wait (load-in-worker.ts measures the same parse). One at a time: each worker holds a parse
 * of the whole config, and concurrent ones would only wait on the adopt lock.
 */
export function adoptInWorker(
  file: string,
  request: AdoptRequest,
  checks: AdoptChecks = {},
): Promise<AdoptResult> {
  const adopted = serverAdopts.then(() =>
    runModuleWorker<AdoptResult>('adopt-worker', import.meta.url, {
      file,
      request,
      checks,
    } satisfies AdoptInWorker),
  );
  serverAdopts = adopted.catch(() => undefined);
  return adopted;
}

let serverAdopts: Promise<unknown> = Promise.resolve();

/**
 * A running server's adopt: into the file of the config in force, checked as the server checks it,
 * then reloaded, and answered once the config in force lists the machine (a client reading the
 * fleet right after, as the dashboard does, saw it still discovered, the file watcher being a reload
 * behind). A reload rejected all the same (the file or a template changed in between) is said so:
 * the file has the machine, the running server does not; and so is one applied without it (the
 * file saved over in between).
 */
export async function adoptIntoServer(
  source: Pick<ConfigSource, 'current' | 'reload'>,
  request: AdoptRequest,
  checks: Pick<AdoptChecks, 'missingAssets'> = {},
): Promise<AdoptResult> {
  const running = source.current();
  const adopted = await adoptInWorker(running.file, request, {
    ...checks,
    runningAssets: running.server.assets,
  });
  if (!adopted.ok) return adopted;
  const reloaded = await source.reload();
  if (reloaded.applied) {
    // The reload read the file as it was then: a save in between (an editor's buffer opened before
    // the adopt, written over it) applies without the machine, which is then in neither.
    if (source.current().machines.some((machine) => machine.mac === request.mac)) return adopted;
    return {
      ok: false,
      code: 'busy',
      message: `${request.mac} was written to ${running.file}, but the file was saved over without it before the running server reloaded it (an editor's buffer opened before the adopt?): the server does not list it; run the adopt again`,
    };
  }
  return {
    ok: false,
    code: 'not-applied',
    message: `${request.mac} was written to ${running.file}, but the running server rejected its reload and does not serve it until that is fixed:\n${reloaded.problems.join('\n')}`,
    problems: reloaded.problems,
  };
}
