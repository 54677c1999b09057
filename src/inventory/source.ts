import { EventEmitter } from 'node:events';
import { type FSWatcher, lstatSync, readlinkSync, statSync, watch } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { isObject } from '../json.js';
import type { Logger } from '../log.js';
import { deepFreeze, isRegularFile, type Loaded, loadConfigFile } from './load.js';
import { formatProblem, type Problem } from './problems.js';
import { missingAssets } from './profile-assets.js';
import type { Config } from './schema.js';

/** What a reload changed, for the log line an operator reads. */
export interface ConfigDiff {
  machinesAdded: string[];
  machinesRemoved: string[];
  machinesChanged: string[];
  profilesChanged: string[];
  otherKeysChanged: string[];
}

/** A reload's end: applied, or rejected with its problems (FILE:LINE:COL lines), the previous config kept. */
export type ReloadOutcome = { applied: true } | { applied: false; problems: string[] };

/**
 * Whether the files hold an edit the server refuses: the one thing about the config an operator
 * cannot see from the config in force (the machines listed, the API) without reading the log.
 */
export interface ConfigStatus {
  /** When the config in force was loaded (ms since the epoch). */
  appliedAt: number;
  /** Since when the files hold an edit the server refuses, and how many problems it has. */
  rejected?: { since: number; problems: number };
}

export interface ConfigSource {
  /** The config in force: frozen, replaced whole by a valid edit. */
  current(): Config;
  status(): ConfigStatus;
  on(event: 'change', listener: (config: Config, diff: ConfigDiff) => void): void;
  /** Re-reads the files now (the watcher calls this; SIGHUP and adopt do too). */
  reload(): Promise<ReloadOutcome>;
  close(): void;
}

/**
 * Holds the config and watches its file and the templates it names. A valid edit replaces the config
 * whole and is logged with what changed, except the START_TIME_SETTINGS, which keep their running
 * values until a restart (logged as a warning when the list of such settings or the file's value of
 * one changes, and at info when one the file had changed is back to its running value); an invalid
 * one is logged with its FILE:LINE:COL problems and the previous config keeps serving. A rejected
 * reload is tried again every `retryMs` until one applies: the fix may be a file the running config
 * does not name (a template or an asset only the rejected edit names), so no watch would see it.
 */
