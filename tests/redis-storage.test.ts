import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DRIVER_QUEUE } from '../protocol/messages.js';
import { ACTIVE_PER_STORE, RedisStorage, bellMessageOf } from '../hub/storage/redis-storage.js';
import { SHARDS } from '../hub/storage/redis-keys.js';
import type { StepInput } from '../hub/storage/storage.js';
import { Cleanup } from './helpers/hub.js';
import { TestRedis } from './helpers/redis.js';
import { poll } from './helpers/wait.js';

/** What only the Redis storage does: streams, consumer groups, and what is left once parcels are gone. */
const cleanup = new Cleanup();
let redis: TestRedis;
let admin: Redis;
beforeAll(async () => {
  redis = await TestRedis.start();
  admin = new Redis(redis.url);
});
afterAll(async () => {
  await admin.quit();
  await redis.stop();
});
afterEach(async () => {
  await cleanup.run();
});

async function open(): Promise<{ storage: RedisStorage; prefix: string }> {
  const prefix = `t${randomUUID()}:`;
  const storage = cleanup.add(new RedisStorage({ url: redis.url, prefix }), (s) => s.close());
  await storage.open();
  return { storage, prefix };
}

async function keysUnder(prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await admin.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  return keys.sort();
}

function at(n: number): string {
  return new Date(Date.UTC(2026, 0, 1, 0, 0, n)).toISOString();
}

async function accept(storage: RedisStorage, input: StepInput): Promise<string> {
  const outcome = await storage.recordStep(input);
  if (outcome.status !== 'accepted') throw new Error(`${input.event} of ${input.orderId}: ${JSON.stringify(outcome)}`);
  return outcome.message.messageId;
}

