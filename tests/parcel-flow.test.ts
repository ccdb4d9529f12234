import { afterEach, describe, expect, it } from 'vitest';
import { DriverClient } from '../driver/driver-client.js';
import type { ParcelMessage } from '../protocol/messages.js';
import { VendorClient } from '../vendor/vendor-client.js';
import { Cleanup, RawClient, order, records, startHub } from './helpers/hub.js';
import { Lines, poll, waitUntil } from './helpers/wait.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

function vendor(url: string, store: string, lines = new Lines()): VendorClient {
  return cleanup.add(new VendorClient({ url, store, interval: 20, log: lines.push }), (v) => v.close());
}
function driver(url: string, name: string, lines = new Lines()): DriverClient {
  return cleanup.add(new DriverClient({ url, name, delay: 0, log: lines.push }), (d) => d.close());
}
function collect(client: VendorClient, event: 'delivered' | 'in-transit'): ParcelMessage[] {
  const got: ParcelMessage[] = [];
  client.on(event, (m) => got.push(m));
  return got;
}

describe('a parcel through the hub', () => {
  it('goes pickup → in-transit → delivered and every step is logged', async () => {
    const { url, logs } = cleanup.add(await startHub(), (h) => h.close());
    const vendorLines = new Lines();
    const driverLines = new Lines();
    const v = vendor(url, 'acme-widgets', vendorLines);
    const d = driver(url, 'd1', driverLines);
    await Promise.all([v.start(), d.start()]);
    const inTransit = collect(v, 'in-transit');
    const delivered = collect(v, 'delivered');

    const parcel = order('acme-widgets', 1);
    const ack = await v.publish(parcel);
    expect(ack).toEqual({ event: 'pickup', store: 'acme-widgets', orderId: parcel.orderId, duplicate: false });
    await waitUntil(v, 'delivered', () => (delivered.length > 0 ? true : undefined), 'the vendor to hear delivered');

    expect(inTransit.map((m) => m.orderId)).toEqual([parcel.orderId]);
    const msg = delivered[0];
    expect(msg).toMatchObject({ event: 'delivered', ...parcel, order: parcel, queueId: 'acme-widgets', clientId: 'acme-widgets', driver: 'd1' });
    expect(typeof msg?.messageId).toBe('string');
    expect(vendorLines.matching(new RegExp(`^VENDOR: Thank you for delivering ${parcel.orderId}`))).toHaveLength(1);
    expect(driverLines.matching(new RegExp(`^DRIVER: picked up ${parcel.orderId}$`))).toHaveLength(1);
    expect(driverLines.matching(new RegExp(`^DRIVER: delivered ${parcel.orderId}$`))).toHaveLength(1);

    const events = records(logs, 'EVENT').filter((r) => (r['payload'] as { orderId?: string }).orderId === parcel.orderId);
    expect(events.map((r) => r['event'])).toEqual(['pickup', 'in-transit', 'delivered']);
    for (const r of events) expect(typeof r['time']).toBe('string');
    const connected = records(logs, 'CONNECTED');
    expect(connected).toEqual(expect.arrayContaining([
      expect.objectContaining({ role: 'vendor', store: 'acme-widgets' }),
      expect.objectContaining({ role: 'driver', name: 'd1' }),
    ]));
  });

  it('keeps stores apart: a vendor never hears another store’s parcels', async () => {
    const { url } = cleanup.add(await startHub(), (h) => h.close());
    const a = vendor(url, 'store-a');
    const b = vendor(url, 'store-b');
    const d = driver(url, 'd1');
    await Promise.all([a.start(), b.start(), d.start()]);
    const heard = { a: [] as ParcelMessage[], b: [] as ParcelMessage[] };
    for (const [key, client] of [['a', a], ['b', b]] as const) {
      client.on('in-transit', (m) => heard[key].push(m));
      client.on('delivered', (m) => heard[key].push(m));
    }
    const aDelivered = collect(a, 'delivered');
    const bDelivered = collect(b, 'delivered');

    for (let i = 0; i < 5; i++) {
      await Promise.all([a.publish(order('store-a', i)), b.publish(order('store-b', i))]);
    }
    await waitUntil(a, 'delivered', () => (aDelivered.length >= 5 ? true : undefined), 'store-a to hear 5 deliveries');
    await waitUntil(b, 'delivered', () => (bDelivered.length >= 5 ? true : undefined), 'store-b to hear 5 deliveries');
    expect(heard.a).toHaveLength(10);
    expect(heard.b).toHaveLength(10);
    expect(heard.a.filter((m) => m.store !== 'store-a' || !m.orderId.startsWith('store-a'))).toEqual([]);
    expect(heard.b.filter((m) => m.store !== 'store-b' || !m.orderId.startsWith('store-b'))).toEqual([]);
  });

  it('tells every vendor process of the same store about a delivery', async () => {
    const { url } = cleanup.add(await startHub(), (h) => h.close());
    const first = vendor(url, 'acme-widgets');
    const second = vendor(url, 'acme-widgets');
    const d = driver(url, 'd1');
    await Promise.all([first.start(), second.start(), d.start()]);
    const one = collect(first, 'delivered');
    const two = collect(second, 'delivered');
    const parcel = order('acme-widgets', 7);
    await first.publish(parcel);
    await waitUntil(first, 'delivered', () => (one.length > 0 ? true : undefined), 'the publishing vendor to hear delivered');
    await waitUntil(second, 'delivered', () => (two.length > 0 ? true : undefined), 'the other vendor of the store to hear delivered');
    expect(one.map((m) => m.orderId)).toEqual([parcel.orderId]);
    expect(two.map((m) => m.orderId)).toEqual([parcel.orderId]);
  });

  it('gives each pickup to exactly one driver by default, and to all with dispatch broadcast', async () => {
    for (const [dispatch, expected] of [['one', 1], ['broadcast', 2]] as const) {
      const { url } = cleanup.add(await startHub({ dispatch }), (h) => h.close());
      const drivers = [new RawClient(url, { auth: { role: 'driver', name: 'x1' } }), new RawClient(url, { auth: { role: 'driver', name: 'x2' } })];
      for (const c of drivers) cleanup.add(c, (x) => x.close());
      const v = new RawClient(url, { auth: { role: 'vendor', store: 's' } });
      cleanup.add(v, (x) => x.close());
      await Promise.all([...drivers, v].map((c) => c.connected()));
      await v.request('pickup', order('s', dispatch));
      const total = (): number => drivers.reduce((n, c) => n + c.of('pickup').length, 0);
      // the vendor's ack came after the hub emitted the pickup; a round trip on each driver's
      // connection is then the barrier: whatever the hub sent it before has arrived
      await Promise.all(drivers.map((c) => c.request('join', 'driver')));
      expect(total()).toBe(expected);
    }
  });
});

