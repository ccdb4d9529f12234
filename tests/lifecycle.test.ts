import { afterEach, describe, expect, it } from 'vitest';
import type { ParcelMessage, PublishResult } from '../protocol/messages.js';
import type { AckResult } from '../protocol/result.js';
import { DriverClient } from '../driver/driver-client.js';
import { VendorClient } from '../vendor/vendor-client.js';
import { Cleanup, RawClient, connectClient, order, startHub, startSecureHub, tokenFor } from './helpers/hub.js';
import { api } from './helpers/api.js';
import { waitUntil } from './helpers/wait.js';
import type { TestHub } from './helpers/hub.js';

/** The parcel lifecycle end to end (issue 17): real hub, real sockets, real HTTP. */
const cleanup = new Cleanup();
afterEach(() => cleanup.run());

async function hub(options: Parameters<typeof startSecureHub>[0] = {}): Promise<TestHub> {
  return cleanup.add(await startSecureHub(options), (h) => h.close());
}

type Answer = AckResult<PublishResult>;

const ref = (m: ParcelMessage) => ({ store: m.store, orderId: m.orderId, attempt: m.attempt ?? 1 });

/** The `n`th (from 1) pickup handed to `driver`, once it has been. */
async function nthPickup(driver: RawClient, n: number, what: string): Promise<ParcelMessage> {
  const p = (await driver.waitFor('pickup', n, what))[n - 1];
  if (p === undefined) throw new Error(`${what}: waitFor resolved without pickup ${n}`);
  return p;
}

/** A secure hub, a vendor of acme and a driver d1 on it, and acme's first parcel handed to d1 (`at`: its `ref`). */
async function handedToD1(options: Parameters<typeof startSecureHub>[0] = {}) {
  const { url } = await hub(options);
  const vendor = await connectClient(cleanup, url, { role: 'vendor', store: 'acme' });
  const d1 = await connectClient(cleanup, url, { role: 'driver', name: 'd1' });
  const published = await vendor.request<Answer>('pickup', order('acme', 1));
  const p = await nthPickup(d1, 1, 'd1 to be handed the parcel');
  return { url, vendor, d1, published, p, at: ref(p) };
}

