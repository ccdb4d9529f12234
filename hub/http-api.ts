import type { NextFunction, Request, Response } from 'express';
import { Router } from 'express';
import { z } from 'zod';
import { CapsError } from '../protocol/errors.js';
import type { CapsErrorCode } from '../protocol/errors.js';
import { fail, ok } from '../protocol/result.js';
import { PARCEL_EVENTS, nameSchema } from '../protocol/schemas.js';
import { DEFAULT_MAX_ATTEMPTS, attemptOf } from '../protocol/lifecycle.js';
import type { TokenSubject } from '../protocol/token.js';
import { subjectOf } from '../protocol/token.js';
import type { Delivery } from './delivery.js';
import type { Keyring } from './keyring.js';
import type { Metrics } from './metrics.js';
import type { ParcelCursor, ParcelRecord, Storage } from './storage/storage.js';
import { DRIVER_QUEUE } from '../protocol/messages.js';

export interface ApiOptions {
  storage: Storage;
  delivery: Delivery;
  metrics: Metrics;
  /** The token keys and revocations; undefined: a hub with no secret (lab mode only). */
  keyring: Keyring | undefined;
  allowAnonymous: boolean;
  /** A store's maximum of delivery attempts (hub options maxAttempts, storeMaxAttempts); absent: the default. */
  maxAttempts?: (store: string) => number;
}

/** Who is asking: a verified token's subject, or `anonymous` in open lab mode. */
type Caller = TokenSubject | { role: 'anonymous' };

const listQuery = z.strictObject({
  status: z.enum(PARCEL_EVENTS).optional(),
  limit: z.coerce.number().int().min(1).max(100).default(20),
  cursor: z.string().max(500).optional(),
});

/**
 * The tracking API: JSON, `Authorization: Bearer <token>`, scoped like the socket roles. Answers
 * `{ ok: true, data }` or `{ ok: false, error: { code, message } }` with the code's HTTP status.
 */
export function trackingApi(options: ApiOptions): Router {
  const { storage, delivery } = options;
  const api = Router();

  api.use((req, res, next) => {
    try {
      const caller = callerOf(req, options);
      // a tracking link opens its own page (/track/<token>) and nothing of the API
      if (caller.role === 'tracker') throw new CapsError('CAPS_ERR_FORBIDDEN', "a tracking link's token opens its tracking page only");
      res.locals['caller'] = caller;
      next();
    } catch (err) {
      next(err);
    }
  });

  api.get('/packages/:orderId', async (req, res) => {
    const caller = res.locals['caller'] as Caller;
    const orderId = parseName(req.params['orderId'], 'orderId');
    const only = req.query['store'] === undefined ? undefined : parseName(req.query['store'], 'store');
    // two stores may use the same orderId: ?store= says which one
    const visible = (await storage.findParcels(orderId)).filter((p) => mayRead(caller, p) && (only === undefined || p.order.store === only));
    const [parcel] = visible;
    // another store's parcel is "not found", so that existence does not leak across stores
    if (!parcel) throw new CapsError('CAPS_ERR_NOT_FOUND', `no parcel ${orderId}`);
    res.json(ok(timeline(parcel)));
  });

  api.get('/stores', async (_req, res) => {
    const caller = res.locals['caller'] as Caller;
    const scope = storeScope(caller);
    if (caller.role === 'driver') throw new CapsError('CAPS_ERR_FORBIDDEN', 'drivers do not list stores');
    const stores = (await storage.stores()).filter((s) => scope === undefined || s.store === scope);
    // "attempt 2 of 3" on a dashboard: the maximum the next failure of a parcel there is judged by
    const maxAttempts = options.maxAttempts ?? (() => DEFAULT_MAX_ATTEMPTS);
    res.json(ok({ stores: stores.map((s) => ({ ...s, maxAttempts: maxAttempts(s.store) })) }));
  });

  api.get('/stores/:store/packages', async (req, res) => {
    const caller = res.locals['caller'] as Caller;
    const name = parseName(req.params['store'], 'store');
    const scope = storeScope(caller);
    if (caller.role === 'driver' || (scope !== undefined && scope !== name)) {
      throw new CapsError('CAPS_ERR_FORBIDDEN', `this token may not read the parcels of ${name}`);
    }
    const query = listQuery.safeParse(req.query);
    if (!query.success) throw new CapsError('CAPS_ERR_INVALID_QUERY', query.error.issues.map((i) => `${i.path.join('.') || 'query'}: ${i.message}`).join('; '));
    const after = query.data.cursor !== undefined ? decodeCursor(query.data.cursor) : undefined;
    const page = await storage.listParcels(name, { limit: query.data.limit, ...(query.data.status ? { status: query.data.status } : {}), ...(after ? { after } : {}) });
    res.json(ok({ store: name, packages: page.parcels.map(timeline), next: page.next ? encodeCursor(page.next) : null }));
  });

  api.get('/queues', (_req, res) => {
    const caller = res.locals['caller'] as Caller;
    const queues = delivery.queueStats().filter((q) => mayReadQueue(caller, q.queue));
    res.json(ok({ queues }));
  });

  api.get('/drivers', (_req, res) => {
    const caller = res.locals['caller'] as Caller;
    const scope = storeScope(caller);
    const drivers = delivery
      .driverLoads()
      .filter((d) => caller.role !== 'driver' || d.name === caller.name)
      .map((d) => ({ name: d.name, holding: d.holding.filter((h) => scope === undefined || h.store === scope) }))
      // a store's vendor or dashboard sees the drivers holding its parcels, not every driver's name
      .filter((d) => scope === undefined || caller.role === 'driver' || d.holding.length > 0);
    res.json(ok({ drivers }));
  });

  api.use((_req, res) => {
    res.status(404).json(fail('CAPS_ERR_NOT_FOUND', 'no such API route'));
  });

  api.use((err: unknown, _req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) {
      next(err);
      return;
    }
    // express's own refusals of a request (a malformed percent-escape in a path: URIError, status 400) are the caller's
    const status = (err as { status?: unknown } | null)?.status;
    if (!(err instanceof CapsError) && typeof status === 'number' && status >= 400 && status < 500) {
      sendError(res, new CapsError('CAPS_ERR_INVALID_QUERY', err instanceof URIError ? 'the path has a malformed percent-escape' : 'the request is malformed'), options.metrics);
      return;
    }
    sendError(res, err, options.metrics);
  });
  return api;
}

