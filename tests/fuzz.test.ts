import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { DriverClient } from '../driver/driver-client.js';
import type { ParcelMessage } from '../protocol/messages.js';
import { orderSchema } from '../protocol/schemas.js';
import { VendorClient } from '../vendor/vendor-client.js';
import { Cleanup, RawClient, startSecureHub, tokenFor } from './helpers/hub.js';
import { waitUntil } from './helpers/wait.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const EVENTS = ['pickup', 'in-transit', 'delivered', 'join', 'leave', 'received', 'getAll'];
/** Names socket.io-client refuses to emit itself. */
const RESERVED = new Set(['connect', 'connect_error', 'disconnect', 'disconnecting', 'newListener', 'removeListener']);

const text = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'grapheme', maxLength: 40 }), fc.constantFrom('', ' ', 'evil', 'good', '__proto__', 'driver', 'x'.repeat(600)));
const orderish = fc.record(
  {
    store: fc.oneof(text, fc.constantFrom('evil', 'good'), fc.integer()),
    orderId: fc.oneof(text, fc.integer(), fc.constant(null)),
    customer: fc.oneof(text, fc.object()),
    address: fc.oneof(text, fc.array(text)),
    event: fc.oneof(fc.constantFrom('pickup', 'delivered'), text),
    messageId: fc.oneof(text, fc.integer()),
    clientId: text,
    queueId: text,
    seq: fc.oneof(fc.integer(), fc.double(), text),
  },
  { requiredKeys: [] },
);
const payload = fc.oneof(
  fc.anything({ maxDepth: 3 }),
  orderish,
  orderish.map((order) => ({ event: 'pickup', clientId: 'evil', order })),
  fc.dictionary(text, fc.anything({ maxDepth: 2 }), { maxKeys: 8 }),
  fc.uint8Array({ maxLength: 64 }),
  fc.constant(JSON.parse('{"__proto__":{"polluted":true},"store":"evil","orderId":"o","customer":"c","address":"a"}') as unknown),
  fc.constant(JSON.parse('{"constructor":{"prototype":{"polluted":true}},"store":"evil"}') as unknown),
);
const eventName = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...EVENTS) }, { weight: 1, arbitrary: fc.string({ maxLength: 20 }) });

describe('fuzz', () => {
  it('survives thousands of random and malformed events while good parcels keep flowing', async () => {
    // a short ack time-out: pickups the attacking driver sits on go back to the good driver
    const { url, hub } = cleanup.add(await startSecureHub({ ackTimeoutMs: 300, rateLimit: { ratePerSecond: 1e6, burst: 1e6 } }), (h) => h.close());
    const vendor = cleanup.add(new VendorClient({ url, store: 'good', token: tokenFor({ role: 'vendor', store: 'good' }), log: () => undefined }), (v) => v.close());
    const driver = cleanup.add(new DriverClient({ url, name: 'good-driver', delay: 0, token: tokenFor({ role: 'driver', name: 'good-driver' }), log: () => undefined }), (d) => d.close());
    const attackers = [
      cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'vendor', store: 'evil' }) }, autoAck: false }), (c) => c.close()),
      cleanup.add(new RawClient(url, { auth: { token: tokenFor({ role: 'driver', name: 'evil-driver' }) }, autoAck: false }), (c) => c.close()),
    ];
    await Promise.all([vendor.start(), driver.start(), ...attackers.map((a) => a.connected())]);
    const heapBefore = process.memoryUsage().heapUsed;

    const delivered: ParcelMessage[] = [];
    vendor.on('delivered', (m) => delivered.push(m));
    const published: string[] = [];
    const good = (async () => {
      for (let i = 0; i < 20; i++) published.push((await vendor.publish()).orderId);
    })();

    const samples = fc.sample(fc.tuple(eventName, payload, fc.boolean()), { numRuns: 3_000, seed: 20261121 });
    const answered: Array<Promise<unknown>> = [];
    for (const [i, [event, body, withAck]] of samples.entries()) {
      if (RESERVED.has(event)) continue;
      const attacker = attackers[i % 2];
      if (!attacker) continue;
      if (withAck) answered.push(attacker.socket.timeout(10_000).emitWithAck(event, body));
      else attacker.socket.emit(event, body);
    }
    const answers = await Promise.all(answered);
    await good;
    await waitUntil(vendor, 'delivered', () => (delivered.length >= 20 ? true : undefined), 'the 20 good parcels to be delivered during the fuzz', 20_000);

    // every answer is a result, never a crash or a silence
    for (const answer of answers) expect(answer).toHaveProperty('ok');
    // the good vendor got exactly its own parcels, each well formed
    expect(delivered.map((m) => m.orderId).sort()).toEqual([...published].sort());
    for (const m of delivered) expect(orderSchema.safeParse(m.order).success).toBe(true);
    // anything relayed to the attackers is well formed and of their own store
    for (const attacker of attackers) {
      for (const { payload: m } of attacker.received) {
        expect(orderSchema.safeParse(m.order).success).toBe(true);
        if (m.event !== 'pickup') expect(m.store).toBe('evil');
      }
    }
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
    expect(hub.metrics.refusedCount('CAPS_ERR_INVALID_PAYLOAD')).toBeGreaterThan(1_000);

    // the hub is still up and serving: a fresh client completes a parcel
    const health = await fetch(`${url}/healthz`);
    expect(health.status).toBe(200);
    const after = cleanup.add(new VendorClient({ url, store: 'good', token: tokenFor({ role: 'vendor', store: 'good' }), log: () => undefined }), (v) => v.close());
    await after.start();
    const last: string[] = [];
    after.on('delivered', (m) => last.push(m.orderId));
    const { orderId } = await after.publish();
    await waitUntil(after, 'delivered', () => (last.includes(orderId) ? true : undefined), 'a parcel after the fuzz to be delivered');
    // a generous bound: the point is "did not run away", not a benchmark
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(200 * 1024 * 1024);
  });
});
