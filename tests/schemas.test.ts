import fc from 'fast-check';
import { describe, it, expect } from 'vitest';
import type { z } from 'zod';
import type { CapsErrorBody } from '../protocol/errors.js';
import type { ParcelMessage } from '../protocol/messages.js';
import type { Order, ParcelEvent, PublishInput } from '../protocol/schemas.js';
import { COURSE_EVENTS, getAllSchema, handshakeSchema, LIMITS, PARCEL_EVENTS, parseFlatPublish, parsePayload, parsePublish, publishSchemas, receivedSchema, roomSchema } from '../protocol/schemas.js';
import { normalizeLabPayload, parseLabReceived } from '../protocol/lab.js';

/** Parses and fails the test, showing the error, when the schema refuses. */
function accept<S extends z.ZodType>(schema: S, raw: unknown): z.output<S> {
  const parsed = parsePayload(schema, raw);
  if (!parsed.ok) throw new Error(`expected ${JSON.stringify(raw)} to be accepted, got ${parsed.error.code}: ${parsed.error.message}`);
  return parsed.value;
}

/** Parses and fails the test, showing the value, when the schema accepts. */
function refuse(schema: z.ZodType, raw: unknown): CapsErrorBody {
  const parsed = parsePayload(schema, raw);
  if (parsed.ok) throw new Error(`expected ${show(raw)} to be refused, got ${JSON.stringify(parsed.value)}`);
  expect(parsed.error.code).toBe('CAPS_ERR_INVALID_PAYLOAD');
  return parsed.error;
}

function show(raw: unknown): string {
  return raw === undefined ? 'undefined' : JSON.stringify(raw);
}

const order: Order = { store: 'acme', orderId: 'o-1', customer: 'Ada Lovelace', address: '1 Analytical Way' };

/** What every accepted pickup of `order` comes out as, whatever shape it came in. */
const normalized: PublishInput = { event: 'pickup', ...order };

/** A message exactly as the hub sends it (typed, so it stays in step with ParcelMessage). */
function outbound(event: ParcelEvent, extra: Partial<ParcelMessage> = {}): ParcelMessage {
  return {
    ...order,
    event,
    messageId: 'm-42',
    seq: 7,
    queueId: 'driver',
    clientId: 'driver',
    order: { ...order },
    time: '2024-05-01T12:00:00.000Z',
    ...extra,
  };
}

describe('publishSchemas.pickup: accepted shapes', () => {
  it('accepts the flat form', () => {
    expect(accept(publishSchemas.pickup, { ...order })).toStrictEqual(normalized);
  });

  it('accepts the wrapped lab form with clientId', () => {
    const value = accept(publishSchemas.pickup, { event: 'pickup', messageId: 'm-1', clientId: 'acme', order: { ...order } });
    expect(value).toStrictEqual({ ...normalized, messageId: 'm-1' });
  });

  it('accepts the wrapped lab form with queueId', () => {
    const value = accept(publishSchemas.pickup, { event: 'pickup', messageId: 'm-1', queueId: 'acme', order: { ...order } });
    expect(value).toStrictEqual({ ...normalized, messageId: 'm-1' });
  });

  it('accepts the wrapped form without event or messageId', () => {
    expect(accept(publishSchemas.pickup, { clientId: 'acme', order: { ...order } })).toStrictEqual(normalized);
  });

  it('accepts a re-emitted outbound message (order fields top-level and under order)', () => {
    expect(accept(publishSchemas.pickup, outbound('pickup'))).toStrictEqual({ ...normalized, messageId: 'm-42' });
  });

  it('accepts a re-emitted outbound message that names a driver', () => {
    expect(accept(publishSchemas.pickup, outbound('pickup', { driver: 'driver-1' }))).toStrictEqual({ ...normalized, messageId: 'm-42' });
  });

  it('gives the same normalized order for every shape', () => {
    const shapes: unknown[] = [
      { ...order },
      { event: 'pickup', messageId: 'm-1', clientId: 'acme', order: { ...order } },
      { event: 'pickup', messageId: 'm-1', queueId: 'acme', order: { ...order } },
      outbound('pickup'),
    ];
    for (const shape of shapes) {
      const { messageId: _messageId, ...rest } = accept(publishSchemas.pickup, shape);
      expect(rest).toStrictEqual(normalized);
    }
  });

  it('trims surrounding whitespace', () => {
    const padded = { store: ' acme ', orderId: '\to-1\n', customer: ' Ada Lovelace', address: '1 Analytical Way ' };
    expect(accept(publishSchemas.pickup, padded)).toStrictEqual(normalized);
  });

  it('accepts every field at exactly its limit', () => {
    const atLimit = {
      store: 's'.repeat(LIMITS.name),
      orderId: 'o'.repeat(LIMITS.orderId),
      customer: 'c'.repeat(LIMITS.customer),
      address: 'a'.repeat(LIMITS.address),
    };
    const value = accept(publishSchemas.pickup, { ...atLimit, messageId: 'm'.repeat(LIMITS.messageId), time: 't'.repeat(LIMITS.time) });
    expect(value).toStrictEqual({ event: 'pickup', ...atLimit, messageId: 'm'.repeat(LIMITS.messageId) });
  });
});

