import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Keyring } from '../hub/keyring.js';
import type { TrackingStep, TrackingView } from '../protocol/messages.js';
import type { TokenSubject } from '../protocol/token.js';
import { peekClaims } from '../protocol/token.js';
import { runCli } from './helpers/cli.js';
import { Cleanup, RawClient, TEST_SECRET, order, startSecureHub, tokenFor } from './helpers/hub.js';
import { poll, waitUntil } from './helpers/wait.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const tracker = (store: string, orderId: string): TokenSubject => ({ role: 'tracker', store, orderId });

function tempDir(): string {
  return cleanup.add(mkdtempSync(join(tmpdir(), 'caps-track-')), (d) => rmSync(d, { recursive: true, force: true }));
}

/** GET a tracking page: its status and HTML. */
async function page(url: string): Promise<{ status: number; html: string; type: string | null }> {
  const res = await fetch(url);
  return { status: res.status, html: await res.text(), type: res.headers.get('content-type') };
}

/** A vendor of `store` on the hub, which hands over `parcel` (acknowledged once stored). */
async function handOver(url: string, parcel: ReturnType<typeof order>): Promise<void> {
  const vendor = cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'vendor', store: parcel.store }) } }), (c) => c.close());
  await vendor.connected();
  await expect(vendor.request('pickup', parcel)).resolves.toMatchObject({ ok: true });
}

/** The plain page every link that does not work gets: nothing of any parcel, no error detail. */
function expectNoData(answer: { status: number; html: string }, secrets: readonly string[], what: string): void {
  expect(answer.status, what).toBe(404);
  expect(answer.html, what).toContain('This tracking link does not work');
  for (const secret of secrets) expect(answer.html, `${what}: shows ${secret}`).not.toContain(secret);
  expect(answer.html, `${what}: a stack trace`).not.toMatch(/\bat .*\.(ts|js):\d+|CapsError|CAPS_ERR_/);
}

