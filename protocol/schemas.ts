import { z } from 'zod';
import type { CapsErrorBody } from './errors.js';
import type { FailureReason, ParcelEvent } from './lifecycle.js';
import { COURSE_EVENTS, FAILURE_REASONS, MAX_ATTEMPTS_LIMIT, PARCEL_EVENTS } from './lifecycle.js';

export { COURSE_EVENTS, PARCEL_EVENTS };
export type { ParcelEvent };

/**
 * Zod schemas of every inbound payload. The hub parses at the boundary and works with the
 * outputs only; the clients use the inferred types to build what they send.
 *
 * The course's clients send parcels in two shapes, and both are accepted:
 *   flat     { store, orderId, customer, address }
 *   wrapped  { event, messageId, clientId | queueId, order: { store, orderId, customer, address } }
 * and a lab driver re-emits the message it received, which carries both at once.
 */

export const LIMITS = {
  name: 100,
  orderId: 100,
  customer: 200,
  address: 500,
  messageId: 100,
  time: 64,
  note: 500,
  /** A proof of delivery is a reference (an https URL or a content hash), never the blob itself. */
  proofRef: 2_048,
} as const;

/**
 * What a string is for, which decides the characters it may hold: a `name` (a store, a driver, a
 * client, a queue, an order or message id) is matched and shown as an identity, `free` text (a
 * customer, an address) is what a person wrote.
 */
export type TextKind = 'name' | 'free';

/**
 * Characters a string may not hold, by kind (hardening finding 6). Controls, C0 and C1 with DEL:
 * NUL could forge storage keys, ESC and U+009B (CSI) drive a terminal, CR, LF and U+0085 end a
 * line. Bidi controls (overrides, embeddings, isolates, marks): they reorder what follows, so a
 * name reads as another. Line and paragraph separators (U+2028, U+2029). A name refuses every
 * other format character too (zero-width ones make names that look alike and differ); free text
 * keeps them, as they are part of writing: ZWNJ in Persian, ZWJ in emoji, soft hyphens, flag tags.
 * Neither keeps an unpaired surrogate (a text cut in the middle of an emoji): it is not Unicode,
 * and JSON decoders elsewhere (Redis's cjson) refuse it.
 */
const REFUSED: Readonly<Record<TextKind, { chars: RegExp; message: string }>> = {
  name: {
    chars: /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/u,
    message: 'must not contain control characters, format characters (bidi controls, zero-width characters), line separators or half a character (an unpaired surrogate)',
  },
  free: {
    chars: /[\p{Cc}\p{Bidi_Control}\p{Zl}\p{Zp}\p{Cs}]/u,
    message: 'must not contain control characters, bidi controls, line separators or half a character (an unpaired surrogate)',
  },
};

const text = (max: number, kind: TextKind = 'name') =>
  z
    .string()
    .trim()
    .min(1, 'must not be empty')
    .max(max, `must be at most ${max} characters`)
    .refine((value) => !REFUSED[kind].chars.test(value), REFUSED[kind].message);

/** A store (and room) name, a driver name or a client id. */
export const nameSchema = text(LIMITS.name);

/**
 * A store's name. Ids starting with "driver" mean the driver pool (the course's drivers call
 * themselves driver, DRIVER, driver-client), so no store may be named that way.
 */
export const storeNameSchema = nameSchema.refine((value) => !/^driver/i.test(value), 'must not start with "driver" (those names mean the driver pool)');

/** A complete order, as a vendor hands it over. */
export const orderSchema = z.strictObject({
  store: storeNameSchema,
  orderId: text(LIMITS.orderId),
  customer: text(LIMITS.customer, 'free'),
  address: text(LIMITS.address, 'free'),
});
export type Order = z.infer<typeof orderSchema>;

/** A parcel reference: enough to name it; customer and address may come along. */
const orderRefSchema = z.strictObject({
  store: storeNameSchema,
  orderId: text(LIMITS.orderId),
  customer: text(LIMITS.customer, 'free').optional(),
  address: text(LIMITS.address, 'free').optional(),
});

/**
 * Fields a publisher may send beside the order: the lab's wrapper, or a re-emitted message.
 * `event` is informational: a lab driver re-emits the pickup it received (event: 'pickup') as
 * in-transit and delivered, so the event name on the wire decides, never this field.
 */