describe('publishSchemas: later steps', () => {
  for (const event of ['in-transit', 'delivered'] as const) {
    it(`${event} accepts { store, orderId } alone`, () => {
      expect(accept(publishSchemas[event], { store: 'acme', orderId: 'o-1' })).toStrictEqual({ event, store: 'acme', orderId: 'o-1' });
    });

    it(`${event} accepts a wrapped reference without customer or address`, () => {
      const value = accept(publishSchemas[event], { event, messageId: 'm-2', clientId: 'driver', order: { store: 'acme', orderId: 'o-1' } });
      expect(value).toStrictEqual({ event, store: 'acme', orderId: 'o-1', messageId: 'm-2' });
    });

    it(`${event} accepts a whole order and keeps customer and address`, () => {
      expect(accept(publishSchemas[event], { ...order })).toStrictEqual({ event, ...order });
    });

    it(`${event} accepts a re-emitted ${event} message`, () => {
      const message = outbound(event, { queueId: 'acme', clientId: 'acme', driver: 'driver-1' });
      expect(accept(publishSchemas[event], message)).toStrictEqual({ event, ...order, messageId: 'm-42' });
    });

    it(`${event} refuses a missing orderId`, () => {
      expect(refuse(publishSchemas[event], { store: 'acme' }).message).toMatch(/\borderId: is required/);
    });

    it(`${event} refuses a missing store`, () => {
      expect(refuse(publishSchemas[event], { orderId: 'o-1' }).message).toMatch(/\bstore: is required/);
    });
  }
});

