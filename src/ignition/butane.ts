import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { join, posix, relative, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';
import { markUsed } from '../bounded-map.js';
import { escapesRoot } from '../path-inside.js';
import { readRegularFileSync } from '../regular-file.js';
import { convertShape, isJsonObject, type JsonObject, type ShapeOptions } from './shape.js';
import {
  BUTANE_TREE,
  IGNITION_SPEC,
  type ObjectKind,
  SPEC_VERSIONS,
  type SpecVersion,
  snakeCase,
} from './spec.js';
import type { NodePath, PathError } from './template.js';
import { checkIgnitionShape, validateIgnition } from './validate.js';

/**
 * Butane (variant fcos, 1.4.0–1.6.0) → Ignition, the subset a fleet needs: every Ignition field under
 * its snake_case name, plus Butane's sugar for `inline`/`local` contents, `contents_local`,
 * `ssh_authorized_keys_local`, `storage.trees` and `with_mount_unit`. Semantics follow
 * coreos/butane base/v0_6/translate.go; `boot_device` and `grub` are refused with a clear error
 * rather than half-translated.
 */
export const BUTANE_VERSIONS: Record<string, SpecVersion> = {
  '1.4.0': '3.3.0',
  '1.5.0': '3.4.0',
  '1.6.0': '3.5.0',
};

const EXTRA_KEYS: Partial<Record<ObjectKind, readonly string[]>> = {
  root: ['variant', 'version', 'boot_device', 'grub'],
  resource: ['inline', 'local'],
  unit: ['contents_local'],
  dropin: ['contents_local'],
  user: ['ssh_authorized_keys_local'],
  storage: ['trees'],
  filesystem: ['with_mount_unit'],
};

/** Order of Butane's output (the Go struct order of Ignition's Config). */
const TOP_LEVEL_ORDER = ['ignition', 'kernelArguments', 'passwd', 'storage', 'systemd'];

export interface ButaneOptions {
  /** Directory `local`, `contents_local`, `ssh_authorized_keys_local` and trees are read from (Butane's --files-dir). */
  filesDir: string;
  /** The template as written, for the problems' quotes (ShapeOptions.writtenAt). */
  writtenAt?: ShapeOptions['writtenAt'];
}

export function isButane(data: unknown): boolean {
  return isJsonObject(data) && 'variant' in data;
}

export function translateButane(
  data: unknown,
  options: ButaneOptions,
): { config: JsonObject; version: SpecVersion | undefined; errors: PathError[] } {
  const errors: PathError[] = [];
  if (!isJsonObject(data))
    return { config: {}, version: undefined, errors: [{ path: [], message: 'not a config (empty)' }] };
  if (data.variant !== 'fcos') {
    errors.push({
      path: ['variant'],
      message: `variant ${String(data.variant)} is not supported; rackboot translates variant fcos`,
    });
  }
  const version = BUTANE_VERSIONS[String(data.version)];
  if (!version) {
    errors.push({
      path: ['version'],
      message: `Butane version ${String(data.version)} is not supported; use ${Object.keys(BUTANE_VERSIONS).join(', ')}`,
    });
  }
  for (const sugar of ['boot_device', 'grub']) {
    if (data[sugar] !== undefined) {
      errors.push({
        path: [sugar],
        message: `${sugar} is not supported by rackboot's Butane translator; write the storage entries it stands for`,
        onKey: true,
      });
    }
  }
  if (errors.length > 0 || !version) return { config: {}, version, errors };

  const files = new LocalFiles(options.filesDir);
  const mountedFilesystems: { filesystem: JsonObject; path: NodePath }[] = [];
  const withoutHeader = {
    ...data,
    ignition: { ...(isJsonObject(data.ignition) ? data.ignition : {}), version: undefined },
  };
  const shapeOptions: ShapeOptions = { version, sourceKey: snakeCase, writtenAt: options.writtenAt };
  const converted = convertShape(
    withoutHeader,
    { object: IGNITION_SPEC },
    [],
    {
      ...shapeOptions,
      extraKeys: (kind) => EXTRA_KEYS[kind] ?? [],
      onObject: (kind, input, output, path) => {
        switch (kind) {
          case 'resource':
            return translateResource(input, output, path, files, errors);
          case 'unit':
          case 'dropin':
            return readContentsLocal(input, output, path, files, errors);
          case 'user':
            return readSshKeysLocal(input, output, path, files, errors);
          case 'storage':
            return expandTrees(input, output, path, files, shapeOptions, errors);
          case 'filesystem':
            if (input.with_mount_unit === true) mountedFilesystems.push({ filesystem: output, path });
            // As Butane: a misspelt `ture` or a quoted "true" is refused, not a filesystem left unmounted.
            else if (typeof input.with_mount_unit !== 'boolean' && (input.with_mount_unit ?? null) !== null)
              errors.push({ path: [...path, 'with_mount_unit'], message: 'expected a boolean' });
            return;
          default:
            return;
        }
      },
    },
    errors,
  );
  const config = isJsonObject(converted) ? converted : {};
  config.ignition = { version, ...(isJsonObject(config.ignition) ? config.ignition : {}) };
  const luks = isJsonObject(config.storage) && Array.isArray(config.storage.luks) ? config.storage.luks : [];
  const generatedUnits = mountedFilesystems.flatMap(({ filesystem, path }) =>
    mountUnit(filesystem, path, isUnlockedOverNetwork(filesystem.device, luks), errors),
  );
  if (generatedUnits.length > 0) {
    const systemd = isJsonObject(config.systemd) ? config.systemd : {};
    systemd.units = withGeneratedUnits(generatedUnits, Array.isArray(systemd.units) ? systemd.units : []);
    config.systemd = systemd;
  }
  return { config: inOrder(config), version, errors };
}

/**
 * Butane's MergeTranslatedConfigs with the generated units as parent: Ignition's merge of lists keyed
 * by name, so a template may add a drop-in to (or disable) a unit `with_mount_unit` makes. A user unit
 * of a generated name takes its place, its own fields (contents, enabled, mask, dropins) winning; the
 * generated units have no drop-ins, so the user's are the merged list. Generated units come first.
 */
function withGeneratedUnits(generated: JsonObject[], userUnits: unknown[]): unknown[] {
  const merged = new Set<unknown>();
  const units = generated.map((unit) => {
    const own = userUnits.find((candidate) => isJsonObject(candidate) && candidate.name === unit.name);
    if (!isJsonObject(own)) return unit;
    merged.add(own);
    return { ...unit, ...own };
  });
  return [...units, ...userUnits.filter((unit) => !merged.has(unit))];
}

function inOrder(config: JsonObject): JsonObject {
  return Object.fromEntries(
    TOP_LEVEL_ORDER.filter((key) => config[key] !== undefined).map((key) => [key, config[key]]),
  );
}

/** `inline` / `local` / `source`: at most one; the first two become data URLs (Butane's MakeDataURL). */
function translateResource(
  input: JsonObject,
  output: JsonObject,
  path: NodePath,
  files: LocalFiles,
  errors: PathError[],
): void {
  const given = ['inline', 'local', 'source'].filter(
    (key) => input[key] !== undefined && input[key] !== null,
  );
  if (given.length > 1) {
    errors.push({ path, message: 'only one of the following can be set: inline, local, source' });
    return;
  }
  const source = input.inline !== undefined && input.inline !== null ? 'inline' : 'local';
  const value = input[source];
  if (value === undefined || value === null) return;
  // Butane refuses a list or a mapping here; skipped, it would leave the file without its contents.
  if (typeof value !== 'string') {
    errors.push({ path: [...path, source], message: 'expected a string' });
    return;
  }
  const bytes =
    source === 'inline' ? Buffer.from(value, 'utf8') : files.read(value, [...path, source], errors);
  if (bytes === undefined) return;
  if (path[0] === 'ignition' && path[1] === 'config')
    errors.push(...childConfigErrors(bytes, [...path, source]));
  const userCompression = typeof output.compression === 'string' && output.compression !== '';
  const encoded = makeDataUrl(bytes, !userCompression);
  output.source = encoded.url;
  if (!userCompression) output.compression = encoded.compression;
}

/**
 * Butane's ValidateIgnitionConfig for `ignition.config.merge`/`replace` given inline or local: Ignition
 * fetches the child at boot and stops with "invalid config" if it does not parse or validate. A child
 * of a spec rackboot does not know (older Ignition JSON) is left to Ignition, as Butane leaves it.
 */
function childConfigErrors(bytes: Buffer, at: NodePath): PathError[] {
  const text = bytes.toString('utf8');
  let child: unknown;
  try {
    child = JSON.parse(text);
  } catch {
    // Not JSON.parse's message: it quotes the text around the error, the machine's vars among it.
    const { line, column } = lineAndColumn(text, jsonSyntaxErrorOffset(text));
    return [
      {
        path: at,
        message: `the config given here is not Ignition JSON: syntax error at line ${line}, column ${column} of it`,
      },
    ];
  }
  const version = isJsonObject(child) && isJsonObject(child.ignition) ? child.ignition.version : undefined;
  const knownVersion = (SPEC_VERSIONS as readonly unknown[]).includes(version);
  if (!knownVersion && typeof version === 'string' && /^\d+\.\d+\.\d+$/.test(version)) return [];
  const shaped = checkIgnitionShape(child);
  const childErrors = shaped.errors.length > 0 ? shaped.errors : validateIgnition(shaped.config);
  return childErrors.map((error) => ({
    path: at,
    message: `in the config given here, ${error.path.length > 0 ? `${error.path.join('.')}: ` : ''}${error.message}`,
  }));
}

const JSON_SPACE = /[ \t\n\r]*/y;
/** What may follow a backslash in a string: one of these, or `u` and four hex digits. */
const JSON_SHORT_ESCAPES = new Set(['"', '\\', '/', 'b', 'f', 'n', 'r', 't']);
const JSON_UNICODE_ESCAPE = /u[0-9a-fA-F]{4}/y;
/** A number's valid characters: the number when they end in a digit, else the error is where they end. */
const JSON_NUMBER_START = /-?(?:(?:0|[1-9]\d*)(?:\.\d*)?(?:(?<=\d)[eE][+-]?\d*)?)?/y;
const JSON_LITERAL = /true|false|null/y;

/**
 * Where `text`, which JSON.parse refused, stops being JSON (ECMA-404, the grammar JSON.parse reads):
 * the first character that cannot stand where it is, or the end of the text when it ends too early;
 * the offset JSON.parse names where it names one. Iterative, so no nesting overflows the stack.
 */
function jsonSyntaxErrorOffset(text: string): number {
  let at = 0;
  const skip = (pattern: RegExp): boolean => {
    pattern.lastIndex = at;
    if (!pattern.test(text)) return false;
    at = pattern.lastIndex;
    return true;
  };
  // A loop, not a regex: V8 runs a repeated alternation on its regex stack, which a string of
  // some 8 million characters overflows ("Maximum call stack size exceeded").
  const skipString = (): boolean => {
    if (text[at] !== '"') return false;
    at++;
    for (;;) {
      const character = text[at];
      if (character === '"') {
        at++;
        return true;
      }
      // The end of the text, or a control character that must be escaped.
      if (character === undefined || character < ' ') return false;
      at++;
      if (character !== '\\') continue;
      // A wrong escape: the error is the character after the backslash, as for JSON.parse.
      const escaped = text[at];
      if (escaped !== undefined && JSON_SHORT_ESCAPES.has(escaped)) at++;
      else if (!skip(JSON_UNICODE_ESCAPE)) return false;
    }
  };
  const skipNumber = (): boolean => {
    const start = at;
    skip(JSON_NUMBER_START);
    return at > start && /\d/.test(text[at - 1] ?? '');
  };
  const closers: string[] = [];
  let expecting: 'value' | 'key' | 'separator' = 'value';
  for (;;) {
    skip(JSON_SPACE);
    const character = text[at];
    const closer = closers[closers.length - 1];
    if (expecting === 'separator') {
      // After the top-level value only the end may follow, and JSON.parse found something else.
      if (closer === undefined || (character !== ',' && character !== closer)) return at;
      at++;
      if (character === closer) closers.pop();
      else expecting = closer === '}' ? 'key' : 'value';
    } else if (expecting === 'key') {
      if (!skipString()) return at;
      skip(JSON_SPACE);
      if (text[at] !== ':') return at;
      at++;
      expecting = 'value';
    } else if (character === '{' || character === '[') {
      at++;
      closers.push(character === '{' ? '}' : ']');
      skip(JSON_SPACE);
      if (text[at] === closers[closers.length - 1]) {
        at++;
        closers.pop();
        expecting = 'separator';
      } else expecting = character === '{' ? 'key' : 'value';
    } else if (character === '"' ? skipString() : skip(JSON_LITERAL) || skipNumber()) expecting = 'separator';
    else return at;
  }
}

/** 1-based line and column (in UTF-16 units, as editors count them) of an offset into `text`. */
function lineAndColumn(text: string, offset: number): { line: number; column: number } {
  const before = text.slice(0, offset);
  const lineStart = before.lastIndexOf('\n') + 1;
  return { line: before.split('\n').length, column: offset - lineStart + 1 };
}

/** Bytes Butane leaves as they are in a percent-encoded data URL; every other byte is `%XX`. */
const UNRESERVED = new Uint8Array(256);
for (const character of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()") {
  UNRESERVED[character.charCodeAt(0)] = 1;
}
const PERCENT_HEX = Array.from(
  { length: 256 },
  (_, byte) => `%${byte.toString(16).toUpperCase().padStart(2, '0')}`,
);

/**
 * Butane's MakeDataURL: percent-encoding or base64, whichever is shorter; then gzip+base64 when allowed
 * and more than 4 bytes shorter (the `compression` key it adds costs about that much).
 */
export function makeDataUrl(bytes: Buffer, allowCompression: boolean): DataUrl {
  // Most contents are the same for every machine of a template (only a few embed {{...}}): encode
  // once. A large `local` file is keyed by its digest, so serving it again costs a hash, not the
  // encoding that took 1–2 s a request for 4 MiB.
  const large = bytes.length > DATA_URL_KEY_MAX_BYTES;
  const content = large ? createHash('sha256').update(bytes).digest('base64') : bytes.toString('latin1');
  const key = `${allowCompression ? 'z' : '-'}${large ? '#' : ':'}${content}`;
  const known = dataUrls.get(key);
  if (known) {
    markUsed(dataUrls, key, known);
    return known;
  }
  const encoded = encodeDataUrl(bytes, allowCompression);
  if (encoded.url.length <= DATA_URL_MEMO_MAX_CHARS) rememberDataUrl(key, encoded);
  return encoded;
}

type DataUrl = { url: string; compression: '' | 'gzip' };
const DATA_URL_MEMO_ENTRIES = 256;
// Inputs up to this size are their own key; larger ones are keyed by their SHA-256.
const DATA_URL_KEY_MAX_BYTES = 16 * 1024;
// Bounded whatever the templates hold: at most 64 MiB of URLs, none over 16 MiB, plus the keys
// (at most 16 KiB each).
const DATA_URL_MEMO_BUDGET_CHARS = 64 * 1024 * 1024;
const DATA_URL_MEMO_MAX_CHARS = 16 * 1024 * 1024;
const dataUrls = new Map<string, DataUrl>();
let dataUrlChars = 0;

/** Keeps `encoded` as the newest entry, dropping the oldest while the memo is over its bounds. */
function rememberDataUrl(key: string, encoded: DataUrl): void {
  dataUrls.set(key, encoded);
  dataUrlChars += encoded.url.length;
  for (const [oldestKey, oldest] of dataUrls) {
    if (dataUrls.size <= DATA_URL_MEMO_ENTRIES && dataUrlChars <= DATA_URL_MEMO_BUDGET_CHARS) break;
    dataUrls.delete(oldestKey);
    dataUrlChars -= oldest.url.length;
  }
}

/** `data:;base64,` and a 20-byte gzip member (10-byte header, an empty final block, 8-byte trailer). */
const SHORTEST_GZIP_DATA_URL = 'data:;base64,'.length + 28;

function encodeDataUrl(bytes: Buffer, allowCompression: boolean): DataUrl {
  let unreserved = 0;
  for (const byte of bytes) unreserved += UNRESERVED[byte] as number;
  const escapedLength = 'data:,'.length + unreserved + 3 * (bytes.length - unreserved);
  const base64Length = 'data:;base64,'.length + 4 * Math.ceil(bytes.length / 3);
  const bestLength = Math.min(escapedLength, base64Length);
  // gzip cannot win below this length, so zlib (most of a short file's cost) is not run at all.
  if (allowCompression && bestLength > SHORTEST_GZIP_DATA_URL + 4) {
    const compressed = `data:;base64,${gzipSync(bytes, { level: 9 }).toString('base64')}`;
    if (compressed.length + 4 < bestLength) return { url: compressed, compression: 'gzip' };
  }
  // Only the winner is built: percent-encoding a large binary file would make a string 3 times its size.
  const url =
    base64Length < escapedLength ? `data:;base64,${bytes.toString('base64')}` : percentEncoded(bytes);
  return { url, compression: '' };
}

function percentEncoded(bytes: Buffer): string {
  const parts = ['data:,'];
  for (const byte of bytes)
    parts.push(UNRESERVED[byte] ? String.fromCharCode(byte) : (PERCENT_HEX[byte] as string));
  return parts.join('');
}

function readContentsLocal(
  input: JsonObject,
  output: JsonObject,
  path: NodePath,
  files: LocalFiles,
  errors: PathError[],
): void {
  if (input.contents_local === undefined || input.contents_local === null) return;
  if (input.contents !== undefined && input.contents !== null) {
    errors.push({
      path: [...path, 'contents_local'],
      message: 'only one of the following can be set: contents, contents_local',
    });
    return;
  }
  if (typeof input.contents_local !== 'string') {
    errors.push({ path: [...path, 'contents_local'], message: 'expected a string' });
    return;
  }
  const bytes = files.read(input.contents_local, [...path, 'contents_local'], errors);
  if (bytes) output.contents = bytes.toString('utf8');
}

/** An optional list key: absent or null gives undefined; anything but a list is an error at that key. */
function optionalList(
  input: JsonObject,
  key: string,
  path: NodePath,
  errors: PathError[],
): unknown[] | undefined {
  const value = input[key];
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value)) {
    errors.push({ path: [...path, key], message: 'expected a list' });
    return undefined;
  }
  return value;
}

