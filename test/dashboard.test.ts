import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import type { BrowserContext, Page } from 'playwright-core';
import t, { type Test } from 'tap';
import { buildApp } from '../src/http/app.js';
import { createMachineSecrets, type MachineSecrets } from '../src/ignition/tokens.js';
import { createBootDecision } from '../src/inventory/decision.js';
import { loadConfigFile } from '../src/inventory/load.js';
import type { Mac } from '../src/inventory/mac.js';
import { nameRule } from '../src/inventory/names.js';
import { openLifecycle } from '../src/lifecycle/store.js';
import { CHROMIUM, launchChromium } from './helpers/chromium.js';
import { requireTools } from './helpers/netns.js';
import { waitUntil } from './helpers/poll.js';
import {
  API_TOKEN,
  FIXTURE_YAML,
  LISTED_MAC,
  type LifecycleFixture,
  mac,
  startLifecycleApp,
  UNLISTED_MAC,
} from './lifecycle-fixture.js';

const ARTIFACTS = fileURLToPath(new URL('../test-artifacts/', import.meta.url));

/** One browser for every test here (each gets its own page); closed when the file ends. */
let browser: Promise<BrowserContext> | undefined;
function sharedBrowser(): Promise<BrowserContext> {
  browser ??= (async () => {
    await requireTools(CHROMIUM);
    const profile = mkdtempSync(join(tmpdir(), 'rackboot-chromium-'));
    const context = await launchChromium(profile);
    t.teardown(async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    });
    return context;
  })();
  return browser;
}

async function openDashboard(t: Test, url: string): Promise<{ page: Page; pageErrors: string[] }> {
  const page = await (await sharedBrowser()).newPage();
  t.teardown(() => page.close());
  page.setDefaultTimeout(10_000);
  const pageErrors: string[] = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));
  await page.goto(url);
  await page.locator('#connection[data-status="live"]').waitFor({ timeout: 10_000 });
  return { page, pageErrors };
}

const bootEvent = (machine: Mac, firmware = 'bios-pxe') =>
  ({ mac: machine, source: 'dhcp', type: 'dhcp-ack', detail: { firmware, arch: 'x86_64' } }) as const;
const tftpComplete = (machine: Mac) =>
  ({
    mac: machine,
    source: 'tftp',
    type: 'tftp-transfer',
    detail: { file: 'undionly.kpxe', outcome: 'complete', bytes: 70_000 },
  }) as const;

