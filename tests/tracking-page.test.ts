import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import type { Browser, Page } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import { CHROMIUM } from './helpers/global-setup.js';
import { Cleanup, RawClient, order, startSecureHub, tokenFor } from './helpers/hub.js';
import { poll } from './helpers/wait.js';

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

/** A phone-sized page that records script errors and console errors (a CSP refusal is one). */
async function phonePage(browser: Browser): Promise<{ page: Page; problems: string[] }> {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
  // every action and wait is bounded (playwright's waits are endless by default)
  page.setDefaultTimeout(15_000);
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(err.message));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(msg.text());
  });
  return { page, problems };
}

/** A store's vendor and one driver, with tokens; the driver answers its pickups' acks. */
async function actors(url: string, store: string): Promise<{ vendor: RawClient; driver: RawClient }> {
  const vendor = cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'vendor', store }) } }), (c) => c.close());
  const driver = cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'driver', name: 'd1' }) } }), (c) => c.close());
  await Promise.all([vendor.connected(), driver.connected()]);
  return { vendor, driver };
}

/** Sends the driver's position; one a second is kept, so asks again (bounded) until it is. */
async function locate(driver: RawClient, lat: number, lng: number, what: string): Promise<void> {
  await poll(async () => ((await driver.request<{ ok: boolean }>('location', { lat, lng })).ok ? true : undefined), what, 5_000, 100);
}

const headline = (page: Page) => page.locator('#headline');
const loadedAt = (page: Page) => page.evaluate(() => (globalThis as unknown as { capsTrack: { loadedAt: number } }).capsTrack.loadedAt);

describe('the tracking page in a real browser', () => {
  it("follows its parcel from pickup to in transit (with the driver's position) to delivered, without a reload", async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const { vendor, driver } = await actors(url, 'acme');
    const parcel = order('acme', 1);
    await expect(vendor.request('pickup', parcel)).resolves.toMatchObject({ ok: true });
    await driver.waitFor('pickup', 1, 'the driver to be handed the parcel');

    const browser = cleanup.add(await launch(), (b) => b.close());
    const { page, problems } = await phonePage(browser);
    const response = await page.goto(`${url}/track/${tokenFor({ role: 'tracker', store: 'acme', orderId: parcel.orderId })}`);
    expect(response?.status()).toBe(200);
    await page.locator('#live', { hasText: 'Live:' }).waitFor({ timeout: 10_000 });
    expect(await headline(page).textContent()).toBe('Waiting for a driver');
    await expect(page.locator('#order').textContent()).resolves.toBe(parcel.orderId);
    const first = await loadedAt(page);

    await expect(driver.request('in-transit', parcel)).resolves.toMatchObject({ ok: true });
    await headline(page).getByText('On its way').waitFor({ timeout: 10_000 });
    await locate(driver, 48.8566, 2.3522, "the driver's position to be kept");
    await page.locator('#position', { hasText: '48.8566°N, 2.3522°E' }).waitFor({ timeout: 10_000 });

    await expect(driver.request('delivered', parcel)).resolves.toMatchObject({ ok: true });
    await headline(page).getByText(/^Delivered at \d/).waitFor({ timeout: 10_000 });
    await page.locator('#position').waitFor({ state: 'hidden', timeout: 10_000 });
    expect(await page.locator('#steps li').evaluateAll((items) => items.map((li) => (li as unknown as { dataset: Record<string, string> }).dataset['event']))).toEqual(['pickup', 'in-transit', 'delivered']);
    expect(await loadedAt(page)).toBe(first);
    // its own customer's name and address are not on the page either: a link can be forwarded
    const html = await page.content();
    expect(html).not.toContain(parcel.customer);
    expect(html).not.toContain(parcel.address);

    mkdirSync(OUTPUT, { recursive: true });
    await page.screenshot({ path: `${OUTPUT}tracking-phone.png`, fullPage: true });
    expect(problems).toEqual([]);
    // a browser start and a dozen page steps: on 2 busy cores this outgrows the default 30 s
  }, 90_000);

  it('shows and hears nothing of another parcel of the same store, even as that parcel moves', async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const { vendor, driver } = await actors(url, 'acme');
    const mine = order('acme', 1);
    const other = { store: 'acme', orderId: 'acme-canary-7731', customer: 'Mallory Canary', address: '77 Canary Wharf' };
    await expect(vendor.request('pickup', mine)).resolves.toMatchObject({ ok: true });
    await driver.waitFor('pickup', 1, "the driver to be handed this page's parcel");

    const token = tokenFor({ role: 'tracker', store: 'acme', orderId: mine.orderId });
    const browser = cleanup.add(await launch(), (b) => b.close());
    const { page, problems } = await phonePage(browser);
    await page.goto(`${url}/track/${token}`);
    await page.locator('#live', { hasText: 'Live:' }).waitFor({ timeout: 10_000 });
    // a second tracking socket of the same link, to read everything the hub sends such a page
    const socket = cleanup.add(new RawClient(url, { auth: { token } }), (c) => c.close());
    await socket.waitFor('tracking', 1, "the tracking socket's view");

    // the other parcel goes all the way, with the same driver, which sends its position meanwhile
    await expect(vendor.request('pickup', other)).resolves.toMatchObject({ ok: true });
    await driver.waitFor('pickup', 2, 'the driver to be handed the other parcel');
    await expect(driver.request('in-transit', other)).resolves.toMatchObject({ ok: true });
    await locate(driver, 51.5054, -0.0235, "the driver's position while it carries the other parcel");
    await expect(driver.request('delivered', other)).resolves.toMatchObject({ ok: true });

    // then this page's parcel moves: it hears that, and (events keep their order) nothing before it
    await expect(driver.request('in-transit', mine)).resolves.toMatchObject({ ok: true });
    await socket.waitFor('tracking-step', 1, "this parcel's in-transit step");
    await headline(page).getByText('On its way').waitFor({ timeout: 10_000 });

    expect(socket.received.map((r) => r.event)).toEqual(['tracking', 'tracking-step']);
    const heard = JSON.stringify(socket.received);
    const html = await page.content();
    for (const secret of [other.orderId, other.customer, other.address, '51.5054', mine.customer, mine.address, 'd1']) {
      expect(heard, `the socket heard ${secret}`).not.toContain(secret);
      expect(html, `the page shows ${secret}`).not.toContain(secret);
    }
    expect(problems).toEqual([]);
  }, 90_000);
});
