import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import {
  type Alias,
  type Document,
  isAlias,
  isMap,
  isPair,
  isScalar,
  isSeq,
  LineCounter,
  type Node,
  type Pair,
  parseDocument,
  type Scalar,
  visit,
  type YAMLMap,
} from 'yaml';
import { readRegularFile } from '../regular-file.js';
import { textOf } from '../text-file.js';
import type { Problem } from './problems.js';

// Imports yaml and nothing heavier: the loader's parse thread loads this module and nothing else,
// and every megabyte of code in that thread adds to the process's memory peak (docs/http.md,
// "The start-up peak").

export type Path = (string | number)[];

/** Where a problem found in the plain data is in the YAML text. */
export interface Locator {
  /** Problem at the value node of `path` (or its nearest existing ancestor). */
  at(path: Path, message: string): Problem;
  /** Problem at the key of the last segment of `path`. */
  atKey(path: Path, message: string): Problem;
  /**
   * The text of the scalar at `path` (through an alias) as it is written in the file, where YAML
   * read a number or a boolean: `007`, not 7 (textAsWritten). Undefined for a node that is not a scalar, or none there.
   */
  writtenAt(path: Path): string | undefined;
}

export type Parsed =
  | { ok: true; data: Record<string, unknown>; locate: Locator }
  | { ok: false; problems: Problem[] };