/** The machine's own report through its events endpoint, with its token, as its first boot sends it. */
function reportInstalled(url: string, secrets: MachineSecrets): Promise<Response> {
  const token = secrets.tokenFor(LISTED_MAC, 'events', Date.now());
  return fetch(`${url}/api/v1/machines/${LISTED_MAC}/events?token=${token}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'installed' }),
  });
}

/** A promise the test resolves when it is ready (and teardown resolves, so no handler waits forever). */
function gate(t: Test): { opened: Promise<void>; open: () => void } {
  let open = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  t.teardown(() => open());
  return { opened, open };
}

/** A human click: the button is held ~120 ms, long enough for frames to render in between. */
async function slowClick(page: Page, selector: string): Promise<void> {
  // A page that replaces its nodes may detach this one between the lookup and the measure.
  let box = await page.locator(selector).boundingBox();
  for (let tries = 0; !box && tries < 20; tries += 1) box = await page.locator(selector).boundingBox();
  if (!box) throw new Error(`${selector} is not visible`);
  await page.mouse.move(box.x + Math.min(20, box.width / 2), box.y + box.height / 2);
  await page.mouse.down();
  await page.waitForTimeout(120);
  await page.mouse.up();
}

/** A URL's path as the server reads it (the page encodes the MAC in a path). */
const pathOf = (url: string) => decodeURIComponent(new URL(url).pathname);
const isEventStream = (url: URL) => url.pathname === '/api/v1/events';

/**
 * Drops the page's event stream and holds its reconnection until the returned function is called,
 * once the page shows it is reconnecting.
 */
async function dropEventStream(t: Test, page: Page, app: FastifyInstance): Promise<() => void> {
  const { opened: held, open: release } = gate(t);
  await page.route(
    isEventStream,
    async (route) => {
      await held;
      await route.continue();
    },
    { times: 1 },
  );
  app.server.closeAllConnections();
  await page.locator('#connection[data-status="reconnecting"]').waitFor({ timeout: 10_000 });
  return release;
}

/** The rows the page shows, in page order: drawn, not only without the hidden attribute (CSS could override it). */
const visibleRows = (page: Page) =>
  page.$$eval('#machines tbody tr', (rows) =>
    rows.filter((row) => row.checkVisibility()).map((row) => row.getAttribute('data-mac')),
  );

t.test('the dashboard lists machines, follows their state live and shows the timeline', async (t) => {
  const { app, lifecycle, secrets } = await startLifecycleApp(t);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  for (const event of [
    {
      mac: LISTED_MAC,
      source: 'dhcp',
      type: 'dhcp-ack',
      ip: '10.77.0.100',
      detail: { firmware: 'bios-pxe', arch: 'x86_64' },
    },
    tftpComplete(LISTED_MAC),
    { mac: LISTED_MAC, source: 'http', type: 'ipxe-script', detail: { script: 'install' } },
    { mac: LISTED_MAC, source: 'http', type: 'ignition-fetch' },
    {
      mac: UNLISTED_MAC,
      source: 'dhcp',
      type: 'dhcp-ignored',
      detail: { firmware: 'uefi-pxe', arch: 'x86_64' },
    },
  ] as const) {
    await lifecycle.record(event);
  }

  const { page, pageErrors } = await openDashboard(t, url);

  // Durations are rounded once, then split (no "1 min 60 s"); the function is the page's own.
  t.same(
    await page
      .evaluate(async () => {
        const { duration } = (await import('/dashboard/app.js' as string)) as {
          duration: (ms: number) => string;
        };
        return [0, 999.6, 1000, 59_949, 59_950, 119_600, 119_400, 3_599_700, 3_600_000, 3_725_000].map(
          duration,
        );
      })
      .catch((error: Error) => error.message),
    [
      '0 ms',
      '1.0 s',
      '1.0 s',
      '59.9 s',
      '1 min 0 s',
      '2 min 0 s',
      '1 min 59 s',
      '1 h 0 min 0 s',
      '1 h 0 min 0 s',
      '1 h 2 min 5 s',
    ],
    'durations never show 60 s or 60 min',
  );

  const row = page.locator(`#machines tr[data-mac="${LISTED_MAC}"]`);
  await row.locator('.state', { hasText: 'installing' }).waitFor({ timeout: 10_000 });
  t.match(
    (await row.locator('td').allTextContents()).join(' '),
    /node1\s+worker\s+installing\s+10\.77\.0\.100\s+QEMU · x86_64 · bios-pxe\s+ignition-fetch/,
  );

  await row.click();
  await page.locator('#timeline li[data-type="ignition-fetch"]').waitFor({ timeout: 10_000 });

  // The machine reports back through its own endpoint: the page must change without a reload.
  t.equal((await reportInstalled(url, secrets)).status, 202);
  await row.locator('.state', { hasText: 'installed' }).waitFor({ timeout: 10_000 });
  t.pass('the state changed live');
  const stages = await page.locator('#timeline li.stage .summary').allInnerTexts();
  t.same(
    stages.map((text) => text.replace(/ after .*/, '')),
    ['new → discovered', 'discovered → booting', 'booting → installing', 'installing → installed'],
    'the timeline shows every stage of the boot',
  );
  t.match(await page.locator('#timeline li.boot').first().textContent(), /boot 525400123456-1/);
  t.equal(await page.locator('#reprovision').isVisible(), true, 'an installed machine can be reprovisioned');

  // Events for MACs the server keeps no machine for are history only: no row, no adopt form.
  const plainClient = mac('a4:5e:60:11:22:33');
  const neverSeen = mac('de:ad:be:ef:00:01');
  await lifecycle.record({
    mac: plainClient,
    source: 'dhcp',
    type: 'dhcp-ack',
    ip: '10.77.0.151',
    detail: { vendorClass: 'android-dhcp-13' },
  });
  await lifecycle.record({ mac: neverSeen, source: 'operator', type: 'reprovision' });
  await lifecycle.record({ mac: UNLISTED_MAC, source: 'http', type: 'ignition-fetch' });
  await page
    .locator(`#machines tr[data-mac="${UNLISTED_MAC}"] td`, { hasText: 'ignition-fetch' })
    .waitFor({ timeout: 10_000 });
  await page.waitForTimeout(300); // a fetch a row would wait for
  const apiMacs = ((await (await fetch(`${url}/api/v1/machines`)).json()) as { mac: string }[]).map(
    (machine) => machine.mac,
  );
  t.notOk(apiMacs.includes(plainClient) || apiMacs.includes(neverSeen), 'the server lists neither');
  t.same(
    await page.$$eval('#machines tbody tr, #discovered tbody tr', (rows) =>
      rows.map((row) => row.getAttribute('data-mac')),
    ),
    [LISTED_MAC, UNLISTED_MAC, UNLISTED_MAC],
    'no rows invented for a plain DHCP client or an operator call on an unknown MAC',
  );

  // The discovered machine, adopted from the page.
  const discovered = page.locator(`#discovered tr[data-mac="${UNLISTED_MAC}"]`);
  t.match(await discovered.locator('td').allTextContents(), [UNLISTED_MAC, 'Supermicro · x86_64 · uefi-pxe']);
  await page.fill('#token', API_TOKEN);
  await page.locator('#token').dispatchEvent('change');
  const adoptPosts: string[] = [];
  page.on('request', (request) => {
    if (request.method() === 'POST' && request.url().endsWith('/adopt'))
      adoptPosts.push(request.postData() ?? '');
  });
  const message = discovered.locator('.message');
  // Variables are checked before anything is sent.
  await discovered.locator('input[placeholder="profile"]').fill('spare');
  await discovered.locator('textarea.vars').fill('RACK=r7\nbad.name=1');
  await discovered.locator('button', { hasText: 'Adopt' }).click();
  await message.filter({ hasText: 'bad.name' }).waitFor({ timeout: 5_000 });
  t.match(await message.textContent(), /line 2: "bad.name" is not a variable name/);
  t.same(adoptPosts, [], 'an invalid variable name is refused in the page');
  // The server's refusal is shown as it said it (here its schema's, before any file is touched).
  await discovered.locator('input[placeholder="hostname"]').fill('node_7');
  await discovered.locator('textarea.vars').fill('');
  await discovered.locator('button', { hasText: 'Adopt' }).click();
  await message.filter({ hasText: 'hostname' }).waitFor({ timeout: 10_000 });
  t.match(await message.textContent(), /body\/hostname is not a host name \(letters, digits and hyphens/);
  t.same(
    adoptPosts.map((body) => JSON.parse(body)),
    [{ profile: 'spare', hostname: 'node_7' }],
    'no vars key when none are given',
  );

  await discovered.locator('input[placeholder="profile"]').fill('spare');
  await discovered.locator('input[placeholder="hostname"]').fill('node7');
  await discovered.locator('textarea.vars').fill('RACK=r7\n\n  NTP_SERVER = 10.0.0.1=x \nrack-row=2\n');
  // An event arriving while the operator types re-renders the page; the form keeps its text.
  await lifecycle.record({
    mac: UNLISTED_MAC,
    source: 'dhcp',
    type: 'dhcp-ignored',
    ip: '10.77.0.150',
    detail: { firmware: 'uefi-pxe', arch: 'x86_64' },
  });
  await page
    .locator(`#machines tr[data-mac="${UNLISTED_MAC}"] td`, { hasText: '10.77.0.150' })
    .waitFor({ timeout: 10_000 });
  t.equal(await discovered.locator('input[placeholder="profile"]').inputValue(), 'spare');
  t.equal(await discovered.locator('input[placeholder="hostname"]').inputValue(), 'node7');
  const adoptRequest = page.waitForRequest((request) => request.url().endsWith('/adopt'));
  await discovered.locator('button', { hasText: 'Adopt' }).click();
  t.same(
    (await adoptRequest).postDataJSON(),
    {
      profile: 'spare',
      hostname: 'node7',
      vars: { RACK: 'r7', NTP_SERVER: ' 10.0.0.1=x ', 'rack-row': '2' },
    },
    'the variables are sent with the adopt',
  );
  await page
    .locator(`#machines tr[data-mac="${UNLISTED_MAC}"] td`, { hasText: 'node7' })
    .waitFor({ timeout: 10_000 });
  t.equal(
    await page.locator(`#discovered tr[data-mac="${UNLISTED_MAC}"]`).count(),
    0,
    'no longer in discovered',
  );

  // A machine that network-boots while the page is open appears with what the server knows of it.
  const newcomer = '00:50:56:00:00:42' as Mac;
  await lifecycle.record({
    mac: newcomer,
    source: 'dhcp',
    type: 'dhcp-ignored',
    detail: { firmware: 'ipxe', arch: 'x86_64' },
  });
  const newRow = page.locator(`#machines tr[data-mac="${newcomer}"]`);
  // Attached, not visible: with the machine panel open (a machine is selected) the fleet leaves out
  // its hardware column, which the panel shows.
  await newRow
    .locator('td', { hasText: 'VMware · x86_64 · ipxe' })
    .waitFor({ state: 'attached', timeout: 10_000 });
  t.equal(await newRow.locator('td.hardware').isVisible(), false, 'no hardware column beside the panel');
  t.match(await newRow.locator('td').allTextContents(), [
    newcomer,
    '',
    '',
    'discovered',
    '',
    'VMware · x86_64 · ipxe',
    'dhcp-ignored',
  ]);
  t.same(
    await visibleRows(page),
    [newcomer, LISTED_MAC, UNLISTED_MAC],
    'a new machine takes its place in MAC order',
  );

  await page.click('#filters button[data-filter="installed"]');
  t.same(await visibleRows(page), [LISTED_MAC], 'filter by state');
  t.equal(await page.locator('#filters button.active').textContent(), 'installed (1)');

  mkdirSync(ARTIFACTS, { recursive: true });
  await page.click('#filters button[data-filter="all"]');
  await row.click();
  await page.locator('#timeline li[data-type="installed"]').waitFor({ timeout: 10_000 });
  await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true });
  t.same(pageErrors, [], 'no script errors');
});

