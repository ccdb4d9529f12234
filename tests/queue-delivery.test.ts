import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DriverClient } from '../driver/driver-client.js';
import type { HubOptions } from '../hub/hub.js';
import type { ParcelMessage } from '../protocol/messages.js';
import { VendorClient } from '../vendor/vendor-client.js';
import { Cleanup, RawClient, order, records, startHub } from './helpers/hub.js';
import { waitUntil } from './helpers/wait.js';

/**
 * The queue's own guarantees, with exactly-one dispatch (the default with tokens; these anonymous
 * hubs ask for it, since the open lab mode's default is the lab's broadcast).
 */
const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** Both durable and in-memory storage must deliver the same way. */
const storages: Array<[string, () => Partial<HubOptions>]> = [
  ['memory', () => ({ storage: 'memory' })],
  [
    'sqlite',
    () => {
      const dir = mkdtempSync(join(tmpdir(), 'caps-queue-'));
      cleanup.add(dir, (d) => rmSync(d, { recursive: true, force: true }));
      return { storage: 'sqlite', dataDir: dir };
    },
  ],
];

function vendor(url: string, store: string): VendorClient {
  return cleanup.add(new VendorClient({ url, store, interval: 10, ackTimeoutMs: 2_000, log: () => undefined }), (v) => v.close());
}
function driver(url: string, name: string): DriverClient {
  return cleanup.add(new DriverClient({ url, name, delay: 0, ackTimeoutMs: 2_000, log: () => undefined }), (d) => d.close());
}
function raw(url: string, auth?: Record<string, string>, autoAck = true): RawClient {
  return cleanup.add(new RawClient(url, { ...(auth ? { auth } : {}), autoAck }), (c) => c.close());
}
function gone(client: RawClient): Promise<unknown> {
  const done = waitUntil(client.socket, 'disconnect', () => (client.socket.connected ? undefined : true), 'the client to disconnect');
  client.close();
  return done;
}

