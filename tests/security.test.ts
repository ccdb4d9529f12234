import { io } from 'socket.io-client';
import { WebSocket } from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_REFUSALS_PER_CONNECTION } from '../hub/refusals.js';
import { within } from './helpers/hub-process.js';
import { DriverClient } from '../driver/driver-client.js';
import { signToken, verifyToken } from '../protocol/token.js';
import type { ParcelMessage } from '../protocol/messages.js';
import { VendorClient } from '../vendor/vendor-client.js';
import { Cleanup, RawClient, TEST_SECRET, order, queueDepth, records, startHub, startSecureHub, tokenFor } from './helpers/hub.js';
import { poll, waitUntil } from './helpers/wait.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

function raw(url: string, token?: string, autoAck = true): RawClient {
  return cleanup.add(new RawClient(url, { ...(token !== undefined ? { auth: { token } } : {}), autoAck }), (c) => c.close());
}

describe('tokens', () => {
  it('sign and verify; tampering, another secret and expiry are caught', () => {
    const token = signToken(TEST_SECRET, { role: 'vendor', store: 'acme' });
    expect(verifyToken(TEST_SECRET, token)).toMatchObject({ role: 'vendor', store: 'acme' });
    const [body, sig] = token.split('.');
    const forged = `${Buffer.from(JSON.stringify({ v: 1, role: 'vendor', store: 'other', iat: 1 })).toString('base64url')}.${sig}`;
    expect(() => verifyToken(TEST_SECRET, forged)).toThrow(expect.objectContaining({ code: 'CAPS_ERR_UNAUTHORIZED' }));
    expect(() => verifyToken('another-secret-0123456789', token)).toThrow(expect.objectContaining({ code: 'CAPS_ERR_UNAUTHORIZED' }));
    expect(() => verifyToken(TEST_SECRET, `${body}`)).toThrow(expect.objectContaining({ code: 'CAPS_ERR_UNAUTHORIZED' }));
    const expired = signToken(TEST_SECRET, { role: 'driver', name: 'd1' }, { expiresInSeconds: 60, now: Date.now() - 120_000 });
    expect(() => verifyToken(TEST_SECRET, expired)).toThrow(expect.objectContaining({ code: 'CAPS_ERR_TOKEN_EXPIRED' }));
    const fresh = signToken(TEST_SECRET, { role: 'driver', name: 'd1' }, { expiresInSeconds: 60 });
    expect(verifyToken(TEST_SECRET, fresh)).toMatchObject({ role: 'driver', name: 'd1' });
  });
});

describe('connecting', () => {
  const refusals: Array<[string, () => string | undefined, string]> = [
    ['no token', () => undefined, 'CAPS_ERR_UNAUTHORIZED'],
    ['a malformed token', () => 'not-a-token', 'CAPS_ERR_UNAUTHORIZED'],
    ['a tampered token', () => `${tokenFor({ role: 'vendor', store: 'acme' })}x`, 'CAPS_ERR_UNAUTHORIZED'],
    ['a token of another hub', () => tokenFor({ role: 'vendor', store: 'acme' }, { secret: 'someone-elses-secret-123' }), 'CAPS_ERR_UNAUTHORIZED'],
    ['an expired token', () => tokenFor({ role: 'vendor', store: 'acme' }, { expiresInSeconds: 1, now: Date.now() - 10_000 }), 'CAPS_ERR_TOKEN_EXPIRED'],
  ];

  it.each(refusals)('refuses %s with connect_error and a code, logged and counted', async (_what, token, code) => {
    const { url, logs, hub } = cleanup.add(await startSecureHub(), (h) => h.close());
    const client = raw(url, token());
    await expect(client.refused()).resolves.toMatchObject({ code });
    expect(records(logs, 'REFUSED CONNECTION')).toEqual([expect.objectContaining({ code })]);
    expect(hub.metrics.refusedCount(code as 'CAPS_ERR_UNAUTHORIZED')).toBe(1);
  });

  it('in open lab mode lets clients in without a token, but still checks a token that is sent', async () => {
    const { url } = cleanup.add(await startHub({ secret: TEST_SECRET }), (h) => h.close());
    await raw(url).connected();
    await expect(raw(url, 'forged.token').refused()).resolves.toMatchObject({ code: 'CAPS_ERR_UNAUTHORIZED' });
    await raw(url, tokenFor({ role: 'vendor', store: 'acme' })).connected();
  });
});

