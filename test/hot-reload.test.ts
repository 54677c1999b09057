import { EventEmitter } from 'node:events';
import {
  mkdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { checkTemplate } from '../src/ignition/check.js';
import { loadConfigFile } from '../src/inventory/load.js';
import type { Config } from '../src/inventory/schema.js';
import { type ConfigDiff, watchConfig } from '../src/inventory/source.js';
import { createRootLogger } from '../src/log.js';

const base = `server:
  address: 10.77.0.1
profiles:
  plain: { kind: linux, kernel: vmlinuz }
machines:
  - { mac: 52:54:00:00:00:01, profile: plain, hostname: one }
`;

/** JSON log lines as data (pino's own test habit). */
function logSink() {
  const stream = new PassThrough();
  const records: { level: number; msg: string; problems?: string[] }[] = [];
  stream.on('data', (chunk: Buffer) => {
    for (const line of chunk.toString().split('\n').filter(Boolean)) records.push(JSON.parse(line));
  });
  return { logger: createRootLogger({ level: 'info', destination: stream }), records };
}

/** A config file in a fresh test directory, loaded, and a log sink for the watcher to write to. */
async function loadedFixture(t: Test, text: string) {
  const directory = t.testdir({ 'boot-assets': { vmlinuz: 'k' } });
  const file = join(directory, 'rackboot.yaml');
  writeFileSync(file, text);
  const loaded = await loadConfigFile(file);
  if (!loaded.ok) throw new Error('fixture config must load');
  return { file, config: loaded.config, ...logSink() };
}

/** Writes like an editor does: a temp file renamed over the original. */
function saveLikeAnEditor(file: string, text: string) {
  writeFileSync(`${file}.swp`, text);
  renameSync(`${file}.swp`, file);
}

function waitFor<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

t.test('a valid edit is applied and logged with what changed; an invalid one is rejected', async (t) => {
  const { file, config: initial, logger, records } = await loadedFixture(t, base);
  const source = watchConfig(initial, { logger, debounceMs: 50 });
  t.teardown(() => source.close());

  const applied = new Promise<[Config, ConfigDiff]>((resolve) =>
    source.on('change', (...args) => resolve(args)),
  );
  saveLikeAnEditor(
    file,
    `${base.replace('hostname: one', 'hostname: uno')}  - { mac: 52:54:00:00:00:02, profile: plain }\n`,
  );
  const [config, diff] = await waitFor(applied, 5000, 'the valid edit to be applied');
  t.same(diff.machinesAdded, ['52:54:00:00:00:02']);
  t.same(diff.machinesChanged, ['52:54:00:00:00:01']);
  t.same(diff.machinesRemoved, []);
  t.equal(source.current(), config, 'the new config is in force');
  t.equal(source.current().machines[0]?.hostname, 'uno');
  t.ok(
    records.some((record) => record.msg.includes('machines added: 52:54:00:00:00:02')),
    'the reload is logged with the machines added',
  );

  const before = source.current();
  saveLikeAnEditor(file, `${readFileSync(file, 'utf8')}  - { mac: not-a-mac, profile: plain }\n`);
  const rejected = await waitFor(
    (async () => {
      for (let attempt = 0; attempt < 100; attempt++) {
        const record = records.find((entry) => entry.msg.startsWith('config edit rejected'));
        if (record) return record;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      throw new Error('no rejection logged');
    })(),
    6000,
    'the invalid edit to be rejected',
  );
  t.match(rejected.problems?.[0], /rackboot\.yaml:8:12: "not-a-mac" is not a MAC address/);
  t.equal(source.current(), before, 'the previous config keeps serving');
});

t.test('an edit saved between the first load and the start of the watch is applied at once', async (t) => {
  const { file, config: initial, logger, records } = await loadedFixture(t, base);
  const loadedAt = Date.now();
  // The kernel stamps mtime from a clock that can lag Date.now() by a tick.
  await new Promise((resolve) => setTimeout(resolve, 50));
  const unchanged = watchConfig(initial, { logger, debounceMs: 20, loadedAt });
  await new Promise((resolve) => setTimeout(resolve, 300));
  unchanged.close();
  t.notOk(
    records.some((record) => record.msg.includes('config reloaded')),
    'files unchanged since the load: no reload',
  );

  saveLikeAnEditor(file, base.replace('hostname: one', 'hostname: uno'));
  const source = watchConfig(initial, { logger, debounceMs: 20, loadedAt });
  t.teardown(() => source.close());
  const applied = new Promise<[Config, ConfigDiff]>((resolve) =>
    source.on('change', (...args) => resolve(args)),
  );
  // Once, the edit waited for the next one: the watch began after it and never heard of it.
  const [config, diff] = await waitFor(applied, 5000, 'the edit made before the watch to be applied');
  t.same(diff.machinesChanged, ['52:54:00:00:00:01']);
  t.equal(config.machines[0]?.hostname, 'uno');
});

t.test(
  'a config reached through symlinks reloads when its target changes (a Kubernetes ConfigMap)',
  async (t) => {
    const directory = t.testdir({ 'boot-assets': { vmlinuz: 'k' }, mounted: {} });
    const mounted = join(directory, 'mounted');
    // What the kubelet makes: rackboot.yaml → ..data/rackboot.yaml, ..data → ..v1.
    const version = (name: string, hostname: string) => {
      mkdirSync(join(mounted, name));
      writeFileSync(
        join(mounted, name, 'rackboot.yaml'),
        base
          .replace('hostname: one', `hostname: ${hostname}`)
          .replace('server:\n', 'server:\n  assets: ../boot-assets\n'),
      );
    };
    version('..v1', 'one');
    symlinkSync('..v1', join(mounted, '..data'));
    symlinkSync('..data/rackboot.yaml', join(mounted, 'rackboot.yaml'));
    const loaded = await loadConfigFile(join(mounted, 'rackboot.yaml'));
    if (!loaded.ok) throw new Error(`fixture config must load: ${JSON.stringify(loaded.problems)}`);
    const { logger } = logSink();
    const source = watchConfig(loaded.config, { logger, debounceMs: 20 });
    t.teardown(() => source.close());
    const hostname = () => source.current().machines[0]?.hostname;

    for (const [name, expected] of [
      ['..v2', 'two'],
      ['..v3', 'three'],
    ] as const) {
      const changed = new Promise<void>((resolve) => source.on('change', () => resolve()));
      const previous = readlinkSync(join(mounted, '..data'));
      version(name, expected);
      symlinkSync(name, join(mounted, '..data_tmp'));
      renameSync(join(mounted, '..data_tmp'), join(mounted, '..data'));
      rmSync(join(mounted, previous), { recursive: true });
      await waitFor(changed, 5000, `the reload to ${name}`);
      t.equal(hostname(), expected, `${name} applied`);
    }
    // An edit of the file where it really is, as on a plain symlink.
    const changed = new Promise<void>((resolve) => source.on('change', () => resolve()));
    const real = join(mounted, '..v3', 'rackboot.yaml');
    writeFileSync(real, readFileSync(real, 'utf8').replace('hostname: three', 'hostname: four'));
    await waitFor(changed, 5000, 'the reload of the edited target');
    t.equal(hostname(), 'four');
  },
);

t.test('a reload that cannot load keeps the running config and is logged, never thrown', async (t) => {
  const { file, config, logger, records } = await loadedFixture(t, base);
  const broken = watchConfig(config, {
    logger,
    load: async () => {
      throw new Error('load worker exited with code 1 before answering');
    },
  });
  t.teardown(() => broken.close());
  t.match(await broken.reload(), { applied: false }, 'a loader that throws is a rejected reload');
  t.equal(broken.current(), config, 'the previous config keeps serving');
  t.ok(records.some((record) => record.msg.startsWith('config reload failed, still serving')));

  const source = watchConfig(config, { logger });
  t.teardown(() => source.close());
  writeFileSync(file, `${base}unknown_machines: *nope\n`);
  t.match(
    await source.reload(),
    { applied: false, problems: [/rackboot\.yaml:7:19: alias \*nope has no anchor/] },
    'an alias naming no anchor is a rejected edit, with its problems',
  );
  t.equal(source.current(), config);
  const rejected = records.find((record) => record.msg.startsWith('config edit rejected'));
  t.match(rejected?.problems?.[0], /rackboot\.yaml:7:19: alias \*nope has no anchor &nope before it/);
});

t.test('start-time settings keep their running values until a restart, with a warning', async (t) => {
  const settings = (port: number, mode: string, retention: number, token: string) =>
    base.replace(
      'server:\n  address: 10.77.0.1\n',
      `server:\n  address: 10.77.0.1\n  http: { port: ${port} }\n  api_token: ${token}\n` +
        `dhcp: { mode: ${mode} }\nevents: { retention: ${retention} }\n`,
    );
  const {
    file,
    config: initial,
    logger,
    records,
  } = await loadedFixture(t, settings(8080, 'proxy', 5000, 'operator-token-aaaaaaaa'));
  const source = watchConfig(initial, { logger });
  t.teardown(() => source.close());

  writeFileSync(
    file,
    `${settings(8081, 'off', 9000, 'operator-token-bbbbbbbb')}  - { mac: 52:54:00:00:00:02, profile: plain }\n`,
  );
  t.match(await source.reload(), { applied: true });
  const config = source.current();
  t.equal(config.server.http.port, 8080, 'HTTP keeps the port it listens on, and the URLs with it');
  t.equal(config.dhcp.mode, 'proxy', 'the DHCP server started with the process');
  t.equal(config.events.retention, 5000, 'the store was opened with it');
  t.equal(config.server.api_token, 'operator-token-bbbbbbbb', 'read per request: applied');
  t.equal(config.machines.length, 2, 'the machines are applied');
  t.ok(Object.isFrozen(config.server.http), 'still frozen');
  const warning = records.find((record) => record.level === 40);
  t.match(
    warning?.msg,
    'still the running value until a restart: server.http.port (8081 in the file, 8080 running), ' +
      'dhcp.mode ("off" in the file, "proxy" running; all of dhcp.* keeps its running values with it), ' +
      'events.retention (9000 in the file, 5000 running)',
  );
  t.match(
    records.find((record) => record.msg.startsWith('config reloaded'))?.msg,
    /machines added: 52:54:00:00:00:02; settings changed: server.api_token$/,
    'the settings named as changed are the ones applied',
  );
});

t.test(
  'an edit is checked as it would run: dhcp.* held with dhcp.mode, files under the running assets',
  async (t) => {
    const authoritative = base.replace(
      'server:\n  address: 10.77.0.1\n',
      'server:\n  address: 10.77.0.1\ndhcp:\n  mode: authoritative\n  subnet: 10.77.0.0/24\n  range: [10.77.0.100, 10.77.0.199]\n',
    );
    const { file, config: initial, logger, records } = await loadedFixture(t, authoritative);
    const source = watchConfig(initial, { logger });
    t.teardown(() => source.close());

    // Valid as written (a proxy needs no subnet), but the running DHCP server is authoritative.
    writeFileSync(
      file,
      base.replace('hostname: one', 'hostname: uno').replace('server:\n', 'dhcp: { mode: proxy }\nserver:\n'),
    );
    t.match(await source.reload(), { applied: true });
    t.equal(source.current().machines[0]?.hostname, 'uno', 'the rest is applied');
    t.match(
      source.current().dhcp,
      { mode: 'authoritative', subnet: '10.77.0.0/24', range: ['10.77.0.100', '10.77.0.199'] },
      'the running DHCP server keeps its pool',
    );

    // A kernel found only under the file's new server.assets would be served from the running one.
    const directory = join(file, '..');
    mkdirSync(join(directory, 'new-assets'));
    writeFileSync(join(directory, 'new-assets', 'vmlinuz2'), 'k');
    writeFileSync(
      file,
      authoritative
        .replace('server:\n  address: 10.77.0.1\n', 'server:\n  address: 10.77.0.1\n  assets: new-assets\n')
        .replace('kernel: vmlinuz }', 'kernel: vmlinuz2 }'),
    );
    t.match(await source.reload(), { applied: false }, 'rejected');
    t.equal(source.current().profiles.plain?.kernel, 'vmlinuz', 'the previous config keeps serving');
    t.match(records.at(-1), {
      level: 50,
      msg: /server\.assets stays .*boot-assets until a restart, and under it:\n.*rackboot\.yaml: profiles\.plain\.kernel: vmlinuz2 not found under/,
    });
  },
);

t.test(
  'the restart warning is logged when the settings awaiting one change, not at every reload',
  async (t) => {
    const settings = (port: number, mode: string, machines = '') =>
      `${base.replace(
        'server:\n  address: 10.77.0.1\n',
        `server:\n  address: 10.77.0.1\n  http: { port: ${port} }\ndhcp: { mode: ${mode} }\n`,
      )}${machines}`;
    const { file, config: initial, logger, records } = await loadedFixture(t, settings(8080, 'proxy'));
    const source = watchConfig(initial, { logger });
    t.teardown(() => source.close());
    /** The restart warnings and the "matches again" notes logged by one reload with this text. */
    const reloadWith = async (text: string) => {
      const before = records.length;
      writeFileSync(file, text);
      t.match(await source.reload(), { applied: true }, 'applied');
      return records
        .slice(before)
        .filter((record) => /until a restart|running value again/.test(record.msg))
        .map(
          (record) =>
            `${record.level === 40 ? 'warn' : record.level === 30 ? 'info' : record.level}: ${record.msg}`,
        );
    };
    const awaiting = 'warn: changed in the file, still the running value until a restart:';
    const matching = 'info: the file matches the running value again, no restart needed:';

    const port = (inFile: number) => `server.http.port (${inFile} in the file, 8080 running)`;
    const mode =
      'dhcp.mode ("off" in the file, "proxy" running; all of dhcp.* keeps its running values with it)';
    t.same(await reloadWith(settings(8081, 'proxy')), [`${awaiting} ${port(8081)}`], 'the first time');
    t.same(
      await reloadWith(settings(8081, 'proxy', '  - { mac: 52:54:00:00:00:02, profile: plain }\n')),
      [],
      'an edit of a machine only: said already',
    );
    t.same(
      await reloadWith(settings(8081, 'off', '  - { mac: 52:54:00:00:00:02, profile: plain }\n')),
      [`${awaiting} ${port(8081)}, ${mode}`],
      'one more setting: the whole list again',
    );
    t.same(
      await reloadWith(settings(8082, 'off', '  - { mac: 52:54:00:00:00:02, profile: plain }\n')),
      [`${awaiting} ${port(8082)}, ${mode}`],
      'another value for a setting already waiting: said again, with the value',
    );
    t.same(
      await reloadWith(settings(8080, 'off')),
      [`${matching} server.http.port`, `${awaiting} ${mode}`],
      'one back to its running value',
    );
    t.same(await reloadWith(settings(8080, 'proxy')), [`${matching} dhcp.mode`], 'the file matches again');
    t.same(await reloadWith(settings(8080, 'proxy', '  - { mac: 52:54:00:00:00:03, profile: plain }\n')), []);
    t.same(
      await reloadWith(settings(8081, 'proxy')),
      [`${awaiting} ${port(8081)}`],
      'a difference reported before, gone, then back is reported again',
    );
  },
);

/** Resolves once `records` holds a record `match` accepts, checking every 20 ms. */
async function logged(
  records: { msg: string }[],
  match: (msg: string) => boolean,
  ms: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!records.some((record) => match(record.msg))) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const BUTANE =
  'variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/role\n      contents:\n        inline: "{{vars.role}}"\n';
const withTemplate = base
  .replace('profiles:\n', 'profiles:\n  lab: { kind: linux, kernel: vmlinuz, ignition: ign/lab.bu }\n')
  .replace('profile: plain, hostname: one }', 'profile: lab, hostname: one, vars: { role: db } }');

t.test('a rejected reload is retried, quietly, until the fix applies (a template created)', async (t) => {
  // Before, the fix (a file only the rejected edit names) was watched by nobody: it never applied.
  const { file, config, logger, records } = await loadedFixture(t, base);
  const source = watchConfig(config, {
    logger,
    load: (file) => loadConfigFile(file, { checkTemplate }),
    debounceMs: 20,
    retryMs: 100,
  });
  t.teardown(() => source.close());
  const rejections = () => records.filter((record) => record.level === 50).map((record) => record.msg);

  saveLikeAnEditor(file, withTemplate);
  await logged(records, (msg) => msg.startsWith('config edit rejected'), 5000, 'the rejection');
  await new Promise((resolve) => setTimeout(resolve, 1000));
  t.equal(rejections().length, 1, 'retried several times, logged once');
  t.match(rejections()[0], /template "ign\/lab\.bu" does not exist/);

  mkdirSync(join(file, '..', 'ign'));
  writeFileSync(join(file, '..', 'ign', 'lab.bu'), BUTANE.replace('vars.role', 'vars.rack'));
  await logged(records, (msg) => /vars\.rack/.test(msg), 5000, 'the new problems');
  t.equal(rejections().length, 2, 'other problems: logged again');

  const applied = new Promise<void>((resolve) => source.on('change', () => resolve()));
  writeFileSync(join(file, '..', 'ign', 'lab.bu'), BUTANE);
  await waitFor(applied, 5000, 'the fixed edit to apply');
  t.equal(source.current().machines[0]?.profile, 'lab');
  const count = records.length;
  await new Promise((resolve) => setTimeout(resolve, 500));
  t.equal(records.length, count, 'no more retries once applied');
});

t.test('a directory symlink swapped (current → releases/vN) reloads the config', async (t) => {
  // Before, only the directories the link pointed at were watched: releases/v1, still there, said nothing.
  const release = (hostname: string) => ({
    'rackboot.yaml': base
      .replace('hostname: one', `hostname: ${hostname}`)
      .replace('server:\n', 'server:\n  assets: ../boot-assets\n'),
  });
  const directory = t.testdir({
    'boot-assets': { vmlinuz: 'k' },
    releases: { v1: release('one'), v2: release('two') },
  });
  const current = join(directory, 'current');
  symlinkSync('releases/v1', current);
  const loaded = await loadConfigFile(join(current, 'rackboot.yaml'));
  if (!loaded.ok) throw new Error(`fixture config must load: ${JSON.stringify(loaded.problems)}`);
  const source = watchConfig(loaded.config, { logger: logSink().logger, debounceMs: 20 });
  t.teardown(() => source.close());

  for (const [version, hostname] of [
    ['v2', 'two'],
    ['v1', 'one'],
  ] as const) {
    const changed = new Promise<void>((resolve) => source.on('change', () => resolve()));
    // As capistrano and `ln -sfn releases/v2 cur.tmp && mv -T cur.tmp current` do.
    symlinkSync(`releases/${version}`, join(directory, 'cur.tmp'));
    renameSync(join(directory, 'cur.tmp'), current);
    await waitFor(changed, 5000, `the reload to ${version}`);
    t.equal(source.current().machines[0]?.hostname, hostname, `${version} applied`);
  }
});

t.test(
  'a config directory swapped whole (mv conf.new conf) reloads, and so do later edits in it',
  async (t) => {
    // Before, the watch stayed on the directory renamed away: no reload then, nor for any later edit.
    const withHostname = (hostname: string) => ({
      'rackboot.yaml': base
        .replace('hostname: one', `hostname: ${hostname}`)
        .replace('server:\n', 'server:\n  assets: ../boot-assets\n'),
    });
    const directory = t.testdir({
      'boot-assets': { vmlinuz: 'k' },
      conf: withHostname('one'),
      'conf.new': withHostname('two'),
    });
    const conf = join(directory, 'conf');
    const loaded = await loadConfigFile(join(conf, 'rackboot.yaml'));
    if (!loaded.ok) throw new Error(`fixture config must load: ${JSON.stringify(loaded.problems)}`);
    const source = watchConfig(loaded.config, { logger: logSink().logger, debounceMs: 20 });
    t.teardown(() => source.close());
    const nextChange = () => new Promise<void>((resolve) => source.on('change', () => resolve()));

    const swapped = nextChange();
    renameSync(conf, join(directory, 'conf.old'));
    renameSync(join(directory, 'conf.new'), conf);
    await waitFor(swapped, 5000, 'the reload after the directory swap');
    t.equal(source.current().machines[0]?.hostname, 'two', 'the swapped-in directory applied');

    const edited = nextChange();
    saveLikeAnEditor(join(conf, 'rackboot.yaml'), withHostname('three')['rackboot.yaml']);
    await waitFor(edited, 5000, 'the reload after an edit in the swapped-in directory');
    t.equal(source.current().machines[0]?.hostname, 'three', 'a later edit applied too');
  },
);

t.test('status tells whether the files hold an edit the server refuses, and since when', async (t) => {
  const { file, config, logger } = await loadedFixture(t, base);
  const source = watchConfig(config, { logger, debounceMs: 20 });
  t.teardown(() => source.close());
  t.equal(source.status().rejected, undefined, 'nothing refused at start');
  saveLikeAnEditor(file, `${base}  - { mac: 52:54:00:00:00:01, profile: plain }\n`);
  const refusedAt = Date.now();
  t.equal((await source.reload()).applied, false);
  const rejected = source.status().rejected;
  t.ok(rejected && rejected.problems > 0, 'the duplicate MAC is counted');
  t.ok(rejected && rejected.since >= refusedAt - 1000 && rejected.since <= Date.now());
  await source.reload();
  t.equal(source.status().rejected?.since, rejected?.since, 'a retry keeps the first refusal time');
  saveLikeAnEditor(file, base.replace('hostname: one', 'hostname: fixed'));
  t.same(await source.reload(), { applied: true });
  t.equal(source.status().rejected, undefined, 'applied: nothing refused any more');
  t.ok(source.status().appliedAt >= refusedAt, 'and the config in force is the new one');
});

t.test('a watch that fails is made again after a pause that grows, not at once', async (t) => {
  // Before, each error reloaded and watched again within ~150 ms: an error that kept coming back
  // meant a full config load (seconds of a core for a large fleet) several times a second.
  const watchers: EventEmitter[] = [];
  const fs = await import('node:fs');
  const { watchConfig: watchWithFakes } = await t.mockImport<typeof import('../src/inventory/source.js')>(
    '../src/inventory/source.js',
    {
      'node:fs': {
        ...fs,
        watch: () => {
          const watcher = Object.assign(new EventEmitter(), { close: () => {} });
          watchers.push(watcher);
          return watcher;
        },
      },
    },
  );
  const { config, logger } = await loadedFixture(t, base);
  const source = watchWithFakes(config, { logger, debounceMs: 20 });
  t.teardown(() => source.close());
  /** Fails the newest watch, then counts the watches made after `quietMs` and `thenMs` more. */
  const failWatch = async (quietMs: number, thenMs: number) => {
    const before = watchers.length;
    watchers.at(-1)?.emit('error', new Error('inotify queue overflow'));
    await sleep(quietMs);
    const quiet = watchers.length;
    await sleep(thenMs);
    return { before, quiet, after: watchers.length };
  };
  const first = await failWatch(500, 1000);
  t.equal(first.quiet, first.before, 'not watched again within half a second');
  t.ok(first.after > first.before, 'watched again after the pause');
  const second = await failWatch(1500, 1000);
  t.equal(second.quiet, second.before, 'the second pause is longer');
  t.ok(second.after > second.before, 'and ends too');
});

t.test('a broken template the running config uses is logged as such, not as a rejected edit', async (t) => {
  // Before: "config edit rejected, still serving the previous config", while the template, read per
  // request, already failed the Ignition of its machines.
  const directory = t.testdir({
    'boot-assets': { vmlinuz: 'k' },
    ign: { 'lab.bu': BUTANE },
    'rackboot.yaml': withTemplate,
  });
  const file = join(directory, 'rackboot.yaml');
  const load = (file: string) => loadConfigFile(file, { checkTemplate });
  const loaded = await load(file);
  if (!loaded.ok) throw new Error(`fixture config must load: ${JSON.stringify(loaded.problems)}`);
  const { logger, records } = logSink();
  const source = watchConfig(loaded.config, { logger, load });
  t.teardown(() => source.close());

  writeFileSync(join(directory, 'ign', 'lab.bu'), BUTANE.replace('vars.role', 'vars.rack'));
  t.match(await source.reload(), { applied: false, problems: [/lab\.bu:7:\d+: .*vars\.rack/] });
  t.match(
    records.at(-1)?.msg,
    /^template ign\/lab\.bu is broken: machines of profile lab get 503 for their Ignition until it is fixed \(an edit of the config file waits for the fix\):\n.*ign\/lab\.bu:7:\d+: /,
  );

  writeFileSync(file, withTemplate.replace('kernel: vmlinuz }', 'kernel: vmlinuz2 }'));
  t.match(await source.reload(), { applied: false });
  t.match(
    records.at(-1)?.msg,
    /^config edit rejected, still serving the previous config; template ign\/lab\.bu is broken: machines of profile lab get 503 for their Ignition until it is fixed:\n.*lab\.bu:7:\d+: .*\n.*rackboot\.yaml:\d+:\d+: vmlinuz2 not found under/,
    'an edit of the config file rejected too',
  );
});

t.test(
  'a template the running config uses that is deleted is logged as missing, with its 503s',
  async (t) => {
    // Before: "config edit rejected, still serving the previous config" alone (the problem is placed in
    // the config file, at the profile's ignition key), while every Ignition request of its machines,
    // which reads the template, got 503.
    const directory = t.testdir({
      'boot-assets': { vmlinuz: 'k' },
      ign: { 'lab.bu': BUTANE },
      'rackboot.yaml': withTemplate,
    });
    const load = (file: string) => loadConfigFile(file, { checkTemplate });
    const loaded = await load(join(directory, 'rackboot.yaml'));
    if (!loaded.ok) throw new Error(`fixture config must load: ${JSON.stringify(loaded.problems)}`);
    const { logger, records } = logSink();
    const source = watchConfig(loaded.config, { logger, load });
    t.teardown(() => source.close());

    rmSync(join(directory, 'ign', 'lab.bu'));
    t.match(await source.reload(), {
      applied: false,
      problems: [/rackboot\.yaml:\d+:\d+: .*lab\.bu" does not exist/],
    });
    t.match(
      records.at(-1)?.msg,
      /^config edit rejected, still serving the previous config; template ign\/lab\.bu is missing: machines of profile lab get 503 for their Ignition until it is back:\n.*rackboot\.yaml:\d+:\d+: /,
    );
  },
);

t.test('reloads asked for while one runs merge into one, which reads the newest file', async (t) => {
  const { file, config, logger } = await loadedFixture(t, base);
  const loads: string[] = [];
  let release = () => {};
  const firstLoadHeld = new Promise<void>((resolve) => {
    release = resolve;
  });
  const source = watchConfig(config, {
    logger,
    load: async (path) => {
      loads.push(readFileSync(path, 'utf8'));
      if (loads.length === 1) await firstLoadHeld;
      return loadConfigFile(path);
    },
  });
  t.teardown(() => source.close());
  const first = source.reload();
  await sleep(20);
  t.equal(loads.length, 1, 'the first reload is loading');
  const burst = [1, 2, 3, 4].map((count) => {
    saveLikeAnEditor(file, `${base}  - { mac: 52:54:00:00:00:0${count + 1}, profile: plain }\n`);
    return source.reload();
  });
  release();
  const outcomes = await Promise.all([first, ...burst]);
  t.same(
    outcomes.map((outcome) => outcome.applied),
    [true, true, true, true, true],
    'every caller hears its reload applied',
  );
  t.equal(loads.length, 2, 'the four asked for during the first made one more load, not four');
  t.match(loads[1], /52:54:00:00:00:05/, 'that load read the file as last saved');
  t.equal(source.current().machines.length, 2, 'the newest file is in force');
});
