import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import type { MachineEventInput } from '../src/lifecycle/events.js';
import { waitUntil } from './helpers/poll.js';
import {
  API_TOKEN,
  editHistory,
  FIXTURE_YAML,
  failHistoryWrites,
  LISTED_MAC,
  mac,
  startLifecycleApp,
  UNLISTED_MAC,
} from './lifecycle-fixture.js';

const operator = { authorization: `Bearer ${API_TOKEN}` };
/** The listed machine with a reservation, which only authoritative mode hands out. */
const RESERVED_YAML = FIXTURE_YAML.replace(
  '    hostname: node1\n',
  '    hostname: node1\n    ip: 10.77.0.21\n',
);
const AUTHORITATIVE_RESERVED_YAML = `${RESERVED_YAML}dhcp:\n  mode: authoritative\n  subnet: 10.77.0.0/24\n  range: [10.77.0.100, 10.77.0.199]\n`;

const install = (mac = LISTED_MAC): MachineEventInput[] => [
  {
    mac,
    source: 'dhcp',
    type: 'dhcp-ack',
    ip: '10.77.0.100',
    detail: { firmware: 'bios-pxe', arch: 'x86_64' },
  },
  {
    mac,
    source: 'tftp',
    type: 'tftp-transfer',
    detail: { file: 'undionly.kpxe', outcome: 'complete', bytes: 70_000 },
  },
  { mac, source: 'http', type: 'ipxe-script', detail: { script: 'install' } },
  { mac, source: 'http', type: 'ignition-fetch' },
];

t.test('GET /api/v1/machines: listed machines, seen or not, and discovered ones', async (t) => {
  const { app, lifecycle } = await startLifecycleApp(t);
  const empty = await app.inject('/api/v1/machines');
  t.same(empty.json(), [
    {
      mac: LISTED_MAC,
      hostname: 'node1',
      profile: 'worker',
      listed: true,
      state: null,
      ip: null,
      updated_at: null,
      state_since: null,
      first_seen_at: null,
      installed_at: null,
      boots_from_disk: false,
      last_event: null,
      arch: null,
      firmware: null,
      vendor: null,
      boot: null,
    },
  ]);
  await lifecycle.record({
    mac: UNLISTED_MAC,
    source: 'dhcp',
    type: 'dhcp-ignored',
    detail: { firmware: 'uefi-pxe', arch: 'x86_64', reason: 'unknown-machine' },
  });
  const listed = await app.inject('/api/v1/machines');
  t.equal(listed.headers['x-rackboot-last-event-id'], String(lifecycle.lastEventId()));
  t.match(listed.json(), [
    { mac: LISTED_MAC, state: null },
    {
      mac: UNLISTED_MAC,
      listed: false,
      hostname: null,
      profile: null,
      state: 'discovered',
      vendor: 'Supermicro',
      firmware: 'uefi-pxe',
      arch: 'x86_64',
      last_event: 'dhcp-ignored',
      boot: 'ac1f6b000007-1',
    },
  ]);
});

t.test('GET /api/v1/machines: filtered by state and paged in MAC order', async (t) => {
  const { app, lifecycle } = await startLifecycleApp(t);
  const discovered = ['ac:1f:6b:00:00:01', 'ac:1f:6b:00:00:02', 'ac:1f:6b:00:00:03'];
  for (const unlisted of discovered)
    await lifecycle.record({
      mac: mac(unlisted),
      source: 'dhcp',
      type: 'dhcp-ignored',
      detail: { firmware: 'bios-pxe', arch: 'x86_64', reason: 'unknown-machine' },
    });
  const macsOf = (response: { json: () => { mac: string }[] }) =>
    response.json().map((machine) => machine.mac);
  t.same(macsOf(await app.inject('/api/v1/machines?state=none')), [LISTED_MAC], 'listed, never seen');
  t.same(macsOf(await app.inject('/api/v1/machines?state=discovered,installed')), discovered);

  const first = await app.inject('/api/v1/machines?state=discovered&limit=2');
  t.same(macsOf(first), discovered.slice(0, 2));
  const next = /^<([^>]+)>; rel="next"$/.exec(String(first.headers.link))?.[1];
  t.equal(next, '/api/v1/machines?state=discovered&after=ac%3A1f%3A6b%3A00%3A00%3A02&limit=2');
  const second = await app.inject(next ?? '');
  t.same(macsOf(second), discovered.slice(2), 'the rest');
  t.equal(second.headers.link, undefined, 'no next page after the last');

  t.equal((await app.inject('/api/v1/machines?state=sleeping')).statusCode, 400);
  t.match((await app.inject('/api/v1/machines?state=sleeping')).json().error, /not a state: sleeping/);
  t.equal((await app.inject('/api/v1/machines?after=nope')).statusCode, 400);
  t.equal((await app.inject('/api/v1/machines?limit=0')).statusCode, 400);
});