export function watchConfig(
  initial: Config,
  options: {
    logger: Logger;
    /** How a changed file is loaded (rackboot.ts: in a worker thread, templates checked). */
    load?: (file: string) => Promise<Loaded>;
    debounceMs?: number;
    /** How often a rejected reload is tried again (default 5 s). */
    retryMs?: number;
    /**
     * When the reading of `initial`'s files began (Date.now()): one of them changed since, before
     * its watch began, is reloaded at once. `serve` takes the lock and opens its state between the
     * two, and an edit saved then was applied only with the next one.
     */
    loadedAt?: number;
    /**
     * Start-time settings the command line sets (`serve --log-level`: server.log_level): the file's
     * value is not the one the server runs with, now or after a restart, so its edits are not
     * reported as awaiting one.
     */
    setOnCommandLine?: readonly string[];
  },
): ConfigSource {
  const { logger } = options;
  const events = new EventEmitter();
  let config = initial;
  let watchers: FSWatcher[] = [];
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let reloading: Promise<ReloadOutcome> | undefined;
  let retryTimer: NodeJS.Timeout | undefined;
  /** The problems of the rejection logged last, while the reloads keep being rejected. */
  let loggedRejection: string | undefined;
  let lastLoadMs = 0;
  let status: ConfigStatus = { appliedAt: Date.now() };
  /** The start-time settings the last applied reload reported as awaiting a restart. */
  let reportedAwaiting: readonly AwaitingRestart[] = [];

  const watchedFiles = (current: Config) => {
    const files = new Set([current.file]);
    for (const profile of Object.values(current.profiles)) if (profile.ignition) files.add(profile.ignition);
    return files;
  };

  // Editors save by renaming a temp file over the original, which ends a watch on the file itself;
  // watching the directories and filtering by name survives that. A file reached through symlinks
  // (a Kubernetes ConfigMap: rackboot.yaml → ..data/rackboot.yaml, ..data swapped to a new
  // directory at each update; a release directory: current → releases/v2) is watched where it
  // really is too, and so is each link on the way, and again wherever they are after each reload.
  let watchedKey = '';
  /** Watch errors in a row (none WATCH_FAILURES_FORGOTTEN_MS apart): each waits twice as long before watching again. */
  let watchFailures = 0;
  let lastWatchFailureAt = Number.NEGATIVE_INFINITY;
  let rewatchTimer: NodeJS.Timeout | undefined;
  const rewatch = () => {
    if (closed) return;
    const byDirectory = new Map<string, Set<string>>();
    for (const named of watchedFiles(config)) {
      for (const [directory, name] of entriesResolving(named)) {
        const names = byDirectory.get(directory) ?? new Set<string>();
        names.add(name);
        byDirectory.set(directory, names);
      }
    }
    // With each directory's inode: a watch follows the directory it was made on, so one renamed
    // away (`mv conf conf.old && mv conf.new conf`) and replaced under the same path needs a new watch.
    const key = JSON.stringify(
      [...byDirectory].map(([directory, names]) => [directory, inodeOf(directory), [...names]]),
    );
    if (key === watchedKey) return;
    watchedKey = key;
    for (const watcher of watchers) watcher.close();
    watchers = [...byDirectory].flatMap(([directory, names]) => {
      try {
        const watcher = watch(directory, (_event, name) => {
          if (name && names.has(name.toString())) schedule();
        });
        watcher.on('error', (error) => {
          // Changes may have been missed: watch again and reload, later each time it keeps failing
          // (a reload of a large fleet takes seconds of a core).
          const now = performance.now();
          if (now - lastWatchFailureAt > WATCH_FAILURES_FORGOTTEN_MS) watchFailures = 0;
          lastWatchFailureAt = now;
          const delayMs = Math.min(WATCH_RETRY_MAX_MS, WATCH_RETRY_MS * 2 ** watchFailures);
          watchFailures += 1;
          logger.warn({ err: error, directory, retryInMs: delayMs }, 'config watch failed; watching again');
          watchedKey = '';
          clearTimeout(rewatchTimer);
          rewatchTimer = setTimeout(() => {
            rewatch();
            schedule();
          }, delayMs);
          rewatchTimer.unref();
        });
        return [watcher];
      } catch (error) {
        logger.warn({ err: error, directory }, 'cannot watch config directory; hot reload is off for it');
        return [];
      }
    });
  };

  const schedule = () => {
    if (closed) return;
    clearTimeout(timer);
    timer = setTimeout(() => void reload(), options.debounceMs ?? 150);
  };

  /**
   * A rejection is logged unless it is a retry's with the problems logged last: a retry runs every
   * few seconds for as long as the edit stays broken.
   */
  const rejected = (problems: string[], retrying: boolean, log: () => void): ReloadOutcome => {
    const key = problems.join('\n');
    if (!retrying || key !== loggedRejection) log();
    loggedRejection = key;
    status = {
      ...status,
      rejected: { since: status.rejected?.since ?? Date.now(), problems: problems.length },
    };
    clearTimeout(retryTimer);
    if (closed) return { applied: false, problems };
    // A config of ten thousand machines takes seconds of a core to load: its retries take a tenth of one.
    retryTimer = setTimeout(() => void reload(true), Math.max(options.retryMs ?? 5000, 10 * lastLoadMs));
    retryTimer.unref();
    return { applied: false, problems };
  };

  const reloadOnce = async (retrying: boolean): Promise<ReloadOutcome> => {
    let loaded: Loaded;
    const started = performance.now();
    try {
      loaded = await (options.load ?? loadConfigFile)(config.file);
    } catch (error) {
      // A loader that throws (a bug, a worker that died) must not take the running server with it.
      return rejected([`cannot load ${config.file}: ${(error as Error).message}`], retrying, () =>
        logger.error({ err: error }, 'config reload failed, still serving the previous config'),
      );
    } finally {
      lastLoadMs = performance.now() - started;
    }
    if (closed) return { applied: false, problems: ['the config source is closed'] };
    if (!loaded.ok) {
      const problems = loaded.problems.map((problem) => formatProblem(problem));
      return rejected(problems, retrying, () =>
        logger.error({ problems }, `${describeRejection(loaded.problems, config)}:\n${problems.join('\n')}`),
      );
    }
    const { effective, awaitingRestart } = keepStartTimeSettings(
      initial,
      loaded.config,
      options.setOnCommandLine ?? [],
    );
    const missing = missingUnderRunningAssets(loaded.config, initial.server.assets);
    if (missing.length > 0) {
      return rejected(missing, retrying, () =>
        logger.error(
          { problems: missing },
          `config edit rejected, still serving the previous config: server.assets stays ${effective.server.assets} until a restart, and under it:\n${missing.join('\n')}`,
        ),
      );
    }
    clearTimeout(retryTimer);
    loggedRejection = undefined;
    status = { appliedAt: Date.now() };
    const diff = diffConfigs(config, effective);
    config = effective;
    logger.info({ diff }, `config reloaded: ${describeDiff(diff)}`);
    for (const warning of loaded.warnings) logger.warn(formatProblem(warning));
    for (const note of loaded.notes) logger.info(formatProblem(note));
    reportAwaitingRestart(awaitingRestart);
    events.emit('change', config, diff);
    return { applied: true };
  };

  // Said once per change of the list or of a value in it, not at every reload (an edit of a machine
  // changes none of them).
  const reportAwaitingRestart = (awaitingRestart: AwaitingRestart[]) => {
    const key = (list: readonly AwaitingRestart[]) =>
      list.map(({ setting, inFile }) => `${setting}=${JSON.stringify(inFile)}`).join('\n');
    if (key(awaitingRestart) === key(reportedAwaiting)) return;
    const stillAwaiting = new Set(awaitingRestart.map(({ setting }) => setting));
    const matchingAgain = reportedAwaiting
      .map(({ setting }) => setting)
      .filter((setting) => !stillAwaiting.has(setting));
    reportedAwaiting = awaitingRestart;
    if (matchingAgain.length > 0) {
      logger.info(
        { matchingAgain },
        `the file matches the running value again, no restart needed: ${matchingAgain.join(', ')}`,
      );
    }
    if (awaitingRestart.length > 0) {
      const listed = awaitingRestart
        .map(
          ({ setting, inFile, running, holds }) =>
            `${setting} (${JSON.stringify(inFile)} in the file, ${JSON.stringify(running)} running${holds ? `; all of ${holds} keeps its running values with it` : ''})`,
        )
        .join(', ');
      logger.warn(
        { awaitingRestart },
        `changed in the file, still the running value until a restart: ${listed}`,
      );
    }
  };

  /**
   * Serialised, so a burst of edits cannot apply an older file after a newer one, and merged: a reload
   * asked for while another waits to start joins it, since that one reads the files when it starts.
   * A burst of saves (an editor writing twice, SIGHUPs, adopts) during a reload of a large fleet then
   * costs one more load, not one per save. The merged reload is a retry only if every request was.
   */
  let waiting: { outcome: Promise<ReloadOutcome>; asked: { retrying: boolean } } | undefined;
  const reload = (retrying = false): Promise<ReloadOutcome> => {
    if (waiting) {
      waiting.asked.retrying &&= retrying;
      return waiting.outcome;
    }
    const asked = { retrying };
    const run = () => {
      waiting = undefined;
      return reloadOnce(asked.retrying);
    };
    const outcome = (reloading ?? Promise.resolve()).then(run, run).finally(rewatch);
    waiting = { outcome, asked };
    reloading = outcome;
    return outcome;
  };

  rewatch();
  const { loadedAt } = options;
  if (loadedAt !== undefined && [...watchedFiles(config)].some((file) => modifiedSince(file, loadedAt)))
    schedule();
  return {
    current: () => config,
    status: () => status,
    on: (event, listener) => events.on(event, listener),
    reload: () => reload(),
    close() {
      closed = true;
      clearTimeout(timer);
      clearTimeout(retryTimer);
      clearTimeout(rewatchTimer);
      for (const watcher of watchers) watcher.close();
    },
  };
}