describe('names', () => {
  it('refuses a store whose name means the driver pool, and control characters in names', async () => {
    expect(() => tokenFor({ role: 'vendor', store: 'x' })).not.toThrow();
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    // a token for such a store cannot even be verified (its claims are refused)
    await expect(raw(url, tokenFor({ role: 'vendor', store: 'driver' })).refused()).resolves.toMatchObject({ code: 'CAPS_ERR_UNAUTHORIZED' });
    await expect(raw(url, tokenFor({ role: 'vendor', store: 'Driverly' })).refused()).resolves.toMatchObject({ code: 'CAPS_ERR_UNAUTHORIZED' });
    const lab = cleanup.add(await startHub(), (h) => h.close());
    const client = raw(lab.url);
    await expect(client.request('pickup', order('driver', 1))).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD', message: expect.stringContaining('driver pool') } });
    await expect(client.request('pickup', { ...order('acme', 1), store: 'ac\u0000me' })).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD', message: expect.stringContaining('control characters') } });
  });

  it('refuses a pickup whose orderId holds a bidi override, logs what a client sent escaped, and keeps serving (finding 6)', async () => {
    const hub = cleanup.add(await startHub(), (h) => h.close());
    const client = raw(hub.url);
    await client.connected();
    const spoofed = { ...order('acme', 1), orderId: 'invoice-\u202etxt.exe' };
    await expect(client.request('pickup', spoofed)).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD', message: expect.stringContaining('orderId: must not contain control characters') } });
    // lab mode's loose reading of a payload reaches the same refusal
    await expect(client.request('PICKUP', { storeName: 'acme', orderID: 'o-\u2066x', customer: 'c', address: 'a' })).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD' } });
    // an event name that would erase the hub's log line, print a fake STOPPED, clear the screen (C1 CSI) and reverse what follows
    const forged = '\x1b[2K\rSTOPPED \u009b2J\u202e';
    await expect(client.request(forged, {})).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_UNKNOWN_EVENT' } });
    expect(hub.hub.metrics.refusedCount('CAPS_ERR_INVALID_PAYLOAD')).toBe(2);
    // the hub stays up: the same connection and a new one are served
    await expect(client.request('pickup', order('acme', 2))).resolves.toMatchObject({ ok: true });
    const other = raw(hub.url);
    await other.connected();
    await expect(other.request('pickup', order('acme', 3))).resolves.toMatchObject({ ok: true });
    // every log line shows what was sent, escaped
    for (const line of hub.logs.all) expect(line).not.toMatch(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u);
    expect(records(hub.logs, 'REFUSED')).toContainEqual(expect.objectContaining({ code: 'CAPS_ERR_UNKNOWN_EVENT', event: forged }));
  });

  it('keeps a socket whose token is valid for 30 days connected (no timer that overflows past 24.8 days)', async () => {
    const { url, logs } = cleanup.add(await startSecureHub(), (h) => h.close());
    const client = raw(url, tokenFor({ role: 'vendor', store: 'acme' }, { expiresInSeconds: 30 * 86_400 }));
    await client.connected();
    // an overflowing timer fires after 1 ms: the socket would be gone before these answers
    for (let n = 1; n <= 3; n++) await expect(client.request('pickup', order('acme', n))).resolves.toMatchObject({ ok: true });
    expect(client.socket.connected).toBe(true);
    expect(records(logs, 'TOKEN EXPIRED')).toHaveLength(0);
  });

  it('refuses any namespace but /caps, Socket.IO\'s own / included, with a code and one log line', async () => {
    for (const hub of [cleanup.add(await startHub(), (h) => h.close()), cleanup.add(await startSecureHub(), (h) => h.close())]) {
      const root = io(hub.url, { forceNew: true, reconnection: false, transports: ['websocket'] });
      cleanup.add(root, (s) => s.close());
      const error = await new Promise<Error & { data?: { code?: string } }>((resolve, reject) => {
        root.once('connect', () => reject(new Error('the root namespace let a client in')));
        root.once('connect_error', resolve);
      });
      expect(error.data?.code).toBe('CAPS_ERR_NOT_FOUND');
      expect(error.message).toContain('/caps');
      expect(hub.hub.metrics.refusedCount('CAPS_ERR_NOT_FOUND')).toBe(1);
      expect(records(hub.logs, 'REFUSED CONNECTION')).toEqual([expect.objectContaining({ code: 'CAPS_ERR_NOT_FOUND', namespace: '/' })]);
    }
  });

  it('closes a connection that keeps sending refused CONNECTs, having logged the first only', async () => {
    const hub = cleanup.add(await startSecureHub(), (h) => h.close());
    // an attacker's client: raw Socket.IO packets on one websocket, a CONNECT with a bad token each time
    const ws = new WebSocket(`${hub.url.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket`);
    cleanup.add(ws, (w) => w.terminate());
    const packets: string[] = [];
    ws.on('message', (data: Buffer) => packets.push(data.toString()));
    const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
    await within(new Promise((resolve) => ws.once('open', resolve)), 5_000, 'the websocket to open');
    let isClosed = false;
    void closed.then(() => {
      isClosed = true;
    });
    const refusals = (): string[] => packets.filter((p) => p.startsWith('44/caps,'));
    // one CONNECT at a time, each waiting for its answer or the close
    for (let n = 1; n <= 10 && !isClosed; n++) {
      ws.send('40/caps,{"token":"not-a-token"}');
      await within(
        new Promise<void>((resolve) => {
          const check = (): void => {
            if (isClosed || refusals().length >= n) resolve();
            else setImmediate(check);
          };
          check();
        }),
        5_000,
        `the answer to CONNECT ${n} or the close`,
      );
    }
    await within(closed, 5_000, 'the hub to close the websocket after its refused CONNECTs');
    expect(refusals()).toHaveLength(MAX_REFUSALS_PER_CONNECTION);
    expect(refusals()[0]).toContain('CAPS_ERR_UNAUTHORIZED');
    expect(records(hub.logs, 'REFUSED CONNECTION')).toHaveLength(1);
    expect(records(hub.logs, 'CONNECTION CLOSED')).toHaveLength(1);
  });

  it('lets a driver acknowledge only the pickups it holds, and tells it nothing of orders not given to it', async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const vendor = raw(url, tokenFor({ role: 'vendor', store: 'acme' }));
    const d1 = raw(url, tokenFor({ role: 'driver', name: 'd1' }), false);
    const d2 = raw(url, tokenFor({ role: 'driver', name: 'd2' }), false);
    await Promise.all([vendor.connected(), d1.connected(), d2.connected()]);
    await expect(vendor.request('pickup', order('acme', 1))).resolves.toMatchObject({ ok: true });
    const [holder, other] = await poll(() => (d1.of('pickup').length > 0 ? [d1, d2] : d2.of('pickup').length > 0 ? [d2, d1] : undefined), 'one of the drivers to be handed the pickup');
    const messageId = holder.of('pickup')[0]?.messageId ?? '';
    await expect(other.request('received', { clientId: 'driver', messageId })).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_NOT_DISPATCHED' } });
    const dashboard = tokenFor({ role: 'dashboard' });
    expect(await queueDepth(url, 'driver', dashboard)).toBe(1);
    await expect(holder.request('received', { clientId: 'driver', messageId })).resolves.toMatchObject({ ok: true, data: { removed: true } });

    // an order that exists (not given to this driver) and one that does not: the same answer
    const exists = await other.request('in-transit', order('acme', 1));
    const invented = await other.request('in-transit', order('acme', 99));
    expect(exists).toMatchObject({ ok: false, error: { code: 'CAPS_ERR_NOT_DISPATCHED' } });
    expect(invented).toMatchObject({ ok: false, error: { code: 'CAPS_ERR_NOT_DISPATCHED' } });
  });

  it('shows a store’s dashboard and vendors only the drivers holding that store’s parcels, and the store’s own counts', async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const acme = raw(url, tokenFor({ role: 'vendor', store: 'acme' }));
    const other = raw(url, tokenFor({ role: 'vendor', store: 'other' }));
    const d1 = raw(url, tokenFor({ role: 'driver', name: 'd1' }), false);
    await Promise.all([acme.connected(), other.connected(), d1.connected()]);
    await expect(other.request('pickup', order('other', 1))).resolves.toMatchObject({ ok: true });
    await d1.waitFor('pickup', 1, 'd1 to be handed the other store’s pickup');
    const drivers = async (token: string): Promise<unknown> => ((await (await fetch(`${url}/api/drivers`, { headers: { authorization: `Bearer ${token}` } })).json()) as { data: { drivers: unknown } }).data.drivers;
    expect(await drivers(tokenFor({ role: 'vendor', store: 'acme' }))).toEqual([]);
    expect(await drivers(tokenFor({ role: 'dashboard', store: 'acme' }))).toEqual([]);
    expect(await drivers(tokenFor({ role: 'vendor', store: 'other' }))).toEqual([{ name: 'd1', holding: [expect.objectContaining({ orderId: 'other-order-1' })] }]);
    expect(await drivers(tokenFor({ role: 'dashboard' }))).toEqual([{ name: 'd1', holding: [expect.objectContaining({ orderId: 'other-order-1' })] }]);

    const board = raw(url, tokenFor({ role: 'dashboard', store: 'acme' }));
    const stats = await within(new Promise<{ clients: Record<string, number>; drivers: unknown[] }>((resolve) => board.socket.once('stats', resolve)), 5_000, 'the acme dashboard’s first stats');
    expect(stats.drivers).toEqual([]);
    expect(stats.clients).toEqual({ vendor: 1, driver: 0, dashboard: 0, unknown: 0 });
    // the hub's whole event rate is not one store's to see
    expect(stats).not.toHaveProperty('eventsPerSecond');
  });

  it('disconnects a socket when its token expires', async () => {
    const { url, logs } = cleanup.add(await startSecureHub(), (h) => h.close());
    // a token with one to two seconds left to live (expiry is in whole seconds)
    const token = tokenFor({ role: 'vendor', store: 'acme' }, { expiresInSeconds: 2 });
    const client = raw(url, token);
    await client.connected();
    await waitUntil(client.socket, 'disconnect', () => (client.socket.connected ? undefined : true), 'the hub to disconnect the socket when its token expires', 5_000);
    expect(records(logs, 'TOKEN EXPIRED')).toHaveLength(1);
  });
});