describe('writes gathered per turn of the event loop (hub/coalesce.ts)', () => {
  it('delivers a burst complete and in order, to every client, even when one of them drops mid-burst', async () => {
    const { url } = cleanup.add(await startHub({ dispatch: 'broadcast' }), (h) => h.close());
    const publisher = cleanup.add(new RawClient(url, { auth: { role: 'vendor', store: 'burst-store' } }), (c) => c.close());
    const drivers = [0, 1, 2].map((i) => cleanup.add(new RawClient(url, { auth: { role: 'driver', name: `burst-driver-${i}` } }), (c) => c.close()));
    const leaver = drivers[2];
    await Promise.all([publisher.connected(), ...drivers.map((d) => d.connected())]);
    const burst = 300;
    // every publish in the same tick: the hub writes each driver many packets per turn
    const acks = Array.from({ length: burst }, (_, n) => publisher.request('pickup', order('burst-store', n), 15_000));
    leaver?.socket.once('pickup', () => leaver.close());
    await Promise.all(acks);
    for (const d of drivers.slice(0, 2)) {
      const got = await d.waitFor('pickup', burst, 'a driver to receive the whole burst', 15_000);
      expect(got.map((m) => m.seq)).toEqual(Array.from({ length: burst }, (_, n) => n + 1));
      expect(new Set(got.map((m) => m.orderId)).size).toBe(burst);
    }
  });
});

describe('a client that sends and closes at once', () => {
  // socket.io hands an event to its listeners on the next tick, and drops it if the client's
  // disconnect was read meanwhile (in the same read): the hub must take events as they are read
  for (const transport of ['websocket', 'polling then websocket'] as const) {
    it(`loses none of the events it sent before closing (${transport})`, async () => {
      const { url } = cleanup.add(await startHub(), (h) => h.close());
      for (let round = 0; round < 10; round++) {
        const client = new RawClient(url, { defaultTransports: transport !== 'websocket' });
        await client.connected();
        for (let i = 0; i < 3; i++) client.socket.emit('pickup', order('one-shot', `${round}-${i}`));
        client.close();
      }
      const stored = async (): Promise<number> => {
        const body = (await (await fetch(`${url}/api/stores/one-shot/packages?limit=100`)).json()) as { data: { packages: unknown[] } };
        return body.data.packages.length;
      };
      await poll(async () => ((await stored()) === 30 ? true : undefined), 'all 30 pickups sent before each close to be stored', 5_000);
    });
  }
});

describe('retention', () => {
  it('removes a delivered parcel once past the retention period, and keeps one not delivered', async () => {
    const { url, logs } = cleanup.add(await startHub({ retentionMs: 300, pruneEveryMs: 25 }), (h) => h.close());
    const client = cleanup.add(new RawClient(url), (c) => c.close());
    await client.connected();
    const done = order('kept-for-a-while', 1);
    const waiting = order('kept-for-a-while', 2);
    for (const [event, parcel] of [['pickup', done], ['delivered', done], ['pickup', waiting]] as const) {
      await expect(client.request(event, parcel)).resolves.toMatchObject({ ok: true });
    }
    const status = async (orderId: string): Promise<number> => (await fetch(`${url}/api/packages/${orderId}`)).status;
    expect(await status(done.orderId)).toBe(200);
    await poll(async () => ((await status(done.orderId)) === 404 ? true : undefined), 'the delivered parcel to be removed past its retention', 5_000);
    expect(await status(waiting.orderId)).toBe(200);
    expect(records(logs, 'RETENTION')).toEqual([expect.objectContaining({ removed: 1 })]);
  });
});
