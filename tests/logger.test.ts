import { execFile } from 'node:child_process';
import { inspect } from 'node:util';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createLogger, inspectPlain } from '../hub/logger.js';

const inspected = (value: unknown): string => inspect(value, { depth: 4, breakLength: Infinity });
/** inspect's text as an EVENT line shows it: what inspect leaves raw (format characters, separators) as \u escapes. */
const escaped = (text: string): string =>
  text.replace(/[\p{Cf}\p{Zl}\p{Zp}]/gu, (char) => [...Array(char.length).keys()].map((i) => `\\u${char.charCodeAt(i).toString(16).padStart(4, '0')}`).join(''));

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

  it('writes EVENT lines as util.inspect prints them (what it leaves raw escaped), for a payload logged once or again', () => {
    fc.assert(
      fc.property(fc.constantFrom('pickup', 'in-transit', "it's"), text, record, (event, time, payload) => {
        const lines: string[] = [];
        const logger = createLogger({ write: (line) => lines.push(line), color: false });
        logger.event(event, payload, time);
        logger.event('delivered', payload, time);
        expect(lines).toEqual([`EVENT: ${escaped(inspected({ event, time, payload }))}`, `EVENT: ${escaped(inspected({ event: 'delivered', time, payload }))}`]);
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

/**
 * Hardening finding 6, log injection: a client's values reached the human log raw, so it could
 * erase a line, print a fake STOPPED or set the terminal title, and the JSON log left C1 controls,
 * bidi controls and line separators raw for whoever tails it.
 */
describe('log injection: what a client sends is shown, never obeyed', () => {
  /** Erases the line and prints a fake STOPPED; sets the terminal title; CSI in one C1 byte; right-to-left override. */
  const hostile = { erase: '\x1b[2K\rSTOPPED', title: '\x1b]0;title\x07', csi: 'a\u009bb', rlo: 'x\u202eexe.txt' };
  /** Every character a terminal or an editor may obey rather than print, raw. */
  const INVISIBLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;
  const capture = (format: 'human' | 'json', color = false): { lines: string[]; logger: ReturnType<typeof createLogger> } => {
    const lines: string[] = [];
    return { lines, logger: createLogger({ format, color, write: (line) => lines.push(line) }) };
  };

  it('human lines: each hostile value is one line, shown escaped as a JSON string', () => {
    const { lines, logger } = capture('human');
    logger.warn('REFUSED', hostile);
    logger.info('CONNECTED', { name: 'one\u2028two\u2029three\u0085four', dir: '\u200e\u200f\u061c\u2066\u2069', zw: 'a\u200bb\ufeff' });
    expect(lines).toEqual([
      String.raw`WARN REFUSED erase="\u001b[2K\rSTOPPED" title="\u001b]0;title\u0007" csi="a\u009bb" rlo="x\u202eexe.txt"`,
      String.raw`CONNECTED name="one\u2028two\u2029three\u0085four" dir="\u200e\u200f\u061c\u2066\u2069" zw="a\u200bb\ufeff"`,
    ]);
  });

  it('human lines: a backslash is escaped, so a value that spells an escape is told apart from the real one', () => {
    const { lines, logger } = capture('human');
    logger.info('X', { real: '\x1b', spelt: String.raw`\u001b`, path: String.raw`C:\temp`, quote: '"x"', plain: 'acme-1' });
    expect(lines).toEqual([String.raw`X real="\u001b" spelt="\\u001b" path="C:\\temp" quote="\"x\"" plain=acme-1`]);
  });

  it('human lines: the message itself cannot break the line either', () => {
    const { lines, logger } = capture('human');
    logger.error('boom\r\n\x1b[2KSTOPPED\u2028');
    expect(lines).toEqual([String.raw`ERROR boom\u000d\u000a\u001b[2KSTOPPED\u2028`]);
  });

  it('human EVENT lines: what util.inspect leaves raw (bidi, format characters, separators) is escaped too', () => {
    const payload = { store: 's', orderId: '\u202eevil', customer: 'x\u2028y', address: '\x1b]0;t\x07\u009b' };
    const plain = capture('human');
    plain.logger.event('pickup', payload, 't');
    expect(plain.lines).toEqual([String.raw`EVENT: { event: 'pickup', time: 't', payload: { store: 's', orderId: '\u202eevil', customer: 'x\u2028y', address: '\x1B]0;t\x07\x9B' } }`]);
    const coloured = capture('human', true);
    coloured.logger.event('pickup', payload, 't');
    expect(coloured.lines).toHaveLength(1);
    // the only escapes left are inspect's own colours
    expect(coloured.lines[0]?.replace(/\x1b\[\d+m/g, '')).not.toMatch(INVISIBLE);
  });

  it('JSON lines: C1, bidi controls and separators are \\u escapes too, and every value reads back as sent', () => {
    const { lines, logger } = capture('json');
    const fields = { ...hostile, sep: 'a\u2028b\u2029c\u0085', zw: '\u200b\ufeff\u{e0041}' };
    logger.warn('REFUSED', fields);
    logger.event('pickup', fields, 't');
    expect(lines).toHaveLength(2);
    for (const line of lines) expect(line).not.toMatch(INVISIBLE);
    expect(lines[0]).toContain(String.raw`"rlo":"x\u202eexe.txt"`);
    expect(lines[0]).toContain(String.raw`"csi":"a\u009bb"`);
    expect(JSON.parse(lines[0] ?? '')).toMatchObject({ level: 'warn', msg: 'REFUSED', ...fields });
    expect(JSON.parse(lines[1] ?? '')).toMatchObject({ msg: 'EVENT', event: 'pickup', time: 't', payload: fields });
  });

  it('any string: one line, nothing invisible, and a reader gets back exactly what was sent', () => {
    const anything = fc.string({ unit: 'binary', maxLength: 20 });
    fc.assert(
      fc.property(anything, anything, (message, value) => {
        const human = capture('human');
        human.logger.info('M', { v: value });
        human.logger.info(message);
        human.logger.event(value, { v: value }, value);
        const json = capture('json');
        json.logger.info(message, { v: value });
        json.logger.event(value, { v: value }, value);
        expect(human.lines).toHaveLength(3);
        for (const line of [...human.lines, ...json.lines]) expect(line).not.toMatch(INVISIBLE);
        // a bare value is the value; a quoted one is a JSON string of it
        const shown = (human.lines[0] ?? '').slice('M v='.length);
        expect(shown.startsWith('"') ? JSON.parse(shown) : shown).toBe(value);
        expect(JSON.parse(json.lines[0] ?? '')).toMatchObject({ msg: message, v: value });
        expect(JSON.parse(json.lines[1] ?? '')).toMatchObject({ event: value, time: value, payload: { v: value } });
      }),
      { numRuns: 2_000 },
    );
  });
});
