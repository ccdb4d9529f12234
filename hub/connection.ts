import { CapsError } from '../protocol/errors.js';
import type { CapsErrorCode } from '../protocol/errors.js';
import { CAPS_ERRORS } from '../protocol/errors.js';
import type { ClientToServerEvents } from '../protocol/events.js';
import { LAB_ACCEPTED_SHAPES, labEventName, normalizeLabPayload, parseLabReceived } from '../protocol/lab.js';
import type { JoinResult, PublishResult } from '../protocol/messages.js';
import { DRIVER_QUEUE } from '../protocol/messages.js';
import type { AckResult } from '../protocol/result.js';
import { fail, ok } from '../protocol/result.js';
import type { ParcelEvent } from '../protocol/schemas.js';
import { getAllSchema, handshakeSchema, locationSchema, parsePayload, parsePublish, parseRoom, receivedSchema, PARCEL_EVENTS } from '../protocol/schemas.js';
import { DRIVERS_ROOM, driverRoom, isDriverId, queueOf, storeRoom } from './identity.js';
import { labReceived } from './lab-mode.js';
import { forbidden, mayName, mayUseQueue } from './policy.js';
import type { PublishContext } from './publish.js';
import { publishStep } from './publish.js';
import type { RateLimitOptions } from './rate-limit.js';
import { FLOOD_WINDOW_MS, FloodWatch } from './rate-limit.js';
import type { ClientLimits } from './client-limits.js';
import type { Locations } from './locations.js';
import { LOCATION_EVERY_MS } from './locations.js';
import { watchParcel } from './tracking.js';
import type { CapsSocket } from './types.js';

export interface ConnectionContext extends PublishContext {
  rateLimit: RateLimitOptions;
  /** Event buckets and connection counts per client. */
  limits: ClientLimits;
  /** Drivers' latest positions. */
  locations: Locations;
}


/** Lab notes one connection may be told (kinds of refusal, no-ops); past it, only counted. */
const MAX_NOTES = 32;

type Handler = (raw: unknown) => AckResult<unknown> | Promise<AckResult<unknown>>;