describe('what each role may do', () => {
  async function setup() {
    const hub = cleanup.add(await startSecureHub(), (h) => h.close());
    const vendor = raw(hub.url, tokenFor({ role: 'vendor', store: 'acme' }));
    const driver = raw(hub.url, tokenFor({ role: 'driver', name: 'd1' }));
    await Promise.all([vendor.connected(), driver.connected()]);
    return { ...hub, vendor, driver };
  }

  it('refuses a pickup whose payload names another store, and relays nothing', async () => {
    const { vendor, driver, hub } = await setup();
    await expect(vendor.request('pickup', order('other-store', 1))).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_FORBIDDEN' } });
    await expect(vendor.request('pickup', { event: 'pickup', clientId: 'acme', order: order('other-store', 2) })).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_FORBIDDEN' } });
    await driver.request('join', 'driver');
    expect(driver.received).toEqual([]);
    expect(hub.metrics.refusedCount('CAPS_ERR_FORBIDDEN')).toBe(2);
  });

  it('refuses a vendor publishing driver steps, a driver publishing pickups, and a dashboard publishing anything', async () => {
    const { url, vendor, driver } = await setup();
    await vendor.request('pickup', order('acme', 1));
    for (const event of ['in-transit', 'delivered']) {
      await expect(vendor.request(event, order('acme', 1))).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_FORBIDDEN' } });
    }
    await expect(driver.request('pickup', order('acme', 2))).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_FORBIDDEN' } });
    const dashboard = raw(url, tokenFor({ role: 'dashboard' }));
    await dashboard.connected();
    for (const event of ['pickup', 'in-transit', 'delivered']) {
      await expect(dashboard.request(event, order('acme', 1))).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_FORBIDDEN' } });
    }
    await expect(dashboard.request('join', 'acme')).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_FORBIDDEN' } });
  });

  it('refuses a driver reporting a parcel that was not dispatched to it', async () => {
    const { url, vendor, driver } = await setup();
    const parcel = order('acme', 1);
    await vendor.request('pickup', parcel);
    await driver.waitFor('pickup', 1, 'd1 to get the pickup');
    const other = raw(url, tokenFor({ role: 'driver', name: 'd2' }));
    await other.connected();
    await expect(other.request('in-transit', parcel)).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_NOT_DISPATCHED' } });
    await expect(other.request('delivered', parcel)).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_NOT_DISPATCHED' } });
    await expect(driver.request('in-transit', parcel)).resolves.toMatchObject({ ok: true });
    await expect(driver.request('delivered', parcel)).resolves.toMatchObject({ ok: true });
  });

  it('keeps a vendor to its own room and queue: join, getAll and received of another store are refused', async () => {
    const { vendor } = await setup();
    await expect(vendor.request('join', 'acme')).resolves.toMatchObject({ ok: true });
    for (const [event, payload] of [
      ['join', 'other-store'],
      ['join', { store: 'other-store' }],
      ['join', 'driver'],
      ['getAll', { clientId: 'other-store' }],
      ['getAll', { queueId: 'DRIVER' }],
      ['received', { clientId: 'other-store', messageId: 'm1' }],
    ] as const) {
      await expect(vendor.request(event, payload), `${event} ${JSON.stringify(payload)}`).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_FORBIDDEN' } });
    }
  });

  it('ignores what a client claims in the handshake: the token decides', async () => {
    const { url } = await setup();
    const sneaky = cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'vendor', store: 'acme' }), role: 'driver', name: 'boss', store: 'other' } }), (c) => c.close());
    await expect(sneaky.request('join', 'driver')).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_FORBIDDEN' } });
    await expect(sneaky.request('pickup', order('acme', 9))).resolves.toMatchObject({ ok: true });
  });
});

