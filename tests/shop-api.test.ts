import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Router } from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import type { ApiOptions } from '../hub/http-api.js';
import { trackingApi } from '../hub/http-api.js';
import type { HttpPublishOptions } from '../hub/http-publish.js';
import { pickupRoute } from '../hub/http-publish.js';
import { OPENAPI } from '../hub/openapi.js';
import type { PublishContext } from '../hub/publish.js';
import { keyOrderId, shopApi } from '../hub/shop-api.js';
import type { TrackingPageOptions } from '../hub/tracking-page.js';
import { trackingPage } from '../hub/tracking-page.js';
import { webhookRoutes } from '../hub/webhooks/routes.js';
import type { WebhookRoutesOptions } from '../hub/webhooks/routes.js';
import type { TokenSubject } from '../protocol/token.js';
import { Cleanup, connectClient, startSecureHub } from './helpers/hub.js';
import { api } from './helpers/api.js';
import type { ApiAnswer } from './helpers/api.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** POST /api/stores/:store/parcels as the store's vendor (or `as`); `raw`: a body sent as it is. */
function create(url: string, store: string, body: unknown, options: { as?: TokenSubject; key?: string; raw?: string } = {}): Promise<ApiAnswer> {
  return api(url, 'POST', `/stores/${store}/parcels`, options.raw ?? body, options.as ?? { role: 'vendor', store }, options.key !== undefined ? { 'idempotency-key': options.key } : {});
}

const ORDER = { customer: 'Zoë Ångström', address: '1 Harbour Road' };

describe('POST /api/stores/:store/parcels', () => {
  it('creates a parcel that reaches a driver; sent again, it is answered 200 with the parcel as it is', async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const driver = await connectClient(cleanup, url, { role: 'driver', name: 'd1' }, false);
    const first = await create(url, 'acme', { ...ORDER, orderId: 'shop-1' });
    expect(first.status).toBe(201);
    expect(first.body).toMatchObject({ ok: true, data: { status: 'created', store: 'acme', orderId: 'shop-1', state: 'pickup', customer: ORDER.customer } });
    await driver.waitFor('pickup', 1, 'the driver to be handed the parcel created over HTTP');
    const again = await create(url, 'acme', { ...ORDER, orderId: 'shop-1' });
    expect(again.status).toBe(200);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(again.body).toMatchObject({ ok: true, data: { status: 'existing', orderId: 'shop-1' } });
    expect(driver.of('pickup')).toHaveLength(1);
  });

  it('names a parcel without an orderId by its Idempotency-Key, across a hub restart; the key with another body is 422', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'caps-shop-'));
    cleanup.add(dir, (d) => rmSync(d, { recursive: true, force: true }));
    const first = await startSecureHub({ storage: 'sqlite', dataDir: dir, sync: 'normal' });
    const made = await create(first.url, 'acme', ORDER, { key: 'checkout-7781' });
    expect(made.status).toBe(201);
    expect(made.body.data?.['orderId']).toBe(keyOrderId('acme', 'checkout-7781'));
    await first.close();

    const second = cleanup.add(await startSecureHub({ storage: 'sqlite', dataDir: dir, sync: 'normal' }), (h) => h.close());
    const retried = await create(second.url, 'acme', ORDER, { key: 'checkout-7781' });
    expect(retried.status).toBe(200);
    expect(retried.body.data).toMatchObject({ status: 'existing', orderId: keyOrderId('acme', 'checkout-7781') });
    const other = await create(second.url, 'acme', { ...ORDER, address: '2 Other Street' }, { key: 'checkout-7781' });
    expect(other.status).toBe(422);
    expect(other.body.error).toMatchObject({ code: 'CAPS_ERR_INVALID_PAYLOAD', message: expect.stringContaining('another parcel body') });
    // without a key or an orderId, each request is a parcel of its own
    const a = await create(second.url, 'acme', ORDER);
    const b = await create(second.url, 'acme', ORDER);
    expect([a.status, b.status]).toEqual([201, 201]);
    expect(a.body.data?.['orderId']).not.toBe(b.body.data?.['orderId']);
  });

  it('refuses what it cannot take with coded errors: another store, a driver, bad JSON, a missing field, a bad key', async () => {
    const { url, hub } = cleanup.add(await startSecureHub(), (h) => h.close());
    await expect(create(url, 'acme', ORDER, { as: { role: 'vendor', store: 'other' } })).resolves.toMatchObject({ status: 403, body: { error: { code: 'CAPS_ERR_FORBIDDEN' } } });
    await expect(create(url, 'acme', ORDER, { as: { role: 'driver', name: 'd1' } })).resolves.toMatchObject({ status: 403, body: { error: { code: 'CAPS_ERR_FORBIDDEN' } } });
    await expect(create(url, 'acme', undefined, { raw: '{"customer": ' })).resolves.toMatchObject({ status: 400, body: { error: { code: 'CAPS_ERR_INVALID_PAYLOAD' } } });
    await expect(create(url, 'acme', { address: 'x' })).resolves.toMatchObject({ status: 400, body: { error: { code: 'CAPS_ERR_INVALID_PAYLOAD', message: expect.stringContaining('customer') } } });
    await expect(create(url, 'acme', { ...ORDER, store: 'other' })).resolves.toMatchObject({ status: 400, body: { error: { code: 'CAPS_ERR_INVALID_PAYLOAD' } } });
    await expect(create(url, 'acme', ORDER, { key: 'x'.repeat(300) })).resolves.toMatchObject({ status: 400, body: { error: { code: 'CAPS_ERR_INVALID_PAYLOAD' } } });
    expect(hub.metrics.refusedCount('CAPS_ERR_INVALID_PAYLOAD')).toBe(4);
    expect(hub.metrics.refusedCount('CAPS_ERR_FORBIDDEN')).toBe(2);
  });
});