describe('redis storage', () => {
  it('keeps nothing of a delivered parcel once past retention: the keys left are the shards’ own, however many parcels went through', async () => {
    const { storage, prefix } = await open();
    const fixed = await keysUnder(prefix);
    for (let n = 0; n < 300; n++) {
      const store = `store-${n % 30}`;
      const base = { store, orderId: `o-${n}`, time: at(n) };
      await accept(storage, { ...base, event: 'pickup', customer: 'C', address: 'A' });
      const [pickup] = await storage.takePickups('hub-1', 1, Array.from({ length: SHARDS }, (_, k) => k), false);
      expect(await storage.ack(DRIVER_QUEUE, pickup?.messageId ?? '')).toBe('removed');
      for (const event of ['in-transit', 'delivered'] as const) {
        const id = await accept(storage, { ...base, event, driver: 'd1', time: at(n) });
        expect(await storage.ack(store, id)).toBe('removed');
      }
    }
    expect((await keysUnder(prefix)).length).toBeGreaterThan(fixed.length + 300);
    expect(await storage.prune(at(100_000), 1_000)).toBe(300);
    // each shard's pickups stream (and its group), its meta and its readiness probe: 16 x 3 at most
    const left = await keysUnder(prefix);
    expect(left.filter((key) => !/\{\d+\}:(pickups|meta|ready)$/.test(key))).toEqual([]);
    expect(left.length).toBeLessThanOrEqual(3 * SHARDS);
  });

  it('prunes at the cost of what it removes: 2,000 stores with nothing old enough cost a look per shard, not a look per store', async () => {
    const { storage } = await open();
    for (let i = 0; i < 2_000; i += 200) {
      await Promise.all(Array.from({ length: 200 }, (_, k) => accept(storage, { store: `s-${i + k}`, orderId: 'o-1', time: at(i + k), event: 'pickup', customer: 'C', address: 'A' })));
    }
    const calls = async (): Promise<number> => [...(await admin.info('commandstats')).matchAll(/calls=(\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
    const before = await calls();
    expect(await storage.prune(at(100_000), 1_000)).toBe(0);
    // per shard: the script and its one range read (and this test's INFO)
    expect((await calls()) - before).toBeLessThan(3 * SHARDS + 5);
  });

  it('keeps for a hub only the pickups still its own: one another hub’s step settled is let go', async () => {
    const { storage } = await open();
    const shards = Array.from({ length: SHARDS }, (_, k) => k);
    for (const n of [1, 2]) await accept(storage, { store: 'acme', orderId: `o-${n}`, time: at(n), event: 'pickup', customer: 'C', address: 'A' });
    const taken = await storage.takePickups('hub-a', 10, shards, false);
    expect(taken.map((m) => m.orderId)).toEqual(['o-1', 'o-2']);
    // another hub reads nothing: both are hub A's
    expect(await storage.takePickups('hub-b', 10, shards, true)).toEqual([]);
    // o-1's driver reported it in transit through another hub: its script settled the pickup
    await accept(storage, { store: 'acme', orderId: 'o-1', time: at(3), event: 'in-transit', driver: 'd1' });
    const kept = await storage.keep('hub-a', taken.map((m) => m.messageId));
    expect([...kept]).toEqual([taken[1]?.messageId]);
    expect(await storage.keep('hub-b', taken.map((m) => m.messageId))).toEqual(new Set());
    // released: the next hub's sweep takes it at once
    await storage.release('hub-a', [taken[1]?.messageId ?? '']);
    expect((await storage.takePickups('hub-b', 10, shards, true)).map((m) => m.orderId)).toEqual(['o-2']);
  });

  it('keeps and releases every pickup asked for, not only the first of each shard', async () => {
    const { storage } = await open();
    const shards = Array.from({ length: SHARDS }, (_, k) => k);
    for (let n = 1; n <= 5; n++) await accept(storage, { store: 'acme', orderId: `o-${n}`, time: at(n), event: 'pickup', customer: 'C', address: 'A' });
    const taken = await storage.takePickups('hub-a', 10, shards, false);
    const ids = taken.map((m) => m.messageId);
    expect(ids).toHaveLength(5);
    expect([...(await storage.keep('hub-a', ids))].sort()).toEqual([...ids].sort());
    await storage.release('hub-a', ids);
    expect((await storage.takePickups('hub-b', 10, shards, true)).map((m) => m.orderId).sort()).toEqual(['o-1', 'o-2', 'o-3', 'o-4', 'o-5']);
  });

  it('lets consumers that hold nothing and were idle leave the groups; the one holding a pickup stays', async () => {
    const { storage, prefix } = await open();
    const shards = Array.from({ length: SHARDS }, (_, k) => k);
    await accept(storage, { store: 'acme', orderId: 'o-1', time: at(1), event: 'pickup', customer: 'C', address: 'A' });
    expect(await storage.takePickups('holder', 10, shards, false)).toHaveLength(1);
    // a hub that took a pickup, whose driver took it off the queue: it holds nothing now
    await accept(storage, { store: 'acme', orderId: 'o-2', time: at(2), event: 'pickup', customer: 'C', address: 'A' });
    const [done] = await storage.takePickups('empty-handed', 10, shards, false);
    expect(await storage.ack(DRIVER_QUEUE, done?.messageId ?? '')).toBe('removed');
    const consumers = async (): Promise<string[]> => {
      const names: string[] = [];
      for (let k = 0; k < SHARDS; k++) {
        for (const c of (await admin.xinfo('CONSUMERS', `${prefix}{${k}}:pickups`, 'drivers')) as string[][]) names.push(String(c[1]));
      }
      return [...new Set(names)].sort();
    };
    expect(await consumers()).toEqual(['empty-handed', 'holder']);
    expect(await storage.dropIdleConsumers('me', 0)).toBeGreaterThan(0);
    expect(await consumers()).toEqual(['holder']);
  });

  it('puts at most ACTIVE_PER_STORE of a store’s pickups in its shard’s stream; the rest enter one by one as those leave, counted in its quota all along', async () => {
    const { storage } = await open();
    const shards = Array.from({ length: SHARDS }, (_, k) => k);
    const n = ACTIVE_PER_STORE + 3;
    const outcomes = [];
    for (let i = 0; i < n; i++) outcomes.push(await storage.recordStep({ store: 'big', orderId: `o-${i}`, time: at(i), event: 'pickup', customer: 'C', address: 'A' }));
    expect(outcomes.filter((o) => o.status === 'accepted' && o.spilled === true)).toHaveLength(3);
    const first = await storage.takePickups('hub-a', 1_000, shards, false);
    expect(first.map((m) => m.orderId)).toEqual(Array.from({ length: ACTIVE_PER_STORE }, (_, i) => `o-${i}`));
    // o-32's parcel moves on before its turn (a lab driver reported it): it no longer waits
    await accept(storage, { store: 'big', orderId: `o-${ACTIVE_PER_STORE}`, time: at(99), event: 'in-transit', driver: 'd1' });
    // two leave the stream: o-33 and o-34 enter it, in order
    expect(await storage.ack(DRIVER_QUEUE, first[0]?.messageId ?? '')).toBe('removed');
    await accept(storage, { store: 'big', orderId: 'o-1', time: at(100), event: 'in-transit', driver: 'd1' });
    expect((await storage.takePickups('hub-a', 1_000, shards, false)).map((m) => m.orderId)).toEqual([`o-${ACTIVE_PER_STORE + 1}`, `o-${ACTIVE_PER_STORE + 2}`]);
    // the quota counts what waits in the list too: a store limited to n refuses the next
    const limited = cleanup.add(new RedisStorage({ url: redis.url, prefix: `t${randomUUID()}:`, maxQueueDepth: n }), (s) => s.close());
    await limited.open();
    for (let i = 0; i < n; i++) await accept(limited, { store: 'big', orderId: `o-${i}`, time: at(i), event: 'pickup', customer: 'C', address: 'A' });
    expect(await limited.recordStep({ store: 'big', orderId: 'one-more', time: at(n), event: 'pickup', customer: 'C', address: 'A' })).toMatchObject({ status: 'refused', code: 'CAPS_ERR_QUEUE_FULL' });
  });

  it('takes a cancelled parcel’s pickup off its store’s waiting list, and queues a re-attempt there with its attempt when the store has its share of the stream', async () => {
    const { storage } = await open();
    const shards = Array.from({ length: SHARDS }, (_, k) => k);
    const big = (orderId: string, n: number): StepInput => ({ store: 'big', orderId, time: at(n), event: 'pickup', customer: 'C', address: 'A' });
    // the quota counts exactly the pickups the pool shows, wherever they wait
    const quotaIsPool = async (): Promise<void> => {
      const pool = await storage.pending(DRIVER_QUEUE);
      expect(Number(await admin.hget(storage.keys.counts('big'), 'wait'))).toBe(pool.length);
    };
    for (let i = 0; i < ACTIVE_PER_STORE; i++) await accept(storage, big(`o-${i}`, i));
    expect(await storage.recordStep(big('c', 40))).toMatchObject({ status: 'accepted', spilled: true, message: { messageId: '' } });
    // no driver could have it: taken off the list, nothing to withdraw from drivers
    const cancel = await storage.recordStep({ store: 'big', orderId: 'c', time: at(41), event: 'cancelled' });
    expect(cancel).toMatchObject({ status: 'accepted' });
    expect(cancel.status === 'accepted' && cancel.withdrawn).toBeFalsy();
    expect((await storage.pending(DRIVER_QUEUE)).filter((m) => m.orderId === 'c')).toEqual([]);
    await quotaIsPool();

    await accept(storage, { store: 'big', orderId: 'o-0', time: at(42), event: 'in-transit', driver: 'd1' });
    await accept(storage, big('f', 43));
    const failed = await storage.recordStep({ store: 'big', orderId: 'o-0', time: at(44), event: 'failed', driver: 'd1', details: { reason: 'recipient-absent' }, maxAttempts: 3 });
    expect(failed).toMatchObject({ status: 'accepted', message: { reattempt: true }, requeued: { orderId: 'o-0', attempt: 2, messageId: '' } });
    expect((await storage.pending(DRIVER_QUEUE)).filter((m) => m.orderId === 'o-0').map((m) => [m.messageId, m.attempt])).toEqual([['', 2]]);
    await quotaIsPool();
    // one leaves the stream: the re-attempt enters it, still attempt 2
    const inStream = await storage.takePickups('hub-a', 1_000, shards, false);
    expect(await storage.ack(DRIVER_QUEUE, inStream.find((m) => m.orderId === 'o-1')?.messageId ?? '')).toBe('removed');
    const [again] = await storage.takePickups('hub-a', 1_000, shards, false);
    expect(again).toMatchObject({ orderId: 'o-0', attempt: 2, event: 'pickup' });
    expect(again?.messageId).toMatch(/^P\./);
    await quotaIsPool();
    // its next step takes it off the stream, as any pickup's
    await accept(storage, { store: 'big', orderId: 'o-0', time: at(45), event: 'in-transit', driver: 'd2', attempt: 2 });
    expect((await storage.pending(DRIVER_QUEUE)).filter((m) => m.orderId === 'o-0')).toEqual([]);
    await quotaIsPool();
  });

  it('sends, for a plain parcel’s pickup, in-transit and delivered, the commands it always did (the lifecycle costs the course’s steps nothing)', async () => {
    const { storage } = await open();
    const calls = async (): Promise<Map<string, number>> => {
      const m = new Map<string, number>();
      for (const x of (await admin.info('commandstats')).matchAll(/cmdstat_([^:]+):calls=(\d+)/g)) m.set(x[1] ?? '', Number(x[2]));
      return m;
    };
    const step = (event: 'pickup' | 'in-transit' | 'delivered', orderId: string, n: number): StepInput => ({ event, store: 'acme', orderId, customer: 'C', address: 'A', driver: 'd1', time: at(n) });
    // the script loaded (EVAL once) before counting
    for (const event of ['pickup', 'in-transit', 'delivered'] as const) await accept(storage, step(event, 'warm', 0));
    const per: Record<string, string> = {};
    for (const event of ['pickup', 'in-transit', 'delivered'] as const) {
      const before = await calls();
      for (let i = 0; i < 5; i++) await accept(storage, step(event, `o-${i}`, i + 1));
      const after = await calls();
      per[event] = [...after]
        .filter(([name, n]) => name !== 'info' && n > (before.get(name) ?? 0))
        .map(([name, n]) => `${name}=${(n - (before.get(name) ?? 0)) / 5}`)
        .sort()
        .join(' ');
    }
    // as counted on the code before the lifecycle (a pickup still in the stream is settled by in-transit)
    expect(per).toEqual({
      pickup: 'evalsha=1 hget=1 hincrby=1 hmget=2 hset=2 sadd=2 spublish=1 xadd=1 zadd=2',
      'in-transit': 'evalsha=1 hdel=1 hincrby=2 hmget=2 hset=2 lpop=1 spublish=1 xack=1 xadd=1 xdel=1 xlen=1 zadd=1 zrem=1',
      delivered: 'evalsha=1 hmget=2 hset=2 spublish=1 xadd=1 xlen=1 zadd=2 zrem=1',
    });
  });

  it('reads a step’s message back as it was answered, from its store’s log, its bell and the pickups stream: attempt, details and reattempt included', async () => {
    const { storage } = await open();
    const shards = Array.from({ length: SHARDS }, (_, k) => k);
    const bells = new Redis(redis.url);
    const heard: string[] = [];
    bells.on('smessage', (_channel: string, text: string) => heard.push(text));
    await bells.ssubscribe(storage.keys.storeBell('acme'));
    try {
      await accept(storage, { store: 'acme', orderId: 'o-1', time: at(1), event: 'pickup', customer: 'C', address: 'A' });
      const sent = [];
      for (const input of [
        { event: 'in-transit', driver: 'd1', details: { eta: '2026-01-01T01:00:00.000Z' } },
        { event: 'failed', driver: 'd1', details: { reason: 'recipient-absent', note: 'rang "twice"', location: { lat: 51.123456789012345, lng: -0.1 } }, maxAttempts: 3 },
        { event: 'in-transit', driver: 'd2', attempt: 2 },
        { event: 'delivered', driver: 'd2', details: { recipient: 'Ada' } },
      ] as const) {
        const outcome = await storage.recordStep({ store: 'acme', orderId: 'o-1', time: at(sent.length + 2), ...input });
        if (outcome.status !== 'accepted') throw new Error(JSON.stringify(outcome));
        sent.push(outcome.message);
        if (outcome.requeued) {
          const [pickup] = await storage.takePickups('hub-a', 10, shards, false);
          expect(pickup).toEqual(outcome.requeued);
        }
      }
      expect(sent.map((m) => [m.event, m.attempt ?? 1, m.reattempt])).toEqual([['in-transit', 1, undefined], ['failed', 1, true], ['in-transit', 2, undefined], ['delivered', 2, undefined]]);
      expect(await storage.pending('acme')).toEqual(sent);
      await poll(() => (heard.length >= sent.length ? true : undefined), 'the store bell to ring once per step');
      expect(heard.map((text) => bellMessageOf('acme', text.slice(2))?.message)).toEqual(sent);
    } finally {
      await bells.quit();
    }
  });

  it('tells an acknowledged message from an unknown one without keeping a trace of each', async () => {
    const { storage } = await open();
    const pickup = await accept(storage, { store: 'acme', orderId: 'o-1', time: at(1), event: 'pickup', customer: 'C', address: 'A' });
    const transit = await accept(storage, { store: 'acme', orderId: 'o-1', time: at(2), event: 'in-transit', driver: 'd1' });
    expect(await storage.ack('acme', transit)).toBe('removed');
    expect(await storage.ack('acme', transit)).toBe('already-acknowledged');
    expect(await storage.ack('acme', transit.replace(/\d+-\d+$/, '99999999999999-0'))).toBe('unknown-message');
    expect(await storage.ack('acme', 'not-an-id')).toBe('unknown-message');
    expect(await storage.ack('nowhere', transit)).toBe('unknown-queue');
    // settled by its in-transit: already off the drivers' queue
    expect(await storage.ack(DRIVER_QUEUE, pickup)).toBe('already-acknowledged');
  });
});
