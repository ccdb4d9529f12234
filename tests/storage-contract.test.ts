import { copyFileSync, existsSync, fstatSync, statSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { testStorages } from './helpers/storages.js';
import { within } from './helpers/hub-process.js';
import { DRIVER_QUEUE } from '../protocol/messages.js';
import type { ParcelMessage } from '../protocol/messages.js';
import { MemoryStorage } from '../hub/storage/memory-storage.js';
import { SqliteStorage } from '../hub/storage/sqlite-storage.js';
import type { SqliteStorageOptions } from '../hub/storage/sqlite-storage.js';
import type { Storage, StepInput, StorageLimits } from '../hub/storage/storage.js';

/** One contract, every store: the hub must not be able to tell them apart. */
const { factories, tempDir, open, closeAll } = testStorages('caps-store-');
/** Second connections to a store's file, as another process would look at it. */
const readers: Database.Database[] = [];
/** WAL syncs a test holds: let go before the stores close, so a failed test does not hang in close(). */
const heldFinishes: Array<(err: Error | null) => void> = [];
afterEach(async () => {
  for (const finish of heldFinishes.splice(0)) finish(null);
  for (const reader of readers.splice(0)) reader.close();
  await closeAll();
});

/**
 * The store's files as a `kill -9` would leave them at this instant (what it wrote, synced or not;
 * nothing it still holds in memory), opened by a new store: what a restarted hub would find.
 */
function afterCrash(dir: string): SqliteStorage {
  const copy = tempDir();
  for (const file of ['caps.sqlite', 'caps.sqlite-wal', 'caps-journal.sqlite', 'caps-journal.sqlite-wal']) {
    if (existsSync(join(dir, file))) copyFileSync(join(dir, file), join(copy, file));
  }
  const store = new SqliteStorage({ dir: copy });
  open.push(store);
  return store;
}

let clock = 0;
function step(event: StepInput['event'], store: string, n: number, extra: Partial<StepInput> = {}): StepInput {
  clock++;
  return {
    event,
    store,
    orderId: `${store}-${n}`,
    ...(event === 'pickup' ? { customer: `Customer ${n}`, address: `${n} Main St` } : { driver: 'd1' }),
    time: new Date(Date.UTC(2026, 10, 21, 12, 0, clock)).toISOString(),
    ...extra,
  };
}

describe.each(factories)('%s store contract', (_kind, make) => {
  function create(maxQueueDepth?: number, maxPickups?: number): Storage {
    const store = make({ ...(maxQueueDepth !== undefined ? { maxQueueDepth } : {}), ...(maxPickups !== undefined ? { maxPickups } : {}) });
    open.push(store);
    return store;
  }

  it('queues a pickup for the drivers and later steps for the store, with increasing seq', async () => {
    const store = create();
    const first = await store.recordStep(step('pickup', 'acme', 1));
    const second = await store.recordStep(step('pickup', 'acme', 2));
    expect(first).toMatchObject({ status: 'accepted', message: { event: 'pickup', queueId: DRIVER_QUEUE, clientId: DRIVER_QUEUE, seq: 1, orderId: 'acme-1', order: { orderId: 'acme-1', customer: 'Customer 1' } } });
    expect(second).toMatchObject({ status: 'accepted', message: { seq: 2 } });
    const transit = await store.recordStep(step('in-transit', 'acme', 1));
    expect(transit).toMatchObject({ status: 'accepted', message: { event: 'in-transit', queueId: 'acme', seq: 1, driver: 'd1', customer: 'Customer 1', address: '1 Main St' } });
    // a driver's step takes its parcel's pickup off the drivers' queue in the same commit (with
    // Redis, the hub that hears it may not be the one holding the pickup)
    const stillQueued = ['acme-2'];
    expect((await store.pending(DRIVER_QUEUE)).map((m) => m.orderId)).toEqual(stillQueued);
    expect((await store.pending('acme')).map((m) => m.event)).toEqual(['in-transit']);
    const queues = await store.queues();
    expect(queues.map((q) => [q.queue, q.depth]).sort()).toEqual([['acme', 1], [DRIVER_QUEUE, stillQueued.length]]);
    expect(queues.every((q) => typeof q.oldest === 'string')).toBe(true);
  });

  it('records a parcel’s state and history', async () => {
    const store = create();
    await store.recordStep(step('pickup', 'acme', 1));
    await store.recordStep(step('in-transit', 'acme', 1));
    await store.recordStep(step('delivered', 'acme', 1));
    const parcel = await store.parcel('acme', 'acme-1');
    expect(parcel).toMatchObject({ order: { store: 'acme', orderId: 'acme-1', customer: 'Customer 1' }, state: 'delivered', driver: 'd1' });
    expect(parcel?.history.map((h) => h.event)).toEqual(['pickup', 'in-transit', 'delivered']);
    expect(await store.parcel('acme', 'nope')).toBeUndefined();
  });

  it('treats the same step twice as a duplicate, serially and concurrently, and queues it once', async () => {
    const store = create();
    expect((await store.recordStep(step('pickup', 'acme', 1))).status).toBe('accepted');
    expect((await store.recordStep(step('pickup', 'acme', 1, { customer: 'Someone Else' }))).status).toBe('duplicate');
    const concurrent = await Promise.all(Array.from({ length: 10 }, () => store.recordStep(step('in-transit', 'acme', 1))));
    expect(concurrent.map((o) => o.status).sort()).toEqual(['accepted', ...Array<string>(9).fill('duplicate')]);
    expect(await store.pending(DRIVER_QUEUE)).toHaveLength(0);
    expect(await store.pending('acme')).toHaveLength(1);
    expect((await store.parcel('acme', 'acme-1'))?.order.customer).toBe('Customer 1');
  });

  it('refuses steps out of order, and stores nothing for them', async () => {
    const store = create();
    expect(await store.recordStep(step('in-transit', 'acme', 9))).toMatchObject({ status: 'refused', code: 'CAPS_ERR_UNKNOWN_PARCEL' });
    expect(await store.recordStep(step('delivered', 'acme', 9))).toMatchObject({ status: 'refused', code: 'CAPS_ERR_UNKNOWN_PARCEL' });
    await store.recordStep(step('pickup', 'acme', 1));
    // delivered straight from pickup is allowed (a driver may hand over at once)
    expect((await store.recordStep(step('delivered', 'acme', 1))).status).toBe('accepted');
    expect(await store.recordStep(step('in-transit', 'acme', 1))).toMatchObject({ status: 'refused', code: 'CAPS_ERR_OUT_OF_ORDER' });
    expect((await store.pending('acme')).map((m) => m.event)).toEqual(['delivered']);
    expect(await store.parcel('acme', 'acme-9')).toBeUndefined();
  });

  it('refuses a driver step for a parcel not dispatched to that driver, unless it already carries it', async () => {
    const store = create();
    await store.recordStep(step('pickup', 'acme', 1));
    expect(await store.recordStep(step('in-transit', 'acme', 1, { driver: 'd2', dispatched: false }))).toMatchObject({ status: 'refused', code: 'CAPS_ERR_NOT_DISPATCHED' });
    expect((await store.recordStep(step('in-transit', 'acme', 1, { driver: 'd1', dispatched: true }))).status).toBe('accepted');
    // d1 carries it now: its delivered passes even when the hub no longer remembers the dispatch
    expect((await store.recordStep(step('delivered', 'acme', 1, { driver: 'd1', dispatched: false }))).status).toBe('accepted');
    expect(await store.recordStep(step('delivered', 'acme', 1, { driver: 'd2', dispatched: false }))).toMatchObject({ status: 'refused', code: 'CAPS_ERR_NOT_DISPATCHED' });
    expect((await store.parcel('acme', 'acme-1'))?.history.map((h) => h.driver ?? '')).toEqual(['', 'd1', 'd1']);
  });

  it('takes acknowledged messages off their queue, and tells unknown from already acknowledged', async () => {
    const store = create();
    const accepted = await store.recordStep(step('pickup', 'acme', 1));
    if (accepted.status !== 'accepted') throw new Error('pickup not accepted');
    const id = accepted.message.messageId;
    expect(await store.ack('nowhere', id)).toBe('unknown-queue');
    expect(await store.ack(DRIVER_QUEUE, 'no-such-id')).toBe('unknown-message');
    expect(await store.ack(DRIVER_QUEUE, id)).toBe('removed');
    expect(await store.ack(DRIVER_QUEUE, id)).toBe('already-acknowledged');
    expect(await store.pending(DRIVER_QUEUE)).toEqual([]);
    expect((await store.queues()).find((q) => q.queue === DRIVER_QUEUE)).toMatchObject({ depth: 0 });
  });

  it('refuses a step into a full queue with CAPS_ERR_QUEUE_FULL and stores nothing of it', async () => {
    const store = create(2);
    await store.recordStep(step('pickup', 'acme', 1));
    await store.recordStep(step('pickup', 'acme', 2));
    expect(await store.recordStep(step('pickup', 'acme', 3))).toMatchObject({ status: 'refused', code: 'CAPS_ERR_QUEUE_FULL' });
    expect(await store.parcel('acme', 'acme-3')).toBeUndefined();
    const [first] = await store.pending(DRIVER_QUEUE);
    await store.ack(DRIVER_QUEUE, first?.messageId ?? '');
    expect((await store.recordStep(step('pickup', 'acme', 3))).status).toBe('accepted');
  });

  it('gives each store its own quota of the drivers’ queue: a flood refuses only its own store', async () => {
    const store = create(2);
    await store.recordStep(step('pickup', 'flood', 1));
    await store.recordStep(step('pickup', 'flood', 2));
    expect(await store.recordStep(step('pickup', 'flood', 3))).toMatchObject({ status: 'refused', code: 'CAPS_ERR_QUEUE_FULL', reason: expect.stringContaining('flood') });
    expect((await store.recordStep(step('pickup', 'quiet', 1))).status).toBe('accepted');
    expect((await store.recordStep(step('pickup', 'quiet', 2))).status).toBe('accepted');
    // a pickup taken off the queue frees its own store's quota
    const first = (await store.pending(DRIVER_QUEUE)).find((m) => m.store === 'flood');
    await store.ack(DRIVER_QUEUE, first?.messageId ?? '');
    expect((await store.recordStep(step('pickup', 'flood', 3))).status).toBe('accepted');
    expect(await store.recordStep(step('pickup', 'quiet', 3))).toMatchObject({ status: 'refused', code: 'CAPS_ERR_QUEUE_FULL' });
  });

  it('bounds the drivers’ queue as a whole too: new store names cannot grow it past the hub’s limit', async () => {
    const store = create(10, 3);
    for (const name of ['a', 'b', 'c']) expect((await store.recordStep(step('pickup', name, 1))).status).toBe('accepted');
    expect(await store.recordStep(step('pickup', 'd', 1))).toMatchObject({ status: 'refused', code: 'CAPS_ERR_QUEUE_FULL', reason: expect.stringContaining('hub') });
    const [first] = await store.pending(DRIVER_QUEUE);
    await store.ack(DRIVER_QUEUE, first?.messageId ?? '');
    expect((await store.recordStep(step('pickup', 'd', 1))).status).toBe('accepted');
  });

  it('prunes parcels delivered before a cutoff, oldest first, and keeps those not delivered however old', async () => {
    const store = create();
    const at = async (input: StepInput): Promise<string> => {
      expect((await store.recordStep(input)).status).toBe('accepted');
      return input.time;
    };
    await at(step('pickup', 'acme', 1));
    await at(step('delivered', 'acme', 1));
    await at(step('pickup', 'acme', 2));
    await at(step('pickup', 'acme', 3));
    const third = await at(step('delivered', 'acme', 3));
    await at(step('pickup', 'other', 1));
    await at(step('delivered', 'other', 1));
    const queuedBefore = (await store.pending('acme')).length;

    expect(await store.prune(third, 100)).toBe(1);
    expect(await store.parcel('acme', 'acme-1')).toBeUndefined();
    expect(await store.findParcels('acme-1')).toEqual([]);
    expect((await store.listParcels('acme', { limit: 10 })).parcels.map((p) => p.order.orderId)).toEqual(['acme-3', 'acme-2']);
    expect((await store.stores()).find((s) => s.store === 'acme')?.counts).toEqual({ pickup: 1, 'in-transit': 0, delivered: 1, failed: 0, returned: 0, cancelled: 0 });
    // what is still queued for a vendor stays: a message carries its order
    expect((await store.pending('acme')).length).toBe(queuedBefore);

    const later = '2099-01-01T00:00:00.000Z';
    expect(await store.prune(later, 1)).toBe(1);
    expect(await store.prune(later, 100)).toBe(1);
    expect(await store.prune(later, 100)).toBe(0);
    expect(await store.parcel('acme', 'acme-2')).toMatchObject({ state: 'pickup' });
    expect((await store.stores()).map((s) => [s.store, s.counts.pickup + s.counts['in-transit'] + s.counts.delivered])).toEqual([['acme', 1]]);
    // an orderId pruned may be used again: a new pickup
    expect((await store.recordStep(step('pickup', 'acme', 1))).status).toBe('accepted');
  });

  it('finds parcels by orderId, lists a store newest first in pages, and counts states', async () => {
    const store = create();
    for (let i = 0; i < 5; i++) await store.recordStep(step('pickup', 'acme', i));
    await store.recordStep(step('pickup', 'other', 1));
    await store.recordStep(step('delivered', 'acme', 1));
    expect((await store.findParcels('acme-1')).map((p) => [p.order.store, p.state])).toEqual([['acme', 'delivered']]);
    expect(await store.findParcels('nope')).toEqual([]);
    const first = await store.listParcels('acme', { limit: 2 });
    expect(first.parcels.map((p) => p.order.orderId)).toEqual(['acme-4', 'acme-3']);
    const second = await store.listParcels('acme', { limit: 2, ...(first.next ? { after: first.next } : {}) });
    expect(second.parcels.map((p) => p.order.orderId)).toEqual(['acme-2', 'acme-1']);
    const third = await store.listParcels('acme', { limit: 2, ...(second.next ? { after: second.next } : {}) });
    expect(third).toEqual({ parcels: [expect.objectContaining({ state: 'pickup' })] });
    expect((await store.listParcels('acme', { limit: 10, status: 'delivered' })).parcels.map((p) => p.order.orderId)).toEqual(['acme-1']);
    expect(await store.stores()).toEqual([
      { store: 'acme', counts: { pickup: 4, 'in-transit': 0, delivered: 1, failed: 0, returned: 0, cancelled: 0 } },
      { store: 'other', counts: { pickup: 1, 'in-transit': 0, delivered: 0, failed: 0, returned: 0, cancelled: 0 } },
    ]);
    await expect(store.ping()).resolves.toBeUndefined();
  });

  it('keeps order and seq per queue across many steps: each store’s pickups in order, their seq increasing by one', async () => {
    const store = create();
    await Promise.all(Array.from({ length: 50 }, (_, i) => store.recordStep(step('pickup', i % 2 ? 'a' : 'b', i))));
    const pending = await store.pending(DRIVER_QUEUE);
    expect(pending).toHaveLength(50);
    for (const name of ['a', 'b']) {
      const mine = pending.filter((m) => m.store === name);
      expect(mine.map((m) => m.orderId)).toEqual(Array.from({ length: 25 }, (_, i) => `${name}-${2 * i + (name === 'a' ? 1 : 0)}`));
      // Redis: one seq per store, consecutive (stores live on shards); the others: one seq for the whole pool
      const seqs = mine.map((m) => m.seq);
      if (_kind === 'redis') expect(seqs).toEqual(Array.from({ length: 25 }, (_, i) => i + 1));
      else expect(seqs.every((seq, i) => i === 0 || seq > (seqs[i - 1] ?? 0))).toBe(true);
    }
    if (_kind !== 'redis') expect(pending.map((m) => m.seq)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
  });
});

/** Redis keeps a store's queue whole (bounded by --max-queue); its log and cursor come with issue 15. */
describe.each(factories.filter(([kind]) => kind !== 'redis'))('%s storage: a store’s log past its window', (_kind, make) => {
  function create(limits: Partial<StorageLimits>): Storage {
    const storage = make(limits);
    open.push(storage);
    return storage;
  }

  it('never refuses a driver’s step because the vendors are behind: past the window, messages wait in the log and are paged in, in order', async () => {
    const storage = create({ window: 4, maxQueueDepth: 2 });
    for (let n = 1; n <= 7; n++) {
      // each pickup taken by a driver (the store's pickup quota is 2 as well)
      const pickup = await storage.recordStep(step('pickup', 'acme', n));
      if (pickup.status !== 'accepted') throw new Error(`pickup ${n}: ${pickup.status}`);
      await storage.ack(DRIVER_QUEUE, pickup.message.messageId);
      const transit = await storage.recordStep(step('in-transit', 'acme', n));
      expect(transit).toMatchObject({ status: 'accepted', ...(n > 4 ? { spilled: true } : {}) });
      if (n <= 4) expect(transit).not.toHaveProperty('spilled');
    }
    expect((await storage.queues()).find((q) => q.queue === 'acme')?.depth).toBe(7);
    const window = await storage.pending('acme');
    expect(window.map((m) => m.seq)).toEqual([1, 2, 3, 4]);
    // the window is not half free yet: nothing comes in
    expect(await storage.more('acme')).toEqual([]);
    for (const m of window.slice(0, 2)) await storage.ack('acme', m.messageId);
    const page = await storage.more('acme');
    expect(page.map((m) => [m.seq, m.orderId])).toEqual([[5, 'acme-5'], [6, 'acme-6']]);
    expect((await storage.pending('acme')).map((m) => m.seq)).toEqual([3, 4, 5, 6]);
    // a message paged in is acknowledged like any other; the last one follows
    for (const m of await storage.pending('acme')) await storage.ack('acme', m.messageId);
    expect((await storage.more('acme')).map((m) => m.seq)).toEqual([7]);
    expect(await storage.more('acme')).toEqual([]);
    // new steps go straight to the window again once the log is empty
    expect(await storage.recordStep(step('delivered', 'acme', 1))).not.toHaveProperty('spilled');
  });
});

/** A store's queue: what is in memory, then the next page of its log (all of it, in these small tests). */
async function queued(storage: Storage, queue: string): Promise<ParcelMessage[]> {
  return [...(await storage.pending(queue)), ...(await storage.more(queue))];
}

describe('sqlite storage on disk', () => {
  it('keeps a store’s log past its window across a reopen, and pages it in after', async () => {
    const dir = tempDir();
    const before = new SqliteStorage({ dir, window: 2 });
    for (let n = 1; n <= 5; n++) {
      await before.recordStep(step('pickup', 'acme', n));
      await before.recordStep(step('delivered', 'acme', n));
    }
    await before.close();
    const after = new SqliteStorage({ dir, window: 2 });
    open.push(after);
    expect((await after.queues()).find((q) => q.queue === 'acme')?.depth).toBe(5);
    // nothing of it comes back into memory until its vendors are back: then a window at a time
    expect(await after.pending('acme')).toEqual([]);
    expect(after.inLog('acme')).toBe(5);
    const window = await after.more('acme');
    expect(window.map((m) => m.seq)).toEqual([1, 2]);
    expect(await after.more('acme')).toEqual([]);
    for (const m of window) await after.ack('acme', m.messageId);
    expect((await after.more('acme')).map((m) => m.seq)).toEqual([3, 4]);
  });

  it('holds nothing of a store with no vendor online in memory: its steps go to the log', async () => {
    const storage = new SqliteStorage({ dir: tempDir(), window: 100 });
    open.push(storage);
    await storage.recordStep(step('pickup', 'acme', 1));
    expect(await storage.recordStep(step('delivered', 'acme', 1, { toLog: true }))).toMatchObject({ status: 'accepted', spilled: true });
    expect(await storage.pending('acme')).toEqual([]);
    expect((await storage.more('acme')).map((m) => m.orderId)).toEqual(['acme-1']);
  });

  it('survives close and reopen: queues, parcels, dedupe, and seq never reused', async () => {
    const dir = tempDir();
    const before = new SqliteStorage({ dir });
    await before.recordStep(step('pickup', 'acme', 1));
    const second = await before.recordStep(step('pickup', 'acme', 2));
    await before.recordStep(step('pickup', 'acme', 5));
    // acme-1's pickup leaves the pool with its in-transit, acme-2's with its ack
    await before.recordStep(step('in-transit', 'acme', 1));
    if (second.status !== 'accepted') throw new Error('pickup not accepted');
    await before.ack(DRIVER_QUEUE, second.message.messageId);
    await before.close();
    await before.close();

    const after = new SqliteStorage({ dir });
    open.push(after);
    expect((await after.pending(DRIVER_QUEUE)).map((m) => [m.orderId, m.seq])).toEqual([['acme-5', 3]]);
    expect((await queued(after, 'acme')).map((m) => m.event)).toEqual(['in-transit']);
    expect(await after.parcel('acme', 'acme-1')).toMatchObject({ state: 'in-transit', history: [{ event: 'pickup' }, { event: 'in-transit', driver: 'd1' }] });
    expect((await after.recordStep(step('pickup', 'acme', 1))).status).toBe('duplicate');
    expect((await after.recordStep(step('in-transit', 'acme', 1))).status).toBe('duplicate');
    const third = await after.recordStep(step('pickup', 'acme', 3));
    expect(third).toMatchObject({ status: 'accepted', message: { seq: 4 } });
  });

  it('keeps each store’s pickup quota across a reopen', async () => {
    const dir = tempDir();
    const before = new SqliteStorage({ dir, maxQueueDepth: 2 });
    await before.recordStep(step('pickup', 'flood', 1));
    await before.recordStep(step('pickup', 'flood', 2));
    await before.close();
    const after = new SqliteStorage({ dir, maxQueueDepth: 2 });
    open.push(after);
    expect(await after.recordStep(step('pickup', 'flood', 3))).toMatchObject({ status: 'refused', code: 'CAPS_ERR_QUEUE_FULL' });
    expect((await after.recordStep(step('pickup', 'quiet', 1))).status).toBe('accepted');
  });

  it('moves a data folder from before messages were keyed by (queue, seq) to the new table, keeping every message', async () => {
    const dir = tempDir();
    const before = new SqliteStorage({ dir });
    for (const n of [1, 2, 3]) await before.recordStep(step('pickup', 'acme', n));
    await before.recordStep(step('in-transit', 'acme', 1));
    await before.close();
    // the messages table as earlier versions created it: rowid, and a unique index on message_id
    const old = new Database(join(dir, 'caps.sqlite'));
    old.exec(`
      ALTER TABLE messages RENAME TO current_layout;
      CREATE TABLE messages (queue TEXT NOT NULL, seq INTEGER NOT NULL, message_id TEXT NOT NULL UNIQUE, body TEXT NOT NULL, PRIMARY KEY (queue, seq));
      INSERT INTO messages SELECT queue, seq, message_id, body FROM current_layout;
      DROP TABLE current_layout;
    `);
    old.close();

    const after = new SqliteStorage({ dir });
    open.push(after);
    // acme-1's pickup left the pool with its in-transit
    const pending = await after.pending(DRIVER_QUEUE);
    expect(pending.map((m) => [m.orderId, m.seq])).toEqual([['acme-2', 2], ['acme-3', 3]]);
    expect((await queued(after, 'acme')).map((m) => m.event)).toEqual(['in-transit']);
    expect(await after.ack(DRIVER_QUEUE, pending[0]?.messageId ?? '')).toBe('removed');
    expect((await after.recordStep(step('pickup', 'acme', 4))).status).toBe('accepted');
    // the tables catch up from the journal at close at the latest
    await after.close();

    const reader = new Database(join(dir, 'caps.sqlite'), { fileMustExist: true });
    readers.push(reader);
    const tables = reader.prepare<[], { name: string; sql: string }>("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name LIKE 'messages%'").all();
    expect(tables).toEqual([{ name: 'messages', sql: expect.stringMatching(/WITHOUT ROWID\s*$/) }]);
    expect(reader.prepare('SELECT queue, seq FROM messages ORDER BY queue, seq').all()).toEqual([
      { queue: 'acme', seq: 1 },
      { queue: DRIVER_QUEUE, seq: 3 },
      { queue: DRIVER_QUEUE, seq: 4 },
    ]);
  });

  it('moves a data folder whose steps were in a table of their own into the parcels’ rows, keeping every history', async () => {
    const dir = tempDir();
    const before = new SqliteStorage({ dir });
    for (const n of [1, 2, 3]) await before.recordStep(step('pickup', 'acme', n));
    await before.recordStep(step('in-transit', 'acme', 1));
    await before.recordStep(step('delivered', 'acme', 1));
    await before.recordStep(step('delivered', 'acme', 2));
    const expected = await Promise.all([1, 2, 3].map((n) => before.parcel('acme', `acme-${n}`)));
    await before.close();
    // the layout of earlier versions: a steps table, no step columns, and (older still) no pickup time on the row
    const old = new Database(join(dir, 'caps.sqlite'));
    old.exec(`
      CREATE TABLE steps (store TEXT NOT NULL, order_id TEXT NOT NULL, event TEXT NOT NULL, time TEXT NOT NULL, driver TEXT, PRIMARY KEY (store, order_id, event)) WITHOUT ROWID;
      INSERT INTO steps SELECT store, order_id, 'pickup', created_at, NULL FROM parcels;
      INSERT INTO steps SELECT store, order_id, 'in-transit', in_transit_at, in_transit_driver FROM parcels WHERE in_transit_at IS NOT NULL;
      INSERT INTO steps SELECT store, order_id, 'delivered', delivered_at, delivered_driver FROM parcels WHERE delivered_at IS NOT NULL;
      UPDATE parcels SET created_at = '' WHERE order_id = 'acme-3';
      ALTER TABLE parcels DROP COLUMN in_transit_at;
      ALTER TABLE parcels DROP COLUMN in_transit_driver;
      ALTER TABLE parcels DROP COLUMN delivered_at;
      ALTER TABLE parcels DROP COLUMN delivered_driver;
    `);
    old.close();

    const after = new SqliteStorage({ dir });
    open.push(after);
    expect(await Promise.all([1, 2, 3].map((n) => after.parcel('acme', `acme-${n}`)))).toEqual(expected);
    expect((await after.listParcels('acme', { limit: 10 })).parcels.map((p) => p.order.orderId)).toEqual(['acme-3', 'acme-2', 'acme-1']);
    expect((await after.recordStep(step('delivered', 'acme', 1))).status).toBe('duplicate');
    expect((await after.recordStep(step('in-transit', 'acme', 3))).status).toBe('accepted');
    const reader = new Database(join(dir, 'caps.sqlite'), { fileMustExist: true });
    readers.push(reader);
    expect(reader.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'steps'").all()).toEqual([]);
  });

  it('moves a data folder whose parcels were keyed by (store, order_id) to the table keyed by pickup order, keeping every parcel', async () => {
    const dir = tempDir();
    const before = new SqliteStorage({ dir });
    // picked up out of order-id order, in two stores, so the new ids must follow the pickup times
    for (const [shop, n] of [['acme', 3], ['bolt', 1], ['acme', 1], ['acme', 2]] as const) await before.recordStep(step('pickup', shop, n));
    await before.recordStep(step('in-transit', 'acme', 1));
    await before.recordStep(step('delivered', 'acme', 1));
    const expected = await Promise.all([before.parcel('acme', 'acme-1'), before.parcel('acme', 'acme-2'), before.parcel('acme', 'acme-3'), before.parcel('bolt', 'bolt-1')]);
    await before.close();
    // the layout of the previous version: WITHOUT ROWID, keyed by (store, order_id), and an index by order id
    const old = new Database(join(dir, 'caps.sqlite'));
    old.exec(`
      ALTER TABLE parcels RENAME TO current_layout;
      CREATE TABLE parcels (
        store TEXT NOT NULL, order_id TEXT NOT NULL, customer TEXT NOT NULL, address TEXT NOT NULL,
        state TEXT NOT NULL, driver TEXT, created_at TEXT NOT NULL DEFAULT '',
        in_transit_at TEXT, in_transit_driver TEXT, delivered_at TEXT, delivered_driver TEXT,
        PRIMARY KEY (store, order_id)
      ) WITHOUT ROWID;
      INSERT INTO parcels SELECT store, order_id, customer, address, state, driver, created_at, in_transit_at, in_transit_driver, delivered_at, delivered_driver FROM current_layout;
      DROP TABLE current_layout;
      CREATE INDEX parcels_by_order ON parcels (order_id);
      CREATE INDEX parcels_by_store_time ON parcels (store, created_at DESC, order_id DESC);
    `);
    old.close();

    const after = new SqliteStorage({ dir });
    open.push(after);
    expect(await Promise.all([after.parcel('acme', 'acme-1'), after.parcel('acme', 'acme-2'), after.parcel('acme', 'acme-3'), after.parcel('bolt', 'bolt-1')])).toEqual(expected);
    expect((await after.listParcels('acme', { limit: 10 })).parcels.map((p) => p.order.orderId)).toEqual(['acme-2', 'acme-1', 'acme-3']);
    expect((await after.findParcels('bolt-1')).map((p) => p.order.store)).toEqual(['bolt']);
    expect((await after.recordStep(step('pickup', 'acme', 3))).status).toBe('duplicate');
    expect((await after.recordStep(step('in-transit', 'acme', 2))).status).toBe('accepted');
    expect((await after.recordStep(step('pickup', 'acme', 4))).status).toBe('accepted');
    await after.close();

    const reader = new Database(join(dir, 'caps.sqlite'), { fileMustExist: true });
    readers.push(reader);
    expect(reader.prepare('SELECT id, store, order_id FROM parcels ORDER BY id').all()).toEqual([
      { id: 1, store: 'acme', order_id: 'acme-3' },
      { id: 2, store: 'bolt', order_id: 'bolt-1' },
      { id: 3, store: 'acme', order_id: 'acme-1' },
      { id: 4, store: 'acme', order_id: 'acme-2' },
      { id: 5, store: 'acme', order_id: 'acme-4' },
    ]);
    expect(reader.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'parcels' AND sql IS NOT NULL ORDER BY name").all()).toEqual([{ name: 'parcels_by_store_time' }]);
    expect(reader.prepare("SELECT name FROM sqlite_master WHERE name LIKE '%before%'").all()).toEqual([]);
  });

  it('refuses to work after it is closed, with CAPS_ERR_STORAGE', async () => {
    const store = new SqliteStorage({ dir: tempDir() });
    await store.close();
    await expect(store.recordStep(step('pickup', 'acme', 1))).rejects.toMatchObject({ code: 'CAPS_ERR_STORAGE' });
  });

  it('answers each step only once its commit is on disk, and groups concurrent steps into far fewer commits', async () => {
    const dir = tempDir();
    const store = new SqliteStorage({ dir });
    open.push(store);
    const notOnDisk: string[] = [];
    // 25 lanes, each publishing its next step once the previous one is answered, as vendors do
    const lanes = 25;
    const perLane = 20;
    const lane = async (l: number): Promise<void> => {
      for (let i = 0; i < perLane; i++) {
        const input = step('pickup', `lane${l}`, i);
        const outcome = await store.recordStep(input);
        if (outcome.status !== 'accepted') throw new Error(`${input.orderId} not accepted: ${outcome.status}`);
        // every 5th answer: the files right now, before anything else can run, must hold the step and its message
        if (i % 5 !== 4) continue;
        const restarted = afterCrash(dir);
        const parcel = await restarted.parcel(input.store, input.orderId);
        const queued = (await restarted.pending(DRIVER_QUEUE)).some((m) => m.messageId === outcome.message.messageId);
        if (parcel?.state !== 'pickup' || !queued) notOnDisk.push(input.orderId);
        await restarted.close();
      }
    };
    await Promise.all(Array.from({ length: lanes }, (_, l) => lane(l)));
    expect(notOnDisk, 'steps answered before the files held them').toEqual([]);
    expect(store.commits).toBeGreaterThan(0);
    expect(store.commits, `${store.commits} commits for ${lanes * perLane} steps`).toBeLessThanOrEqual((lanes * perLane) / 10);
  });

  type Held = Array<{ fd: number; finish: (err: Error | null) => void }>;

  /**
   * A sync hook (syncWal, syncTables) that holds every sync until the test lets it finish (or
   * fail), once; `next()` resolves when the next sync arrives.
   */
  function holdSyncs(what: string): { hook: NonNullable<SqliteStorageOptions['syncWal']>; held: Held; next: () => Promise<void> } {
    const held: Held = [];
    let arrived: (() => void) | undefined;
    const hook: NonNullable<SqliteStorageOptions['syncWal']> = (fd, done) => {
      let finished = false;
      const finish = (err: Error | null): void => {
        if (!finished) done(err);
        finished = true;
      };
      held.push({ fd, finish });
      heldFinishes.push(finish);
      arrived?.();
    };
    const next = (): Promise<void> => {
      const count = held.length;
      return within(new Promise<void>((resolve) => {
        arrived = () => held.length > count && resolve();
      }), 5_000, what);
    };
    return { hook, held, next };
  }

  /** A store whose journal syncs wait until the test lets each one finish (or fail). */
  function heldSyncs(dir: string): { store: SqliteStorage; synced: Held; next: () => Promise<void> } {
    const { hook, held, next } = holdSyncs('the store to sync its WAL');
    const store = new SqliteStorage({ dir, syncWal: hook });
    open.push(store);
    return { store, synced: held, next };
  }

  it.each([
    ['in the same turn as the step', (): Promise<void> => Promise.resolve()],
    ['in the next turn', (): Promise<void> => new Promise<void>((resolve) => setImmediate(resolve))],
  ])('answers a duplicate sent %s only once that step is synced', async (_when, later) => {
    const { store, synced, next } = heldSyncs(tempDir());
    const syncing = next();
    const input = step('pickup', 'acme', 1);
    const first = store.recordStep(input);
    let answered = false;
    const duplicate = later()
      .then(() => store.recordStep(input))
      .then((outcome) => {
        answered = true;
        return outcome;
      });
    await syncing;
    // many turns go by while the step's sync is held: the duplicate must wait for it
    for (let turn = 0; turn < 20; turn++) await new Promise<void>((resolve) => setImmediate(resolve));
    expect(answered, 'the duplicate was answered before its step was synced').toBe(false);
    synced[0]?.finish(null);
    await expect(duplicate).resolves.toMatchObject({ status: 'duplicate' });
    await expect(first).resolves.toMatchObject({ status: 'accepted' });
  });

  it('syncs the WAL file after a commit, and answers the step only once that sync is done', async () => {
    const dir = tempDir();
    const { store, synced, next } = heldSyncs(dir);
    const syncing = next();
    let answered = false;
    const outcome = store.recordStep(step('pickup', 'acme', 1)).then((o) => {
      answered = true;
      return o;
    });
    await syncing;
    // committed (written to the WAL, as a killed process would leave it) but not yet synced: the caller still waits
    expect((await afterCrash(dir).parcel('acme', 'acme-1'))?.state).toBe('pickup');
    expect(answered).toBe(false);
    const [sync] = synced;
    expect(sync && fstatSync(sync.fd).ino, 'the file synced is the journal’s WAL').toBe(statSync(join(dir, 'caps-journal.sqlite-wal')).ino);
    sync?.finish(null);
    await expect(outcome).resolves.toMatchObject({ status: 'accepted' });
  });

  it('gathers the steps that arrive while a sync is in flight into one commit and one sync', async () => {
    const { store, synced, next } = heldSyncs(tempDir());
    const first = next();
    const pickup = store.recordStep(step('pickup', 'acme', 0));
    await first;
    const gathered = Array.from({ length: 50 }, (_, n) => store.recordStep(step('pickup', 'acme', n + 1)));
    // many turns go by while the first sync is held
    for (let turn = 0; turn < 20; turn++) await new Promise<void>((resolve) => setImmediate(resolve));
    expect({ commits: store.commits, syncs: synced.length }).toEqual({ commits: 1, syncs: 1 });
    const second = next();
    synced[0]?.finish(null);
    await pickup;
    await second;
    expect({ commits: store.commits, syncs: synced.length }).toEqual({ commits: 2, syncs: 2 });
    synced[1]?.finish(null);
    expect((await Promise.all(gathered)).every((o) => o.status === 'accepted')).toBe(true);
  });

  it('turns a failed WAL sync into CAPS_ERR_STORAGE for its callers and everything after', async () => {
    const { store, synced, next } = heldSyncs(tempDir());
    const syncing = next();
    const pickup = store.recordStep(step('pickup', 'acme', 1));
    await syncing;
    const waiting = store.recordStep(step('pickup', 'acme', 2));
    synced[0]?.finish(new Error('EIO: i/o error, fdatasync'));
    await expect(pickup).rejects.toMatchObject({ code: 'CAPS_ERR_STORAGE', message: expect.stringContaining('EIO') });
    await expect(waiting).rejects.toMatchObject({ code: 'CAPS_ERR_STORAGE' });
    await expect(store.recordStep(step('pickup', 'acme', 3))).rejects.toMatchObject({ code: 'CAPS_ERR_STORAGE' });
    await within(store.close(), 10_000, 'the store whose sync failed to close');
  });

  it('turns a failed commit into CAPS_ERR_STORAGE for its callers and everything after, and still closes', async () => {
    const dir = tempDir();
    const store = new SqliteStorage({ dir });
    open.push(store);
    expect((await store.recordStep(step('pickup', 'acme', 1))).status).toBe('accepted');
    // another connection makes every later commit fail inside the store's transaction
    const saboteur = new Database(join(dir, 'caps-journal.sqlite'), { fileMustExist: true });
    readers.push(saboteur);
    saboteur.exec("CREATE TRIGGER refuse BEFORE INSERT ON journal BEGIN SELECT RAISE(ABORT, 'disk says no'); END");

    const outcomes = await Promise.allSettled([store.recordStep(step('in-transit', 'acme', 1)), store.recordStep(step('pickup', 'acme', 2))]);
    expect(outcomes).toEqual([
      { status: 'rejected', reason: expect.objectContaining({ code: 'CAPS_ERR_STORAGE', message: expect.stringContaining('disk says no') }) },
      { status: 'rejected', reason: expect.objectContaining({ code: 'CAPS_ERR_STORAGE' }) },
    ]);
    // memory is ahead of disk now: nothing more is taken
    await expect(store.recordStep(step('pickup', 'acme', 3))).rejects.toMatchObject({ code: 'CAPS_ERR_STORAGE' });
    await expect(store.ping()).rejects.toMatchObject({ code: 'CAPS_ERR_STORAGE' });
    await within(store.close(), 10_000, 'the store whose commit failed to close');
    // what the files hold is what was answered: the pickup, not the steps that failed
    saboteur.exec('DROP TRIGGER refuse');
    const reopened = new SqliteStorage({ dir });
    open.push(reopened);
    expect(await reopened.findParcels('acme-1')).toMatchObject([{ state: 'pickup', history: [{ event: 'pickup' }] }]);
    expect(await reopened.findParcels('acme-2')).toEqual([]);
  });

  /** A store whose syncs of the tables' WAL wait until the test lets each one finish (or fail); folds only at queries. */
  function heldTableSyncs(dir: string): { store: SqliteStorage; finishes: Held; journalRows: () => number } {
    const { hook, held } = holdSyncs('the store to sync its tables');
    const store = new SqliteStorage({ dir, foldAfterMs: Infinity, syncTables: hook });
    open.push(store);
    const reader = new Database(join(dir, 'caps-journal.sqlite'), { fileMustExist: true });
    readers.push(reader);
    return { store, finishes: held, journalRows: () => reader.prepare<[], { n: number }>('SELECT count(*) AS n FROM journal').get()?.n ?? -1 };
  }

  it('deletes the journal rows a fold took in only once the tables are synced', async () => {
    const { store, finishes, journalRows } = heldTableSyncs(tempDir());
    for (const n of [1, 2, 3]) await store.recordStep(step('pickup', 'acme', n));
    expect(journalRows()).toBe(3);
    // a query makes the tables catch up; their sync is held
    expect((await store.stores()).map((s) => s.counts.pickup)).toEqual([3]);
    expect(finishes).toHaveLength(1);
    expect(journalRows(), 'journal rows deleted before the tables holding them were synced').toBe(3);
    finishes[0]?.finish(null);
    expect(journalRows()).toBe(0);
  });

  it('turns a failed sync of the tables into CAPS_ERR_STORAGE, keeps the journal rows, and a reopened store has every step', async () => {
    const dir = tempDir();
    const { store, finishes, journalRows } = heldTableSyncs(dir);
    for (const n of [1, 2]) await store.recordStep(step('pickup', 'acme', n));
    await store.stores();
    finishes[0]?.finish(new Error('EIO: i/o error, fdatasync'));
    await expect(store.ping()).rejects.toMatchObject({ code: 'CAPS_ERR_STORAGE', message: expect.stringContaining('EIO') });
    await expect(store.recordStep(step('pickup', 'acme', 3))).rejects.toMatchObject({ code: 'CAPS_ERR_STORAGE' });
    expect(journalRows()).toBe(2);
    await within(store.close(), 10_000, 'the store whose tables sync failed to close');
    const reopened = new SqliteStorage({ dir });
    open.push(reopened);
    expect((await reopened.findParcels('acme-2')).map((p) => p.state)).toEqual(['pickup']);
    expect((await reopened.pending(DRIVER_QUEUE)).map((m) => m.orderId)).toEqual(['acme-1', 'acme-2']);
  });

  it('turns a fold that fails into CAPS_ERR_STORAGE for the query waiting on it and everything after; nothing of it reaches the tables', async () => {
    const dir = tempDir();
    const store = new SqliteStorage({ dir, foldAfterMs: Infinity });
    open.push(store);
    await store.recordStep(step('pickup', 'acme', 1));
    await store.stores();
    await store.recordStep(step('in-transit', 'acme', 1));
    await store.recordStep(step('pickup', 'acme', 2));
    const saboteur = new Database(join(dir, 'caps.sqlite'), { fileMustExist: true });
    readers.push(saboteur);
    saboteur.exec("CREATE TRIGGER refuse BEFORE INSERT ON parcels BEGIN SELECT RAISE(ABORT, 'table says no'); END");
    await expect(store.stores()).rejects.toMatchObject({ code: 'CAPS_ERR_STORAGE', message: expect.stringContaining('table says no') });
    await expect(store.ping()).rejects.toMatchObject({ code: 'CAPS_ERR_STORAGE' });
    await expect(store.recordStep(step('pickup', 'acme', 3))).rejects.toMatchObject({ code: 'CAPS_ERR_STORAGE' });
    // the fold's first write (acme-1 in transit) was rolled back with it, for the store's own reads too
    expect(await store.stores()).toEqual([{ store: 'acme', counts: { pickup: 1, 'in-transit': 0, delivered: 0, failed: 0, returned: 0, cancelled: 0 } }]);
    expect(saboteur.prepare('SELECT order_id, state FROM parcels').all()).toEqual([{ order_id: 'acme-1', state: 'pickup' }]);
    await within(store.close(), 10_000, 'the store whose fold failed to close');
    saboteur.exec('DROP TRIGGER refuse');
    const reopened = new SqliteStorage({ dir });
    open.push(reopened);
    expect(await reopened.findParcels('acme-1')).toMatchObject([{ state: 'in-transit' }]);
    expect(await reopened.findParcels('acme-2')).toMatchObject([{ state: 'pickup' }]);
  });

  it('answers an acknowledgement at once; it reaches the disk with the next commit of a step, or on its own within 50 ms', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const dir = tempDir();
      const store = new SqliteStorage({ dir });
      open.push(store);
      const pickup = async (n: number): Promise<string> => {
        const outcome = await store.recordStep(step('pickup', 'acme', n));
        if (outcome.status !== 'accepted') throw new Error(`pickup ${n} not accepted`);
        return outcome.message.messageId;
      };
      const queuedAfterCrash = async (): Promise<number[]> => {
        const restarted = afterCrash(dir);
        const seqs = (await restarted.pending(DRIVER_QUEUE)).map((m) => m.seq);
        await restarted.close();
        return seqs;
      };
      const first = await pickup(1);
      const commits = store.commits;
      expect(await store.ack(DRIVER_QUEUE, first)).toBe('removed');
      expect(store.commits, 'commits before the ack was answered').toBe(commits);
      // a hub killed now would send it again: at least once
      expect(await queuedAfterCrash()).toEqual([1]);

      const second = await pickup(2);
      expect(await queuedAfterCrash(), 'the ack rode along with the next pickup').toEqual([2]);

      expect(await store.ack(DRIVER_QUEUE, second)).toBe('removed');
      vi.advanceTimersByTime(49);
      await new Promise<void>((resolve) => setImmediate(resolve));
      expect(await queuedAfterCrash()).toEqual([2]);
      vi.advanceTimersByTime(1);
      // the timer schedules the commit for the next turn
      await new Promise<void>((resolve) => setImmediate(resolve));
      expect(await queuedAfterCrash(), 'the ack on its own, 50 ms later').toEqual([]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('keeps in memory a delivered parcel whose delivery reached the journal during a fold, until the tables have it', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      // one parcel in memory at most, a fold 0 ms after a commit (when the fake clock says so), one write a turn
      const store = new SqliteStorage({ dir: tempDir(), foldAfterMs: 0, foldChunk: 1, cachedParcels: 1 });
      open.push(store);
      for (const s of [step('pickup', 'acme', 1), step('pickup', 'acme', 2), step('in-transit', 'acme', 1)]) expect((await store.recordStep(s)).status).toBe('accepted');
      vi.advanceTimersByTime(1);
      expect(store.folding, 'a fold of the first three steps has begun').toBe(true);
      // delivered while that fold goes on: in the journal, not in the tables
      expect((await store.recordStep(step('delivered', 'acme', 1))).status).toBe('accepted');
      for (let turn = 0; store.folding; turn++) {
        if (turn > 1_000) throw new Error('the fold did not finish within 1,000 turns of the event loop');
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      // the fold finished with two parcels in memory: acme-1 must not have been dropped with its delivery unfolded
      expect((await store.recordStep(step('delivered', 'acme', 1))).status).toBe('duplicate');
      expect((await store.parcel('acme', 'acme-1'))?.history.map((h) => h.event)).toEqual(['pickup', 'in-transit', 'delivered']);
    } finally {
      vi.useRealTimers();
    }
  });

  /**
   * What clients do to the stores, in random order: steps of a few orders, acks, queries (which
   * make the tables catch up), kills, and turns of the event loop let go by (`tick`, for folds that
   * go on a chunk a turn). A step's `fold`: a query in the same turn, while the step is still on its
   * way to the journal.
   */
  type Op = { kind: 'step'; event: StepInput['event']; n: number; fold: boolean } | { kind: 'ack'; k: number } | { kind: 'fold' } | { kind: 'crash' } | { kind: 'tick'; turns: number };
  const ops: fc.Arbitrary<Op[]> = fc.array(
    fc.oneof(
      { arbitrary: fc.record({ kind: fc.constant('step' as const), event: fc.constantFrom('pickup', 'in-transit', 'delivered'), n: fc.nat({ max: 3 }), fold: fc.boolean() }), weight: 6 },
      { arbitrary: fc.record({ kind: fc.constant('ack' as const), k: fc.nat({ max: 5 }) }), weight: 3 },
      { arbitrary: fc.constant({ kind: 'fold' as const }), weight: 1 },
      { arbitrary: fc.constant({ kind: 'crash' as const }), weight: 1 },
      { arbitrary: fc.record({ kind: fc.constant('tick' as const), turns: fc.integer({ min: 1, max: 4 }) }), weight: 2 },
    ),
    { minLength: 10, maxLength: 80 },
  );

  /** The pending messages of a store, as (queue, seq, event, orderId): message ids differ between stores. */
  async function queuedOf(store: Storage): Promise<string[]> {
    const all = [...(await store.pending(DRIVER_QUEUE)), ...(await queued(store, 'acme'))];
    return all.map((m) => `${m.queueId} ${m.seq} ${m.event} ${m.orderId}`);
  }

  async function parcelsOf(store: Storage): Promise<unknown[]> {
    return Promise.all([0, 1, 2, 3].map((n) => store.parcel('acme', `acme-${n}`)));
  }

  it.each([
    // the tables catch up only where the run says so (a query), so that the run decides when
    ['only at queries', { foldAfterMs: Infinity }],
    // a fold starts after every commit and writes one parcel or message a turn: kills, steps and acks land mid-fold
    ['a parcel a turn, all the time', { foldAfterMs: 0, foldChunk: 1 }],
  ] as const)('holds what a memory storage holds, its tables catching up %s, after a close and after a kill', async (_when, folds) => {
    await fc.assert(
      fc.asyncProperty(ops, async (run) => {
        const dir = tempDir();
        // delivered parcels leave memory whenever they may (more than 1 in it), so they are read back
        const sqlite = new SqliteStorage({ dir, ...folds, cachedParcels: 1 });
        const memory = new MemoryStorage();
        const acked = new Set<string>();
        let time = 0;
        try {
          for (const o of run) {
            if (o.kind === 'step') {
              const input: StepInput = { ...step(o.event, 'acme', o.n), time: new Date(Date.UTC(2026, 0, 1, 0, 0, time++)).toISOString() };
              const recorded = Promise.all([sqlite.recordStep(input), memory.recordStep(input)]);
              if (o.fold) await sqlite.stores();
              const [a, b] = await recorded;
              expect(a.status).toBe(b.status);
            } else if (o.kind === 'ack') {
              const pending = async (store: Storage) => [...(await store.pending(DRIVER_QUEUE)), ...(await store.pending('acme'))];
              const [queuedA, queuedB] = await Promise.all([pending(sqlite), pending(memory)]);
              const [a, b] = [queuedA[o.k], queuedB[o.k]];
              if (!a || !b) continue;
              acked.add(`${a.queueId} ${a.seq} ${a.event} ${a.orderId}`);
              expect(await sqlite.ack(a.queueId, a.messageId)).toBe(await memory.ack(b.queueId, b.messageId));
            } else if (o.kind === 'fold') {
              await sqlite.listParcels('acme', { limit: 1 });
            } else if (o.kind === 'tick') {
              for (let t = 0; t < o.turns; t++) await new Promise<void>((resolve) => setImmediate(resolve));
            } else {
              const restarted = afterCrash(dir);
              // every answered step survives; an ack may not have reached the disk yet: its message comes back
              expect(await parcelsOf(restarted)).toEqual(await parcelsOf(memory));
              const queued = await queuedOf(restarted);
              const expected = await queuedOf(memory);
              expect(queued.filter((m) => !acked.has(m))).toEqual(expected);
              await restarted.close();
            }
          }
          await sqlite.close();
          const reopened = new SqliteStorage({ dir });
          open.push(reopened);
          expect(await parcelsOf(reopened)).toEqual(await parcelsOf(memory));
          expect(await queuedOf(reopened)).toEqual(await queuedOf(memory));
          expect((await reopened.stores()).map((s) => s.counts)).toEqual((await memory.stores()).map((s) => s.counts));
        } finally {
          await sqlite.close();
        }
      }),
      { numRuns: 100 },
    );
  }, 120_000);
});
