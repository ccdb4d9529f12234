import { describe, expect, it } from 'vitest';
import type { AckWait } from '../hub/acknowledgements.js';
import { Acknowledgements } from '../hub/acknowledgements.js';

/** The ack waits alone: no sockets, and a clock the test moves. */
function tracker(options = { ackTimeoutMs: 100, maxBackoffMs: 350 }) {
  let now = 1_000;
  const timedOut: Array<AckWait<string, string>> = [];
  const acks = new Acknowledgements<string, string>(options, (wait) => timedOut.push(wait), () => now);
  return {
    acks,
    timedOut,
    advance(ms: number) {
      now += ms;
      acks.sweep();
    },
  };
}

describe('Acknowledgements', () => {
  it('waits longer on each try, up to the ceiling', () => {
    const { acks } = tracker();
    expect([1, 2, 3, 4, 10].map((n) => acks.waitFor(n))).toEqual([100, 200, 350, 350, 350]);
    acks.close();
  });

  it('settles a wait once; a wait past its deadline times out once, and its late ack changes nothing', () => {
    const { acks, timedOut, advance } = tracker();
    const early = acks.start('m1', 'socket-a', 1);
    const late = acks.start('m2', 'socket-b', 2);
    expect(acks.settle(early)).toBe(true);
    expect(acks.settle(early)).toBe(false);
    advance(150);
    expect(timedOut).toEqual([]);
    advance(100);
    expect(timedOut.map((w) => [w.entry, w.socket, w.wait])).toEqual([['m2', 'socket-b', 200]]);
    advance(1_000);
    expect(timedOut).toHaveLength(1);
    expect(acks.settle(late)).toBe(false);
    expect(acks.size).toBe(0);
    acks.close();
  });

  it('forgets every wait of a message that left its queue another way', () => {
    const { acks, timedOut, advance } = tracker();
    acks.start('m1', 'vendor-1', 1);
    acks.start('m1', 'vendor-2', 1);
    const other = acks.start('m2', 'vendor-1', 1);
    acks.forget('m1');
    expect(acks.size).toBe(1);
    advance(100);
    expect(timedOut).toEqual([other]);
    acks.close();
  });

  it('after close, nothing is awaited and nothing times out', () => {
    const { acks, timedOut, advance } = tracker();
    const wait = acks.start('m1', 's', 1);
    acks.close();
    advance(1_000);
    expect(timedOut).toEqual([]);
    expect(acks.settle(wait)).toBe(false);
  });
});