const envelopeShape = {
  event: z.enum(PARCEL_EVENTS).optional(),
  messageId: text(LIMITS.messageId).optional(),
  seq: z.number().int().nonnegative().optional(),
  clientId: nameSchema.optional(),
  queueId: nameSchema.optional(),
  time: z.string().max(LIMITS.time).optional(),
  driver: nameSchema.optional(),
};

/**
 * A proof of delivery or of an attempt (a signature, a photo): where it is kept, never the blob,
 * which has no place in a queue. An `https:` URL, or `sha256:` and the content's hash in hex.
 */
export const proofRefSchema = z
  .string()
  .trim()
  .max(LIMITS.proofRef, `must be at most ${LIMITS.proofRef} characters`)
  .refine((value) => /^sha256:[0-9a-f]{64}$/.test(value) || isHttpsUrl(value), 'must be an https: URL or sha256:<64 hex digits> (a reference, never the image itself)');

function isHttpsUrl(value: string): boolean {
  try {
    return new URL(value).protocol === 'https:' && !/\s/.test(value);
  } catch {
    return false;
  }
}

/** Where something happened (WGS 84 degrees). */
export const pointSchema = z.strictObject({ lat: z.number().min(-90).max(90), lng: z.number().min(-180).max(180) });

/**
 * What a step may tell beside the parcel it names (issue 17): why an attempt failed, the proof of
 * a delivery, where it happened, when the driver expects to arrive. Which fields a step may carry
 * is STEP_DETAILS; a `failed` step must give its reason.
 */
const detailsShape = {
  reason: z.enum(FAILURE_REASONS).optional(),
  note: text(LIMITS.note, 'free').optional(),
  recipient: text(LIMITS.customer, 'free').optional(),
  signature: proofRefSchema.optional(),
  photo: proofRefSchema.optional(),
  location: pointSchema.optional(),
  eta: z.iso.datetime({ offset: true }).optional(),
  /** The attempt the step belongs to, as the pickup message said; absent: the current one. */
  attempt: z.number().int().min(1).max(MAX_ATTEMPTS_LIMIT).optional(),
};
export type DetailKey = Exclude<keyof typeof detailsShape, 'attempt'>;

/** What each step may carry. */
export const STEP_DETAILS: Readonly<Record<ParcelEvent, readonly DetailKey[]>> = {
  pickup: [],
  'in-transit': ['eta', 'note', 'location'],
  delivered: ['recipient', 'signature', 'photo', 'note', 'location'],
  failed: ['reason', 'note', 'photo', 'location'],
  returned: ['note', 'location'],
  cancelled: ['note'],
};

/** A step's details, as recorded in the parcel's timeline and sent with its message. */
export interface StepDetails {
  reason?: FailureReason;
  note?: string;
  recipient?: string;
  signature?: string;
  photo?: string;
  location?: { lat: number; lng: number };
  eta?: string;
}
export const DETAIL_KEYS: readonly DetailKey[] = ['reason', 'note', 'recipient', 'signature', 'photo', 'location', 'eta'];

const publishShapeSchema = z.strictObject({
  store: storeNameSchema.optional(),
  orderId: text(LIMITS.orderId).optional(),
  customer: text(LIMITS.customer, 'free').optional(),
  address: text(LIMITS.address, 'free').optional(),
  order: orderRefSchema.optional(),
  ...envelopeShape,
  ...detailsShape,
});

/** What the hub works with once a publish has been parsed, whatever shape it came in. */
export interface PublishInput {
  event: ParcelEvent;
  store: string;
  orderId: string;
  customer?: string;
  address?: string;
  /** The publisher's own message id, when it sent one (lab wrapped form). */
  messageId?: string;
  /** The attempt the step names (a driver's client repeats the one its pickup said). */
  attempt?: number;
  /** What the step tells beside the parcel: only the fields STEP_DETAILS allows it. */
  details?: StepDetails;
}

/** The payload a client may emit for a parcel step. */
export type PublishPayload = z.input<typeof publishShapeSchema>;

