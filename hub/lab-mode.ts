import { DRIVER_QUEUE } from '../protocol/messages.js';
import type { ReceivedResult } from '../protocol/messages.js';
import { LAB_NO_OPS } from '../protocol/lab.js';
import type { LabReceived } from '../protocol/lab.js';
import type { AckResult } from '../protocol/result.js';
import { fail, ok } from '../protocol/result.js';
import type { Delivery } from './delivery.js';
import { queueOf } from './identity.js';
import type { Storage } from './storage/storage.js';
import type { CapsSocket } from './types.js';

/**
 * The open lab mode's side of the protocol: what it tolerates (said at start), and the lab's
 * `received` in every shape the course uses. The names and keys themselves are read by
 * protocol/lab.ts; this is what the hub does with them.
 */

/** Printed by `caps hub --allow-anonymous` at start, one line each. */
export const LAB_MODE_TOLERATES: readonly string[] = [
  'event names in any case, with -, _ and spaces ignored: PICKUP, In_Transit, get-all, GETALL',
  'payload keys in any case, and the lab\'s synonyms: store/storeName/vendor, orderId/orderID/id, clientId/queueId',
  'an order flat, or inside order or payload; a step may re-send the pickup message as it was received',
  'received by messageId or by orderId, with clientId, queueId or store, with any event or none, or the message echoed back',
  `events that mean nothing here (${LAB_NO_OPS.join(', ')}) as no-ops`,
  'a pickup goes to every connection but its sender, vendors and dashboards (--dispatch one: to one driver that joined "driver")',
  'a connection that only reports in-transit or delivered is never handed a pickup to hold',
  'anything still refused is said once per connection and kind, with the shape that works, and counted in /metrics',
];

/**
 * Takes the message a lab `received` names off its queue. Which queues are searched: the one it
 * names (`clientId` / `queueId`); else the driver pool for a pickup, the store's for a later step;
 * else the client's own (a driver's pool first, a vendor's stores first); a bare messageId is
 * looked for everywhere. Something already gone is answered `removed: false`, not refused.
 */
export async function labReceived(delivery: Delivery, storage: Storage, socket: CapsSocket, ref: LabReceived): Promise<AckResult<ReceivedResult>> {
  const queues = candidateQueues(socket, ref);
  // a bare messageId is looked for everywhere; a queue that was named is the only one searched
  const found = delivery.findQueued(queues, ref) ?? (ref.queue === undefined ? locate(delivery, ref) : undefined);
  if (found) {
    const outcome = await delivery.ack(found.queue, found.messageId, 'received');
    return ok({ queue: found.queue, messageId: found.messageId, removed: outcome === 'removed' });
  }
  const queue = queues[0] ?? (ref.store !== undefined ? ref.store : DRIVER_QUEUE);
  if (ref.messageId !== undefined) {
    // storage may hold it still (another hub's), or remember it acknowledged
    const outcome = await delivery.ack(queue, ref.messageId, 'received');
    if (outcome === 'removed' || outcome === 'already-acknowledged') return ok({ queue, messageId: ref.messageId, removed: outcome === 'removed' });
    if (outcome === 'unknown-queue' && ref.queue !== undefined) return fail('CAPS_ERR_UNKNOWN_QUEUE', `no queue named ${ref.queue}`);
  }
  // a parcel the hub knows, with nothing of it queued here: already taken off (a late or repeated received)
  const orderId = ref.orderId ?? ref.messageId ?? '';
  const parcels = await storage.findParcels(orderId);
  const storeOf = ref.store ?? (queue !== DRIVER_QUEUE ? queue : undefined);
  if (parcels.some((p) => storeOf === undefined || p.order.store === storeOf)) return ok({ queue, messageId: ref.messageId ?? orderId, removed: false });
  return fail('CAPS_ERR_UNKNOWN_MESSAGE', `nothing queued in ${queue} is message or order ${ref.messageId ?? orderId}`);
}

function candidateQueues(socket: CapsSocket, ref: LabReceived): string[] {
  if (ref.queue !== undefined) return [queueOf(ref.queue)];
  if (ref.event === 'pickup') return [DRIVER_QUEUE];
  if (ref.store !== undefined) return ref.event !== undefined ? [ref.store] : socket.data.role === 'driver' ? [DRIVER_QUEUE, ref.store] : [ref.store, DRIVER_QUEUE];
  // a client's own queues: a vendor's stores (a driver in a store's room only listens to it)
  const stores = socket.data.role === 'vendor' ? [...socket.data.stores] : [];
  if (ref.event !== undefined) return stores;
  return socket.data.role === 'vendor' ? [...stores, DRIVER_QUEUE] : [DRIVER_QUEUE];
}

function locate(delivery: Delivery, ref: LabReceived): { queue: string; messageId: string } | undefined {
  if (ref.messageId === undefined) return undefined;
  const queue = delivery.locate(ref.messageId);
  return queue === undefined ? undefined : { queue, messageId: ref.messageId };
}
