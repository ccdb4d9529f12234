import fc from 'fast-check';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { FAILURE_REASONS, FINAL_STATES, PARCEL_EVENTS, TRANSITIONS, attemptOf } from '../protocol/lifecycle.js';
import type { FailureReason, ParcelEvent } from '../protocol/lifecycle.js';
import { DRIVER_QUEUE } from '../protocol/messages.js';
import { JUDGE } from '../hub/storage/redis-scripts.js';
import { checkStep } from '../hub/storage/storage-core.js';
import type { StepCheck } from '../hub/storage/storage-core.js';
import { SqliteStorage } from '../hub/storage/sqlite-storage.js';
import type { ParcelRecord, StepInput, Storage } from '../hub/storage/storage.js';
import { testStorages } from './helpers/storages.js';

/** The parcel lifecycle (issue 17) on every storage: failed attempts, re-attempts, returns, cancels. */
const { factories, tempDir, open, closeAll, redisUrl } = testStorages('caps-life-');
afterEach(() => closeAll());

let clock = 0;
function at(): string {
  clock++;
  return new Date(Date.UTC(2026, 11, 3, 9, 0, 0, clock)).toISOString();
}

function pickup(orderId: string, store = 'acme'): StepInput {
  return { event: 'pickup', store, orderId, customer: 'Ada', address: '1 Main St', time: at() };
}

function driverStep(event: ParcelEvent, orderId: string, extra: Partial<StepInput> = {}): StepInput {
  return { event, store: 'acme', orderId, driver: 'd1', time: at(), ...extra };
}

function failed(orderId: string, reason: FailureReason, extra: Partial<StepInput> = {}): StepInput {
  return driverStep('failed', orderId, { details: { reason, note: 'rang twice' }, maxAttempts: 3, ...extra });
}

/** Pickups of this parcel still waiting in the driver pool. */
async function waiting(store: Storage, orderId: string): Promise<number> {
  return (await store.pending(DRIVER_QUEUE)).filter((m) => m.orderId === orderId).length;
}