describe('publishSchemas.pickup: refusals', () => {
  it.each([
    ['null', null],
    ['undefined', undefined],
    ['a number', 42],
    ['a string', 'x'],
    ['an array', []],
  ])('refuses %s', (_what, raw) => {
    const error = refuse(publishSchemas.pickup, raw);
    expect(error.message).toMatch(/^payload: .*expected object/);
  });

  it.each(['store', 'orderId', 'customer', 'address'] as const)('refuses a flat order without %s', (key) => {
    const { [key]: _gone, ...rest } = order;
    expect(refuse(publishSchemas.pickup, rest).message).toContain(`${key}: is required`);
  });

  it.each(['store', 'orderId', 'customer', 'address'] as const)('refuses a wrapped order without %s', (key) => {
    const { [key]: _gone, ...rest } = order;
    const error = refuse(publishSchemas.pickup, { event: 'pickup', messageId: 'm-1', clientId: 'acme', order: rest });
    expect(error.message).toContain(key);
  });

  it.each(['store', 'orderId', 'customer', 'address'] as const)('refuses an empty %s', (key) => {
    expect(refuse(publishSchemas.pickup, { ...order, [key]: '' }).message).toContain(`${key}: must not be empty`);
  });

  it.each(['store', 'orderId', 'customer', 'address'] as const)('refuses a whitespace-only %s', (key) => {
    expect(refuse(publishSchemas.pickup, { ...order, [key]: '   ' }).message).toContain(`${key}: must not be empty`);
  });

  it('refuses an empty messageId and an empty order field under order', () => {
    expect(refuse(publishSchemas.pickup, { ...order, messageId: '' }).message).toContain('messageId: must not be empty');
    expect(refuse(publishSchemas.pickup, { order: { ...order, orderId: '' } }).message).toContain('order.orderId: must not be empty');
  });

  const overLong: [string, number][] = [
    ['store', LIMITS.name],
    ['orderId', LIMITS.orderId],
    ['customer', LIMITS.customer],
    ['address', LIMITS.address],
    ['messageId', LIMITS.messageId],
    ['time', LIMITS.time],
    ['clientId', LIMITS.name],
    ['queueId', LIMITS.name],
    ['driver', LIMITS.name],
  ];
  it.each(overLong)('refuses a %s over %i characters', (key, max) => {
    const error = refuse(publishSchemas.pickup, { ...order, [key]: 'x'.repeat(max + 1) });
    expect(error.message).toMatch(new RegExp(`^${key}: `));
    expect(error.message).toContain(`${max}`);
  });

  it.each(['store', 'orderId', 'customer', 'address'] as const)('refuses an over-long order.%s', (key) => {
    const max = key === 'store' ? LIMITS.name : LIMITS[key];
    const error = refuse(publishSchemas.pickup, { order: { ...order, [key]: 'x'.repeat(max + 1) } });
    expect(error.message).toContain(`order.${key}: must be at most ${max} characters`);
  });

  it('refuses an unknown extra key at top level', () => {
    expect(refuse(publishSchemas.pickup, { ...order, price: 9 }).message).toMatch(/Unrecognized key.*"price"/);
  });

  it('refuses an unknown extra key under order', () => {
    const error = refuse(publishSchemas.pickup, { order: { ...order, price: 9 } });
    expect(error.message).toMatch(/^order: Unrecognized key.*"price"/);
  });

  it.each([
    ['store', 5],
    ['orderId', 5],
    ['customer', true],
    ['address', { street: 'x' }],
    ['messageId', 12],
    ['clientId', ['acme']],
    ['time', 1714564800000],
    ['seq', '7'],
    ['order', 'o-1'],
    ['order', []],
  ])('refuses %s of the wrong type (%j)', (key, value) => {
    expect(refuse(publishSchemas.pickup, { ...order, [key]: value }).message).toMatch(new RegExp(`^${key}: `));
  });

  it.each([-1, 1.5, Number.NaN])('refuses seq %s', (seq) => {
    expect(refuse(publishSchemas.pickup, { ...order, seq }).message).toMatch(/^seq: /);
  });

  it('refuses an unknown event name', () => {
    expect(refuse(publishSchemas.pickup, { ...order, event: 'lost' }).message).toMatch(/^event: /);
  });

  it('refuses a wrapped order whose store disagrees with the top-level store', () => {
    const error = refuse(publishSchemas.pickup, { store: 'other', event: 'pickup', messageId: 'm-1', order: { ...order } });
    expect(error.message).toContain('store: disagrees with order.store');
  });

  it('refuses a wrapped order whose orderId disagrees with the top-level orderId', () => {
    const error = refuse(publishSchemas.pickup, { ...order, orderId: 'o-2', order: { ...order } });
    expect(error.message).toContain('orderId: disagrees with order.orderId');
  });

  it('refuses a re-emitted message whose top-level store was changed', () => {
    expect(refuse(publishSchemas.pickup, outbound('pickup', { store: 'other' })).message).toContain('store: disagrees with order.store');
  });

  it('refuses an own __proto__ key at top level', () => {
    const raw: unknown = JSON.parse('{"__proto__": {"customer": "x"}, "store": "acme", "orderId": "o-1", "customer": "Ada", "address": "1 Way"}');
    expect(Object.hasOwn(raw as object, '__proto__')).toBe(true);
    expect(refuse(publishSchemas.pickup, raw).message).toContain('__proto__');
  });

  it('refuses an own __proto__ key under order', () => {
    const raw: unknown = JSON.parse('{"order": {"__proto__": {"polluted": true}, "store": "acme", "orderId": "o-1", "customer": "Ada", "address": "1 Way"}}');
    expect(refuse(publishSchemas.pickup, raw).message).toContain('__proto__');
  });

  it('does not pollute Object.prototype while parsing __proto__', () => {
    const raw: unknown = JSON.parse('{"__proto__": {"polluted": true}, "store": "acme", "orderId": "o-1"}');
    parsePayload(publishSchemas.delivered, raw);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });
});