describe('tracking links that do not work', () => {
  it('show a plain 404 page and get no socket: another parcel or store, expired, revoked, garbage, not a tracking token', async () => {
    const dir = tempDir();
    // the test secret, with a data folder for the list of revoked tokens
    const keyring = new Keyring(TEST_SECRET, dir, {});
    const secret = { secret: TEST_SECRET };
    const { url } = cleanup.add(await startSecureHub({ keyring }), (h) => h.close());
    const acme = order('acme', 1);
    const sister = { ...order('acme', 2), customer: 'Mallory Canary' };
    await handOver(url, acme);
    await handOver(url, sister);
    const secrets = [acme.customer, acme.address, sister.customer, sister.address, sister.orderId];

    // a working link of the same hub, for contrast: its own parcel only
    const good = await page(`${url}/track/${tokenFor(tracker('acme', acme.orderId), secret)}`);
    expect(good.status).toBe(200);
    expect(good.html).toContain(acme.orderId);
    for (const s of secrets) expect(good.html).not.toContain(s);

    // each link, and the code its socket is refused with (a vendor's or dashboard's token is a
    // connection of its own role, not a tracking page: only its page is looked at)
    const links: Array<[string, string, string | undefined]> = [
      ['a parcel the store does not have', tokenFor(tracker('acme', 'acme-order-404'), secret), 'CAPS_ERR_NOT_FOUND'],
      ['the same orderId in another store', tokenFor(tracker('other', acme.orderId), secret), 'CAPS_ERR_NOT_FOUND'],
      ['an expired link', tokenFor(tracker('acme', acme.orderId), { ...secret, expiresInSeconds: 60, now: Date.now() - 3_600_000 }), 'CAPS_ERR_TOKEN_EXPIRED'],
      ['another secret', tokenFor(tracker('acme', acme.orderId), { secret: 'another-secret-0123456789abcdef' }), 'CAPS_ERR_UNAUTHORIZED'],
      ['garbage', 'garbage', 'CAPS_ERR_UNAUTHORIZED'],
      ['a token of two garbage parts', 'e30.AAAA', 'CAPS_ERR_UNAUTHORIZED'],
      ['a very long token', 'x'.repeat(3_000), 'CAPS_ERR_UNAUTHORIZED'],
      ["a vendor's token", tokenFor({ role: 'vendor', store: 'acme' }, secret), undefined],
      ["a dashboard's token", tokenFor({ role: 'dashboard' }, secret), undefined],
    ];
    for (const [what, token, code] of links) {
      expectNoData(await page(`${url}/track/${encodeURIComponent(token)}`), secrets, what);
      if (code === undefined) continue;
      const socket = cleanup.add(new RawClient(url, { auth: { token } }), (c) => c.close());
      await expect(socket.refused(), what).resolves.toMatchObject({ code });
      socket.close();
    }

    // revoked: the page goes 404, and a connected tracking socket is dropped
    const revokedToken = tokenFor(tracker('acme', acme.orderId), secret);
    const watching = cleanup.add(new RawClient(url, { auth: { token: revokedToken } }), (c) => c.close());
    await watching.waitFor('tracking', 1, "the tracking socket's view before the revocation");
    const revoke = await runCli(['token', 'revoke', '--token', revokedToken, '--data', dir]);
    expect(revoke.code, revoke.output).toBe(0);
    keyring.refresh();
    expectNoData(await page(`${url}/track/${revokedToken}`), secrets, 'a revoked link');
    await waitUntil(watching.socket, 'disconnect', () => (watching.socket.connected ? undefined : true), 'the hub to drop the revoked tracking socket', 5_000);
    const again = cleanup.add(new RawClient(url, { auth: { token: revokedToken } }), (c) => c.close());
    await expect(again.refused()).resolves.toMatchObject({ code: 'CAPS_ERR_UNAUTHORIZED' });
  }, 60_000);

  it("opens nothing of the API with a tracking link's token", async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const parcel = order('acme', 1);
    await handOver(url, parcel);
    const headers = { authorization: `Bearer ${tokenFor(tracker('acme', parcel.orderId))}` };
    for (const path of ['/api/stores', '/api/stores/acme/packages', `/api/packages/${parcel.orderId}`, '/api/queues', '/api/drivers', '/metrics']) {
      const res = await fetch(`${url}${path}`, { headers });
      const body = await res.text();
      expect(res.status, path).toBe(403);
      expect(body, path).not.toContain(parcel.customer);
    }
    const pickup = await fetch(`${url}/api/stores/acme/parcels`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify({ customer: 'x', address: 'y' }) });
    expect(pickup.status).toBe(403);
  });
});

describe("a tracking link's socket", () => {
  it('is sent its parcel, and every event it sends is refused with CAPS_ERR_FORBIDDEN, changing nothing', async () => {
    const { url, hub } = cleanup.add(await startSecureHub(), (h) => h.close());
    const parcel = order('acme', 1);
    await handOver(url, parcel);
    const socket = cleanup.add(new RawClient(url, { auth: { token: tokenFor(tracker('acme', parcel.orderId)) } }), (c) => c.close());
    const [view] = (await socket.waitFor('tracking', 1, "the tracking socket's view of its parcel")) as unknown as TrackingView[];
    expect(view).toEqual({ store: 'acme', orderId: parcel.orderId, state: 'pickup', history: [{ event: 'pickup', time: expect.any(String) }] });

    const attempts: Array<[string, unknown]> = [
      ['pickup', order('acme', 9)],
      ['in-transit', parcel],
      ['delivered', parcel],
      ['join', 'acme'],
      ['leave', 'acme'],
      ['getAll', { queue: 'acme' }],
      ['received', { queue: 'acme', messageId: 'm-1' }],
      ['location', { lat: 1, lng: 1 }],
      ['made-up', {}],
    ];
    for (const [event, payload] of attempts) {
      const answer = await socket.request(event, payload);
      expect(answer, event).toMatchObject({ ok: false, error: { code: 'CAPS_ERR_FORBIDDEN', message: expect.stringContaining('tracking link') } });
    }
    expect(hub.metrics.refusedCount('CAPS_ERR_FORBIDDEN')).toBe(attempts.length);
    // nothing moved, nothing else arrived, and the socket is still connected
    const vendor = await fetch(`${url}/api/packages/${parcel.orderId}`, { headers: { authorization: `Bearer ${tokenFor({ role: 'vendor', store: 'acme' })}` } });
    expect(((await vendor.json()) as { data: { state: string } }).data.state).toBe('pickup');
    expect(socket.received.map((r) => r.event)).toEqual(['tracking']);
    expect(socket.socket.connected).toBe(true);
  });
});

