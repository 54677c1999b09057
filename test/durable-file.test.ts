import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { makeParents, nearestExisting } from '../src/durable-file.js';

t.test('makeParents: mkdir -p that returns the first directory it made, as Node’s does', async (t) => {
  const root = t.testdir();
  t.equal(await makeParents(join(root, 'a', 'b', 'c'), 0o750), join(root, 'a'));
  t.ok(statSync(join(root, 'a', 'b', 'c')).isDirectory());
  t.equal(statSync(join(root, 'a', 'b')).mode & 0o777, 0o750 & ~process.umask());
  t.equal(await makeParents(join(root, 'a', 'b')), undefined, 'nothing to make');
  mkdirSync(join(root, 'd'));
  t.equal(await makeParents(join(root, 'd', 'e')), join(root, 'd', 'e'));
  writeFileSync(join(root, 'file'), '');
  await t.rejects(makeParents(join(root, 'file')), { code: 'EEXIST' }, 'a file in the way');
  await t.rejects(makeParents(join(root, 'file', 'below')), { code: 'ENOTDIR' });
});

t.test('makeParents under /proc rejects with mkdir’s ENOENT instead of looping', async (t) => {
  // Node's recursive mkdir retries this forever at full CPU (Node 20).
  await t.rejects(makeParents('/proc/self/rackboot-probe/below'), { code: 'ENOENT' });
});

t.test('nearestExisting: the first existing ancestor and what is missing below it', async (t) => {
  const root = t.testdir({ file: '' });
  const found = await nearestExisting(join(root, 'a', 'b'));
  t.same([found.existing, found.missing], [root, [join(root, 'a'), join(root, 'a', 'b')]]);
  t.ok(found.stats.isDirectory());
  const file = await nearestExisting(join(root, 'file'));
  t.same([file.existing, file.missing, file.stats.isFile()], [join(root, 'file'), [], true]);
  await t.rejects(nearestExisting(join(root, 'file', 'below')), { code: 'ENOTDIR' });
});
