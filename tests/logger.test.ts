import { execFile } from 'node:child_process';
import { inspect } from 'node:util';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createLogger, inspectPlain } from '../hub/logger.js';

const inspected = (value: unknown): string => inspect(value, { depth: 4, breakLength: Infinity });

/** Records like the ones EVENT lines print, with keys and strings that may need quoting or escaping. */
// mostly what the fast path takes, so that it is exercised; now and then what it must decline
const key = fc.oneof(
  { arbitrary: fc.constantFrom('event', 'time', 'payload', 'store', 'orderId', 'customer', 'address', 'order', '_x1'), weight: 6 },
  { arbitrary: fc.string({ maxLength: 6 }), weight: 1 },
);
const text = fc.oneof(
  { arbitrary: fc.stringMatching(/^[A-Za-z0-9 ,.:-]{0,20}$/), weight: 6 },
  { arbitrary: fc.string({ maxLength: 30 }), weight: 1 },
  { arbitrary: fc.string({ unit: 'grapheme', maxLength: 10 }), weight: 1 },
  { arbitrary: fc.constantFrom("O'Brien", 'a\\b', 'tab\there', '\u0085', 'é', '"', '`'), weight: 1 },
);
const record = fc.letrec<{ node: unknown }>((tie) => ({
  node: fc.oneof({ depthSize: 'medium', maxDepth: 5, withCrossShrink: true }, text, fc.dictionary(key, tie('node'), { maxKeys: 5 })),
})).node;
/** Objects nested exactly `levels` deep on some branch, to reach where inspect starts breaking lines. */
const nested = (levels: number): fc.Arbitrary<unknown> =>
  levels === 0 ? text : fc.tuple(key, nested(levels - 1), fc.dictionary(key, text, { maxKeys: 2 })).map(([k, inner, rest]) => ({ ...rest, [k]: inner }));

describe('EVENT lines: inspectPlain', () => {
  it('prints what util.inspect prints, or declines', () => {
    fc.assert(
      fc.property(fc.oneof(record, fc.integer({ min: 1, max: 5 }).chain(nested)), (value) => {
        const fast = inspectPlain(value);
        if (fast !== undefined) expect(fast).toBe(inspected(value));
      }),
      { numRuns: 3_000 },
    );
  });

  it('takes the fast path for the records the hub logs', () => {
    const records = [
      { event: 'pickup', time: '2026-11-22T00:00:00.000Z', payload: { store: '1-206-flowers', orderId: 'e3669048-7313-427b-b6cc-74010ca1f8f0', customer: 'Jamal Braun', address: 'Schmittfort, LA' } },
      { event: 'delivered', time: 't', payload: { store: 's', orderId: 'o', customer: 'c', address: 'a', order: { store: 's' } } },
      { event: 'x', payload: {} },
    ];
    for (const value of records) expect(inspectPlain(value)).toBe(inspected(value));
  });

  it('declines what inspect would quote, escape or break over lines', () => {
    const cycle: Record<string, unknown> = { a: 'x' };
    cycle['self'] = cycle;
    const proto = JSON.parse('{"__proto__": "x"}') as unknown;
    for (const value of [{ name: "O'Brien" }, { 'in-transit': 'x' }, { s: 'tab\there' }, { a: { b: { c: { d: 'deep' } } } }, { n: 1 }, ['x'], cycle, proto]) {
      expect(inspectPlain(value)).toBeUndefined();
    }
  });

  it('writes EVENT lines as util.inspect prints them, for a payload logged once or again', () => {
    fc.assert(
      fc.property(fc.constantFrom('pickup', 'in-transit', "it's"), text, record, (event, time, payload) => {
        const lines: string[] = [];
        const logger = createLogger({ write: (line) => lines.push(line), color: false });
        logger.event(event, payload, time);
        logger.event('delivered', payload, time);
        expect(lines).toEqual([`EVENT: ${inspected({ event, time, payload })}`, `EVENT: ${inspected({ event: 'delivered', time, payload })}`]);
      }),
      { numRuns: 2_000 },
    );
  });

  it('writes the EVENT line through either path with the same text', () => {
    const lines: string[] = [];
    const logger = createLogger({ write: (line) => lines.push(line), color: false });
    logger.event('pickup', { store: 's', orderId: 'o' }, 't');
    logger.event('pickup', { store: "O'Brien's", orderId: 'o' }, 't');
    expect(lines).toEqual([`EVENT: { event: 'pickup', time: 't', payload: { store: 's', orderId: 'o' } }`, `EVENT: { event: 'pickup', time: 't', payload: { store: "O'Brien's", orderId: 'o' } }`]);
  });
});

describe('the hub logger on stdout', () => {
  it('keeps lines in order: gathered EVENT lines go out before any other line, and at exit', async () => {
    const logger = new URL('../dist/hub/logger.js', import.meta.url).href;
    const script = `
      import { createLogger } from ${JSON.stringify(logger)};
      const log = createLogger({ color: false });
      log.event('pickup', { orderId: 'a' }, 't1');
      log.event('pickup', { orderId: 'b' }, 't2');
      log.info('BETWEEN');
      log.event('delivered', { orderId: 'a' }, 't3');
    `;
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, ['--input-type=module', '-e', script], { timeout: 10_000 }, (err, out) => (err ? reject(err) : resolve(out)));
    });
    expect(stdout.split('\n')).toEqual([
      "EVENT: { event: 'pickup', time: 't1', payload: { orderId: 'a' } }",
      "EVENT: { event: 'pickup', time: 't2', payload: { orderId: 'b' } }",
      'BETWEEN',
      "EVENT: { event: 'delivered', time: 't3', payload: { orderId: 'a' } }",
      '',
    ]);
  });
});