/** Builds the schema for one parcel event: pickup needs the whole order, later steps a reference. */
function publishSchema(event: ParcelEvent) {
  return publishShapeSchema
    .superRefine((p, ctx) => {
      const top = { store: p.store, orderId: p.orderId, customer: p.customer, address: p.address };
      const merged = p.order ? { ...top, ...p.order } : top;
      if (p.order) {
        for (const key of ['store', 'orderId'] as const) {
          if (top[key] !== undefined && top[key] !== p.order[key]) {
            ctx.addIssue({ code: 'custom', path: [key], message: `disagrees with order.${key}` });
          }
        }
      }
      const required = event === 'pickup' ? (['store', 'orderId', 'customer', 'address'] as const) : (['store', 'orderId'] as const);
      for (const key of required) {
        if (merged[key] === undefined) {
          ctx.addIssue({ code: 'custom', path: [key], message: 'is required' });
        }
      }
      const allowed = STEP_DETAILS[event];
      for (const key of DETAIL_KEYS) {
        if (p[key] !== undefined && !allowed.includes(key)) {
          ctx.addIssue({ code: 'custom', path: [key], message: allowed.length > 0 ? `is not part of ${event} (it may carry ${allowed.join(', ')})` : `is not part of ${event}` });
        }
      }
      if (event === 'failed' && p.reason === undefined) ctx.addIssue({ code: 'custom', path: ['reason'], message: `is required: one of ${FAILURE_REASONS.join(', ')}` });
      if (event === 'pickup' && p.attempt !== undefined) ctx.addIssue({ code: 'custom', path: ['attempt'], message: 'is not part of pickup (the hub counts attempts)' });
    })
    .transform((p): PublishInput => {
      const src = p.order ?? p;
      const out: PublishInput = { event, store: src.store ?? '', orderId: src.orderId ?? '' };
      const customer = src.customer ?? p.customer;
      const address = src.address ?? p.address;
      if (customer !== undefined) out.customer = customer;
      if (address !== undefined) out.address = address;
      if (p.messageId !== undefined) out.messageId = p.messageId;
      if (p.attempt !== undefined) out.attempt = p.attempt;
      let details: StepDetails | undefined;
      for (const key of DETAIL_KEYS) {
        if (p[key] === undefined) continue;
        details ??= {};
        (details as Record<DetailKey, unknown>)[key] = p[key];
      }
      if (details) out.details = details;
      return out;
    });
}

export const publishSchemas: Readonly<Record<ParcelEvent, ReturnType<typeof publishSchema>>> = Object.fromEntries(PARCEL_EVENTS.map((event) => [event, publishSchema(event)])) as Record<ParcelEvent, ReturnType<typeof publishSchema>>;

/** Keys of the flat shape, the one our own clients and most lab clients send. */
const FLAT_KEYS = new Set(['store', 'orderId', 'customer', 'address']);
/** Keys a lab driver's re-emitted message carries besides the flat ones (see envelopeShape). */
const ENVELOPE_KEYS = new Set(['event', 'messageId', 'seq', 'clientId', 'queueId', 'time', 'driver', 'order']);
const ORDER_FIELDS = ['store', 'orderId', 'customer', 'address'] as const;
/** Each order field's limit and kind, as orderSchema has them. */
const ORDER_FIELD_RULES: Readonly<Record<(typeof ORDER_FIELDS)[number], readonly [number, TextKind]>> = {
  store: [LIMITS.name, 'name'],
  orderId: [LIMITS.orderId, 'name'],
  customer: [LIMITS.customer, 'free'],
  address: [LIMITS.address, 'free'],
};
const DRIVER_PREFIX = /^driver/i;
/** The fields a later step may leave out, and their limits (one array, not one per publish). */
const OPTIONAL_FIELDS = [['customer', LIMITS.customer], ['address', LIMITS.address]] as const;

/** `value` trimmed when it is a string `text(max, kind)` accepts; undefined otherwise. */
export function plainText(value: unknown, max: number, kind: TextKind = 'name'): string | undefined {
  if (typeof value !== 'string') return undefined;
  const trimmed = value.trim();
  return trimmed.length >= 1 && trimmed.length <= max && !REFUSED[kind].chars.test(trimmed) ? trimmed : undefined;
}

function isPlain(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === Object.prototype;
}

/**
 * What `publishSchemas[event]` makes of a payload it accepts, worked out without zod (a third of
 * the cost of a publish under load), for the two shapes that come by the thousand: the flat
 * `{ store, orderId, customer?, address? }`, and a message exactly as the hub sent it, which a lab
 * driver re-emits as its steps. Undefined for any other payload, which then goes to zod, so that
 * every refusal keeps zod's message. tests/schemas.test.ts checks that it never accepts what zod
 * refuses, and agrees on the output.
 */
