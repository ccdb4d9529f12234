import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ParcelMessage } from '../protocol/messages.js';
import type { TestHub } from './helpers/hub.js';
import { Cleanup, RawClient, order, queueDepth, records, startHub } from './helpers/hub.js';
import { poll } from './helpers/wait.js';

/**
 * Course-style clients as students really write them, against the open lab mode: raw
 * socket.io-client with its default transports, no CAPS code, no acks asked for, names and shapes
 * read loosely from the lab text. Every variant must run end to end with no refusal in the log.
 */
const cleanup = new Cleanup();
afterEach(() => cleanup.run());

function labClient(url: string): RawClient {
  return cleanup.add(new RawClient(url, { defaultTransports: true, autoAck: false }), (c) => c.close());
}

function waitForDepth(url: string, queue: string, depth: number, what: string): Promise<true> {
  return poll(async () => ((await queueDepth(url, queue)) === depth ? true : undefined), `${what}: queue ${queue} at depth ${depth}`);
}

function refusals(hub: TestHub): string[] {
  return hub.logs.matching(/REFUSED/);
}

describe('lab mode reads names generously', () => {
  it('runs a parcel end to end with PICKUP, In_Transit, storeName, orderID, payload wrappers, get-all and subscribe', async () => {
    const hub = cleanup.add(await startHub(), (h) => h.close());
    const store = 'loose-names';
    const driver = labClient(hub.url);
    driver.socket.emit('subscribe', 'pickup');
    driver.socket.emit('GETALL', { queueId: 'Driver' });
    driver.socket.on('pickup', (message: ParcelMessage) => {
      driver.socket.emit('In_Transit', { payload: message });
      driver.socket.emit('DELIVERED', { event: 'delivered', payload: { storeName: message.store, orderID: message.orderId } });
    });
    await driver.connected();
    const vendor = labClient(hub.url);
    vendor.socket.emit('JOIN', { storeName: store });
    vendor.socket.emit('get-all', { ClientID: store });
    vendor.socket.emit('Subscribe', { event: 'delivered' });
    vendor.socket.emit('PICKUP', { StoreName: store, orderID: 'o-1', Customer: 'Ada', ADDRESS: '1 Lane' });
    vendor.socket.emit('pick_up', { vendor: store, id: 'o-2', customer: 'Bob', address: '2 Lane' });

    const delivered = await vendor.waitFor('delivered', 2, 'the vendor to hear both parcels delivered');
    expect(delivered.map((m) => m.orderId).sort()).toEqual(['o-1', 'o-2']);
    expect(vendor.of('in-transit')).toHaveLength(2);
    expect(driver.of('pickup').map((m) => m.customer).sort()).toEqual(['Ada', 'Bob']);
    expect(refusals(hub)).toEqual([]);
    // a harmless no-op is noted once per socket, not once per event
    expect(records(hub.logs, 'IGNORED')).toHaveLength(2);
  });

  it('stays strict for a client with a token', async () => {
    const hub = cleanup.add(await startHub({ secret: 'lab-secret-0123456789abcdef' }), (h) => h.close());
    const { signToken } = await import('../protocol/token.js');
    const vendor = cleanup.add(new RawClient(hub.url, { auth: { token: signToken('lab-secret-0123456789abcdef', { role: 'vendor', store: 'acme' }) } }), (c) => c.close());
    await vendor.connected();
    await expect(vendor.request('pickup', { storeName: 'acme', orderID: 'o', customer: 'c', address: 'a' })).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD' } });
    await expect(vendor.request('PICKUP', order('acme', 1))).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_UNKNOWN_EVENT' } });
  });
});