/**
 * In the page (plain JS: the test is compiled without the DOM types): marks the fleet's rows and
 * the filter buttons, and records which rows' cells change and how many rows or buttons are removed.
 */
const WATCH_MUTATIONS = `{
  window.marked = [...document.querySelectorAll('#machines tbody tr, #filters button')];
  window.changed = new Set();
  window.removed = 0;
  new MutationObserver((records) => {
    for (const record of records) {
      window.removed += [...record.removedNodes].filter((node) => node.nodeName === 'TR' || node.nodeName === 'BUTTON').length;
      const target = record.target instanceof Element ? record.target : record.target.parentElement;
      // Ages tick every 5 s, for every row.
      if (target?.closest('td')?.classList.contains('age')) continue;
      const row = target?.closest('tr[data-mac]');
      if (row) window.changed.add(row.dataset.mac);
    }
  }).observe(document.body, { childList: true, subtree: true, characterData: true });
}`;

t.test(
  'a listed machine never seen: a report before its first boot changes its row no more than the server',
  async (t) => {
    const { app, lifecycle, secrets } = await startLifecycleApp(t);
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    const { page, pageErrors } = await openDashboard(t, url);
    const row = page.locator(`#machines tr[data-mac="${LISTED_MAC}"]`);
    const cells = () => row.locator('td').allTextContents();
    const unseen = await cells();

    // Its post-install check or a wiped history: the server records the report as history only.
    const token = secrets.tokenFor(LISTED_MAC, 'events', Date.now());
    const report = await fetch(`${url}/api/v1/machines/${LISTED_MAC}/events?token=${token}`, {
      method: 'POST',
      body: JSON.stringify({ type: 'failed', message: 'pre-boot check' }),
    });
    t.match(await report.json(), { state: null, rejected: /never network-booted/ });
    // Events reach the page in order: once this machine's row is drawn, the report was applied.
    await lifecycle.record(bootEvent(UNLISTED_MAC));
    await page.locator(`#machines tr[data-mac="${UNLISTED_MAC}"]`).waitFor({ timeout: 10_000 });
    t.match(
      (await (await fetch(`${url}/api/v1/machines/${LISTED_MAC}`)).json()) as object,
      { state: null, ip: null, last_event: null, updated_at: null },
      'the server keeps no record of it',
    );
    t.same(await cells(), unseen, 'no address, last event or age the server does not have');

    // Its first network boot makes the record, and the row shows it.
    await lifecycle.record({ ...bootEvent(LISTED_MAC), ip: '10.77.0.100' });
    await row.locator('.state', { hasText: 'discovered' }).waitFor({ timeout: 10_000 });
    await row.locator('td', { hasText: 'dhcp-ack' }).waitFor({ timeout: 10_000 });
    t.match((await cells()).join(' '), /discovered\s+10\.77\.0\.100\s+QEMU · x86_64 · bios-pxe\s+dhcp-ack/);
    t.same(pageErrors, [], 'no script errors');
  },
);

t.test(
  'a declined or released address leaves the open page’s row, as it leaves the server’s record',
  async (t) => {
    for (const type of ['dhcp-decline', 'dhcp-release']) {
      const { app, lifecycle } = await startLifecycleApp(t);
      const url = await app.listen({ port: 0, host: '127.0.0.1' });
      await lifecycle.record({ ...bootEvent(LISTED_MAC), ip: '10.77.0.100' });
      const { page, pageErrors } = await openDashboard(t, url);
      const row = page.locator(`#machines tr[data-mac="${LISTED_MAC}"]`);
      await row.locator('td', { hasText: '10.77.0.100' }).waitFor({ timeout: 10_000 });
      await lifecycle.record({ mac: LISTED_MAC, source: 'dhcp', type, ip: '10.77.0.100' });
      await row.locator('td', { hasText: type }).waitFor({ timeout: 10_000 });
      t.notMatch(
        (await row.locator('td').allTextContents()).join(' '),
        /10\.77\.0\.100/,
        `${type}: no address shown`,
      );
      t.same(pageErrors, [], `${type}: no script errors`);
    }
  },
);

t.test(
  'the adopt form refuses the vars names a JSON body cannot carry, in the words of names.ts',
  async (t) => {
    const { app } = await startLifecycleApp(t);
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    const { page, pageErrors } = await openDashboard(t, url);
    const outcomes = await page.evaluate(async () => {
      const { parseVars } = (await import('/dashboard/app.js' as string)) as {
        parseVars: (text: string) => Record<string, string>;
      };
      return ['__proto__', 'constructor', 'prototype', 'constructors'].map((name) => {
        try {
          return Object.keys(parseVars(`${name}=1`));
        } catch (error) {
          return (error as Error).message;
        }
      });
    });
    t.same(outcomes, [
      `vars line 1: "__proto__" is not a variable name (${nameRule('vars')})`,
      `vars line 1: "constructor" is not a variable name (${nameRule('vars')})`,
      `vars line 1: "prototype" is not a variable name (${nameRule('vars')})`,
      ['constructors'],
    ]);
    t.same(pageErrors, [], 'no script errors');
  },
);

t.test('a stream of events patches the rows it touches and loses no click', async (t) => {
  const { app, lifecycle } = await startLifecycleApp(t);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  const busy = mac('02:00:00:00:00:01');
  const quiet = mac('02:00:00:00:00:02');
  const early = mac('02:00:00:00:00:00');
  for (const machine of [LISTED_MAC, busy, quiet]) await lifecycle.record(bootEvent(machine));
  const { page, pageErrors } = await openDashboard(t, url);
  await page.locator(`#machines tr[data-mac="${quiet}"]`).waitFor({ timeout: 10_000 });

  // Mark the elements and watch what changes under the tables and the filter bar.
  await page.evaluate(WATCH_MUTATIONS);

  // ~33 events a second for one machine while the operator clicks a row, then a filter.
  let storming = true;
  t.teardown(() => {
    storming = false;
  });
  // Each event moves the busy machine to a new address, so its row has something to show.
  const storm = (async () => {
    for (let lease = 0; storming; lease++) {
      const ip = `10.77.0.${10 + (lease % 200)}`;
      await lifecycle.record({
        mac: busy,
        source: 'dhcp',
        type: 'dhcp-ack',
        ip,
        detail: { firmware: 'ipxe' },
      });
      await new Promise((resolve) => setTimeout(resolve, 30));
    }
  })();
  await page.waitForTimeout(300);
  await slowClick(page, `#machines tr[data-mac="${LISTED_MAC}"]`);
  await page.locator('#detail-title', { hasText: 'node1' }).waitFor({ timeout: 5_000 });
  t.pass('a row clicked during the stream opens the machine');
  await slowClick(page, '#filters button[data-filter="discovered"]');
  await page.locator('#filters button.active[data-filter="discovered"]').waitFor({ timeout: 5_000 });
  t.pass('a filter clicked during the stream is applied');

  // Filtering and order stay right as machines change state and appear.
  await lifecycle.record(tftpComplete(quiet));
  await page.locator('#filters button[data-filter="booting"]', { hasText: 'booting (1)' }).waitFor();
  t.same(await visibleRows(page), [busy, LISTED_MAC], 'a machine leaves the filter when its state changes');
  t.equal(await page.locator('#filters button[data-filter="discovered"]').textContent(), 'discovered (2)');
  await lifecycle.record(bootEvent(early));
  await page.locator(`#machines tr[data-mac="${early}"]`).waitFor({ state: 'attached', timeout: 10_000 });
  t.same(await visibleRows(page), [early, busy, LISTED_MAC], 'a new machine is sorted in, filtered');
  await page.click('#filters button[data-filter="all"]');
  t.same(await visibleRows(page), [early, busy, quiet, LISTED_MAC], 'all, in MAC order');
  storming = false;
  await storm;

  const outcome = (await page.evaluate(`({
    kept: window.marked.every((node) => node.isConnected),
    changed: [...window.changed].sort(),
    removed: window.removed,
  })`)) as { kept: boolean; changed: string[]; removed: number };
  t.ok(outcome.kept, 'rows and filter buttons are the same elements after the stream');
  t.equal(outcome.removed, 0, 'no row or button was replaced');
  t.same(
    outcome.changed.filter((changed) => changed !== quiet && changed !== early),
    [busy],
    'only the rows the events touched changed (the new machine and the one that booted aside)',
  );
  t.same(pageErrors, [], 'no script errors');
});

