import { join } from 'node:path';
import t from 'tap';
import { PROJECT_ROOT, runCli } from './helpers/cli.js';

t.test('the example rackboot.yaml validates (exit 0) on a fresh clone', async (t) => {
  const result = await runCli(['validate', '-c', join(PROJECT_ROOT, 'rackboot.yaml')]);
  t.equal(result.code, 0, result.stderr);
  t.match(result.stdout, /valid \(2 machines, 1 profiles\)/);
});

t.test('an invalid config exits 1 with one FILE:LINE:COL line per problem on stderr', async (t) => {
  const directory = t.testdir({
    'rackboot.yaml': `server:
  address: 10.77.0.1
  htttp: { port: 80 }
dhcp:
  lease_time: 1 hour
profiles: {}
machines:
  - { mac: 52:54:00:00:00:01, profile: missing }
`,
  });
  const result = await runCli(['validate'], { cwd: directory, env: { RACKBOOT_CONFIG: '' } });
  t.equal(result.code, 1);
  t.same(result.stderr.trim().split('\n'), [
    'rackboot.yaml:3:3: unknown key "htttp" in server (did you mean "http"?)',
    'rackboot.yaml:5:15: dhcp.lease_time: bad duration "1 hour": use a number of seconds or units without spaces, e.g. 90s, 30m, 1h, 7d, 1h30m',
    'rackboot.yaml:8:40: machines[0].profile names profile "missing", which does not exist (no profiles defined)',
  ]);
  t.equal(result.stdout, '');
});

t.test('-c falls back to $RACKBOOT_CONFIG when ./rackboot.yaml does not exist', async (t) => {
  const directory = t.testdir({ 'elsewhere.yaml': 'server: { address: 10.77.0.1 }\n' });
  const result = await runCli(['validate'], {
    cwd: directory,
    env: { RACKBOOT_CONFIG: join(directory, 'elsewhere.yaml') },
  });
  t.equal(result.code, 0, result.stderr);
  t.match(result.stdout, /elsewhere\.yaml: valid \(0 machines, 0 profiles\)/);
});

t.test('a missing config file is one clear line and exit 1', async (t) => {
  const directory = t.testdir({});
  const result = await runCli(['validate', '-c', 'nope.yaml'], { cwd: directory });
  t.equal(result.code, 1);
  t.match(result.stderr, /nope\.yaml:1:1: cannot read config: file not found/);
});

t.test('--help lists the contract verbs', async (t) => {
  const result = await runCli(['--help']);
  t.equal(result.code, 0);
  for (const verb of ['serve', 'validate']) t.match(result.stdout, new RegExp(`\\n  ${verb}\\b`));
});
