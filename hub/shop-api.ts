import { createHash, randomUUID } from 'node:crypto';
import express, { Router } from 'express';
import { CapsError } from '../protocol/errors.js';
import { ok } from '../protocol/result.js';
import { parsePublish } from '../protocol/schemas.js';
import { callerOf, timeline } from './http-api.js';
import type { HttpPublishOptions } from './http-publish.js';
import { publishErrors } from './http-publish.js';
import type { PublishContext } from './publish.js';
import { publishStep } from './publish.js';

/** Longest Idempotency-Key read (Stripe's limit). */
export const MAX_IDEMPOTENCY_KEY = 255;

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
export function shopApi(ctx: PublishContext, options: HttpPublishOptions): Router {
  const api = Router();
  api.post('/stores/:store/parcels', express.json({ limit: options.maxPayloadBytes, strict: true }), async (req, res) => {
    const caller = callerOf(req, options);
    const store = String(req.params['store']);
    if (caller.role !== 'anonymous' && !(caller.role === 'vendor' && caller.store === store)) {
      throw new CapsError('CAPS_ERR_FORBIDDEN', `parcels of ${store} are created with a vendor token of ${store}`);
    }
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
    const result = await publishStep(ctx, { auth: caller.role === 'anonymous' ? undefined : caller, via: 'http' }, parsed.value);
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
  api.use('/stores/:store/parcels', publishErrors(ctx, options.maxPayloadBytes, '{ "customer", "address"[, "orderId"] }'));
  return api;
}

/** The orderId a parcel created with this Idempotency-Key has: the same for every retry, on any hub. */
export function keyOrderId(store: string, key: string): string {
  return `key-${createHash('sha256').update(`${store}\u0000${key}`).digest('hex').slice(0, 32)}`;
}