const WATCH_RETRY_MS = 1000;
const WATCH_RETRY_MAX_MS = 60_000;
const WATCH_FAILURES_FORGOTTEN_MS = 600_000;

/**
 * Settings read once at start: sockets bound to them, the state directory opened, the logger made,
 * the DHCP server started or not. Everything else is read per request, so a reload applies it.
 */
const START_TIME_SETTINGS = [
  ['server', 'address'],
  ['server', 'http', 'port'],
  ['server', 'http', 'listen'],
  ['server', 'tftp', 'port'],
  ['server', 'tftp', 'listen'],
  ['server', 'dhcp', 'port'],
  ['server', 'dhcp', 'proxy_port'],
  ['server', 'assets'],
  ['server', 'state'],
  ['server', 'log_level'],
  ['dhcp', 'mode'],
  ['events', 'retention'],
] as const;

/**
 * Sections whose values only make sense with a start-time setting's value: while the file changes
 * that setting, the whole section keeps its running values (a subnet-less proxy section under a
 * running authoritative server would leave every request without a pool).
 */
const HELD_WITH: ReadonlyMap<string, Path> = new Map([['dhcp.mode', ['dhcp']]]);

/** A start-time setting the file changed: its dotted name, the file's value and the running one. */
interface AwaitingRestart {
  setting: string;
  inFile: unknown;
  running: unknown;
  /** The section that keeps its running values with it (HELD_WITH). */
  holds?: string;
}