describe.each(storages)('queue delivery with the %s store', (_kind, storeOptions) => {
  it('gives a vendor that was away every message of its store, in order, when it returns', async () => {
    const { url } = cleanup.add(await startHub({ dispatch: 'one', ...storeOptions() }), (h) => h.close());
    const publisher = raw(url, { role: 'vendor', store: 'acme' });
    await publisher.connected();
    const orders = Array.from({ length: 5 }, (_, i) => order('acme', i));
    for (const o of orders) await expect(publisher.request('pickup', o)).resolves.toMatchObject({ ok: true });
    await gone(publisher);

    const d = driver(url, 'd1');
    const deliveredByDriver: string[] = [];
    d.on('delivered', (m) => deliveredByDriver.push(m.orderId));
    await waitUntil(d, 'delivered', () => (deliveredByDriver.length === 5 ? true : undefined), 'the driver to deliver 5 parcels while the vendor is away');

    const back = raw(url, { role: 'vendor', store: 'acme' });
    const messages = await back.waitFor('delivered', 5, 'the returning vendor to get 5 delivered');
    expect(messages.map((m) => m.orderId).sort()).toEqual(orders.map((o) => o.orderId).sort());
    const all = back.received.map((r) => r.payload);
    expect(all).toHaveLength(10);
    expect(all.map((m) => m.seq)).toEqual([...all.map((m) => m.seq)].sort((a, b) => a - b));
    for (const o of orders) {
      expect(all.filter((m) => m.orderId === o.orderId).map((m) => m.event)).toEqual(['in-transit', 'delivered']);
    }
  });

  it('keeps pickups while no driver is online and hands them out when one connects', async () => {
    const { url, logs } = cleanup.add(await startHub({ dispatch: 'one', ...storeOptions() }), (h) => h.close());
    const v = vendor(url, 'acme');
    await v.start();
    const delivered: string[] = [];
    v.on('delivered', (m) => delivered.push(m.orderId));
    for (let i = 0; i < 3; i++) await v.publish(order('acme', i));
    expect(records(logs, 'BACKLOG')).toEqual(expect.arrayContaining([expect.objectContaining({ queue: 'driver', depth: 1 })]));
    driver(url, 'late-driver');
    await waitUntil(v, 'delivered', () => (delivered.length === 3 ? true : undefined), 'three parcels delivered once a driver connects');
    await logs.waitFor(/"msg":"QUEUE DRAINED".*"queue":"driver"/, 'the driver queue to be reported drained');
  });

  it('hands a dead driver’s parcel to another driver', async () => {
    const { url, logs } = cleanup.add(await startHub({ dispatch: 'one', ...storeOptions() }), (h) => h.close());
    const holder = raw(url, { role: 'driver', name: 'holder' }, false);
    await holder.connected();
    const v = vendor(url, 'acme');
    await v.start();
    const parcel = order('acme', 1);
    await v.publish(parcel);
    await holder.waitFor('pickup', 1, 'the first driver to get the pickup');
    const delivered: string[] = [];
    v.on('delivered', (m) => delivered.push(m.orderId));
    const rescuer = driver(url, 'rescuer');
    await rescuer.start();
    await gone(holder);
    await waitUntil(v, 'delivered', () => (delivered.length > 0 ? true : undefined), 'the parcel to be delivered by the second driver');
    expect(delivered).toEqual([parcel.orderId]);
    expect(records(logs, 'REDISPATCH')).toEqual([expect.objectContaining({ queue: 'driver', messages: 1, reason: 'driver disconnected' })]);
  });

  it('spreads pickups over the drivers, each pickup to exactly one', async () => {
    const { url } = cleanup.add(await startHub({ dispatch: 'one', ...storeOptions() }), (h) => h.close());
    const drivers = [driver(url, 'd1'), driver(url, 'd2')];
    const picked = new Map<string, string[]>();
    for (const d of drivers) d.on('picked-up', (m) => picked.set(m.orderId, [...(picked.get(m.orderId) ?? []), d.name]));
    await Promise.all(drivers.map((d) => d.start()));
    const v = vendor(url, 'acme');
    await v.start();
    const delivered: string[] = [];
    v.on('delivered', (m) => delivered.push(m.orderId));
    await Promise.all(Array.from({ length: 20 }, (_, i) => v.publish(order('acme', i))));
    await waitUntil(v, 'delivered', () => (delivered.length === 20 ? true : undefined), '20 parcels delivered');
    expect([...picked.values()].every((names) => names.length === 1)).toBe(true);
    const perDriver = drivers.map((d) => [...picked.values()].filter((names) => names[0] === d.name).length);
    expect(perDriver.every((n) => n > 0)).toBe(true);
    expect(perDriver.reduce((a, b) => a + b, 0)).toBe(20);
  });

  it('stores and relays a step published twice only once, serially and concurrently', async () => {
    const { url } = cleanup.add(await startHub({ dispatch: 'one', ...storeOptions() }), (h) => h.close());
    const publisher = raw(url, { role: 'vendor', store: 'acme' });
    const d = raw(url, { role: 'driver', name: 'd1' });
    await Promise.all([publisher.connected(), d.connected()]);
    const parcel = order('acme', 1);
    const concurrent = await Promise.all(Array.from({ length: 5 }, () => publisher.request<{ ok: true; data: { duplicate: boolean } }>('pickup', parcel)));
    expect(concurrent.map((r) => r.data.duplicate).sort()).toEqual([false, true, true, true, true]);
    await expect(publisher.request('pickup', parcel)).resolves.toMatchObject({ ok: true, data: { duplicate: true } });
    const steps = await Promise.all([d.request('in-transit', parcel), d.request('in-transit', parcel)]);
    expect(steps.map((r) => (r as { data: { duplicate: boolean } }).data.duplicate).sort()).toEqual([false, true]);
    // round trips on both connections: whatever the hub sent before has arrived
    await Promise.all([publisher.request('join', 'acme'), d.request('join', 'driver')]);
    expect(d.of('pickup').map((m) => m.orderId)).toEqual([parcel.orderId]);
    expect(publisher.of('in-transit').map((m) => m.orderId)).toEqual([parcel.orderId]);
  });

  it('refuses a step into a full queue with CAPS_ERR_QUEUE_FULL, visibly', async () => {
    const { url, logs } = cleanup.add(await startHub({ ...storeOptions(), maxQueueDepth: 2 }), (h) => h.close());
    const publisher = raw(url, { role: 'vendor', store: 'acme' });
    await publisher.connected();
    await publisher.request('pickup', order('acme', 1));
    await publisher.request('pickup', order('acme', 2));
    await expect(publisher.request('pickup', order('acme', 3))).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_QUEUE_FULL' } });
    expect(records(logs, 'REFUSED')).toEqual([expect.objectContaining({ code: 'CAPS_ERR_QUEUE_FULL', event: 'pickup' })]);
  });
});