export function parseFlatPublish(event: ParcelEvent, raw: unknown): PublishInput | undefined {
  // the lifecycle's other steps are rare, and carry details: zod's
  if (!isPlain(raw) || !(COURSE_EVENTS as readonly string[]).includes(event)) return undefined;
  const fields = raw;
  let envelope = false;
  let attempt = false;
  for (const key of Object.keys(fields)) {
    if (FLAT_KEYS.has(key)) continue;
    // the attempt our driver names on each of its steps: cheap to read here
    if (key === 'attempt') {
      attempt = true;
      continue;
    }
    if (!ENVELOPE_KEYS.has(key)) return undefined;
    envelope = true;
  }
  if (envelope) return attempt ? undefined : parseEnvelope(event, fields);
  const store = plainText(fields['store'], LIMITS.name);
  const orderId = plainText(fields['orderId'], LIMITS.orderId);
  if (store === undefined || orderId === undefined || DRIVER_PREFIX.test(store)) return undefined;
  const out: PublishInput = { event, store, orderId };
  for (const [key, max] of OPTIONAL_FIELDS) {
    if (fields[key] === undefined) {
      // a pickup needs the whole order; a key present with the value undefined is zod's to judge
      if (event === 'pickup' || key in fields) return undefined;
      continue;
    }
    const value = plainText(fields[key], max, 'free');
    if (value === undefined) return undefined;
    out[key] = value;
  }
  if (attempt) {
    const n = fields['attempt'];
    if (event === 'pickup' || typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > MAX_ATTEMPTS_LIMIT) return undefined;
    out.attempt = n;
  }
  return out;
}

/** The flat fields of `fields` (top level, or an `order`): each absent, or valid and trimmed. */
function orderFields(fields: Record<string, unknown>): Partial<Record<(typeof ORDER_FIELDS)[number], string>> | undefined {
  const out: Partial<Record<(typeof ORDER_FIELDS)[number], string>> = {};
  for (const key of ORDER_FIELDS) {
    const value = fields[key];
    if (value === undefined) {
      if (key in fields) return undefined;
      continue;
    }
    const [max, kind] = ORDER_FIELD_RULES[key];
    const text = plainText(value, max, kind);
    if (text === undefined) return undefined;
    out[key] = text;
  }
  if (out.store !== undefined && DRIVER_PREFIX.test(out.store)) return undefined;
  return out;
}

/** parseFlatPublish for a payload with envelope keys: each checked as envelopeShape would. */
function parseEnvelope(event: ParcelEvent, fields: Record<string, unknown>): PublishInput | undefined {
  for (const key of ENVELOPE_KEYS) {
    if (!(key in fields)) continue;
    const value = fields[key];
    switch (key) {
      case 'event':
        if (!(PARCEL_EVENTS as readonly unknown[]).includes(value)) return undefined;
        break;
      case 'seq':
        if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) return undefined;
        break;
      case 'time':
        if (typeof value !== 'string' || value.length > LIMITS.time) return undefined;
        break;
      case 'messageId':
        if (plainText(value, LIMITS.messageId) === undefined) return undefined;
        break;
      case 'order':
        break;
      default:
        if (plainText(value, LIMITS.name) === undefined) return undefined;
    }
  }
  const top = orderFields(fields);
  if (!top) return undefined;
  let merged = top;
  if ('order' in fields) {
    const order = fields['order'];
    if (!isPlain(order) || Object.keys(order).some((key) => !FLAT_KEYS.has(key))) return undefined;
    const inner = orderFields(order);
    // an order reference needs its store and orderId; the top level, when it names them, must agree
    if (!inner || inner.store === undefined || inner.orderId === undefined) return undefined;
    if ((top.store !== undefined && top.store !== inner.store) || (top.orderId !== undefined && top.orderId !== inner.orderId)) return undefined;
    merged = { store: inner.store, orderId: inner.orderId, customer: inner.customer ?? top.customer, address: inner.address ?? top.address };
  }
  const { store, orderId, customer, address } = merged;
  if (store === undefined || orderId === undefined) return undefined;
  if (event === 'pickup' && (customer === undefined || address === undefined)) return undefined;
  const out: PublishInput = { event, store, orderId };
  if (customer !== undefined) out.customer = customer;
  if (address !== undefined) out.address = address;
  const messageId = plainText(fields['messageId'], LIMITS.messageId);
  if (messageId !== undefined) out.messageId = messageId;
  return out;
}

/** Parses a publish: the flat shape without zod when it is valid, everything else with zod. */
export function parsePublish(event: ParcelEvent, raw: unknown): { ok: true; value: PublishInput } | { ok: false; error: CapsErrorBody } {
  const flat = parseFlatPublish(event, raw);
  return flat ? { ok: true, value: flat } : parsePayload(publishSchemas[event], raw);
}

