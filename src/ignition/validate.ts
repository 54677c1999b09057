import { posix } from 'node:path';
import { convertShape, isJsonObject, type JsonObject } from './shape.js';
import { IGNITION_SPEC, SPEC_VERSIONS, type SpecVersion } from './spec.js';
import type { NodePath, PathError } from './template.js';

/**
 * Ignition's own validation rules (config/v3_5/types and config/shared/errors in coreos/ignition),
 * with Ignition's error texts, so a template that passes here passes `ignition-validate` and the
 * machine does not stop in the initramfs with "invalid config".
 */

export function specVersionOf(config: JsonObject): SpecVersion | PathError {
  const ignition = config.ignition;
  const version = isJsonObject(ignition) ? ignition.version : undefined;
  if (typeof version !== 'string')
    return { path: ['ignition', 'version'], message: 'ignition.version is required' };
  if (!/^\d+\.\d+\.\d+(-experimental)?$/.test(version)) {
    return { path: ['ignition', 'version'], message: "invalid config version (couldn't parse)" };
  }
  if (!(SPEC_VERSIONS as readonly string[]).includes(version)) {
    return {
      path: ['ignition', 'version'],
      message: `unsupported config version ${version}; rackboot serves Ignition ${SPEC_VERSIONS.join(', ')}`,
    };
  }
  return version as SpecVersion;
}

const sameKey = (key: string) => key;

/** Type check of an Ignition JSON template: returns the config without nulls, and errors. */
export function checkIgnitionShape(value: unknown): { config: JsonObject; errors: PathError[] } {
  const errors: PathError[] = [];
  if (!isJsonObject(value)) return { config: {}, errors: [{ path: [], message: 'not a config (empty)' }] };
  const version = specVersionOf(value);
  if (typeof version !== 'string') return { config: {}, errors: [version] };
  const config = convertShape(value, { object: IGNITION_SPEC }, [], { version, sourceKey: sameKey }, errors);
  return { config: isJsonObject(config) ? config : {}, errors };
}

type Entry = { value: JsonObject; path: NodePath };

function entries(config: JsonObject, ...keys: string[]): Entry[] {
  let node: unknown = config;
  for (const key of keys) node = isJsonObject(node) ? node[key] : undefined;
  if (!Array.isArray(node)) return [];
  return node.flatMap((value, index) => (isJsonObject(value) ? [{ value, path: [...keys, index] }] : []));
}