describe('publishSchemas: the event name on the wire decides, not the event field', () => {
  // protocol/schemas.ts: `event` is informational, because a lab driver re-emits the pickup it
  // received (event: 'pickup') as in-transit and delivered.
  for (const event of ['in-transit', 'delivered'] as const) {
    it(`accepts a pickup message re-emitted as ${event}, as ${event}`, () => {
      expect(accept(publishSchemas[event], outbound('pickup'))).toStrictEqual({ event, ...order, messageId: 'm-42' });
    });

    it(`accepts a wrapped order whose event field says pickup, sent as ${event}`, () => {
      const value = accept(publishSchemas[event], { event: 'pickup', messageId: 'm-1', clientId: 'driver', order: { ...order } });
      expect(value).toStrictEqual({ event, ...order, messageId: 'm-1' });
    });
  }

  it.each(PARCEL_EVENTS.filter((e) => e !== 'pickup'))('takes a pickup whose event field says %s as a pickup', (event) => {
    expect(accept(publishSchemas.pickup, { ...order, event })).toStrictEqual(normalized);
  });
});

describe('roomSchema', () => {
  it.each([
    ['a string', 'acme', 'acme'],
    ['a padded string', '  acme ', 'acme'],
    ['{ clientId }', { clientId: 'driver' }, 'driver'],
    ['{ queueId }', { queueId: 'DRIVER' }, 'DRIVER'],
    ['{ store }', { store: 'acme' }, 'acme'],
  ])('accepts %s', (_what, raw, name) => {
    expect(accept(roomSchema, raw)).toBe(name);
  });

  it.each([
    ['{}', {}],
    ["''", ''],
    ['5', 5],
    ['null', null],
    ['undefined', undefined],
    ['{ name }', { name: 'acme' }],
    ['{ store: "" }', { store: '' }],
    ['an over-long name', 'x'.repeat(LIMITS.name + 1)],
  ])('refuses %s', (_what, raw) => {
    expect(refuse(roomSchema, raw).message.length).toBeGreaterThan(0);
  });

  it('names what is missing when the object names nothing', () => {
    expect(refuse(roomSchema, {}).message).toContain('names no store or client');
  });

  it('refuses an own __proto__ key', () => {
    expect(refuse(roomSchema, JSON.parse('{"__proto__": {"store": "x"}}')).message).toContain('__proto__');
  });
});

