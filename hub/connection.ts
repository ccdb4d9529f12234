import { CapsError } from '../protocol/errors.js';
import type { CapsErrorCode } from '../protocol/errors.js';
import { CAPS_ERRORS } from '../protocol/errors.js';
import type { ClientToServerEvents } from '../protocol/events.js';
import type { JoinResult, PublishResult } from '../protocol/messages.js';
import { DRIVER_QUEUE } from '../protocol/messages.js';
import type { AckResult } from '../protocol/result.js';
import { fail, ok } from '../protocol/result.js';
import type { ParcelEvent } from '../protocol/schemas.js';
import { getAllSchema, handshakeSchema, parsePayload, parseRoom, publishSchemas, receivedSchema, PARCEL_EVENTS } from '../protocol/schemas.js';
import type { Delivery } from './delivery.js';
import { DRIVERS_ROOM, isDriverId, queueOf, storeRoom } from './identity.js';
import type { Logger } from './logger.js';
import type { QueueStore } from './store/store.js';
import type { CapsSocket } from './types.js';

export interface ConnectionContext {
  logger: Logger;
  store: QueueStore;
  delivery: Delivery;
}

const KNOWN_EVENTS = new Set<string>(['join', 'leave', 'received', 'getAll', ...PARCEL_EVENTS]);

type Handler = (raw: unknown) => AckResult<unknown> | Promise<AckResult<unknown>>;

/** Wires one client's events. Nothing a client sends may throw out of here. */
export function handleConnection(ctx: ConnectionContext, socket: CapsSocket): void {
  const { logger, delivery } = ctx;
  socket.data.role = 'unknown';
  socket.data.name = socket.id;
  socket.data.stores = new Set();
  socket.data.acks = false;

  const claimed = handshakeSchema.safeParse(socket.handshake.auth ?? {});
  if (claimed.success && claimed.data.role === 'driver') {
    socket.data.acks = true;
    becomeDriver(socket, claimed.data.name ?? socket.id);
  } else if (claimed.success && claimed.data.role === 'vendor' && claimed.data.store) {
    socket.data.acks = true;
    becomeVendor(socket, claimed.data.store);
  }
  logger.info('CONNECTED', who(socket));
  // a client that said who it is gets its backlog right away
  if (claimed.success && claimed.data.role === 'driver') delivery.driverReady(socket);
  for (const store of socket.data.stores) delivery.replay(socket, store);

  const refuse = (event: string, code: CapsErrorCode, message: string | undefined, ack: unknown): void => {
    const result = fail(code, message);
    logger.warn('REFUSED', { code, event, socket: socket.id, reason: result.error.message });
    reply(ack, result);
  };

  const settle = (event: string, ack: unknown, result: AckResult<unknown>): void => {
    if (!result.ok) refuse(event, result.error.code, result.error.message, ack);
    else reply(ack, result);
  };

  const failed = (event: string, ack: unknown, err: unknown): void => {
    if (err instanceof CapsError) {
      settle(event, ack, fail(err.code, err.message));
      return;
    }
    logger.error('HANDLER FAILED', { event, socket: socket.id, error: err instanceof Error ? err.message : String(err) });
    reply(ack, fail('CAPS_ERR_INTERNAL'));
  };

  /** Registers a handler whose result becomes the ack; nothing it throws reaches socket.io. */
  const on = <E extends keyof ClientToServerEvents>(event: E, handler: Handler): void => {
    socket.on(event, ((raw: unknown, ack: unknown) => {
      // a client may send only the ack callback, with no payload
      if (typeof raw === 'function' && ack === undefined) {
        ack = raw;
        raw = undefined;
      }
      try {
        const result = handler(raw);
        if (result instanceof Promise) result.then((r) => settle(event, ack, r), (err: unknown) => failed(event, ack, err));
        else settle(event, ack, result);
      } catch (err) {
        failed(event, ack, err);
      }
    }) as never);
  };

  on('join', (raw) => {
    const parsed = parseRoom(raw);
    if (!parsed.ok) return parsed;
    const name = parsed.value;
    const asDriver = isDriverId(name) || socket.data.role === 'driver';
    const result: JoinResult = asDriver ? { role: 'driver', room: DRIVER_QUEUE } : { role: 'vendor', room: name };
    if (asDriver) becomeDriver(socket, isDriverId(name) ? socket.data.name : name);
    else becomeVendor(socket, name);
    logger.info('JOINED', { ...who(socket), room: result.room });
    if (asDriver) delivery.driverReady(socket);
    else delivery.replay(socket, name);
    return ok(result);
  });

  on('leave', (raw) => {
    const parsed = parseRoom(raw);
    if (!parsed.ok) return parsed;
    const name = parsed.value;
    let result: JoinResult;
    if (isDriverId(name) || socket.data.role === 'driver') {
      void socket.leave(DRIVERS_ROOM);
      result = { role: 'driver', room: DRIVER_QUEUE };
    } else {
      void socket.leave(storeRoom(name));
      socket.data.stores.delete(name);
      result = { role: 'vendor', room: name };
    }
    logger.info('LEFT', { ...who(socket), room: result.room });
    return ok(result);
  });

  for (const event of PARCEL_EVENTS) {
    on(event, (raw) => publish(ctx, socket, event, raw));
  }

  on('received', async (raw) => {
    const parsed = parsePayload(receivedSchema, raw);
    if (!parsed.ok) return parsed;
    const { messageId } = parsed.value;
    identifyByQueue(socket, parsed.value.queue);
    socket.data.acks = true;
    const queue = queueOf(parsed.value.queue);
    const outcome = await delivery.ack(queue, messageId, 'received');
    switch (outcome) {
      case 'removed':
      case 'already-acknowledged':
        return ok({ queue, messageId, removed: outcome === 'removed' });
      case 'unknown-queue':
        return fail('CAPS_ERR_UNKNOWN_QUEUE', `no queue named ${parsed.value.queue}`);
      case 'unknown-message':
        return fail('CAPS_ERR_UNKNOWN_MESSAGE', `no message ${messageId} in queue ${queue}`);
    }
  });

  on('getAll', (raw) => {
    const parsed = parsePayload(getAllSchema, raw);
    if (!parsed.ok) return parsed;
    identifyByQueue(socket, parsed.value.queue);
    const queue = queueOf(parsed.value.queue);
    if (queue === DRIVER_QUEUE && socket.data.role === 'unknown') becomeDriver(socket, socket.id);
    const sent = delivery.replay(socket, queue, parsed.value.event);
    return ok({ queue, sent });
  });

  socket.onAny((event: unknown, ...args: unknown[]) => {
    if (typeof event === 'string' && KNOWN_EVENTS.has(event)) return;
    const name = String(event).slice(0, 100);
    refuse(name, 'CAPS_ERR_UNKNOWN_EVENT', `${CAPS_ERRORS.CAPS_ERR_UNKNOWN_EVENT.message}: ${name}`, args.at(-1));
  });

  socket.on('disconnect', (reason) => {
    logger.info('DISCONNECTED', { ...who(socket), reason });
    delivery.disconnected(socket);
  });
}

