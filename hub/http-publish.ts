import type { NextFunction, Request, Response } from 'express';
import express, { Router } from 'express';
import { CapsError } from '../protocol/errors.js';
import type { CapsErrorCode } from '../protocol/errors.js';
import { normalizeLabPayload } from '../protocol/lab.js';
import { fail } from '../protocol/result.js';
import { parsePublish } from '../protocol/schemas.js';
import { callerOf, sendError } from './http-api.js';
import type { Keyring } from './keyring.js';
import type { PublishContext } from './publish.js';
import { publishStep } from './publish.js';

export interface HttpPublishOptions {
  /** The token keys and revocations; undefined: a hub with no secret (lab mode only). */
  keyring: Keyring | undefined;
  allowAnonymous: boolean;
  /** Largest body accepted, in bytes. */
  maxPayloadBytes: number;
}

/**
 * Lab 12's stretch goal: `POST /pickup` with the JSON order `{ store, orderId, customer, address }`
 * publishes a pickup through the same flow as a socket. Open in lab mode (read generously, like a
 * lab socket); otherwise it needs a vendor token of that store. Idempotent on (store, orderId):
 * 201 with `status: 'new'` the first time, 200 with `status: 'duplicate'` after.
 */
export function pickupRoute(ctx: PublishContext, options: HttpPublishOptions): Router {
  const route = Router();
  // any content type: a student's curl or fetch often forgets the header; the body must be JSON
  route.post('/pickup', express.json({ limit: options.maxPayloadBytes, type: () => true, strict: false }), async (req, res) => {
    const caller = callerOf(req, options);
    if (caller.role !== 'anonymous' && caller.role !== 'vendor') throw new CapsError('CAPS_ERR_FORBIDDEN', `a ${caller.role} token may not publish pickups: use a vendor token`);
    const body: unknown = caller.role === 'anonymous' ? normalizeLabPayload(req.body).value : req.body;
    const parsed = parsePublish('pickup', body);
    if (!parsed.ok) throw new CapsError(parsed.error.code, parsed.error.message);
    const result = await publishStep(ctx, { auth: caller.role === 'anonymous' ? undefined : caller, via: 'http' }, parsed.value);
    if (!result.ok) throw new CapsError(result.error.code, result.error.message);
    const { duplicate } = result.data;
    res.status(duplicate ? 200 : 201).json({ ok: true, data: { ...result.data, status: duplicate ? 'duplicate' : 'new' } });
  });
  route.all('/pickup', (_req, res) => {
    res.status(405).set('Allow', 'POST').json(fail('CAPS_ERR_NOT_FOUND', 'POST /pickup with a JSON order { store, orderId, customer, address }'));
  });
  route.use('/pickup', publishErrors(ctx, options.maxPayloadBytes, '{ "store", "orderId", "customer", "address" }'));
  return route;
}

/**
 * The error handler of a route that publishes from a JSON body: a body express.json() could not
 * read is CAPS_ERR_INVALID_PAYLOAD (saying `shape`), and every refusal is counted once.
 */
export function publishErrors(ctx: Pick<PublishContext, 'metrics'>, limit: number, shape: string) {
  return (err: unknown, _req: Request, res: Response, next: NextFunction): void => {
    if (res.headersSent) {
      next(err);
      return;
    }
    const problem = bodyError(err, limit, shape);
    const capsError = problem !== undefined ? new CapsError('CAPS_ERR_INVALID_PAYLOAD', problem) : err;
    // sendError counts the caller's own refusals (token, permission); the payload's are counted here
    if (!(capsError instanceof CapsError) || !COUNTED_BY_SEND_ERROR.has(capsError.code)) ctx.metrics.refuse(capsError instanceof CapsError ? capsError.code : 'CAPS_ERR_INTERNAL');
    sendError(res, capsError, ctx.metrics);
  };
}

const COUNTED_BY_SEND_ERROR = new Set<CapsErrorCode>(['CAPS_ERR_UNAUTHORIZED', 'CAPS_ERR_TOKEN_EXPIRED', 'CAPS_ERR_FORBIDDEN', 'CAPS_ERR_INVALID_QUERY']);

/** What is wrong with a body express.json() could not read; undefined for any other error. */
function bodyError(err: unknown, limit: number, shape: string): string | undefined {
  const type = (err as { type?: unknown } | null)?.type;
  if (type === 'entity.too.large') return `the body is larger than ${limit} bytes`;
  if (type === 'entity.parse.failed') return `the body is not JSON: send ${shape}`;
  if (typeof type === 'string') return `the body cannot be read (${type})`;
  return undefined;
}
