import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { HubOptions } from '../hub/hub.js';
import { RedisStorage } from '../hub/storage/redis-storage.js';
import { ENDPOINTS_EFFECTIVE_MS, RedisOutbox } from '../hub/webhooks/redis-outbox.js';
import type { WebhookEndpoint } from '../hub/webhooks/types.js';
import { Cleanup, RawClient, order, startHub } from './helpers/hub.js';
import { TestRedisCluster, fileRedis } from './helpers/redis.js';
import { poll } from './helpers/wait.js';
import { WebhookReceiver, deliveredEvents, inOrderPerParcel, verifies } from './helpers/webhook-receiver.js';

/**
 * Webhooks with several hubs on one Redis (and on a Redis Cluster): endpoints and the outbox are
 * in Redis, shared, so an endpoint registered through one hub gets the steps recorded through any,
 * any hub delivers what waits, and the routes agree on every hub.
 */
const cleanup = new Cleanup();
const testRedis = fileRedis();
afterEach(() => cleanup.run());

/** Test hubs send to receivers on 127.0.0.1 and retry fast. */
const FAST = { webhookAllowPrivate: true, webhookRetryBaseMs: 20 } as const;
const STEPS = ['pickup', 'in-transit', 'delivered'] as const;

async function twoHubs(where: Partial<HubOptions>, options: Partial<HubOptions> = {}) {
  const prefix = `t${randomUUID()}:`;
  const a = cleanup.add(await startHub({ ...where, redisPrefix: prefix, ...FAST, ...options }), (h) => h.close());
  const b = cleanup.add(await startHub({ ...where, redisPrefix: prefix, ...FAST, ...options }), (h) => h.close());
  return { a, b, prefix };
}