describe.each(factories)('%s storage: the parcel lifecycle', (_kind, make) => {
  function create(): Storage {
    const store = make();
    open.push(store);
    return store;
  }

  it('sends a failed attempt back to the driver pool as attempt 2, with its reason for the store', async () => {
    const store = create();
    await store.recordStep(pickup('o1'));
    await store.recordStep(driverStep('in-transit', 'o1'));
    const outcome = await store.recordStep(failed('o1', 'recipient-absent'));
    expect(outcome).toMatchObject({
      status: 'accepted',
      message: { event: 'failed', queueId: 'acme', reattempt: true, details: { reason: 'recipient-absent', note: 'rang twice' }, driver: 'd1' },
      requeued: { event: 'pickup', queueId: DRIVER_QUEUE, attempt: 2, orderId: 'o1', customer: 'Ada' },
    });
    expect(await waiting(store, 'o1')).toBe(1);
    const parcel = await store.parcel('acme', 'o1');
    expect(parcel?.state).toBe('pickup');
    expect(parcel?.driver).toBeUndefined();
    expect(parcel?.history.map((s) => [s.event, s.attempt ?? 1])).toEqual([['pickup', 1], ['in-transit', 1], ['failed', 1], ['pickup', 2]]);
    expect(parcel?.history[2]?.details).toEqual({ reason: 'recipient-absent', note: 'rang twice' });
    expect((await store.pending('acme')).map((m) => m.event)).toEqual(['in-transit', 'failed']);
  });

  it('answers a failed step sent again as a duplicate, before and after the re-attempt, and refuses a step of an attempt that is over', async () => {
    const store = create();
    await store.recordStep(pickup('o1'));
    await store.recordStep(driverStep('in-transit', 'o1'));
    expect((await store.recordStep(failed('o1', 'access-denied'))).status).toBe('accepted');
    expect((await store.recordStep(failed('o1', 'access-denied'))).status).toBe('duplicate');
    expect((await store.recordStep(failed('o1', 'access-denied', { attempt: 1 }))).status).toBe('duplicate');
    expect((await store.recordStep(driverStep('in-transit', 'o1', { attempt: 1 }))).status).toBe('duplicate');
    expect(await store.recordStep(driverStep('delivered', 'o1', { attempt: 1 }))).toMatchObject({ status: 'refused', code: 'CAPS_ERR_OUT_OF_ORDER' });
    expect(await store.recordStep(driverStep('in-transit', 'o1', { attempt: 3 }))).toMatchObject({ status: 'refused', code: 'CAPS_ERR_OUT_OF_ORDER' });
    expect((await store.pending('acme')).map((m) => m.event)).toEqual(['in-transit', 'failed']);
    // attempt 2 goes its own way, by another driver
    expect(await store.recordStep(driverStep('in-transit', 'o1', { attempt: 2, driver: 'd2', details: { eta: '2026-12-03T10:30:00.000Z' } }))).toMatchObject({
      status: 'accepted',
      message: { event: 'in-transit', attempt: 2, driver: 'd2', details: { eta: '2026-12-03T10:30:00.000Z' } },
    });
    expect((await store.recordStep(driverStep('delivered', 'o1', { driver: 'd2', details: { recipient: 'Ada', signature: `sha256:${'a'.repeat(64)}`, location: { lat: 51.5, lng: -0.1 } } }))).status).toBe('accepted');
    const parcel = await store.parcel('acme', 'o1');
    expect(parcel?.state).toBe('delivered');
    expect(parcel?.history.at(-1)).toMatchObject({ event: 'delivered', attempt: 2, driver: 'd2', details: { recipient: 'Ada', location: { lat: 51.5, lng: -0.1 } } });
  });

  it('answers a driver’s own failure sent again as a duplicate though the parcel went to another driver since; another driver learns nothing', async () => {
    const store = create();
    await store.recordStep(pickup('o1'));
    await store.recordStep(driverStep('in-transit', 'o1', { dispatched: true }));
    expect((await store.recordStep(failed('o1', 'recipient-absent', { dispatched: true }))).status).toBe('accepted');
    // the hub no longer remembers d1 had it (the parcel is back in the pool): d1's retry is still its own
    expect((await store.recordStep(failed('o1', 'recipient-absent', { dispatched: false }))).status).toBe('duplicate');
    expect((await store.recordStep(driverStep('in-transit', 'o1', { attempt: 1, dispatched: false }))).status).toBe('duplicate');
    expect(await store.recordStep(failed('o1', 'recipient-absent', { driver: 'd9', dispatched: false }))).toMatchObject({ status: 'refused', code: 'CAPS_ERR_NOT_DISPATCHED' });
    // and what d1 never reported is not its to report
    expect(await store.recordStep(driverStep('delivered', 'o1', { dispatched: false }))).toMatchObject({ status: 'refused', code: 'CAPS_ERR_NOT_DISPATCHED' });
  });

  it('returns a parcel to its store once its attempts are over, or at once for a final reason', async () => {
    const store = create();
    await store.recordStep(pickup('o1'));
    await store.recordStep(driverStep('in-transit', 'o1'));
    expect(await store.recordStep(failed('o1', 'recipient-absent', { maxAttempts: 1 }))).toMatchObject({ status: 'accepted', message: { reattempt: false } });
    expect((await store.parcel('acme', 'o1'))?.state).toBe('failed');
    // the pickup left the pool with the driver's in-transit, in the same commit
    expect(await waiting(store, 'o1')).toBe(0);
    expect(await store.recordStep(driverStep('cancelled', 'o1'))).toMatchObject({ status: 'refused', code: 'CAPS_ERR_OUT_OF_ORDER' });
    expect((await store.recordStep(driverStep('returned', 'o1', { details: { note: 'back at the counter' } }))).status).toBe('accepted');
    expect((await store.recordStep(driverStep('returned', 'o1'))).status).toBe('duplicate');
    expect((await store.parcel('acme', 'o1'))?.state).toBe('returned');

    await store.recordStep(pickup('o2'));
    await store.recordStep(driverStep('in-transit', 'o2'));
    expect(await store.recordStep(failed('o2', 'refused'))).toMatchObject({ status: 'accepted', message: { reattempt: false } });
    expect((await store.parcel('acme', 'o2'))?.state).toBe('failed');
    // a failure needs the parcel on its way; a return needs a failure
    await store.recordStep(pickup('o3'));
    expect(await store.recordStep(failed('o3', 'other'))).toMatchObject({ status: 'refused', code: 'CAPS_ERR_OUT_OF_ORDER' });
    expect(await store.recordStep(driverStep('returned', 'o3'))).toMatchObject({ status: 'refused', code: 'CAPS_ERR_OUT_OF_ORDER' });
    expect(await store.recordStep(failed('nope', 'other'))).toMatchObject({ status: 'refused', code: 'CAPS_ERR_UNKNOWN_PARCEL' });
  });

  it('cancels a parcel still waiting for a driver: its pickup leaves the pool, and no driver step follows', async () => {
    const store = create();
    await store.recordStep(pickup('o1'));
    const pickupId = (await store.pending(DRIVER_QUEUE))[0]?.messageId;
    const outcome = await store.recordStep({ event: 'cancelled', store: 'acme', orderId: 'o1', time: at(), details: { note: 'customer changed their mind' } });
    expect(outcome).toMatchObject({ status: 'accepted', message: { event: 'cancelled', queueId: 'acme', details: { note: 'customer changed their mind' } }, withdrawn: pickupId });
    expect(await waiting(store, 'o1')).toBe(0);
    expect((await store.recordStep({ event: 'cancelled', store: 'acme', orderId: 'o1', time: at() })).status).toBe('duplicate');
    expect(await store.recordStep(driverStep('in-transit', 'o1'))).toMatchObject({ status: 'refused', code: 'CAPS_ERR_OUT_OF_ORDER' });
    expect((await store.parcel('acme', 'o1'))?.state).toBe('cancelled');
    // in transit: cancelled too (the hub tells the driver); delivered: too late
    await store.recordStep(pickup('o2'));
    await store.recordStep(driverStep('in-transit', 'o2'));
    expect((await store.recordStep({ event: 'cancelled', store: 'acme', orderId: 'o2', time: at() })).status).toBe('accepted');
    await store.recordStep(pickup('o3'));
    await store.recordStep(driverStep('delivered', 'o3'));
    expect(await store.recordStep({ event: 'cancelled', store: 'acme', orderId: 'o3', time: at() })).toMatchObject({ status: 'refused', code: 'CAPS_ERR_OUT_OF_ORDER' });
    expect((await store.stores()).find((s) => s.store === 'acme')?.counts).toEqual({ pickup: 0, 'in-transit': 0, delivered: 1, failed: 0, returned: 0, cancelled: 2 });
    expect((await store.listParcels('acme', { status: 'cancelled', limit: 10 })).parcels.map((p) => p.order.orderId).sort()).toEqual(['o1', 'o2']);
  });

  it('prunes returned and cancelled parcels like delivered ones, and keeps a failed one waiting for its return', async () => {
    const store = create();
    await store.recordStep(pickup('o1'));
    await store.recordStep({ event: 'cancelled', store: 'acme', orderId: 'o1', time: at() });
    await store.recordStep(pickup('o2'));
    await store.recordStep(driverStep('in-transit', 'o2'));
    await store.recordStep(failed('o2', 'damaged'));
    await store.recordStep(driverStep('returned', 'o2'));
    await store.recordStep(pickup('o3'));
    await store.recordStep(driverStep('in-transit', 'o3'));
    await store.recordStep(failed('o3', 'refused'));
    expect(await store.prune('2099-01-01T00:00:00.000Z', 100)).toBe(2);
    expect((await store.listParcels('acme', { limit: 10 })).parcels.map((p) => [p.order.orderId, p.state])).toEqual([['o3', 'failed']]);
  });
});