const SCHEMES = new Set(['http', 'https', 'tftp', 's3', 'arn', 'gs', 'data']);
const UNIT_SUFFIXES = [
  '.service',
  '.socket',
  '.device',
  '.mount',
  '.automount',
  '.swap',
  '.target',
  '.path',
  '.timer',
  '.snapshot',
  '.slice',
  '.scope',
];
const FILESYSTEM_FORMATS = new Set(['ext4', 'btrfs', 'xfs', 'vfat', 'swap', 'none']);
const LABEL_LIMITS: Record<string, number> = { xfs: 12, vfat: 11, swap: 15, btrfs: 256 };
const GUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** Semantic rules over a shape-checked config (Ignition key names). */
export function validateIgnition(config: JsonObject): PathError[] {
  const errors: PathError[] = [];
  const error = (path: NodePath, message: string) => errors.push({ path, message });

  const files = entries(config, 'storage', 'files');
  const directories = entries(config, 'storage', 'directories');
  const links = entries(config, 'storage', 'links');
  const nodes = [...files, ...directories, ...links];
  for (const node of nodes) checkNodePath(node.value.path, [...node.path, 'path'], error);
  for (const filesystem of entries(config, 'storage', 'filesystems')) {
    if (filesystem.value.path !== undefined)
      checkNodePath(filesystem.value.path, [...filesystem.path, 'path'], error);
  }
  requireUnique(nodes, 'path', error);

  const linkPaths = new Set(links.map((link) => link.value.path).filter((path) => typeof path === 'string'));
  const directoryPaths = new Set(directories.map((directory) => directory.value.path));
  for (const node of nodes) {
    const path = node.value.path;
    if (typeof path !== 'string') continue;
    for (let parent = posix.dirname(path); parent !== '/' && parent !== '.'; parent = posix.dirname(parent)) {
      if (linkPaths.has(parent)) error([...node.path, 'path'], 'file path includes link in config');
    }
  }
  for (const link of links) {
    const target = link.value.target;
    if (typeof target !== 'string' || target === '')
      error([...link.path, 'target'], 'link target is required');
    else if (link.value.hard === true && directoryPaths.has(target)) {
      error([...link.path, 'target'], 'hard link target is a directory');
    }
  }
  for (const node of [...files, ...directories]) {
    const mode = node.value.mode;
    if (typeof mode === 'number' && (mode < 0 || mode > 0o7777))
      error([...node.path, 'mode'], 'illegal file mode');
  }
  for (const node of nodes) {
    for (const owner of ['user', 'group'] as const) {
      const value = node.value[owner];
      if (isJsonObject(value) && value.id !== undefined && value.name !== undefined) {
        error([...node.path, owner], 'cannot set both id and name');
      }
    }
  }
  for (const file of files) {
    const contents = file.value.contents;
    const source = isJsonObject(contents) ? contents.source : undefined;
    if (file.value.overwrite === true && (source === undefined || source === '')) {
      error([...file.path, 'overwrite'], 'overwrite must be false if source is unspecified');
    }
  }

  for (const resource of resources(config)) checkResource(resource, error);

  const disks = entries(config, 'storage', 'disks');
  requireUnique(disks, 'device', error);
  for (const disk of disks) {
    checkAbsolute(disk.value.device, [...disk.path, 'device'], error);
    const partitions = entries(disk.value, 'partitions').map((partition) => ({
      value: partition.value,
      path: [...disk.path, ...partition.path],
    }));
    requireUnique(
      partitions.filter(
        (partition) => typeof partition.value.number === 'number' && partition.value.number !== 0,
      ),
      'number',
      error,
    );
    requireUnique(
      partitions.filter((partition) => !partition.value.number && typeof partition.value.label === 'string'),
      'label',
      error,
    );
    for (const partition of partitions) {
      const label = partition.value.label;
      if (typeof label === 'string' && label.length > 36) {
        error([...partition.path, 'label'], 'partition labels may not exceed 36 characters');
      }
      for (const key of ['typeGuid', 'guid']) {
        const guid = partition.value[key];
        if (typeof guid === 'string' && guid !== '' && !GUID.test(guid))
          error([...partition.path, key], 'invalid guid');
      }
    }
  }
  const filesystems = entries(config, 'storage', 'filesystems');
  requireUnique(filesystems, 'device', error);
  for (const filesystem of filesystems) {
    checkAbsolute(filesystem.value.device, [...filesystem.path, 'device'], error);
    const format = filesystem.value.format;
    if (typeof format === 'string' && format !== '' && !FILESYSTEM_FORMATS.has(format)) {
      error([...filesystem.path, 'format'], 'invalid filesystem format');
    }
    const label = filesystem.value.label;
    const limit = typeof format === 'string' ? LABEL_LIMITS[format] : undefined;
    if (typeof label === 'string' && limit !== undefined && label.length > limit) {
      error(
        [...filesystem.path, 'label'],
        `filesystem labels cannot be longer than ${limit} characters when using ${format}`,
      );
    }
  }
  const raids = entries(config, 'storage', 'raid');
  requireUnique(raids, 'name', error);
  for (const raid of raids) {
    const devices = raid.value.devices;
    if (Array.isArray(devices))
      for (const [index, device] of devices.entries())
        checkAbsolute(device, [...raid.path, 'devices', index], error);
  }
  const luks = entries(config, 'storage', 'luks');
  requireUnique(luks, 'name', error);
  for (const volume of luks) {
    checkAbsolute(volume.value.device, [...volume.path, 'device'], error);
    const tangs = entries(volume.value, 'clevis', 'tang').map((tang) => ({
      value: tang.value,
      path: [...volume.path, ...tang.path],
    }));
    requireUnique(tangs, 'url', error);
  }

  const units = entries(config, 'systemd', 'units');
  requireUnique(units, 'name', error);
  for (const unit of units) {
    const name = unit.value.name;
    if (typeof name !== 'string' || name === '') error([...unit.path, 'name'], 'unit name is required');
    else if (!UNIT_SUFFIXES.some((suffix) => name.endsWith(suffix)))
      error([...unit.path, 'name'], 'invalid systemd unit extension');
    checkUnitContents(unit.value.contents, [...unit.path, 'contents'], error);
    const dropins = entries(unit.value, 'dropins').map((dropin) => ({
      value: dropin.value,
      path: [...unit.path, ...dropin.path],
    }));
    requireUnique(dropins, 'name', error);
    for (const dropin of dropins) {
      const dropinName = dropin.value.name;
      if (typeof dropinName !== 'string' || !dropinName.endsWith('.conf')) {
        error([...dropin.path, 'name'], 'invalid systemd drop-in extension');
      }
      checkUnitContents(dropin.value.contents, [...dropin.path, 'contents'], error);
    }
  }

  for (const kind of ['users', 'groups']) {
    const accounts = entries(config, 'passwd', kind);
    requireUnique(accounts, 'name', error);
    for (const account of accounts) {
      if (typeof account.value.name !== 'string' || account.value.name === '')
        error([...account.path, 'name'], 'name is required');
    }
  }

  const proxy =
    isJsonObject(config.ignition) && isJsonObject(config.ignition.proxy) ? config.ignition.proxy : {};
  for (const key of ['httpProxy', 'httpsProxy']) {
    const value = proxy[key];
    if (typeof value === 'string' && value !== '' && !/^https?:\/\//.test(value)) {
      error(['ignition', 'proxy', key], 'proxies must be http(s)');
    }
  }
  return errors;
}

