import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_MAX_ATTEMPTS } from '../protocol/lifecycle.js';
import type { TokenSubject } from '../protocol/token.js';
import { Cleanup, RawClient, connectClient, order, startHub, startSecureHub, tokenFor } from './helpers/hub.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

async function get(url: string, path: string, subject?: TokenSubject | string): Promise<{ status: number; body: any }> {
  const token = typeof subject === 'string' ? subject : subject ? tokenFor(subject) : undefined;
  const res = await fetch(`${url}${path}`, token ? { headers: { Authorization: `Bearer ${token}` } } : {});
  const text = await res.text();
  return { status: res.status, body: res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text };
}

/** A secure hub with parcels of two stores in every state, published over real sockets. */
async function hubWithParcels() {
  const hub = cleanup.add(await startSecureHub(), (h) => h.close());
  const driver = await connectClient(cleanup, hub.url, { role: 'driver', name: 'd1' });
  for (const store of ['acme', 'flowers']) {
    // the vendors do not acknowledge, so their store queues keep what was sent
    const vendor = cleanup.add(new RawClient(hub.url, { auth: { token: tokenFor({ role: 'vendor', store }) }, autoAck: false }), (c) => c.close());
    for (let i = 0; i < 5; i++) {
      const parcel = order(store, i);
      await expect(vendor.request('pickup', parcel)).resolves.toMatchObject({ ok: true });
      if (i >= 2) await expect(driver.request('in-transit', parcel)).resolves.toMatchObject({ ok: true });
      if (i >= 4) await expect(driver.request('delivered', parcel)).resolves.toMatchObject({ ok: true });
    }
  }
  return hub;
}