t.test('GET /api/v1/machines/{mac}: any spelling, with its events', async (t) => {
  const { app, lifecycle } = await startLifecycleApp(t);
  for (const event of install()) await lifecycle.record(event);
  const response = await app.inject('/api/v1/machines/525400123456');
  t.equal(response.statusCode, 200);
  const machine = response.json() as { state: string; events: { type: string; correlationId: string }[] };
  t.equal(machine.state, 'installing');
  t.same(
    machine.events.map((event) => event.type),
    [
      'dhcp-ack',
      'state-changed',
      'tftp-transfer',
      'state-changed',
      'ipxe-script',
      'ignition-fetch',
      'state-changed',
    ],
  );
  t.ok(machine.events.every((event) => event.correlationId === '525400123456-1'));
  t.equal((await app.inject('/api/v1/machines/52-54-00-00-00-01')).statusCode, 404, 'never seen, not listed');
  t.equal((await app.inject('/api/v1/machines/not-a-mac')).statusCode, 400);
});

t.test('GET /api/v1/profiles: the profiles of the config in force, used by a machine or not', async (t) => {
  const { app, configFile, config } = await startLifecycleApp(t);
  const profiles = () => app.inject('/api/v1/profiles');
  t.same(
    (await profiles()).json(),
    [
      { name: 'spare', kind: 'linux', arch: [], machines: 0, unknown_machines: false },
      { name: 'worker', kind: 'linux', arch: [], machines: 1, unknown_machines: false },
    ],
    'spare, which no machine uses yet, is listed too',
  );

  writeFileSync(
    configFile,
    FIXTURE_YAML.replace('  worker:\n', '  compute:\n    arch: { aarch64: { kernel: arm/vmlinuz } }\n')
      .replace('profile: worker', 'profile: compute')
      .concat('unknown_machines: spare\n'),
  );
  t.ok(await waitUntil(() => 'compute' in config().profiles, 5000), 'the server applied the edit');
  t.same(
    (await profiles()).json(),
    [
      { name: 'compute', kind: 'linux', arch: ['aarch64'], machines: 1, unknown_machines: false },
      { name: 'spare', kind: 'linux', arch: [], machines: 0, unknown_machines: true },
    ],
    'the renamed profile under its new name, the old one gone',
  );

  writeFileSync(configFile, FIXTURE_YAML.replace('profile: worker', 'profile: missing'));
  t.ok(
    await waitUntil(async () => (await profiles()).headers['x-rackboot-config-rejected'] !== undefined, 5000),
    'an edit the server refuses is named in a header',
  );
  t.match(
    (await profiles()).json(),
    [{ name: 'compute' }, { name: 'spare' }],
    'and the profiles are still those of the config in force',
  );
});

t.test(
  'a reservation is listed as the address of a machine not yet seen only in authoritative mode',
  async (t) => {
    for (const [yaml, ip] of [
      [RESERVED_YAML, null],
      [AUTHORITATIVE_RESERVED_YAML, '10.77.0.21'],
    ] as const) {
      const { app } = await startLifecycleApp(t, yaml);
      t.match((await app.inject('/api/v1/machines')).json(), [{ mac: LISTED_MAC, ip }], `ip ${ip}`);
    }
  },
);