t.test('a large fleet is drawn in sections: sorted across them, filtered without gaps', async (t) => {
  const { app, lifecycle } = await startLifecycleApp(t);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  // 250 machines at every other MAC number, so that the odd ones sort in between later.
  const numbered = (number: number) =>
    mac(
      `02:00:00:00:${(number >> 8).toString(16).padStart(2, '0')}:${(number & 0xff).toString(16).padStart(2, '0')}`,
    );
  const fleet = Array.from({ length: 250 }, (_, index) => numbered(index * 2));
  for (const machine of fleet) await lifecycle.record(bootEvent(machine));
  const { page, pageErrors } = await openDashboard(t, url);
  await page.locator(`#machines tr[data-mac="${fleet.at(-1)}"]`).waitFor({ state: 'attached' });
  t.equal(await page.locator('#machines tbody').count(), 3, 'sections of 100 rows, filled in order');

  // 150 machines sort in between: sections that reach 200 rows are split, the order holds.
  const between = Array.from({ length: 150 }, (_, index) => numbered(index * 2 + 1));
  for (const machine of between) await lifecycle.record(bootEvent(machine));
  await page.locator(`#machines tr[data-mac="${between.at(-1)}"]`).waitFor({ state: 'attached' });
  // The config's one machine is listed too; it sorts last.
  const expected = [...fleet, ...between, LISTED_MAC].sort();
  t.same(await visibleRows(page), expected, 'every row shown, in MAC order across the sections');
  const sizes = await page.$$eval('#machines tbody', (sections) =>
    sections.map((section) => section.rows.length),
  );
  t.ok(
    sizes.every((size) => size > 0 && size < 200),
    `no section empty or grown to 200 rows (${sizes.join(', ')})`,
  );

  // Every 7th machine boots; filtered, the table is exactly as tall as the rows it shows.
  const booting = expected.filter((_, index) => index % 7 === 0);
  for (const machine of booting) await lifecycle.record(tftpComplete(machine));
  await page
    .locator('#filters button[data-filter="booting"]', { hasText: `booting (${booting.length})` })
    .waitFor();
  await page.click('#filters button[data-filter="booting"]');
  t.same(await visibleRows(page), booting, 'the filter shows exactly the booting machines');
  const heights = await page.evaluate(`({
    body: [...document.querySelectorAll('#machines tbody')].reduce((sum, section) => sum + section.getBoundingClientRect().height, 0),
    row: document.querySelector('#machines tbody tr[data-state="booting"]').getBoundingClientRect().height,
  })`);
  const { body, row } = heights as { body: number; row: number };
  t.ok(
    Math.abs(body - booting.length * row) < 1,
    `no gaps: ${body} px for ${booting.length} rows of ${row} px`,
  );
  await page.evaluate('window.scrollTo(0, document.body.scrollHeight)');
  await page.locator(`#machines tr[data-mac="${booting.at(-1)}"]`).waitFor({ state: 'visible' });
  t.pass('the last filtered row is reachable at the bottom of the page');
  t.same(pageErrors, [], 'no script errors');
});

t.test('reconnects: no duplicate events, no state rolled back, a closed stream reopened', async (t) => {
  const { app, lifecycle, secrets } = await startLifecycleApp(t);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  await lifecycle.record(bootEvent(LISTED_MAC));
  const { page, pageErrors } = await openDashboard(t, url);
  const row = page.locator(`#machines tr[data-mac="${LISTED_MAC}"]`);
  await row.waitFor({ timeout: 10_000 });
  const timelineIds = () =>
    page.$$eval('#timeline li[data-id]', (items) => items.map((item) => item.getAttribute('data-id')));

  // The stream drops; an event happens; the operator opens the machine (its timeline includes the
  // event) before the stream resumes and replays the same event.
  const release = await dropEventStream(t, page, app);
  await lifecycle.record(tftpComplete(LISTED_MAC));
  await row.click();
  await page.locator('#timeline li[data-type="tftp-transfer"]').waitFor({ timeout: 10_000 });
  release();
  await page.locator('#connection[data-status="live"]').waitFor({ timeout: 10_000 });
  await lifecycle.record({
    mac: LISTED_MAC,
    source: 'http',
    type: 'ipxe-script',
    detail: { script: 'install' },
  });
  await page.locator('#timeline li[data-type="ipxe-script"]').waitFor({ timeout: 10_000 });
  let ids = await timelineIds();
  t.same(ids, [...new Set(ids)], 'every event once in the timeline after the replay');
  t.equal(await page.locator('#timeline li[data-type="tftp-transfer"]').count(), 1);

  // A view fetched before a live state change answers after it: the state stays.
  const { opened: answered, open: answer } = gate(t);
  const isMachineView = (url: URL | { url(): string }) =>
    pathOf(url instanceof URL ? url.href : url.url()) === `/api/v1/machines/${LISTED_MAC}`;
  await page.route(
    isMachineView,
    async (route) => {
      const response = await route.fetch();
      await answered;
      await route.fulfill({ response });
    },
    { times: 1 },
  );
  const fetched = page.waitForResponse(isMachineView);
  await row.click();
  t.equal((await reportInstalled(url, secrets)).status, 202);
  await row.locator('.state', { hasText: 'installed' }).waitFor({ timeout: 10_000 });
  answer();
  await fetched;
  await page.waitForTimeout(200);
  t.equal(
    await row.locator('.state').textContent(),
    'installed',
    'a late answer does not roll the state back',
  );
  t.equal(await page.locator('#detail-summary .state').textContent(), 'installed');

  // A proxy answers 502 while the server restarts: EventSource gives up; the page opens a new stream
  // after a back-off, from the last id it saw, and reads the fleet again.
  await page.route(isEventStream, (route) => route.fulfill({ status: 502, body: 'bad gateway' }), {
    times: 1,
  });
  const fleetReads: number[] = [];
  page.on('request', (request) => {
    if (pathOf(request.url()) === '/api/v1/machines') fleetReads.push(Date.now());
  });
  app.server.closeAllConnections();
  await page.locator('#connection[data-status="disconnected"]').waitFor({ timeout: 10_000 });
  t.match(await page.locator('#connection').textContent(), /disconnected, retrying in \d+ s/);
  await lifecycle.record({ mac: LISTED_MAC, source: 'operator', type: 'reprovision' });
  await page.locator('#connection[data-status="live"]').waitFor({ timeout: 10_000 });
  await page.locator('#timeline li[data-type="reprovision"]').waitFor({ timeout: 10_000 });
  await page.waitForTimeout(300);
  t.ok(fleetReads.length > 0, 'the fleet is read again after a new stream');
  ids = await timelineIds();
  t.same(ids, [...new Set(ids)], 'every event once after the new stream');
  t.same(pageErrors, [], 'no script errors');
});