describe('acknowledgement time-outs', () => {
  it('gives a pickup to another driver when its driver does not acknowledge in time', async () => {
    const { url, logs } = cleanup.add(await startHub({ dispatch: 'one', ackTimeoutMs: 150 }), (h) => h.close());
    const silent = raw(url, { role: 'driver', name: 'silent' }, false);
    await silent.connected();
    const v = vendor(url, 'acme');
    await v.start();
    const delivered: string[] = [];
    v.on('delivered', (m) => delivered.push(m.orderId));
    await v.publish(order('acme', 1));
    await silent.waitFor('pickup', 1, 'the silent driver to get the pickup');
    driver(url, 'responsive');
    await waitUntil(v, 'delivered', () => (delivered.length > 0 ? true : undefined), 'the pickup to reach the responsive driver after the time-out', 15_000);
    expect(records(logs, 'REDISPATCH').some((r) => String(r['reason']).startsWith('no ack within'))).toBe(true);
  });

  it('sends a store’s message again, with back-off, to a vendor that does not acknowledge', async () => {
    const { url, logs } = cleanup.add(await startHub({ ackTimeoutMs: 100 }), (h) => h.close());
    const slow = raw(url, { role: 'vendor', store: 'acme' }, false);
    const d = raw(url, { role: 'driver', name: 'd1' });
    await Promise.all([slow.connected(), d.connected()]);
    const parcel = order('acme', 1);
    await slow.request('pickup', parcel);
    await d.request('delivered', parcel);
    const copies = await slow.waitFor('delivered', 3, 'the unacknowledged message to be sent three times');
    expect(new Set(copies.map((m) => m.messageId)).size).toBe(1);
    const attempts = records(logs, 'REDELIVER').map((r) => r['attempt']);
    expect(attempts.slice(0, 2)).toEqual([2, 3]);
  });

  it('does not re-send on a timer to a lab client that never acknowledges; getAll does', async () => {
    const { url } = cleanup.add(await startHub({ ackTimeoutMs: 100 }), (h) => h.close());
    const lab = raw(url, undefined, false);
    const acking = raw(url, { role: 'vendor', store: 'acme' }, false);
    const d = raw(url, { role: 'driver', name: 'd1' });
    await lab.request('join', 'acme');
    await Promise.all([acking.connected(), d.connected()]);
    const parcel = order('acme', 1);
    await acking.request('pickup', parcel);
    await d.request('delivered', parcel);
    // by the time the acking vendor has had its third copy, a timer would have re-sent to the lab client too
    await acking.waitFor('delivered', 3, 'the acking vendor to get re-sends');
    await lab.request('join', 'acme');
    expect(lab.of('delivered')).toHaveLength(1);
    // getAll sends only what this connection has not had yet
    await expect(lab.request('getAll', { clientId: 'acme' })).resolves.toEqual({ ok: true, data: { queue: 'acme', sent: 0 } });
  });
});