/**
 * The reloaded config with every start-time setting put back to its running value (a new
 * server.http.port in the URLs handed to machines, while HTTP still listens on the old one, would
 * fail every boot), and those the file changed, but for the ones the command line sets.
 */
function keepStartTimeSettings(
  running: Config,
  reloaded: Config,
  setOnCommandLine: readonly string[],
): { effective: Config; awaitingRestart: AwaitingRestart[] } {
  let effective = reloaded;
  const awaitingRestart: AwaitingRestart[] = [];
  for (const path of START_TIME_SETTINGS) {
    const value = valueAt(running, path);
    const inFile = valueAt(reloaded, path);
    if (value === inFile) continue;
    const setting = path.join('.');
    const held = HELD_WITH.get(setting);
    if (!setOnCommandLine.includes(setting))
      awaitingRestart.push({
        setting,
        inFile,
        running: value,
        ...(held ? { holds: `${held.join('.')}.*` } : {}),
      });
    effective = held
      ? withValueAt(effective, held, valueAt(running, held))
      : withValueAt(effective, path, value);
  }
  return { effective: deepFreeze(effective), awaitingRestart };
}

/**
 * The headline of a rejected reload. Templates are read per request, so a problem in one the running
 * config uses already fails its machines' Ignition, whatever the edit of the config file.
 */
function describeRejection(problems: Problem[], running: Config): string {
  const profilesOf = new Map<string, string[]>();
  for (const [name, profile] of Object.entries(running.profiles)) {
    if (profile.ignition)
      profilesOf.set(profile.ignition, [...(profilesOf.get(profile.ignition) ?? []), name]);
  }
  const problemFiles = new Set(problems.map((problem) => problem.file));
  const brokenTemplates = [...profilesOf].flatMap(([file, profiles]) => {
    const named = profiles.length > 1 ? `profiles ${profiles.join(', ')}` : `profile ${profiles[0]}`;
    const shown = relative(dirname(running.file), file);
    if (problemFiles.has(file))
      return [
        `template ${shown} is broken: machines of ${named} get 503 for their Ignition until it is fixed`,
      ];
    // A template deleted or renamed away is a problem of the config file, at the profile's key.
    if (!isRegularFile(file))
      return [
        `template ${shown} is missing: machines of ${named} get 503 for their Ignition until it is back`,
      ];
    return [];
  });
  const rejectedEdit = 'config edit rejected, still serving the previous config';
  if (brokenTemplates.length === 0) return rejectedEdit;
  const inTemplatesOnly = problems.every((problem) => profilesOf.has(problem.file));
  return inTemplatesOnly
    ? `${brokenTemplates.join('; ')} (an edit of the config file waits for the fix)`
    : `${rejectedEdit}; ${brokenTemplates.join('; ')}`;
}

/**
 * The profiles' files missing under the server.assets a running server serves from, one line each.
 * It keeps that directory until a restart, while the loader checked the files under the one the
 * file names: only when the two differ is there anything more to check.
 */
export function missingUnderRunningAssets(config: Config, runningAssets: string): string[] {
  return config.server.assets === runningAssets ? [] : missingUnderAssets(config, runningAssets);
}

/** The profiles' files missing under `assets`, one line each. */
function missingUnderAssets(config: Config, assets: string): string[] {
  return Object.entries(config.profiles).flatMap(([name, profile]) =>
    missingAssets(profile, assets).map(
      (missing) => `${config.file}: profiles.${name}.${missing.field}: ${missing.message}`,
    ),
  );
}

type Path = readonly string[];

function valueAt(value: unknown, path: Path): unknown {
  return path.reduce<unknown>((parent, key) => (parent as Record<string, unknown>)[key], value);
}

/** A copy of `value` with `path` set, sharing every branch it does not change. */
function withValueAt<T>(value: T, [key, ...rest]: Path, replacement: unknown): T {
  if (key === undefined) return replacement as T;
  const parent = value as Record<string, unknown>;
  return { ...parent, [key]: withValueAt(parent[key], rest, replacement) } as T;
}

