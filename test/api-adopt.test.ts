import t from 'tap';
import { parse } from 'yaml';
import { adoptMachine } from '../src/inventory/adopt.js';
import { mac } from './lifecycle-fixture.js';

const NEW = mac('52:54:00:00:00:09');
const PROFILES = 'profiles:\n  worker: {kind: linux}   # the usual\n  "123": {kind: linux}\n';

function adopted(text: string, hostname?: string, profile = 'worker'): string {
  const result = adoptMachine(text, { mac: NEW, profile, hostname });
  if (!result.ok) throw new Error(result.message);
  return result.text;
}

t.test('the new entry is spliced in; every other byte stays', async (t) => {
  const cases: [string, string, string][] = [
    [
      'block list with comments, aligned',
      `${PROFILES}machines:\n    # rack 1\n    -   mac: 52:54:00:00:00:01   # left\n        profile: worker\n# trailing comment\n`,
      `${PROFILES}machines:\n    # rack 1\n    -   mac: 52:54:00:00:00:01   # left\n        profile: worker\n    -   mac: ${NEW}\n        hostname: n9\n        profile: worker\n# trailing comment\n`,
    ],
    [
      'flow maps in a block list',
      `${PROFILES}machines:\n  - { mac: 52:54:00:00:00:01, profile: worker }\n`,
      `${PROFILES}machines:\n  - { mac: 52:54:00:00:00:01, profile: worker }\n  - { mac: ${NEW}, hostname: n9, profile: worker }\n`,
    ],
    [
      'a flow list',
      `${PROFILES}machines: [{mac: 52:54:00:00:00:01, profile: worker}]  # all of them\n`,
      `${PROFILES}machines: [{mac: 52:54:00:00:00:01, profile: worker}, { mac: ${NEW}, hostname: n9, profile: worker } ]  # all of them\n`,
    ],
    [
      'an empty flow list becomes a block list, its comment kept',
      `${PROFILES}machines: []  # none yet\n# end\n`,
      `${PROFILES}machines:   # none yet\n  - mac: ${NEW}\n    hostname: n9\n    profile: worker\n# end\n`,
    ],
    [
      'an empty key',
      `machines:\n${PROFILES}`,
      `machines:\n  - mac: ${NEW}\n    hostname: n9\n    profile: worker\n${PROFILES}`,
    ],
    [
      'no machines key, no final newline',
      PROFILES.trimEnd(),
      `${PROFILES}machines:\n  - mac: ${NEW}\n    hostname: n9\n    profile: worker\n`,
    ],
  ];
  for (const [name, before, after] of cases) {
    const text = adopted(before, 'n9');
    t.equal(text, after, name);
    const machines = (parse(text) as { machines: { mac: string }[] }).machines;
    t.equal(machines.at(-1)?.mac, NEW, `${name}: parses with the new machine last`);
  }
});

t.test('values YAML would read as something else are quoted', async (t) => {
  const text = adopted(`${PROFILES}machines: []\n`, undefined, '123');
  t.match(text, /profile: "123"/);
  t.same((parse(text) as { machines: unknown[] }).machines, [{ mac: NEW, profile: '123' }]);
});

t.test('refusals', async (t) => {
  t.match(adoptMachine(`${PROFILES}machines: []\n`, { mac: NEW, profile: 'nope' }), {
    ok: false,
    code: 'unknown-profile',
  });
  t.match(
    adoptMachine(`${PROFILES}machines:\n  - {mac: 52-54-00-00-00-09, profile: worker}\n`, {
      mac: NEW,
      profile: 'worker',
    }),
    { ok: false, code: 'already-listed' },
    'the same MAC in another spelling',
  );
  t.match(adoptMachine(`${PROFILES}machines: {a: 1}\n`, { mac: NEW, profile: 'worker' }), {
    ok: false,
    code: 'invalid',
  });
  t.match(adoptMachine('profiles: [\n', { mac: NEW, profile: 'worker' }), { ok: false, code: 'invalid' });
});
