import type { Request } from 'express';
import express, { Router } from 'express';
import { z } from 'zod';
import { CapsError } from '../../protocol/errors.js';
import { ok } from '../../protocol/result.js';
import { PARCEL_EVENTS, storeNameSchema } from '../../protocol/schemas.js';
import { storeVendor } from '../http-api.js';
import type { HttpPublishOptions } from '../http-publish.js';
import { publishErrors } from '../http-publish.js';
import type { Metrics } from '../metrics.js';
import type { Webhooks } from './webhooks.js';

/** Longest webhook URL taken. */
export const MAX_WEBHOOK_URL = 2048;

export interface WebhookRoutesOptions extends HttpPublishOptions {
  webhooks: Webhooks;
  metrics: Metrics;
}

/** The registration body. `events` is checked against PARCEL_EVENTS, so new events are accepted as soon as the protocol has them. */
const registrationSchema = z.strictObject({
  url: z.string().min(1).max(MAX_WEBHOOK_URL),
  events: z.array(z.enum(PARCEL_EVENTS)).min(1).optional(),
});

/**
 * A store's webhook endpoints over HTTP, with the vendor token of that store (or none in open lab
 * mode), like the shop's other routes: register (`POST`, answers the signing secret once), list
 * (state, last error, backlog), remove, and enable again after the hub disabled one.
 */
export function webhookRoutes(options: WebhookRoutesOptions): Router {
  const api = Router();
  const base = '/stores/:store/webhooks';
  const storeOf = (req: Request): string => {
    const store = String(req.params['store']);
    storeVendor(req, options, store, `webhooks of ${store} are managed`);
    const parsed = storeNameSchema.safeParse(store);
    if (!parsed.success) throw new CapsError('CAPS_ERR_INVALID_QUERY', `store: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
    return parsed.data;
  };
  const idOf = (req: Request): string => {
    const id = String(req.params['id']);
    if (!/^wh_[0-9a-f]{16}$/.test(id)) throw new CapsError('CAPS_ERR_NOT_FOUND', `no webhook endpoint ${id.slice(0, 40)}`);
    return id;
  };

  api.post(base, express.json({ limit: options.maxPayloadBytes, strict: true }), async (req, res) => {
    const store = storeOf(req);
    const body = registrationSchema.safeParse(req.body);
    if (!body.success) {
      const problems = body.error.issues.map((i) => (i.path[0] === 'events' ? `events: each must be one of ${PARCEL_EVENTS.join(', ')}, at least one` : `${i.path.join('.') || 'body'}: ${i.message}`));
      throw new CapsError('CAPS_ERR_INVALID_PAYLOAD', `send { "url": "https://...", "events"?: [...] }; ${[...new Set(problems)].join('; ')}`);
    }
    const endpoint = await options.webhooks.register(store, body.data.url, body.data.events);
    res.status(201).json(ok(endpoint));
  });

  api.get(base, async (req, res) => {
    const store = storeOf(req);
    res.json(ok({ store, webhooks: await options.webhooks.list(store) }));
  });

  api.delete(`${base}/:id`, async (req, res) => {
    const store = storeOf(req);
    const id = idOf(req);
    if (!(await options.webhooks.remove(store, id))) throw new CapsError('CAPS_ERR_NOT_FOUND', `${store} has no webhook endpoint ${id}`);
    res.json(ok({ id, removed: true }));
  });

  api.post(`${base}/:id/enable`, async (req, res) => {
    const store = storeOf(req);
    const id = idOf(req);
    const endpoint = await options.webhooks.enable(store, id);
    if (!endpoint) throw new CapsError('CAPS_ERR_NOT_FOUND', `${store} has no webhook endpoint ${id}`);
    res.json(ok(endpoint));
  });

  api.use(base, publishErrors(options, options.maxPayloadBytes, '{ "url", "events"? }'));
  return api;
}
