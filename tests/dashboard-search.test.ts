import type { Browser, Page } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import { VendorClient } from '../vendor/vendor-client.js';
import type { TokenSubject } from '../protocol/token.js';
import { launchChromium } from './helpers/browser.js';
import { Cleanup, RawClient, order, startSecureHub, tokenFor } from './helpers/hub.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/**
 * The board, opened with a dashboard token, once it is live. `problems` collects page errors,
 * console errors (a CSP violation is one) and any alert; the API's own 4xx answers to a search
 * (a parcel not found, an id refused) are the only console errors expected.
 */
async function openBoard(browser: Browser, url: string, subject: TokenSubject): Promise<{ page: Page; problems: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.setDefaultTimeout(15_000);
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
  page.on('dialog', (dialog) => {
    problems.push(`${dialog.type()}: ${dialog.message()}`);
    void dialog.dismiss();
  });
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const from = msg.location().url;
    const expected = /^Failed to load resource: the server responded with a status of 4\d\d/.test(msg.text()) && from !== '' && new URL(from).pathname.startsWith('/api/packages/');
    if (!expected) problems.push(`console: ${msg.text()} (${from})`);
  });
  await page.goto(`${url}/#token=${tokenFor(subject)}`);
  await page.getByRole('status').getByText('live', { exact: true }).waitFor({ timeout: 10_000 });
  return { page, problems };
}

async function searchFor(page: Page, orderId: string): Promise<void> {
  const input = page.getByRole('searchbox', { name: 'Order id', exact: true });
  await input.fill(orderId);
  await input.press('Enter');
}

const panel = (page: Page) => page.getByRole('region', { name: /^Order id / });
const summary = (page: Page) => page.locator('#search-summary');
const events = (page: Page, store: string) =>
  panel(page)
    .locator(`.found-parcel[data-store="${store}"] .steps li`)
    .evaluateAll((items) => items.map((li) => (li as unknown as { dataset: Record<string, string> }).dataset['event']));