/** Every route of a router, as `METHOD path`. */
function routesOf(router: Router, prefix: string): string[] {
  const out: string[] = [];
  for (const layer of router.stack as Array<{ route?: { path: string; methods: Record<string, boolean> } }>) {
    if (!layer.route) continue;
    for (const [method, on] of Object.entries(layer.route.methods)) if (on && method !== '_all') out.push(`${method.toUpperCase()} ${prefix}${layer.route.path}`);
  }
  return out;
}

describe('the OpenAPI document', () => {
  it('is served at /api/openapi.json and lists exactly the routes the hub has', async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const served = (await (await fetch(`${url}/api/openapi.json`)).json()) as typeof OPENAPI;
    expect(served.openapi).toBe('3.1.0');
    const documented = Object.entries(served.paths)
      .flatMap(([path, ops]) => Object.keys(ops).map((method) => `${method.toUpperCase()} ${path.replace(/\{(\w+)\}/g, ':$1')}`))
      .sort();
    // the routers, built for their routes only (nothing is called)
    const ctx = {} as PublishContext;
    const options = { keyring: undefined, allowAnonymous: false, maxPayloadBytes: 1 } as HttpPublishOptions;
    const routed = [
      ...routesOf(trackingApi({} as ApiOptions), '/api'),
      ...routesOf(shopApi(ctx, options), '/api'),
      ...routesOf(pickupRoute(ctx, options), ''),
      ...routesOf(trackingPage({} as TrackingPageOptions), ''),
      ...routesOf(webhookRoutes({} as WebhookRoutesOptions), '/api'),
      // the hub's own, outside the routers
      'GET /api/openapi.json',
      'GET /healthz',
      'GET /readyz',
      'GET /metrics',
    ].sort();
    expect(documented).toEqual(routed);
    // and those outside the routers are really there
    for (const path of ['/api/openapi.json', '/healthz', '/readyz', '/metrics']) expect((await fetch(`${url}${path}`)).status, path).not.toBe(404);
  });
});
