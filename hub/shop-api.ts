import { createHash, randomUUID } from 'node:crypto';
import type { Request } from 'express';
import express, { Router } from 'express';
import { z } from 'zod';
import { CapsError } from '../protocol/errors.js';
import { ok } from '../protocol/result.js';
import { orderSchema, PARCEL_EVENTS, parsePublish, storeNameSchema } from '../protocol/schemas.js';
import type { ParcelEvent } from '../protocol/schemas.js';
import { peekClaims, signToken } from '../protocol/token.js';
import { trackingUrl } from './tracking.js';
import { callerOf, storeVendor, timeline } from './http-api.js';
import type { HttpPublishOptions } from './http-publish.js';
import { publishErrors } from './http-publish.js';
import type { PublishContext } from './publish.js';
import { publishStep } from './publish.js';

/** Longest Idempotency-Key read (Stripe's limit). */
export const MAX_IDEMPOTENCY_KEY = 255;

/** How long a tracking link works unless the shop asks otherwise: 30 days, as `caps token`. */
export const TRACKING_LINK_SECONDS = 30 * 86_400;
/** The longest a shop may ask for: a year. */
export const MAX_TRACKING_LINK_SECONDS = 365 * 86_400;

export interface ShopApiOptions extends HttpPublishOptions {
  /** Where customers reach the hub, for tracking links; default: the Host the request came to. */
  publicUrl?: string;
}

const trackingLinkBody = z.strictObject({ expiresInSeconds: z.number().int().min(60).max(MAX_TRACKING_LINK_SECONDS).optional() });

/**
 * The shop's own backend over HTTP: `POST /api/stores/:store/parcels` creates a parcel (a pickup),
 * with the vendor token of that store (or none in open lab mode).
 *
 * Idempotent: a parcel is known by (store, orderId), so sending it again is answered 200 with the
 * parcel as it is. A request without an orderId names its parcel by its `Idempotency-Key` header:
 * the orderId is derived from the key (`key-` and a hash of store and key), so a retry after a
 * timeout, or after a hub restart, finds the same parcel; the same key with another body is
 * refused (422). Without either, each request makes a new parcel, with a new orderId.
 */
