import type { Browser, Page } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import type { TokenSubject } from '../protocol/token.js';
import { launchChromium } from './helpers/browser.js';
import { Cleanup, RawClient, order, startSecureHub, tokenFor } from './helpers/hub.js';
import { poll } from './helpers/wait.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** The board with a dashboard token, once live; `frames` is every websocket frame it received. */
async function openBoard(browser: Browser, url: string, subject: TokenSubject): Promise<{ page: Page; problems: string[]; frames: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  // every action and wait is bounded (playwright's default is forever)
  page.setDefaultTimeout(15_000);
  const problems: string[] = [];
  const frames: string[] = [];
  page.on('pageerror', (err) => problems.push(err.message));
  page.on('websocket', (ws) => ws.on('framereceived', ({ payload }) => frames.push(String(payload))));
  await page.goto(`${url}/#token=${tokenFor(subject)}`);
  await page.getByRole('status').getByText('live', { exact: true }).waitFor({ timeout: 10_000 });
  return { page, problems, frames };
}

/** Sends a position, again until the hub keeps it (it keeps one a second per driver). */
async function moveTo(driver: RawClient, lat: number, lng: number, more: Record<string, number> = {}): Promise<void> {
  await poll(async () => ((await driver.request<{ ok: boolean }>('location', { lat, lng, ...more })).ok ? true : undefined), `the hub to keep the position ${lat}, ${lng}`, 5_000, 100);
}

const driverItem = (page: Page, name: string) => page.locator(`#drivers li[data-driver="${name}"]`);

