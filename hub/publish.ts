import { DEFAULT_MAX_ATTEMPTS, PUBLISHED_BY } from '../protocol/lifecycle.js';
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
  /** A store's maximum of delivery attempts (`--max-attempts`); default DEFAULT_MAX_ATTEMPTS. */
  maxAttempts?: (store: string) => number;
  /** Signed webhooks (hub/webhooks); absent: none. */
  webhooks?: Webhooks;
}

/** Who publishes a step: a socket or an HTTP request. */
export interface Publisher {
  /** The verified token's subject; undefined for an anonymous lab client. */
  auth: TokenSubject | undefined;
  /** Recorded as the step's driver (the steps drivers report). */
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
  const byDriver = PUBLISHED_BY[event] === 'driver';
  // one object built field by field, no spreads: this runs for every event
  const step: StepInput = { event, store: input.store, orderId: input.orderId, time };
  if (input.customer !== undefined) step.customer = input.customer;
  if (input.address !== undefined) step.address = input.address;
  if (byDriver && publisher.name !== undefined) step.driver = publisher.name;
  if (input.attempt !== undefined) step.attempt = input.attempt;
  if (input.details !== undefined) step.details = input.details;
  if (event === 'failed') step.maxAttempts = ctx.maxAttempts?.(input.store) ?? DEFAULT_MAX_ATTEMPTS;
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
  // signed webhooks: in the outbox before the answer, straight after the step (a parcel's steps
  // reach it in the order they were recorded, with no other write between); a duplicate too, so
  // a publisher's retry fills the gap a hub killed between the step and its enqueue left (enqueue
  // is idempotent)
  let webhooksLost = false;
  if (ctx.webhooks?.watches(input.store)) {
    try {
      await ctx.webhooks.enqueue(input.store, input.orderId, event, outcome.status === 'accepted' ? outcome.message : undefined);
    } catch (err) {
      ctx.logger.warn('WEBHOOK ENQUEUE FAILED', { store: input.store, orderId: input.orderId, event, reason: err instanceof Error ? err.message : String(err) });
      // the rest of the step goes on (it is recorded); the publisher is told to send it again
      webhooksLost = true;
    }
  }
  if (outcome.status === 'accepted' && event === 'cancelled') {
    // the driver given the parcel hears of its cancel at once (its next step would be refused): the
    // one carrying it, whichever hub it reports through; not knowing it only costs the news
    const carrier = await ctx.storage.parcel(input.store, input.orderId).then((parcel) => parcel?.driver, () => undefined);
    ctx.delivery.tellHolders(outcome.message, carrier);
  }
  // a step reported means the pickup of its attempt reached a driver, whichever connection reports
  // it; a step that ends the driver's part (or a cancel) forgets who it went to. A duplicate says
  // so only of the course's steps: a failure sent again after its parcel went back to the pool
  // names the attempt before, whose pickup is long settled
  if (outcome.status === 'accepted' && event !== 'pickup') await ctx.delivery.settlePickup(input.store, input.orderId, event !== 'in-transit', outcome.message.attempt ?? 1);
  else if (duplicate && (event === 'in-transit' || event === 'delivered')) await ctx.delivery.settlePickup(input.store, input.orderId, false, input.attempt);
  // a failed attempt's parcel is back in the driver pool: only now, so that settling took the old pickup
  if (outcome.status === 'accepted' && outcome.requeued) {
    ctx.delivery.add(outcome.requeued);
    ctx.dashboards.step(outcome.requeued);
    ctx.logger.info('REATTEMPT', { store: input.store, orderId: input.orderId, attempt: outcome.requeued.attempt ?? 2 });
  }
  if (webhooksLost) return fail('CAPS_ERR_STORAGE', 'the step is recorded but its webhooks are not queued: send it again');
  const result: PublishResult = { event, store: input.store, orderId: input.orderId, duplicate };
  if (outcome.status === 'accepted' && outcome.message.reattempt !== undefined) result.reattempt = outcome.message.reattempt;
  return ok(result);
}
