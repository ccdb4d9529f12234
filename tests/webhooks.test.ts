import { afterEach, describe, expect, it } from 'vitest';
import { PARCEL_EVENTS } from '../protocol/schemas.js';
import { eventId } from '../hub/webhooks/signing.js';
import type { TokenSubject } from '../protocol/token.js';
import { Cleanup, RawClient, order, records, startHub, startSecureHub, tokenFor } from './helpers/hub.js';
import { api } from './helpers/api.js';
import { WebhookReceiver, deliveredEvents, inOrderPerParcel, verifies } from './helpers/webhook-receiver.js';
import { poll } from './helpers/wait.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** Test hubs send to receivers on 127.0.0.1, retry fast, and keep nothing on disk. */
const FAST = { webhookAllowPrivate: true, webhookRetryBaseMs: 20 } as const;

async function register(url: string, store: string, body: unknown, as?: TokenSubject): Promise<{ id: string; secret: string }> {
  const answer = await api(url, 'POST', `/stores/${store}/webhooks`, body, as);
  expect(answer.status, JSON.stringify(answer.body)).toBe(201);
  return answer.body.data as { id: string; secret: string };
}

/** The store's endpoints once none has anything pending (the hub records a 2xx just after the receiver answered it). */
function settled(url: string, store: string, as?: TokenSubject): Promise<Array<Record<string, unknown>>> {
  return poll(async () => {
    const list = await webhooksOf(url, store, as);
    return list.every((w) => w['pending'] === 0) ? list : undefined;
  }, `every endpoint of ${store} to have nothing pending`);
}

async function webhooksOf(url: string, store: string, as?: TokenSubject): Promise<Array<Record<string, unknown>>> {
  const answer = await api(url, 'GET', `/stores/${store}/webhooks`, undefined, as);
  expect(answer.status).toBe(200);
  return (answer.body.data as { webhooks: Array<Record<string, unknown>> }).webhooks;
}

/** Publishes the three steps of each parcel from a lab client, waiting for each ack. */
async function publishAll(client: RawClient, parcels: ReadonlyArray<ReturnType<typeof order>>, events: readonly string[] = ['pickup', 'in-transit', 'delivered']): Promise<void> {
  for (const event of events) {
    for (const parcel of parcels) await expect(client.request(event, parcel)).resolves.toMatchObject({ ok: true });
  }
}

