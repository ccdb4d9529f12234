import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { VendorClient } from '../vendor/vendor-client.js';
import { launchChromium } from './helpers/browser.js';
import { Cleanup, RawClient, order, startSecureHub, tokenFor } from './helpers/hub.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());
const OUTPUT = fileURLToPath(new URL('../test-results/', import.meta.url));

describe('the dashboard in a real browser', () => {
  it('shows a parcel appear and move to delivered without a reload, and opens its timeline', async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const browser = cleanup.add(await launchChromium(), (b) => b.close());
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

  it('shows failed attempts with their reason, a re-attempt back under waiting, a return and a cancel, live, with counts per state', async () => {
    const { url } = cleanup.add(await startSecureHub({ maxAttempts: 3 }), (h) => h.close());
    const browser = cleanup.add(await launchChromium(), (b) => b.close());
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.setDefaultTimeout(15_000);
    const problems: string[] = [];
    page.on('pageerror', (err) => problems.push(err.message));
    page.on('dialog', (dialog) => {
      problems.push(`${dialog.type()}: ${dialog.message()}`);
      void dialog.dismiss();
    });
    const board = `${url}/#token=${tokenFor({ role: 'dashboard' })}`;
    await page.goto(board);
    await page.getByRole('status').getByText('live', { exact: true }).waitFor({ timeout: 10_000 });
    const loadedAt = await page.evaluate(() => (globalThis as unknown as { capsBoard: { loadedAt: number } }).capsBoard.loadedAt);

    const vendor = cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'vendor', store: 'acme' }) } }), (c) => c.close());
    const driver = cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'driver', name: 'd1' }) } }), (c) => c.close());
    await Promise.all([vendor.connected(), driver.connected()]);
    const retried = order('acme', 1);
    const refused = order('acme', 2);
    const withdrawn = order('acme', 3);
    // the driver's note is a client's text: shown as text, never as markup
    const note = '<img src=x onerror=alert(1)><b id="injected">rang twice</b>';
    const card = (p: { orderId: string }, state: string) => page.locator(`.column[data-state="${state}"] .card[data-order-id="${p.orderId}"]`);
    const count = (state: string) => page.locator(`section.store[data-store="acme"] .column[data-state="${state}"] .count`);
    const ok = { ok: true };

    for (const p of [retried, refused, withdrawn]) await expect(vendor.request('pickup', p)).resolves.toMatchObject(ok);
    await driver.waitFor('pickup', 3, 'the driver to be handed the three parcels');
    await card(withdrawn, 'pickup').waitFor({ timeout: 10_000 });

    // the store cancels one
    await expect(vendor.request('cancelled', { store: 'acme', orderId: withdrawn.orderId, note: 'out of stock' })).resolves.toMatchObject(ok);
    await card(withdrawn, 'cancelled').waitFor({ timeout: 10_000 });

    // an attempt fails with attempts left: the parcel is back under waiting, as its 2nd attempt, with the reason and note
    await expect(driver.request('in-transit', retried)).resolves.toMatchObject(ok);
    await card(retried, 'in-transit').waitFor({ timeout: 10_000 });
    await expect(driver.request('failed', { store: 'acme', orderId: retried.orderId, reason: 'recipient-absent', note })).resolves.toMatchObject({ ok: true, data: { reattempt: true } });
    const again = card(retried, 'pickup').and(page.locator('[data-attempt="2"]'));
    await again.waitFor({ timeout: 10_000 });
    // "of 3" once the board has the store's maximum (GET /api/stores, asked again after live steps)
    await again.locator('.badge:text-is("attempt 2 of 3")').waitFor({ timeout: 10_000 });
    await expect(again.locator('.failure').textContent()).resolves.toBe(`Attempt 1 failed: recipient absent ${note}`);
    await expect(again.getAttribute('aria-label')).resolves.toContain('Waiting for pickup, attempt 2 of 3, attempt 1 failed: recipient absent');
    expect(await card(retried, 'in-transit').count()).toBe(0);

    // refused: no attempt follows; the parcel waits under failed until the driver returns it
    await expect(driver.request('in-transit', refused)).resolves.toMatchObject(ok);
    await expect(driver.request('failed', { store: 'acme', orderId: refused.orderId, reason: 'refused' })).resolves.toMatchObject({ ok: true, data: { reattempt: false } });
    await card(refused, 'failed').locator('.failure[data-reason="refused"]').waitFor({ timeout: 10_000 });
    await expect(driver.request('returned', { store: 'acme', orderId: refused.orderId })).resolves.toMatchObject(ok);
    await card(refused, 'returned').locator('.failure', { hasText: 'Attempt 1 failed: refused' }).waitFor({ timeout: 10_000 });
    expect(await card(refused, 'failed').count()).toBe(0);

    // the counts are the hub's, per state: the last step counted means every earlier one is
    await count('returned').and(page.locator(':text-is("1")')).waitFor({ timeout: 10_000 });
    const counts = async () => Object.fromEntries(await Promise.all(['pickup', 'in-transit', 'delivered', 'failed', 'returned', 'cancelled'].map(async (s) => [s, await count(s).textContent()])));
    await expect(counts()).resolves.toEqual({ pickup: '1', 'in-transit': '0', delivered: '0', failed: '0', returned: '1', cancelled: '1' });
    mkdirSync(OUTPUT, { recursive: true });
    await page.screenshot({ path: `${OUTPUT}dashboard-lifecycle.png`, fullPage: true });

    // the search follows the re-attempt too, with its repeated steps
    const input = page.getByRole('searchbox', { name: 'Order id', exact: true });
    await input.fill(retried.orderId);
    await input.press('Enter');
    const found = page.locator(`.found-parcel[data-order-id="${retried.orderId}"]`);
    await found.and(page.locator('[data-state="pickup"]')).waitFor({ timeout: 10_000 });
    await expect(found.locator('.found-attempt').textContent()).resolves.toBe('attempt 2 of 3');

    // the 2nd attempt is delivered
    const [, , , second] = await driver.waitFor('pickup', 4, 'the re-attempt to reach the driver');
    expect(second).toMatchObject({ orderId: retried.orderId, attempt: 2 });
    await expect(driver.request('in-transit', { store: 'acme', orderId: retried.orderId, attempt: 2 })).resolves.toMatchObject(ok);
    await expect(driver.request('delivered', { store: 'acme', orderId: retried.orderId, attempt: 2, recipient: 'A neighbour' })).resolves.toMatchObject(ok);
    const delivered = card(retried, 'delivered').and(page.locator('[data-attempt="2"]'));
    await delivered.waitFor({ timeout: 10_000 });
    expect(await delivered.locator('.failure').count()).toBe(0);
    await found.and(page.locator('[data-state="delivered"]')).waitFor({ timeout: 10_000 });
    const events = (list: ReturnType<typeof page.locator>) => list.locator(':scope > li').evaluateAll((items) => items.map((li) => { const d = (li as unknown as { dataset: Record<string, string> }).dataset; return `${d['event']}:${d['attempt'] ?? 1}`; }));
    const story = ['pickup:1', 'in-transit:1', 'failed:1', 'pickup:2', 'in-transit:2', 'delivered:2'];
    await expect(events(found.locator('.steps'))).resolves.toEqual(story);
    await count('delivered').and(page.locator(':text-is("1")')).waitFor({ timeout: 10_000 });
    await expect(count('pickup').textContent()).resolves.toBe('0');

    // its timeline: every step of both attempts, the failure's reason and note as text
    await page.locator('#search-close').click();
    await delivered.click();
    const dialog = page.getByRole('dialog');
    await dialog.locator('li[data-event="delivered"]').waitFor({ timeout: 10_000 });
    await expect(events(dialog.locator('ol'))).resolves.toEqual(story);
    await expect(dialog.locator('li[data-event="failed"] [data-detail="reason"]').textContent()).resolves.toBe('recipient absent');
    await expect(dialog.locator('li[data-event="failed"] [data-detail="note"]').textContent()).resolves.toBe(note);
    await expect(dialog.locator('li[data-event="delivered"] [data-detail="recipient"]').textContent()).resolves.toBe('A neighbour');
    expect(await page.locator('#injected, img').count()).toBe(0);
    expect(await page.evaluate(() => (globalThis as unknown as { capsBoard: { loadedAt: number } }).capsBoard.loadedAt)).toBe(loadedAt);
    await dialog.getByRole('button', { name: 'Close the timeline' }).click();

    // a board opened now loads the same from the API: attempts, reasons, states and counts
    const fresh = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    fresh.setDefaultTimeout(15_000);
    fresh.on('pageerror', (err) => problems.push(err.message));
    await fresh.goto(board);
    const freshCard = (p: { orderId: string }, state: string) => fresh.locator(`.column[data-state="${state}"] .card[data-order-id="${p.orderId}"]`);
    await freshCard(retried, 'delivered').and(fresh.locator('[data-attempt="2"]')).waitFor({ timeout: 10_000 });
    await freshCard(refused, 'returned').locator('.failure[data-reason="refused"]').waitFor({ timeout: 10_000 });
    await freshCard(withdrawn, 'cancelled').waitFor({ timeout: 10_000 });
    await expect(fresh.locator('section.store[data-store="acme"] .column[data-state="returned"] .count').textContent()).resolves.toBe('1');
    expect(problems).toEqual([]);
  }, 90_000);

  it('tells a visitor without a token how to get in', async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const browser = cleanup.add(await launchChromium(), (b) => b.close());
    const page = await browser.newPage();
    page.setDefaultTimeout(15_000);
    await page.goto(url);
    await page.getByRole('status').getByText(/CAPS_ERR_UNAUTHORIZED: open this page with #token=/).waitFor({ timeout: 10_000 });
  }, 60_000);
});