/** `join` and `leave`: a name, or an object naming the client, queue or store. */
const namedObjectSchema = z
  .strictObject({
    clientId: nameSchema.optional(),
    queueId: nameSchema.optional(),
    store: nameSchema.optional(),
  })
  .transform((o) => o.clientId ?? o.queueId ?? o.store);

export const roomSchema = z.union([nameSchema, namedObjectSchema]).transform((name, ctx) => {
  if (name === undefined) {
    ctx.addIssue({ code: 'custom', message: 'names no store or client: send a string or { clientId | queueId | store }' });
    return z.NEVER;
  }
  return name;
});
export type RoomPayload = z.input<typeof roomSchema>;

/** Parses a `join`/`leave` payload; one that names nothing gets `CAPS_ERR_MISSING_NAME`. */
export function parseRoom(raw: unknown): ReturnType<typeof parsePayload<typeof roomSchema>> {
  const namesNothing =
    raw === undefined ||
    raw === null ||
    (typeof raw === 'string' && raw.trim() === '') ||
    (typeof raw === 'object' && !Array.isArray(raw) && !['clientId', 'queueId', 'store'].some((key) => (raw as Record<string, unknown>)[key] !== undefined));
  if (namesNothing) {
    return { ok: false, error: { code: 'CAPS_ERR_MISSING_NAME', message: 'join and leave need a store name or { clientId | queueId | store }' } };
  }
  return parsePayload(roomSchema, raw);
}

/** `received`: the lab's way to take a message off its queue. */
export const receivedSchema = z
  .strictObject({
    clientId: nameSchema.optional(),
    queueId: nameSchema.optional(),
    messageId: text(LIMITS.messageId),
    event: z.enum(PARCEL_EVENTS).optional(),
  })
  .transform((r, ctx) => {
    const queue = r.queueId ?? r.clientId;
    if (queue === undefined) {
      ctx.addIssue({ code: 'custom', path: ['clientId'], message: 'clientId or queueId is required' });
      return z.NEVER;
    }
    return { queue, messageId: r.messageId, ...(r.event ? { event: r.event } : {}) };
  });
export type ReceivedPayload = z.input<typeof receivedSchema>;
export type ReceivedInput = z.output<typeof receivedSchema>;

/** `location`: a driver's position; finite numbers in range, nothing else. */
export const locationSchema = z.strictObject({
  lat: z.number().min(-90).max(90),
  lng: z.number().min(-180).max(180),
  heading: z.number().min(0).lt(360).optional(),
  speed: z.number().min(0).max(1_000).optional(),
});

/** `getAll`: have every queued message sent again. A bare string names the queue. */
export const getAllSchema = z
  .union([
    nameSchema.transform((queue) => ({ queueId: queue })),
    z.strictObject({
      clientId: nameSchema.optional(),
      queueId: nameSchema.optional(),
      event: z.enum(PARCEL_EVENTS).optional(),
    }),
  ])
  .transform((g, ctx) => {
    const queue = ('queueId' in g ? g.queueId : undefined) ?? ('clientId' in g ? g.clientId : undefined);
    if (queue === undefined) {
      ctx.addIssue({ code: 'custom', path: ['clientId'], message: 'clientId or queueId is required' });
      return z.NEVER;
    }
    const event = 'event' in g ? g.event : undefined;
    return { queue, ...(event ? { event } : {}) };
  });
export type GetAllPayload = z.input<typeof getAllSchema>;
export type GetAllInput = z.output<typeof getAllSchema>;

/** The identity a client may claim in the handshake (`auth`) in open lab mode. */
export const handshakeSchema = z.object({
  role: z.enum(['vendor', 'driver', 'dashboard']).optional(),
  store: nameSchema.optional(),
  name: nameSchema.optional(),
});
export type HandshakeAuth = z.input<typeof handshakeSchema>;

/** One short line naming what is wrong, for error acks and logs. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((issue) => {
      const where = issue.path.length > 0 ? issue.path.join('.') : 'payload';
      return `${where}: ${issue.message}`;
    })
    .join('; ');
}

/** Parses with a schema and turns a failure into a coded error body. */
export function parsePayload<S extends z.ZodType>(
  schema: S,
  raw: unknown,
): { ok: true; value: z.output<S> } | { ok: false; error: CapsErrorBody } {
  const parsed = schema.safeParse(raw);
  if (parsed.success) return { ok: true, value: parsed.data };
  return { ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD', message: describeIssues(parsed.error) } };
}
