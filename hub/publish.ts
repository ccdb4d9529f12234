import type { PublishResult } from '../protocol/messages.js';
import type { AckResult } from '../protocol/result.js';
import { fail, ok } from '../protocol/result.js';
import type { PublishInput } from '../protocol/schemas.js';
import type { TokenSubject } from '../protocol/token.js';
import type { Dashboards } from './dashboards.js';
import type { Delivery } from './delivery.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import { mayPublish } from './policy.js';
import type { Storage, StepInput } from './storage/storage.js';
import type { Webhooks } from './webhooks/webhooks.js';

export interface PublishContext {
  logger: Logger;
  storage: Storage;
  delivery: Delivery;
  metrics: Metrics;
  dashboards: Dashboards;
  /** Signed webhooks (hub/webhooks); absent: none. */
  webhooks?: Webhooks;
}

/** Who publishes a step: a socket or an HTTP request. */
export interface Publisher {
  /** The verified token's subject; undefined for an anonymous lab client. */
  auth: TokenSubject | undefined;
  /** Recorded as the step's driver (in-transit, delivered). */
  name?: string;
  /** The publishing socket, which is not sent its own pickup back (lab semantics). */
  socketId?: string;
  /** For the log: `socket` id or `http`. */
  via: string;
}

/**
 * The publish flow, one for sockets and HTTP: permission, then the step recorded (the answer waits
 * for storage), then relayed, counted and logged. A step published twice is a duplicate: answered
 * as such, never relayed again.
 */
export async function publishStep(ctx: PublishContext, publisher: Publisher, input: PublishInput): Promise<AckResult<PublishResult>> {
  const { event } = input;
  const { auth } = publisher;
  const refused = mayPublish(auth, event, input.store);
  if (refused) return refused;
  const time = new Date().toISOString();
  ctx.metrics.receive(event);
  // one object built field by field, no spreads: this runs for every event
  const step: StepInput = { event, store: input.store, orderId: input.orderId, time };
  if (input.customer !== undefined) step.customer = input.customer;
  if (input.address !== undefined) step.address = input.address;
  if (event !== 'pickup' && publisher.name !== undefined) step.driver = publisher.name;
  // no vendor of the store online: its message goes to the store's log on disk, not to memory
  if (event !== 'pickup') {
    if (!ctx.delivery.hasListeners(input.store)) step.toLog = true;
    else if (!ctx.delivery.hasAcknowledgers(input.store)) step.unacknowledged = true;
  }
  // an authenticated driver reports only parcels dispatched to it: the store checks, atomically
  if (auth?.role === 'driver') step.dispatched = ctx.delivery.wasDispatchedTo(input.store, input.orderId, auth.name);
  const outcome = await ctx.storage.recordStep(step);
  if (outcome.status === 'refused') return fail(outcome.code, outcome.reason);
  const duplicate = outcome.status === 'duplicate';
  if (outcome.status === 'accepted') {
    ctx.logger.event(event, outcome.message.order, time);
    ctx.delivery.add(outcome.message, publisher.socketId, outcome.spilled === true);
    ctx.dashboards.step(outcome.message);
    if (event === 'delivered') ctx.metrics.latency.observe(Math.max(0, Date.parse(time) - Date.parse(outcome.pickedUpAt)) / 1000);
  } else {
    ctx.metrics.duplicates.inc({ event });
    ctx.logger.info('DUPLICATE', { event, store: input.store, orderId: input.orderId, via: publisher.via });
  }
  // a step reported means the pickup reached a driver, whichever connection reports it
  if (event !== 'pickup') await ctx.delivery.settlePickup(input.store, input.orderId, event === 'delivered');
  // signed webhooks: in the outbox before the answer; a duplicate too, so a publisher's retry fills
  // the gap a hub killed between recording the step and enqueueing it left (enqueue is idempotent)
  if (ctx.webhooks?.watches(input.store)) {
    try {
      await ctx.webhooks.enqueue(input.store, input.orderId, event, outcome.status === 'accepted' ? outcome.message : undefined);
    } catch (err) {
      ctx.logger.warn('WEBHOOK ENQUEUE FAILED', { store: input.store, orderId: input.orderId, event, reason: err instanceof Error ? err.message : String(err) });
      return fail('CAPS_ERR_STORAGE', 'the step is recorded but its webhooks are not queued: send it again');
    }
  }
  return ok({ event, store: input.store, orderId: input.orderId, duplicate });
}