function readSshKeysLocal(
  input: JsonObject,
  output: JsonObject,
  path: NodePath,
  files: LocalFiles,
  errors: PathError[],
): void {
  const locals = optionalList(input, 'ssh_authorized_keys_local', path, errors);
  if (!locals) return;
  const keys = Array.isArray(output.sshAuthorizedKeys) ? [...output.sshAuthorizedKeys] : [];
  locals.forEach((local, index) => {
    const at = [...path, 'ssh_authorized_keys_local', index];
    if (typeof local !== 'string') {
      errors.push({ path: at, message: 'expected a string' });
      return;
    }
    const text = files.read(local, at, errors)?.toString('utf8') ?? '';
    keys.push(
      ...text
        .split('\n')
        .map((line) => line.trim())
        .filter((line) => line !== '' && !line.startsWith('#')),
    );
  });
  output.sshAuthorizedKeys = keys;
}

/**
 * `storage.trees`: each regular file becomes a file (0755 when executable, else 0644), each symlink a
 * link. An explicit entry with the same path keeps its other attributes and gets the tree's contents.
 */
function expandTrees(
  input: JsonObject,
  output: JsonObject,
  path: NodePath,
  files: LocalFiles,
  shapeOptions: ShapeOptions,
  errors: PathError[],
): void {
  const trees = optionalList(input, 'trees', path, errors);
  if (!trees) return;
  const fileEntries = (Array.isArray(output.files) ? output.files : []).filter(isJsonObject);
  const linkEntries = (Array.isArray(output.links) ? output.links : []).filter(isJsonObject);
  trees.forEach((entry, index) => {
    const at = [...path, 'trees', index];
    const errorsBefore = errors.length;
    const tree = convertShape(entry, BUTANE_TREE, at, shapeOptions, errors);
    if (errors.length > errorsBefore) return;
    if (!isJsonObject(tree) || typeof tree.local !== 'string') {
      errors.push({ path: at, message: 'a tree needs local: <directory under the files dir>' });
      return;
    }
    const destination = typeof tree.path === 'string' ? tree.path : '/';
    for (const entry of files.walk(tree.local, [...at, 'local'], errors)) {
      const target = posix.join(destination, entry.relativePath);
      if (entry.kind === 'link') {
        const explicit = linkEntries.find((link) => link.path === target);
        if (explicit?.target !== undefined) {
          errors.push({
            path: at,
            message: `link ${target} comes from a tree; its explicit entry must not set target`,
          });
        } else if (explicit) explicit.target = entry.target;
        else linkEntries.push({ path: target, target: entry.target });
        continue;
      }
      const { url, compression } = makeDataUrl(entry.bytes, true);
      const explicit = fileEntries.find((file) => file.path === target);
      if (explicit?.contents !== undefined) {
        errors.push({
          path: at,
          message: `file ${target} comes from a tree; its explicit entry must not set contents`,
        });
      } else if (explicit) {
        explicit.contents = { compression, source: url };
        explicit.mode ??= entry.executable ? 0o755 : 0o644;
      } else {
        fileEntries.push({
          path: target,
          contents: { compression, source: url },
          mode: entry.executable ? 0o755 : 0o644,
        });
      }
    }
  });
  if (fileEntries.length > 0) output.files = fileEntries;
  if (linkEntries.length > 0) output.links = linkEntries;
}