async function api(url: string, method: string, path: string, body?: unknown): Promise<{ status: number; data: Record<string, unknown> }> {
  const res = await fetch(`${url}/api${path}`, { method, headers: { 'content-type': 'application/json' }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  const answer = (await res.json()) as { data?: Record<string, unknown> };
  return { status: res.status, data: answer.data ?? {} };
}

async function register(url: string, store: string, receiverUrl: string): Promise<{ id: string; secret: string }> {
  const answer = await api(url, 'POST', `/stores/${store}/webhooks`, { url: receiverUrl });
  expect(answer.status).toBe(201);
  return answer.data as { id: string; secret: string };
}

async function listOf(url: string, store: string): Promise<Array<Record<string, unknown>>> {
  return (await api(url, 'GET', `/stores/${store}/webhooks`)).data['webhooks'] as Array<Record<string, unknown>>;
}

async function client(url: string): Promise<RawClient> {
  const c = cleanup.add(new RawClient(url), (x) => x.close());
  await c.connected();
  return c;
}

/** Each step of each parcel, in turn, through the client given for that parcel. */
async function publish(parcels: ReadonlyArray<{ through: RawClient; parcel: ReturnType<typeof order> }>): Promise<void> {
  for (const event of STEPS) {
    for (const { through, parcel } of parcels) await expect(through.request(event, parcel)).resolves.toMatchObject({ ok: true });
  }
}

/** An endpoint registered through A is effective on B within ENDPOINTS_EFFECTIVE_MS: B's pickups reach it from then on. */
async function effectiveOn(through: RawClient, store: string, receiver: WebhookReceiver, registeredAt: number): Promise<number> {
  let n = 0;
  await poll(async () => {
    await expect(through.request('pickup', order(store, `probe-${++n}`))).resolves.toMatchObject({ ok: true });
    return receiver.received.some((r) => String(r.body.data['orderId']).startsWith(`${store}-order-probe-`)) ? true : undefined;
  }, `a pickup recorded through the other hub to reach the endpoint within ${ENDPOINTS_EFFECTIVE_MS} ms`, ENDPOINTS_EFFECTIVE_MS + 1_000, 20);
  return Date.now() - registeredAt;
}

describe('webhooks with several hubs on one Redis', () => {
  it('an endpoint registered through hub A gets, signed and in order per parcel, the steps recorded through hub B', async () => {
    const receiver = cleanup.add(await WebhookReceiver.start(), (r) => r.close());
    const { a, b } = await twoHubs({ redisUrl: testRedis().url });
    const onB = await client(b.url);
    const registeredAt = Date.now();
    const { id, secret } = await register(a.url, 'acme', receiver.url);
    expect(await effectiveOn(onB, 'acme', receiver, registeredAt)).toBeLessThanOrEqual(ENDPOINTS_EFFECTIVE_MS);
    const parcels = [1, 2, 3].map((n) => ({ through: onB, parcel: order('acme', n) }));
    await publish(parcels);
    await receiver.waitFor((r) => (parcels.every(({ parcel }) => deliveredEvents(r, parcel.orderId).length === 3) ? true : undefined), 'the 9 steps recorded through hub B at the endpoint registered through A');
    for (const { parcel } of parcels) expect(deliveredEvents(receiver.received, parcel.orderId)).toEqual(STEPS.map((e) => `parcel.${e}`));
    expect(inOrderPerParcel(receiver.received)).toEqual([]);
    for (const r of receiver.received) expect(verifies(secret, r), `signature of ${r.id}`).toBe(true);
    // both hubs list it, with nothing pending once delivered
    for (const hub of [a, b]) {
      const [listed] = await poll(async () => {
        const list = await listOf(hub.url, 'acme');
        return list.every((w) => w['pending'] === 0) ? list : undefined;
      }, `nothing pending in ${hub.url}'s list`);
      expect(listed).toMatchObject({ id, state: 'active', pending: 0 });
    }
  });

  it('retries a receiver that fails, then recovers: every step recorded through either hub delivered, in order per parcel', async () => {
    const receiver = cleanup.add(await WebhookReceiver.start(), (r) => r.close());
    const { a, b } = await twoHubs({ redisUrl: testRedis().url });
    const [onA, onB] = [await client(a.url), await client(b.url)];
    const registeredAt = Date.now();
    const { secret } = await register(b.url, 'acme', receiver.url);
    await effectiveOn(onA, 'acme', receiver, registeredAt);
    let failures = 0;
    receiver.answer = () => (failures++ < 12 ? 500 : 200);
    const parcels = [1, 2, 3, 4].map((n) => ({ through: n % 2 === 0 ? onA : onB, parcel: order('acme', n) }));
    await publish(parcels);
    await receiver.waitFor((r) => (parcels.every(({ parcel }) => deliveredEvents(r, parcel.orderId).length === 3) ? true : undefined), 'all 12 steps delivered once the receiver recovers');
    expect(failures).toBeGreaterThan(12);
    for (const { parcel } of parcels) expect(deliveredEvents(receiver.received, parcel.orderId)).toEqual(STEPS.map((e) => `parcel.${e}`));
    expect(inOrderPerParcel(receiver.received)).toEqual([]);
    for (const r of receiver.received) expect(verifies(secret, r)).toBe(true);
  });

  it('a hub closed with deliveries pending: the other delivers them, none lost, each once per endpoint, in order per parcel', async () => {
    const first = cleanup.add(await WebhookReceiver.start(), (r) => r.close());
    const second = cleanup.add(await WebhookReceiver.start(), (r) => r.close());
    const { a, b } = await twoHubs({ redisUrl: testRedis().url });
    const [onA, onB] = [await client(a.url), await client(b.url)];
    const registeredAt = Date.now();
    const one = await register(a.url, 'acme', first.url);
    const two = await register(a.url, 'acme', second.url);
    // hub B knows both once the second gets B's probes (it loaded every endpoint at once)
    await effectiveOn(onB, 'acme', second, registeredAt);
    // from here on both refuse until hub A is gone
    let open = false;
    first.answer = second.answer = () => (open ? 200 : 500);
    const parcels = [1, 2, 3, 4, 5, 6].map((n) => ({ through: n % 2 === 0 ? onA : onB, parcel: order('acme', n) }));
    await publish(parcels);
    for (const receiver of [first, second]) {
      await receiver.waitFor((r) => (parcels.every(({ parcel }) => r.some((x) => x.status === 500 && x.body.data['orderId'] === parcel.orderId)) ? true : undefined), 'a failed attempt at every parcel before hub A closes');
    }
    onA.close();
    await a.close();
    open = true;
    for (const [receiver, what] of [[first, 'the first'], [second, 'the second']] as const) {
      await receiver.waitFor((r) => (parcels.every(({ parcel }) => deliveredEvents(r, parcel.orderId).length === 3) ? true : undefined), `hub B to deliver all 18 events to ${what} endpoint`, 15_000);
      for (const { parcel } of parcels) expect(deliveredEvents(receiver.received, parcel.orderId), parcel.orderId).toEqual(STEPS.map((e) => `parcel.${e}`));
      expect(inOrderPerParcel(receiver.received)).toEqual([]);
      // each event went out with a 2xx once (a receiver dedupes on the id all the same)
      const oks = receiver.received.filter((r) => r.status === 200 && !String(r.body.data['orderId']).includes('probe'));
      expect(oks).toHaveLength(18);
    }
    for (const r of second.received) expect(verifies(two.secret, r)).toBe(true);
    for (const r of first.received) expect(verifies(one.secret, r)).toBe(true);
    const list = await poll(async () => {
      const l = await listOf(b.url, 'acme');
      return l.every((w) => w['pending'] === 0) ? l : undefined;
    }, 'nothing pending on hub B');
    expect(list).toHaveLength(2);
  });

  it('list, disable, enable and remove agree on both hubs', async () => {
    const receiver = cleanup.add(await WebhookReceiver.start(), (r) => r.close());
    receiver.answer = () => 500;
    const { a, b } = await twoHubs({ redisUrl: testRedis().url }, { webhookDisableAfterMs: 200 });
    const onB = await client(b.url);
    const { id } = await register(a.url, 'acme', receiver.url);
    expect((await listOf(b.url, 'acme')).map((w) => w['id'])).toEqual([id]);
    await poll(async () => {
      await onB.request('pickup', order('acme', `x${Date.now()}`));
      return receiver.received.length > 0 ? true : undefined;
    }, 'a first failed attempt');
    const disabled = await poll(async () => {
      const [w] = await listOf(a.url, 'acme');
      return w?.['state'] === 'disabled' ? w : undefined;
    }, 'hub A to list the endpoint disabled');
    const [onBList] = await listOf(b.url, 'acme');
    expect(onBList).toMatchObject({ id, state: 'disabled', disabledReason: disabled['disabledReason'], pending: disabled['pending'] });
    expect(Number(disabled['pending'])).toBeGreaterThan(0);
    receiver.answer = () => 200;
    const enabled = await api(b.url, 'POST', `/stores/acme/webhooks/${id}/enable`);
    expect(enabled.data).toMatchObject({ id, state: 'active' });
    expect((await listOf(a.url, 'acme'))[0]).toMatchObject({ id, state: 'active' });
    await poll(async () => ((await listOf(a.url, 'acme'))[0]?.['pending'] === 0 ? true : undefined), 'what waited delivered after the enable through hub B');
    expect((await api(b.url, 'DELETE', `/stores/acme/webhooks/${id}`)).status).toBe(200);
    expect(await listOf(a.url, 'acme')).toEqual([]);
    expect((await api(a.url, 'POST', `/stores/acme/webhooks/${id}/enable`)).status).toBe(404);
  });
});

describe('the Redis outbox alone', () => {
  async function outboxes(leaseMs: number) {
    const prefix = `t${randomUUID()}:`;
    const storage = cleanup.add(new RedisStorage({ url: testRedis().url, prefix }), (s) => s.close());
    await storage.open();
    const make = (hubId: string) => cleanup.add(new RedisOutbox({ redis: storage.redis, keys: storage.keys, hubId, leaseMs }), (o) => o.close());
    const one = make('hub-1');
    await one.ready();
    const endpoint: WebhookEndpoint = { id: 'wh_0123456789abcdef', store: 'acme', url: 'http://127.0.0.1:1/x', events: undefined, secret: 'whsec_x', created: Date.now(), state: 'active', disabledReason: undefined, disabledAt: undefined, failingSince: undefined, lastError: undefined, lastErrorAt: undefined, lastSuccessAt: undefined };
    await one.addEndpoint(endpoint);
    // another hub, started after: it loads the endpoint from Redis
    const two = make('hub-2');
    await two.ready();
    expect(two.endpoints().map((e) => e.id)).toEqual([endpoint.id]);
    return { one, two, endpoint, storage, prefix };
  }
  const row = (eventId: string, orderId: string, position: number) => ({ endpointId: 'wh_0123456789abcdef', eventId, store: 'acme', orderId, position, body: `{"id":"${eventId}"}` });

  it('gives a delivery to one hub at a time; a claim that lapses (a dead hub) is taken over; order per parcel and idempotency hold', async () => {
    const { one, two, endpoint } = await outboxes(300);
    await one.enqueue([row('e2', 'o1', 2), row('e1', 'o1', 1), row('f1', 'o2', 0)]);
    // e1 was enqueued after e2 of the same parcel (two answers racing): it goes first
    const claimedByOne = await one.claim(endpoint.id, Date.now(), 10, new Set());
    expect(claimedByOne.map((d) => d.eventId).sort()).toEqual(['e1', 'f1']);
    expect(await two.claim(endpoint.id, Date.now(), 10, new Set())).toEqual([]);
    // hub 1 dies holding them: after the lease, hub 2 takes them over
    const takenAt = Date.now();
    const taken = await poll(async () => {
      const got = await two.claim(endpoint.id, Date.now(), 10, new Set());
      return got.length > 0 ? got : undefined;
    }, 'hub 2 to take over the lapsed claims', 3_000, 20);
    expect(Date.now() - takenAt).toBeGreaterThanOrEqual(200);
    expect(taken.map((d) => d.eventId).sort()).toEqual(['e1', 'f1']);
    // hub 1's late settle of a claim no longer its own changes nothing
    const e1ByOne = claimedByOne.find((d) => d.eventId === 'e1');
    if (e1ByOne) await one.retry(e1ByOne, Date.now() + 60_000);
    for (const d of taken) await two.delivered(d);
    const next = await two.claim(endpoint.id, Date.now(), 10, new Set());
    expect(next.map((d) => d.eventId)).toEqual(['e2']);
    await two.delivered(next[0] as (typeof next)[number]);
    expect(await one.pending(endpoint)).toBe(0);
    // enqueued again within the retention: not sent again
    await two.enqueue([row('e1', 'o1', 1), row('e2', 'o1', 2)]);
    expect(await one.pending(endpoint)).toBe(0);
    expect(await one.claim(endpoint.id, Date.now(), 10, new Set())).toEqual([]);
  });

  it('pages what is due: a claim takes at most its limit, however many wait', async () => {
    const { one, endpoint } = await outboxes(10_000);
    await one.enqueue(Array.from({ length: 50 }, (_, i) => row(`p${i}`, `o${i}`, 0)));
    expect(await one.pendingTotal()).toBe(50);
    expect(await one.claim(endpoint.id, Date.now(), 8, new Set())).toHaveLength(8);
    expect(await one.claim(endpoint.id, Date.now(), 8, new Set())).toHaveLength(8);
    expect(await one.nextDue(endpoint.id, Date.now())).toBeGreaterThan(Date.now() + 5_000);
  });

  it('removes an endpoint with a large backlog a page of rows per script, leaving nothing of it in Redis', async () => {
    const { one, two, endpoint, storage, prefix } = await outboxes(10_000);
    await one.enqueue(Array.from({ length: 1_300 }, (_, i) => row(`r${i}`, `o${i % 400}`, Math.floor(i / 400))));
    expect(await one.pending(endpoint)).toBe(1_300);
    const mine = `${prefix}*${endpoint.id}*`;
    expect((await storage.redis.keys(mine)).length).toBeGreaterThan(400);
    await one.removeEndpoint(endpoint);
    expect(await one.pending(endpoint)).toBe(0);
    expect(await two.claim(endpoint.id, Date.now(), 8, new Set())).toEqual([]);
    // this test's keys only: the others' endpoints have the same id under their own prefixes
    expect(await storage.redis.keys(mine)).toEqual([]);
  });
});

describe('webhooks on a Redis Cluster', () => {
  let cluster: TestRedisCluster;
  beforeAll(async () => {
    cluster = await TestRedisCluster.start(3);
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it('endpoints of stores on several shards registered through one hub get the steps recorded through the other, in order, after failures', async () => {
    const receiver = cleanup.add(await WebhookReceiver.start(), (r) => r.close());
    const { a, b } = await twoHubs({ redisCluster: cluster.nodes });
    const onB = await client(b.url);
    const stores = ['acme', 'globex', 'initech'];
    const secrets = new Map<string, string>();
    for (const store of stores) {
      const registeredAt = Date.now();
      secrets.set(store, (await register(a.url, store, receiver.url)).secret);
      await effectiveOn(onB, store, receiver, registeredAt);
    }
    let failures = 0;
    receiver.answer = () => (failures++ < 6 ? 500 : 200);
    const parcels = stores.flatMap((store) => [1, 2].map((n) => ({ through: onB, parcel: order(store, n) })));
    await publish(parcels);
    await receiver.waitFor((r) => (parcels.every(({ parcel }) => deliveredEvents(r, parcel.orderId).length === 3) ? true : undefined), 'all 18 steps delivered on the cluster', 15_000);
    for (const { parcel } of parcels) expect(deliveredEvents(receiver.received, parcel.orderId)).toEqual(STEPS.map((e) => `parcel.${e}`));
    expect(inOrderPerParcel(receiver.received)).toEqual([]);
    for (const r of receiver.received) expect(verifies(secrets.get(String(r.body.data['store'])) ?? '', r)).toBe(true);
    expect((await listOf(a.url, 'globex')).map((w) => w['state'])).toEqual(['active']);
  });
});