describe("a tracking link's socket through failed attempts", () => {
  /** Sends the driver's position; one a second is kept, so asks again (bounded) until it is. */
  async function locate(driver: RawClient, lat: number, lng: number, what: string): Promise<void> {
    await poll(async () => ((await driver.request<{ ok: boolean }>('location', { lat, lng })).ok ? true : undefined), what, 5_000, 100);
  }

  it("hears each step's attempt, a failure's reason and an ETA and nothing else of the details; no driver's position once its attempt failed or the store cancelled", async () => {
    const { url } = cleanup.add(await startSecureHub({ maxAttempts: 3 }), (h) => h.close());
    const vendor = cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'vendor', store: 'acme' }) } }), (c) => c.close());
    const driver = cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'driver', name: 'd1' }) } }), (c) => c.close());
    await Promise.all([vendor.connected(), driver.connected()]);
    const parcel = order('acme', 1);
    const at = { store: 'acme', orderId: parcel.orderId };
    await expect(vendor.request('pickup', parcel)).resolves.toMatchObject({ ok: true });
    await driver.waitFor('pickup', 1, 'the driver to be handed the parcel');
    const token = tokenFor(tracker('acme', parcel.orderId));
    const socket = cleanup.add(new RawClient(url, { auth: { token } }), (c) => c.close());
    await socket.waitFor('tracking', 1, "the tracking socket's view");
    const steps = () => socket.of('tracking-step') as unknown as TrackingStep[];
    const positions = () => socket.of('tracking-position').length;
    // the socket may send nothing: its refusal's round trip is the barrier for "nothing else arrived"
    const barrier = () => socket.request('getAll', {});
    const time = expect.any(String);

    const eta = new Date(Date.now() + 3_600_000).toISOString();
    await expect(driver.request('in-transit', { ...at, eta, note: 'secret-note' })).resolves.toMatchObject({ ok: true });
    await socket.waitFor('tracking-step', 1, 'the in-transit step');
    expect(steps()[0]).toEqual({ event: 'in-transit', time, eta });
    await locate(driver, 10, 10, "the driver's position while carrying it");
    await socket.waitFor('tracking-position', 1, "the driver's position");

    await expect(driver.request('failed', { ...at, reason: 'recipient-absent', note: 'secret-note', photo: 'https://proofs.example.com/p.jpg', location: { lat: 1, lng: 2 } })).resolves.toMatchObject({ ok: true, data: { reattempt: true } });
    await socket.waitFor('tracking-step', 3, 'the failure and the re-attempt');
    expect(steps().slice(1)).toEqual([
      { event: 'failed', time, reason: 'recipient-absent', reattempt: true },
      { event: 'pickup', time, attempt: 2 },
    ]);
    await locate(driver, 11, 11, "the driver's position after the failure");
    await barrier();
    expect(positions()).toBe(1);

    await driver.waitFor('pickup', 2, 'the re-attempt to reach the driver');
    await expect(driver.request('in-transit', { ...at, attempt: 2 })).resolves.toMatchObject({ ok: true });
    await socket.waitFor('tracking-step', 4, 'the second in-transit step');
    await locate(driver, 12, 12, "the driver's position on the second attempt");
    await socket.waitFor('tracking-position', 2, "the driver's position on the second attempt");

    await expect(vendor.request('cancelled', { ...at, note: 'secret-note' })).resolves.toMatchObject({ ok: true });
    await socket.waitFor('tracking-step', 5, 'the cancel');
    expect(steps().slice(3)).toEqual([
      { event: 'in-transit', time, attempt: 2 },
      { event: 'cancelled', time, attempt: 2 },
    ]);
    await locate(driver, 13, 13, "the driver's position after the cancel");
    await barrier();
    expect(positions()).toBe(2);

    // the view of a page opened now: the same steps, no more
    const later = cleanup.add(new RawClient(url, { auth: { token } }), (c) => c.close());
    const [view] = (await later.waitFor('tracking', 1, 'the view after the cancel')) as unknown as TrackingView[];
    expect(view).toEqual({
      store: 'acme',
      orderId: parcel.orderId,
      state: 'cancelled',
      history: [
        { event: 'pickup', time },
        { event: 'in-transit', time, eta },
        { event: 'failed', time, reason: 'recipient-absent' },
        { event: 'pickup', time, attempt: 2 },
        { event: 'in-transit', time, attempt: 2 },
        { event: 'cancelled', time, attempt: 2 },
      ],
    });
    expect(JSON.stringify([socket.received, later.received])).not.toMatch(/secret-note|proofs\.example|d1|Customer 1/);
  });
});