describe('receivedSchema', () => {
  it('accepts { clientId, messageId }', () => {
    expect(accept(receivedSchema, { clientId: 'driver', messageId: 'm-1' })).toStrictEqual({ queue: 'driver', messageId: 'm-1' });
  });

  it('accepts { clientId, messageId, event }', () => {
    const value = accept(receivedSchema, { clientId: 'acme', messageId: 'm-1', event: 'delivered' });
    expect(value).toStrictEqual({ queue: 'acme', messageId: 'm-1', event: 'delivered' });
  });

  it('accepts { queueId, messageId }', () => {
    expect(accept(receivedSchema, { queueId: 'driver', messageId: 'm-1' })).toStrictEqual({ queue: 'driver', messageId: 'm-1' });
  });

  it('prefers queueId when both ids are sent', () => {
    expect(accept(receivedSchema, { queueId: 'q', clientId: 'c', messageId: 'm-1' })).toStrictEqual({ queue: 'q', messageId: 'm-1' });
  });

  it('refuses a missing queue id', () => {
    expect(refuse(receivedSchema, { messageId: 'm-1' }).message).toContain('clientId: clientId or queueId is required');
  });

  it('refuses a missing messageId', () => {
    expect(refuse(receivedSchema, { clientId: 'driver' }).message).toMatch(/^messageId: /);
  });

  it.each([
    ['a bare string', 'driver'],
    ['null', null],
    ['an unknown event', { clientId: 'driver', messageId: 'm-1', event: 'lost' }],
    ['an extra key', { clientId: 'driver', messageId: 'm-1', extra: 1 }],
    ['an empty messageId', { clientId: 'driver', messageId: '' }],
  ])('refuses %s', (_what, raw) => {
    refuse(receivedSchema, raw);
  });
});

describe('getAllSchema', () => {
  it('accepts { clientId }', () => {
    expect(accept(getAllSchema, { clientId: 'driver' })).toStrictEqual({ queue: 'driver' });
  });

  it('accepts { clientId, event }', () => {
    expect(accept(getAllSchema, { clientId: 'acme', event: 'delivered' })).toStrictEqual({ queue: 'acme', event: 'delivered' });
  });

  it('accepts { queueId }', () => {
    expect(accept(getAllSchema, { queueId: 'driver' })).toStrictEqual({ queue: 'driver' });
  });

  it('accepts a bare string', () => {
    expect(accept(getAllSchema, 'driver')).toStrictEqual({ queue: 'driver' });
  });

  it('refuses a missing queue id', () => {
    expect(refuse(getAllSchema, {}).message).toContain('clientId or queueId is required');
    expect(refuse(getAllSchema, { event: 'pickup' }).message).toContain('clientId or queueId is required');
  });

  it.each([
    ['an empty string', ''],
    ['a number', 5],
    ['null', null],
    ['an unknown event', { clientId: 'driver', event: 'lost' }],
  ])('refuses %s', (_what, raw) => {
    refuse(getAllSchema, raw);
  });
});