/** systemd-escape --path (systemd's unit_name_path_escape). */
export function systemdEscapePath(path: string): string {
  const trimmed = posix.normalize(path).replace(/^\/+|\/+$/g, '');
  if (trimmed === '') return '-';
  let escaped = '';
  for (const [index, character] of [...trimmed].entries()) {
    if (character === '/') escaped += '-';
    else if (/[A-Za-z0-9:_]/.test(character) || (character === '.' && index > 0)) escaped += character;
    else for (const byte of Buffer.from(character)) escaped += `\\x${byte.toString(16).padStart(2, '0')}`;
  }
  return escaped;
}

/**
 * Butane's addMountUnits test for a remote mount: the filesystem is on a LUKS volume (opened under its
 * name) that Clevis unlocks with a Tang server, so it can only be mounted once the network is up.
 */
function isUnlockedOverNetwork(device: unknown, luks: unknown[]): boolean {
  return luks.some(
    (volume) =>
      isJsonObject(volume) &&
      (device === `/dev/mapper/${String(volume.name)}` ||
        device === `/dev/disk/by-id/dm-name-${String(volume.name)}`) &&
      isJsonObject(volume.clevis) &&
      Array.isArray(volume.clevis.tang) &&
      volume.clevis.tang.length > 0,
  );
}