function resources(config: JsonObject): Entry[] {
  const found: Entry[] = [];
  const ignition = isJsonObject(config.ignition) ? config.ignition : {};
  const configSection = isJsonObject(ignition.config) ? ignition.config : {};
  found.push(...entries(config, 'ignition', 'config', 'merge'));
  if (isJsonObject(configSection.replace))
    found.push({ value: configSection.replace, path: ['ignition', 'config', 'replace'] });
  const authorities = entries(config, 'ignition', 'security', 'tls', 'certificateAuthorities');
  found.push(...authorities);
  for (const file of entries(config, 'storage', 'files')) {
    if (isJsonObject(file.value.contents))
      found.push({ value: file.value.contents, path: [...file.path, 'contents'] });
    found.push(
      ...entries(file.value, 'append').map((item) => ({
        value: item.value,
        path: [...file.path, ...item.path],
      })),
    );
  }
  for (const volume of entries(config, 'storage', 'luks')) {
    if (isJsonObject(volume.value.keyFile))
      found.push({ value: volume.value.keyFile, path: [...volume.path, 'keyFile'] });
  }
  const duplicates: PathError[] = [];
  requireUnique(authorities, 'source', (path, message) => duplicates.push({ path, message }));
  return found.concat(
    duplicates.map((duplicate) => ({ value: { __duplicate: duplicate.message }, path: duplicate.path })),
  );
}

