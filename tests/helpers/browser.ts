import { chromium } from 'playwright-core';
import type { Browser } from 'playwright-core';
import { CHROMIUM } from './global-setup.js';

/** A real headless Chromium (the machine's, found by the global setup), as every browser test drives it. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    timeout: 30_000,
  });
}
