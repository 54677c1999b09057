import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import t from 'tap';
import type { Mac } from '../src/inventory/mac.js';
import { requireTools } from './helpers/netns.js';
import { API_TOKEN, LISTED_MAC, startLifecycleApp, UNLISTED_MAC } from './lifecycle-fixture.js';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = fileURLToPath(new URL('../test-artifacts/', import.meta.url));

t.test('the dashboard lists machines, follows their state live and shows the timeline', async (t) => {
  await requireTools(CHROMIUM);
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
    {
      mac: LISTED_MAC,
      source: 'tftp',
      type: 'tftp-transfer',
      detail: { file: 'undionly.kpxe', outcome: 'complete', bytes: 70_000 },
    },
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

  const profile = mkdtempSync(join(tmpdir(), 'rackboot-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1400, height: 800 },
  });
  t.teardown(async () => {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
  });
  const page = await browser.newPage();
  const pageErrors: string[] = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));
  await page.goto(url);

  const row = page.locator(`#machines tr[data-mac="${LISTED_MAC}"]`);
  await row.locator('.state', { hasText: 'installing' }).waitFor({ timeout: 10_000 });
  t.match(
    (await row.locator('td').allTextContents()).join(' '),
    /node1\s+worker\s+installing\s+10\.77\.0\.100\s+QEMU · x86_64 · bios-pxe\s+ignition-fetch/,
  );
  await page.locator('#connection[data-status="live"]').waitFor({ timeout: 10_000 });

  await row.click();
  await page.locator('#timeline li[data-type="ignition-fetch"]').waitFor({ timeout: 10_000 });

  // The machine reports back through its own endpoint: the page must change without a reload.
  const token = secrets.tokenFor(LISTED_MAC, Date.now());
  const posted = await fetch(`${url}/api/v1/machines/${LISTED_MAC}/events?token=${token}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'installed' }),
  });
  t.equal(posted.status, 202);
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

  // The discovered machine, adopted from the page.
  const discovered = page.locator(`#discovered tr[data-mac="${UNLISTED_MAC}"]`);
  t.match(await discovered.locator('td').allTextContents(), [UNLISTED_MAC, 'Supermicro · x86_64 · uefi-pxe']);
  await page.fill('#token', API_TOKEN);
  await page.locator('#token').dispatchEvent('change');
  await discovered.locator('input[placeholder="profile"]').fill('spare');
  await discovered.locator('input[placeholder="hostname"]').fill('node7');
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
  await discovered.locator('button[type="submit"]').click();
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
  await newRow.locator('td', { hasText: 'VMware · x86_64 · ipxe' }).waitFor({ timeout: 10_000 });
  t.match(await newRow.locator('td').allTextContents(), [
    newcomer,
    '',
    '',
    'discovered',
    '',
    'VMware · x86_64 · ipxe',
    'dhcp-ignored',
  ]);

  await page.click('#filters button[data-filter="installed"]');
  t.equal(await page.locator('#machines tbody tr').count(), 1, 'filter by state');

  mkdirSync(ARTIFACTS, { recursive: true });
  await page.click('#filters button[data-filter="all"]');
  await row.click();
  await page.locator('#timeline li[data-type="installed"]').waitFor({ timeout: 10_000 });
  await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true });
  t.same(pageErrors, [], 'no script errors');
});
