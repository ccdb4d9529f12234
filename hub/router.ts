import { randomUUID } from 'node:crypto';
import type { ParcelMessage, PublishResult } from '../protocol/messages.js';
import { DRIVER_QUEUE } from '../protocol/messages.js';
import type { PublishInput } from '../protocol/schemas.js';
import type { Logger } from './logger.js';
import { storeRoom } from './identity.js';
import type { CapsNamespace, CapsSocket } from './types.js';

/** `one`: each pickup goes to exactly one driver. `broadcast`: to every driver (the lab's hub). */
export type DispatchMode = 'one' | 'broadcast';

/**
 * Routes parcel events: pickups to the drivers, later steps to the room of the parcel's store.
 */
export class Router {
  private readonly seqs = new Map<string, number>();
  private nextDriver = 0;

  constructor(
    private readonly nsp: CapsNamespace,
    private readonly logger: Logger,
    private readonly dispatch: DispatchMode,
  ) {}

  publish(input: PublishInput, from: CapsSocket): PublishResult {
    const time = new Date().toISOString();
    this.logger.event(input.event, { ...input }, time);
    const queueId = input.event === 'pickup' ? DRIVER_QUEUE : input.store;
    const order = {
      store: input.store,
      orderId: input.orderId,
      customer: input.customer ?? '',
      address: input.address ?? '',
    };
    const seq = (this.seqs.get(queueId) ?? 0) + 1;
    this.seqs.set(queueId, seq);
    const message: ParcelMessage = {
      ...order,
      event: input.event,
      messageId: randomUUID(),
      seq,
      queueId,
      clientId: queueId,
      order,
      time,
      ...(input.event !== 'pickup' && from.data.role === 'driver' ? { driver: from.data.name } : {}),
    };
    if (input.event === 'pickup') {
      this.sendToDrivers(message);
    } else {
      this.nsp.to(storeRoom(input.store)).emit(input.event, message, noop);
    }
    return { event: input.event, store: input.store, orderId: input.orderId, duplicate: false };
  }

  private sendToDrivers(message: ParcelMessage): void {
    const drivers = this.driverCandidates();
    if (drivers.length === 0) {
      this.logger.warn('NO DRIVER online: pickup not dispatched', { orderId: message.orderId, store: message.store });
      return;
    }
    if (this.dispatch === 'broadcast') {
      for (const socket of drivers) socket.emit('pickup', message, noop);
      return;
    }
    const socket = drivers[this.nextDriver++ % drivers.length];
    socket?.emit('pickup', message, noop);
  }

  /**
   * Drivers who said so; failing those, lab clients that have not said who they are (the
   * course's drivers often never do).
   */
  private driverCandidates(): CapsSocket[] {
    const drivers: CapsSocket[] = [];
    const unknown: CapsSocket[] = [];
    for (const socket of this.nsp.sockets.values()) {
      if (socket.data.role === 'driver') drivers.push(socket);
      else if (socket.data.role === 'unknown') unknown.push(socket);
    }
    return drivers.length > 0 ? drivers : unknown;
  }
}

function noop(): void {}
