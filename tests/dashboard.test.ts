import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import type { Browser } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import { VendorClient } from '../vendor/vendor-client.js';
import { CHROMIUM } from './helpers/global-setup.js';
import { Cleanup, RawClient, order, startSecureHub, tokenFor } from './helpers/hub.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());
const OUTPUT = fileURLToPath(new URL('../test-results/', import.meta.url));

async function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    timeout: 30_000,
  });
}

describe('the dashboard in a real browser', () => {
  it('shows a parcel appear and move to delivered without a reload, and opens its timeline', async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const browser = cleanup.add(await launch(), (b) => b.close());
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    // every action and wait is bounded (playwright's clicks and reads wait forever by default)
    page.setDefaultTimeout(15_000);
    const problems: string[] = [];
    page.on('pageerror', (err) => problems.push(err.message));
    await page.goto(`${url}/#token=${tokenFor({ role: 'dashboard' })}`);
    await page.getByRole('status').getByText('live').waitFor({ timeout: 10_000 });
    const loadedAt = await page.evaluate(() => (globalThis as unknown as { capsBoard: { loadedAt: number } }).capsBoard.loadedAt);

    const vendor = cleanup.add(new VendorClient({ url, store: 'acme-widgets', token: tokenFor({ role: 'vendor', store: 'acme-widgets' }), log: () => undefined }), (v) => v.close());
    const driver = cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'driver', name: 'd1' }) } }), (c) => c.close());
    await Promise.all([vendor.start(), driver.connected()]);
    const parcel = { ...order('acme-widgets', 1), orderId: '7f3c2a10-0000-4000-8000-000000000001' };
    const card = (state: string) => page.locator(`.column[data-state="${state}"] .card[data-order-id="${parcel.orderId}"]`);

    await vendor.publish(parcel);
    await card('pickup').waitFor({ timeout: 10_000 });
    await driver.request('in-transit', parcel);
    await card('in-transit').waitFor({ timeout: 10_000 });
    await driver.request('delivered', parcel);
    await card('delivered').waitFor({ timeout: 10_000 });
    expect(await card('pickup').count()).toBe(0);
    expect(await card('in-transit').count()).toBe(0);
    expect(await page.evaluate(() => (globalThis as unknown as { capsBoard: { loadedAt: number } }).capsBoard.loadedAt)).toBe(loadedAt);

    // the driver list and queue table come from the live stats
    await page.locator('#drivers li', { hasText: 'd1' }).waitFor({ timeout: 10_000 });

    await card('delivered').click();
    const dialog = page.getByRole('dialog');
    await dialog.locator('li[data-event="delivered"]').waitFor({ timeout: 10_000 });
    expect(await dialog.locator('li').evaluateAll((items) => items.map((li) => (li as unknown as { dataset: Record<string, string> }).dataset['event']))).toEqual(['pickup', 'in-transit', 'delivered']);
    await expect(dialog.textContent()).resolves.toContain(parcel.customer);

    mkdirSync(OUTPUT, { recursive: true });
    await page.screenshot({ path: `${OUTPUT}dashboard.png`, fullPage: true });
    await dialog.getByRole('button', { name: 'Close the timeline' }).click();
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: `${OUTPUT}dashboard-phone.png`, fullPage: true });
    expect(problems).toEqual([]);
    // a browser start and a dozen page steps: on 2 busy cores this outgrows the default 30 s
  }, 90_000);

  it('tells a visitor without a token how to get in', async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const browser = cleanup.add(await launch(), (b) => b.close());
    const page = await browser.newPage();
    page.setDefaultTimeout(15_000);
    await page.goto(url);
    await page.getByRole('status').getByText(/CAPS_ERR_UNAUTHORIZED: open this page with #token=/).waitFor({ timeout: 10_000 });
  }, 60_000);
});