async function publish(ctx: ConnectionContext, socket: CapsSocket, event: ParcelEvent, raw: unknown): Promise<AckResult<PublishResult>> {
  const parsed = parsePayload(publishSchemas[event], raw);
  if (!parsed.ok) return parsed;
  const input = parsed.value;
  if (event === 'pickup') {
    // open lab mode: a client that hands over a parcel is that store's vendor
    if (socket.data.role !== 'vendor' || !socket.data.stores.has(input.store)) becomeVendor(socket, input.store);
  } else if (socket.data.role === 'unknown') {
    becomeDriver(socket, socket.id);
  }
  const time = new Date().toISOString();
  const outcome = await ctx.store.recordStep({
    event,
    store: input.store,
    orderId: input.orderId,
    ...(input.customer !== undefined ? { customer: input.customer } : {}),
    ...(input.address !== undefined ? { address: input.address } : {}),
    ...(event !== 'pickup' ? { driver: socket.data.name } : {}),
    time,
  });
  if (outcome.status === 'refused') return fail(outcome.code, outcome.reason);
  const duplicate = outcome.status === 'duplicate';
  if (outcome.status === 'accepted') {
    ctx.logger.event(event, outcome.message.order, time);
    ctx.delivery.add(outcome.message);
  } else {
    ctx.logger.info('DUPLICATE', { event, store: input.store, orderId: input.orderId, socket: socket.id });
  }
  if (event === 'delivered' && socket.data.role === 'driver') await ctx.delivery.settlePickup(input.store, input.orderId);
  return ok({ event, store: input.store, orderId: input.orderId, duplicate });
}

/** A lab client that names a queue in `received` or `getAll` tells us who it is. */
function identifyByQueue(socket: CapsSocket, queue: string): void {
  if (socket.data.role !== 'unknown') return;
  if (isDriverId(queue)) becomeDriver(socket, socket.id);
  else becomeVendor(socket, queue);
}

function becomeDriver(socket: CapsSocket, name: string): void {
  socket.data.role = 'driver';
  socket.data.name = name;
  void socket.join(DRIVERS_ROOM);
}

function becomeVendor(socket: CapsSocket, store: string): void {
  socket.data.role = 'vendor';
  socket.data.stores.add(store);
  void socket.join(storeRoom(store));
}

function who(socket: CapsSocket): Record<string, unknown> {
  const { role, name, stores } = socket.data;
  return {
    socket: socket.id,
    role,
    ...(role === 'driver' ? { name } : {}),
    ...(role === 'vendor' ? { store: [...stores].join(',') } : {}),
  };
}

function reply(ack: unknown, result: AckResult<unknown>): void {
  if (typeof ack === 'function') (ack as (r: AckResult<unknown>) => void)(result);
}
