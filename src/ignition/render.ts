import { dirname } from 'node:path';
import type { Problem } from '../inventory/problems.js';
import { isButane, translateButane } from './butane.js';
import { isJsonObject, type JsonObject } from './shape.js';
import { snakeCase } from './spec.js';
import {
  type NodePath,
  type ParsedTemplate,
  type PathError,
  problemAt,
  substitute,
  type TemplateVars,
} from './template.js';
import { checkIgnitionShape, validateIgnition } from './validate.js';

export type RenderedIgnition =
  | { ok: true; config: JsonObject; text: string }
  | { ok: false; problems: Problem[] };

/** Name of the first-boot unit that reports `installed`; a template defining a unit of this name replaces it. */
export const REPORT_UNIT_NAME = 'rackboot-report-installed.service';
const REPORTED_MARKER = '/var/lib/rackboot/installed-reported';

/**
 * Template + one machine's variables → validated Ignition JSON, or problems at FILE:LINE:COL.
 * The pipeline is matchbox's (render → translate Butane → validate), with rackboot's first-boot
 * report unit added so the install loop ends without touching the BIOS boot order.
 */
export function renderIgnition(template: ParsedTemplate, vars: TemplateVars): RenderedIgnition {
  if (template.problems.length > 0) return { ok: false, problems: template.problems };
  const substituted = substitute(template.data, vars);
  if (substituted.errors.length > 0)
    return { ok: false, problems: located(template, substituted.errors, false) };
  const butane = isButane(substituted.value);
  const writtenAt = (path: NodePath) => template.document.getIn(path);
  const translated = butane
    ? translateButane(substituted.value, { filesDir: dirname(template.file), writtenAt })
    : checkIgnitionShape(substituted.value, writtenAt);
  if (translated.errors.length > 0)
    return { ok: false, problems: located(template, translated.errors, false) };
  const config = withReportUnit(translated.config, vars.events_url);
  const errors = [...validateIgnition(config), ...decimalLookingModes(config)];
  if (errors.length > 0) return { ok: false, problems: located(template, errors, butane) };
  const served = replaceAsMerge(config);
  return { ok: true, config: served, text: JSON.stringify(served) };
}

/** Ignition paths name Ignition keys; a Butane template's source spells them in snake_case. */
function located(template: ParsedTemplate, errors: PathError[], ignitionKeysInButane: boolean): Problem[] {
  return errors.map((error) => {
    const path: NodePath = ignitionKeysInButane
      ? error.path.map((part) => (typeof part === 'string' ? snakeCase(part) : part))
      : error.path;
    return problemAt(template, path, error.message, error.onKey);
  });
}

/** An ExecStart line posting `{"type": TYPE}` to the machine's events URL, retrying for a few minutes. */
function reportCommand(eventsUrl: string, type: 'installed' | 'disk-written'): string {
  // systemd expands % specifiers in ExecStart; the URL is ours (no %), but escape it anyway.
  const url = eventsUrl.replaceAll('%', '%%');
  return `ExecStart=/usr/bin/curl --fail --silent --show-error --retry 20 --retry-delay 5 --retry-all-errors --max-time 30 -X POST -H 'Content-Type: application/json' --data '{"type":"${type}"}' ${url}`;
}

/**
 * The unit that tells rackboot the installed system is up: runs after the network is online, retries
 * (curl --retry-all-errors, then systemd restarts), and once it succeeded never again (marker file).
 */