t.test('GET /api/v1/machines/{mac}: a damaged history row is left out, not a failed answer', async (t) => {
  // Before: the machine's events were parsed with the start's check, which throws: a 500 for the
  // machine as long as the row stayed.
  const { app, lifecycle, config } = await startLifecycleApp(t);
  for (const event of install()) await lifecycle.record(event);
  const stored = lifecycle.eventsAfter(0, { mac: LISTED_MAC });
  const [cut, unquoted] = stored.map((event) => event.id);
  if (cut === undefined || unquoted === undefined) throw new Error('fixture events');
  const damage = (id: number, text: string) =>
    editHistory(config().server.state, 'UPDATE events SET event = ? WHERE id = ?', text, id);
  damage(cut, JSON.stringify(stored[0]).slice(0, 10));
  // Damage inside the row: still one line between braces, so only its parse finds it.
  damage(unquoted, JSON.stringify(stored[1]).replace('"type"', 'type'));
  const response = await app.inject(`/api/v1/machines/${LISTED_MAC}`);
  t.equal(response.statusCode, 200);
  t.same(
    (response.json() as { events: unknown[] }).events,
    stored.slice(2),
    'the machine with every event but the damaged ones',
  );
});

t.test(
  'a declined or released address is no longer listed as the machine’s, its reservation included',
  async (t) => {
    for (const type of ['dhcp-decline', 'dhcp-release']) {
      const { app, lifecycle } = await startLifecycleApp(t, AUTHORITATIVE_RESERVED_YAML);
      const dhcp = (eventType: string, ip: string) =>
        lifecycle.record({
          mac: LISTED_MAC,
          source: 'dhcp',
          type: eventType,
          ip,
          detail: { firmware: 'bios-pxe' },
        });
      const listed = async () =>
        (await app.inject('/api/v1/machines')).json() as { mac: string; ip: unknown }[];
      const ipOf = async () => (await listed()).find((machine) => machine.mac === LISTED_MAC)?.ip;
      const one = async () => (await app.inject(`/api/v1/machines/${LISTED_MAC}`)).json() as { ip: unknown };

      await dhcp('dhcp-ack', '10.77.0.21');
      t.equal(await ipOf(), '10.77.0.21', type);
      await dhcp(type, '10.77.0.21');
      t.equal(await ipOf(), null, `${type}: the list shows no address`);
      t.equal((await one()).ip, null, `${type}: nor does the machine’s own view`);
      await dhcp('dhcp-offer', '10.77.0.150');
      t.equal(await ipOf(), '10.77.0.150', `${type}: the next offer is shown`);
    }
  },
);

t.test('POST /api/v1/machines/{mac}/events needs that machine’s own token', async (t) => {
  const { app, lifecycle, secrets } = await startLifecycleApp(t);
  for (const event of install()) await lifecycle.record(event);
  const token = secrets.tokenFor(LISTED_MAC, 'events', Date.now());
  const post = (url: string, payload: object, headers: Record<string, string> = {}) =>
    app.inject({ method: 'POST', url, payload, headers });
  const url = `/api/v1/machines/${LISTED_MAC}/events`;

  t.equal((await post(url, { type: 'installed' })).statusCode, 403, 'no token');
  const otherToken = secrets.tokenFor(UNLISTED_MAC, 'events', Date.now());
  t.equal(
    (await post(`${url}?token=${otherToken}`, { type: 'installed' })).statusCode,
    403,
    'another machine’s token',
  );
  t.equal(
    (await post(`${url}?token=${token}`, { type: 'reprovision' })).statusCode,
    400,
    'operator types refused',
  );
  t.equal((await post(`${url}?token=${token}`, { type: 'Installed!' })).statusCode, 400, 'schema');
  // Once, a field the report does not have was dropped unsaid and the report taken.
  const misspelled = await post(`${url}?token=${token}`, { type: 'failed', reason: 'no disk' });
  t.equal(misspelled.statusCode, 400, 'a field the report does not have is refused, not dropped');
  t.equal(misspelled.json().message, 'body has no field "reason"');
  t.equal(lifecycle.stateOf(LISTED_MAC), 'installing', 'nothing refused changed the state');

  const accepted = await post(`${url}?token=${token}`, { type: 'installed' });
  t.equal(accepted.statusCode, 202);
  t.match(accepted.json(), { mac: LISTED_MAC, state: 'installed' });
  t.equal(lifecycle.stateOf(LISTED_MAC), 'installed');
  const viaHeader = await post(
    url,
    { type: 'failed', message: 'disk gone' },
    { authorization: `Bearer ${token}` },
  );
  t.equal(viaHeader.statusCode, 202, 'the token also works as a bearer header');
  t.match(lifecycle.latestEvents({ mac: LISTED_MAC, limit: 2 }), [
    { type: 'failed', source: 'machine', detail: { message: 'disk gone' } },
    { type: 'state-changed', detail: { from: 'installed', to: 'failed' } },
  ]);
  // A report cannot wipe an installed disk: only `reprovision` sends the machine to the installer again.
  const script = await app.inject(`/boot/${LISTED_MAC.replaceAll(':', '-')}.ipxe?arch=x86_64&platform=efi`);
  t.match(script.body, /booting from the local disk/, 'failed after an install: still the local disk');
  t.notMatch(script.body, /coreos\.inst/, 'not the installer');
});