describe('cross-tenant canary', () => {
  it('never lets a vendor of one store see anything of another store', async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const stores = ['store-a', 'store-b'] as const;
    const vendors = stores.map((store) => cleanup.add(new VendorClient({ url, store, token: tokenFor({ role: 'vendor', store }), log: () => undefined }), (v) => v.close()));
    const drivers = ['d1', 'd2'].map((name) => cleanup.add(new DriverClient({ url, name, delay: 0, token: tokenFor({ role: 'driver', name }), log: () => undefined }), (d) => d.close()));
    // a second connection of store A that records every message it is ever sent
    const canary = raw(url, tokenFor({ role: 'vendor', store: 'store-a' }), false);
    await Promise.all([...vendors.map((v) => v.start()), ...drivers.map((d) => d.start()), canary.connected()]);
    const delivered = new Map<string, ParcelMessage[]>(stores.map((s) => [s, []]));
    vendors.forEach((v, i) => v.on('delivered', (m) => delivered.get(stores[i] ?? '')?.push(m)));

    await Promise.all(vendors.flatMap((v) => Array.from({ length: 15 }, () => v.publish())));
    for (const [i, v] of vendors.entries()) {
      await waitUntil(v, 'delivered', () => ((delivered.get(stores[i] ?? '')?.length ?? 0) >= 15 ? true : undefined), `${stores[i]} to hear 15 deliveries`);
    }
    // replay: the canary asks for its queue again, and tries the other store's
    await expect(canary.request('getAll', { clientId: 'store-a' })).resolves.toMatchObject({ ok: true });
    await expect(canary.request('getAll', { clientId: 'store-b' })).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_FORBIDDEN' } });
    await canary.request('join', 'store-a');

    // and over the HTTP API: B's list is refused, B's parcels are "not found", A's list holds only A's
    const asA = { headers: { Authorization: `Bearer ${tokenFor({ role: 'vendor', store: 'store-a' })}` } };
    expect((await fetch(`${url}/api/stores/store-b/packages`, asA)).status).toBe(403);
    const someOfB = delivered.get('store-b')?.[0]?.orderId ?? '';
    expect((await fetch(`${url}/api/packages/${someOfB}`, asA)).status).toBe(404);
    const listA = (await (await fetch(`${url}/api/stores/store-a/packages?limit=100`, asA)).json()) as { data: { packages: Array<{ store: string }> } };
    expect(listA.data.packages.length).toBe(15);
    expect(listA.data.packages.every((p) => p.store === 'store-a')).toBe(true);
    const visible = (await (await fetch(`${url}/api/stores`, asA)).json()) as { data: { stores: Array<{ store: string }> } };
    expect(visible.data.stores.map((x) => x.store)).toEqual(['store-a']);

    expect(canary.received.length).toBeGreaterThanOrEqual(30);
    expect(canary.received.filter((r) => r.payload.store !== 'store-a' || r.payload.order.store !== 'store-a')).toEqual([]);
    expect(delivered.get('store-a')?.every((m) => m.store === 'store-a')).toBe(true);
    expect(delivered.get('store-b')?.every((m) => m.store === 'store-b')).toBe(true);
  });
});

