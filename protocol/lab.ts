import { LIMITS, PARCEL_EVENTS, plainText } from './schemas.js';
import type { ParcelEvent } from './schemas.js';

/**
 * Lab mode's generous reading of what the course's clients send. Students write to the lab text
 * loosely (`PICKUP`, `In_Transit`, `get-all`, `storeName`, `orderID`, an order inside `payload`),
 * so an anonymous client's event names and payload keys are brought to the protocol's own before
 * the strict schemas see them. Clients with a token are never read this way.
 */

/** Events the hub answers, by their squashed name. */
const EVENTS: ReadonlyMap<string, string> = entries({
  join: 'join',
  leave: 'leave',
  pickup: 'pickup',
  intransit: 'in-transit',
  delivered: 'delivered',
  received: 'received',
  getall: 'getAll',
  // the lifecycle's other steps and a driver's position: never needed by the lab, read as generously
  failed: 'failed',
  returned: 'returned',
  cancelled: 'cancelled',
  canceled: 'cancelled',
  location: 'location',
});

/** Events course clients send that mean nothing to this hub: accepted and ignored. */
export const LAB_NO_OPS: readonly string[] = ['subscribe', 'unsubscribe', 'ready', 'hello', 'register', 'connected', 'identify'];
const NO_OPS = new Set(LAB_NO_OPS);

/** A lookup table as a Map: a client's key such as `__proto__` or `constructor` must find nothing. */
function entries(table: Record<string, string>): ReadonlyMap<string, string> {
  return new Map(Object.entries(table));
}

/** Lower case, without `-`, `_` and white space: `In_Transit` and `in-transit` are `intransit`. */
export function squash(name: string): string {
  return name.toLowerCase().replace(/[-_\s]/g, '');
}

/** What a lab client's event name means: one of the protocol's events, a harmless no-op, or nothing. */
export type LabEventName = { kind: 'event'; event: string } | { kind: 'no-op'; name: string } | { kind: 'unknown' };

export function labEventName(name: unknown): LabEventName {
  if (typeof name !== 'string' || name.length > 100) return { kind: 'unknown' };
  const squashed = squash(name);
  const event = EVENTS.get(squashed);
  if (event !== undefined) return { kind: 'event', event };
  return NO_OPS.has(squashed) ? { kind: 'no-op', name: squashed } : { kind: 'unknown' };
}

/** A parcel event named loosely (`PICKUP`, `In_Transit`), or undefined. */
export function labParcelEvent(value: unknown): ParcelEvent | undefined {
  if (typeof value !== 'string') return undefined;
  const event = EVENTS.get(squash(value));
  return (PARCEL_EVENTS as readonly string[]).includes(event ?? '') ? (event as ParcelEvent) : undefined;
}

/** Payload keys, by their squashed name: the protocol's own and the lab's synonyms. */
const KEYS: ReadonlyMap<string, string> = entries({
  store: 'store',
  storename: 'store',
  vendor: 'store',
  vendorid: 'store',
  storeid: 'store',
  orderid: 'orderId',
  id: 'orderId',
  customer: 'customer',
  customername: 'customer',
  address: 'address',
  clientid: 'clientId',
  queueid: 'queueId',
  messageid: 'messageId',
  event: 'event',
  seq: 'seq',
  time: 'time',
  driver: 'driver',
  order: 'order',
  payload: 'payload',
  // a step's attempt and details (protocol/lifecycle.ts), and a position
  attempt: 'attempt',
  reason: 'reason',
  note: 'note',
  recipient: 'recipient',
  signature: 'signature',
  photo: 'photo',
  location: 'location',
  eta: 'eta',
  lat: 'lat',
  lng: 'lng',
  heading: 'heading',
  speed: 'speed',
});

/** The protocol's own keys, as they are spelt. */
const CANONICAL_KEYS = new Set(KEYS.values());
/** Keys an order may carry (inside `order`). */
const ORDER_KEYS = new Set(['store', 'orderId', 'customer', 'address']);
/** Keys that hold a name or an id: a number there is read as its decimal text. */
const ID_KEYS = new Set(['store', 'orderId', 'clientId', 'queueId', 'messageId']);

/** A payload in the protocol's own keys, and the keys that meant nothing (to say so once). */
export interface LabPayload {
  value: unknown;
  ignored: string[];
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && Object.getPrototypeOf(value) === Object.prototype;
}

/** True when every key is already the protocol's own: the common case costs one walk, no copy. */
function alreadyCanonical(raw: Record<string, unknown>): boolean {
  for (const key in raw) {
    if (!CANONICAL_KEYS.has(key) || key === 'payload') return false;
    const value = raw[key];
    if (key === 'event' && value !== undefined && labParcelEvent(value) !== value) return false;
    if (key === 'order' && isPlainObject(value) && !alreadyCanonicalOrder(value)) return false;
    if (ID_KEYS.has(key) && typeof value === 'number') return false;
  }
  return true;
}

function alreadyCanonicalOrder(order: Record<string, unknown>): boolean {
  for (const key in order) if (!ORDER_KEYS.has(key) || (ID_KEYS.has(key) && typeof order[key] === 'number')) return false;
  return true;
}

