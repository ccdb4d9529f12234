import { afterEach, describe, expect, it } from 'vitest';
import type { ParcelMessage } from '../protocol/messages.js';
import { Cleanup, RawClient, order, records, startHub } from './helpers/hub.js';

/**
 * The course's own clients, written as they are in the lab: plain socket.io-client, default
 * transports, no CAPS code, no handshake identity, events fired without asking for acks.
 */
const cleanup = new Cleanup();
afterEach(() => cleanup.run());

function labClient(url: string): RawClient {
  return cleanup.add(new RawClient(url, { defaultTransports: true, autoAck: false }), (c) => c.close());
}

/** The lab driver: re-emits each pickup it gets as in-transit, then delivered. */
function labDriver(url: string, reEmit: (socket: RawClient, payload: ParcelMessage) => void): RawClient {
  const driver = labClient(url);
  driver.socket.on('pickup', (payload: ParcelMessage) => reEmit(driver, payload));
  return driver;
}

describe('the course’s clients, unchanged', () => {
  it('lab 12: join with a string, flat payloads, a driver that never says who it is', async () => {
    const { url } = cleanup.add(await startHub(), (h) => h.close());
    const driverSaw: string[] = [];
    const driver = labDriver(url, (d, payload) => {
      driverSaw.push(`DRIVER: picked up ${payload.orderId}`);
      d.socket.emit('in-transit', payload);
      d.socket.emit('delivered', payload);
    });
    await driver.connected();
    const vendor = labClient(url);
    vendor.socket.emit('join', '1-206-flowers');
    await vendor.connected();
    const parcel = order('1-206-flowers', 1);
    vendor.socket.emit('pickup', parcel);

    const [delivered] = await vendor.waitFor('delivered', 1, 'the lab vendor to hear its parcel delivered');
    expect(delivered?.orderId).toBe(parcel.orderId);
    expect(delivered?.store).toBe('1-206-flowers');
    expect(typeof delivered?.messageId).toBe('string');
    expect(vendor.of('in-transit').map((m) => m.orderId)).toEqual([parcel.orderId]);
    expect(driverSaw).toEqual([`DRIVER: picked up ${parcel.orderId}`]);
  });

  it('lab 13: wrapped payloads, received and getAll with clientId and queueId, driver ids DRIVER and driver-client', async () => {
    const { url, logs } = cleanup.add(await startHub(), (h) => h.close());
    for (const driverId of ['DRIVER', 'driver-client']) {
      const store = `store-for-${driverId}`;
      const driver = labDriver(url, (d, payload) => {
        d.socket.emit('received', { queueId: driverId, messageId: payload.messageId });
        d.socket.emit('in-transit', payload);
        d.socket.emit('delivered', payload);
      });
      driver.socket.emit('getAll', { queueId: driverId });
      await driver.connected();

      const vendor = labClient(url);
      vendor.socket.emit('join', { clientId: store });
      vendor.socket.emit('getAll', { clientId: store });
      vendor.socket.on('delivered', (payload: ParcelMessage) => {
        vendor.socket.emit('received', { clientId: store, messageId: payload.messageId, event: 'delivered' });
      });
      await vendor.connected();
      const parcel = order(store, 1);
      vendor.socket.emit('pickup', { event: 'pickup', messageId: `m-${driverId}`, clientId: store, order: parcel });

      const [delivered] = await vendor.waitFor('delivered', 1, `the vendor of ${store} to hear delivered`);
      expect(delivered?.order.orderId).toBe(parcel.orderId);
      expect(delivered?.orderId).toBe(parcel.orderId);
      expect(delivered?.order).toEqual(parcel);
      expect(driver.of('pickup').map((m) => m.order.orderId)).toEqual([parcel.orderId]);
      driver.close();
    }
    // nothing the lab clients sent was refused
    expect(logs.matching(/REFUSED/)).toEqual([]);
  });

  it('answers join, leave and getAll with an ok ack when asked for one', async () => {
    const { url } = cleanup.add(await startHub(), (h) => h.close());
    const client = cleanup.add(new RawClient(url), (c) => c.close());
    await client.connected();
    await expect(client.request('join', 'acme')).resolves.toEqual({ ok: true, data: { role: 'vendor', room: 'acme' } });
    await expect(client.request('join', { store: 'acme' })).resolves.toMatchObject({ ok: true });
    await expect(client.request('getAll', { clientId: 'acme', event: 'delivered' })).resolves.toEqual({ ok: true, data: { queue: 'acme', sent: 0 } });
    await expect(client.request('getAll', 'acme')).resolves.toMatchObject({ ok: true });
    await expect(client.request('leave', { queueId: 'acme' })).resolves.toEqual({ ok: true, data: { role: 'vendor', room: 'acme' } });
    const driver = cleanup.add(new RawClient(url), (c) => c.close());
    await expect(driver.request('join', 'driver')).resolves.toEqual({ ok: true, data: { role: 'driver', room: 'driver' } });
  });

  it('refuses received for an unknown queue or message with a code, never an exception', async () => {
    const { url, logs } = cleanup.add(await startHub(), (h) => h.close());
    const client = cleanup.add(new RawClient(url), (c) => c.close());
    await expect(client.request('received', { clientId: 'nowhere', messageId: 'm1' })).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_UNKNOWN_QUEUE' } });
    await expect(client.request('pickup', order('acme', 1))).resolves.toMatchObject({ ok: true });
    await expect(client.request('received', { queueId: 'DRIVER', messageId: 'no-such-message' })).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_UNKNOWN_MESSAGE' } });
    expect(records(logs, 'REFUSED').map((r) => r['code'])).toEqual(['CAPS_ERR_UNKNOWN_QUEUE', 'CAPS_ERR_UNKNOWN_MESSAGE']);
  });

  it('stops sending a store’s events to a client that left its room', async () => {
    const { url } = cleanup.add(await startHub(), (h) => h.close());
    const stays = cleanup.add(new RawClient(url), (c) => c.close());
    const leaves = cleanup.add(new RawClient(url), (c) => c.close());
    const driver = cleanup.add(new RawClient(url), (c) => c.close());
    await stays.request('join', 'acme');
    await leaves.request('join', 'acme');
    await driver.request('join', 'driver');
    await leaves.request('leave', 'acme');
    const parcel = order('acme', 1);
    await stays.request('pickup', parcel);
    await driver.request('delivered', parcel);
    await stays.waitFor('delivered', 1, 'the vendor that stayed to hear delivered');
    // round trip on the leaver's connection: whatever the hub sent it before has arrived
    await leaves.request('join', 'other-store');
    expect(leaves.of('delivered')).toEqual([]);
  });
});
