import { afterEach, describe, expect, it } from 'vitest';
import { DriverClient } from '../driver/driver-client.js';
import { VendorClient } from '../vendor/vendor-client.js';
import { Cleanup, RawClient, order, records, startHub, startSecureHub, tokenFor } from './helpers/hub.js';
import { waitUntil } from './helpers/wait.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** A hub with tokens: clients read strictly (lab mode's generous reading is in lab-mode.test.ts). */
async function setup() {
  const hub = cleanup.add(await startSecureHub(), (h) => h.close());
  const vendor = cleanup.add(new RawClient(hub.url, { auth: { token: tokenFor({ role: 'vendor', store: 'acme' }) } }), (c) => c.close());
  const driver = cleanup.add(new RawClient(hub.url, { auth: { token: tokenFor({ role: 'driver', name: 'd1' }) } }), (c) => c.close());
  await Promise.all([vendor.connected(), driver.connected()]);
  return { ...hub, vendor, driver };
}

/** After a round trip on each connection, nothing the hub sent before can still be in flight. */
async function barrier(...clients: RawClient[]): Promise<void> {
  await Promise.all(clients.map((c) => c.request('join', c === clients[0] ? 'acme' : 'driver')));
}

describe('bad input', () => {
  const badPickups: Array<[string, unknown]> = [
    ['nothing', undefined],
    ['null', null],
    ['a number', 42],
    ['a string', 'pickup please'],
    ['an array', [1, 2]],
    ['no orderId', { store: 'acme', customer: 'c', address: 'a' }],
    ['an empty store', { store: '', orderId: 'o', customer: 'c', address: 'a' }],
    ['a number for orderId', { store: 'acme', orderId: 5, customer: 'c', address: 'a' }],
    ['an unknown key', { ...order('acme', 1), extra: true }],
    ['an overlong customer', { ...order('acme', 1), customer: 'x'.repeat(10_000) }],
    ['a wrapped order without customer', { event: 'pickup', order: { store: 'acme', orderId: 'o' } }],
  ];

  it.each(badPickups)('refuses a pickup with %s: error ack, a log line with the code, nothing relayed', async (_what, payload) => {
    const { vendor, driver, logs } = await setup();
    const result = await vendor.request('pickup', payload);
    expect(result).toMatchObject({ ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD', message: expect.any(String) } });
    await barrier(vendor, driver);
    expect(driver.received).toEqual([]);
    expect(records(logs, 'EVENT')).toEqual([]);
    expect(records(logs, 'REFUSED')).toEqual([expect.objectContaining({ code: 'CAPS_ERR_INVALID_PAYLOAD', event: 'pickup' })]);
  });

  it('refuses in-transit and delivered that name no parcel', async () => {
    const { vendor, driver } = await setup();
    for (const event of ['in-transit', 'delivered']) {
      await expect(driver.request(event, { orderId: 'o' })).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD' } });
    }
    await barrier(vendor, driver);
    expect(vendor.received).toEqual([]);
  });

  it('refuses an unknown event and a join without a name, with their own codes', async () => {
    const { vendor, logs } = await setup();
    await expect(vendor.request('explode', { now: true })).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_UNKNOWN_EVENT' } });
    for (const nameless of [undefined, '', '   ', {}, { event: 'x' }]) {
      await expect(vendor.request('join', nameless)).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_MISSING_NAME' } });
    }
    await expect(vendor.request('join', 17)).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD' } });
    await expect(vendor.request('received', { messageId: 'm' })).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD' } });
    await expect(vendor.request('getAll', {})).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD' } });
    const codes = records(logs, 'REFUSED').map((r) => r['code']);
    expect(codes).toContain('CAPS_ERR_UNKNOWN_EVENT');
    expect(codes.filter((c) => c === 'CAPS_ERR_MISSING_NAME')).toHaveLength(5);
  });

  it('survives events sent without an ack, with a non-function ack, or with the ack first', async () => {
    const { vendor, driver } = await setup();
    vendor.socket.emit('pickup', { nope: 1 });
    vendor.socket.emit('pickup', { nope: 1 }, 'not a function');
    vendor.socket.emit('join');
    vendor.socket.emit('explode');
    const ackFirst = await vendor.socket.timeout(5_000).emitWithAck('getAll');
    expect(ackFirst).toMatchObject({ ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD' } });
    await barrier(vendor, driver);
    expect(driver.received).toEqual([]);
  });

  it('cuts off a client that sends more than the size cap, and keeps serving the others', async () => {
    const { url, vendor, driver } = await setup();
    const big = cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'vendor', store: 'acme' }) } }), (c) => c.close());
    await big.connected();
    const gone = waitUntil(big.socket, 'disconnect', () => (big.socket.connected ? undefined : true), 'the oversized client to be cut off');
    big.socket.emit('pickup', { ...order('acme', 1), address: 'x'.repeat(100 * 1024) });
    await gone;
    await expect(vendor.request('pickup', order('acme', 2))).resolves.toMatchObject({ ok: true });
    await driver.waitFor('pickup', 1, 'the driver to get the good pickup');
    expect(driver.of('pickup').map((m) => m.orderId)).toEqual([order('acme', 2).orderId]);
  });

  it('keeps carrying good parcels after a barrage of bad input', async () => {
    const { url } = cleanup.add(await startHub(), (h) => h.close());
    const attacker = cleanup.add(new RawClient(url), (c) => c.close());
    await attacker.connected();
    for (let i = 0; i < 200; i++) {
      attacker.socket.emit(['pickup', 'in-transit', 'delivered', 'join', 'received', 'getAll', 'zzz'][i % 7] ?? 'pickup', i % 3 === 0 ? null : { i, store: i % 5 === 0 ? '' : 'acme' });
    }
    const lines: string[] = [];
    const v = cleanup.add(new VendorClient({ url, store: 'good', log: (l) => lines.push(l) }), (c) => c.close());
    const d = cleanup.add(new DriverClient({ url, name: 'good-driver', delay: 0, log: (l) => lines.push(l) }), (c) => c.close());
    await Promise.all([v.start(), d.start()]);
    const delivered: string[] = [];
    v.on('delivered', (m) => delivered.push(m.orderId));
    const parcel = order('good', 1);
    await v.publish(parcel);
    await waitUntil(v, 'delivered', () => (delivered.includes(parcel.orderId) ? true : undefined), 'the good parcel to be delivered');
  });
});