describe('tracking API', () => {
  it('returns a parcel’s timeline: each step with time, driver and store', async () => {
    const { url } = await hubWithParcels();
    const { status, body } = await get(url, `/api/packages/${order('acme', 4).orderId}`, { role: 'dashboard' });
    expect(status).toBe(200);
    expect(body).toMatchObject({ ok: true, data: { ...order('acme', 4), state: 'delivered', driver: 'd1' } });
    expect(body.data.history.map((h: { event: string }) => h.event)).toEqual(['pickup', 'in-transit', 'delivered']);
    for (const step of body.data.history) expect(step).toMatchObject({ store: 'acme', time: expect.any(String) });
    expect(body.data.history[1]).toMatchObject({ driver: 'd1' });
  });

  it('lists a store’s parcels newest first, by status, in pages', async () => {
    const { url } = await hubWithParcels();
    const vendor: TokenSubject = { role: 'vendor', store: 'acme' };
    const all = await get(url, '/api/stores/acme/packages', vendor);
    expect(all.body.data.packages.map((p: { orderId: string }) => p.orderId)).toEqual([4, 3, 2, 1, 0].map((i) => order('acme', i).orderId));
    expect(all.body.data.next).toBeNull();
    const inTransit = await get(url, '/api/stores/acme/packages?status=in-transit', vendor);
    expect(inTransit.body.data.packages.map((p: { orderId: string }) => p.orderId)).toEqual([3, 2].map((i) => order('acme', i).orderId));

    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page = await get(url, `/api/stores/acme/packages?limit=2${cursor ? `&cursor=${cursor}` : ''}`, vendor);
      expect(page.status).toBe(200);
      seen.push(...page.body.data.packages.map((p: { orderId: string }) => p.orderId));
      cursor = page.body.data.next;
      pages++;
    } while (cursor && pages < 10);
    expect(pages).toBe(3);
    expect(seen).toEqual(all.body.data.packages.map((p: { orderId: string }) => p.orderId));
  });

  it('scopes every answer to the token: a store’s token cannot read another store', async () => {
    const { url } = await hubWithParcels();
    const acme: TokenSubject = { role: 'vendor', store: 'acme' };
    await expect(get(url, '/api/stores/flowers/packages', acme)).resolves.toMatchObject({ status: 403, body: { ok: false, error: { code: 'CAPS_ERR_FORBIDDEN' } } });
    await expect(get(url, `/api/packages/${order('flowers', 1).orderId}`, acme)).resolves.toMatchObject({ status: 404, body: { error: { code: 'CAPS_ERR_NOT_FOUND' } } });
    await expect(get(url, '/api/stores/flowers/packages', { role: 'dashboard', store: 'acme' })).resolves.toMatchObject({ status: 403 });
    const stores = await get(url, '/api/stores', acme);
    expect(stores.body.data.stores).toEqual([{ store: 'acme', counts: { pickup: 2, 'in-transit': 2, delivered: 1, failed: 0, returned: 0, cancelled: 0 }, maxAttempts: DEFAULT_MAX_ATTEMPTS }]);
    const queues = await get(url, '/api/queues', acme);
    expect(queues.body.data.queues.map((q: { queue: string }) => q.queue)).toEqual(['acme']);
    expect(queues.body.data.queues[0]).toMatchObject({ depth: 4, oldestAgeSeconds: expect.any(Number) });
    const everything = await get(url, '/api/queues', { role: 'dashboard' });
    expect(everything.body.data.queues.map((q: { queue: string }) => q.queue).sort()).toEqual(['acme', 'driver', 'flowers']);
    await expect(get(url, '/api/stores/acme/packages', { role: 'driver', name: 'd1' })).resolves.toMatchObject({ status: 403 });
  });

  it('tells apart two stores that use the same orderId with ?store=', async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    for (const store of ['acme', 'flowers']) {
      const vendor = cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'vendor', store }) } }), (c) => c.close());
      await expect(vendor.request('pickup', { store, orderId: 'same-id', customer: `Customer of ${store}`, address: '1 Main St' })).resolves.toMatchObject({ ok: true });
    }
    for (const store of ['acme', 'flowers']) {
      await expect(get(url, `/api/packages/same-id?store=${store}`, { role: 'dashboard' })).resolves.toMatchObject({ status: 200, body: { data: { store, customer: `Customer of ${store}` } } });
    }
    await expect(get(url, '/api/packages/same-id?store=nobody', { role: 'dashboard' })).resolves.toMatchObject({ status: 404 });
  });

  it('lists online drivers and what each holds', async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const holder = await connectClient(cleanup, url, { role: 'driver', name: 'slow' }, false);
    const vendor = cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'vendor', store: 'acme' }) } }), (c) => c.close());
    await vendor.request('pickup', order('acme', 1));
    await holder.waitFor('pickup', 1, 'the driver to hold the pickup');
    const { body } = await get(url, '/api/drivers', { role: 'dashboard' });
    expect(body.data.drivers).toEqual([{ name: 'slow', holding: [{ store: 'acme', orderId: order('acme', 1).orderId }] }]);
    // another store's vendor does not learn the names of drivers holding none of its parcels
    const other = await get(url, '/api/drivers', { role: 'vendor', store: 'flowers' });
    expect(other.body.data.drivers).toEqual([]);
    const own = await get(url, '/api/drivers', { role: 'vendor', store: 'acme' });
    expect(own.body.data.drivers).toEqual([{ name: 'slow', holding: [{ store: 'acme', orderId: order('acme', 1).orderId }] }]);
  });

  it('answers bad ids, queries and tokens with their codes and HTTP statuses', async () => {
    const { url } = await hubWithParcels();
    const dash: TokenSubject = { role: 'dashboard' };
    await expect(get(url, '/api/packages/no-such-order', dash)).resolves.toMatchObject({ status: 404, body: { ok: false, error: { code: 'CAPS_ERR_NOT_FOUND' } } });
    await expect(get(url, `/api/packages/${'x'.repeat(300)}`, dash)).resolves.toMatchObject({ status: 400, body: { error: { code: 'CAPS_ERR_INVALID_QUERY' } } });
    for (const query of ['status=lost', 'limit=0', 'limit=500', 'limit=abc', 'cursor=garbage', 'extra=1']) {
      await expect(get(url, `/api/stores/acme/packages?${query}`, dash), query).resolves.toMatchObject({ status: 400, body: { error: { code: 'CAPS_ERR_INVALID_QUERY' } } });
    }
    await expect(get(url, '/api/queues')).resolves.toMatchObject({ status: 401, body: { error: { code: 'CAPS_ERR_UNAUTHORIZED' } } });
    await expect(get(url, '/api/queues', 'tampered.token')).resolves.toMatchObject({ status: 401, body: { error: { code: 'CAPS_ERR_UNAUTHORIZED' } } });
    const expired = tokenFor(dash, { expiresInSeconds: 1, now: Date.now() - 60_000 });
    await expect(get(url, '/api/queues', expired)).resolves.toMatchObject({ status: 401, body: { error: { code: 'CAPS_ERR_TOKEN_EXPIRED' } } });
    await expect(get(url, '/api/nothing-here', dash)).resolves.toMatchObject({ status: 404, body: { error: { code: 'CAPS_ERR_NOT_FOUND' } } });
  });

  it('needs no token in open lab mode', async () => {
    const { url } = cleanup.add(await startHub(), (h) => h.close());
    await expect(get(url, '/api/queues')).resolves.toMatchObject({ status: 200, body: { ok: true } });
  });
});