describe('signed webhooks', () => {
  it('POSTs each step of the store signed, with a stable id, the step as data, and verifiable headers', async () => {
    const receiver = cleanup.add(await WebhookReceiver.start(), (r) => r.close());
    const { url } = cleanup.add(await startHub(FAST), (h) => h.close());
    const { id, secret } = await register(url, 'acme', { url: receiver.url });
    expect(id).toMatch(/^wh_[0-9a-f]{16}$/);
    expect(secret).toMatch(/^whsec_/);
    const client = cleanup.add(new RawClient(url), (c) => c.close());
    await client.connected();
    const parcel = order('acme', 1);
    await publishAll(client, [parcel]);
    // another store's steps go to nobody's endpoint here
    await publishAll(client, [order('other', 1)], ['pickup']);
    const got = await receiver.waitFor((r) => (r.length >= 3 ? r : undefined), 'three webhook POSTs for the parcel');
    expect(got.map((r) => r.body.type)).toEqual(['parcel.pickup', 'parcel.in-transit', 'parcel.delivered']);
    for (const r of got) {
      expect(verifies(secret, r), `signature of ${r.id}`).toBe(true);
      expect(verifies('whsec_not-the-secret', r)).toBe(false);
      expect(r.id).toBe(r.body.id);
      expect(r.headers['content-type']).toBe('application/json');
      expect(Math.abs(Number(r.timestamp) - Date.now() / 1000)).toBeLessThan(60);
      expect(r.signature).toMatch(/^v1=[0-9a-f]{64}$/);
      expect(r.body.data).toMatchObject({ store: 'acme', orderId: parcel.orderId, customer: parcel.customer, event: r.body.type.slice('parcel.'.length) });
      expect(r.body.data['messageId']).toEqual(expect.any(String));
    }
    expect(got[0]?.id).toBe(eventId('acme', parcel.orderId, 'pickup', 1));
    expect(new Set(got.map((r) => r.id)).size).toBe(3);
    const [listed] = await settled(url, 'acme');
    expect(listed).toMatchObject({ id, url: receiver.url, events: null, state: 'active', pending: 0, lastSuccessAt: expect.any(String) });
    expect(listed).not.toHaveProperty('secret');
  });

  it('retries a receiver that fails (500) until it recovers: every event delivered, in order per parcel, other parcels not held up', async () => {
    const receiver = cleanup.add(await WebhookReceiver.start(), (r) => r.close());
    const { url } = cleanup.add(await startHub(FAST), (h) => h.close());
    const { secret } = await register(url, 'acme', { url: receiver.url });
    // parcel 1's pickup fails three times; everything else goes through at once
    let failures = 0;
    receiver.answer = (r) => (r.body.data['orderId'] === 'acme-order-1' && r.body.type === 'parcel.pickup' && failures++ < 3 ? 500 : 200);
    const client = cleanup.add(new RawClient(url), (c) => c.close());
    await client.connected();
    const parcels = [1, 2, 3].map((n) => order('acme', n));
    await publishAll(client, parcels);
    await receiver.waitFor((r) => (new Set(r.filter((x) => x.status === 200).map((x) => x.id)).size === 9 ? true : undefined), 'all 9 events delivered after the receiver recovers');
    expect(failures).toBe(4);
    for (const p of parcels) expect(deliveredEvents(receiver.received, p.orderId), p.orderId).toEqual(['parcel.pickup', 'parcel.in-transit', 'parcel.delivered']);
    expect(inOrderPerParcel(receiver.received)).toEqual([]);
    // the same id and body on every attempt, signed afresh
    const pickups = receiver.received.filter((r) => r.body.data['orderId'] === 'acme-order-1' && r.body.type === 'parcel.pickup');
    expect(pickups).toHaveLength(4);
    expect(new Set(pickups.map((r) => r.id)).size).toBe(1);
    expect(new Set(pickups.map((r) => r.raw)).size).toBe(1);
    for (const r of pickups) expect(verifies(secret, r)).toBe(true);
    // parcel 2 was delivered while parcel 1 still failed
    const firstDeliveredOf1 = receiver.received.findIndex((r) => r.status === 200 && r.body.data['orderId'] === 'acme-order-1');
    const lastOf2 = receiver.received.findLastIndex((r) => r.body.data['orderId'] === 'acme-order-2' && r.body.type === 'parcel.pickup');
    expect(lastOf2).toBeLessThan(firstDeliveredOf1);
  });

  it('sends an endpoint only the events it chose; events are checked against PARCEL_EVENTS', async () => {
    const all = cleanup.add(await WebhookReceiver.start(), (r) => r.close());
    const some = cleanup.add(await WebhookReceiver.start(), (r) => r.close());
    const { url } = cleanup.add(await startHub(FAST), (h) => h.close());
    await register(url, 'acme', { url: all.url });
    await register(url, 'acme', { url: some.url, events: ['delivered', 'pickup'] });
    const refused = await api(url, 'POST', '/stores/acme/webhooks', { url: some.url, events: ['pickup', 'teleported'] });
    expect(refused.status).toBe(400);
    expect(refused.body.error).toMatchObject({ code: 'CAPS_ERR_INVALID_PAYLOAD', message: expect.stringContaining(PARCEL_EVENTS.join(', ')) });
    expect((await api(url, 'POST', '/stores/acme/webhooks', { url: some.url, events: [] })).status).toBe(400);
    expect((await api(url, 'POST', '/stores/acme/webhooks', { url: 'ftp://example.com/x' })).body.error?.message).toContain('http: or https:');
    const client = cleanup.add(new RawClient(url), (c) => c.close());
    await client.connected();
    await publishAll(client, [order('acme', 1), order('acme', 2)]);
    await all.waitFor((r) => (r.filter((x) => x.status === 200).length >= 6 ? true : undefined), 'every event at the endpoint that takes all');
    await some.waitFor((r) => (r.length >= 4 ? true : undefined), 'pickup and delivered of both parcels at the filtered endpoint');
    expect(some.received.map((r) => r.body.type).sort()).toEqual(['parcel.delivered', 'parcel.delivered', 'parcel.pickup', 'parcel.pickup']);
    const listed = await webhooksOf(url, 'acme');
    expect(listed.map((w) => w['events'])).toEqual([null, ['delivered', 'pickup']]);
  });

  it('disables an endpoint that fails for the configured time: a WARN line, the list says why, a metric; enable sends what waited', async () => {
    const receiver = cleanup.add(await WebhookReceiver.start(), (r) => r.close());
    receiver.answer = () => 500;
    const { url, logs } = cleanup.add(await startHub({ ...FAST, webhookDisableAfterMs: 200 }), (h) => h.close());
    const { id } = await register(url, 'acme', { url: receiver.url });
    const client = cleanup.add(new RawClient(url), (c) => c.close());
    await client.connected();
    await publishAll(client, [order('acme', 1)]);
    await logs.waitFor(/"msg":"WEBHOOK DISABLED"/, 'the endpoint to be disabled after 200 ms of failures', 10_000);
    const [warning] = records(logs, 'WEBHOOK DISABLED');
    expect(warning).toMatchObject({ level: 'warn', endpoint: id, store: 'acme', url: receiver.url });
    const [listed] = await webhooksOf(url, 'acme');
    expect(listed).toMatchObject({ id, state: 'disabled', disabledReason: expect.stringContaining('HTTP 500'), lastError: 'HTTP 500', pending: 3, disabledAt: expect.any(String) });
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(/^caps_webhook_endpoints_disabled_total 1$/m);
    expect(metrics).toMatch(/^caps_webhook_endpoints\{state="disabled"\} 1$/m);
    // disabled: no new events are queued for it
    await publishAll(client, [order('acme', 2)], ['pickup']);
    expect((await webhooksOf(url, 'acme'))[0]).toMatchObject({ pending: 3 });
    receiver.answer = () => 200;
    const enabled = await api(url, 'POST', `/stores/acme/webhooks/${id}/enable`);
    expect(enabled.body.data).toMatchObject({ id, state: 'active' });
    await receiver.waitFor((r) => (r.filter((x) => x.status === 200).length >= 3 ? true : undefined), 'the 3 waiting events once enabled');
    expect(deliveredEvents(receiver.received, 'acme-order-1')).toEqual(['parcel.pickup', 'parcel.in-transit', 'parcel.delivered']);
    expect(inOrderPerParcel(receiver.received)).toEqual([]);
    expect(await settled(url, 'acme')).toEqual([expect.objectContaining({ state: 'active', pending: 0 })]);
    expect(records(logs, 'WEBHOOK ENABLED')).toHaveLength(1);
  });

  it('a duplicate publish fills the outbox: the step is rebuilt from the history with the same event id', async () => {
    const receiver = cleanup.add(await WebhookReceiver.start(), (r) => r.close());
    const { url } = cleanup.add(await startHub(FAST), (h) => h.close());
    const client = cleanup.add(new RawClient(url), (c) => c.close());
    await client.connected();
    const parcel = order('acme', 7);
    // recorded while no endpoint listened: as if the hub died between the record and the outbox
    await publishAll(client, [parcel], ['pickup']);
    await register(url, 'acme', { url: receiver.url });
    await expect(client.request('pickup', parcel)).resolves.toMatchObject({ ok: true, data: { duplicate: true } });
    await expect(client.request('pickup', parcel)).resolves.toMatchObject({ ok: true, data: { duplicate: true } });
    await publishAll(client, [parcel], ['in-transit']);
    const got = await receiver.waitFor((r) => (r.length >= 2 ? r : undefined), 'the rebuilt pickup and the in-transit');
    expect(got.map((r) => r.body.type)).toEqual(['parcel.pickup', 'parcel.in-transit']);
    expect(got[0]?.id).toBe(eventId('acme', parcel.orderId, 'pickup', 1));
    expect(got[0]?.body.data).toMatchObject({ store: 'acme', orderId: parcel.orderId, event: 'pickup', customer: parcel.customer, order: { orderId: parcel.orderId } });
    // the in-transit published twice is queued once
    await expect(client.request('in-transit', parcel)).resolves.toMatchObject({ ok: true, data: { duplicate: true } });
    await publishAll(client, [parcel], ['delivered']);
    await receiver.waitFor((r) => (r.length >= 3 ? r : undefined), 'the delivered');
    expect(receiver.received.map((r) => r.body.type)).toEqual(['parcel.pickup', 'parcel.in-transit', 'parcel.delivered']);
  });

  it('is managed with the vendor token of the store: others are refused with coded errors; remove stops deliveries', async () => {
    const receiver = cleanup.add(await WebhookReceiver.start(), (r) => r.close());
    const { url } = cleanup.add(await startSecureHub(FAST), (h) => h.close());
    const vendor: TokenSubject = { role: 'vendor', store: 'acme' };
    expect(await api(url, 'POST', '/stores/acme/webhooks', { url: receiver.url })).toMatchObject({ status: 401, body: { error: { code: 'CAPS_ERR_UNAUTHORIZED' } } });
    expect(await api(url, 'POST', '/stores/acme/webhooks', { url: receiver.url }, { role: 'vendor', store: 'other' })).toMatchObject({ status: 403, body: { error: { code: 'CAPS_ERR_FORBIDDEN' } } });
    expect(await api(url, 'GET', '/stores/acme/webhooks', undefined, { role: 'driver', name: 'd1' })).toMatchObject({ status: 403, body: { error: { code: 'CAPS_ERR_FORBIDDEN' } } });
    expect(await api(url, 'POST', '/stores/acme/webhooks', { url: receiver.url, secret: 'mine' }, vendor)).toMatchObject({ status: 400, body: { error: { code: 'CAPS_ERR_INVALID_PAYLOAD' } } });
    const { id } = await register(url, 'acme', { url: receiver.url }, vendor);
    // another store cannot see, remove or enable it
    expect(await webhooksOf(url, 'other', { role: 'vendor', store: 'other' })).toEqual([]);
    expect(await api(url, 'DELETE', `/stores/other/webhooks/${id}`, undefined, { role: 'vendor', store: 'other' })).toMatchObject({ status: 404, body: { error: { code: 'CAPS_ERR_NOT_FOUND' } } });
    expect(await api(url, 'POST', `/stores/acme/webhooks/wh_nope/enable`, undefined, vendor)).toMatchObject({ status: 404 });
    expect(await api(url, 'DELETE', `/stores/acme/webhooks/${id}`, undefined, vendor)).toMatchObject({ status: 200, body: { data: { id, removed: true } } });
    expect(await webhooksOf(url, 'acme', vendor)).toEqual([]);
    expect(await api(url, 'DELETE', `/stores/acme/webhooks/${id}`, undefined, vendor)).toMatchObject({ status: 404 });
  });
});