describe("drivers' positions on the dashboard", () => {
  it("shows a driver's position live in the drivers panel and on its card in transit, with the ETA, moves it, and drops it once the driver has none of the store's parcels", async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const browser = cleanup.add(await launchChromium(), (b) => b.close());
    const { page, problems } = await openBoard(browser, url, { role: 'dashboard', store: 'acme' });
    const vendor = cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'vendor', store: 'acme' }) } }), (c) => c.close());
    const driver = cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'driver', name: 'd1' }) } }), (c) => c.close());
    await Promise.all([vendor.connected(), driver.connected()]);
    const parcel = order('acme', 1);
    const eta = '2031-05-04T10:30:00.000Z';
    await expect(vendor.request('pickup', parcel)).resolves.toMatchObject({ ok: true });
    await driver.waitFor('pickup', 1, 'the driver to be handed the parcel');
    await expect(driver.request('in-transit', { ...parcel, eta })).resolves.toMatchObject({ ok: true });
    const card = page.locator(`.column[data-state="in-transit"] .card[data-order-id="${parcel.orderId}"]`);
    await card.waitFor({ timeout: 10_000 });
    const etaText = await page.evaluate((at) => `ETA ${new Date(at).toLocaleString()}`, eta);
    await expect(card.locator('.eta').textContent()).resolves.toBe(etaText);

    await moveTo(driver, 48.8566, 2.3522, { heading: 90, speed: 10 });
    const item = driverItem(page, 'd1');
    await item.locator('.coordinates:text-is("48.85660, 2.35220")').waitFor({ timeout: 10_000 });
    await expect(item.locator('.coordinates').getAttribute('href')).resolves.toBe('https://www.openstreetmap.org/?mlat=48.8566&mlon=2.3522#map=16/48.8566/2.3522');
    await expect(item.locator('.motion').textContent()).resolves.toBe('heading 90°, 36 km/h');
    await expect(item.locator('.age').textContent()).resolves.toMatch(/^updated \d+ s ago$/);
    await expect(item.locator('.position').getAttribute('data-stale')).resolves.toBe('false');
    await card.locator('.where:text-matches("^d1 at 48.85660, 2.35220 · updated \\\\d+ s ago$")').waitFor({ timeout: 10_000 });

    // the driver moves: the board follows without a reload
    await moveTo(driver, 48.8606, 2.3376);
    await item.locator('.coordinates:text-is("48.86060, 2.33760")').waitFor({ timeout: 10_000 });
    await card.locator('.where', { hasText: 'd1 at 48.86060, 2.33760' }).waitFor({ timeout: 10_000 });
    expect(await item.locator('.motion').count()).toBe(0);

    // delivered: the driver holds nothing of acme's any more, and leaves acme's board with its position
    await expect(driver.request('delivered', parcel)).resolves.toMatchObject({ ok: true });
    await page.locator(`.column[data-state="delivered"] .card[data-order-id="${parcel.orderId}"]`).waitFor({ timeout: 10_000 });
    await item.waitFor({ state: 'detached', timeout: 10_000 });
    expect(await page.locator('.where').count()).toBe(0);
    expect(problems).toEqual([]);
  }, 90_000);

  it("never shows a store's board the position of a driver carrying only another store's parcels, nor that store's parcels", async () => {
    // one pickup in hand at a time: d2, which never acknowledges its pickup, holds other's and gets no more
    const { url } = cleanup.add(await startSecureHub({ driverPrefetch: 1 }), (h) => h.close());
    const browser = cleanup.add(await launchChromium(), (b) => b.close());
    const acmeBoard = await openBoard(browser, url, { role: 'dashboard', store: 'acme' });
    const allBoard = await openBoard(browser, url, { role: 'dashboard' });
    const client = (subject: TokenSubject, autoAck = true): RawClient => cleanup.add(new RawClient(url, { auth: { token: tokenFor(subject) }, autoAck }), (c) => c.close());
    const acme = client({ role: 'vendor', store: 'acme' });
    const other = client({ role: 'vendor', store: 'other' });
    const d2 = client({ role: 'driver', name: 'd2' }, false);
    await Promise.all([acme, other, d2].map((c) => c.connected()));
    await expect(other.request('pickup', order('other', 3))).resolves.toMatchObject({ ok: true });
    await d2.waitFor('pickup', 1, "d2 to hold other's parcel");
    // d1 carries a parcel of each store
    const d1 = client({ role: 'driver', name: 'd1' });
    await d1.connected();
    await expect(acme.request('pickup', order('acme', 1))).resolves.toMatchObject({ ok: true });
    await expect(other.request('pickup', order('other', 2))).resolves.toMatchObject({ ok: true });
    await d1.waitFor('pickup', 2, 'd1 to be handed a parcel of each store');
    await expect(d1.request('in-transit', order('acme', 1))).resolves.toMatchObject({ ok: true });
    await expect(d1.request('in-transit', order('other', 2))).resolves.toMatchObject({ ok: true });

    // d2's position first: its relay (if any) reaches acme's board before d1's does
    await moveTo(d2, 40.4165, -3.7038);
    await moveTo(d1, 48.8566, 2.3522);

    // the board of every store shows both
    await driverItem(allBoard.page, 'd2').locator('.coordinates:text-is("40.41650, -3.70380")').waitFor({ timeout: 10_000 });
    await driverItem(allBoard.page, 'd1').locator('.coordinates:text-is("48.85660, 2.35220")').waitFor({ timeout: 10_000 });
    await allBoard.page.locator(`.card[data-order-id="${order('other', 2).orderId}"] .where`, { hasText: 'd1 at 48.85660, 2.35220' }).waitFor({ timeout: 10_000 });

    // acme's board: d1 on acme's card, nothing of d2 nor of other's parcels, on the page or on the wire
    const { page, frames, problems } = acmeBoard;
    await driverItem(page, 'd1').locator('.coordinates:text-is("48.85660, 2.35220")').waitFor({ timeout: 10_000 });
    await page.locator(`.card[data-order-id="${order('acme', 1).orderId}"] .where`, { hasText: 'd1 at 48.85660, 2.35220' }).waitFor({ timeout: 10_000 });
    expect(await driverItem(page, 'd2').count()).toBe(0);
    await expect(page.locator('body').innerText()).resolves.not.toMatch(/40\.41650|d2|other-order/);
    const locations = frames.filter((f) => f.includes('"location"'));
    expect(locations.length).toBeGreaterThan(0);
    expect(frames.filter((f) => /"d2"|40\.4165|other-order/.test(f))).toEqual([]);
    expect([...problems, ...allBoard.problems]).toEqual([]);
  }, 90_000);

  it('says "attempt 2 of N" with each store\'s own maximum (--store-max-attempts), live and on a fresh load', async () => {
    const { url } = cleanup.add(await startSecureHub({ maxAttempts: 3, storeMaxAttempts: { acme: 5 } }), (h) => h.close());
    const browser = cleanup.add(await launchChromium(), (b) => b.close());
    const { page, problems } = await openBoard(browser, url, { role: 'dashboard' });
    const driver = cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'driver', name: 'd1' }) } }), (c) => c.close());
    await driver.connected();
    for (const store of ['acme', 'other']) {
      const vendor = cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'vendor', store }) } }), (c) => c.close());
      await vendor.connected();
      await expect(vendor.request('pickup', order(store, 1))).resolves.toMatchObject({ ok: true });
    }
    await driver.waitFor('pickup', 2, 'the driver to be handed both parcels');
    for (const store of ['acme', 'other']) {
      await expect(driver.request('in-transit', order(store, 1))).resolves.toMatchObject({ ok: true });
      await expect(driver.request('failed', { store, orderId: order(store, 1).orderId, reason: 'recipient-absent' })).resolves.toMatchObject({ ok: true, data: { reattempt: true } });
    }
    const badge = (p: Page, store: string) => p.locator(`.column[data-state="pickup"] .card[data-store="${store}"][data-attempt="2"] .badge`);
    await badge(page, 'acme').and(page.locator(':text-is("attempt 2 of 5")')).waitFor({ timeout: 10_000 });
    await badge(page, 'other').and(page.locator(':text-is("attempt 2 of 3")')).waitFor({ timeout: 10_000 });

    const fresh = await openBoard(browser, url, { role: 'dashboard', store: 'acme' });
    await badge(fresh.page, 'acme').and(fresh.page.locator(':text-is("attempt 2 of 5")')).waitFor({ timeout: 10_000 });
    expect([...problems, ...fresh.problems]).toEqual([]);
  }, 90_000);
});
