import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DRIVER_QUEUE } from '../protocol/messages.js';
import { decodeJournal, encodeJournal, foldPlan } from '../hub/storage/journal.js';
import { ParcelFilter } from '../hub/storage/parcel-filter.js';
import type { Mutation } from '../hub/storage/storage-core.js';
import { StorageCore } from '../hub/storage/storage-core.js';
import { DEFAULT_LIMITS } from '../hub/storage/storage.js';
import type { StepInput } from '../hub/storage/storage.js';

/** What a client may do to the core: a step of parcel n, or an ack of the k-th message still queued. */
type Op = { kind: 'step'; event: StepInput['event']; n: number; driver?: string } | { kind: 'ack'; k: number };

const text = fc.oneof(fc.stringMatching(/^[A-Za-z0-9 ,.-]{1,20}$/), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 }));
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('step' as const), event: fc.constantFrom('pickup', 'in-transit', 'delivered'), n: fc.nat({ max: 6 }), driver: fc.option(text, { nil: undefined }) }).map((o) => {
    const { driver, ...rest } = o;
    return driver === undefined ? rest : { ...rest, driver };
  }),
  fc.record({ kind: fc.constant('ack' as const), k: fc.nat({ max: 4 }) }),
);

/** Runs ops through a core, as the stores do, and returns the mutations it reported. */
function mutationsOf(ops: readonly Op[], customer: string, address: string): Mutation[] {
  const core = new StorageCore(DEFAULT_LIMITS);
  const mutations: Mutation[] = [];
  let clock = 0;
  for (const o of ops) {
    if (o.kind === 'ack') {
      const queued = [...core.pending(DRIVER_QUEUE), ...core.pending('shop')];
      const message = queued[o.k % Math.max(1, queued.length)];
      if (message) core.ack(message.queueId, message.messageId, mutations);
      continue;
    }
    const input: StepInput = { event: o.event, store: 'shop', orderId: `order-${o.n}`, time: new Date(Date.UTC(2026, 0, 1, 0, 0, clock++)).toISOString() };
    if (o.event === 'pickup') {
      input.customer = customer;
      input.address = address;
    } else if (o.driver !== undefined) input.driver = o.driver;
    core.recordStep(input, mutations);
  }
  return mutations;
}

describe('the SQLite journal', () => {
  it('reads back what it wrote: the same messages, and the same effect on the tables', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), text, text, (ops, customer, address) => {
        const mutations = mutationsOf(ops, customer, address);
        const decoded = decodeJournal(encodeJournal(mutations));
        expect(decoded.map((m) => (m.kind === 'step' ? m.message : m))).toEqual(mutations.map((m) => (m.kind === 'step' ? m.message : m)));
        expect(foldPlan(decoded)).toEqual(foldPlan(mutations));
      }),
      { numRuns: 500 },
    );
  });

  it('folds a message queued and acknowledged in the same run into nothing, and a parcel’s steps into one change', () => {
    const mutations = mutationsOf(
      [
        { kind: 'step', event: 'pickup', n: 1 },
        { kind: 'ack', k: 0 },
        { kind: 'step', event: 'in-transit', n: 1, driver: 'd1' },
        { kind: 'step', event: 'delivered', n: 1, driver: 'd1' },
      ],
      'Ada',
      '1 Main St',
    );
    const plan = foldPlan(mutations);
    expect(plan.parcels).toEqual([
      {
        order: { store: 'shop', orderId: 'order-1', customer: 'Ada', address: '1 Main St' },
        state: 'delivered',
        driver: 'd1',
        pickedUpAt: '2026-01-01T00:00:00.000Z',
        inTransitAt: '2026-01-01T00:00:01.000Z',
        inTransitDriver: 'd1',
        deliveredAt: '2026-01-01T00:00:02.000Z',
        deliveredDriver: 'd1',
      },
    ]);
    // the pickup was acknowledged in the run; the two store messages are still queued
    expect(plan.queued.map((m) => [m.queueId, m.event])).toEqual([['shop', 'in-transit'], ['shop', 'delivered']]);
    expect(plan.removed).toEqual([]);
    expect([...plan.lastSeqs]).toEqual([[DRIVER_QUEUE, 1], ['shop', 2]]);

    // acknowledged in a later run: a delete of what an earlier run inserted
    const [inTransit] = plan.queued;
    const later = foldPlan([{ kind: 'ack', queue: 'shop', seq: inTransit?.seq ?? 0, messageId: inTransit?.messageId ?? '' }]);
    expect(later).toEqual({ parcels: [], queued: [], removed: [{ queue: 'shop', seq: 1, messageId: inTransit?.messageId }], lastSeqs: new Map() });
  });

  it('refuses a row it did not write, with the reason', () => {
    expect(() => decodeJournal('{"a":1}')).toThrow('a journal row is not an array');
    expect(() => decodeJournal('[[2,"x"]]')).toThrow('a journal record is not a step or an ack: [2,"x"]');
    expect(() => decodeJournal('[[0,"pickup","s","o","c","a","t",null,null,"driver","1","m"]]')).toThrow('not a step or an ack');
    expect(() => decodeJournal('[1,')).toThrow(SyntaxError);
  });
});

describe('the filter of known parcels', () => {
  it('never forgets a key it was given', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ unit: 'grapheme', maxLength: 40 }), { maxLength: 300 }), (keys) => {
        const filter = new ParcelFilter(100);
        for (const key of keys) filter.add(key);
        expect(keys.filter((key) => !filter.mightHave(key))).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });

  it('rarely claims a key it was not given, up to its capacity', () => {
    const filter = new ParcelFilter(20_000);
    for (let i = 0; i < 20_000; i++) filter.add(`store-${i % 7}\u0000${i}-known`);
    let claimed = 0;
    for (let i = 0; i < 20_000; i++) if (filter.mightHave(`store-${i % 7}\u0000${i}-new`)) claimed++;
    // 16 bits and 4 probes a key: about 0.25%; 1% leaves room for chance, never for a broken hash
    expect(claimed, `${claimed} of 20,000 unknown keys claimed`).toBeLessThan(200);
  });
});
