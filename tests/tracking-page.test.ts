import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import { launchChromium } from './helpers/browser.js';
import { Cleanup, RawClient, order, startSecureHub, tokenFor } from './helpers/hub.js';
import { poll } from './helpers/wait.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());
const OUTPUT = fileURLToPath(new URL('../test-results/', import.meta.url));

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

    const browser = cleanup.add(await launchChromium(), (b) => b.close());
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

  it('says a failed attempt and its re-attempt in plain words, then the delivery, without a reload; never the driver, its note or the proof', async () => {
    const { url } = cleanup.add(await startSecureHub({ maxAttempts: 3 }), (h) => h.close());
    const { vendor, driver } = await actors(url, 'acme');
    const mine = order('acme', 1);
    const other = { store: 'acme', orderId: 'acme-canary-7731', customer: 'Mallory Canary', address: '77 Canary Wharf' };
    const ok = { ok: true };
    await expect(vendor.request('pickup', mine)).resolves.toMatchObject(ok);
    await expect(vendor.request('pickup', other)).resolves.toMatchObject(ok);
    await driver.waitFor('pickup', 2, 'the driver to be handed both parcels');

    const link = `${url}/track/${tokenFor({ role: 'tracker', store: 'acme', orderId: mine.orderId })}`;
    const browser = cleanup.add(await launchChromium(), (b) => b.close());
    const { page, problems } = await phonePage(browser);
    await page.goto(link);
    await page.locator('#live', { hasText: 'Live:' }).waitFor({ timeout: 10_000 });
    // a second tracking socket of the same link, to read everything the hub sends such a page
    const socket = cleanup.add(new RawClient(url, { auth: { token: link.split('/').pop() as string } }), (c) => c.close());
    await socket.waitFor('tracking', 1, "the tracking socket's view");
    const first = await loadedAt(page);
    const steps = () => page.locator('#steps li').evaluateAll((items) => items.map((li) => { const d = (li as unknown as { dataset: Record<string, string> }).dataset; return `${d['event']}:${d['attempt'] ?? 1}`; }));
    const serverHeadline = async () => /<h1 id="headline"[^>]*>([^<]*)<\/h1>/.exec(await (await fetch(link)).text())?.[1];

    // on its way, with the driver's ETA
    const eta = new Date(Date.now() + 3_600_000).toISOString();
    await expect(driver.request('in-transit', { ...mine, eta, note: 'secret-note-transit' })).resolves.toMatchObject(ok);
    await headline(page).getByText('On its way', { exact: true }).waitFor({ timeout: 10_000 });
    await page.locator('#eta', { hasText: /^Expected by \d/ }).waitFor({ timeout: 10_000 });

    // the attempt fails: the reason in plain words, and what happens next
    const waiting = 'A delivery attempt failed: nobody was home. The driver will try again.';
    await expect(driver.request('failed', { store: 'acme', orderId: mine.orderId, reason: 'recipient-absent', note: 'secret-note-dog', photo: 'https://proofs.example.com/secret-photo.jpg', location: { lat: 51.5054, lng: -0.0235 } })).resolves.toMatchObject({ ok: true, data: { reattempt: true } });
    await headline(page).getByText(waiting, { exact: true }).waitFor({ timeout: 10_000 });
    await page.locator('#eta').waitFor({ state: 'hidden', timeout: 10_000 });
    await page.locator('#steps li[data-event="pickup"][data-attempt="2"]').waitFor({ timeout: 10_000 });
    await expect(steps()).resolves.toEqual(['pickup:1', 'in-transit:1', 'failed:1', 'pickup:2']);
    await expect(page.locator('#steps li[data-event="failed"] .what').textContent()).resolves.toBe('A delivery attempt failed: nobody was home');
    await expect(page.locator('#steps li[data-attempt="2"] .what').textContent()).resolves.toBe('Back with the drivers for another try');
    // the page rendered on the hub says the same
    await expect(serverHeadline()).resolves.toBe(waiting);

    // the other parcel fails for good meanwhile: this page hears nothing of it
    await expect(driver.request('in-transit', other)).resolves.toMatchObject(ok);
    await expect(driver.request('failed', { store: 'acme', orderId: other.orderId, reason: 'refused', note: 'secret-note-other' })).resolves.toMatchObject({ ok: true, data: { reattempt: false } });

    // the second attempt: on its way, then delivered, with a proof of delivery the page never shows
    await driver.waitFor('pickup', 3, 'the re-attempt to reach the driver');
    await expect(driver.request('in-transit', { store: 'acme', orderId: mine.orderId, attempt: 2 })).resolves.toMatchObject(ok);
    await headline(page).getByText('On its way', { exact: true }).waitFor({ timeout: 10_000 });
    const proof = { recipient: 'Secret Recipient', signature: `sha256:${'0123456789abcdef'.repeat(4)}`, photo: 'https://proofs.example.com/secret-proof.jpg', note: 'secret-note-porch' };
    await expect(driver.request('delivered', { store: 'acme', orderId: mine.orderId, attempt: 2, ...proof })).resolves.toMatchObject(ok);
    await headline(page).getByText(/^Delivered at \d/).waitFor({ timeout: 10_000 });
    await expect(steps()).resolves.toEqual(['pickup:1', 'in-transit:1', 'failed:1', 'pickup:2', 'in-transit:2', 'delivered:2']);
    expect(await loadedAt(page)).toBe(first);

    // the step words the script writes are the hub's own
    const serverWords = [...(await (await fetch(link)).text()).matchAll(/<span class="what">([^<]*)<\/span>/g)].map((m) => m[1]);
    await expect(page.locator('#steps .what').allTextContents()).resolves.toEqual(serverWords);

    // nothing of the other parcel, the driver, its notes or the proof reached the page or its socket
    await socket.waitFor('tracking-step', 5, "this parcel's five steps since the view");
    const heard = JSON.stringify(socket.received);
    const html = await page.content();
    const secrets = [other.orderId, other.customer, 'refused', 'secret-note', 'secret-photo', 'secret-proof', 'Secret Recipient', 'sha256:', '51.5054', mine.customer, mine.address, 'd1'];
    for (const secret of secrets) {
      expect(heard, `the socket heard ${secret}`).not.toContain(secret);
      expect(html, `the page shows ${secret}`).not.toContain(secret);
    }
    mkdirSync(OUTPUT, { recursive: true });
    await page.screenshot({ path: `${OUTPUT}tracking-reattempt-phone.png`, fullPage: true });
    expect(problems).toEqual([]);
  }, 90_000);

  it('says a return and a cancel in plain words, live', async () => {
    const { url } = cleanup.add(await startSecureHub({ maxAttempts: 3 }), (h) => h.close());
    const { vendor, driver } = await actors(url, 'acme');
    const back = order('acme', 1);
    const withdrawn = order('acme', 2);
    const ok = { ok: true };
    await expect(vendor.request('pickup', back)).resolves.toMatchObject(ok);
    await expect(vendor.request('pickup', withdrawn)).resolves.toMatchObject(ok);
    await driver.waitFor('pickup', 2, 'the driver to be handed both parcels');
    const browser = cleanup.add(await launchChromium(), (b) => b.close());
    const pages = await Promise.all([back, withdrawn].map(async (p) => {
      const { page, problems } = await phonePage(browser);
      await page.goto(`${url}/track/${tokenFor({ role: 'tracker', store: 'acme', orderId: p.orderId })}`);
      await page.locator('#live', { hasText: 'Live:' }).waitFor({ timeout: 10_000 });
      return { page, problems };
    }));
    const [returned, cancelled] = pages as [(typeof pages)[number], (typeof pages)[number]];

    await expect(driver.request('in-transit', back)).resolves.toMatchObject(ok);
    await expect(driver.request('failed', { store: 'acme', orderId: back.orderId, reason: 'address-not-found' })).resolves.toMatchObject({ ok: true, data: { reattempt: true } });
    await driver.waitFor('pickup', 3, 'the re-attempt to reach the driver');
    await expect(driver.request('in-transit', { store: 'acme', orderId: back.orderId, attempt: 2 })).resolves.toMatchObject(ok);
    await expect(driver.request('failed', { store: 'acme', orderId: back.orderId, attempt: 2, reason: 'refused' })).resolves.toMatchObject({ ok: true, data: { reattempt: false } });
    await headline(returned.page).getByText('A delivery attempt failed: the parcel was refused. It is going back to the shop.', { exact: true }).waitFor({ timeout: 10_000 });
    await expect(driver.request('returned', { store: 'acme', orderId: back.orderId })).resolves.toMatchObject(ok);
    await headline(returned.page).getByText('Returned to the shop', { exact: true }).waitFor({ timeout: 10_000 });
    await expect(returned.page.locator('#steps .what').allTextContents()).resolves.toEqual([
      'The shop handed it over',
      'A driver picked it up',
      'A delivery attempt failed: the address could not be found',
      'Back with the drivers for another try',
      'A driver picked it up',
      'A delivery attempt failed: the parcel was refused',
      'Returned to the shop',
    ]);

    await expect(vendor.request('cancelled', { store: 'acme', orderId: withdrawn.orderId, note: 'secret-note-stock' })).resolves.toMatchObject(ok);
    await headline(cancelled.page).getByText('Cancelled by the shop', { exact: true }).waitFor({ timeout: 10_000 });
    expect(await cancelled.page.content()).not.toContain('secret-note');
    expect([...returned.problems, ...cancelled.problems]).toEqual([]);
  }, 90_000);

  it('shows and hears nothing of another parcel of the same store, even as that parcel moves', async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const { vendor, driver } = await actors(url, 'acme');
    const mine = order('acme', 1);
    const other = { store: 'acme', orderId: 'acme-canary-7731', customer: 'Mallory Canary', address: '77 Canary Wharf' };
    await expect(vendor.request('pickup', mine)).resolves.toMatchObject({ ok: true });
    await driver.waitFor('pickup', 1, "the driver to be handed this page's parcel");

    const token = tokenFor({ role: 'tracker', store: 'acme', orderId: mine.orderId });
    const browser = cleanup.add(await launchChromium(), (b) => b.close());
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