describe('lab semantics', () => {
  it('sends a pickup to every client but its sender, and a store’s steps to everyone in its room', async () => {
    const hub = cleanup.add(await startHub(), (h) => h.close());
    const listeners = [labClient(hub.url), labClient(hub.url)];
    const declared = labClient(hub.url);
    declared.socket.emit('join', 'driver');
    // a driver that also joins the store's room, as some course drivers do to reach the vendor
    declared.socket.emit('join', 'lab-room');
    const vendor = labClient(hub.url);
    vendor.socket.emit('join', 'lab-room');
    await Promise.all([...listeners, declared, vendor].map((c) => c.connected()));
    vendor.socket.emit('pickup', order('lab-room', 1));
    for (const client of [...listeners, declared]) await client.waitFor('pickup', 1, 'every other client to hear the pickup');
    declared.socket.emit('in-transit', order('lab-room', 1));
    await declared.waitFor('in-transit', 1, 'the driver in the store’s room to hear in-transit');
    await vendor.waitFor('in-transit', 1, 'the vendor to hear in-transit');
    // round trip on the vendor's own connection: the pickup would have arrived before the answer
    await vendor.request('getAll', { clientId: 'lab-room', event: 'pickup' });
    expect(vendor.of('pickup')).toEqual([]);
    expect(listeners.flatMap((l) => l.of('in-transit'))).toEqual([]);
    expect(refusals(hub)).toEqual([]);
  });

  for (const dispatch of ['broadcast', 'one'] as const) {
    for (const declares of [false, true]) {
      it(`a driver with one connection to listen and another to report (dispatch ${dispatch}${declares ? ', listener joins driver' : ''}) gets every pickup at once`, async () => {
        // a 30 s ack time-out: a pickup held by the connection that does not listen would stall the test
        const hub = cleanup.add(await startHub(dispatch === 'one' ? { dispatch } : {}), (h) => h.close());
        const listen = labClient(hub.url);
        const report = labClient(hub.url);
        if (declares) listen.socket.emit('join', 'driver');
        listen.socket.on('pickup', (message: ParcelMessage) => {
          report.socket.emit('in-transit', message);
          report.socket.emit('delivered', message);
        });
        await Promise.all([listen.connected(), report.connected()]);
        const vendor = labClient(hub.url);
        vendor.socket.emit('join', 'two-sockets');
        for (let n = 1; n <= 6; n++) vendor.socket.emit('pickup', order('two-sockets', n));
        await vendor.waitFor('delivered', 6, 'all six parcels delivered, none held by the reporting connection', 8_000);
        expect(refusals(hub)).toEqual([]);
        await waitForDepth(hub.url, 'driver', 0, 'every pickup settled by its steps');
      });
    }
  }
});

describe('clients that answer no Socket.IO acks', () => {
  it('are asked none once a few acks time out unanswered, so nothing piles up, and still hear everything', async () => {
    const hub = cleanup.add(await startHub({ ackTimeoutMs: 100 }), (h) => h.close());
    const driver = labClient(hub.url);
    const acksAsked: boolean[] = [];
    driver.socket.on('pickup', (_m: ParcelMessage, ack?: unknown) => acksAsked.push(typeof ack === 'function'));
    const vendor = labClient(hub.url);
    await Promise.all([driver.connected(), vendor.connected()]);
    for (let n = 1; n <= 5; n++) vendor.socket.emit('pickup', order('no-acks', n));
    await driver.waitFor('pickup', 5, 'the lab driver to hear the first 5 pickups');
    // a burst alone decides nothing: only acks that time out do
    const [noAcks] = await hub.logs.waitFor(/"msg":"NO ACKS"/, 'the hub to stop asking the lab driver for acks');
    expect(JSON.parse(noAcks ?? '{}')).toMatchObject({ socket: driver.socket.id, unanswered: 3 });
    for (let n = 6; n <= 10; n++) vendor.socket.emit('pickup', order('no-acks', n));
    await driver.waitFor('pickup', 10, 'the lab driver to hear all 10 pickups');
    expect(acksAsked).toEqual([...Array<boolean>(5).fill(true), ...Array<boolean>(5).fill(false)]);
    expect(refusals(hub)).toEqual([]);
  });

  it('a lab driver in a store’s room hears its steps, but cannot take them off the vendors’ queue', async () => {
    const hub = cleanup.add(await startHub(), (h) => h.close());
    const driver = labClient(hub.url);
    driver.socket.emit('join', 'driver');
    driver.socket.emit('join', 'shared-room');
    const acksAsked: boolean[] = [];
    driver.socket.on('delivered', (m: ParcelMessage, ack?: unknown) => {
      acksAsked.push(typeof ack === 'function');
      if (typeof ack === 'function') (ack as (r: unknown) => void)({ ok: true });
      driver.socket.emit('received', { clientId: 'driver', messageId: m.messageId });
    });
    const vendor = labClient(hub.url);
    vendor.socket.emit('join', 'shared-room');
    await Promise.all([driver.connected(), vendor.connected()]);
    await vendor.request('pickup', order('shared-room', 1));
    await driver.request('delivered', order('shared-room', 1));
    await driver.waitFor('delivered', 1, 'the driver in the room to hear delivered');
    // the driver's received names the driver queue: answered, and the vendors' message stays
    await driver.request('getAll', { clientId: 'driver', event: 'delivered' });
    expect(acksAsked).toEqual([false]);
    expect(await queueDepth(hub.url, 'shared-room')).toBe(1);
  });

  it('a client that says received is asked for no acks from then on', async () => {
    const hub = cleanup.add(await startHub(), (h) => h.close());
    const vendor = labClient(hub.url);
    vendor.socket.emit('join', 'says-received');
    const driver = labClient(hub.url);
    await Promise.all([vendor.connected(), driver.connected()]);
    const acksAsked: boolean[] = [];
    vendor.socket.on('delivered', (m: ParcelMessage, ack?: unknown) => {
      acksAsked.push(typeof ack === 'function');
      vendor.socket.emit('received', m);
    });
    for (let n = 1; n <= 3; n++) {
      await vendor.request('pickup', order('says-received', n));
      await driver.request('delivered', order('says-received', n));
      await vendor.waitFor('delivered', n, `delivered ${n}`);
    }
    expect(acksAsked).toEqual([true, false, false]);
    await waitForDepth(hub.url, 'says-received', 0, 'every delivered received');
  });
});