describe('the course’s received and getAll', () => {
  it('lets a lab driver fetch waiting pickups with getAll and remove them with received, for each driver id', async () => {
    for (const driverId of ['driver', 'DRIVER', 'driver-client']) {
      const { url } = cleanup.add(await startHub(), (h) => h.close());
      const publisher = raw(url, { role: 'vendor', store: 'acme' });
      await publisher.connected();
      for (let i = 0; i < 3; i++) await publisher.request('pickup', order('acme', i));
      const lab = raw(url, undefined, false);
      await expect(lab.request('getAll', { queueId: driverId })).resolves.toEqual({ ok: true, data: { queue: 'driver', sent: 3 } });
      const pickups = await lab.waitFor('pickup', 3, `the lab driver (${driverId}) to get 3 pickups`);
      expect(pickups.map((m) => m.seq)).toEqual([1, 2, 3]);
      for (const [i, m] of pickups.entries()) {
        const shape = i % 2 === 0 ? { queueId: driverId, messageId: m.messageId } : { clientId: driverId, messageId: m.messageId, event: 'pickup' };
        await expect(lab.request('received', shape)).resolves.toEqual({ ok: true, data: { queue: 'driver', messageId: m.messageId, removed: true } });
      }
      await expect(lab.request('received', { queueId: driverId, messageId: pickups[0]?.messageId })).resolves.toMatchObject({ ok: true, data: { removed: false } });
      const again = raw(url, undefined, false);
      await expect(again.request('getAll', { queueId: driverId })).resolves.toEqual({ ok: true, data: { queue: 'driver', sent: 0 } });
    }
  });

  it('lets a lab vendor that was away get its deliveries with getAll and remove them with received', async () => {
    const { url } = cleanup.add(await startHub(), (h) => h.close());
    const d = raw(url, { role: 'driver', name: 'd1' });
    const publisher = raw(url, { role: 'vendor', store: 'flowers' });
    await Promise.all([d.connected(), publisher.connected()]);
    const orders = [order('flowers', 1), order('flowers', 2)];
    for (const o of orders) await publisher.request('pickup', o);
    await gone(publisher);
    // delivered while no vendor of the store is online
    for (const o of orders) await d.request('delivered', o);

    const lab = raw(url, undefined, false);
    await expect(lab.request('getAll', { clientId: 'flowers', event: 'delivered' })).resolves.toEqual({ ok: true, data: { queue: 'flowers', sent: 2 } });
    const delivered = await lab.waitFor('delivered', 2, 'the lab vendor to get both deliveries');
    expect(delivered.map((m: ParcelMessage) => m.order.orderId)).toEqual(orders.map((o) => o.orderId));
    for (const m of delivered) {
      await expect(lab.request('received', { clientId: 'flowers', messageId: m.messageId, event: 'delivered' })).resolves.toMatchObject({ ok: true, data: { removed: true } });
    }
    const later = raw(url, undefined, false);
    await expect(later.request('getAll', { clientId: 'flowers' })).resolves.toEqual({ ok: true, data: { queue: 'flowers', sent: 0 } });
  });
});