describe('hostile input', () => {
  it('refuses a payload with a __proto__ key and pollutes nothing', async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const vendor = raw(url, tokenFor({ role: 'vendor', store: 'acme' }));
    const payload = JSON.parse('{"__proto__": {"polluted": true}, "store": "acme", "orderId": "o1", "customer": "c", "address": "a"}') as object;
    await expect(vendor.request('pickup', payload)).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD' } });
    const ctor = JSON.parse('{"constructor": {"prototype": {"polluted": true}}, "store": "acme", "orderId": "o1", "customer": "c", "address": "a"}') as object;
    await expect(vendor.request('pickup', ctor)).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD' } });
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });

  it('limits events per token, not per socket: 10 sockets of one token together stay under the limit', async () => {
    const { url, hub } = cleanup.add(await startSecureHub({ rateLimit: { ratePerSecond: 1, burst: 20, cutOffAfter: 10_000 } }), (h) => h.close());
    const token = tokenFor({ role: 'vendor', store: 'acme' });
    const sockets = Array.from({ length: 10 }, () => raw(url, token));
    await Promise.all(sockets.map((c) => c.connected()));
    const answers = await Promise.all(sockets.flatMap((c) => Array.from({ length: 10 }, () => c.request<{ ok: boolean }>('join', 'acme'))));
    // one bucket for the token: its burst of 20 (and the odd token refilled meanwhile), not 10 × 20
    const oks = answers.filter((a) => a.ok).length;
    expect(oks).toBeGreaterThanOrEqual(20);
    expect(oks).toBeLessThan(30);
    expect(hub.metrics.refusedCount('CAPS_ERR_RATE_LIMITED')).toBe(100 - oks);
    // another token has its own
    const other = raw(url, tokenFor({ role: 'vendor', store: 'calm' }));
    await expect(other.request('join', 'calm')).resolves.toMatchObject({ ok: true });
  });

  it('disconnects a client that keeps going over the limit, even while its bucket trickles back', async () => {
    // 50 events/s allowed; the client sends ~10 times that: the old rule (refusals in a row) never fired,
    // since every refill of one token reset its count
    const { url, logs } = cleanup.add(await startSecureHub({ rateLimit: { ratePerSecond: 50, burst: 50, cutOffAfter: 200 } }), (h) => h.close());
    const flood = raw(url, tokenFor({ role: 'vendor', store: 'acme' }));
    await flood.connected();
    let sent = 0;
    const timer = setInterval(() => {
      for (let i = 0; i < 10; i++) if (flood.socket.connected) flood.socket.emit('join', 'acme', () => undefined);
      sent += 10;
    }, 20);
    cleanup.add(timer, (t) => clearInterval(t));
    await waitUntil(flood.socket, 'disconnect', () => (flood.socket.connected ? undefined : true), 'the flooder to be cut off', 10_000);
    expect(records(logs, 'CUT OFF')).toHaveLength(1);
    expect(sent).toBeGreaterThan(200);
  });

  it('caps connections per token, per address and in total, with CAPS_ERR_TOO_MANY_CONNECTIONS', async () => {
    const { url, hub, logs } = cleanup.add(await startSecureHub({ maxConnections: 6, maxConnectionsPerToken: 2, maxConnectionsPerAddress: 3, allowAnonymous: true }), (h) => h.close());
    const token = tokenFor({ role: 'driver', name: 'd1' });
    await Promise.all([raw(url, token).connected(), raw(url, token).connected()]);
    await expect(raw(url, token).refused()).resolves.toMatchObject({ code: 'CAPS_ERR_TOO_MANY_CONNECTIONS' });
    // anonymous clients are counted by address (all of these come from 127.0.0.1)
    await Promise.all([raw(url).connected(), raw(url).connected(), raw(url).connected()]);
    await expect(raw(url).refused()).resolves.toMatchObject({ code: 'CAPS_ERR_TOO_MANY_CONNECTIONS' });
    // 5 in: one more token client is the 6th, then the hub is full
    const sixth = raw(url, tokenFor({ role: 'driver', name: 'd2' }));
    await sixth.connected();
    await expect(raw(url, tokenFor({ role: 'driver', name: 'd3' })).refused()).resolves.toMatchObject({ code: 'CAPS_ERR_TOO_MANY_CONNECTIONS' });
    expect(hub.metrics.refusedCount('CAPS_ERR_TOO_MANY_CONNECTIONS')).toBe(3);
    // a client that leaves frees its place
    const gone = records(logs, 'DISCONNECTED').length;
    sixth.close();
    await poll(() => (records(logs, 'DISCONNECTED').length > gone ? true : undefined), 'the hub to see the sixth client leave');
    await raw(url, tokenFor({ role: 'driver', name: 'd4' })).connected();
  });

  it('holds no more connections of a token than its cap, even when its CONNECTs come in one burst on one websocket', async () => {
    const { url } = cleanup.add(await startSecureHub({ maxConnectionsPerToken: 2 }), (h) => h.close());
    const ws = new WebSocket(`${url.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket`);
    ws.on('error', () => undefined);
    cleanup.add(ws, (w) => w.terminate());
    const packets: string[] = [];
    ws.on('message', (data: Buffer) => packets.push(data.toString()));
    await within(new Promise((resolve) => ws.once('open', resolve)), 5_000, 'the websocket to open');
    const token = tokenFor({ role: 'driver', name: 'burst' });
    for (let n = 0; n < 10; n++) ws.send(`40/caps,${JSON.stringify({ token })}`);
    await poll(() => (packets.filter((p) => p.startsWith('40/caps,') || p.startsWith('44/caps,')).length >= 3 || ws.readyState !== ws.OPEN ? true : undefined), 'the hub to answer the burst');
    expect(packets.filter((p) => p.startsWith('40/caps,')).length).toBeLessThanOrEqual(2);
  });

  it('tracks the expiry of connected sockets only: refused connects leave nothing behind', async () => {
    const { url, logs } = cleanup.add(await startSecureHub({ maxConnectionsPerToken: 1 }), (h) => h.close());
    const token = tokenFor({ role: 'vendor', store: 'acme' }, { expiresInSeconds: 2 });
    const first = raw(url, token);
    await first.connected();
    for (let n = 0; n < 4; n++) await expect(raw(url, token).refused()).resolves.toMatchObject({ code: 'CAPS_ERR_TOO_MANY_CONNECTIONS' });
    await waitUntil(first.socket, 'disconnect', () => (first.socket.connected ? undefined : true), 'the connected socket to be dropped when its token expires', 5_000);
    expect(records(logs, 'TOKEN EXPIRED')).toHaveLength(1);
  });

  it('slows a flooding client with CAPS_ERR_RATE_LIMITED, then cuts it off; others see no change', async () => {
    const { url, logs, hub } = cleanup.add(await startSecureHub({ rateLimit: { ratePerSecond: 5, burst: 10, cutOffAfter: 40 } }), (h) => h.close());
    const flood = raw(url, tokenFor({ role: 'vendor', store: 'acme' }));
    const calm = raw(url, tokenFor({ role: 'vendor', store: 'calm' }));
    await Promise.all([flood.connected(), calm.connected()]);
    const answers: unknown[] = [];
    const cut = waitUntil(flood.socket, 'disconnect', () => (flood.socket.connected ? undefined : true), 'the flooding client to be cut off');
    for (let i = 0; i < 100; i++) flood.socket.emit('join', 'acme', (r: unknown) => answers.push(r));
    await cut;
    // the burst goes through (acks may arrive in any order), the rest is refused until the cut
    const oks = answers.filter((a) => (a as { ok: boolean }).ok).length;
    expect(oks).toBeGreaterThanOrEqual(10);
    expect(oks).toBeLessThan(15);
    expect(answers.filter((a) => (a as { error?: { code: string } }).error?.code === 'CAPS_ERR_RATE_LIMITED').length).toBeGreaterThanOrEqual(30);
    expect(hub.metrics.refusedCount('CAPS_ERR_RATE_LIMITED')).toBeGreaterThanOrEqual(40);
    expect(records(logs, 'CUT OFF')).toHaveLength(1);
    // one REFUSED line per run of refusals, not one per event
    expect(records(logs, 'REFUSED').filter((r) => r['code'] === 'CAPS_ERR_RATE_LIMITED')).toHaveLength(1);
    await expect(calm.request('pickup', order('calm', 1))).resolves.toMatchObject({ ok: true });
  });
});