describe('sqlite storage: the lifecycle on disk', () => {
  it('keeps attempts, details, returns and cancels across a reopen, and dedupes after it', async () => {
    const dir = tempDir();
    const first = new SqliteStorage({ dir });
    await first.recordStep(pickup('o1'));
    await first.recordStep(driverStep('in-transit', 'o1'));
    await first.recordStep(failed('o1', 'recipient-absent'));
    await first.recordStep(pickup('o2'));
    await first.recordStep({ event: 'cancelled', store: 'acme', orderId: 'o2', time: at() });
    const before = [await first.parcel('acme', 'o1'), await first.parcel('acme', 'o2')];
    await first.close();
    const again = new SqliteStorage({ dir });
    open.push(again);
    expect([await again.parcel('acme', 'o1'), await again.parcel('acme', 'o2')]).toEqual(before);
    expect((await again.pending(DRIVER_QUEUE)).filter((m) => m.orderId === 'o1').map((m) => m.attempt ?? 1)).toEqual([2]);
    expect((await again.recordStep(failed('o1', 'recipient-absent'))).status).toBe('duplicate');
    expect((await again.recordStep(driverStep('in-transit', 'o1', { attempt: 2 }))).status).toBe('accepted');
    expect((await again.stores())[0]?.counts).toMatchObject({ 'in-transit': 1, cancelled: 1 });
  });
});


const stepArb = fc.oneof(
  fc.constant<{ event: ParcelEvent; reason?: FailureReason }>({ event: 'in-transit' }),
  fc.constant<{ event: ParcelEvent; reason?: FailureReason }>({ event: 'delivered' }),
  fc.constantFrom(...FAILURE_REASONS).map((reason): { event: ParcelEvent; reason?: FailureReason } => ({ event: 'failed', reason })),
  fc.constant<{ event: ParcelEvent; reason?: FailureReason }>({ event: 'returned' }),
  fc.constant<{ event: ParcelEvent; reason?: FailureReason }>({ event: 'cancelled' }),
  fc.constant<{ event: ParcelEvent; reason?: FailureReason }>({ event: 'pickup' }),
);