/** Wires one client's events. Nothing a client sends may throw out of here. */
export function handleConnection(ctx: ConnectionContext, socket: CapsSocket): void {
  const { logger, delivery } = ctx;
  socket.data.role = 'unknown';
  socket.data.name = socket.id;
  socket.data.stores = new Set();
  socket.data.acks = 'unknown';
  socket.data.unanswered = 0;
  socket.data.noted = new Set();

  // identity: from the verified token; in open lab mode, what the client claims (or later says)
  const { auth } = socket.data;
  const claimed = auth ?? handshakeSchema.safeParse(socket.handshake.auth ?? {}).data;
  if (claimed?.role === 'driver') {
    socket.data.acks = 'callback';
    becomeDriver(socket, ('name' in claimed ? claimed.name : undefined) ?? socket.id);
  } else if (claimed?.role === 'vendor' && claimed.store) {
    socket.data.acks = 'callback';
    becomeVendor(socket, claimed.store);
  } else if (claimed?.role === 'dashboard') {
    socket.data.role = 'dashboard';
    ctx.dashboards.watch(socket, 'store' in claimed ? claimed.store : undefined);
  } else if (auth?.role === 'tracker') {
    // a customer's tracking page: one parcel, listening only (issue 17)
    socket.data.role = 'tracker';
    watchParcel(socket, auth, ctx).catch((err: unknown) => logger.error('TRACKING FAILED', { socket: socket.id, error: err instanceof Error ? err.message : String(err) }));
  }
  logger.info('CONNECTED', { ...who(socket), authenticated: auth !== undefined });
  // a client that said who it is gets its backlog right away
  if (claimed?.role === 'driver') delivery.driverReady(socket);
  for (const store of socket.data.stores) delivery.replay(socket, store);

  // an anonymous client of the open lab mode is read generously (protocol/lab.ts); a token holder strictly
  const lab = auth === undefined;
  /** True the first time this connection does `kind`: lab notes are said once, then only counted. */
  const firstTime = (kind: string): boolean => {
    // bounded: a client inventing event names cannot grow this, nor the log
    if (socket.data.noted.has(kind) || socket.data.noted.size >= MAX_NOTES) return false;
    socket.data.noted.add(kind);
    return true;
  };

  const refuse = (event: string, code: CapsErrorCode, message: string | undefined, ack: unknown): void => {
    const result = fail(code, message);
    ctx.metrics.refuse(code);
    if (!lab) logger.warn('REFUSED', { code, event, socket: socket.id, reason: result.error.message });
    else if (firstTime(`refused ${event} ${code}`)) {
      // lab clients rarely ask for acks: the console is the only place a student sees why
      logger.warn('REFUSED', {
        code,
        event,
        socket: socket.id,
        reason: result.error.message,
        accepted: Object.hasOwn(LAB_ACCEPTED_SHAPES, event) ? LAB_ACCEPTED_SHAPES[event] : LAB_ACCEPTED_SHAPES['unknown'],
        note: 'said once per connection and kind; every refusal is counted in /metrics (caps_refusals_total)',
      });
    }
    reply(ack, result);
  };

  // a flooding client is slowed (its events refused, over all its connections), then this
  // connection is cut off if it keeps going; no middleware at all when unlimited
  const flood = new FloodWatch(ctx.rateLimit.cutOffAfter);
  const client = socket.data.client;
  let cutOff = false;
  if (Number.isFinite(ctx.rateLimit.ratePerSecond) && client !== undefined) socket.use((packet, next) => {
    // packets already read from the wire still arrive after the cut: drop them quietly
    if (cutOff) return;
    if (ctx.limits.take(client) === 'ok') {
      next();
      return;
    }
    const ack = packet.at(-1);
    ctx.metrics.refuse('CAPS_ERR_RATE_LIMITED');
    const cut = flood.refuse();
    if (flood.refused === 1) logger.warn('REFUSED', { code: 'CAPS_ERR_RATE_LIMITED', event: String(packet[0]).slice(0, 100), socket: socket.id, reason: 'rate limit; further refusals in this run are counted, not logged' });
    reply(ack, fail('CAPS_ERR_RATE_LIMITED'));
    if (cut) {
      cutOff = true;
      logger.warn('CUT OFF', { ...who(socket), reason: `${flood.refused} events over the rate limit within ${FLOOD_WINDOW_MS / 1000} s` });
      socket.disconnect(true);
    }
  });

  /** The handler of each event, by its name in the protocol. */
  const handlers = new Map<string, (raw: unknown, ack: unknown) => void>();

  // the last middleware hands each event to its handler at once, and never on to socket.io's
  // listeners: socket.io would call those on the next tick, and drop the event if the client's
  // disconnect was read meanwhile, so a client that sends and closes at once would lose what it
  // sent. Event names: a token holder's exactly as in the protocol; a lab client's read
  // generously, its payload brought to the protocol's keys.
  socket.use((packet) => {
    const sent = packet[0] as unknown;
    const ack = typeof packet.at(-1) === 'function' ? packet.at(-1) : undefined;
    // a client may send the ack callback alone, with no payload
    const raw = packet.length > 1 && packet[1] !== ack ? packet[1] : undefined;
    if (auth?.role === 'tracker') {
      // before any handler reads the payload: a tracking link may only listen to its parcel
      refuse(String(sent).slice(0, 100), 'CAPS_ERR_FORBIDDEN', "a tracking link only listens to its own parcel: it may send nothing", ack);
      return;
    }
    if (!lab) {
      const handler = typeof sent === 'string' ? handlers.get(sent) : undefined;
      if (handler) handler(raw, ack);
      else refuseUnknown(sent, ack);
      return;
    }
    const name = labEventName(sent);
    if (name.kind === 'unknown') {
      refuseUnknown(sent, ack);
      return;
    }
    if (name.kind === 'no-op') {
      if (firstTime(`no-op ${name.name}`)) logger.info('IGNORED', { event: String(sent), socket: socket.id, reason: 'means nothing to this hub: accepted as a no-op (said once per connection)' });
      reply(ack, ok({ ignored: true }));
      return;
    }
    const { value, ignored } = normalizeLabPayload(raw);
    if (ignored.length > 0 && firstTime(`fields ${name.event}`)) {
      logger.info('IGNORED FIELDS', { event: name.event, fields: ignored.slice(0, 10).join(', ').slice(0, 300), socket: socket.id, reason: 'not part of the protocol: left out (said once per connection and event)' });
    }
    handlers.get(name.event)?.(value, ack);
  });

  const refuseUnknown = (sent: unknown, ack: unknown): void => {
    const name = String(sent).slice(0, 100);
    refuse(name, 'CAPS_ERR_UNKNOWN_EVENT', `${CAPS_ERRORS.CAPS_ERR_UNKNOWN_EVENT.message}: ${name}`, ack);
  };

  /** In authenticated mode, what each role may do (hub/policy.ts); an anonymous lab client may do anything. */
  const forbid = (what: string): AckResult<never> => forbidden(auth, what);

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
    handlers.set(event, (raw: unknown, ack: unknown) => {
      try {
        const result = handler(raw);
        if (result instanceof Promise) result.then((r) => settle(event, ack, r), (err: unknown) => failed(event, ack, err));
        else settle(event, ack, result);
      } catch (err) {
        failed(event, ack, err);
      }
    });
  };

  on('join', (raw) => {
    const parsed = parseRoom(raw);
    if (!parsed.ok) return parsed;
    const name = parsed.value;
    if (!mayName(auth, name)) return forbid(`join ${name}`);
    if (lab && socket.data.role === 'driver' && !isDriverId(name)) {
      // a lab driver that joins a store's room hears that store's steps, as the lab's rooms do
      joinStoreRoom(socket, name);
      logger.info('JOINED', { ...who(socket), room: name });
      return ok({ role: 'driver', room: name } satisfies JoinResult);
    }
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
    if (!mayName(auth, name)) return forbid(`leave ${name}`);
    let result: JoinResult;
    if (isDriverId(name) || (socket.data.role === 'driver' && !socket.data.stores.has(name))) {
      void socket.leave(DRIVERS_ROOM);
      result = { role: 'driver', room: DRIVER_QUEUE };
    } else {
      void socket.leave(storeRoom(name));
      socket.data.stores.delete(name);
      result = { role: socket.data.role === 'driver' ? 'driver' : 'vendor', room: name };
    }
    logger.info('LEFT', { ...who(socket), room: result.room });
    return ok(result);
  });

  for (const event of PARCEL_EVENTS) {
    on(event, (raw) => publish(ctx, socket, event, raw));
  }

  on('received', async (raw) => {
    if (lab) {
      const ref = parseLabReceived(raw);
      if (!ref) return fail('CAPS_ERR_INVALID_PAYLOAD', 'received names no message: send a messageId or an orderId');
      // naming a store's queue says who a silent client is; naming the driver pool does not make a
      // connection a driver (it may be the one that only reports steps)
      // a new member of the room is sent what it has not had first, so that it hears the store in order
      if (ref.queue !== undefined && !isDriverId(ref.queue) && identifyByQueue(socket, ref.queue)) delivery.replay(socket, ref.queue);
      const result = await labReceived(delivery, ctx.storage, socket, ref);
      // a client that says received does not answer Socket.IO acks (the lab's way): ask none of it
      if (result.ok && socket.data.acks === 'unknown') socket.data.acks = 'none';
      if (result.ok) socket.data.receives = true;
      return result;
    }
    const parsed = parsePayload(receivedSchema, raw);
    if (!parsed.ok) return parsed;
    const { messageId } = parsed.value;
    const queue = queueOf(parsed.value.queue);
    if (!mayUseQueue(auth, queue)) return forbid(`acknowledge messages of queue ${parsed.value.queue}`);
    // a driver takes off the pool only what it holds, not a pickup handed to another driver
    if (auth?.role === 'driver' && queue === DRIVER_QUEUE) {
      const holder = delivery.holderOf(messageId);
      if (holder !== undefined && holder !== auth.name) return fail('CAPS_ERR_NOT_DISPATCHED', `message ${messageId} is a pickup held by another driver`);
    }
    if (identifyByQueue(socket, parsed.value.queue)) delivery.replay(socket, queue);
    if (socket.data.acks === 'unknown') socket.data.acks = 'none';
    socket.data.receives = true;
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

  on('location', (raw) => {
    // a token's role is the socket's from the start; a lab client's, once it said it is a driver
    if (socket.data.role !== 'driver') return forbid('send a location (drivers only)');
    const parsed = parsePayload(locationSchema, raw);
    if (!parsed.ok) return parsed;
    const held = delivery.held(socket);
    const location = ctx.locations.update(socket.data.name, parsed.value, held.map((h) => h.orderId));
    if (!location) return fail('CAPS_ERR_RATE_LIMITED', `a driver's position is kept at most once every ${LOCATION_EVERY_MS} ms`);
    ctx.dashboards.location(location, held);
    return ok({ kept: true as const });
  });

  on('getAll', async (raw) => {
    const parsed = parsePayload(getAllSchema, raw);
    if (!parsed.ok) return parsed;
    const queue = queueOf(parsed.value.queue);
    if (!mayUseQueue(auth, queue)) return forbid(`read queue ${parsed.value.queue}`);
    identifyByQueue(socket, parsed.value.queue);
    if (queue === DRIVER_QUEUE && socket.data.role === 'unknown') becomeDriver(socket, socket.id);
    const event = parsed.value.event;
    // what is held in memory first, then what waits in the store's log past it (it goes to the
    // store's room, this client included): in order
    const replayed = delivery.replay(socket, queue, event);
    const paged = queue !== DRIVER_QUEUE ? await delivery.pageIn(queue) : [];
    const sentPaged = paged.filter((m) => (event === undefined || m.event === event) && delivery.wasSentTo(queue, m.messageId, socket.id)).length;
    return ok({ queue, sent: replayed + sentPaged });
  });

  socket.on('disconnect', (reason) => {
    logger.info('DISCONNECTED', { ...who(socket), reason });
    // a position is news of a driver online: gone with it
    if (socket.data.role === 'driver') ctx.locations.forget(socket.data.name);
    delivery.disconnected(socket);
  });
}

/** A parcel event from a socket: the shared publish flow, after what the step says about the socket. */
async function publish(ctx: ConnectionContext, socket: CapsSocket, event: ParcelEvent, raw: unknown): Promise<AckResult<PublishResult>> {
  const parsed = parsePublish(event, raw);
  if (!parsed.ok) return parsed;
  const input = parsed.value;
  // open lab mode: a client that hands over a parcel is that store's vendor. Reporting a driver's
  // step says nothing: a course driver may report on a connection that never listens.
  if (event === 'pickup' && !socket.data.auth && (socket.data.role !== 'vendor' || !socket.data.stores.has(input.store))) {
    becomeVendor(socket, input.store);
    // a new member of the store's room hears what is queued for it first, in order
    ctx.delivery.replay(socket, input.store);
  }
  return publishStep(ctx, { auth: socket.data.auth, name: socket.data.name, socketId: socket.id, via: socket.id }, input);
}

/** A lab client that names a queue in `received` or `getAll` tells us who it is. */
/** True when it made the socket a store's vendor (it joined the store's room). */
function identifyByQueue(socket: CapsSocket, queue: string): boolean {
  if (socket.data.role !== 'unknown') return false;
  if (isDriverId(queue)) {
    becomeDriver(socket, socket.id);
    return false;
  }
  becomeVendor(socket, queue);
  return true;
}

function becomeDriver(socket: CapsSocket, name: string): void {
  if (socket.data.role === 'driver' && socket.data.name !== name) void socket.leave(driverRoom(socket.data.name));
  socket.data.role = 'driver';
  socket.data.name = name;
  void socket.join(DRIVERS_ROOM);
  void socket.join(driverRoom(name));
}

function becomeVendor(socket: CapsSocket, store: string): void {
  socket.data.role = 'vendor';
  joinStoreRoom(socket, store);
}

/** Hears a store's steps (a vendor, or a lab driver that joined the store's room). */
function joinStoreRoom(socket: CapsSocket, store: string): void {
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
    ...(role === 'tracker' && socket.data.auth?.role === 'tracker' ? { store: socket.data.auth.store, parcel: socket.data.auth.orderId } : {}),
  };
}

function reply(ack: unknown, result: AckResult<unknown>): void {
  if (typeof ack === 'function') (ack as (r: AckResult<unknown>) => void)(result);
}