/** Answers an HTTP request with the coded error body; refusals of the caller are counted. */
export function sendError(res: Response, err: unknown, metrics: Metrics): void {
  const capsError = err instanceof CapsError ? err : new CapsError('CAPS_ERR_INTERNAL', undefined, { cause: err });
  // the caller's own refusals; routes that refuse payloads count those themselves
  if (capsError.code === 'CAPS_ERR_UNAUTHORIZED' || capsError.code === 'CAPS_ERR_TOKEN_EXPIRED' || capsError.code === 'CAPS_ERR_FORBIDDEN' || capsError.code === 'CAPS_ERR_INVALID_QUERY') {
    metrics.refuse(capsError.code);
  }
  res.status(capsError.status).json(fail(capsError.code as CapsErrorCode, capsError.message));
}

/** Who sent an HTTP request: from its bearer token, or anonymous in lab mode. */
export function callerOf(req: Request, options: Pick<ApiOptions, 'keyring' | 'allowAnonymous'>): Caller {
  const header = req.get('authorization');
  if (header === undefined) {
    if (options.allowAnonymous) return { role: 'anonymous' };
    throw new CapsError('CAPS_ERR_UNAUTHORIZED', 'send Authorization: Bearer <token>');
  }
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  if (!match?.[1]) throw new CapsError('CAPS_ERR_UNAUTHORIZED', 'the Authorization header must be: Bearer <token>');
  if (!options.keyring) throw new CapsError('CAPS_ERR_UNAUTHORIZED', 'this hub has no secret and accepts no tokens');
  return subjectOf(options.keyring.verify(match[1]));
}

/**
 * A store's own routes (its parcels, cancels, tracking links, webhooks): the caller must hold a
 * vendor token of that store (anyone may, in open lab mode); `what` says what is refused. Returns
 * the verified subject, undefined for an anonymous lab caller.
 */
export function storeVendor(req: Request, options: Pick<ApiOptions, 'keyring' | 'allowAnonymous'>, store: string, what: string): TokenSubject | undefined {
  const caller = callerOf(req, options);
  if (caller.role === 'anonymous') return undefined;
  if (caller.role !== 'vendor' || caller.store !== store) throw new CapsError('CAPS_ERR_FORBIDDEN', `${what} with a vendor token of ${store}`);
  return caller;
}

/** The one store a caller is limited to, or undefined for every store. */
function storeScope(caller: Caller): string | undefined {
  // a tracker never gets this far (refused above); if it did, it would see its store at most
  return caller.role === 'vendor' || caller.role === 'dashboard' || caller.role === 'tracker' ? caller.store : undefined;
}

function mayRead(caller: Caller, parcel: ParcelRecord): boolean {
  if (caller.role === 'driver') return parcel.driver === caller.name || parcel.history.some((h) => h.driver === caller.name);
  const scope = storeScope(caller);
  return scope === undefined || parcel.order.store === scope;
}

function mayReadQueue(caller: Caller, queue: string): boolean {
  if (caller.role === 'driver') return queue === DRIVER_QUEUE;
  const scope = storeScope(caller);
  return scope === undefined || queue === scope;
}

function parseName(value: unknown, what: string): string {
  const parsed = nameSchema.safeParse(value);
  if (!parsed.success) throw new CapsError('CAPS_ERR_INVALID_QUERY', `${what}: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
  return parsed.data;
}

export function timeline(parcel: ParcelRecord) {
  return {
    ...parcel.order,
    state: parcel.state,
    /** Delivery attempts so far (a failed attempt that went back to the drivers starts the next). */
    attempts: attemptOf(parcel.history),
    ...(parcel.driver !== undefined ? { driver: parcel.driver } : {}),
    history: parcel.history.map((step) => ({ ...step, store: parcel.order.store })),
  };
}

function encodeCursor(cursor: ParcelCursor): string {
  return Buffer.from(JSON.stringify(cursor)).toString('base64url');
}

const cursorSchema = z.strictObject({ t: z.string().max(64), id: z.string().max(200) });

function decodeCursor(text: string): ParcelCursor {
  try {
    const parsed = cursorSchema.safeParse(JSON.parse(Buffer.from(text, 'base64url').toString('utf8')));
    if (parsed.success) return parsed.data;
  } catch {
    // fall through to the coded error
  }
  throw new CapsError('CAPS_ERR_INVALID_QUERY', 'cursor: not a cursor this API returned');
}
