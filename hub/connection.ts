import { CapsError } from '../protocol/errors.js';
import type { CapsErrorCode } from '../protocol/errors.js';
import { CAPS_ERRORS } from '../protocol/errors.js';
import type { ClientToServerEvents } from '../protocol/events.js';
import type { JoinResult, PublishResult } from '../protocol/messages.js';
import { DRIVER_QUEUE } from '../protocol/messages.js';
import type { AckResult } from '../protocol/result.js';
import { fail, ok } from '../protocol/result.js';
import type { ParcelEvent } from '../protocol/schemas.js';
import type { TokenSubject } from '../protocol/token.js';
import { getAllSchema, handshakeSchema, parsePayload, parsePublish, parseRoom, receivedSchema, PARCEL_EVENTS } from '../protocol/schemas.js';
import type { Dashboards } from './dashboards.js';
import type { Delivery } from './delivery.js';
import { DRIVERS_ROOM, isDriverId, queueOf, storeRoom } from './identity.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import type { RateLimitOptions } from './rate-limit.js';
import { RateLimiter } from './rate-limit.js';
import type { QueueStore, StepInput } from './store/store.js';
import type { CapsSocket } from './types.js';

export interface ConnectionContext {
  logger: Logger;
  store: QueueStore;
  delivery: Delivery;
  metrics: Metrics;
  rateLimit: RateLimitOptions;
  dashboards: Dashboards;
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

  // identity: from the verified token; in open lab mode, what the client claims (or later says)
  const { auth } = socket.data;
  const claimed = auth ?? handshakeSchema.safeParse(socket.handshake.auth ?? {}).data;
  if (claimed?.role === 'driver') {
    socket.data.acks = true;
    becomeDriver(socket, ('name' in claimed ? claimed.name : undefined) ?? socket.id);
  } else if (claimed?.role === 'vendor' && claimed.store) {
    socket.data.acks = true;
    becomeVendor(socket, claimed.store);
  } else if (claimed?.role === 'dashboard') {
    socket.data.role = 'dashboard';
    ctx.dashboards.watch(socket, 'store' in claimed ? claimed.store : undefined);
  }
  logger.info('CONNECTED', { ...who(socket), authenticated: auth !== undefined });
  // a client that said who it is gets its backlog right away
  if (claimed?.role === 'driver') delivery.driverReady(socket);
  for (const store of socket.data.stores) delivery.replay(socket, store);

  const refuse = (event: string, code: CapsErrorCode, message: string | undefined, ack: unknown): void => {
    const result = fail(code, message);
    ctx.metrics.refuse(code);
    logger.warn('REFUSED', { code, event, socket: socket.id, reason: result.error.message });
    reply(ack, result);
  };

  // a flooding socket is slowed (its events refused), then cut off; no middleware at all when unlimited
  const limiter = new RateLimiter(ctx.rateLimit);
  let cutOff = false;
  if (Number.isFinite(ctx.rateLimit.ratePerSecond)) socket.use((packet, next) => {
    // packets already read from the wire still arrive after the cut: drop them quietly
    if (cutOff) return;
    const verdict = limiter.take();
    if (verdict === 'ok') {
      next();
      return;
    }
    const ack = packet.at(-1);
    ctx.metrics.refuse('CAPS_ERR_RATE_LIMITED');
    if (limiter.refusedInRow === 1) logger.warn('REFUSED', { code: 'CAPS_ERR_RATE_LIMITED', event: String(packet[0]).slice(0, 100), socket: socket.id, reason: 'rate limit; further refusals in this run are counted, not logged' });
    reply(ack, fail('CAPS_ERR_RATE_LIMITED'));
    if (verdict === 'cut-off') {
      cutOff = true;
      logger.warn('CUT OFF', { ...who(socket), reason: `${limiter.refusedInRow} events over the rate limit` });
      socket.disconnect(true);
    }
  });

  /** In authenticated mode, what each role may do; an anonymous lab client may do anything. */
  const forbid = (what: string): AckResult<never> => forbidden(auth, what);
  const mayUseQueue = (queue: string): boolean =>
    !auth || (auth.role === 'vendor' && queue === auth.store) || (auth.role === 'driver' && queue === DRIVER_QUEUE);
  /** join and leave: a queue the client may use, or an authenticated driver's own name. */
  const mayName = (name: string): boolean => mayUseQueue(queueOf(name)) || (auth?.role === 'driver' && name === auth.name);

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
    if (!mayName(name)) return forbid(`join ${name}`);
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
    if (!mayName(name)) return forbid(`leave ${name}`);
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
    const queue = queueOf(parsed.value.queue);
    if (!mayUseQueue(queue)) return forbid(`acknowledge messages of queue ${parsed.value.queue}`);
    identifyByQueue(socket, parsed.value.queue);
    socket.data.acks = true;
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
    const queue = queueOf(parsed.value.queue);
    if (!mayUseQueue(queue)) return forbid(`read queue ${parsed.value.queue}`);
    identifyByQueue(socket, parsed.value.queue);
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
  const parsed = parsePublish(event, raw);
  if (!parsed.ok) return parsed;
  const input = parsed.value;
  const { auth } = socket.data;
  if (auth) {
    // a vendor hands parcels over; only drivers report what became of them
    if (auth.role !== (event === 'pickup' ? 'vendor' : 'driver')) return forbidden(auth, `publish ${event}`);
    if (auth.role === 'vendor' && input.store !== auth.store) {
      return fail('CAPS_ERR_FORBIDDEN', `the token is for store ${auth.store}; the payload names ${input.store}`);
    }
  }
  if (event === 'pickup') {
    // open lab mode: a client that hands over a parcel is that store's vendor
    if (socket.data.role !== 'vendor' || !socket.data.stores.has(input.store)) becomeVendor(socket, input.store);
  } else if (socket.data.role === 'unknown') {
    becomeDriver(socket, socket.id);
  }
  const time = new Date().toISOString();
  ctx.metrics.receive(event);
  // one object built field by field, no spreads: this runs for every event
  const step: StepInput = { event, store: input.store, orderId: input.orderId, time };
  if (input.customer !== undefined) step.customer = input.customer;
  if (input.address !== undefined) step.address = input.address;
  if (event !== 'pickup') step.driver = socket.data.name;
  // an authenticated driver reports only parcels dispatched to it: the store checks, atomically
  if (auth?.role === 'driver') step.dispatched = ctx.delivery.wasDispatchedTo(input.store, input.orderId, auth.name);
  const outcome = await ctx.store.recordStep(step);
  if (outcome.status === 'refused') return fail(outcome.code, outcome.reason);
  const duplicate = outcome.status === 'duplicate';
  if (outcome.status === 'accepted') {
    ctx.logger.event(event, outcome.message.order, time);
    ctx.delivery.add(outcome.message);
    ctx.dashboards.step(outcome.message);
    if (event === 'delivered') ctx.metrics.latency.observe(Math.max(0, Date.parse(time) - Date.parse(outcome.pickedUpAt)) / 1000);
  } else {
    ctx.metrics.duplicates.inc({ event });
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

function forbidden(auth: TokenSubject | undefined, what: string): AckResult<never> {
  return fail('CAPS_ERR_FORBIDDEN', `${describeAuth(auth)} may not ${what}`);
}

function describeAuth(auth: TokenSubject | undefined): string {
  if (!auth) return 'an anonymous client';
  if (auth.role === 'vendor') return `a vendor of ${auth.store}`;
  if (auth.role === 'driver') return `driver ${auth.name}`;
  return 'a dashboard';
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
