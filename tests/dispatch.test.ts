import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Dispatchable } from '../hub/dispatch.js';
import { Dispatcher } from '../hub/dispatch.js';

/** The dispatch policy alone: no sockets, no timers. */
interface Pickup extends Dispatchable<string> {
  id: number;
}

let nextSeq = 0;
function pickup(store: string): Pickup {
  nextSeq++;
  return { id: nextSeq, store, seq: nextSeq };
}

const slots = (...drivers: string[]) => drivers.map((driver) => ({ driver }));

describe('Dispatcher', () => {
  it('serves stores in turns: a burst of one store delays another’s first pickup by one turn at most', () => {
    const d = new Dispatcher<string, Pickup>({ prefetch: 1 });
    for (let i = 0; i < 1000; i++) d.enqueue(pickup('flood'));
    const quiet = pickup('quiet');
    d.enqueue(quiet);
    const [first, second] = d.dispatch(slots('d1', 'd2'));
    expect([first?.pickup.store, second?.pickup.store].sort()).toEqual(['flood', 'quiet']);
    expect(quiet.holder).toBeDefined();
  });

  it('keeps each store’s order, puts a pickup that comes back in its place, and offers it to another driver first', () => {
    const d = new Dispatcher<string, Pickup>({ prefetch: 10 });
    const [a, b, c] = [pickup('s'), pickup('s'), pickup('s')];
    for (const p of [a, b, c]) d.enqueue(p);
    expect(d.dispatch(slots('d1')).map((x) => x.pickup)).toEqual([a, b, c]);
    d.release(a);
    a.avoid = 'd1';
    d.enqueue(a);
    expect(d.dispatch(slots('d1', 'd2'))).toEqual([{ pickup: a, driver: 'd2' }]);
    // with only the driver to avoid, it still goes out
    d.release(b);
    b.avoid = 'd1';
    d.enqueue(b);
    expect(d.dispatch(slots('d1'))).toEqual([{ pickup: b, driver: 'd1' }]);
  });

  it('caps a store’s pickups in hands at its fair share while another store waits, and never leaves a driver idle', () => {
    const d = new Dispatcher<string, Pickup>({ prefetch: 2 });
    for (let i = 0; i < 10; i++) d.enqueue(pickup('slow'));
    // alone, the slow store may fill every slot
    expect(d.dispatch(slots('d1', 'd2'))).toHaveLength(4);
    const held = [...d.heldBy('d1'), ...d.heldBy('d2')];
    for (const p of held) {
      d.release(p);
      d.enqueue(p);
    }
    d.enqueue(pickup('fast'));
    d.enqueue(pickup('fast'));
    // two stores with work: each may hold half of the 4 slots
    const out = d.dispatch(slots('d1', 'd2'));
    expect(out.filter((x) => x.pickup.store === 'fast')).toHaveLength(2);
    expect(out.filter((x) => x.pickup.store === 'slow')).toHaveLength(2);
  });

  it('lets a store past its share when no other store has anything waiting: no driver idles while work waits', () => {
    const d = new Dispatcher<string, Pickup>({ prefetch: 2 });
    for (let i = 0; i < 10; i++) d.enqueue(pickup('busy'));
    d.enqueue(pickup('small'));
    // 4 slots, two stores: busy's share is 2, small takes 1, and the fourth slot goes to busy anyway
    const out = d.dispatch(slots('d1', 'd2'));
    expect(out.map((x) => x.pickup.store).sort()).toEqual(['busy', 'busy', 'busy', 'small']);
  });

  it('keeps the turns through many stores coming and going (its ring is compacted on the way)', () => {
    const d = new Dispatcher<string, Pickup>({ prefetch: 1 });
    for (let i = 0; i < 300; i++) d.enqueue(pickup(`s${i}`));
    const served: string[] = [];
    for (let i = 0; i < 300; i++) {
      const [a] = d.dispatch(slots('d1'));
      if (!a) throw new Error('nothing dispatched');
      served.push(a.pickup.store);
      d.remove(a.pickup);
      // a store served early comes back with more: it waits for the rest of the turn
      if (i === 10) d.enqueue(pickup('s0'));
    }
    expect(served.slice(0, 300)).toEqual(Array.from({ length: 300 }, (_, i) => `s${i}`));
    expect(d.dispatch(slots('d1')).map((a) => a.pickup.store)).toEqual(['s0']);
  });

  it('a driver gone gives back what it held', () => {
    const d = new Dispatcher<string, Pickup>({ prefetch: 5 });
    for (let i = 0; i < 3; i++) d.enqueue(pickup('s'));
    d.dispatch(slots('d1'));
    expect(d.driverGone('d1')).toHaveLength(3);
    expect(d.heldBy('d1').size).toBe(0);
  });

  type Op =
    | { kind: 'publish'; store: number }
    | { kind: 'ack'; pick: number }
    | { kind: 'join'; driver: number }
    | { kind: 'leave'; driver: number }
    | { kind: 'timeout'; pick: number };
  const op: fc.Arbitrary<Op> = fc.oneof(
    { arbitrary: fc.record({ kind: fc.constant('publish' as const), store: fc.nat({ max: 4 }) }), weight: 5 },
    { arbitrary: fc.record({ kind: fc.constant('ack' as const), pick: fc.nat() }), weight: 3 },
    { arbitrary: fc.record({ kind: fc.constant('join' as const), driver: fc.nat({ max: 3 }) }), weight: 1 },
    { arbitrary: fc.record({ kind: fc.constant('leave' as const), driver: fc.nat({ max: 3 }) }), weight: 1 },
    { arbitrary: fc.record({ kind: fc.constant('timeout' as const), pick: fc.nat() }), weight: 1 },
  );

  it('under any interleaving: every store waiting is served within one turn, none held twice, none lost', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 120 }), fc.integer({ min: 1, max: 3 }), (ops, prefetch) => {
        const d = new Dispatcher<string, Pickup>({ prefetch });
        const live = new Set<Pickup>();
        const online: string[] = [];
        const pump = (): void => {
          // a store already holding its fair share of the slots waits for the others
          const withWork = new Set([...live].map((p) => p.store)).size;
          const share = Math.max(1, Math.ceil((online.length * prefetch) / Math.max(1, withWork)));
          const inHands = (store: string): number => [...live].filter((p) => p.store === store && p.holder !== undefined).length;
          const waitingBefore = new Set([...live].filter((p) => p.holder === undefined && inHands(p.store) < share).map((p) => p.store));
          const out = d.dispatch(slots(...online));
          // nobody gets a second pickup before every store that was waiting (under its share) got its first
          const served = new Set<string>();
          for (const { pickup: p, driver } of out) {
            expect(online).toContain(driver);
            if (served.has(p.store)) {
              for (const store of waitingBefore) if (!served.has(store)) expect(out.some((x) => x.pickup.store === store)).toBe(false);
            }
            served.add(p.store);
          }
          // work-conserving: a driver with room means nothing waits
          const room = online.some((driver) => d.heldBy(driver).size < prefetch);
          if (room) expect([...live].filter((p) => p.holder === undefined)).toEqual([]);
        };
        const pickOf = (n: number): Pickup | undefined => [...live][n % Math.max(1, live.size)];
        for (const o of ops) {
          switch (o.kind) {
            case 'publish': {
              const p = pickup(`s${o.store}`);
              live.add(p);
              d.enqueue(p);
              break;
            }
            case 'ack': {
              const p = pickOf(o.pick);
              if (!p) break;
              d.remove(p);
              live.delete(p);
              expect(p.holder).toBeUndefined();
              break;
            }
            case 'join':
              if (!online.includes(`d${o.driver}`)) online.push(`d${o.driver}`);
              break;
            case 'leave': {
              const at = online.indexOf(`d${o.driver}`);
              if (at < 0) break;
              online.splice(at, 1);
              for (const p of d.driverGone(`d${o.driver}`)) d.enqueue(p);
              break;
            }
            case 'timeout': {
              const p = pickOf(o.pick);
              if (!p || p.holder === undefined) break;
              const was = p.holder;
              d.release(p);
              p.avoid = was;
              d.enqueue(p);
              break;
            }
          }
          pump();
          // none held twice, none lost: every live pickup is held by exactly one driver online, or waits
          const held = online.flatMap((driver) => [...d.heldBy(driver)]);
          expect(new Set(held).size).toBe(held.length);
          for (const p of held) expect(live.has(p)).toBe(true);
          expect(held.length + d.waitingCount()).toBe(live.size);
          for (const p of live) if (p.holder !== undefined) expect(d.heldBy(p.holder).has(p)).toBe(true);
        }
      }),
      { numRuns: 500 },
    );
  });
});