describe('caps token --track', () => {
  it('prints a link that opens the parcel, with the 30-day default; revoked, the link stops working', async () => {
    const dir = tempDir();
    // the first caps token of a data folder makes its secret: the hub reads the same one
    const made = await runCli(['token', '--role', 'vendor', '--store', 'acme', '--data', dir], { env: { CAPS_SECRET: undefined } });
    expect(made.code, made.output).toBe(0);
    const keyring = Keyring.load(dir, {});
    const { url } = cleanup.add(await startSecureHub({ keyring }), (h) => h.close());
    const parcel = order('acme', 1);
    const vendor = cleanup.add(new RawClient(url, { auth: { token: made.stdout.trim() } }), (c) => c.close());
    await vendor.connected();
    await expect(vendor.request('pickup', parcel)).resolves.toMatchObject({ ok: true });

    const minted = await runCli(['token', '--track', '--store', 'acme', '--order', parcel.orderId, '--data', dir, '--url', `${url}/`], { env: { CAPS_SECRET: undefined } });
    expect(minted.code, minted.output).toBe(0);
    const link = minted.stdout.trim();
    expect(link).toMatch(new RegExp(`^${url.replace(/[.]/g, '\\.')}/track/[\\w-]+\\.[\\w-]+$`));
    const token = link.split('/').pop() ?? '';
    expect(minted.stderr).toContain(`its token: ${token}`);
    const claims = peekClaims(token);
    expect(claims).toMatchObject({ role: 'tracker', store: 'acme', orderId: parcel.orderId });
    expect((claims?.exp ?? 0) - (claims?.iat ?? 0)).toBe(30 * 86_400);
    expect(minted.stderr).toMatch(/expires \d{4}-\d\d-\d\dT.*--expires-in 30d/);

    const opened = await page(link);
    expect(opened.status).toBe(200);
    expect(opened.type).toMatch(/^text\/html/);
    expect(opened.html).toContain('Waiting for a driver');
    expect(opened.html).toContain(parcel.orderId);

    const revoked = await runCli(['token', 'revoke', '--token', token, '--data', dir]);
    expect(revoked.code, revoked.output).toBe(0);
    keyring.refresh();
    expect((await page(link)).status).toBe(404);
  }, 60_000);

  it('refuses what would not make a working link, with exit code 2', async () => {
    const dir = tempDir();
    const cases: Array<[string[], RegExp]> = [
      [['--track', '--store', 'acme'], /--track needs --store NAME and --order ID/],
      [['--track', '--order', 'o-1'], /--track needs --store NAME and --order ID/],
      [['--track', '--role', 'vendor', '--store', 'acme', '--order', 'o-1'], /cannot be a vendor token/],
      [['--role', 'vendor', '--store', 'acme', '--order', 'o-1'], /--order is for --track/],
      [['--track', '--store', 'acme', '--order', 'o-1', '--url', 'ftp://example.com'], /--url must be/],
      [['--track', '--store', 'driver-x', '--order', 'o-1'], /--store 'driver-x'/],
    ];
    for (const [args, message] of cases) {
      const result = await runCli(['token', '--data', dir, ...args], { env: { CAPS_SECRET: undefined } });
      expect(result.code, `${args.join(' ')}: ${result.output}`).toBe(2);
      expect(result.stderr, args.join(' ')).toMatch(message);
      expect(result.stdout, args.join(' ')).toBe('');
    }
  }, 60_000);
});