describe('failed attempts, re-attempts and returns over sockets', () => {
  it('sends a failed attempt back to the drivers as attempt 2, tells the store why, and records the proof of the delivery that follows', async () => {
    const { url, vendor, d1, published, p: p1 } = await handedToD1();
    expect(published).toMatchObject({ ok: true });
    expect(await d1.request<Answer>('in-transit', { ...ref(p1), eta: '2026-12-03T10:30:00.000Z' })).toMatchObject({ ok: true });
    expect(await d1.request<Answer>('failed', { ...ref(p1), reason: 'recipient-absent', note: 'rang twice', location: { lat: 52.37, lng: 4.89 } })).toEqual({
      ok: true,
      data: { event: 'failed', store: 'acme', orderId: p1.orderId, duplicate: false, reattempt: true },
    });
    // the store hears the failure with its reason; the drivers get the parcel again, as attempt 2
    const [failed] = await vendor.waitFor('failed', 1, 'the vendor to hear the failed attempt');
    expect(failed).toMatchObject({ event: 'failed', orderId: p1.orderId, reattempt: true, driver: 'd1', details: { reason: 'recipient-absent', note: 'rang twice', location: { lat: 52.37, lng: 4.89 } } });
    const p2 = await nthPickup(d1, 2, 'the parcel to come back to the drivers');
    expect(p2).toMatchObject({ orderId: p1.orderId, attempt: 2, customer: p1.customer });
    // the failure sent again (its ack was lost) is a duplicate, not a second failure
    expect(await d1.request<Answer>('failed', { ...ref(p1), reason: 'recipient-absent' })).toMatchObject({ ok: true, data: { duplicate: true } });
    const transit2 = await d1.request<Answer>('in-transit', ref(p2));
    expect(transit2, JSON.stringify(transit2)).toMatchObject({ ok: true, data: { duplicate: false } });
    const proof = { recipient: 'Customer 1', signature: `sha256:${'0123456789abcdef'.repeat(4)}`, photo: 'https://proofs.example.com/acme/1.jpg' };
    expect(await d1.request<Answer>('delivered', { ...ref(p2), ...proof })).toMatchObject({ ok: true });
    const [delivered] = await vendor.waitFor('delivered', 1, 'the vendor to hear the delivery');
    expect(delivered).toMatchObject({ attempt: 2, details: proof });

    const timeline = await api(url, 'GET', `/packages/${p1.orderId}`, undefined, { role: 'vendor', store: 'acme' });
    expect(timeline.body.data).toMatchObject({ state: 'delivered', attempts: 2 });
    expect((timeline.body.data?.['history'] as Array<{ event: string; attempt?: number }>).map((s) => [s.event, s.attempt ?? 1])).toEqual([
      ['pickup', 1],
      ['in-transit', 1],
      ['failed', 1],
      ['pickup', 2],
      ['in-transit', 2],
      ['delivered', 2],
    ]);
  });

  it('answers a driver’s failure sent again as a duplicate after the re-attempt went to another driver', async () => {
    const { url, d1, at } = await handedToD1();
    await d1.request('in-transit', at);
    d1.close();
    const d2 = await connectClient(cleanup, url, { role: 'driver', name: 'd2' });
    // d1 reports the failure from its app over HTTP: d2 is the one driver online for the re-attempt
    const failedOverHttp = await api(url, 'POST', `/stores/acme/parcels/${at.orderId}/steps`, { event: 'failed', ...at, reason: 'recipient-absent' }, { role: 'driver', name: 'd1' });
    expect(failedOverHttp.body).toMatchObject({ ok: true, data: { reattempt: true } });
    await d2.waitFor('pickup', 1, 'the re-attempt to go to d2');
    // d1's answer was lost: it sends the same failure again, on a new connection
    const d1Again = await connectClient(cleanup, url, { role: 'driver', name: 'd1' });
    expect(await d1Again.request<Answer>('failed', { ...at, reason: 'recipient-absent' })).toMatchObject({ ok: true, data: { duplicate: true } });
    expect(await d1Again.request<Answer>('delivered', { ...at, attempt: 2 })).toMatchObject({ ok: false, error: { code: 'CAPS_ERR_NOT_DISPATCHED' } });
  });

  it('returns a parcel to its store once its store’s attempts are over; only a driver may report it', async () => {
    const { url, vendor, d1, at } = await handedToD1({ maxAttempts: 3, storeMaxAttempts: { acme: 1 } });
    await d1.request('in-transit', at);
    expect(await d1.request<Answer>('failed', { ...at, reason: 'address-not-found' })).toMatchObject({ ok: true, data: { reattempt: false } });
    expect(await vendor.request<Answer>('returned', at)).toMatchObject({ ok: false, error: { code: 'CAPS_ERR_FORBIDDEN' } });
    expect(await d1.request<Answer>('cancelled', at)).toMatchObject({ ok: false, error: { code: 'CAPS_ERR_FORBIDDEN' } });
    expect(await d1.request<Answer>('returned', { ...at, note: 'back at the counter' })).toMatchObject({ ok: true, data: { duplicate: false } });
    await vendor.waitFor('returned', 1, 'the vendor to hear the parcel is back');
    expect(d1.of('pickup')).toHaveLength(1);
    const timeline = await api(url, 'GET', `/packages/${at.orderId}`, undefined, { role: 'vendor', store: 'acme' });
    expect(timeline.body.data).toMatchObject({ state: 'returned', attempts: 1 });
  });

  it('refuses bad lifecycle payloads with CAPS_ERR_INVALID_PAYLOAD and illegal moves with CAPS_ERR_OUT_OF_ORDER, changing nothing', async () => {
    const { url, d1, at } = await handedToD1();
    const invalid = [
      ['failed', at, 'reason'],
      ['failed', { ...at, reason: 'lost-in-space' }, 'reason'],
      ['delivered', { ...at, photo: 'data:image/png;base64,iVBORw0KGgo=' }, 'photo'],
      ['delivered', { ...at, signature: 'http://insecure.example.com/sig.png' }, 'signature'],
      ['in-transit', { ...at, recipient: 'Ada' }, 'recipient'],
      ['in-transit', { ...at, eta: 'soon' }, 'eta'],
      ['in-transit', { ...at, attempt: 0 }, 'attempt'],
      ['delivered', { ...at, location: { lat: 91, lng: 0 } }, 'location'],
      // a driver app that cut its note in the middle of an emoji: half a character is not text
      ['in-transit', { ...at, note: 'running late 😀'.slice(0, -1) }, 'note'],
    ] as const;
    for (const [event, payload, field] of invalid) {
      const answer = await d1.request<Answer>(event, payload);
      expect(answer, `${event} ${JSON.stringify(payload)}`).toMatchObject({ ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD' } });
      expect(answer.ok ? '' : answer.error.message).toContain(field);
    }
    // a failure before the parcel is on its way, a return with nothing failed: out of order
    expect(await d1.request<Answer>('failed', { ...at, reason: 'other' })).toMatchObject({ ok: false, error: { code: 'CAPS_ERR_OUT_OF_ORDER' } });
    expect(await d1.request<Answer>('returned', at)).toMatchObject({ ok: false, error: { code: 'CAPS_ERR_OUT_OF_ORDER' } });
    const timeline = await api(url, 'GET', `/packages/${at.orderId}`, undefined, { role: 'vendor', store: 'acme' });
    expect(timeline.body.data).toMatchObject({ state: 'pickup', attempts: 1, history: [{ event: 'pickup' }] });
  });
});

describe('cancelled by the store', () => {
  it('withdraws a pickup no driver has taken yet: the next driver is never handed it', async () => {
    const { url } = await hub();
    const vendor = await connectClient(cleanup, url, { role: 'vendor', store: 'acme' });
    await vendor.request('pickup', order('acme', 1));
    expect(await vendor.request<Answer>('cancelled', { store: 'acme', orderId: order('acme', 1).orderId, note: 'customer changed their mind' })).toMatchObject({ ok: true, data: { duplicate: false } });
    await vendor.waitFor('cancelled', 1, 'the store to hear its own cancel');
    await vendor.request('pickup', order('acme', 2));
    const d1 = await connectClient(cleanup, url, { role: 'driver', name: 'd1' });
    // the pool is first in, first out: once the later parcel arrives, the cancelled one would have come first
    await d1.waitFor('pickup', 1, 'd1 to be handed the parcel not cancelled');
    expect(d1.of('pickup').map((m) => m.orderId)).toEqual([order('acme', 2).orderId]);
  });

  it('tells the driver holding a parcel at once, and refuses its steps after', async () => {
    const { url, vendor, d1, at } = await handedToD1();
    await d1.request('in-transit', at);
    expect(await vendor.request<Answer>('cancelled', { store: 'acme', orderId: at.orderId })).toMatchObject({ ok: true });
    const [told] = await d1.waitFor('cancelled', 1, 'the driver holding it to be told of the cancel');
    expect(told).toMatchObject({ event: 'cancelled', orderId: at.orderId });
    expect(await d1.request<Answer>('delivered', at)).toMatchObject({ ok: false, error: { code: 'CAPS_ERR_OUT_OF_ORDER' } });
    // another store's vendor may not cancel it
    const other = await connectClient(cleanup, url, { role: 'vendor', store: 'bakery' });
    expect(await other.request<Answer>('cancelled', { store: 'acme', orderId: at.orderId })).toMatchObject({ ok: false, error: { code: 'CAPS_ERR_FORBIDDEN' } });
  });

  it('over HTTP with the store’s vendor token: idempotent, 409 once delivered, 404 for a parcel it does not have, 403 for another store', async () => {
    const { url } = await hub();
    const acme = { role: 'vendor', store: 'acme' } as const;
    const created = await api(url, 'POST', '/stores/acme/parcels', { orderId: 'web-1', customer: 'Ada', address: '1 Main St' }, acme);
    expect(created.status).toBe(201);
    const cancel = await api(url, 'POST', '/stores/acme/parcels/web-1/cancel', { note: 'out of stock' }, acme);
    expect(cancel.status).toBe(200);
    expect(cancel.body.data).toMatchObject({ status: 'cancelled', state: 'cancelled', history: [{ event: 'pickup' }, { event: 'cancelled', details: { note: 'out of stock' } }] });
    const again = await api(url, 'POST', '/stores/acme/parcels/web-1/cancel', {}, acme);
    expect([again.status, again.headers.get('idempotent-replayed'), again.body.data?.['status']]).toEqual([200, 'true', 'already-cancelled']);
    expect((await api(url, 'POST', '/stores/acme/parcels/nope/cancel', {}, acme)).body.error?.code).toBe('CAPS_ERR_UNKNOWN_PARCEL');
    const forbidden = await api(url, 'POST', '/stores/acme/parcels/web-1/cancel', {}, { role: 'vendor', store: 'bakery' });
    expect([forbidden.status, forbidden.body.error?.code]).toEqual([403, 'CAPS_ERR_FORBIDDEN']);
    const bad = await api(url, 'POST', '/stores/acme/parcels/web-1/cancel', { note: 'x', reason: 'refused' }, acme);
    expect([bad.status, bad.body.error?.code]).toEqual([400, 'CAPS_ERR_INVALID_PAYLOAD']);
    const notJson = await api(url, 'POST', '/stores/acme/parcels/web-1/cancel', '{nope', acme);
    expect([notJson.status, notJson.body.error?.code]).toEqual([400, 'CAPS_ERR_INVALID_PAYLOAD']);

    const d1 = await connectClient(cleanup, url, { role: 'driver', name: 'd1' });
    await api(url, 'POST', '/stores/acme/parcels', { orderId: 'web-2', customer: 'Ada', address: '1 Main St' }, acme);
    await d1.request('delivered', ref(await nthPickup(d1, 1, 'd1 to be handed web-2')));
    const late = await api(url, 'POST', '/stores/acme/parcels/web-2/cancel', {}, acme);
    expect([late.status, late.body.error?.code]).toEqual([409, 'CAPS_ERR_OUT_OF_ORDER']);
    expect(late.body.error?.message).toContain('delivered');
  });
});

describe('a driver’s steps over HTTP', () => {
  it('takes in-transit, failed and delivered from the driver the parcel went to, with the socket’s rules and codes', async () => {
    const { url } = await hub();
    const d1 = await connectClient(cleanup, url, { role: 'driver', name: 'd1' });
    const acme = { role: 'vendor', store: 'acme' } as const;
    const asD1 = { role: 'driver', name: 'd1' } as const;
    await api(url, 'POST', '/stores/acme/parcels', { orderId: 'web-1', customer: 'Ada', address: '1 Main St' }, acme);
    await d1.waitFor('pickup', 1, 'd1 to be handed web-1');
    const steps = '/stores/acme/parcels/web-1/steps';
    expect((await api(url, 'POST', steps, { event: 'in-transit', attempt: 1, eta: '2026-12-03T10:30:00Z' }, asD1)).body).toMatchObject({ ok: true, data: { event: 'in-transit', duplicate: false } });
    const again = await api(url, 'POST', steps, { event: 'in-transit', attempt: 1 }, asD1);
    expect([again.status, again.headers.get('idempotent-replayed'), again.body.data?.['duplicate']]).toEqual([200, 'true', true]);
    const other = await api(url, 'POST', steps, { event: 'failed', reason: 'other' }, { role: 'driver', name: 'd2' });
    expect([other.status, other.body.error?.code]).toEqual([403, 'CAPS_ERR_NOT_DISPATCHED']);
    const vendorTries = await api(url, 'POST', steps, { event: 'failed', reason: 'other' }, acme);
    expect([vendorTries.status, vendorTries.body.error?.code]).toEqual([403, 'CAPS_ERR_FORBIDDEN']);
    for (const bad of [{ event: 'pickup' }, { event: 'teleported' }, { reason: 'other' }, { event: 'failed', reason: 'aliens' }, { event: 'failed' }]) {
      const answer = await api(url, 'POST', steps, bad, asD1);
      expect([answer.status, answer.body.error?.code], JSON.stringify(bad)).toEqual([400, 'CAPS_ERR_INVALID_PAYLOAD']);
    }
    const failed = await api(url, 'POST', steps, { event: 'failed', attempt: 1, reason: 'recipient-absent', photo: 'https://proofs.example.com/door.jpg' }, asD1);
    expect(failed.body).toMatchObject({ ok: true, data: { event: 'failed', reattempt: true } });
    const [, second] = await d1.waitFor('pickup', 2, 'web-1 back with d1 as attempt 2');
    expect(second).toMatchObject({ orderId: 'web-1', attempt: 2 });
    const late = await api(url, 'POST', steps, { event: 'delivered', attempt: 1 }, asD1);
    expect([late.status, late.body.error?.code]).toEqual([409, 'CAPS_ERR_OUT_OF_ORDER']);
    expect((await api(url, 'POST', steps, { event: 'delivered', attempt: 2, recipient: 'Ada' }, asD1)).body).toMatchObject({ ok: true, data: { duplicate: false } });
    const timeline = await api(url, 'GET', '/packages/web-1', undefined, acme);
    expect(timeline.body.data).toMatchObject({ state: 'delivered', attempts: 2 });
    expect((await api(url, 'POST', '/stores/acme/parcels/nope/steps', { event: 'in-transit' }, asD1)).body.error?.code).toBe('CAPS_ERR_NOT_DISPATCHED');
  });
});

describe('CAPS’s own clients', () => {
  it('a driver fails, the parcel comes back as attempt 2, fails again and is returned; its vendor’s run ends with it', async () => {
    const { url } = await hub({ maxAttempts: 2 });
    const lines: string[] = [];
    const log = (line: string): void => {
      lines.push(line);
    };
    const driver = cleanup.add(new DriverClient({ url, name: 'd1', delay: 0, token: tokenFor({ role: 'driver', name: 'd1' }), outcome: () => 'recipient-absent', log }), (c) => c.close());
    const returned: ParcelMessage[] = [];
    driver.on('returned', (m) => returned.push(m));
    await driver.start();
    const vendor = cleanup.add(new VendorClient({ url, store: 'acme', token: tokenFor({ role: 'vendor', store: 'acme' }), count: 1, interval: 10, log }), (c) => c.close());
    const failures: ParcelMessage[] = [];
    vendor.on('failed', (m) => failures.push(m));
    await vendor.start();
    await vendor.run();
    expect(failures.map((m) => [m.attempt ?? 1, m.reattempt, m.details?.reason])).toEqual([
      [1, true, 'recipient-absent'],
      [2, false, 'recipient-absent'],
    ]);
    await waitUntil(driver, 'returned', () => (returned.length === 1 ? true : undefined), 'the driver to report the parcel returned');
    expect(lines.some((l) => /attempt 1 to deliver .* failed \(recipient-absent\); it goes back to the drivers/.test(l))).toBe(true);
    expect(lines.some((l) => /is back at the store/.test(l))).toBe(true);
  });

  it('a driver delivers with a proof of delivery and an ETA; a vendor’s cancel reaches the driver holding the parcel', async () => {
    const { url } = await hub();
    const log = (): void => undefined;
    const driver = cleanup.add(new DriverClient({ url, name: 'd1', delay: 60_000, token: tokenFor({ role: 'driver', name: 'd1' }), log }), (c) => c.close());
    const cancelled: ParcelMessage[] = [];
    driver.on('cancelled', (m) => cancelled.push(m));
    await driver.start();
    const vendor = cleanup.add(new VendorClient({ url, store: 'acme', token: tokenFor({ role: 'vendor', store: 'acme' }), log }), (c) => c.close());
    const transit: ParcelMessage[] = [];
    vendor.on('in-transit', (m) => transit.push(m));
    await vendor.start();
    const placed = vendor.makeOrder();
    await vendor.publish(placed);
    await waitUntil(vendor, 'in-transit', () => (transit.length === 1 ? true : undefined), 'the vendor to hear its parcel is on its way');
    expect(transit[0]?.details?.eta).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(await vendor.cancel(placed.orderId, 'out of stock')).toMatchObject({ duplicate: false });
    await waitUntil(driver, 'cancelled', () => (cancelled.length === 1 ? true : undefined), 'the driver holding it to be told');
    expect(cancelled[0]).toMatchObject({ orderId: placed.orderId, details: { note: 'out of stock' } });
    // too late once delivered: logged and answered undefined, not thrown
    const quick = cleanup.add(new DriverClient({ url, name: 'd2', delay: 0, token: tokenFor({ role: 'driver', name: 'd2' }), log }), (c) => c.close());
    const delivered: ParcelMessage[] = [];
    vendor.on('delivered', (m) => delivered.push(m));
    await driver.close();
    await quick.start();
    const second = vendor.makeOrder();
    await vendor.publish(second);
    await waitUntil(vendor, 'delivered', () => (delivered.length === 1 ? true : undefined), 'the second parcel to be delivered');
    expect(delivered[0]?.details).toMatchObject({ recipient: second.customer, signature: expect.stringMatching(/^sha256:[0-9a-f]{64}$/) });
    expect(await vendor.cancel(second.orderId)).toBeUndefined();
  });
});

describe('a driver’s simulated van', () => {
  it('says where it is while it carries a parcel; its store hears it with its own order ids', async () => {
    const { url } = await hub();
    const vendor = await connectClient(cleanup, url, { role: 'vendor', store: 'acme' });
    const driver = cleanup.add(
      new DriverClient({ url, name: 'd1', delay: 60_000, locationEveryMs: 1_100, start: { lat: 52.37, lng: 4.89 }, token: tokenFor({ role: 'driver', name: 'd1' }), log: () => undefined }),
      (c) => c.close(),
    );
    await driver.start();
    await vendor.request('pickup', order('acme', 1));
    const [first] = await vendor.waitFor('location', 1, 'the store to hear where the van carrying its parcel is');
    const position = first as unknown as { driver: string; lat: number; lng: number; speed: number; orderIds: string[] };
    expect(position).toMatchObject({ driver: 'd1', speed: 8, orderIds: [order('acme', 1).orderId] });
    // it drives on: about 9 m in 1.1 s, from where it started
    expect(Math.abs(position.lat - 52.37) + Math.abs(position.lng - 4.89)).toBeGreaterThan(0);
    expect(Math.abs(position.lat - 52.37) + Math.abs(position.lng - 4.89)).toBeLessThan(0.001);
  });
});

describe('lab mode', () => {
  it('needs none of the new steps: a course driver’s in-transit and delivered still end a parcel', async () => {
    const { url } = cleanup.add(await startHub(), (h) => h.close());
    const vendor = cleanup.add(new RawClient(url), (c) => c.close());
    const driver = cleanup.add(new RawClient(url), (c) => c.close());
    await Promise.all([vendor.connected(), driver.connected()]);
    vendor.socket.emit('join', 'acme');
    vendor.socket.emit('pickup', order('acme', 1));
    const [p] = await driver.waitFor('pickup', 1, 'the lab driver to hear the pickup');
    driver.socket.emit('in-transit', p);
    driver.socket.emit('delivered', p);
    await vendor.waitFor('delivered', 1, 'the lab vendor to hear the delivery');
    expect(vendor.of('delivered')[0]).not.toHaveProperty('attempt');
    expect(vendor.of('delivered')[0]).not.toHaveProperty('details');
  });

  it('reads the lifecycle’s steps as generously as the course’s: a student’s CANCELED and In_Transit, a failure with its reason', async () => {
    const { url } = cleanup.add(await startHub(), (h) => h.close());
    const vendor = cleanup.add(new RawClient(url), (c) => c.close());
    const driver = cleanup.add(new RawClient(url), (c) => c.close());
    await Promise.all([vendor.connected(), driver.connected()]);
    await vendor.request('pickup', order('acme', 1));
    expect(await vendor.request<Answer>('CANCELED', { storeName: 'acme', orderID: order('acme', 1).orderId, note: 'changed my mind' })).toMatchObject({ ok: true, data: { event: 'cancelled' } });
    await vendor.request('pickup', order('acme', 2));
    expect(await driver.request<Answer>('In_Transit', { store: 'acme', orderId: order('acme', 2).orderId })).toMatchObject({ ok: true });
    expect(await driver.request<Answer>('Failed', { store: 'acme', orderId: order('acme', 2).orderId, reason: 'recipient-absent' })).toMatchObject({ ok: true, data: { reattempt: true } });
    const [failed] = await vendor.waitFor('failed', 1, 'the lab vendor to hear the failure');
    expect(failed).toMatchObject({ details: { reason: 'recipient-absent' } });
  });
});