export function diffConfigs(before: Config, after: Config): ConfigDiff {
  const beforeMachines = new Map(before.machines.map((machine) => [machine.mac, JSON.stringify(machine)]));
  const afterMachines = new Map(after.machines.map((machine) => [machine.mac, JSON.stringify(machine)]));
  const changedKeys = (left: Record<string, unknown>, right: Record<string, unknown>) =>
    [...new Set([...Object.keys(left), ...Object.keys(right)])].filter(
      (key) => JSON.stringify(left[key]) !== JSON.stringify(right[key]),
    );
  return {
    machinesAdded: [...afterMachines.keys()].filter((mac) => !beforeMachines.has(mac)),
    machinesRemoved: [...beforeMachines.keys()].filter((mac) => !afterMachines.has(mac)),
    machinesChanged: [...afterMachines]
      .filter(([mac, text]) => beforeMachines.has(mac) && beforeMachines.get(mac) !== text)
      .map(([mac]) => mac),
    profilesChanged: changedKeys(before.profiles, after.profiles),
    otherKeysChanged: changedSettings(
      { ...before, machines: undefined, profiles: undefined },
      { ...after, machines: undefined, profiles: undefined },
    ),
  };
}

/**
 * The dotted names of the settings that changed, down to the leaves (`server.api_token`, not
 * `server`): the log line says which one without printing any value.
 */
function changedSettings(
  before: Record<string, unknown>,
  after: Record<string, unknown>,
  prefix = '',
): string[] {
  return [...new Set([...Object.keys(before), ...Object.keys(after)])].flatMap((key) => {
    const [left, right] = [before[key], after[key]];
    if (JSON.stringify(left) === JSON.stringify(right)) return [];
    const name = `${prefix}${key}`;
    return isObject(left) && isObject(right) ? changedSettings(left, right, `${name}.`) : [name];
  });
}

export function describeDiff(diff: ConfigDiff): string {
  const parts = [
    diff.machinesAdded.length ? `machines added: ${diff.machinesAdded.join(', ')}` : '',
    diff.machinesRemoved.length ? `machines removed: ${diff.machinesRemoved.join(', ')}` : '',
    diff.machinesChanged.length ? `machines changed: ${diff.machinesChanged.join(', ')}` : '',
    diff.profilesChanged.length ? `profiles changed: ${diff.profilesChanged.join(', ')}` : '',
    diff.otherKeysChanged.length ? `settings changed: ${diff.otherKeysChanged.join(', ')}` : '',
  ].filter(Boolean);
  return parts.length > 0 ? parts.join('; ') : 'no effective change';
}

/** As the kernel's own bound on the links followed resolving one path (ELOOP). */
const MAX_LINKS = 40;

/**
 * The directory entries whose change changes what `file` reads, each as [directory, name]: the file
 * as named, every symbolic link met resolving it, in the real directory that holds the link (a
 * watch of a path through a link follows it to the old target, so swapping the link shows only
 * there), and the file where it really is. A part missing or unreadable ends nothing: it is taken
 * as a plain entry.
 */
function entriesResolving(file: string): [string, string][] {
  const named = resolve(file);
  const entries: [string, string][] = [[dirname(named), basename(named)]];
  let directory: string = sep;
  const remaining = named.split(sep).filter(Boolean);
  let linksFollowed = 0;
  while (remaining.length > 0) {
    const name = remaining.shift() as string;
    if (name === '.') continue;
    if (name === '..') {
      directory = dirname(directory);
      continue;
    }
    const path = join(directory, name);
    const target = linkTarget(path);
    if (target === undefined || linksFollowed >= MAX_LINKS) {
      directory = path;
      continue;
    }
    linksFollowed++;
    entries.push([directory, name]);
    remaining.unshift(...target.split(sep).filter(Boolean));
    if (isAbsolute(target)) directory = sep;
  }
  entries.push([dirname(directory), basename(directory)]);
  // The directory the file really is in, as an entry of its parent: a deploy that swaps the whole
  // directory (`mv conf.new conf`) changes no file inside the one watched.
  const fileDirectory = dirname(directory);
  if (fileDirectory !== sep) entries.push([dirname(fileDirectory), basename(fileDirectory)]);
  return entries;
}

function inodeOf(directory: string): string {
  try {
    const stats = statSync(directory);
    return `${stats.dev}:${stats.ino}`;
  } catch {
    return 'missing';
  }
}

function linkTarget(path: string): string | undefined {
  try {
    return lstatSync(path).isSymbolicLink() ? readlinkSync(path) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether `file` (followed through links) was modified at or after `since`; a file gone is a change.
 * Only a regular file's time says so: a FIFO's changes with every write, and reading it again would
 * wait for a writer.
 */
function modifiedSince(file: string, since: number): boolean {
  try {
    const stats = statSync(file);
    return stats.isFile() && stats.mtimeMs >= since;
  } catch {
    return true;
  }
}