/**
 * Butane's mount unit template. A remote one (`_netdev`, remote-fs.target) is ordered after the
 * network: as a local mount it would be needed before local-fs.target, long before Tang is reachable,
 * and the boot would time out into emergency mode.
 */
function mountUnit(
  filesystem: JsonObject,
  path: NodePath,
  remote: boolean,
  errors: PathError[],
): JsonObject[] {
  const device = typeof filesystem.device === 'string' ? filesystem.device : '';
  const format = typeof filesystem.format === 'string' ? filesystem.format : '';
  const escapedDevice = systemdEscapePath(device);
  const mountOptions = Array.isArray(filesystem.mountOptions) ? filesystem.mountOptions : [];
  const options = [...mountOptions, ...(remote ? ['_netdev'] : [])].join(',');
  if (format === 'swap') {
    const contents = ['# Generated by rackboot (Butane with_mount_unit)', '[Swap]', `What=${device}`].concat(
      options ? [`Options=${options}`] : [],
      ['', '[Install]', 'RequiredBy=swap.target', ''],
    );
    return [{ name: `${escapedDevice}.swap`, enabled: true, contents: contents.join('\n') }];
  }
  if (typeof filesystem.path !== 'string') {
    errors.push({
      path: [...path, 'with_mount_unit'],
      message: 'with_mount_unit needs path (the mount point)',
    });
    return [];
  }
  const target = remote ? 'remote-fs.target' : 'local-fs.target';
  const contents = [
    '# Generated by rackboot (Butane with_mount_unit)',
    // No Before= of our own, as Butane since fcos 1.5.0 (1.4.0's template still had one, for every
    // version here): systemd orders a mount before its target itself, except a `nofail` one, which
    // must not hold the boot (or fail the target) for a missing disk.
    '[Unit]',
    `Requires=systemd-fsck@${escapedDevice}.service`,
    `After=systemd-fsck@${escapedDevice}.service`,
    '',
    '[Mount]',
    `Where=${filesystem.path}`,
    `What=${device}`,
    `Type=${format}`,
    ...(options ? [`Options=${options}`] : []),
    '',
    '[Install]',
    `RequiredBy=${target}`,
    '',
  ].join('\n');
  return [{ name: `${systemdEscapePath(filesystem.path)}.mount`, enabled: true, contents }];
}