describe.each(factories)('%s storage: no sequence of steps breaks the lifecycle', (kind, make) => {
  it('never reaches an illegal state, never loses the parcel, keeps one pickup in the pool exactly while it waits for a driver', async () => {
    const store = make();
    open.push(store);
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(stepArb, { maxLength: 14 }), fc.integer({ min: 1, max: 3 }), async (steps, maxAttempts) => {
        const orderId = `p${++n}`;
        await store.recordStep(pickup(orderId));
        let attempts = 1;
        for (const s of steps) {
          const input: StepInput =
            s.event === 'pickup' ? pickup(orderId) : s.event === 'cancelled' ? { event: 'cancelled', store: 'acme', orderId, time: at() } : driverStep(s.event, orderId, { maxAttempts, ...(s.reason ? { details: { reason: s.reason } } : {}) });
          const before = (await store.parcel('acme', orderId)) as ParcelRecord;
          const outcome = await store.recordStep(input);
          const parcel = (await store.parcel('acme', orderId)) as ParcelRecord;
          // never lost, whatever was sent
          expect(parcel).toBeDefined();
          expect(PARCEL_EVENTS).toContain(parcel.state);
          if (outcome.status !== 'accepted') {
            // a refusal or a duplicate changes nothing
            expect(parcel).toEqual(before);
            continue;
          }
          // an accepted step was a legal move from the state before it
          expect(TRANSITIONS[before.state]).toContain(s.event);
          expect(FINAL_STATES.has(before.state)).toBe(false);
          attempts = attemptOf(parcel.history);
        }
        const parcel = (await store.parcel('acme', orderId)) as ParcelRecord;
        expect(attempts).toBeLessThanOrEqual(maxAttempts);
        // one pickup waits in the pool exactly while the parcel waits for a driver (the first one
        // stays until a driver reports a step, as the hub's dispatch has it)
        const pool = (await store.pending(DRIVER_QUEUE)).filter((m) => m.orderId === orderId);
        expect(pool.length).toBe(parcel.state === 'pickup' ? 1 : 0);
        if (parcel.state === 'pickup') expect(pool[0]?.attempt ?? 1).toBe(attemptOf(parcel.history));
      }),
      // each Redis step is a round trip to a real server: fewer runs (about 0.4 s)
      { numRuns: kind === 'redis' ? 60 : 150 },
    );
  });
});

describe('redis storage: its scripts judge a step as checkStep does', () => {
  it('gives the verdict of checkStep on any history, state and step (duplicates, attempts, reasons, refusals and their words)', async () => {
    const client = new Redis(redisUrl());
    try {
      const stepOf = fc.record({ event: fc.constantFrom(...PARCEL_EVENTS), attempt: fc.option(fc.integer({ min: 2, max: 4 }), { nil: undefined }) });
      await fc.assert(
        fc.asyncProperty(
          fc.option(fc.array(stepOf, { maxLength: 8 }), { nil: undefined }),
          fc.constantFrom(...PARCEL_EVENTS),
          fc.constantFrom(...PARCEL_EVENTS),
          fc.option(fc.integer({ min: 1, max: 4 }), { nil: undefined }),
          fc.option(fc.integer({ min: 1, max: 4 }), { nil: undefined }),
          fc.option(fc.constantFrom(...FAILURE_REASONS), { nil: undefined }),
          async (rest, state, event, attempt, maxAttempts, reason) => {
            // a recorded parcel starts with its pickup; undefined: none recorded
            const history = rest && [{ event: 'pickup' as const, time: 't' }, ...rest.map((s) => ({ ...s, time: 't' }))];
            const input = { event, orderId: 'o', store: 's', ...(attempt !== undefined ? { attempt } : {}), ...(maxAttempts !== undefined ? { maxAttempts } : {}), ...(reason ? { details: { reason } } : {}) };
            const expected: StepCheck = checkStep(history && { state, history }, input);
            const reply = (await client.eval(JUDGE, 0, history ? JSON.stringify(history) : '', state, event, attempt ?? '', maxAttempts ?? '', reason ?? '')) as [string, string | number, string | number];
            const got: StepCheck =
              reply[0] === 'ok'
                ? { status: 'ok', state: reply[1] as ParcelEvent, attempt: history ? attemptOf(history) : 1, reattempt: reply[2] === 1 }
                : reply[0] === 'duplicate'
                  ? { status: 'duplicate' }
                  : { status: 'refused', code: reply[1] as 'CAPS_ERR_OUT_OF_ORDER', reason: String(reply[2]) };
            expect(got).toEqual(expected);
          },
        ),
        { numRuns: 500 },
      );
    } finally {
      await client.quit();
    }
  });
});