/** The config file's text, or why it cannot be read as a problem at its first line. */
export async function readConfigFile(
  file: string,
): Promise<{ ok: true; text: string } | { ok: false; problems: Problem[] }> {
  const absolute = resolve(file);
  const unreadable = (reason: string) => ({
    ok: false as const,
    problems: [{ file: absolute, line: 1, col: 1, message: `cannot read config: ${reason}` }],
  });
  let bytes: Buffer | undefined;
  try {
    // A named pipe is read as the stream it is, waiting for its writer as `cat` would: process
    // substitution (`validate -c <(sops -d rackboot.yaml)`) and a config handed over by another
    // process. The config is read off the main thread (the CLI, serve's load worker), so the wait
    // stops nothing else. Templates are not: they stay regular files only.
    bytes = (await stat(absolute)).isFIFO() ? await readFile(absolute) : await readRegularFile(absolute);
  } catch (error) {
    return unreadable(
      (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (error as Error).message,
    );
  }
  if (bytes === undefined)
    return unreadable('not a file (a socket, a device or a directory): name the YAML file itself');
  const read = textOf(bytes);
  if (read.ok) return read;
  return { ok: false, problems: [{ file: absolute, line: read.line, col: read.col, message: read.reason }] };
}

/**
 * YAML text → plain data with every alias resolved, or its syntax and alias problems at FILE:LINE:COL.
 * `locate` keeps the parsed document (and so its node positions) alive as long as it is held.
 */
export function parseConfigText(text: string, file: string): Parsed {
  const { document, lineCounter } = parseWithPositions(text);
  const position = positionIn(file, lineCounter);
  const problems = yamlProblems(document, lineCounter, file, text, 'the config');
  // Without yaml's merge option `<<` is a key like any other: the schema then reported it unknown
  // and every key it was meant to bring missing, two messages that contradict each other.
  visit(document, {
    Pair(_key, pair) {
      if (isScalar(pair.key) && pair.key.value === '<<')
        problems.push({
          ...position(pair.key),
          message:
            'YAML merge keys (<<: *anchor) are not read in the config: write the keys out (Butane templates do read them)',
        });
    },
  });
  if (problems.length > 0) return { ok: false, problems };
  const data = plainData(document, position);
  if ('problems' in data) return { ok: false, problems: data.problems };
  const value: unknown = data.value ?? {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return {
      ok: false,
      problems: [
        {
          ...position(document.contents),
          message: 'the config must be a mapping of keys (server:, dhcp:, profiles:, …)',
        },
      ],
    };
  }
  return { ok: true, data: value as Record<string, unknown>, locate: locator(document, position) };
}

/**
 * The syntax errors of a parsed document, and its tags yaml does not know (`!env FOO`: yaml warns
 * and reads the text after the tag, so the value would silently be "FOO"), at FILE:LINE:COL.
 * `what` names the file in the message for a second document.
 */
export function yamlProblems(
  document: Document,
  lineCounter: LineCounter,
  file: string,
  text: string,
  what: 'the config' | 'a template',
): Problem[] {
  const lines = text.split('\n');
  const errors = document.errors.map((error) => {
    const at = lineCounter.linePos(error.pos[0]);
    // yaml's own text for this one points at its API (parseAllDocuments), not at the file.
    const message =
      error.code === 'MULTIPLE_DOCS'
        ? `a second YAML document starts here (---); ${what} is one document: remove the --- and merge what follows into the first`
        : `YAML syntax error: ${error.message.split('\n')[0]}`;
    return { file, ...at, message: withTabHint(message, lines[at.line - 1]) };
  });
  const tags = document.warnings
    .filter((warning) => warning.code === 'TAG_RESOLVE_FAILED')
    .map((warning) => ({
      file,
      ...lineCounter.linePos(warning.pos[0]),
      message: `YAML tag ${/Unresolved tag: (\S+)/.exec(warning.message)?.[1] ?? ''} is not one rackboot reads: the value would be the plain text after it (nothing here is expanded from the environment); remove the tag`,
    }));
  return [...errors, ...tags];
}

/**
 * The top-level section `key` (`server`) of a config text that does not parse, as plain data, when
 * the section ends before the first of its `problems`: the text up to there reads as it will once
 * the rest is fixed. Undefined when a problem is in it or before it, or there is no such mapping.
 */
export function sectionBefore(
  text: string,
  key: string,
  problems: Problem[],
): Record<string, unknown> | undefined {
  const { document, lineCounter } = parseWithPositions(text);
  const section = isMap(document.contents) ? document.contents.get(key, true) : undefined;
  if (!isMap(section) || !section.range) return undefined;
  const end = lineCounter.linePos(section.range[2]);
  // At its end too: a key of the section indented wrongly ends it there, and is the problem.
  const inOrBefore = problems.some(
    (problem) => problem.line < end.line || (problem.line === end.line && problem.col <= end.col),
  );
  if (inOrBefore) return undefined;
  try {
    return section.toJS(document, { maxAliasCount: MAX_ALIAS_EXPANSION }) as Record<string, unknown>;
  } catch {
    // An alias of an anchor the error hid: the section is not whole.
    return undefined;
  }
}

/** yaml's message for a tab in indentation ("nested mappings are not allowed…") never says "tab". */
const TAB_IN_INDENTATION = /^[ ]*\t/;

function withTabHint(message: string, line: string | undefined): string {
  return TAB_IN_INDENTATION.test(line ?? '') && !/\btabs?\b/i.test(message)
    ? `${message} (YAML indentation must use spaces, not tabs)`
    : message;
}

/**
 * A Locator for data parsed from `text` that parses `text` again, with positions, on its first use.
 * Most loads have nothing to locate, so the document (several times the size of the data) need not
 * outlive the parse; the same text gives the same positions.
 */
export function locatorOnDemand(text: string, file: string): Locator {
  let parsed: Locator | undefined;
  const locate = (): Locator => {
    if (parsed === undefined) {
      const { document, lineCounter } = parseWithPositions(text);
      parsed = locator(document, positionIn(file, lineCounter));
    }
    return parsed;
  };
  return {
    at: (path, message) => locate().at(path, message),
    atKey: (path, message) => locate().atKey(path, message),
    writtenAt: (path) => locate().writtenAt(path),
  };
}

export function parseWithPositions(text: string): { document: Document; lineCounter: LineCounter } {
  const lineCounter = lineCounterFor(text);
  const document = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  return { document, lineCounter };
}

/**
 * A LineCounter for `text` whose columns are an editor's. A byte order mark (Windows editors write
 * one) is a character of the text but no column an editor shows: without this, every column of the
 * first line was one too far right. The offsets stay the text's own, which adopt splices the file by.
 */
export function lineCounterFor(text: string): LineCounter {
  const lineCounter = new LineCounter();
  if (text.startsWith('\uFEFF')) {
    const linePos = lineCounter.linePos;
    lineCounter.linePos = (offset) => {
      const at = linePos(offset);
      return at.line === 1 && at.col > 1 ? { line: 1, col: at.col - 1 } : at;
    };
  }
  return lineCounter;
}

export type Position = (node: Node | undefined | null) => Omit<Problem, 'message'>;

/** The position of a node (the document's start when there is none). */
export function positionIn(file: string, lineCounter: LineCounter): Position {
  return (node) => ({ file, ...lineCounter.linePos(node?.range?.[0] ?? 0) });
}

function locator(document: Document, position: Position): Locator {
  const nearest = (path: Path): Node | undefined => {
    for (let length = path.length; length > 0; length--) {
      const node = nodeAt(document, path.slice(0, length));
      if (node) return node;
    }
    return document.contents ?? undefined;
  };
  return {
    at: (path, message) => ({ ...position(nearest(path)), message }),
    atKey: (path, message) => {
      const parent = path.length > 1 ? nodeAt(document, path.slice(0, -1)) : document.contents;
      const key = path[path.length - 1];
      const pair = isMap(parent) && key !== undefined ? pairOf(parent, key) : undefined;
      if (pair && isScalar(pair.key)) return { ...position(pair.key), message };
      return { ...position(nearest(path)), message };
    },
    writtenAt: (path) => {
      const node = nodeAt(document, path);
      const value = isAlias(node) ? node.resolve(document) : node;
      return isScalar(value) ? textAsWritten(value) : undefined;
    },
  };
}

/** The node at `path`: list items by index, mapping entries by their key as written (keyAsWritten). */
function nodeAt(document: Document, path: Path): Node | undefined {
  let node: unknown = document.contents;
  for (const segment of path) {
    if (isSeq(node) && typeof segment === 'number') node = node.items[segment];
    else if (isMap(node)) node = pairOf(node, segment)?.value;
    else return undefined;
  }
  return node && typeof node === 'object' && 'range' in node ? (node as Node) : undefined;
}

function pairOf(map: YAMLMap, key: string | number): Pair | undefined {
  return map.items.find((pair) => isScalar(pair.key) && keyText(pair.key) === String(key));
}

/**
 * A mapping key as the config's data holds it: a key is always text there, so one YAML reads as a
 * number or boolean (`007:`, `1.50:`) is the text written, not the number's own (`7`, `1.5`).
 */
function keyText(key: Scalar): string {
  // yaml's own toJS makes a null key ''.
  if (key.value === null || key.value === undefined) return '';
  return textAsWritten(key) ?? String(key.value);
}

/**
 * yaml's default (100) refuses an inventory where more than 100 machines share one anchored
 * `vars`; an alias bomb multiplies per level, so a million still stops one at its sixth level of
 * ten, in milliseconds.
 */
const MAX_ALIAS_EXPANSION = 1_000_000;

/** `machines[i].KEY` in the block or flow layout: document > root map > machines pair > list > entry. */
function isMachineField(pair: Pair, path: readonly unknown[], key: string): boolean {
  const machines = path[2];
  return (
    path.length === 5 &&
    isScalar(pair.key) &&
    pair.key.value === key &&
    isPair(machines) &&
    isScalar(machines.key) &&
    machines.key.value === 'machines' &&
    isSeq(path[3])
  );
}

/** `machines[i].vars.NAME`: a pair of the map that is the value of a `machines[i].vars` pair. */
function isMachineVar(path: readonly unknown[]): boolean {
  const vars = path[5];
  return path.length === 7 && isPair(vars) && isMachineField(vars, path.slice(0, 5), 'vars');
}

/**
 * A scalar as its text: a string as it is, an unquoted number or boolean as written (`007`, not 7).
 * CONTRACT.md's bare-hex MAC spelling, unquoted, is a YAML number (525400123456, or 001122334455
 * without its zeros, or 1e2233445566 as Infinity): adopt reads a listed MAC so when it looks for
 * one, as the loader reads keys (keyText) and text values (Locator.writtenAt).
 */
export function textAsWritten(value: Scalar): string | undefined {
  if (typeof value.value === 'string') return value.value;
  return value.type === 'PLAIN' && value.source ? value.source : undefined;
}

/**
 * A var's value as its text: templates get what the operator wrote (`k8s: 1.30` is "1.30", not the
 * YAML 1.2 number 1.3; `zip: 01234` keeps its zero, `true` is "true"). A null stays null, which the
 * schema refuses: an empty var is more likely a slip than a wish for the text "~" or "". An anchored
 * value, and a var that is an alias, keep YAML's reading.
 */
function varAsWritten(value: Scalar): string | undefined {
  if (typeof value.value === 'string' || value.value === null || value.anchor) return undefined;
  return value.type === 'PLAIN' && value.source ? value.source : undefined;
}

/**
 * The document as plain data. yaml resolves aliases only here, and throws on an alias naming no
 * earlier anchor or on aliases that expand past its guard against alias bombs (maxAliasCount); both
 * become problems at an alias instead, so a bad edit is reported, never thrown at a running server.
 * Keys are read as written (keyText); so are values where a text is due, once the schema says
 * where (Locator.writtenAt).
 */
function plainData(document: Document, position: Position): { value: unknown } | { problems: Problem[] } {
  return documentData(document, position, (pair, path) => {
    if (isScalar(pair.key) && pair.key.value !== null) pair.key.value = keyText(pair.key);
    if (!isScalar(pair.value)) return;
    const written = isMachineVar(path) ? varAsWritten(pair.value) : undefined;
    if (written !== undefined) pair.value.value = written;
  });
}

/**
 * A document as plain data, its alias problems at their alias (plainData says why); `onPair` may
 * change a pair's scalar before the conversion.
 */
export function documentData(
  document: Document,
  position: Position,
  onPair?: (pair: Pair, path: readonly unknown[]) => void,
): { value: unknown } | { problems: Problem[] } {
  const aliases: Alias[] = [];
  const anchors = new Set<string>();
  const problems: Problem[] = [];
  // Document order, as yaml resolves them: an alias refers to the last anchor of its name before it.
  visit(document, {
    Node(_key, node) {
      if (isAlias(node)) {
        aliases.push(node);
        if (!anchors.has(node.source)) {
          problems.push({
            ...position(node),
            message: `alias *${node.source} has no anchor &${node.source} before it`,
          });
        }
      } else if (node.anchor) anchors.add(node.anchor);
    },
    Pair(_key, pair, path) {
      onPair?.(pair, path);
    },
  });
  if (problems.length > 0) return { problems };
  try {
    return { value: document.toJS({ maxAliasCount: MAX_ALIAS_EXPANSION }) };
  } catch (error) {
    // yaml's error names no node; the first alias is where the expansion starts.
    const where = aliases[0] ?? document.contents;
    return {
      problems: [
        { ...position(where), message: `the YAML aliases cannot be expanded: ${(error as Error).message}` },
      ],
    };
  }
}