type TreeEntry =
  | { kind: 'file'; relativePath: string; bytes: Buffer; executable: boolean }
  | { kind: 'link'; relativePath: string; target: string };

/** Butane's --files-dir: every local path must stay inside it, also through symlinks. */
class LocalFiles {
  constructor(private readonly root: string) {}

  private inside(local: string, path: NodePath, errors: PathError[]): string | undefined {
    const outside = () => {
      errors.push({ path, message: `local file ${local} is outside the files directory ${this.root}` });
      return undefined;
    };
    // The lexical check comes first so an escape is named as such whether or not its target exists.
    // Joined, not resolved, as Butane's filepath.Join: `/motd` is the files directory's motd.
    const candidate = resolve(join(this.root, local));
    if (escapesRoot(resolve(this.root), candidate)) return outside();
    const real = (() => {
      try {
        return realpathSync(candidate);
      } catch {
        return undefined;
      }
    })();
    if (real === undefined) {
      errors.push({ path, message: `local file ${local} not found in ${this.root}` });
      return undefined;
    }
    if (escapesRoot(realpathSync(this.root), real)) return outside();
    return real;
  }

  read(local: string, path: NodePath, errors: PathError[]): Buffer | undefined {
    const file = this.inside(local, path, errors);
    if (file === undefined) return undefined;
    try {
      const bytes = readRegularFileSync(file);
      if (bytes === undefined) errors.push({ path, message: `local file ${local} is not a regular file` });
      return bytes;
    } catch (error) {
      errors.push({
        path,
        message: `cannot read ${local}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`,
      });
      return undefined;
    }
  }