export function shopApi(ctx: PublishContext, options: ShopApiOptions): Router {
  const api = Router();
  api.post('/stores/:store/parcels', express.json({ limit: options.maxPayloadBytes, strict: true }), async (req, res) => {
    const store = String(req.params['store']);
    const auth = storeVendor(req, options, store, `parcels of ${store} are created`);
    const body = req.body as unknown;
    if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new CapsError('CAPS_ERR_INVALID_PAYLOAD', 'send a JSON object { customer, address[, orderId] }');
    const fields = body as Record<string, unknown>;
    if (fields['store'] !== undefined && fields['store'] !== store) throw new CapsError('CAPS_ERR_INVALID_PAYLOAD', `the body names store ${String(fields['store'])}; the path ${store}`);
    const key = req.get('idempotency-key');
    if (key !== undefined && (key.length === 0 || key.length > MAX_IDEMPOTENCY_KEY || !/^[\x21-\x7e]+$/.test(key))) {
      throw new CapsError('CAPS_ERR_INVALID_PAYLOAD', `Idempotency-Key must be 1 to ${MAX_IDEMPOTENCY_KEY} visible ASCII characters`);
    }
    const orderId = fields['orderId'] ?? (key !== undefined ? keyOrderId(store, key) : randomUUID());
    const parsed = parsePublish('pickup', { ...fields, store, orderId });
    if (!parsed.ok) throw new CapsError(parsed.error.code, parsed.error.message);
    const result = await publishStep(ctx, { auth, via: 'http' }, parsed.value);
    if (!result.ok) throw new CapsError(result.error.code, result.error.message);
    const parcel = await ctx.storage.parcel(store, parsed.value.orderId);
    if (!parcel) throw new CapsError('CAPS_ERR_STORAGE', 'the parcel was stored but cannot be read back; ask again');
    const { duplicate } = result.data;
    // a key used again with another body: the parcel it made is not this one
    if (duplicate && key !== undefined && (parcel.order.customer !== parsed.value.customer || parcel.order.address !== parsed.value.address)) {
      res.status(422).json({ ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD', message: `Idempotency-Key ${key} was used for another parcel body (order ${parcel.order.orderId})` } });
      return;
    }
    if (duplicate) res.set('Idempotent-Replayed', 'true');
    res.status(duplicate ? 200 : 201).json(ok({ ...timeline(parcel), status: duplicate ? 'existing' : 'created' }));
  });
  // the store calls a delivery off (issue 17): a driver holding it is told, a waiting pickup leaves the pool
  api.post('/stores/:store/parcels/:orderId/cancel', express.json({ limit: options.maxPayloadBytes, strict: true }), async (req, res) => {
    const store = String(req.params['store']);
    const auth = storeVendor(req, options, store, `parcels of ${store} are cancelled`);
    const body = (req.body ?? {}) as unknown;
    if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new CapsError('CAPS_ERR_INVALID_PAYLOAD', 'send nothing, or a JSON object { "note" }');
    const fields = body as Record<string, unknown>;
    const extra = Object.keys(fields).filter((key) => key !== 'note');
    if (extra.length > 0) throw new CapsError('CAPS_ERR_INVALID_PAYLOAD', `a cancel carries only a note; not ${extra.join(', ')}`);
    const parsed = parsePublish('cancelled', { ...fields, store, orderId: String(req.params['orderId']) });
    if (!parsed.ok) throw new CapsError(parsed.error.code, parsed.error.message);
    const result = await publishStep(ctx, { auth, via: 'http' }, parsed.value);
    if (!result.ok) throw new CapsError(result.error.code, result.error.message);
    const parcel = await ctx.storage.parcel(store, parsed.value.orderId);
    if (!parcel) throw new CapsError('CAPS_ERR_STORAGE', 'the cancel was stored but the parcel cannot be read back; ask again');
    if (result.data.duplicate) res.set('Idempotent-Replayed', 'true');
    res.status(200).json(ok({ ...timeline(parcel), status: result.data.duplicate ? 'already-cancelled' : 'cancelled' }));
  });
  // any step of a parcel over HTTP, for a driver's app that speaks HTTP rather than Socket.IO: who
  // may send which step is the socket's rule (a driver its own parcels' steps, a store's vendor a cancel)
  api.post('/stores/:store/parcels/:orderId/steps', express.json({ limit: options.maxPayloadBytes, strict: true }), async (req, res) => {
    const caller = callerOf(req, options);
    const body = req.body as unknown;
    if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new CapsError('CAPS_ERR_INVALID_PAYLOAD', 'send a JSON object { "event", ... }');
    const { event, ...fields } = body as Record<string, unknown>;
    if (typeof event !== 'string' || !(PARCEL_EVENTS as readonly string[]).includes(event) || event === 'pickup') {
      throw new CapsError('CAPS_ERR_INVALID_PAYLOAD', `event must be one of ${PARCEL_EVENTS.filter((e) => e !== 'pickup').join(', ')} (a pickup is POST /api/stores/:store/parcels)`);
    }
    const parsed = parsePublish(event as ParcelEvent, { ...fields, store: String(req.params['store']), orderId: String(req.params['orderId']) });
    if (!parsed.ok) throw new CapsError(parsed.error.code, parsed.error.message);
    const auth = caller.role === 'anonymous' ? undefined : caller;
    const result = await publishStep(ctx, { auth, ...(auth?.role === 'driver' ? { name: auth.name } : {}), via: 'http' }, parsed.value);
    if (!result.ok) throw new CapsError(result.error.code, result.error.message);
    if (result.data.duplicate) res.set('Idempotent-Replayed', 'true');
    res.status(200).json(ok(result.data));
  });
  // a customer's tracking link for one parcel (issue 17): a `tracker` token, signed like any other
  api.post('/stores/:store/parcels/:orderId/tracking-link', express.json({ limit: options.maxPayloadBytes, strict: true }), async (req, res) => {
    const store = String(req.params['store']);
    storeVendor(req, options, store, `tracking links of ${store}'s parcels are made`);
    const storeName = storeNameSchema.safeParse(store);
    const orderId = orderSchema.shape.orderId.safeParse(req.params['orderId']);
    if (!storeName.success || !orderId.success) throw new CapsError('CAPS_ERR_INVALID_QUERY', 'the path names no valid store and orderId');
    const body = trackingLinkBody.safeParse(req.body ?? {});
    if (!body.success) throw new CapsError('CAPS_ERR_INVALID_PAYLOAD', `send nothing, or { "expiresInSeconds": 60 to ${MAX_TRACKING_LINK_SECONDS} }`);
    // a hub without a secret (open lab mode only) has nothing to sign with
    if (!options.keyring) throw new CapsError('CAPS_ERR_FORBIDDEN', 'this hub has no secret to sign tracking links with');
    const parcel = await ctx.storage.parcel(storeName.data, orderId.data);
    if (!parcel) throw new CapsError('CAPS_ERR_NOT_FOUND', `no parcel ${orderId.data} of ${storeName.data}`);
    const expiresInSeconds = body.data.expiresInSeconds ?? TRACKING_LINK_SECONDS;
    const token = signToken(options.keyring.current.secret, { role: 'tracker', store: storeName.data, orderId: orderId.data }, { expiresInSeconds });
    const claims = peekClaims(token);
    ctx.logger.info('TRACKING LINK', { store: storeName.data, orderId: orderId.data, token: claims?.jti ?? '?', via: 'http' });
    res.status(201).json(
      ok({
        url: trackingUrl(options.publicUrl ?? requestOrigin(req), token),
        token,
        expiresAt: new Date((claims?.exp ?? 0) * 1000).toISOString(),
        // caps token revoke --id <tokenId> withdraws the link
        tokenId: claims?.jti,
      }),
    );
  });
  api.use('/stores/:store/parcels/:orderId/steps', publishErrors(ctx, options.maxPayloadBytes, '{ "event", "attempt"?, and the step\'s details }'));
  api.use('/stores/:store/parcels/:orderId/cancel', publishErrors(ctx, options.maxPayloadBytes, 'nothing, or { "note" }'));
  api.use('/stores/:store/parcels/:orderId/tracking-link', publishErrors(ctx, options.maxPayloadBytes, 'nothing, or { "expiresInSeconds" }'));
  api.use('/stores/:store/parcels', publishErrors(ctx, options.maxPayloadBytes, '{ "customer", "address"[, "orderId"] }'));
  return api;
}

/** The origin the request was sent to: `http://<Host>` (a hub behind TLS says its own with publicUrl). */
function requestOrigin(req: Request): string {
  return `${req.protocol}://${req.get('host') ?? 'localhost'}`;
}

/** The orderId a parcel created with this Idempotency-Key has: the same for every retry, on any hub. */
export function keyOrderId(store: string, key: string): string {
  return `key-${createHash('sha256').update(`${store}\u0000${key}`).digest('hex').slice(0, 32)}`;
}
