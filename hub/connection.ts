import type { CapsErrorCode } from '../protocol/errors.js';
import { CAPS_ERRORS } from '../protocol/errors.js';
import type { ClientToServerEvents } from '../protocol/events.js';
import type { JoinResult } from '../protocol/messages.js';
import { DRIVER_QUEUE } from '../protocol/messages.js';
import type { AckResult } from '../protocol/result.js';
import { fail, ok } from '../protocol/result.js';
import type { ParcelEvent } from '../protocol/schemas.js';
import { getAllSchema, handshakeSchema, parsePayload, parseRoom, publishSchemas, receivedSchema, PARCEL_EVENTS } from '../protocol/schemas.js';
import { DRIVERS_ROOM, isDriverId, storeRoom } from './identity.js';
import type { Logger } from './logger.js';
import type { Router } from './router.js';
import type { CapsSocket } from './types.js';

export interface ConnectionContext {
  logger: Logger;
  router: Router;
}

const KNOWN_EVENTS = new Set<string>(['join', 'leave', 'received', 'getAll', ...PARCEL_EVENTS]);

/** Wires one client's events. Nothing a client sends may throw out of here. */
export function handleConnection(ctx: ConnectionContext, socket: CapsSocket): void {
  const { logger } = ctx;
  socket.data.role = 'unknown';
  socket.data.name = socket.id;
  socket.data.stores = new Set();

  const claimed = handshakeSchema.safeParse(socket.handshake.auth ?? {});
  if (claimed.success && claimed.data.role === 'driver') {
    becomeDriver(socket, claimed.data.name ?? socket.id);
  } else if (claimed.success && claimed.data.role === 'vendor' && claimed.data.store) {
    becomeVendor(socket, claimed.data.store);
  }
  logger.info('CONNECTED', who(socket));

  const refuse = (event: string, code: CapsErrorCode, message: string | undefined, ack: unknown): void => {
    const result = fail(code, message);
    logger.warn('REFUSED', { code, event, socket: socket.id, reason: result.error.message });
    reply(ack, result);
  };

  /** Registers a handler that validates nothing itself but can never crash the hub. */
  const on = <E extends keyof ClientToServerEvents>(event: E, handler: (raw: unknown, ack: unknown) => AckResult<unknown> | undefined): void => {
    socket.on(event, ((raw: unknown, ack: unknown) => {
      // a lab client may send only an ack-less event, or put the callback first
      if (typeof raw === 'function' && ack === undefined) {
        ack = raw;
        raw = undefined;
      }
      try {
        const result = handler(raw, ack);
        if (result && !result.ok) {
          refuse(event, result.error.code, result.error.message, ack);
        } else if (result) {
          reply(ack, result);
        }
      } catch (err) {
        logger.error('HANDLER FAILED', { event, socket: socket.id, error: err instanceof Error ? err.message : String(err) });
        reply(ack, fail('CAPS_ERR_INTERNAL'));
      }
    }) as never);
  };

  on('join', (raw) => {
    const parsed = parseRoom(raw);
    if (!parsed.ok) return parsed;
    const name = parsed.value;
    const result: JoinResult = isDriverId(name) || socket.data.role === 'driver'
      ? { role: 'driver', room: DRIVER_QUEUE }
      : { role: 'vendor', room: name };
    if (result.role === 'driver') becomeDriver(socket, isDriverId(name) ? socket.data.name : name);
    else becomeVendor(socket, name);
    logger.info('JOINED', { ...who(socket), room: result.room });
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

  on('received', (raw) => {
    const parsed = parsePayload(receivedSchema, raw);
    if (!parsed.ok) return parsed;
    identifyByQueue(socket, parsed.value.queue);
    return ok({ queue: parsed.value.queue, messageId: parsed.value.messageId, removed: false });
  });

  on('getAll', (raw) => {
    const parsed = parsePayload(getAllSchema, raw);
    if (!parsed.ok) return parsed;
    identifyByQueue(socket, parsed.value.queue);
    return ok({ queue: parsed.value.queue, sent: 0 });
  });

  socket.onAny((event: unknown, ...args: unknown[]) => {
    if (typeof event === 'string' && KNOWN_EVENTS.has(event)) return;
    refuse(String(event).slice(0, 100), 'CAPS_ERR_UNKNOWN_EVENT', `${CAPS_ERRORS.CAPS_ERR_UNKNOWN_EVENT.message}: ${String(event).slice(0, 100)}`, args.at(-1));
  });

  socket.on('disconnect', (reason) => {
    logger.info('DISCONNECTED', { ...who(socket), reason });
  });
}

function publish(ctx: ConnectionContext, socket: CapsSocket, event: ParcelEvent, raw: unknown) {
  const parsed = parsePayload(publishSchemas[event], raw);
  if (!parsed.ok) return parsed;
  if (event === 'pickup') {
    // open lab mode: a client that hands over a parcel is that store's vendor
    if (socket.data.role !== 'vendor' || !socket.data.stores.has(parsed.value.store)) becomeVendor(socket, parsed.value.store);
  } else if (socket.data.role === 'unknown') {
    becomeDriver(socket, socket.id);
  }
  return ok(ctx.router.publish(parsed.value, socket));
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