const run = promisify(execFile);

t.test('a machine reports with curl -d or busybox wget, whatever content type they send', async (t) => {
  const { app, lifecycle, secrets } = await startLifecycleApp(t);
  for (const event of install()) await lifecycle.record(event);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}/api/v1/machines/${LISTED_MAC}/events?token=${secrets.tokenFor(LISTED_MAC, 'events', Date.now())}`;
  const status = async (command: string, args: string[]) => {
    const { stdout } = await run(command, args, { timeout: 10_000 });
    return stdout;
  };
  // curl -d labels the body application/x-www-form-urlencoded, as busybox wget --post-data does.
  t.equal(
    await status('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-d', '{"type":"by-curl"}', url]),
    '202',
  );
  t.equal(
    await status('curl', [
      '-s',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      '-H',
      'Content-Type:',
      '-d',
      '{"type":"unlabelled"}',
      url,
    ]),
    '202',
    'no content type at all',
  );
  t.match(
    await status('busybox', ['wget', '-q', '-O', '-', '--post-data', '{"type":"by-wget"}', url]),
    /"mac":"52:54:00:12:34:56"/,
  );
  t.equal(
    await status('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-d', 'type=installed', url]),
    '400',
    'a body that is not JSON',
  );
  t.same(
    lifecycle.latestEvents({ mac: LISTED_MAC, limit: 3 }).map((event) => event.type),
    ['by-curl', 'unlabelled', 'by-wget'],
  );
});

t.test('POST /api/v1/machines/{mac}/events answers 503 when its event could not be stored', async (t) => {
  const { app, lifecycle, secrets, config } = await startLifecycleApp(t);
  for (const event of install()) await lifecycle.record(event);
  failHistoryWrites(config().server.state);
  const token = secrets.tokenFor(LISTED_MAC, 'events', Date.now());
  const response = await app.inject({
    method: 'POST',
    url: `/api/v1/machines/${LISTED_MAC}/events?token=${token}`,
    payload: { type: 'installed' },
  });
  t.equal(response.statusCode, 503, 'not a 202 for an event the history does not have');
  t.match(response.json(), { error: /could not be written to the history/ });
  t.notOk(
    lifecycle.eventsAfter(0).some((event) => event.type === 'installed'),
    'the history indeed lacks it',
  );
});

t.test(
  'POST /api/v1/machines/{mac}/reprovision: operator token; a machine never seen is refused',
  async (t) => {
    const { app, lifecycle, secrets } = await startLifecycleApp(t);
    const url = `/api/v1/machines/${LISTED_MAC}/reprovision`;
    for (const event of install()) await lifecycle.record(event);
    const none = await app.inject({ method: 'POST', url });
    t.equal(none.statusCode, 401, 'no token');
    t.match(none.json().error, /^operator token required/);
    const wrong = await app.inject({
      method: 'POST',
      url,
      headers: { authorization: 'Bearer wrong-token-000000000' },
    });
    t.equal(wrong.statusCode, 401);
    t.match(
      wrong.json().error,
      /^wrong operator token/,
      'a token that was sent is called wrong, not missing',
    );
    // The CLI sends the token file of server.state when it finds no other: it must not be told to use it.
    t.equal(
      wrong.json().error,
      'wrong operator token: this server takes server.api_token ($RACKBOOT_API_TOKEN in its environment overrides it), not the one in <server.state>/operator-token',
      'it says which token this server takes',
    );
    const early = await app.inject({ method: 'POST', url, headers: operator });
    t.equal(early.statusCode, 200, 'an installing machine is taken back');
    t.same(early.json().rejected, undefined);
    t.match(
      early.json(),
      { state: 'discovered' },
      'its install in progress runs the config it fetched before: the next boot installs again',
    );
    const stranger = await app.inject({
      method: 'POST',
      url: '/api/v1/machines/52:54:00:00:00:99/reprovision',
      headers: operator,
    });
    t.equal(stranger.statusCode, 404, 'a MAC neither listed nor ever seen is refused');
    t.equal(
      stranger.json().error,
      '52:54:00:00:00:99 is not in the config and has never network-booted here: nothing to reprovision, nothing recorded (`rackboot machines` lists the machines)',
    );
    t.same(lifecycle.latestEvents({ mac: mac('52:54:00:00:00:99'), limit: 10 }), [], 'no event recorded');
    t.equal(lifecycle.machine(mac('52:54:00:00:00:99')), undefined, 'no machine made of it');

    // The next network boot installs again, and this time the machine reports it.
    for (const event of install()) await lifecycle.record(event);
    const token = secrets.tokenFor(LISTED_MAC, 'events', Date.now());
    await app.inject({
      method: 'POST',
      url: `/api/v1/machines/${LISTED_MAC}/events?token=${token}`,
      payload: { type: 'installed' },
    });
    t.equal(lifecycle.stateOf(LISTED_MAC), 'installed');
    const done = await app.inject({ method: 'POST', url, headers: operator });
    t.equal(done.statusCode, 200);
    t.match(done.json(), { mac: LISTED_MAC, state: 'discovered' });
    t.equal(lifecycle.stateOf(LISTED_MAC), 'discovered');
  },
);

t.test('without server.api_token the operator API is off', async (t) => {
  const { app } = await startLifecycleApp(t, FIXTURE_YAML.replace(/ {2}api_token: .*\n/, ''));
  const response = await app.inject({
    method: 'POST',
    url: `/api/v1/machines/${LISTED_MAC}/reprovision`,
    headers: operator,
  });
  t.equal(response.statusCode, 403);
});

t.test('POST /api/v1/machines/{mac}/adopt writes the machine into the YAML', async (t) => {
  const { app, lifecycle, configFile } = await startLifecycleApp(t);
  await lifecycle.record({
    mac: UNLISTED_MAC,
    source: 'dhcp',
    type: 'dhcp-ignored',
    detail: { firmware: 'bios-pxe' },
  });
  const url = `/api/v1/machines/${UNLISTED_MAC}/adopt`;
  t.equal((await app.inject({ method: 'POST', url, payload: { profile: 'worker' } })).statusCode, 401);
  const unknownProfile = await app.inject({
    method: 'POST',
    url,
    headers: operator,
    payload: { profile: 'nope' },
  });
  t.equal(unknownProfile.statusCode, 400);
  const adopted = await app.inject({
    method: 'POST',
    url,
    headers: operator,
    payload: { profile: 'spare', hostname: 'node7' },
  });
  t.equal(adopted.statusCode, 201);
  const text = readFileSync(configFile, 'utf8');
  t.ok(text.startsWith(FIXTURE_YAML), 'the file is unchanged up to the new entry');
  t.equal(
    text.slice(FIXTURE_YAML.length),
    `  - mac: ${UNLISTED_MAC}\n    hostname: node7\n    profile: spare\n`,
  );
  const machines = (await app.inject('/api/v1/machines')).json() as {
    mac: string;
    listed: boolean;
    hostname: string;
  }[];
  t.match(
    machines.find((machine) => machine.mac === UNLISTED_MAC),
    { listed: true, hostname: 'node7', profile: 'spare' },
  );
  t.match(lifecycle.latestEvents({ mac: UNLISTED_MAC, limit: 1 }), [
    { type: 'adopt', source: 'operator', detail: { profile: 'spare' } },
  ]);
  const again = await app.inject({ method: 'POST', url, headers: operator, payload: { profile: 'spare' } });
  t.equal(again.statusCode, 409, 'already listed');
});

t.test('POST /api/v1/machines/{mac}/adopt refuses an entry serve would refuse (422)', async (t) => {
  const template = join(t.testdir(), 'worker.bu');
  writeFileSync(
    template,
    'variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/role\n      contents:\n        inline: "{{vars.role}}"\n',
  );
  const yaml = FIXTURE_YAML.replace(
    'spare: { kind: linux, kernel: vmlinuz }',
    `spare: { kind: linux, kernel: vmlinuz, ignition: ${template} }`,
  );
  const { app, configFile } = await startLifecycleApp(t, yaml);
  const response = await app.inject({
    method: 'POST',
    url: `/api/v1/machines/${UNLISTED_MAC}/adopt`,
    headers: operator,
    payload: { profile: 'spare' },
  });
  t.equal(response.statusCode, 422);
  t.match(response.json(), { code: 'rejected', problems: [/\{\{vars\.role\}\} is not set for machine/] });
  t.equal(readFileSync(configFile, 'utf8'), yaml, 'the file is unchanged');
});

t.test('/metrics: machines by state, install histogram, TFTP outcomes, HTTP requests, process', async (t) => {
  const { app, lifecycle, secrets } = await startLifecycleApp(t, undefined, async () => ({
    messages: [{ type: 'discover', decision: 'offer', count: 3 }],
    malformed: [{ reason: 'short', count: 1 }],
    boundLeases: 2,
  }));
  for (const event of install()) await lifecycle.record(event);
  await lifecycle.record({
    mac: UNLISTED_MAC,
    source: 'tftp',
    type: 'tftp-transfer',
    detail: { outcome: 'timeout', bytes: 512 },
  });
  const token = secrets.tokenFor(LISTED_MAC, 'events', Date.now());
  await app.inject({
    method: 'POST',
    url: `/api/v1/machines/${LISTED_MAC}/events?token=${token}`,
    payload: { type: 'installed' },
  });
  await app.inject('/api/v1/machines');
  await app.inject('/no/such/route');
  const response = await app.inject('/metrics');
  t.equal(response.statusCode, 200);
  t.match(response.headers['content-type'], /^text\/plain/);
  const text = response.body;
  for (const line of [
    'rackboot_machines{state="installed"} 1',
    'rackboot_machines{state="discovered"} 1',
    'rackboot_machines{state="failed"} 0',
    'rackboot_install_duration_seconds_count 1',
    'rackboot_tftp_transfers_total{outcome="complete"} 1',
    'rackboot_tftp_bytes_total{outcome="complete"} 70000',
    'rackboot_tftp_errors_total{outcome="timeout"} 1',
    'rackboot_http_requests_total{method="GET",route="/api/v1/machines",status="200"} 1',
    'rackboot_http_requests_total{method="POST",route="/api/v1/machines/:mac/events",status="202"} 1',
    'rackboot_http_requests_total{method="GET",route="unmatched",status="404"} 1',
    'rackboot_dhcp_messages_total{type="discover",decision="offer"} 3',
    'rackboot_dhcp_malformed_total{reason="short"} 1',
    'rackboot_dhcp_bound_leases 2',
    'rackboot_history_unstored_events_total 0',
    'rackboot_history_writer_restarts_total 0',
    'rackboot_history_writing 1',
  ]) {
    t.ok(text.includes(line), line);
  }
  const bySource = new Map<string, number>();
  for (const event of lifecycle.eventsAfter(0))
    bySource.set(event.source, (bySource.get(event.source) ?? 0) + 1);
  t.ok(bySource.size >= 4, `events of ${[...bySource.keys()].join(', ')}`);
  for (const [source, count] of bySource) {
    t.ok(
      text.includes(`rackboot_events_total{source="${source}"} ${count}`),
      `${count} ${source} events counted`,
    );
  }
  t.match(text, /^process_cpu_user_seconds_total \d/m, 'process metrics');
});

t.test('/metrics: rackboot_dhcp_up is 0 while the DHCP thread is down, the last counters kept', async (t) => {
  let threadUp = true;
  const { app } = await startLifecycleApp(t, undefined, async () => {
    if (!threadUp) throw new Error('the DHCP thread is being started again');
    return { messages: [{ type: 'discover', decision: 'offer', count: 3 }], malformed: [], boundLeases: 2 };
  });
  t.match((await app.inject('/metrics')).body, /^rackboot_dhcp_up 1$/m, 'up while it answers');
  threadUp = false;
  const down = (await app.inject('/metrics')).body;
  t.match(down, /^rackboot_dhcp_up 0$/m, 'down while its thread is started again');
  t.match(
    down,
    /^rackboot_dhcp_messages_total\{type="discover",decision="offer"\} 3$/m,
    'the last counters stand',
  );
  threadUp = true;
  t.match((await app.inject('/metrics')).body, /^rackboot_dhcp_up 1$/m, 'up again');
});

t.test('/metrics counts the events a failed history write left out', async (t) => {
  const { app, lifecycle, config } = await startLifecycleApp(t);
  failHistoryWrites(config().server.state);
  const lost = lifecycle.append(install()[0] as MachineEventInput);
  t.equal(await lost.stored, false);
  const text = (await app.inject('/metrics')).body;
  t.ok(lost.events.length > 0);
  t.ok(
    text.includes(`rackboot_history_unstored_events_total ${lost.events.length}`),
    `the ${lost.events.length} events of the failed write counted`,
  );
  t.ok(text.includes('rackboot_history_writing 1'), 'a failed write does not stop the writing');
});

t.test('/metrics counts event streams, which end by a close rather than a finished response', async (t) => {
  const { app } = await startLifecycleApp(t);
  const address = await app.listen({ port: 0, host: '127.0.0.1' });
  const streamsCounted = async () => {
    const text = (await app.inject('/metrics')).body;
    const line =
      /^rackboot_http_requests_total\{method="GET",route="\/api\/v1\/events",status="200"\} (\d+)$/m;
    return Number(line.exec(text)?.[1] ?? 0);
  };
  const abort = new AbortController();
  const response = await fetch(`${address}/api/v1/events`, { signal: abort.signal });
  t.equal(response.status, 200);
  t.equal(await streamsCounted(), 0, 'not while it is open');
  abort.abort();
  const deadline = Date.now() + 10_000;
  while ((await streamsCounted()) === 0 && Date.now() < deadline)
    await new Promise((resolve) => setTimeout(resolve, 50));
  t.equal(await streamsCounted(), 1, 'once the client closed it');
});

t.test('a HEAD delivers nothing, so it records nothing and holds no stream', async (t) => {
  const { app, lifecycle } = await startLifecycleApp(t);
  const unknown = await app.inject({ method: 'HEAD', url: '/boot/02-00-00-00-00-99.ipxe' });
  const listed = await app.inject({ method: 'HEAD', url: `/boot/${LISTED_MAC}.ipxe` });
  t.equal(unknown.statusCode, 200, 'HEAD on a script is answered as GET is');
  t.equal(listed.statusCode, 200);
  t.equal(lifecycle.stateOf(mac('02:00:00:00:00:99')), undefined, 'no discovered machine');
  t.equal(lifecycle.stateOf(LISTED_MAC), undefined, 'the listed machine is not booting');
  const stream = await app.inject({ method: 'HEAD', url: '/api/v1/events' });
  t.equal(stream.statusCode, 404, 'the events stream has no HEAD');
  await app.inject({ method: 'GET', url: `/boot/${LISTED_MAC}.ipxe` });
  t.equal(lifecycle.stateOf(LISTED_MAC), 'booting', 'the GET still records');
});
