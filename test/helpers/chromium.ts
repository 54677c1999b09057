import { type BrowserContext, chromium } from 'playwright-core';

/** Debian's chromium (package chromium), driven by playwright-core: the dashboard test and bench. */
export const CHROMIUM = '/usr/bin/chromium';

/** Headless chromium with its profile in `profileDirectory`, quiet on the network, a desktop-sized window. */
export function launchChromium(profileDirectory: string): Promise<BrowserContext> {
  return chromium.launchPersistentContext(profileDirectory, {
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
}