  /**
   * Every file and symlink under `local`. Filesystem errors (a file named as the tree, a directory
   * that cannot be read) are template problems at `path`, like a missing local file: the template
   * is answered 503 and `rackboot validate` shows FILE:LINE:COL instead of a bare ENOTDIR.
   */
  walk(local: string, path: NodePath, errors: PathError[]): TreeEntry[] {
    const directory = this.inside(local, path, errors);
    if (directory === undefined) return [];
    const found: TreeEntry[] = [];
    const visit = (absolute: string, relativePath: string) => {
      for (const name of readdirSync(absolute).sort()) {
        const child = `${absolute}/${name}`;
        const childRelative = relativePath ? `${relativePath}/${name}` : name;
        const stat = lstatSync(child);
        if (stat.isDirectory()) visit(child, childRelative);
        else if (stat.isSymbolicLink())
          found.push({ kind: 'link', relativePath: childRelative, target: readlinkSync(child) });
        else if (stat.isFile()) {
          found.push({
            kind: 'file',
            relativePath: childRelative,
            bytes: readFileSync(child),
            executable: (stat.mode & 0o111) !== 0,
          });
        } else
          errors.push({
            path,
            message: `${local}/${childRelative} is neither a file, a directory nor a symlink`,
          });
      }
    };
    try {
      if (!statSync(directory).isDirectory()) {
        errors.push({ path, message: 'root of tree must be a directory' });
        return [];
      }
      visit(directory, '');
    } catch (error) {
      const { code, path: failed } = error as NodeJS.ErrnoException;
      const where = failed === undefined ? local : posix.join(local, relative(directory, failed));
      errors.push({ path, message: `cannot read tree ${local}: ${code ?? 'error'} at ${where}` });
      return [];
    }
    return found;
  }
}