/** The app over a store that keeps only `retention` events and prunes at every batch. */
async function startSmallHistoryApp(t: Test, retention: number) {
  const directory = mkdtempSync(join(tmpdir(), 'rackboot-dashboard-'));
  const configFile = join(directory, 'rackboot.yaml');
  writeFileSync(configFile, FIXTURE_YAML);
  const loaded = await loadConfigFile(configFile, { missingAssets: 'warn', env: {} });
  if (!loaded.ok) throw new Error(`fixture config: ${JSON.stringify(loaded.problems)}`);
  const config = () => loaded.config;
  const logger = pino({ level: 'silent' });
  const lifecycle = openLifecycle({
    stateDir: loaded.config.server.state,
    retention,
    snapshotIntervalMs: 0,
    logger,
  });
  const app = await buildApp({
    config,
    decision: createBootDecision(config, lifecycle.stateOf, lifecycle.bootsFromDisk),
    record: lifecycle.record,
    logger,
    secrets: createMachineSecrets(randomBytes(32)),
    lifecycle,
  });
  t.teardown(async () => {
    await app.close();
    await lifecycle.close();
    rmSync(directory, { recursive: true, force: true });
  });
  return { app, lifecycle };
}

/** Whether the server announces a resume from pruned history (`event: history-gap`). */
async function serverSendsHistoryGap(url: string, lastEventId: number): Promise<boolean> {
  const aborter = new AbortController();
  const timer = setTimeout(() => aborter.abort(), 2000);
  try {
    const response = await fetch(`${url}/api/v1/events`, {
      headers: { accept: 'text/event-stream', 'last-event-id': String(lastEventId) },
      signal: aborter.signal,
    });
    const decoder = new TextDecoder();
    let text = '';
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      text += decoder.decode(chunk, { stream: true });
      if (/^event: history-gap$/m.test(text)) return true;
      if (/^id: /m.test(text)) return false;
    }
    return false;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
    aborter.abort();
  }
}

t.test('a resume after pruned history reads the fleet again', async (t) => {
  const retention = 20;
  const { app, lifecycle } = await startSmallHistoryApp(t, retention);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  await lifecycle.record(bootEvent(LISTED_MAC));
  const { page, pageErrors } = await openDashboard(t, url);
  const row = page.locator(`#machines tr[data-mac="${LISTED_MAC}"]`);
  await row.locator('.state', { hasText: 'discovered' }).waitFor({ timeout: 10_000 });
  await row.click();
  await page.locator('#timeline li[data-type="state-changed"]').waitFor({ timeout: 10_000 });
  const seen = lifecycle.lastEventId();

  // The page's stream drops and stays down while the machine boots and retention drops the events.
  const release = await dropEventStream(t, page, app);
  await lifecycle.record(tftpComplete(LISTED_MAC));
  const booted = lifecycle.lastEventId();
  for (let index = 0; index < retention * 3; index += 1) {
    // A plain DHCP client: history only.
    await lifecycle.record({ mac: mac('a4:5e:60:00:00:01'), source: 'dhcp', type: 'dhcp-ack' });
  }
  for (let tries = 0; (lifecycle.storedEventsAfter(0, { limit: 1 })[0]?.id ?? 0) <= booted + 1; tries += 1) {
    if (tries > 100) throw new Error('the store did not prune');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  t.ok(await serverSendsHistoryGap(url, seen), 'the server announces the gap (event: history-gap)');
  const reads: string[] = [];
  page.on('request', (request) => reads.push(pathOf(request.url())));
  release();
  await row.locator('.state', { hasText: 'booting' }).waitFor({ timeout: 10_000 });
  t.pass('the state the pruned events carried is read from the server');
  t.ok(reads.includes('/api/v1/machines'), 'the fleet was read again');
  t.ok(reads.includes(`/api/v1/machines/${LISTED_MAC}`), "the open machine's timeline was read again");
  t.same(pageErrors, [], 'no script errors');
});

t.test('an edit of the config file reaches an open page without a reload', async (t) => {
  const { app, configFile } = await startLifecycleApp(t);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  const { page, pageErrors } = await openDashboard(t, url);
  const row = page.locator(`#machines tr[data-mac="${LISTED_MAC}"]`);
  await row.locator('td', { hasText: 'node1' }).first().waitFor();
  const added = mac('52:54:00:12:34:99');
  const reads: string[] = [];
  page.on('request', (request) => reads.push(pathOf(request.url())));

  writeFileSync(
    configFile,
    FIXTURE_YAML.replace('hostname: node1', 'hostname: rack7-node1').concat(
      `  - { mac: ${added}, hostname: rack7-node2, profile: spare }\n`,
    ),
  );
  await row.locator('td', { hasText: 'rack7-node1' }).first().waitFor({ timeout: 10_000 });
  await page
    .locator(`#machines tr[data-mac="${added}"] td`, { hasText: 'rack7-node2' })
    .first()
    .waitFor({ timeout: 10_000 });
  t.pass('a renamed machine and an added one are shown');
  t.ok(reads.includes('/api/v1/machines'), 'the page read the fleet again');

  writeFileSync(configFile, FIXTURE_YAML);
  await page.locator(`#machines tr[data-mac="${added}"]`).waitFor({ state: 'detached', timeout: 10_000 });
  await row
    .locator('td', { hasText: /^node1$/ })
    .first()
    .waitFor({ timeout: 10_000 });
  t.pass('a machine removed from the file (never booted, so no history) leaves the page');
  t.same(pageErrors, [], 'no script errors');
});

t.test('the adopt form suggests the profiles of the config as it is now, used or not', async (t) => {
  // Before: only the profiles of listed machines were suggested, so never one written for a new rack;
  // and at first the suggestions only grew, a profile renamed in the file staying one until a reload.
  const { app, lifecycle, configFile } = await startLifecycleApp(t);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  await lifecycle.record(bootEvent(UNLISTED_MAC));
  const { page, pageErrors } = await openDashboard(t, url);
  const suggested = () =>
    page.$$eval('#profiles option', (options) => options.map((option) => [option.value, option.label]));
  /** The suggestions once they are `expected` (they follow the fleet's read), else as they are after 10 s. */
  const suggestedAs = async (expected: string[][]) => {
    await waitUntil(async () => JSON.stringify(await suggested()) === JSON.stringify(expected), 10_000);
    return suggested();
  };
  await page.locator(`#discovered tr[data-mac="${UNLISTED_MAC}"]`).waitFor();
  const first = [
    ['spare', 'linux, 0 machines'],
    ['worker', 'linux, 1 machine'],
  ];
  t.same(await suggestedAs(first), first, 'spare, which no machine uses, is suggested beside worker');

  // worker renamed, spare removed, storage added for machines to come.
  writeFileSync(
    configFile,
    FIXTURE_YAML.replace('  worker:\n', '  compute:\n')
      .replace('profile: worker', 'profile: compute')
      .replace('  spare: {', '  storage: {'),
  );
  const edited = [
    ['compute', 'linux, 1 machine'],
    ['storage', 'linux, 0 machines'],
  ];
  t.same(
    await suggestedAs(edited),
    edited,
    'the renamed profile replaces the old name, the removed one goes, the added one comes',
  );
  t.equal(
    await page
      .locator(`#discovered tr[data-mac="${UNLISTED_MAC}"] input[placeholder="profile"]`)
      .getAttribute('list'),
    'profiles',
    'the discovered machine’s form takes them',
  );
  t.same(pageErrors, [], 'no script errors');
});

t.test('a stream that was down reads the fleet again: a config edit it missed is shown', async (t) => {
  const { app, configFile, config } = await startLifecycleApp(t);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  const { page, pageErrors } = await openDashboard(t, url);
  const row = page.locator(`#machines tr[data-mac="${LISTED_MAC}"]`);
  await row.locator('td', { hasText: 'node1' }).first().waitFor();
  const added = mac('52:54:00:12:34:98');

  // As while the server restarts on an edited file: the edit is applied while no stream is open, so
  // its config-changed reaches no page, and EventSource's own reconnect replays only machine events.
  const release = await dropEventStream(t, page, app);
  writeFileSync(
    configFile,
    FIXTURE_YAML.replace('hostname: node1', 'hostname: rack7-node1').concat(
      `  - { mac: ${added}, hostname: rack7-node3, profile: spare }\n`,
    ),
  );
  t.ok(
    await waitUntil(() => config().machines.some((machine) => machine.hostname === 'rack7-node1'), 5000),
    'the server applied the edit while the stream was down',
  );
  release();
  await page.locator('#connection[data-status="live"]').waitFor({ timeout: 10_000 });
  await row.locator('td', { hasText: 'rack7-node1' }).first().waitFor({ timeout: 10_000 });
  await page
    .locator(`#machines tr[data-mac="${added}"] td`, { hasText: 'rack7-node3' })
    .first()
    .waitFor({ timeout: 10_000 });
  t.pass('the renamed and the added machine are shown without a reload');
  t.same(pageErrors, [], 'no script errors');
});

t.test('a page opened while the server cannot answer keeps trying and then follows the fleet', async (t) => {
  const { app, lifecycle } = await startLifecycleApp(t);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  await lifecycle.record(bootEvent(LISTED_MAC));
  const page = await (await sharedBrowser()).newPage();
  t.teardown(() => page.close());
  const pageErrors: string[] = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));
  // A proxy's 502 while the server restarts, for the first read of the fleet.
  await page.route(
    (requested) => requested.pathname === '/api/v1/machines',
    (route) => route.fulfill({ status: 502, body: 'bad gateway' }),
    { times: 1 },
  );
  await page.goto(url);
  await page.locator('#connection[data-status="disconnected"]').waitFor({ timeout: 10_000 });
  await page.locator(`#machines tr[data-mac="${LISTED_MAC}"]`).waitFor({ timeout: 15_000 });
  await page.locator('#connection[data-status="live"]').waitFor({ timeout: 10_000 });
  t.same(pageErrors, [], 'no script errors');
});