describe('the dashboard searches an order id', () => {
  it("shows a loaded parcel's timeline, follows it live to delivered, highlights its card, and closes", async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const vendor = cleanup.add(new VendorClient({ url, store: 'acme-widgets', token: tokenFor({ role: 'vendor', store: 'acme-widgets' }), log: () => undefined }), (v) => v.close());
    const driver = cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'driver', name: 'd1' }) } }), (c) => c.close());
    await Promise.all([vendor.start(), driver.connected()]);
    const parcel = order('acme-widgets', 7001);
    await vendor.publish(parcel);
    await vendor.publish(order('acme-widgets', 7002));
    await driver.request('in-transit', parcel);

    const browser = cleanup.add(await launchChromium(), (b) => b.close());
    const { page, problems } = await openBoard(browser, url, { role: 'dashboard' });
    const card = page.locator(`.card[data-store="acme-widgets"][data-order-id="${parcel.orderId}"]`);
    await card.and(page.locator('[data-state="in-transit"]')).waitFor({ timeout: 10_000 });
    const loadedAt = await page.evaluate(() => (globalThis as unknown as { capsBoard: { loadedAt: number } }).capsBoard.loadedAt);

    await searchFor(page, parcel.orderId);
    const found = panel(page).locator('.found-parcel');
    await found.and(page.locator('[data-state="in-transit"]')).waitFor({ timeout: 10_000 });
    expect(await found.count()).toBe(1);
    expect(await events(page, 'acme-widgets')).toEqual(['pickup', 'in-transit']);
    const text = await panel(page).innerText();
    expect(text).toContain('acme-widgets');
    expect(text).toContain(parcel.orderId);
    expect(text).toContain('In transit');
    expect(text).toContain(parcel.customer);
    expect(text).toContain('driver d1');
    await expect(summary(page).textContent()).resolves.toBe(`Order id ${parcel.orderId}: In transit (acme-widgets)`);
    expect(await card.evaluate((el) => el.classList.contains('found'))).toBe(true);
    expect(await page.locator('.card.found').count()).toBe(1);

    // the driver delivers: the panel (and the card, still highlighted) follow without a reload
    await driver.request('delivered', parcel);
    await found.and(page.locator('[data-state="delivered"]')).waitFor({ timeout: 10_000 });
    expect(await events(page, 'acme-widgets')).toEqual(['pickup', 'in-transit', 'delivered']);
    await expect(found.locator('.found-state').textContent()).resolves.toBe('Delivered');
    await card.and(page.locator('.found[data-state="delivered"]')).waitFor({ timeout: 10_000 });
    expect(await page.evaluate(() => (globalThis as unknown as { capsBoard: { loadedAt: number } }).capsBoard.loadedAt)).toBe(loadedAt);

    // the close button hides the panel and the highlight
    await panel(page).getByRole('button', { name: 'Close the search result' }).click();
    await page.locator('#search-panel').waitFor({ state: 'hidden' });
    expect(await page.locator('.card.found').count()).toBe(0);
    await expect(summary(page).textContent()).resolves.toBe('');

    // so does clearing the input
    await searchFor(page, parcel.orderId);
    await panel(page).waitFor();
    await page.getByRole('searchbox', { name: 'Order id', exact: true }).fill('');
    await page.locator('#search-panel').waitFor({ state: 'hidden' });
    expect(await page.locator('.card.found').count()).toBe(0);
    expect(problems).toEqual([]);
  }, 90_000);

  it('says clearly when no parcel has the order id, shows an API error by its code, and finds a parcel published later', async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const browser = cleanup.add(await launchChromium(), (b) => b.close());
    const { page, problems } = await openBoard(browser, url, { role: 'dashboard' });

    await searchFor(page, 'no-such-order');
    await summary(page).getByText('No parcel with order id no-such-order', { exact: true }).waitFor();
    expect(await page.locator('#search-panel').isHidden()).toBe(true);

    // the hub refuses a zero-width character in a name: its code and message, no stack trace
    await searchFor(page, 'bad\u200bid');
    await summary(page).getByText(/CAPS_ERR_INVALID_QUERY: orderId: must not contain/).waitFor();
    expect(await summary(page).textContent()).not.toMatch(/\n\s+at |Error:/);

    // a parcel published after the search is found by it, live
    await searchFor(page, 'late-1');
    await summary(page).getByText('No parcel with order id late-1', { exact: true }).waitFor();
    const vendor = cleanup.add(new VendorClient({ url, store: 'acme-widgets', token: tokenFor({ role: 'vendor', store: 'acme-widgets' }), log: () => undefined }), (v) => v.close());
    await vendor.start();
    await vendor.publish({ ...order('acme-widgets', 'late'), orderId: 'late-1' });
    await panel(page).locator('.found-parcel[data-store="acme-widgets"][data-state="pickup"]').waitFor({ timeout: 10_000 });
    expect(await events(page, 'acme-widgets')).toEqual(['pickup']);
    expect(problems).toEqual([]);
  }, 90_000);

  it("shows a shop's HTML in an order id and a customer as text, never as elements", async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const vendor = cleanup.add(new VendorClient({ url, store: 'acme-widgets', token: tokenFor({ role: 'vendor', store: 'acme-widgets' }), log: () => undefined }), (v) => v.close());
    await vendor.start();
    const orderId = '<img src=x onerror=alert(1)>';
    const customer = '<b id="injected">Mallory</b>';
    // the hub accepts it: names refuse control and format characters, not markup
    await vendor.publish({ ...order('acme-widgets', 'x'), orderId, customer });

    const browser = cleanup.add(await launchChromium(), (b) => b.close());
    const { page, problems } = await openBoard(browser, url, { role: 'dashboard' });
    await page.locator('.card[data-store="acme-widgets"]').waitFor({ timeout: 10_000 });
    await searchFor(page, orderId);
    await panel(page).locator('.found-parcel').waitFor({ timeout: 10_000 });

    const text = await panel(page).innerText();
    expect(text).toContain(orderId);
    expect(text).toContain(customer);
    await expect(summary(page).textContent()).resolves.toBe(`Order id ${orderId}: Waiting for pickup (acme-widgets)`);
    expect(await page.locator('img, #injected, b').count()).toBe(0);
    expect(await page.locator('.card.found').count()).toBe(1);
    expect(problems).toEqual([]);
  }, 90_000);

  it("shows each store's parcel of a shared order id, and a store's token nothing of another store", async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const vendors = ['acme-widgets', 'globex'].map((store) =>
      cleanup.add(new VendorClient({ url, store, token: tokenFor({ role: 'vendor', store }), log: () => undefined }), (v) => v.close()),
    );
    await Promise.all(vendors.map((v) => v.start()));
    const [acme, globex] = vendors as [VendorClient, VendorClient];
    await acme.publish({ ...order('acme-widgets', 'a'), orderId: 'shared-42' });
    await globex.publish({ ...order('globex', 'g'), orderId: 'shared-42' });
    await globex.publish({ ...order('globex', 's'), orderId: 'globex-secret' });

    const browser = cleanup.add(await launchChromium(), (b) => b.close());
    // a dashboard of every store sees both parcels of shared-42
    const all = await openBoard(browser, url, { role: 'dashboard' });
    await searchFor(all.page, 'shared-42');
    await panel(all.page).locator('.found-parcel').nth(1).waitFor({ timeout: 10_000 });
    expect(await panel(all.page).locator('.found-parcel').evaluateAll((els) => els.map((el) => (el as unknown as { dataset: Record<string, string> }).dataset['store']))).toEqual(['acme-widgets', 'globex']);
    await expect(summary(all.page).textContent()).resolves.toBe('Order id shared-42: 2 parcels, in acme-widgets, globex');

    // acme's dashboard: globex's order id is not found, and of shared-42 only its own parcel
    const scoped = await openBoard(browser, url, { role: 'dashboard', store: 'acme-widgets' });
    await searchFor(scoped.page, 'globex-secret');
    await summary(scoped.page).getByText('No parcel with order id globex-secret', { exact: true }).waitFor();
    expect(await scoped.page.locator('#search-panel').isHidden()).toBe(true);
    await searchFor(scoped.page, 'shared-42');
    await panel(scoped.page).locator('.found-parcel').waitFor({ timeout: 10_000 });
    expect(await panel(scoped.page).locator('.found-parcel').count()).toBe(1);
    expect(await panel(scoped.page).innerText()).not.toContain('globex');
    expect(await scoped.page.locator('body').innerText()).not.toContain('globex');

    // a step of globex's shared-42 does not reach acme's panel either
    const driver = cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'driver', name: 'd1' }) } }), (c) => c.close());
    await driver.connected();
    await driver.request('in-transit', { ...order('globex', 'g'), orderId: 'shared-42' });
    await panel(all.page).locator('.found-parcel[data-store="globex"][data-state="in-transit"]').waitFor({ timeout: 10_000 });
    expect(await panel(scoped.page).locator('.found-parcel').count()).toBe(1);
    expect(await panel(scoped.page).innerText()).not.toContain('globex');
    expect(all.problems).toEqual([]);
    expect(scoped.problems).toEqual([]);
  }, 90_000);
});