describe('health, readiness and metrics', () => {
  it('keeps /metrics behind a dashboard token for every store (queue names are store names)', async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    await expect(get(url, '/metrics')).resolves.toMatchObject({ status: 401, body: { error: { code: 'CAPS_ERR_UNAUTHORIZED' } } });
    await expect(get(url, '/metrics', { role: 'vendor', store: 'acme' })).resolves.toMatchObject({ status: 403, body: { error: { code: 'CAPS_ERR_FORBIDDEN' } } });
    await expect(get(url, '/metrics', { role: 'dashboard', store: 'acme' })).resolves.toMatchObject({ status: 403 });
    await expect(get(url, '/metrics', { role: 'dashboard' })).resolves.toMatchObject({ status: 200 });
  });

  it('answers a malformed percent-escape in a path with 400 CAPS_ERR_INVALID_QUERY, not 500', async () => {
    const { url, hub } = cleanup.add(await startSecureHub(), (h) => h.close());
    for (const path of ['/api/packages/%zz', '/api/stores/%E0%A4%A/packages']) {
      const res = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${tokenFor({ role: 'dashboard' })}` } });
      expect(res.status, path).toBe(400);
      expect(await res.json()).toMatchObject({ ok: false, error: { code: 'CAPS_ERR_INVALID_QUERY', message: expect.stringContaining('percent-escape') } });
    }
    expect(hub.metrics.refusedCount('CAPS_ERR_INVALID_QUERY')).toBe(2);
  });

  it('sends security headers with the dashboard and the API: a CSP, no framing, no sniffing, no referrer', async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    for (const path of ['/', '/app.js', '/api/stores', '/healthz']) {
      const res = await fetch(`${url}${path}`);
      expect(res.headers.get('content-security-policy'), path).toMatch(/default-src 'self'.*frame-ancestors 'none'/);
      expect(res.headers.get('x-content-type-options'), path).toBe('nosniff');
      expect(res.headers.get('x-frame-options'), path).toBe('DENY');
      expect(res.headers.get('referrer-policy'), path).toBe('no-referrer');
    }
  });

  it('answers /healthz and /readyz', async () => {
    const { url, hub } = cleanup.add(await startSecureHub(), (h) => h.close());
    await expect(get(url, '/healthz')).resolves.toMatchObject({ status: 200, body: { status: 'ok' } });
    await expect(get(url, '/readyz')).resolves.toMatchObject({ status: 200, body: { status: 'ready', storage: 'memory' } });
    expect(hub.port).toBeGreaterThan(0);
  });

  it('exposes Prometheus text whose counters move with a workload', async () => {
    const before = parseProm((await get((await hubWithParcels()).url, '/metrics', { role: 'dashboard' })).body as string);
    expect(before.get('caps_events_received_total{event="pickup"}')).toBe(10);
    expect(before.get('caps_events_received_total{event="in-transit"}')).toBe(6);
    expect(before.get('caps_events_received_total{event="delivered"}')).toBe(2);
    expect(before.get('caps_pickup_to_delivered_seconds_count')).toBe(2);
    expect(before.get('caps_queue_depth{queue="acme"}')).toBe(4);
    expect(before.get('caps_connected_clients{role="driver"}')).toBe(1);
    expect(before.get('caps_connected_clients{role="vendor"}')).toBe(2);
    expect(before.get('caps_events_sent_total{event="pickup"}')).toBeGreaterThanOrEqual(10);
  });

  it('counts refusals by code', async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const vendor = cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'vendor', store: 'acme' }) } }), (c) => c.close());
    await vendor.request('pickup', { nope: true });
    await vendor.request('pickup', order('other', 1));
    await new RawClient(url).refused().finally(() => undefined);
    const metrics = parseProm((await get(url, '/metrics', { role: 'dashboard' })).body as string);
    expect(metrics.get('caps_refusals_total{code="CAPS_ERR_INVALID_PAYLOAD"}')).toBe(1);
    expect(metrics.get('caps_refusals_total{code="CAPS_ERR_FORBIDDEN"}')).toBe(1);
    expect(metrics.get('caps_refusals_total{code="CAPS_ERR_UNAUTHORIZED"}')).toBe(1);
  });
});

/** Parses Prometheus text exposition; throws on a line that is not a comment or a sample. */
function parseProm(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
    // Prometheus reads NaN in any case (prom-client writes "Nan")
    const match = /^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (-?[\d.e+-]+|nan|\+Inf|-Inf)$/i.exec(line);
    if (!match?.[1] || match[2] === undefined) throw new Error(`not Prometheus text: ${line}`);
    samples.set(match[1], Number(match[2]));
  }
  return samples;
}
