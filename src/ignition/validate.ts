import { posix } from 'node:path';
import { convertShape, isJsonObject, type JsonObject, type ShapeOptions } from './shape.js';
import { IGNITION_SPEC, isAtLeast, SPEC_VERSIONS, type SpecVersion } from './spec.js';
import type { NodePath, PathError } from './template.js';
import { unitLineTooLong } from './unit-line-limit.js';

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
export function checkIgnitionShape(
  value: unknown,
  writtenAt?: ShapeOptions['writtenAt'],
): { config: JsonObject; errors: PathError[] } {
  const errors: PathError[] = [];
  if (!isJsonObject(value)) return { config: {}, errors: [{ path: [], message: 'not a config (empty)' }] };
  const version = specVersionOf(value);
  if (typeof version !== 'string') return { config: {}, errors: [version] };
  const config = convertShape(
    value,
    { object: IGNITION_SPEC },
    [],
    { version, sourceKey: sameKey, writtenAt },
    errors,
  );
  return { config: isJsonObject(config) ? config : {}, errors };
}

type Entry = { value: JsonObject; path: NodePath };

function entries(config: JsonObject, ...keys: string[]): Entry[] {
  let node: unknown = config;
  for (const key of keys) node = isJsonObject(node) ? node[key] : undefined;
  if (!Array.isArray(node)) return [];
  return node.flatMap((value, index) => (isJsonObject(value) ? [{ value, path: [...keys, index] }] : []));
}

/** Source URL schemes, by the spec that first takes them. */
const SCHEMES = new Map<string, SpecVersion>([
  ...['http', 'https', 'tftp', 's3', 'gs', 'data'].map((scheme) => [scheme, '3.3.0'] as const),
  ['arn', '3.4.0'],
]);
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
/** mkfs limits in bytes (Ignition measures with Go's len). */
const LABEL_LIMITS: Record<string, number> = { ext4: 16, xfs: 12, vfat: 11, swap: 15, btrfs: 256 };
const GUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const RAID_LEVELS_WITHOUT_SPARES = new Set(['linear', 'raid0', '0', 'stripe']);
const RAID_LEVELS = new Set([
  ...RAID_LEVELS_WITHOUT_SPARES,
  ...['raid1', '1', 'mirror', 'raid4', '4', 'raid5', '5', 'raid6', '6', 'raid10', '10'],
]);
const CLEVIS_PINS = new Set(['tpm2', 'tang', 'sss']);
/** How Ignition names a node in "… path includes link in config". */
const NODE_KIND: Record<string, string> = { files: 'file', directories: 'directory', links: 'link' };

type ReportError = (path: NodePath, message: string) => void;

/** Ignition's util.NotEmpty: a string that is set and not empty. */
function isSet(value: unknown): value is string {
  return typeof value === 'string' && value !== '';
}