describe('signed webhooks through the parcel lifecycle', () => {
  it('sends a failed attempt with its reason, the re-attempt’s steps under their own ids, and a cancel, in order per parcel', async () => {
    const receiver = cleanup.add(await WebhookReceiver.start(), (r) => r.close());
    const { url } = cleanup.add(await startSecureHub(FAST), (h) => h.close());
    const acme = { role: 'vendor', store: 'acme' } as const;
    const { secret } = await register(url, 'acme', { url: receiver.url, events: ['in-transit', 'failed', 'delivered', 'cancelled'] }, acme);
    const vendor = cleanup.add(new RawClient(url, { auth: { token: tokenFor(acme) } }), (c) => c.close());
    const driver = cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'driver', name: 'd1' }) } }), (c) => c.close());
    await Promise.all([vendor.connected(), driver.connected()]);
    const parcel = order('acme', 1);
    await expect(vendor.request('pickup', parcel)).resolves.toMatchObject({ ok: true });
    await driver.waitFor('pickup', 1, 'the driver to be handed the parcel');
    const at = { store: 'acme', orderId: parcel.orderId };
    await expect(driver.request('in-transit', { ...at, attempt: 1 })).resolves.toMatchObject({ ok: true });
    await expect(driver.request('failed', { ...at, attempt: 1, reason: 'access-denied', note: 'gate locked' })).resolves.toMatchObject({ ok: true, data: { reattempt: true } });
    await driver.waitFor('pickup', 2, 'the parcel back with the driver as attempt 2');
    await expect(driver.request('in-transit', { ...at, attempt: 2 })).resolves.toMatchObject({ ok: true });
    await expect(driver.request('delivered', { ...at, attempt: 2, recipient: 'Customer 1' })).resolves.toMatchObject({ ok: true });
    await expect(vendor.request('pickup', order('acme', 2))).resolves.toMatchObject({ ok: true });
    await expect(vendor.request('cancelled', { store: 'acme', orderId: order('acme', 2).orderId, note: 'out of stock' })).resolves.toMatchObject({ ok: true });
    const got = await receiver.waitFor((r) => (r.length >= 5 ? r : undefined), 'five webhook POSTs');
    // in order per parcel; the two parcels' deliveries may interleave
    const of = (orderId: string) => got.filter((r) => r.body.data['orderId'] === orderId);
    expect(of(parcel.orderId).map((r) => [r.body.type, r.body.data['attempt'] ?? 1])).toEqual([
      ['parcel.in-transit', 1],
      ['parcel.failed', 1],
      ['parcel.in-transit', 2],
      ['parcel.delivered', 2],
    ]);
    expect(of(order('acme', 2).orderId).map((r) => [r.body.type, r.body.data['details']])).toEqual([['parcel.cancelled', { note: 'out of stock' }]]);
    const [, failed, , delivered] = of(parcel.orderId);
    expect(failed?.body.data).toMatchObject({ reattempt: true, details: { reason: 'access-denied', note: 'gate locked' } });
    expect(delivered?.body.data).toMatchObject({ details: { recipient: 'Customer 1' } });
    expect(new Set(got.map((r) => r.id)).size).toBe(5);
    for (const r of got) expect(verifies(secret, r)).toBe(true);
  });
});