function checkResource(resource: Entry, error: (path: NodePath, message: string) => void): void {
  const { value, path } = resource;
  if (typeof value.__duplicate === 'string') {
    error(path, value.__duplicate);
    return;
  }
  const source = typeof value.source === 'string' && value.source !== '' ? value.source : undefined;
  const compression = value.compression;
  if (compression !== undefined && compression !== '' && compression !== 'gzip') {
    error([...path, 'compression'], 'invalid compression method');
  }
  const verification = isJsonObject(value.verification) ? value.verification : undefined;
  if (verification?.hash !== undefined) {
    if (source === undefined)
      error([...path, 'verification'], 'source must be specified if verification is specified');
    checkHash(verification.hash, [...path, 'verification', 'hash'], error);
  }
  const headers = Array.isArray(value.httpHeaders) ? value.httpHeaders : [];
  let scheme: string | undefined;
  if (source !== undefined) {
    scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(source)?.[1]?.toLowerCase();
    if (scheme === undefined || !URL.canParse(source)) error([...path, 'source'], 'unable to parse url');
    else if (!SCHEMES.has(scheme)) error([...path, 'source'], 'invalid url scheme');
    else if (scheme === 'data' && !isDataUrl(source)) error([...path, 'source'], 'invalid data url');
    if (scheme === 's3' && compression === 'gzip')
      error([...path, 'compression'], 'invalid compression method');
  }
  if (headers.length > 0 && scheme !== 'http' && scheme !== 'https') {
    error([...path, 'httpHeaders'], 'cannot use HTTP headers with this source scheme');
  }
  const names = new Set<unknown>();
  headers.forEach((header, index) => {
    const name = isJsonObject(header) ? header.name : undefined;
    if (typeof name !== 'string' || name === '')
      error([...path, 'httpHeaders', index, 'name'], "HTTP header name can't be empty");
    else if (names.has(name.toLowerCase()))
      error([...path, 'httpHeaders', index, 'name'], 'duplicate entry defined');
    else names.add(name.toLowerCase());
  });
}

/** RFC 2397: `data:[<mediatype>][;base64],<data>`. */
function isDataUrl(url: string): boolean {
  const comma = url.indexOf(',');
  if (comma < 0) return false;
  const header = url.slice(5, comma);
  const data = url.slice(comma + 1);
  if (header.endsWith(';base64')) return /^[A-Za-z0-9+/]*={0,2}$/.test(data) && data.length % 4 === 0;
  return !/%(?![0-9A-Fa-f]{2})/.test(data);
}

function checkHash(hash: unknown, path: NodePath, error: (path: NodePath, message: string) => void): void {
  if (typeof hash !== 'string') return;
  const match = /^([a-z0-9]+)-([0-9a-f]*)$/.exec(hash);
  if (!match) {
    error(path, 'malformed hash specifier');
    return;
  }
  const lengths: Record<string, number> = { sha512: 128, sha256: 64 };
  const expected = lengths[match[1] ?? ''];
  if (expected === undefined) {
    error(path, 'unrecognized hash function');
    return;
  }
  if ((match[2] ?? '').length !== expected) error(path, 'incorrect size for hash sum');
}

function checkNodePath(path: unknown, at: NodePath, error: (path: NodePath, message: string) => void): void {
  if (typeof path !== 'string' || path === '') {
    error(at, 'path not specified');
    return;
  }
  if (!path.startsWith('/')) {
    error(at, 'path not absolute');
    return;
  }
  if (posix.normalize(path) !== path || (path.length > 1 && path.endsWith('/')))
    error(at, 'path is not fully simplified');
}

function checkAbsolute(
  device: unknown,
  at: NodePath,
  error: (path: NodePath, message: string) => void,
): void {
  if (typeof device !== 'string' || device === '') error(at, 'device is required');
  else if (!device.startsWith('/')) error(at, 'path not absolute');
}

/** go-systemd's unit parser: sections, `Key=Value` inside a section, comments, `\` continuations. */
function checkUnitContents(
  contents: unknown,
  path: NodePath,
  error: (path: NodePath, message: string) => void,
): void {
  if (typeof contents !== 'string') return;
  let inSection = false;
  let continued = false;
  for (const [index, rawLine] of contents.split('\n').entries()) {
    const line = rawLine.trim();
    const wasContinued = continued;
    continued = line.endsWith('\\');
    if (wasContinued || line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    if (/^\[[^\]]+\]$/.test(line)) {
      inSection = true;
      continue;
    }
    if (!inSection || !line.includes('=')) {
      error(
        path,
        `invalid unit content, line ${index + 1}: ${inSection ? 'expected Key=Value' : 'option outside a [Section]'}`,
      );
      return;
    }
  }
}

function requireUnique(items: Entry[], key: string, error: (path: NodePath, message: string) => void): void {
  const seen = new Set<unknown>();
  for (const item of items) {
    const value = item.value[key];
    if (value === undefined) continue;
    if (seen.has(value)) error([...item.path, key], 'duplicate entry defined');
    seen.add(value);
  }
}