describe('POST /api/stores/:store/parcels/:orderId/tracking-link', () => {
  async function link(url: string, store: string, orderId: string, as: TokenSubject | undefined, body?: unknown) {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (as) headers['authorization'] = `Bearer ${tokenFor(as)}`;
    const res = await fetch(`${url}/api/stores/${store}/parcels/${encodeURIComponent(orderId)}/tracking-link`, { method: 'POST', headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    return { status: res.status, body: (await res.json()) as { ok: boolean; data?: { url: string; token: string; expiresAt: string; tokenId: string }; error?: { code: string } } };
  }

  it("makes a working link with that store's vendor token only", async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const parcel = order('acme', 1);
    await handOver(url, parcel);
    const before = Date.now();
    const made = await link(url, 'acme', parcel.orderId, { role: 'vendor', store: 'acme' });
    expect(made.status).toBe(201);
    const data = made.body.data;
    if (!data) throw new Error(`no link: ${JSON.stringify(made.body)}`);
    expect(data.url).toBe(`${url}/track/${data.token}`);
    expect(peekClaims(data.token)).toMatchObject({ role: 'tracker', store: 'acme', orderId: parcel.orderId, jti: data.tokenId });
    expect(Date.parse(data.expiresAt) - before).toBeGreaterThan(30 * 86_400_000 - 60_000);
    expect(Date.parse(data.expiresAt) - before).toBeLessThanOrEqual(30 * 86_400_000 + 1_000);
    const opened = await page(data.url);
    expect(opened.status).toBe(200);
    expect(opened.html).toContain(parcel.orderId);

    const hour = await link(url, 'acme', parcel.orderId, { role: 'vendor', store: 'acme' }, { expiresInSeconds: 3_600 });
    expect(Date.parse(hour.body.data?.expiresAt ?? '') - before).toBeLessThanOrEqual(3_601_000);

    await expect(link(url, 'acme', parcel.orderId, { role: 'vendor', store: 'other' })).resolves.toMatchObject({ status: 403, body: { error: { code: 'CAPS_ERR_FORBIDDEN' } } });
    await expect(link(url, 'acme', parcel.orderId, { role: 'driver', name: 'd1' })).resolves.toMatchObject({ status: 403, body: { error: { code: 'CAPS_ERR_FORBIDDEN' } } });
    await expect(link(url, 'acme', parcel.orderId, { role: 'dashboard' })).resolves.toMatchObject({ status: 403, body: { error: { code: 'CAPS_ERR_FORBIDDEN' } } });
    await expect(link(url, 'acme', parcel.orderId, tracker('acme', parcel.orderId))).resolves.toMatchObject({ status: 403, body: { error: { code: 'CAPS_ERR_FORBIDDEN' } } });
    await expect(link(url, 'acme', parcel.orderId, undefined)).resolves.toMatchObject({ status: 401, body: { error: { code: 'CAPS_ERR_UNAUTHORIZED' } } });
    // another store cannot learn whether acme has a parcel: 403 before any lookup
    await expect(link(url, 'acme', 'acme-order-404', { role: 'vendor', store: 'other' })).resolves.toMatchObject({ status: 403 });
    await expect(link(url, 'acme', 'acme-order-404', { role: 'vendor', store: 'acme' })).resolves.toMatchObject({ status: 404, body: { error: { code: 'CAPS_ERR_NOT_FOUND' } } });
    await expect(link(url, 'acme', parcel.orderId, { role: 'vendor', store: 'acme' }, { expiresInSeconds: 1 })).resolves.toMatchObject({ status: 400, body: { error: { code: 'CAPS_ERR_INVALID_PAYLOAD' } } });
  });

  it("uses the hub's public URL when it has one", async () => {
    const { url } = cleanup.add(await startSecureHub({ publicUrl: 'https://track.example.com/caps/' }), (h) => h.close());
    const parcel = order('acme', 1);
    await handOver(url, parcel);
    const made = await link(url, 'acme', parcel.orderId, { role: 'vendor', store: 'acme' });
    expect(made.body.data?.url).toBe(`https://track.example.com/caps/track/${made.body.data?.token ?? ''}`);
  });
});