describe('stores cannot hurt each other', () => {
  it('noisy neighbour: a flood past its quota refuses only its own store, and the other store’s first pickup goes out in the first turn', async () => {
    const { url } = cleanup.add(await startHub({ dispatch: 'one', maxQueueDepth: 50 }), (h) => h.close());
    const flood = raw(url, { role: 'vendor', store: 'flood' });
    const quiet = raw(url, { role: 'vendor', store: 'quiet' });
    await Promise.all([flood.connected(), quiet.connected()]);
    const results = await Promise.all(Array.from({ length: 60 }, (_, i) => flood.request<{ ok: boolean; error?: { code: string } }>('pickup', order('flood', i))));
    expect(results.filter((r) => r.ok)).toHaveLength(50);
    expect(results.filter((r) => !r.ok).map((r) => r.error?.code)).toEqual(Array<string>(10).fill('CAPS_ERR_QUEUE_FULL'));
    for (let i = 0; i < 3; i++) await expect(quiet.request('pickup', order('quiet', i))).resolves.toMatchObject({ ok: true });
    // one driver comes online: the stores take turns
    const d = raw(url, { role: 'driver', name: 'first-driver' }, false);
    const pickups = await d.waitFor('pickup', 2, 'the driver to be handed its first two pickups');
    expect(pickups.slice(0, 2).map((m) => m.store).sort()).toEqual(['flood', 'quiet']);
    expect(pickups.find((m) => m.store === 'quiet')?.orderId).toBe(order('quiet', 0).orderId);
  });
});

describe('an offline vendor costs disk, not the drivers’ time', () => {
  it('20,000 of its parcels delivered while it is away: no driver step refused, other stores live, and back, it hears all, in order, once', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'caps-offline-'));
    cleanup.add(dataDir, (d) => rmSync(d, { recursive: true, force: true }));
    const { url, logs } = cleanup.add(
      await startHub({ dispatch: 'one', storage: 'sqlite', dataDir, maxQueueDepth: 20_000, window: 1_000, rateLimit: { ratePerSecond: Infinity, burst: Infinity } }),
      (h) => h.close(),
    );
    const N = 20_000;
    const away = raw(url, { role: 'vendor', store: 'away' });
    await away.connected();
    const handed = await Promise.all(Array.from({ length: N }, (_, i) => away.request<{ ok: boolean }>('pickup', order('away', i), 60_000)));
    expect(handed.filter((r) => !r.ok)).toEqual([]);
    await gone(away);

    // a driver delivers everything as it comes; every step it reports must be taken
    const progress = new EventEmitter();
    const refused: unknown[] = [];
    const delivered = new Map<string, number>();
    const d = raw(url, { role: 'driver', name: 'busy' });
    const step = (event: string, m: ParcelMessage): void => {
      d.socket.emit(event, { store: m.store, orderId: m.orderId }, (r: { ok: boolean }) => {
        if (!r.ok) refused.push(r);
        if (event === 'delivered') delivered.set(m.store, (delivered.get(m.store) ?? 0) + 1);
        progress.emit('step');
      });
    };
    d.socket.on('pickup', (m: ParcelMessage) => {
      step('in-transit', m);
      step('delivered', m);
    });
    const here = raw(url, { role: 'vendor', store: 'here' });
    await Promise.all([d.connected(), here.connected()]);
    for (let i = 0; i < 20; i++) await here.request('pickup', order('here', i));
    await here.waitFor('delivered', 20, 'the other store to hear its parcels delivered, live, meanwhile', 30_000);
    await waitUntil(progress, 'step', () => ((delivered.get('away') ?? 0) >= N ? true : undefined), `all ${N} of the away store's parcels delivered`, 60_000);
    expect(refused).toEqual([]);
    expect(records(logs, 'REFUSED')).toEqual([]);

    // back: it hears all it missed, in order, while the other store's events keep arriving
    const back = raw(url, { role: 'vendor', store: 'away' });
    for (let i = 20; i < 30; i++) await here.request('pickup', order('here', i));
    const all = await back.waitFor('delivered', N, `the returning vendor to hear all ${N} deliveries`, 90_000);
    await here.waitFor('delivered', 30, 'the other store’s later parcels delivered during the replay', 30_000);
    const seqs = back.received.map((r) => r.payload.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(new Set(all.map((m) => m.messageId)).size).toBe(N);
    expect(new Set(all.map((m) => m.orderId)).size).toBe(N);
    expect(records(logs, 'PAGED IN').length).toBeGreaterThan(10);
  }, 240_000);
});