t.test(
  'keyboard, narrow screens and the panel: every column fits, hardware and reprovision live',
  async (t) => {
    const { app, lifecycle, secrets } = await startLifecycleApp(t);
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    const { page, pageErrors } = await openDashboard(t, url);
    await page.setViewportSize({ width: 1400, height: 800 });
    const row = page.locator(`#machines tr[data-mac="${LISTED_MAC}"]`);
    await row.waitFor();

    // A listed machine that first boots while the page is open: its hardware comes from the server.
    await lifecycle.record(bootEvent(LISTED_MAC));
    await row.locator('td.hardware', { hasText: 'QEMU · x86_64 · bios-pxe' }).waitFor({ timeout: 10_000 });
    t.pass('the hardware of a machine seen while the page was open is shown');

    await row.focus();
    await page.keyboard.press('Enter');
    await page.locator('#detail:not([hidden])').waitFor();
    t.pass('Enter on a focused row opens its panel');
    const fleet = await page.locator('.fleet').boundingBox();
    const state = await row.locator('.state').boundingBox();
    const age = await row.locator('td.age').boundingBox();
    t.ok(
      fleet && state && age && age.x + age.width <= fleet.x + fleet.width + 1,
      `beside the panel, the row's last column ends inside the fleet (${JSON.stringify({ fleet, age })})`,
    );

    // The installer wrote the disk and never reported: the machine boots its disk, so it can be reprovisioned.
    const token = secrets.tokenFor(LISTED_MAC, 'events', Date.now());
    for (const type of ['ignition-fetch', 'disk-written']) {
      if (type === 'ignition-fetch') {
        await lifecycle.record({
          mac: LISTED_MAC,
          source: 'http',
          type: 'ipxe-script',
          detail: { script: 'install' },
        });
        await lifecycle.record({ mac: LISTED_MAC, source: 'http', type });
      } else {
        const posted = await fetch(`${url}/api/v1/machines/${LISTED_MAC}/events?token=${token}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ type }),
        });
        t.equal(posted.status, 202);
      }
    }
    await page.locator('#reprovision:not([hidden])').waitFor({ timeout: 10_000 });
    t.equal(
      await row.locator('.state').textContent(),
      'installing',
      'still installing, and yet reprovisionable',
    );

    await page.keyboard.press('Escape');
    await page.locator('#detail').waitFor({ state: 'hidden' });
    t.equal(
      await page.locator(':focus').getAttribute('data-mac'),
      LISTED_MAC,
      'Escape closes the panel and gives the focus back to the row',
    );

    await page.setViewportSize({ width: 375, height: 700 });
    await row.click();
    await page.locator('#detail:not([hidden])').waitFor();
    const narrowFleet = await page.locator('.fleet').boundingBox();
    t.ok(
      narrowFleet && narrowFleet.width > 300,
      `at 375 px the fleet keeps its width (${narrowFleet?.width})`,
    );
    t.same(pageErrors, []);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-375px-panel.png') });
  },
);

t.test(
  'Reprovision asks first; no other site may frame the page; the page breaks none of its own rules',
  async (t) => {
    const { app, lifecycle, secrets } = await startLifecycleApp(t);
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    for (const event of [bootEvent(LISTED_MAC), tftpComplete(LISTED_MAC)]) await lifecycle.record(event);
    t.equal((await reportInstalled(url, secrets)).status, 202);
    const page = await (await sharedBrowser()).newPage();
    t.teardown(() => page.close());
    const violations: string[] = [];
    page.on('console', (message) => {
      if (/Content Security Policy|Refused to/.test(message.text())) violations.push(message.text());
    });
    await page.goto(url);
    await page.locator('#connection[data-status="live"]').waitFor({ timeout: 10_000 });
    const row = page.locator(`#machines tr[data-mac="${LISTED_MAC}"]`);
    await row.locator('.state', { hasText: 'installed' }).waitFor({ timeout: 10_000 });
    await page.locator('#token').fill(API_TOKEN);
    await page.locator('#token').dispatchEvent('change');
    await row.click();
    await page.locator('#reprovision:not([hidden])').waitFor({ timeout: 10_000 });

    const asked: string[] = [];
    page.once('dialog', (dialog) => {
      asked.push(dialog.message());
      void dialog.dismiss();
    });
    await page.locator('#reprovision').click();
    await waitUntil(async () => asked.length > 0, 5000);
    t.match(asked[0], `Reinstall node1 (${LISTED_MAC}) at its next network boot?`, 'the machine is named');
    await page.waitForTimeout(300);
    t.equal(lifecycle.stateOf(LISTED_MAC), 'installed', 'cancelled: nothing sent');

    page.once('dialog', (dialog) => void dialog.accept());
    await page.locator('#reprovision').click();
    await waitUntil(async () => lifecycle.stateOf(LISTED_MAC) === 'discovered', 5000);
    t.equal(lifecycle.stateOf(LISTED_MAC), 'discovered', 'confirmed: reprovisioned');
    await page.locator('#detail-message', { hasText: 'installs again' }).waitFor({ timeout: 5000 });

    // Not in the config, and unknown_machines is ignore (the fixture's default): told as the CLI tells it.
    await lifecycle.record(bootEvent(UNLISTED_MAC));
    await lifecycle.record({ mac: UNLISTED_MAC, source: 'machine', type: 'failed' });
    const unlisted = page.locator(`#machines tr[data-mac="${UNLISTED_MAC}"]`);
    await unlisted.locator('.state', { hasText: 'failed' }).waitFor({ timeout: 10_000 });
    await unlisted.click();
    await page.locator('#reprovision:not([hidden])').waitFor({ timeout: 10_000 });
    page.once('dialog', (dialog) => void dialog.accept());
    await page.locator('#reprovision').click();
    await waitUntil(async () => lifecycle.stateOf(UNLISTED_MAC) === 'discovered', 5000);
    await waitUntil(async () => Boolean(await page.locator('#detail-message').textContent()), 5000);
    t.equal(
      await page.locator('#detail-message').textContent(),
      'not in the config and unknown_machines is ignore: its next network boot gets no answer until it is adopted',
      'the page does not promise an install the next boot will not get',
    );

    const dashboard = await fetch(`${url}/`);
    // Read whole, or its connection stays busy and the server's close waits for its idle timeout.
    await dashboard.arrayBuffer();
    const headers = dashboard.headers;
    t.equal(headers.get('x-frame-options'), 'DENY');
    t.match(headers.get('content-security-policy'), /frame-ancestors 'none'/);
    t.equal(headers.get('x-content-type-options'), 'nosniff');
    // A page of another origin framing the dashboard gets nothing drawn.
    const framing = await (await sharedBrowser()).newPage();
    t.teardown(() => framing.close());
    const blocked: string[] = [];
    framing.on('console', (message) => blocked.push(message.text()));
    await framing.setContent(`<iframe src="${url}/" width="800" height="600"></iframe>`, {
      waitUntil: 'commit',
    });
    await waitUntil(
      async () =>
        blocked.some((text) => /frame-ancestors|X-Frame-Options|Refused to (display|frame)/.test(text)),
      5000,
    );
    t.ok(
      blocked.some((text) => /frame-ancestors|X-Frame-Options|Refused to (display|frame)/.test(text)),
      `chromium refuses to frame it: ${blocked.join(' | ')}`,
    );
    t.same(violations, [], 'the dashboard itself loads and runs under its policy');
    // Chromium keeps the refused frame's connection open, unread: the server's close would wait for
    // its idle timeout.
    app.server.closeAllConnections();
  },
);

/**
 * The dashboard once UNLISTED_MAC was discovered (a UEFI PXE boot it was not answered), with the
 * operator token entered; its row among the discovered machines.
 */
async function openWithDiscovered(t: Test, url: string, lifecycle: LifecycleFixture['lifecycle']) {
  await lifecycle.record({
    mac: UNLISTED_MAC,
    source: 'dhcp',
    type: 'dhcp-ignored',
    detail: { firmware: 'uefi-pxe', arch: 'x86_64' },
  });
  const { page, pageErrors } = await openDashboard(t, url);
  await page.fill('#token', API_TOKEN);
  await page.locator('#token').dispatchEvent('change');
  return { page, pageErrors, discovered: page.locator(`#discovered tr[data-mac="${UNLISTED_MAC}"]`) };
}

t.test('an adopt refused with several problems shows each of them, in view', async (t) => {
  const template = join(t.testdir(), 'worker.bu');
  writeFileSync(
    template,
    'variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/role\n      contents:\n        inline: "{{vars.role}}"\n    - path: /etc/zone\n      contents:\n        inline: "{{vars.zone}}"\n',
  );
  const { app, lifecycle } = await startLifecycleApp(
    t,
    FIXTURE_YAML.replace(
      'spare: { kind: linux, kernel: vmlinuz }',
      `spare: { kind: linux, kernel: vmlinuz, ignition: ${template} }`,
    ),
  );
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  const { page, pageErrors, discovered } = await openWithDiscovered(t, url, lifecycle);
  await discovered.locator('input[placeholder="profile"]').fill('spare');
  // Enter in a field adopts, as a form's would.
  await discovered.locator('input[placeholder="profile"]').press('Enter');
  const message = discovered.locator('.message[data-outcome="error"]');
  await message.filter({ hasText: 'vars.zone' }).waitFor({ timeout: 10_000 });
  // biome-ignore lint/performance/useDomNodeTextContent: Playwright's innerText keeps the line breaks between problems
  const lines = (await message.innerText()).split('\n');
  t.match(lines, [
    /^nothing written: .* with this machine:$/,
    /\{\{vars\.role\}\} is not set/,
    /\{\{vars\.zone\}\} is not set/,
  ]);
  const shown = await message.evaluate((node) => {
    const box = node.getBoundingClientRect();
    const fleet = node.closest('.fleet')?.getBoundingClientRect();
    return { left: box.left, right: box.right, fleetLeft: fleet?.left ?? 0, fleetRight: fleet?.right ?? 0 };
  });
  t.ok(
    shown.left >= shown.fleetLeft && shown.right <= shown.fleetRight,
    `the refusal is inside the fleet's view, not past its right edge: ${JSON.stringify(shown)}`,
  );
  await page.screenshot({ path: join(ARTIFACTS, 'dashboard-adopt-refused.png') });
  t.same(pageErrors, []);
});

t.test('an adopt the server warns of shows its warnings in the adopted machine’s panel', async (t) => {
  // Before: the 201's warnings were dropped; the row said "added to the config" and left the table.
  const { app, lifecycle } = await startLifecycleApp(t);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  const { page, pageErrors, discovered } = await openWithDiscovered(t, url, lifecycle);
  await discovered.locator('input[placeholder="profile"]').fill('spare');
  // The listed machine is node1 already: written all the same, with the loader's warning.
  await discovered.locator('input[placeholder="hostname"]').fill('node1');
  await discovered.locator('button', { hasText: 'Adopt' }).click();
  const message = page.locator('#detail-message[data-outcome="warning"]');
  await message.waitFor({ timeout: 10_000 });
  // biome-ignore lint/performance/useDomNodeTextContent: Playwright's innerText keeps the line breaks between warnings
  const lines = (await message.innerText()).split('\n');
  t.match(lines, [
    'added to the config, with a warning:',
    /rackboot\.yaml:\d+:\d+: duplicate hostname node1/,
  ]);
  t.equal(lines.length, 2);
  t.match(await page.locator('#detail-title').textContent(), UNLISTED_MAC, 'in the adopted machine’s panel');
  await discovered.waitFor({ state: 'detached', timeout: 10_000 });
  t.equal(await message.isVisible(), true, 'still shown once the machine left the discovered table');
  await page.screenshot({ path: join(ARTIFACTS, 'dashboard-adopt-warned.png') });
  t.same(pageErrors, []);
});

/**
 * Ages move on every 5 s with no event. The tick re-rendered every discovered machine (both its rows),
 * which froze a page of 5,000 of them for about half a second every 5 s; now it sets the age cells'
 * text and reads or writes no other node's (counted through textContent, which every cell update
 * in the page goes through).
 */
t.test('the 5 s tick moves ages on and touches no other cell', async (t) => {
  const { app, lifecycle } = await startLifecycleApp(t);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  for (let index = 0; index < 20; index += 1)
    await lifecycle.record({
      mac: mac(`ac:1f:6b:02:00:${index.toString(16).padStart(2, '0')}`),
      source: 'dhcp',
      type: 'dhcp-ignored',
      detail: { firmware: 'uefi-pxe', arch: 'x86_64' },
    });
  const { page, pageErrors } = await openDashboard(t, url);
  await page.locator('#discovered tbody tr').nth(19).waitFor();
  t.match(
    await page.locator('#discovered tbody tr td:nth-child(3)').first().textContent(),
    /^\d+s ago$/,
    'a discovered machine shows when it was first seen',
  );
  // Page code as text: this file is compiled without the DOM's types.
  await page.evaluate(`{
    const original = Object.getOwnPropertyDescriptor(Node.prototype, 'textContent');
    const touched = (window.touched = { ages: 0, others: [] });
    const count = (node) => {
      if (node instanceof Element && node.matches('td.age')) touched.ages += 1;
      else if (touched.others.length < 20) touched.others.push(node.nodeName + ' ' + (node.className ?? ''));
    };
    Object.defineProperty(Node.prototype, 'textContent', {
      configurable: true,
      get() {
        count(this);
        return original.get.call(this);
      },
      set(text) {
        count(this);
        original.set.call(this, text);
      },
    });
  }`);
  // The next tick, then two frames: a render it queued has run by then.
  await page.waitForFunction(
    () => (globalThis as unknown as { touched: { ages: number } }).touched.ages > 0,
    undefined,
    { timeout: 10_000 },
  );
  await page.evaluate(
    'new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)))',
  );
  const touched = (await page.evaluate('window.touched')) as { ages: number; others: string[] };
  t.ok(touched.ages >= 40, `the tick updated the age cells of both tables (${touched.ages})`);
  t.same(touched.others, [], 'the tick touched no other node');
  t.same(pageErrors, []);
});

/**
 * Each discovered row held a <form>, and Chromium's cost of adding one grows with the forms already
 * in the page: 5,000 machines not in the config froze the page for 20–35 s before they appeared.
 * Without forms it still took 7–10 s: as a table, every row and its adopt fields were styled and laid
 * out before the first paint. In sections skipped while out of view, as the fleet's, they are drawn
 * 1.3–2.9 s after the page is opened (measured by hand on a busy 2-core machine; a speed target belongs
 * in a benchmark, not here). So this checks what the speed came from, no form per row and no row drawn
 * out of view, that the table is as tall as its rows all the same, and that every row appears (Enter
 * adopts: the test above).
 */
t.test('thousands of machines not in the config: all listed, no form, none drawn out of view', async (t) => {
  const { app, lifecycle } = await startLifecycleApp(t);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  const count = 5000;
  const recorded: Promise<unknown>[] = [];
  for (let index = 0; index < count; index += 1) {
    const hex = (byte: number) => byte.toString(16).padStart(2, '0');
    recorded.push(
      lifecycle.record({
        mac: mac(`ac:1f:6b:01:${hex(index >> 8)}:${hex(index & 255)}`),
        source: 'dhcp',
        type: 'dhcp-ignored',
        detail: { firmware: 'uefi-pxe', arch: 'x86_64' },
      }),
    );
  }
  await Promise.all(recorded);
  const page = await (await sharedBrowser()).newPage();
  t.teardown(() => page.close());
  await page.goto(url);
  // A bound on a hang only, far above the 20–35 s the forms took: CI runs this beside QEMU. Not
  // waitForFunction with page code as text: Playwright evaluates that text again at each poll, and the
  // page's policy refuses eval once a first poll has found the rows still missing.
  await page
    .locator('#discovered tbody tr')
    .nth(count - 1)
    .waitFor({ state: 'attached', timeout: 120_000 });
  t.equal(
    await page.locator('#discovered tbody tr').count(),
    count,
    `all ${count} discovered machines listed`,
  );
  t.equal(await page.locator('#discovered form').count(), 0, 'no row holds a form');
  // Page code as text: this file is compiled without the DOM's types.
  const drawn = (await page.evaluate(`(() => {
    const sections = [...document.querySelectorAll('#discovered tbody')];
    const last = sections.at(-1).rows[sections.at(-1).rows.length - 1];
    return {
      sizes: sections.map((section) => section.rows.length),
      lastDrawn: last.checkVisibility({ contentVisibilityAuto: true }),
      height: sections.reduce((sum, section) => sum + section.getBoundingClientRect().height, 0),
      row: last.getBoundingClientRect().height,
    };
  })()`)) as { sizes: number[]; lastDrawn: boolean; height: number; row: number };
  t.ok(
    drawn.sizes.every((size) => size === 100),
    `in sections of 100 rows (${drawn.sizes.length} sections)`,
  );
  t.notOk(drawn.lastDrawn, 'a row out of view is not drawn');
  t.ok(
    Math.abs(drawn.height - count * drawn.row) < 1,
    `as tall as its rows before they are drawn: ${drawn.height} px for ${count} rows of ${drawn.row} px`,
  );
  const last = page.locator('#discovered tbody tr').last();
  await last.scrollIntoViewIfNeeded();
  await last.locator('input[placeholder="profile"]').waitFor({ state: 'visible' });
  t.pass('the last row is drawn once scrolled to, with its adopt fields');
});
