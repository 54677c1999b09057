import {
  chmodSync,
  chownSync,
  existsSync,
  lchownSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import fsPromises, { open } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import t from 'tap';
import { SECRET_FILE_NAME } from '../src/ignition/tokens.js';
import { announceRunningServer } from '../src/running-server.js';
import { StateError } from '../src/state-error.js';
import { readOrCreateStateSecret } from '../src/state-secret.js';
import { runCli } from './helpers/cli.js';
import { fill, fullTmpfs, moduleAsNobody, NOBODY, requireRoot } from './helpers/root.js';

const NAME = 'test-secret';
const SECRET_MODULE = join(import.meta.dirname, '..', 'src', 'state-secret.ts');

const owner = (path: string) => {
  const { uid, gid } = statSync(path);
  return { uid, gid };
};

t.test('the secret is made once and read back the same', async (t) => {
  const state = join(t.testdir(), 'state');
  const made = await readOrCreateStateSecret(state, NAME);
  t.equal(made.secret.length, 32);
  t.equal(made.created, true, 'made now');
  t.same(await readOrCreateStateSecret(state, NAME), { secret: made.secret, created: false });
  t.equal(statSync(join(state, NAME)).mode & 0o777, 0o600);
  t.same(readdirSync(state), [NAME], 'no temporary file left');
});

t.test('an empty secret file, as a crash leaves it, is made again', async (t) => {
  // Before, every start failed: "... is not a rackboot secret (64 hex digits); remove it".
  const state = t.testdir({ [NAME]: '' });
  const made = await readOrCreateStateSecret(state, NAME);
  t.equal(made.secret.length, 32);
  t.equal(made.created, true, 'an empty file held no secret: made now');
  t.equal(readFileSync(join(state, NAME), 'utf8'), `${made.secret.toString('hex')}\n`);
  t.same(readdirSync(state), [NAME], 'nothing else left');
});

t.test('a file that is not a secret is still refused, not replaced', async (t) => {
  const state = t.testdir({ [NAME]: 'something else\n' });
  await t.rejects(readOrCreateStateSecret(state, NAME), { message: /is not a rackboot secret/ });
  t.equal(readFileSync(join(state, NAME), 'utf8'), 'something else\n');
});

t.test('a full disk leaves no secret file behind; the next start makes one', async (t) => {
  // Before, writeFileSync(flag wx) left an empty file, and every later start was refused.
  const { directory, filler } = fullTmpfs(t, 'secret-enospc');
  const state = join(directory, 'state');
  mkdirSync(state);
  fill(filler);
  // The line says what to do, as every other state file's does: it gave only the errno.
  await t.rejects(readOrCreateStateSecret(state, NAME), {
    message: `cannot write ${join(state, NAME)}: ENOSPC: no space left on device, write; the disk (or this user's quota) is full: free space on its file system`,
  });
  t.same(readdirSync(state), [], 'no secret file, empty or temporary');
  rmSync(filler);
  t.equal(
    (await readOrCreateStateSecret(state, NAME)).secret.length,
    32,
    'with room, the next start makes the secret',
  );
});

t.test('the secret is fsynced before it gets its name, and its directory after', async (t) => {
  // Before, nothing was fsynced: a power cut could leave an empty secret file.
  const state = join(t.testdir(), 'state');
  const synced: { path: string; named: boolean }[] = [];
  const probe = await open(join(t.testdir(), 'probe'), 'w');
  const fileHandle = Object.getPrototypeOf(probe) as { sync: () => Promise<void> };
  await probe.close();
  const sync = fileHandle.sync;
  fileHandle.sync = function (this: { fd: number }) {
    synced.push({ path: readlinkSync(`/proc/self/fd/${this.fd}`), named: existsSync(join(state, NAME)) });
    return sync.call(this);
  };
  t.teardown(() => {
    fileHandle.sync = sync;
  });
  await readOrCreateStateSecret(state, NAME);
  fileHandle.sync = sync;
  const file = synced.find((each) => each.path.startsWith(join(state, `${NAME}.`)));
  t.ok(file, `the new secret is fsynced (synced: ${JSON.stringify(synced)})`);
  t.equal(file?.named, false, 'before it is linked to its name');
  const directory = synced.find((each) => each.path === state);
  t.ok(directory, 'the state directory is fsynced');
  t.equal(directory?.named, true, 'after the link');
});

t.test('a secret made by root belongs to the owner of the state directory', async (t) => {
  requireRoot('gives files to nobody');
  // Before, a secret made as root (by `sudo rackboot render` before the first start, as render then
  // made one) was root-owned 0600 in a root-owned 0700 state directory: the service failed with EACCES.
  const directory = t.testdir();
  chownSync(directory, NOBODY, NOBODY);
  const state = join(directory, 'state');
  const made = await readOrCreateStateSecret(state, NAME);
  t.same(owner(state), { uid: NOBODY, gid: NOBODY }, 'the state directory it made');
  t.same(owner(join(state, NAME)), { uid: NOBODY, gid: NOBODY }, 'the secret');
  const read = moduleAsNobody(
    `import { readOrCreateStateSecret } from ${JSON.stringify(SECRET_MODULE)};
    process.stdout.write((await readOrCreateStateSecret(process.argv[1], process.argv[2])).secret.toString('hex'));`,
    state,
    NAME,
  );
  t.equal(read.stdout, made.secret.toString('hex'), 'the service user reads the same secret', {
    stderr: read.stderr,
  });
});

t.test(
  'render before the first start writes nothing under server.state and says its tokens are placeholders',
  async (t) => {
    const MAC = '52:54:00:00:00:01';
    const directory = t.testdir({
      'rackboot.yaml': `server:\n  address: 10.77.0.1\n  state: ./state\nprofiles:\n  plain: { kind: linux, kernel: https://example.com/vmlinuz, args: ['ign={{ignition_url}}'], ignition: plain.bu }\nmachines:\n  - { mac: ${MAC}, profile: plain }\n`,
      'plain.bu': 'variant: fcos\nversion: 1.5.0\n',
    });
    const config = join(directory, 'rackboot.yaml');
    const state = join(directory, 'state');
    const rendered = await runCli(['render', 'ipxe', '--mac', MAC, '-c', config]);
    t.equal(rendered.code, 0, rendered.stderr);
    t.match(rendered.stdout, 'token=NO-SERVER-SECRET-YET', 'the placeholder is in the output itself');
    t.equal(
      rendered.stderr.trim(),
      `rackboot: ${join(state, SECRET_FILE_NAME)} does not exist yet (rackboot serve makes it at its first start; render changes nothing under server.state), so the machine tokens below read NO-SERVER-SECRET-YET, which no server accepts; render again once the server has started`,
    );
    t.notOk(existsSync(state), 'no state directory, no secret made');

    // A secret left empty (a crash while it was made) is the next start's to make again: render keeps off it too.
    mkdirSync(state);
    writeFileSync(join(state, SECRET_FILE_NAME), '');
    const empty = await runCli(['render', 'ipxe', '--mac', MAC, '-c', config]);
    t.equal(empty.code, 0, empty.stderr);
    t.match(empty.stdout, 'token=NO-SERVER-SECRET-YET');
    t.equal(readFileSync(join(state, SECRET_FILE_NAME), 'utf8'), '', 'the empty file is left as it was');

    // A running server whose secret file was removed: no token render could print would pass.
    const stop = await announceRunningServer(state, {
      pid: process.pid,
      url: 'http://10.77.0.1:8080',
      secretFingerprint: '0123456789abcdef',
    });
    t.teardown(stop);
    rmSync(join(state, SECRET_FILE_NAME));
    const removed = await runCli(['render', 'ipxe', '--mac', MAC, '-c', config]);
    t.equal(removed.code, 1);
    t.equal(
      removed.stderr.trim(),
      `rackboot: the server running on ${state} (pid ${process.pid}) signs machine tokens with a secret ${join(state, SECRET_FILE_NAME)} no longer holds (the file was removed after it started), so render has no token it would take; restore the file, or restart rackboot serve so it makes a new one (URLs handed out before stop working), then render again`,
    );
    t.notOk(existsSync(join(state, SECRET_FILE_NAME)), 'and it made none');
  },
);

t.test(
  'a state directory others could plant secrets in is refused; a secret others can read is made private',
  async (t) => {
    requireRoot('makes directories as nobody');
    // A shared sticky directory, as /tmp: another user makes the state directory and plants secrets.
    // One test directory (t.testdir makes it anew at each call): a sticky shared one and others in it.
    const base = t.testdir({});
    const shared = join(base, 'shared');
    mkdirSync(shared);
    chmodSync(shared, 0o1777);
    const planted = join(shared, 'state');
    mkdirSync(planted);
    chownSync(planted, NOBODY, NOBODY);
    await t.rejects(
      readOrCreateStateSecret(planted, NAME),
      /which anyone can write, and belongs to uid 65534: they could plant or read rackboot's secrets/,
    );
    t.same(readdirSync(planted), [], 'nothing made in it');

    // A link another user made there, even to a directory of root's: theirs to repoint at any moment.
    const rootsOwn = join(base, 'roots-state');
    mkdirSync(rootsOwn, { mode: 0o700 });
    const link = join(shared, 'linked-state');
    symlinkSync(rootsOwn, link);
    lchownSync(link, NOBODY, NOBODY);
    await t.rejects(
      readOrCreateStateSecret(link, NAME),
      /linked-state is in .*, which anyone can write, and belongs to uid 65534/,
    );
    t.same(readdirSync(rootsOwn), [], 'nothing made through it');
    // A link root made to its own directory is followed, and the secret made where it really is.
    const ownLink = join(shared, 'own-link');
    symlinkSync(rootsOwn, ownLink);
    await readOrCreateStateSecret(ownLink, NAME);
    t.ok(existsSync(join(rootsOwn, NAME)), 'made in the real directory');

    // The same place made by this user (root) is fine: others cannot replace it in a sticky directory.
    const own = join(shared, 'own-state');
    await readOrCreateStateSecret(own, NAME);
    t.ok(existsSync(join(own, NAME)), 'made');

    // A state directory anyone can write is refused, wherever it is.
    const open = join(base, 'open-state');
    mkdirSync(open);
    chmodSync(open, 0o777);
    await t.rejects(readOrCreateStateSecret(open, NAME), /can be written by anyone \(mode 777\)/);

    // A secret left readable by others is made 0600 when it is this user's; a symlink is refused.
    const loose = join(base, 'loose');
    const made = await readOrCreateStateSecret(loose, NAME);
    chmodSync(join(loose, NAME), 0o644);
    t.same((await readOrCreateStateSecret(loose, NAME)).secret, made.secret, 'the same secret');
    t.equal(statSync(join(loose, NAME)).mode & 0o777, 0o600, 'made private again');
    const linked = join(base, 'linked');
    mkdirSync(linked, { mode: 0o700 });
    symlinkSync(join(loose, NAME), join(linked, NAME));
    await t.rejects(readOrCreateStateSecret(linked, NAME), /is not a regular file \(a symlink\?\)/);
  },
);

t.test('a secret this user cannot read: one line naming it and what to do', async (t) => {
  requireRoot('reads as nobody a secret of root’s');
  // Before: the bare "EACCES: permission denied, open …" with a stack, and no way out.
  const state = join(t.testdir(), 'state');
  await readOrCreateStateSecret(state, NAME);
  chownSync(state, NOBODY, NOBODY);
  const read = moduleAsNobody(
    `import { readOrCreateStateSecret } from ${JSON.stringify(SECRET_MODULE)};
    await readOrCreateStateSecret(process.argv[1], process.argv[2]).catch((error) =>
      process.stdout.write(error.constructor.name + ': ' + error.message));`,
    state,
    NAME,
  );
  const file = join(state, NAME);
  t.equal(
    read.stdout,
    `StateError: cannot read the secret ${file}: EACCES: permission denied, open '${file}'; this user (uid ${NOBODY}) cannot read or write it: give server.state and its files to the user rackboot runs as`,
    { stderr: read.stderr },
  );
});

t.test('a directory in place of a secret is named as one', async (t) => {
  // Before: "… is not a regular file (a symlink?)".
  const state = t.testdir({ [NAME]: {} });
  await t.rejects(readOrCreateStateSecret(state, NAME), {
    constructor: StateError,
    message: `cannot read the secret ${join(state, NAME)}: it is a directory, where rackboot keeps a file: move it away`,
  });
});

t.test('EPERM and EISDIR reading a secret are reported the same way', async (t) => {
  // A directory in its place is refused before it is read; what the read itself meets is injected.
  const state = join(t.testdir(), 'state');
  const file = join(state, NAME);
  await readOrCreateStateSecret(state, NAME);
  const { readFile } = fsPromises;
  t.teardown(() => {
    Object.assign(fsPromises, { readFile });
    syncBuiltinESMExports();
  });
  const advice = {
    EPERM: `this user (uid ${process.getuid?.()}) cannot read or write it: give server.state and its files to the user rackboot runs as`,
    EISDIR: 'it is a directory, where rackboot keeps a file: move it away',
  };
  for (const [code, expected] of Object.entries(advice)) {
    Object.assign(fsPromises, {
      readFile: async (path: string, options: BufferEncoding) => {
        if (path === file) throw Object.assign(new Error(`${code}: injected, open '${file}'`), { code });
        return readFile(path, options);
      },
    });
    syncBuiltinESMExports();
    const failed = await readOrCreateStateSecret(state, NAME).catch((error: unknown) => error);
    t.type(failed, StateError, code);
    t.equal(
      (failed as Error).message,
      `cannot read the secret ${file}: ${code}: injected, open '${file}'; ${expected}`,
      code,
    );
  }
});