describe('received, in every shape the course uses', () => {
  let hub: TestHub;
  beforeAll(async () => {
    hub = await startHub();
  });
  afterAll(() => hub.close());

  type Shape = (m: ParcelMessage) => unknown;
  /** Shapes that name one message exactly. */
  const exact: Record<string, Shape> = {
    'clientId + messageId': (m) => ({ clientId: m.clientId, messageId: m.messageId }),
    'queueId + messageId + event': (m) => ({ queueId: m.queueId, messageId: m.messageId, event: m.event }),
    'event "received"': (m) => ({ clientId: m.store, messageId: m.messageId, event: 'received' }),
    'orderId as messageId + event': (m) => ({ clientId: m.store, messageId: m.orderId, event: m.event }),
    'store + orderId + event, no clientId': (m) => ({ store: m.store, orderId: m.orderId, event: m.event }),
    'the message echoed back': (m) => m,
    'the lab wrapper': (m) => ({ event: m.event, messageId: m.messageId, clientId: m.store, order: m.order }),
    'inside payload': (m) => ({ clientId: m.store, payload: m }),
    'a bare messageId': (m) => m.messageId,
    'MessageID, Queue_Id': (m) => ({ Queue_Id: m.store, MessageID: m.messageId }),
  };
  /** Shapes that name only the parcel: the oldest queued message of it goes first. */
  const byParcel: Record<string, Shape> = {
    'orderId as messageId, no event': (m) => ({ clientId: m.store, messageId: m.orderId }),
    'storeName + orderID': (m) => ({ storeName: m.store, orderID: m.orderId }),
    'vendor + id': (m) => ({ vendor: m.store, id: m.orderId }),
  };

  /** A store queue holding in-transit then delivered of one parcel, as its vendor heard them. */
  async function twoQueued(store: string): Promise<{ vendor: RawClient; messages: ParcelMessage[] }> {
    const vendor = labClient(hub.url);
    vendor.socket.emit('join', store);
    const driver = labClient(hub.url);
    await Promise.all([vendor.connected(), driver.connected()]);
    await vendor.request('pickup', order(store, 1));
    await driver.request('in-transit', order(store, 1));
    await driver.request('delivered', order(store, 1));
    const [transit] = await vendor.waitFor('in-transit', 1, `${store}'s vendor to hear in-transit`);
    const [delivered] = await vendor.waitFor('delivered', 1, `${store}'s vendor to hear delivered`);
    if (!transit || !delivered) throw new Error('no messages');
    expect(await queueDepth(hub.url, store)).toBe(2);
    return { vendor, messages: [transit, delivered] };
  }

  let n = 0;
  for (const [name, shape] of Object.entries(exact)) {
    it(`a vendor's ${name} removes that message, and only it`, async () => {
      const store = `recv-exact-${++n}`;
      const { vendor, messages } = await twoQueued(store);
      const [transit, delivered] = messages as [ParcelMessage, ParcelMessage];
      // the newer one first: the older must stay
      await expect(vendor.request('received', shape(delivered))).resolves.toMatchObject({ ok: true, data: { removed: true } });
      expect(await queueDepth(hub.url, store)).toBe(1);
      await expect(vendor.request('received', shape(transit))).resolves.toMatchObject({ ok: true, data: { removed: true } });
      expect(await queueDepth(hub.url, store)).toBe(0);
      // the same again: already gone, said so, not refused
      await expect(vendor.request('received', shape(transit))).resolves.toMatchObject({ ok: true, data: { removed: false } });
    });
  }

  for (const [name, shape] of Object.entries(byParcel)) {
    it(`a vendor's ${name} removes the oldest message of that parcel`, async () => {
      const store = `recv-parcel-${++n}`;
      const { vendor, messages } = await twoQueued(store);
      const [, delivered] = messages as [ParcelMessage, ParcelMessage];
      await expect(vendor.request('received', shape(delivered))).resolves.toMatchObject({ ok: true, data: { removed: true, messageId: messages[0]?.messageId } });
      expect(await queueDepth(hub.url, store)).toBe(1);
      await expect(vendor.request('received', shape(delivered))).resolves.toMatchObject({ ok: true, data: { removed: true, messageId: delivered.messageId } });
      expect(await queueDepth(hub.url, store)).toBe(0);
    });
  }

  const driverShapes: Record<string, Shape> = {
    'the pickup echoed back': (m) => m,
    'DRIVER + orderId as messageId': (m) => ({ queueId: 'DRIVER', messageId: m.orderId }),
    'driver-client + messageId + event "received"': (m) => ({ clientId: 'driver-client', messageId: m.messageId, event: 'received' }),
    'event pickup + store + orderId': (m) => ({ event: 'pickup', store: m.store, orderId: m.orderId }),
  };
  for (const [name, shape] of Object.entries(driverShapes)) {
    it(`a driver's ${name} removes its pickup from the driver queue`, async () => {
      const store = `recv-driver-${++n}`;
      const driver = labClient(hub.url);
      driver.socket.emit('join', 'driver');
      const vendor = labClient(hub.url);
      await Promise.all([vendor.connected(), driver.connected()]);
      await vendor.request('pickup', order(store, 1));
      const [pickup] = await driver.waitFor('pickup', 1, 'the driver to hear the pickup');
      if (!pickup) throw new Error('no pickup');
      expect(await queueDepth(hub.url, 'driver')).toBe(1);
      await expect(driver.request('received', shape(pickup))).resolves.toMatchObject({ ok: true, data: { removed: true } });
      expect(await queueDepth(hub.url, 'driver')).toBe(0);
    });
  }

  it('logs no refusal for any of these', () => {
    expect(refusals(hub)).toEqual([]);
  });
});