describe('parseFlatPublish: the fast path of a publish', () => {
  // strings near every limit and rule: padding, control characters, the driver prefix, lengths around the maximum
  const edge = fc.oneof(
    fc.string({ maxLength: 12 }),
    fc.string({ unit: 'grapheme', maxLength: 8 }),
    fc.constantFrom('', ' ', ' acme ', '\tacme', 'ac\u0000me', 'a\u007f', 'driver', 'DRIVER-x', 'drive', ' driver', '\u00a0x\u00a0', '\u2028'),
    // one of each kind finding 6 refuses in names, and what free text may still hold
    fc.constantFrom('a\u0085b', 'a\u009bb', 'ac\u202eme', '\u2066x\u2069', 'a\u200eb', 'x\u061c', 'a\u2029b', 'a\u200bb', 'a\u200db', 'Zo\u00eb', '\u6771\u4eac', 'a\u00adb'),
    fc.nat({ max: 3 }).map((d) => 'x'.repeat(LIMITS.name - 1 + d)),
    fc.nat({ max: 3 }).map((d) => 'y'.repeat(LIMITS.address - 1 + d)),
  );
  /** Mostly what passes, so the fast path is taken; now and then an edge. */
  const likely = fc.oneof({ arbitrary: fc.stringMatching(/^[ A-Za-z0-9-]{1,20}$/), weight: 4 }, { arbitrary: edge, weight: 1 });
  const value = fc.oneof({ arbitrary: edge, weight: 8 }, { arbitrary: fc.constantFrom(undefined, null, 5, true, {}, ['a']), weight: 1 });
  const key = fc.oneof({ arbitrary: fc.constantFrom('store', 'orderId', 'customer', 'address'), weight: 8 }, { arbitrary: fc.constantFrom('event', 'messageId', 'order', '__proto__', 'constructor', 'extra'), weight: 1 });
  const orderRef = fc.record({ store: likely, orderId: likely, customer: likely, address: likely, extra: value }, { requiredKeys: [] });
  /** A message as the hub sends it, re-emitted by a lab driver: mostly valid, now and then not. */
  const echoed = fc.record(
    {
      store: likely,
      orderId: likely,
      customer: likely,
      address: likely,
      event: fc.oneof({ arbitrary: fc.constantFrom(...PARCEL_EVENTS), weight: 6 }, { arbitrary: fc.oneof(edge, fc.constant('received')), weight: 1 }),
      messageId: likely,
      seq: fc.oneof({ arbitrary: fc.nat(), weight: 6 }, { arbitrary: fc.constantFrom(-1, 1.5, Number.NaN, 2 ** 53, '7'), weight: 1 }),
      queueId: likely,
      clientId: likely,
      time: fc.oneof(fc.constant('2024-05-01T12:00:00.000Z'), edge),
      driver: likely,
      order: fc.oneof({ arbitrary: orderRef, weight: 6 }, { arbitrary: value, weight: 1 }),
    },
    { requiredKeys: [] },
  );
  /** The message as the hub sends it, with at most one field changed, dropped or added. */
  const mutatedMessage = fc
    .tuple(
      fc.record({ store: likely, orderId: likely, customer: likely, address: likely }),
      fc.constantFrom('none', 'store', 'orderId', 'customer', 'event', 'messageId', 'seq', 'queueId', 'clientId', 'time', 'driver', 'order', 'order.store', 'order.orderId', 'order.customer', 'order.extra'),
      fc.oneof({ arbitrary: edge, weight: 1 }, { arbitrary: fc.constantFrom(undefined, -1, 0.5, 2 ** 53, 'pickup', 'received', 'o-2', 'other-store'), weight: 2 }),
      fc.boolean(),
    )
    .map(([o, field, change, drop]) => {
      const message: Record<string, unknown> = { ...o, event: 'pickup', messageId: 'm-1', seq: 3, queueId: 'driver', clientId: 'driver', time: 't', driver: 'd1', order: { ...o } };
      const [outer, inner] = field.split('.') as [string, string | undefined];
      const target = inner === undefined ? message : (message['order'] as Record<string, unknown>);
      const key = inner ?? outer;
      if (field === 'none') return message;
      if (drop) delete target[key];
      else target[key] = change;
      return message;
    });
  const payload = fc.oneof(
    fc.dictionary(key, value, { maxKeys: 5 }),
    mutatedMessage,
    mutatedMessage,
    fc.record({ store: likely, orderId: likely, customer: likely, address: likely }, { requiredKeys: ['store', 'orderId'] }),
    // a driver's step naming its attempt, in range or not
    fc.record({ store: likely, orderId: likely, customer: likely, address: likely, attempt: fc.oneof(fc.integer({ min: -1, max: 25 }), fc.constantFrom(1.5, '2', null)) }, { requiredKeys: ['store', 'orderId', 'attempt'] }),
    echoed,
    fc.constantFrom(undefined, null, 'acme', 7, [order], Object.create(null) as unknown),
  );

  it('never accepts what zod refuses, and comes out exactly as zod does', () => {
    let fast = 0;
    let fastEnvelopes = 0;
    fc.assert(
      // the fast path is for the course's three steps; the lifecycle's others always go to zod
      fc.property(fc.constantFrom(...COURSE_EVENTS), payload, (event, raw) => {
        const flat = parseFlatPublish(event, raw);
        const slow = parsePayload(publishSchemas[event], raw);
        if (flat === undefined) return;
        fast++;
        if (typeof raw === 'object' && raw !== null && 'seq' in raw) fastEnvelopes++;
        expect(slow).toStrictEqual({ ok: true, value: flat });
      }),
      { numRuns: 5_000 },
    );
    // the property means something only if the fast path was taken often, envelopes included
    expect(fast).toBeGreaterThan(500);
    expect(fastEnvelopes).toBeGreaterThan(200);
  });

  it('takes the shapes our clients send, and leaves the rest to zod', () => {
    expect(parseFlatPublish('pickup', { ...order })).toStrictEqual(normalized);
    expect(parseFlatPublish('delivered', { store: 'acme', orderId: 'o-1' })).toStrictEqual({ event: 'delivered', store: 'acme', orderId: 'o-1' });
    expect(parseFlatPublish('pickup', { store: 'acme', orderId: 'o-1' })).toBeUndefined();
    // a lab driver's re-emitted message takes the fast path too
    expect(parseFlatPublish('in-transit', outbound('pickup'))).toStrictEqual({ ...normalized, event: 'in-transit', messageId: 'm-42' });
    expect(parseFlatPublish('pickup', { ...outbound('pickup'), extra: 1 })).toBeUndefined();
    expect(parsePublish('pickup', outbound('pickup'))).toStrictEqual({ ok: true, value: { ...normalized, messageId: 'm-42' } });
    expect(parsePublish('pickup', { store: 'acme', orderId: 'o-1' })).toMatchObject({ ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD', message: expect.stringContaining('customer: is required') } });
  });
});

/**
 * Hardening finding 6: C1 controls, bidi overrides and isolates, line separators and other format
 * characters were accepted in names and ids, where they forge what a name reads as (or, in a log,
 * drive the terminal). Free text (a customer, an address) refuses the controls, bidi controls and
 * separators, and keeps every ordinary letter.
 */
describe('characters that are obeyed rather than shown', () => {
  const controls: Array<[string, string]> = [
    ['ESC (C0)', '\u001b'],
    ['BEL (C0)', '\u0007'],
    ['CR (C0)', '\r'],
    ['DEL', '\u007f'],
    ['CSI (C1)', '\u009b'],
    ['NEL (C1)', '\u0085'],
  ];
  const bidi: Array<[string, string]> = [
    ['LRE', '\u202a'],
    ['RLE', '\u202b'],
    ['PDF', '\u202c'],
    ['LRO', '\u202d'],
    ['RLO', '\u202e'],
    ['LRI', '\u2066'],
    ['RLI', '\u2067'],
    ['FSI', '\u2068'],
    ['PDI', '\u2069'],
    ['LRM', '\u200e'],
    ['RLM', '\u200f'],
    ['ALM', '\u061c'],
  ];
  const separators: Array<[string, string]> = [
    ['LINE SEPARATOR', '\u2028'],
    ['PARAGRAPH SEPARATOR', '\u2029'],
  ];
  /** Format characters that are not bidi controls: refused in names, part of writing in free text. */
  const format: Array<[string, string]> = [
    ['ZERO WIDTH SPACE', '\u200b'],
    ['ZERO WIDTH JOINER', '\u200d'],
    ['ZERO WIDTH NON-JOINER', '\u200c'],
    ['SOFT HYPHEN', '\u00ad'],
    ['WORD JOINER', '\u2060'],
    ['BYTE ORDER MARK inside', '\ufeff'],
    ['TAG LATIN CAPITAL LETTER A', '\u{e0041}'],
  ];
  const refusedInNames = [...controls, ...bidi, ...separators, ...format];
  const refusedInText = [...controls, ...bidi, ...separators];
  const ordinary = ['Zoë Ångström', '東京都', 'محمد الأحمد', 'Łódź', 'Ελλάδα', 'José-María O\'Neil', '🚚 Express'];
  /** Free text as people write it, with format characters that are part of the writing. */
  const written = ['می\u200cخواهم', 'Ada 👩\u200d💻', 'Donau\u00addampf\u00adschiff', 'Glasgow 🏴\u{e0067}\u{e0062}\u{e0073}\u{e0063}\u{e0074}\u{e007f}'];

  /** Refused by zod with finding 6's message at `path`, never taken by the fast path, refused by parsePublish. */
  function refusedEverywhere(event: ParcelEvent, raw: Record<string, unknown>, path: string): void {
    expect(refuse(publishSchemas[event], raw).message).toMatch(new RegExp(`^${path.replace('.', '\\.')}: must not contain control characters`));
    expect(parseFlatPublish(event, raw)).toBeUndefined();
    expect(parsePublish(event, raw)).toMatchObject({ ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD' } });
  }

  describe.each(refusedInNames)('%s', (_what, char) => {
    const bad = `ac${char}me`;

    it.each(['store', 'orderId', 'messageId', 'clientId', 'queueId', 'driver'])('is refused in a pickup\'s %s', (key) => {
      refusedEverywhere('pickup', { ...order, [key]: bad }, key);
    });

    it.each(['store', 'orderId'])('is refused in order.%s of a later step, and in a message re-emitted with it', (key) => {
      refusedEverywhere('delivered', { event: 'delivered', clientId: 'driver', order: { store: 'acme', orderId: 'o-1', [key]: bad } }, `order.${key}`);
      refusedEverywhere('in-transit', { ...outbound('pickup'), [key]: bad, order: { ...order, [key]: bad } }, key);
    });

    it('is refused in a join, a received, a getAll and a handshake name', () => {
      refuse(roomSchema, bad);
      refuse(roomSchema, { store: bad });
      refuse(receivedSchema, { clientId: 'driver', messageId: bad });
      refuse(receivedSchema, { queueId: bad, messageId: 'm-1' });
      refuse(getAllSchema, bad);
      refuse(getAllSchema, { clientId: bad });
      expect(handshakeSchema.safeParse({ role: 'vendor', store: bad }).success).toBe(false);
      expect(handshakeSchema.safeParse({ role: 'driver', name: bad }).success).toBe(false);
    });

    it('is refused in lab mode: a loose payload, once read, and a loose received', () => {
      const { value } = normalizeLabPayload({ StoreName: bad, orderID: 'o-1', Customer: 'Ada', ADDRESS: '1 Lane' });
      expect(parsePublish('pickup', value)).toMatchObject({ ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD' } });
      const loose = normalizeLabPayload({ payload: { vendor: 'acme', id: bad, customer: 'Ada', address: '1 Lane' } }).value;
      expect(parsePublish('pickup', loose)).toMatchObject({ ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD' } });
      expect(parseLabReceived({ clientId: 'driver', orderId: bad })).toBeUndefined();
      expect(parseLabReceived(bad)).toBeUndefined();
      expect(parseLabReceived({ queueId: bad, messageId: 'm-1' })).toStrictEqual({ messageId: 'm-1' });
    });
  });

  describe.each(refusedInText)('%s', (_what, char) => {
    it.each(['customer', 'address'])('is refused in a %s', (key) => {
      refusedEverywhere('pickup', { ...order, [key]: `Ada${char}Lovelace` }, key);
      refusedEverywhere('pickup', { event: 'pickup', clientId: 'acme', order: { ...order, [key]: `Ada${char}Lovelace` } }, `order.${key}`);
    });
  });

  it('keeps ordinary Unicode in names, ids and free text, by zod and by the fast path alike', () => {
    for (const text of ordinary) {
      const raw = { store: text, orderId: `${text}-1`, customer: text, address: text };
      const expected: PublishInput = { event: 'pickup', ...raw };
      expect(accept(publishSchemas.pickup, raw)).toStrictEqual(expected);
      expect(parseFlatPublish('pickup', raw)).toStrictEqual(expected);
      expect(accept(roomSchema, text)).toBe(text);
      expect(handshakeSchema.safeParse({ role: 'driver', name: text }).success).toBe(true);
    }
  });

  it('keeps the format characters that are part of writing in free text (ZWNJ in Persian, ZWJ in emoji, soft hyphens, flag tags)', () => {
    for (const text of written) {
      const raw = { ...order, customer: text, address: text };
      expect(accept(publishSchemas.pickup, raw)).toStrictEqual({ event: 'pickup', ...raw });
      expect(parseFlatPublish('pickup', raw)).toStrictEqual({ event: 'pickup', ...raw });
    }
  });
});