function byteLength(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

/** The entries of a list inside `parent`, with paths from the config root. */
function children(parent: Entry, ...keys: string[]): Entry[] {
  return entries(parent.value, ...keys).map((child) => ({
    value: child.value,
    path: [...parent.path, ...child.path],
  }));
}

/** Semantic rules over a shape-checked config (Ignition key names). */
export function validateIgnition(config: JsonObject): PathError[] {
  const errors: PathError[] = [];
  const error = (path: NodePath, message: string) => errors.push({ path, message });
  const parsedVersion = specVersionOf(config);
  // Shape checking refuses configs without a supported version; should one get here anyway, the
  // oldest spec's sources are those every Ignition takes.
  const version = typeof parsedVersion === 'string' ? parsedVersion : SPEC_VERSIONS[0];

  const files = entries(config, 'storage', 'files');
  const directories = entries(config, 'storage', 'directories');
  const links = entries(config, 'storage', 'links');
  const nodes = [...files, ...directories, ...links];
  for (const node of nodes) checkNodePath(node.value.path, [...node.path, 'path'], error);
  for (const filesystem of entries(config, 'storage', 'filesystems')) {
    if (isSet(filesystem.value.path))
      checkNodePath(filesystem.value.path, [...filesystem.path, 'path'], error);
  }
  requireUnique(nodes, 'path', error);

  const linkPaths = new Set(links.map((link) => link.value.path).filter((path) => typeof path === 'string'));
  const directoryPaths = new Set(directories.map((directory) => directory.value.path));
  for (const node of nodes) {
    const path = node.value.path;
    if (typeof path !== 'string') continue;
    for (let parent = posix.dirname(path); parent !== '/' && parent !== '.'; parent = posix.dirname(parent)) {
      if (linkPaths.has(parent))
        error([...node.path, 'path'], `${NODE_KIND[String(node.path[1])]} path includes link in config`);
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

  for (const resource of resources(config)) checkResource(resource, version, error);
  for (const fetched of [
    ...entries(config, 'ignition', 'config', 'merge'),
    ...entries(config, 'ignition', 'security', 'tls', 'certificateAuthorities'),
  ]) {
    if (!isSet(fetched.value.source)) error(fetched.path, 'source is required');
  }

  const disks = entries(config, 'storage', 'disks');
  requireUnique(disks, 'device', error);
  for (const disk of disks) checkDisk(disk, error);
  const filesystems = entries(config, 'storage', 'filesystems');
  requireUnique(filesystems, 'device', error);
  for (const filesystem of filesystems) checkFilesystem(filesystem, error);
  const raids = entries(config, 'storage', 'raid');
  requireUnique(raids, 'name', error);
  for (const raid of raids) checkRaid(raid, error);
  const luks = entries(config, 'storage', 'luks');
  requireUnique(luks, 'name', error);
  for (const volume of luks) checkLuks(volume, error);
  checkKernelArguments(config, error);

  const units = entries(config, 'systemd', 'units');
  requireUnique(units, 'name', error);
  for (const unit of units) {
    const name = unit.value.name;
    if (typeof name !== 'string' || name === '') error([...unit.path, 'name'], 'unit name is required');
    else if (!UNIT_SUFFIXES.some((suffix) => name.endsWith(suffix)))
      error([...unit.path, 'name'], 'invalid systemd unit extension');
    checkUnitContents(unit.value.contents, [...unit.path, 'contents'], error);
    const dropins = children(unit, 'dropins');
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
  // Ignition keys every list (validate.ValidateDups), a plain value by itself; only the lists its
  // types exempt (IgnoreDuplicates: filesystem, LUKS and RAID options, a file's append) may repeat.
  for (const user of entries(config, 'passwd', 'users')) {
    requireUniqueValues(user.value.sshAuthorizedKeys, [...user.path, 'sshAuthorizedKeys'], error);
    requireUniqueValues(user.value.groups, [...user.path, 'groups'], error);
  }
  for (const raid of raids) requireUniqueValues(raid.value.devices, [...raid.path, 'devices'], error);
  requireUnique(entries(config, 'ignition', 'config', 'merge'), 'source', error);

  const proxy =
    isJsonObject(config.ignition) && isJsonObject(config.ignition.proxy) ? config.ignition.proxy : {};
  requireUniqueValues(proxy.noProxy, ['ignition', 'proxy', 'noProxy'], error);
  for (const key of ['httpProxy', 'httpsProxy']) {
    const value = proxy[key];
    if (typeof value === 'string' && value !== '' && !/^https?:\/\//.test(value)) {
      error(['ignition', 'proxy', key], 'proxies must be http(s)');
    }
  }
  return errors;
}

function checkDisk(disk: Entry, error: ReportError): void {
  checkDevice(disk.value.device, [...disk.path, 'device'], 'disk device is required', error);
  const partitions = children(disk, 'partitions');
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
  const labels = new Set<string>();
  for (const partition of partitions) {
    checkPartition(partition, error);
    const label = partition.value.label;
    if (typeof label !== 'string') continue;
    if (labels.has(label)) error(partition.path, 'cannot use the same partition label twice');
    labels.add(label);
  }
  const removesOne = partitions.some((partition) => partition.value.shouldExist === false);
  if (removesOne && partitions.some((partition) => !partition.value.number)) {
    error(
      [...disk.path, 'partitions'],
      'shouldExist is false for a partition and other partition(s) has start or size 0',
    );
  }
}

function checkPartition({ value, path }: Entry, error: ReportError): void {
  const describesPartition =
    value.label !== undefined ||
    isSet(value.typeGuid) ||
    isSet(value.guid) ||
    value.startMiB !== undefined ||
    value.sizeMiB !== undefined;
  if (value.shouldExist === false && describesPartition)
    error(path, 'shouldExist specified false with other options also specified');
  if (!value.number && value.label === undefined)
    error(path, 'a partition number >= 1 or a label must be specified');
  const label = value.label;
  if (typeof label === 'string' && byteLength(label) > 36)
    error([...path, 'label'], 'partition labels may not exceed 36 characters');
  else if (typeof label === 'string' && label.includes(':'))
    error([...path, 'label'], 'partition label will be truncated to text before the colon');
  for (const key of ['typeGuid', 'guid']) {
    const guid = value[key];
    if (isSet(guid) && !GUID.test(guid))
      error([...path, key], 'doesn\'t match the form "01234567-89AB-CDEF-EDCB-A98765432101"');
  }
}

function checkFilesystem({ value, path }: Entry, error: ReportError): void {
  checkDevice(value.device, [...path, 'device'], 'path not specified', error);
  const { format, label } = value;
  if (!isSet(format)) {
    const needsFormat =
      isSet(value.path) ||
      isSet(label) ||
      isSet(value.uuid) ||
      value.wipeFilesystem === true ||
      isNonEmptyList(value.mountOptions) ||
      isNonEmptyList(value.options);
    if (needsFormat) {
      error(
        [...path, 'format'],
        'format cannot be empty when path, label, uuid, wipeFilesystem, options, or mountOptions is specified',
      );
    }
  } else if (!FILESYSTEM_FORMATS.has(format)) error([...path, 'format'], 'invalid filesystem format');
  if (!isSet(label)) return;
  if (!isSet(format)) {
    error([...path, 'label'], 'filesystem must specify format if label is specified');
    return;
  }
  const limit = LABEL_LIMITS[format];
  if (limit !== undefined && byteLength(label) > limit) {
    error(
      [...path, 'label'],
      `filesystem labels cannot be longer than ${limit} characters when using ${format}`,
    );
  }
}

function checkRaid({ value, path }: Entry, error: ReportError): void {
  const level = value.level;
  if (!isSet(level)) error([...path, 'level'], 'raid level is required');
  else if (!RAID_LEVELS.has(level)) error([...path, 'level'], 'unrecognized raid level');
  else if (RAID_LEVELS_WITHOUT_SPARES.has(level) && typeof value.spares === 'number' && value.spares !== 0)
    error([...path, 'level'], 'spares unsupported for linear and raid0 arrays');
  const devices = Array.isArray(value.devices) ? value.devices : [];
  if (devices.length === 0) error([...path, 'devices'], 'raid devices required');
  for (const [index, device] of devices.entries())
    checkDevice(device, [...path, 'devices', index], 'path not specified', error);
}

function checkLuks(volume: Entry, error: ReportError): void {
  const { value, path } = volume;
  if (typeof value.name === 'string' && value.name.includes('/'))
    error([...path, 'name'], 'device names cannot contain slashes');
  if (isSet(value.label) && byteLength(value.label) > 47)
    error([...path, 'label'], 'luks device labels cannot be longer than 47 characters');
  checkDevice(value.device, [...path, 'device'], 'disk device is required', error);
  const clevis = isJsonObject(value.clevis) ? value.clevis : {};
  const custom = isJsonObject(clevis.custom) ? clevis.custom : {};
  const tangs = children(volume, 'clevis', 'tang');
  const otherPins =
    tangs.length > 0 ||
    clevis.tpm2 === true ||
    (typeof clevis.threshold === 'number' && clevis.threshold !== 0);
  if (isSet(custom.pin) && otherPins)
    error([...path, 'clevis'], 'cannot use custom clevis config with tpm2, tang, or threshold');
  if (isSet(custom.pin) || isSet(custom.config) || custom.needsNetwork === true) {
    if (!isSet(custom.pin)) error([...path, 'clevis', 'custom', 'pin'], 'missing required custom clevis pin');
    else if (!CLEVIS_PINS.has(custom.pin))
      error([...path, 'clevis', 'custom', 'pin'], 'unsupported clevis pin');
    if (!isSet(custom.config))
      error([...path, 'clevis', 'custom', 'config'], 'missing required custom clevis config');
  }
  requireUnique(tangs, 'url', error);
  for (const tang of tangs) checkTang(tang, error);
}

/** The scheme of a URL, lower-cased (RFC 3986 §3.1); undefined when the text has none. */
function urlScheme(text: string): string | undefined {
  return /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(text)?.[1]?.toLowerCase();
}

/**
 * Whether Go's net/url.Parse, which Ignition uses, accepts `text`. WHATWG's URL refuses what Go
 * takes (a port above 65535, `999.1.1.1`, an IPv6 zone such as `[fe80::1%25eth0]`, an empty host),
 * and a refusal here stops a machine's install, so this follows Go: no control characters, every
 * `%` a valid escape, in the host none below 0x80 but `%25` (the zone's), and a port of digits.
 */
function parsesAsGoUrl(text: string): boolean {
  // Go keeps the body of an opaque URL (`data:,…`, `arn:…`) undecoded; only its fragment is decoded.
  const decoded = /^[A-Za-z][A-Za-z0-9+.-]*:(?!\/)/.test(text) ? text.replace(/^[^#]*#?/, '') : text;
  if (/[\x00-\x1f\x7f]/.test(text) || /%(?![0-9A-Fa-f]{2})/.test(decoded)) return false;
  const authority = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/.exec(text)?.[1];
  if (authority === undefined) return true;
  const host = authority.slice(authority.lastIndexOf('@') + 1);
  const bracketed = /^\[[^\]]*\]/.exec(host)?.[0];
  if (host.startsWith('[') && bracketed === undefined) return false;
  const name = bracketed ?? host.replace(/:[^:]*$/, '');
  const port = host.slice(name.length);
  const lowEscape = /%(?!25)[0-7][0-9A-Fa-f]/;
  return /^(:\d*)?$/.test(port) && !lowEscape.test(name) && /^[\w\-.~!$&'()*+,;=%:[\]<>"]*$/.test(name);
}

function checkTang({ value, path }: Entry, error: ReportError): void {
  const url = typeof value.url === 'string' ? value.url : '';
  const scheme = urlScheme(url);
  if (scheme !== 'http' && scheme !== 'https') error([...path, 'url'], 'invalid url scheme');
  else if (!parsesAsGoUrl(url)) error([...path, 'url'], 'unable to parse url');
  if (!isSet(value.thumbprint)) error([...path, 'thumbprint'], 'thumbprint is required');
  if (isSet(value.advertisement) && !isJson(value.advertisement))
    error([...path, 'advertisement'], 'advertisement is not valid JSON');
}

/** shouldExist and shouldNotExist are one key space: an argument may appear once in both together. */
function checkKernelArguments(config: JsonObject, error: ReportError): void {
  const kernelArguments = isJsonObject(config.kernelArguments) ? config.kernelArguments : {};
  const seen = new Set<unknown>();
  for (const list of ['shouldExist', 'shouldNotExist']) {
    const values = kernelArguments[list];
    if (!Array.isArray(values)) continue;
    for (const [index, argument] of values.entries()) {
      if (seen.has(argument)) error(['kernelArguments', list, index], 'duplicate entry defined');
      seen.add(argument);
    }
  }
}

function isNonEmptyList(value: unknown): boolean {
  return Array.isArray(value) && value.length > 0;
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
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

function checkResource(resource: Entry, version: SpecVersion, error: ReportError): void {
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
    scheme = urlScheme(source);
    const problem =
      scheme === undefined || !parsesAsGoUrl(source)
        ? 'unable to parse url'
        : sourceProblem(source, scheme, version);
    if (problem !== undefined) error([...path, 'source'], problem);
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

/** Ignition's validateURL once Go has parsed `url`: a scheme of the config's spec, then each scheme's rules. */
function sourceProblem(url: string, scheme: string, version: SpecVersion): string | undefined {
  const since = SCHEMES.get(scheme);
  if (since === undefined || !isAtLeast(version, since)) return 'invalid url scheme';
  if (scheme === 'data') return dataUrlProblem(url);
  if (scheme === 'arn' && !isS3ObjectArn(url)) return 'invalid S3 ARN format';
  if ((scheme === 's3' || scheme === 'arn') && hasEmptyVersionId(url)) return 'invalid S3 object VersionId';
  return undefined;
}

/**
 * Ignition rebuilds the ARN from Go's lower-cased scheme and the opaque part (no query, no
 * fragment), so `Arn:` passes; aws-sdk's arn.IsARN wants six `:` sections, Ignition service s3 and
 * a key: at least one `/` in the whole ARN, two for an `accesspoint/` resource.
 */
function isS3ObjectArn(url: string): boolean {
  const opaque = url.slice('arn:'.length).replace(/[?#].*$/, '');
  const arn = `arn:${opaque.startsWith('/') ? '' : opaque}`;
  const sections = arn.split(':');
  if (sections.length < 6 || sections[2] !== 's3') return false;
  const resource = sections.slice(5).join(':');
  return arn.split('/').length >= (resource.startsWith('accesspoint/') ? 3 : 2);
}

/** Whether Go's url.Query(), which drops the pairs it cannot decode, has an empty first `versionId`. */
function hasEmptyVersionId(url: string): boolean {
  const query = /^[^#?]*\?([^#]*)/.exec(url)?.[1] ?? '';
  for (const pair of query.split('&')) {
    if (pair === '' || pair.includes(';') || /%(?![0-9A-Fa-f]{2})/.test(pair)) continue;
    const equals = pair.indexOf('=');
    const key = (equals < 0 ? pair : pair.slice(0, equals))
      .replace(/\+/g, ' ')
      .replace(/%([0-9A-Fa-f]{2})/g, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
    if (key === 'versionId') return equals < 0 || equals === pair.length - 1;
  }
  return false;
}

/** MIME token characters (RFC 2045): printable ASCII but the tspecials. */
const MIME_TOKEN = /^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]$/;
/** RFC 2396 uric: reserved, unreserved and `%`. */
const URIC = /^[!$%&'()*+,\-./0-9:;=?@A-Z_a-z~]$/;
const BASE64_CHARACTER = /^[A-Za-z0-9+/=]$/;
const ASCII = /^[\x00-\x7f]$/;
/** dataurl's media types besides `x-…`, matched as prefixes. */
const MEDIA_TYPE = /^(text|image|audio|video|application|message|multipart)/;
/** What Go's strconv.Unquote takes between double quotes, the lexer having paired each `\` with a character. */
const GO_QUOTED =
  /^(?:[^\\]|\\(?:[abfnrtv\\"]|x[0-9A-Fa-f]{2}|[0-3][0-7]{2}|u(?![dD][89a-fA-F])[0-9A-Fa-f]{4}|U(?!0000[dD][89a-fA-F])(?:000[0-9A-Fa-f]|0010)[0-9A-Fa-f]{4}))*$/;

function tokensEnd(chars: string[], start: number): number {
  let end = start;
  while (MIME_TOKEN.test(chars[end] ?? '')) end++;
  return end;
}

/**
 * vincent-petithory/dataurl's DecodeString, which Ignition runs on data sources, with its messages:
 * `data:[type/subtype][;attr=value]…[;base64],data`, case-sensitive, MIME tokens in the header, RFC
 * 2396 characters with whole escapes in the data, or base64 after `;base64`. Its parser decodes a
 * parameter value as the lexer hands it over, so a bad value wins over any error further on.
 */
function dataUrlProblem(url: string): string | undefined {
  if (!url.startsWith('data:')) return 'missing data prefix';
  // Go's lexer steps by rune: a character outside the BMP counts once.
  const chars = [...url];
  let at = 'data:'.length;
  const first = chars[at];
  if (first === undefined) return 'missing comma before data';
  if (first !== ';' && first !== ',') {
    if (!MIME_TOKEN.test(first)) return 'invalid character after data prefix';
    // After an `x` the lexer consumes one more character unchecked, looking for `x-`.
    const typeEnd = tokensEnd(chars, first === 'x' || first === 'X' ? at + 2 : at + 1);
    if (chars[typeEnd] === undefined) return 'missing media type slash';
    if (chars[typeEnd] !== '/') return 'invalid character for media type';
    const type = chars.slice(at, typeEnd).join('');
    if (!/^[xX]-/.test(type) && !MEDIA_TYPE.test(type)) return 'invalid media type';
    at = tokensEnd(chars, typeEnd + 1);
    if (chars[at] === undefined) return 'incomplete media type';
    if (chars[at] !== ';' && chars[at] !== ',') return 'invalid character for media subtype';
  }
  let base64 = false;
  while (chars[at] === ';') {
    const nameEnd = tokensEnd(chars, at + 1);
    const stop = chars[nameEnd];
    if (stop === undefined || (nameEnd === at + 1 && (stop === '=' || stop === ',')))
      return 'unterminated parameter sequence';
    if (stop === ',') {
      const name = chars.slice(at + 1, nameEnd).join('');
      if (name !== 'base64') return `expected base64, got ${name}`;
      base64 = true;
      at = nameEnd;
    } else if (stop === '=') {
      const valueEnd = parameterValueEnd(chars, nameEnd + 1);
      if (typeof valueEnd === 'string') return valueEnd;
      at = valueEnd;
    } else return 'invalid character for parameter attribute';
  }
  const data = chars.slice(at + 1);
  if (!data.every((char) => (base64 ? BASE64_CHARACTER : URIC).test(char))) return 'invalid data character';
  return base64 ? base64Problem(data.join('')) : unescapeProblem(data.join(''));
}

/** Where a data URL parameter value starting at `start` ends (its `;` or `,`), or dataurl's error. */
function parameterValueEnd(chars: string[], start: number): number | string {
  if (chars[start] !== '"') {
    const end = tokensEnd(chars, start);
    if (chars[end] === undefined) return 'missing comma before data';
    if (end === start || (chars[end] !== ';' && chars[end] !== ','))
      return 'invalid character for parameter value';
    return unescapeProblem(chars.slice(start, end).join('')) ?? end;
  }
  let close = start + 1;
  for (; chars[close] !== '"'; close++) {
    const char = chars[close];
    if (char === undefined) return 'unclosed quoted string';
    if (!ASCII.test(char)) return 'invalid character for parameter value';
    if (char === '\\') {
      close++;
      const escaped = chars[close];
      if (escaped !== undefined && !ASCII.test(escaped)) return 'invalid escaped character';
    }
  }
  if (!GO_QUOTED.test(chars.slice(start + 1, close).join(''))) return 'invalid syntax';
  const end = close + 1;
  if (chars[end] === undefined) return 'missing comma before data';
  return chars[end] === ';' || chars[end] === ',' ? end : 'expected semicolon or comma';
}

/** dataurl's RFC 2396 unescaping, which names the `%` as the bad character. */
function unescapeProblem(text: string): string | undefined {
  const bad = /%(?![0-9A-Fa-f]{2})/.exec(text);
  if (bad === null) return undefined;
  return /^%[0-9A-Fa-f]?$/.test(text.slice(bad.index))
    ? 'rfc2396: unexpected end of unescape sequence'
    : 'rfc2396: invalid char 0x25 in unescape sequence';
}

/** Go's base64.StdEncoding on base64 characters: whole quanta, the last one padded, nothing after. */
function base64Problem(data: string): string | undefined {
  const at = base64StopsAt(data);
  return at === undefined ? undefined : `illegal base64 data at input byte ${at}`;
}

function base64StopsAt(data: string): number | undefined {
  const pad = data.indexOf('=');
  if (pad < 0) return data.length % 4 === 0 ? undefined : data.length - (data.length % 4);
  if (pad % 4 < 2) return pad;
  let end = pad + 1;
  if (pad % 4 === 2) {
    if (end === data.length) return end;
    if (data[end] !== '=') return pad;
    end++;
  }
  return end < data.length ? end : undefined;
}

function checkHash(hash: unknown, path: NodePath, error: ReportError): void {
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

function checkNodePath(path: unknown, at: NodePath, error: ReportError): void {
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

/** A device path; Ignition words a missing one differently per section. */
function checkDevice(device: unknown, at: NodePath, missingMessage: string, error: ReportError): void {
  if (!isSet(device)) error(at, missingMessage);
  else if (!device.startsWith('/')) error(at, 'path not absolute');
}

/**
 * go-systemd's unit parser: sections, `Key=Value` inside a section, comments, `\` continuations, and
 * the line length its lexer refuses (unit-line-limit.ts).
 */
function checkUnitContents(contents: unknown, path: NodePath, error: ReportError): void {
  if (typeof contents !== 'string') return;
  if (unitLineTooLong(contents)) {
    error(path, 'invalid unit content: line too long (max 2048 bytes)');
    return;
  }
  let inSection = false;
  let continued = false;
  for (const [index, rawLine] of contents.split('\n').entries()) {
    const line = rawLine.trim();
    const wasContinued = continued;
    continued = line.endsWith('\\');
    if (wasContinued || line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    // go-systemd ends a section name at its first `]`, and only the line end may follow it.
    const header = /^\[[^\]]+\]/.exec(line);
    if (header && header[0].length < line.length) {
      error(path, `invalid unit content, line ${index + 1}: found garbage after section name`);
      return;
    }
    if (header) {
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

/** A list of plain values (SSH keys, groups, devices) holding one of them twice. */
function requireUniqueValues(list: unknown, path: NodePath, error: ReportError): void {
  if (!Array.isArray(list)) return;
  const seen = new Set<unknown>();
  for (const [index, value] of list.entries()) {
    if (seen.has(value)) error([...path, index], 'duplicate entry defined');
    seen.add(value);
  }
}

function requireUnique(items: Entry[], key: string, error: ReportError): void {
  const seen = new Set<unknown>();
  for (const item of items) {
    const value = item.value[key];
    if (value === undefined) continue;
    if (seen.has(value)) error([...item.path, key], 'duplicate entry defined');
    seen.add(value);
  }
}