describe('a lab vendor restarted while the driver keeps delivering', () => {
  it('hears exactly what it missed, and thanks each parcel once', async () => {
    const hub = cleanup.add(await startHub(), (h) => h.close());
    const store = 'restarted-vendor';
    const thanked: string[] = [];
    /** The lab 13 vendor: joins, asks for what it missed, thanks on delivered and says received. */
    const startVendor = (): RawClient => {
      const vendor = labClient(hub.url);
      vendor.socket.emit('join', { clientId: store });
      vendor.socket.emit('getAll', { clientId: store });
      vendor.socket.on('delivered', (message: ParcelMessage) => {
        thanked.push(message.orderId);
        vendor.socket.emit('received', message);
      });
      vendor.socket.on('in-transit', (message: ParcelMessage) => vendor.socket.emit('received', { clientId: store, messageId: message.messageId, event: 'received' }));
      return vendor;
    };
    const driver = labClient(hub.url);
    driver.socket.emit('getAll', { clientId: 'driver' });
    await driver.connected();
    const first = startVendor();
    await first.connected();
    for (let i = 1; i <= 4; i++) first.socket.emit('pickup', order(store, i));
    const pickups = await driver.waitFor('pickup', 4, 'the driver to hold four pickups');
    const deliver = (m: ParcelMessage): void => {
      driver.socket.emit('received', m);
      driver.socket.emit('in-transit', m);
      driver.socket.emit('delivered', m);
    };
    deliver(pickups[0] as ParcelMessage);
    deliver(pickups[1] as ParcelMessage);
    await first.waitFor('delivered', 2, 'the first vendor to hear two deliveries');
    await waitForDepth(hub.url, store, 0, 'the first vendor’s received to be taken');
    first.close();
    deliver(pickups[2] as ParcelMessage);
    deliver(pickups[3] as ParcelMessage);
    await waitForDepth(hub.url, store, 4, 'the missed steps queued while the vendor is away');
    const second = startVendor();
    await second.waitFor('delivered', 2, 'the restarted vendor to hear the two it missed');
    await waitForDepth(hub.url, store, 0, 'the restarted vendor’s received to be taken');
    expect(second.of('delivered').map((m) => m.orderId)).toEqual([order(store, 3).orderId, order(store, 4).orderId]);
    expect(thanked).toEqual([1, 2, 3, 4].map((i) => order(store, i).orderId));
    expect(refusals(hub)).toEqual([]);
  });
});