/**
 * Brings a lab client's payload to the protocol's keys: synonyms and case (`storeName`, `ORDERID`,
 * `Queue_Id`), an order or a whole message inside `payload` (its fields fill what the top level
 * lacks), `event` values written loosely (`PICKUP`; anything else, such as `received`, is dropped:
 * the event name on the wire decides), numbers where ids go. Unknown keys are dropped and listed.
 * Anything that is not a plain object is returned as it came.
 */
export function normalizeLabPayload(raw: unknown): LabPayload {
  if (!isPlainObject(raw) || alreadyCanonical(raw)) return { value: raw, ignored: [] };
  const ignored: string[] = [];
  const out = canonicalKeys(raw, ignored, '');
  const inner = out['payload'];
  delete out['payload'];
  if (isPlainObject(inner)) {
    const nested = canonicalKeys(inner, ignored, 'payload.');
    delete nested['payload'];
    for (const key in nested) if (out[key] === undefined) out[key] = nested[key];
  } else if (inner !== undefined) {
    ignored.push('payload');
  }
  return { value: out, ignored };
}

function canonicalKeys(raw: Record<string, unknown>, ignored: string[], prefix: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key in raw) {
    const canonical = KEYS.get(squash(key));
    let value = raw[key];
    if (canonical === undefined || value === undefined) {
      if (canonical === undefined) ignored.push(prefix + key);
      continue;
    }
    // the first spelling of a field wins: { store, storeName } keeps store
    if (out[canonical] !== undefined) continue;
    if (canonical === 'event') {
      value = labParcelEvent(value);
      if (value === undefined) continue;
    } else if (canonical === 'order' && isPlainObject(value)) {
      value = canonicalOrder(value, ignored, `${prefix}${key}.`);
    } else if (ID_KEYS.has(canonical) && typeof value === 'number' && Number.isFinite(value)) {
      value = String(value);
    }
    out[canonical] = value;
  }
  return out;
}

function canonicalOrder(raw: Record<string, unknown>, ignored: string[], prefix: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key in raw) {
    const canonical = KEYS.get(squash(key));
    let value = raw[key];
    if (canonical === undefined || !ORDER_KEYS.has(canonical)) {
      ignored.push(prefix + key);
      continue;
    }
    if (value === undefined || out[canonical] !== undefined) continue;
    if (ID_KEYS.has(canonical) && typeof value === 'number' && Number.isFinite(value)) value = String(value);
    out[canonical] = value;
  }
  return out;
}

/** What a lab `received` names, once read: a queue, a message, a parcel, an event, any of them. */
export interface LabReceived {
  /** `clientId` / `queueId` as sent (a store, or a driver id such as `DRIVER`). */
  queue?: string;
  /** The hub's messageId, or (the course's reference hub) the orderId. */
  messageId?: string;
  orderId?: string;
  store?: string;
  event?: ParcelEvent;
}

/**
 * Reads a lab `received` in any shape the course uses: `{ clientId | queueId, messageId, event? }`,
 * `{ store, orderId, event? }`, the hub's own message echoed back, any of those inside `payload`,
 * or a bare messageId. Undefined when it names no message at all.
 */
export function parseLabReceived(raw: unknown): LabReceived | undefined {
  const source = typeof raw === 'string' || typeof raw === 'number' ? { messageId: String(raw) } : normalizeLabPayload(raw).value;
  if (!isPlainObject(source)) return undefined;
  const order = isPlainObject(source['order']) ? source['order'] : {};
  const out: LabReceived = {};
  const queue = plainText(source['queueId'], LIMITS.name) ?? plainText(source['clientId'], LIMITS.name);
  const messageId = plainText(source['messageId'], LIMITS.messageId);
  const orderId = plainText(source['orderId'], LIMITS.orderId) ?? plainText(order['orderId'], LIMITS.orderId);
  const store = plainText(source['store'], LIMITS.name) ?? plainText(order['store'], LIMITS.name);
  const event = labParcelEvent(source['event']);
  if (queue !== undefined) out.queue = queue;
  if (messageId !== undefined) out.messageId = messageId;
  if (orderId !== undefined) out.orderId = orderId;
  if (store !== undefined) out.store = store;
  if (event !== undefined) out.event = event;
  return messageId === undefined && orderId === undefined ? undefined : out;
}

/** The shapes lab mode accepts, by event: said once per socket when something is refused. */
export const LAB_ACCEPTED_SHAPES: Readonly<Record<string, string>> = {
  join: 'a store name, a driver id ("driver"), or { clientId | queueId | store }',
  leave: 'a store name, a driver id ("driver"), or { clientId | queueId | store }',
  pickup: '{ store, orderId, customer, address } flat, or inside order / payload (storeName, vendor, orderID, id are read too)',
  'in-transit': '{ store, orderId } flat or inside order / payload, or the pickup message as it was received',
  delivered: '{ store, orderId } flat or inside order / payload, or the pickup message as it was received',
  received: '{ clientId | queueId | store, messageId | orderId, event? }, a bare messageId, or the message as it was received',
  getAll: 'a queue name, or { clientId | queueId, event? }',
  unknown: 'events: join, leave, pickup, in-transit, delivered, received, getAll (any case; -, _ and spaces ignored)',
};