export function reportInstalledUnit(eventsUrl: string): string {
  return [
    '[Unit]',
    'Description=Report to rackboot that this machine is installed',
    'Wants=network-online.target',
    'After=network-online.target',
    `ConditionPathExists=!${REPORTED_MARKER}`,
    '',
    '[Service]',
    'Type=oneshot',
    reportCommand(eventsUrl, 'installed'),
    `ExecStartPost=/usr/bin/mkdir -p ${dirname(REPORTED_MARKER)}`,
    `ExecStartPost=/usr/bin/touch ${REPORTED_MARKER}`,
    'Restart=on-failure',
    'RestartSec=30',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

/** Name of the live installer environment's unit that reports `disk-written`. */
export const DISK_WRITTEN_UNIT_NAME = 'rackboot-report-disk-written.service';

/**
 * The Ignition config of the live installer environment (`ignition.config.url` beside the
 * `coreos.inst.*` arguments): coreos-installer's documented post-install hook
 * (https://coreos.github.io/coreos-installer/customizing-install/), which tells rackboot that the
 * disk now holds the install. From then on the machine's network boots go to its disk, so a
 * firmware that tries the network first does not reinstall at the reboot that follows, before the
 * installed system could report `installed`. Requires= keeps a failed install from reporting;
 * WantedBy= (not RequiredBy=) lets the reboot go ahead, after at most TimeoutStartSec, if rackboot
 * cannot be reached.
 */
export function installerIgnition(eventsUrl: string): string {
  const unit = [
    '[Unit]',
    "Description=Report to rackboot that coreos-installer wrote this machine's disk",
    'Requires=coreos-installer.service',
    'After=coreos-installer.service',
    'Before=coreos-installer.target',
    '',
    '[Service]',
    'Type=oneshot',
    // curl's own retries against an unreachable server would hold the reboot for ~12 minutes.
    'TimeoutStartSec=3min',
    reportCommand(eventsUrl, 'disk-written'),
    '',
    '[Install]',
    'WantedBy=coreos-installer.target',
    '',
  ].join('\n');
  return JSON.stringify({
    ignition: { version: '3.3.0' },
    systemd: { units: [{ name: DISK_WRITTEN_UNIT_NAME, enabled: true, contents: unit }] },
  });
}

function withReportUnit(config: JsonObject, eventsUrl: string): JsonObject {
  const systemd = isJsonObject(config.systemd) ? config.systemd : {};
  const units = Array.isArray(systemd.units) ? systemd.units : [];
  if (units.some((unit) => isJsonObject(unit) && unit.name === REPORT_UNIT_NAME)) return config;
  const report = { name: REPORT_UNIT_NAME, enabled: true, contents: reportInstalledUnit(eventsUrl) };
  return { ...config, systemd: { ...systemd, units: [...units, report] } };
}

/** The settings of the `ignition` section that Ignition fetches the replacing config with. */
const FETCH_SETTINGS = ['timeouts', 'security', 'proxy'];

/**
 * A config with `ignition.config.replace` is served as a parent that merges the replacing config
 * and holds only the report unit (the template's own, if it defines one): Ignition's RenderConfig
 * (internal/exec/config_fetcher.go) returns the replacing config alone and drops the parent, the
 * report unit with it, so the machine would never report `installed`. Everything else of the
 * template is dropped here as Ignition drops it. The fetch settings are copied so the replacing
 * config is fetched as before; merged onto this parent they stay in force (where the replacing
 * config sets none of its own) instead of giving way to Ignition's defaults.
 */
function replaceAsMerge(config: JsonObject): JsonObject {
  const ignition = isJsonObject(config.ignition) ? config.ignition : {};
  const replace = isJsonObject(ignition.config) ? ignition.config.replace : undefined;
  if (!isJsonObject(replace) || typeof replace.source !== 'string') return config;
  const units =
    isJsonObject(config.systemd) && Array.isArray(config.systemd.units) ? config.systemd.units : [];
  const report = units.find((unit) => isJsonObject(unit) && unit.name === REPORT_UNIT_NAME);
  const settings = FETCH_SETTINGS.filter((key) => ignition[key] !== undefined).map((key) => [
    key,
    ignition[key],
  ]);
  return {
    ignition: { version: ignition.version, config: { merge: [replace] }, ...Object.fromEntries(settings) },
    systemd: { units: [report] },
  };
}

/**
 * `mode: 644` is decimal 644 = octal 01204 (sticky bit, owner cannot read). Butane only warns
 * ("unreasonable mode would be reasonable if specified in octal"); a fleet template with it is
 * always a mistake, so it is an error here. Butane's rule exactly (base/util CheckForDecimalMode):
 * the mode as written is unusual and its decimal digits read as octal give a usual mode, so
 * 01777, 02775 and 04755 (1023, 1533 and 2541 in JSON) are taken as they are.
 */
function decimalLookingModes(config: JsonObject): PathError[] {
  const errors: PathError[] = [];
  const storage = isJsonObject(config.storage) ? config.storage : {};
  for (const kind of ['files', 'directories']) {
    const nodes = Array.isArray(storage[kind]) ? storage[kind] : [];
    nodes.forEach((node: unknown, index: number) => {
      const mode = isJsonObject(node) ? node.mode : undefined;
      if (typeof mode !== 'number' || !/^[0-7]{1,4}$/.test(String(mode))) return;
      const directory = kind === 'directories';
      const meant = Number.parseInt(String(mode), 8);
      if (isUsualMode(mode, directory) || !isUsualMode(meant, directory)) return;
      errors.push({
        path: ['storage', kind, index, 'mode'],
        message: `mode ${mode} is decimal (octal ${mode.toString(8).padStart(4, '0')}); write 0${mode} in Butane or ${meant} in JSON`,
      });
    });
  }
  return errors;
}

/** Butane's isTypicalMode: permissions an operator would plausibly mean. */
function isUsualMode(mode: number, directory: boolean): boolean {
  if (mode === 0) return true;
  let readable = false;
  let writable = false;
  let executable = false;
  // other, group, user: each must hold every bit the less specific ones have.
  for (const shift of [0, 3, 6]) {
    const permission = (mode >> shift) & 0o7;
    const read = (permission & 4) !== 0;
    const write = (permission & 2) !== 0;
    const execute = (permission & 1) !== 0;
    if ((!read && readable) || (!write && writable) || (!execute && executable)) return false;
    if (execute && readable && !executable) return false;
    if ((write || execute) && !read) return false;
    readable ||= read;
    writable ||= write;
    executable ||= execute;
  }
  if (!readable) return false;
  if (directory) return executable && (mode & 0o4000) === 0 && ((mode & 0o3000) === 0 || writable);
  if ((mode & 0o6000) !== 0 && (!executable || (mode & 0o002) !== 0)) return false;
  return (mode & 0o1000) === 0;
}