describe('no silent refusals', () => {
  it('says once per socket and kind what it refused and what it would accept, and counts every one', async () => {
    const hub = cleanup.add(await startHub(), (h) => h.close());
    const client = labClient(hub.url);
    await client.connected();
    client.socket.emit('pickup', { store: 'acme', orderId: 'o-1' });
    client.socket.emit('pickup', { store: 'acme', orderId: 'o-2' });
    client.socket.emit('launch-rockets', {});
    client.socket.emit('launch-rockets', {});
    await expect(client.request('received', { clientId: 'acme', messageId: 'nope' })).resolves.toMatchObject({ ok: false });
    const lines = records(hub.logs, 'REFUSED');
    const said = new Map(lines.map((r) => [r['event'], String(r['accepted'])]));
    expect([...said.keys()].sort()).toEqual(['launch-rockets', 'pickup', 'received']);
    expect(said.get('pickup')).toMatch(/customer/);
    expect(said.get('launch-rockets')).toMatch(/pickup, in-transit, delivered/);
    expect(said.get('received')).toMatch(/messageId \| orderId/);
    const metrics = await (await fetch(`${hub.url}/metrics`)).text();
    expect(metrics).toMatch(/caps_refusals_total\{code="CAPS_ERR_INVALID_PAYLOAD"\} 2/);
    expect(metrics).toMatch(/caps_refusals_total\{code="CAPS_ERR_UNKNOWN_EVENT"\} 2/);
  });
});

describe('a lab vendor that never acknowledges', () => {
  it('keeps hearing its store live past the window (its queue is held in memory up to --max-queue, as before)', async () => {
    const hub = cleanup.add(await startHub({ window: 5 }), (h) => h.close());
    const vendor = labClient(hub.url);
    vendor.socket.emit('join', 'never-acks');
    const driver = labClient(hub.url);
    await Promise.all([vendor.connected(), driver.connected()]);
    for (let n = 1; n <= 12; n++) {
      await driver.request('pickup', order('never-acks', n));
      await driver.request('delivered', order('never-acks', n));
    }
    const heard = await vendor.waitFor('delivered', 12, 'the lab vendor to hear all 12, live, past a window of 5');
    expect(heard.map((m) => m.orderId)).toEqual(Array.from({ length: 12 }, (_, i) => order('never-acks', i + 1).orderId));
  });
});
