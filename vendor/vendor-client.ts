import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { faker } from '@faker-js/faker';
import type { CapsClientSocket } from '../protocol/connect.js';
import { abortController, connectCaps, currentHub, describeFailure, publishUntilAnswered, refusalOf, waitConnected } from '../protocol/connect.js';
import type { CapsErrorBody } from '../protocol/errors.js';
import type { MessageAck } from '../protocol/events.js';
import type { ParcelMessage, PublishResult } from '../protocol/messages.js';
import type { Order } from '../protocol/schemas.js';
import { RecentIds } from '../protocol/recent-ids.js';
import { FINAL_EVENTS } from '../protocol/lifecycle.js';

export interface VendorOptions {
  /** Hub URL, e.g. `http://localhost:3000`. */
  url: string;
  /** The store this vendor works for; its room and queue. */
  store: string;
  /** A vendor token for this store (`caps token`); required unless the hub runs in lab mode. */
  token?: string;
  /** Publish a new order every this many ms. Default 2000. */
  interval?: number;
  /** Publish this many orders, then finish once all are delivered. Default: forever. */
  count?: number;
  /** How long to wait for each publish ack before sending again. Default 5000 ms. */
  ackTimeoutMs?: number;
  /** Where console lines go. Default: stdout. */
  log?: (line: string) => void;
  /** Share of its orders this vendor cancels right after handing them over (0 to 1). Default 0. */
  cancelShare?: number;
  /** Where chance comes from (tests make it certain). Default Math.random. */
  random?: () => number;
}

export interface VendorEvents {
  'in-transit': [ParcelMessage];
  delivered: [ParcelMessage];
  /** An attempt failed: `reattempt` says whether it went back to the drivers. */
  failed: [ParcelMessage];
  /** A parcel whose attempts are over came back to the store. */
  returned: [ParcelMessage];
  /** A parcel was cancelled (by this process or another of the store). */
  cancelled: [ParcelMessage];
  /** An error the vendor reports and carries on from (publish refused, hub unreachable). */
  problem: [string];
  /** The hub refused the connection (bad or expired token): retrying will not help. */
  refused: [CapsErrorBody];
}

/** A store's process: hands parcels to the hub and thanks the drivers who deliver them. */
export class VendorClient extends EventEmitter<VendorEvents> {
  readonly socket: CapsClientSocket;
  private readonly log: (line: string) => void;
  private readonly interval: number;
  private readonly ackTimeoutMs: number;
  /** Orders this process published and is waiting to see delivered. */
  private readonly awaiting = new Set<string>();
  /** Messages already handled: the hub delivers at least once, so some arrive twice. */
  private readonly seen = new RecentIds(10_000);
  private closed = false;
  private readonly aborter = abortController();
  private closing: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly random: () => number;

  constructor(private readonly options: VendorOptions) {
    super();
    this.log = options.log ?? ((line) => console.log(line));
    this.interval = options.interval ?? 2_000;
    this.random = options.random ?? Math.random;
    this.ackTimeoutMs = options.ackTimeoutMs ?? 5_000;
    this.socket = connectCaps(options.url, { role: 'vendor', store: options.store, ...(options.token ? { token: options.token } : {}) });
    this.socket.on('connect', () => this.log(`VENDOR: ${options.store} connected to ${currentHub(this.socket)}`));
    this.socket.on('connect_error', (err) => {
      const refusal = refusalOf(err);
      if (refusal) this.emit('refused', refusal);
      else this.emitProblem(`cannot reach the hub at ${currentHub(this.socket)}: ${err.message}`);
    });
    this.socket.on('disconnect', (reason) => {
      if (!this.closed) this.log(`VENDOR: ${options.store} lost the hub (${reason}); reconnecting`);
    });
    this.socket.on('in-transit', (message, ack) => this.onInTransit(message, ack));
    this.socket.on('delivered', (message, ack) => this.onDelivered(message, ack));
    this.socket.on('failed', (message, ack) => this.onFailed(message, ack));
    this.socket.on('returned', (message, ack) => this.onEnded('returned', message, ack));
    this.socket.on('cancelled', (message, ack) => this.onEnded('cancelled', message, ack));
  }

  get store(): string {
    return this.options.store;
  }

  /** How many of this process's orders are not delivered yet. */
  get outstanding(): number {
    return this.awaiting.size;
  }

  /** Resolves once connected to the hub. */
  start(timeoutMs = 10_000): Promise<void> {
    return waitConnected(this.socket, timeoutMs);
  }

  /** A new order for this store, with a fake customer. */
  makeOrder(): Order {
    return {
      store: this.options.store,
      orderId: randomUUID(),
      customer: faker.person.fullName(),
      address: `${faker.location.streetAddress()}, ${faker.location.city()}, ${faker.location.state({ abbreviated: true })} ${faker.location.zipCode()}`,
    };
  }

  /** Hands one order to the hub; resolves once the hub has acknowledged it. Sends again until it does. */
  async publish(order: Order = this.makeOrder()): Promise<PublishResult> {
    this.awaiting.add(order.orderId);
    const result = await publishUntilAnswered(this.socket, 'pickup', order, {
      ackTimeoutMs: this.ackTimeoutMs,
      signal: this.aborter.signal,
      what: `pickup ${order.orderId}`,
      problem: (text) => this.emitProblem(text),
    });
    if (!result) throw new Error('vendor closed before the hub acknowledged the pickup');
    if (!result.ok) {
      this.awaiting.delete(order.orderId);
      throw new Error(`pickup refused: ${describeFailure(result)}`);
    }
    this.log(`VENDOR: handed over ${order.orderId} for ${order.customer}`);
    return result.data;
  }

  /**
   * Calls a delivery off; resolves with the hub's answer (a duplicate if it was cancelled already),
   * or undefined once it is too late (delivered, failed, returned): that is logged, not thrown.
   */
  async cancel(orderId: string, note?: string): Promise<PublishResult | undefined> {
    const result = await publishUntilAnswered(this.socket, 'cancelled', { store: this.options.store, orderId, ...(note !== undefined ? { note } : {}) }, {
      ackTimeoutMs: this.ackTimeoutMs,
      signal: this.aborter.signal,
      what: `cancel of ${orderId}`,
      problem: (text) => this.emitProblem(text),
    });
    if (!result) return undefined;
    if (!result.ok) {
      this.log(`VENDOR: could not cancel ${orderId}: ${describeFailure(result)}`);
      return undefined;
    }
    this.log(`VENDOR: cancelled ${orderId}${note !== undefined ? ` (${note})` : ''}`);
    return result.data;
  }

  /**
   * Publishes an order every `interval` ms. With `count`, stops after that many and resolves
   * once every one of them is delivered; without, runs until `close()`.
   */
  run(): Promise<void> {
    const { count } = this.options;
    return new Promise<void>((resolve, reject) => {
      let published = 0;
      /** Publishes not answered yet: a parcel can be delivered before its own ack comes back (a hub restart). */
      let unanswered = 0;
      // a parcel's story ends delivered, returned or cancelled
      const ends = FINAL_EVENTS;
      const checkDone = (): void => {
        if (count !== undefined && published >= count && unanswered === 0 && this.awaiting.size === 0) {
          for (const end of ends) this.off(end, checkDone);
          resolve();
        }
      };
      for (const end of ends) this.on(end, checkDone);
      const tick = (): void => {
        if (this.closed) return;
        if (count !== undefined && published >= count) return;
        published++;
        unanswered++;
        const order = this.makeOrder();
        this.publish(order).then(
          () => {
            unanswered--;
            checkDone();
            // now and then the customer changes their mind, right after checkout: the parcel may
            // still wait for a driver, or be with one already (who is told)
            if (this.random() < (this.options.cancelShare ?? 0)) void this.cancel(order.orderId, 'the customer changed their mind');
          },
          (err: unknown) => {
            for (const end of ends) this.off(end, checkDone);
            reject(err instanceof Error ? err : new Error(String(err)));
          },
        );
        this.timer = setTimeout(tick, this.interval);
      };
      tick();
    });
  }

  /** Stops publishing and disconnects. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      this.aborter.abort();
      clearTimeout(this.timer);
      this.socket.disconnect();
    })();
    return this.closing;
  }

  private onInTransit(message: ParcelMessage, ack: MessageAck): void {
    ack({ ok: true });
    if (!this.seen.add(message.messageId)) return;
    this.log(`VENDOR: ${message.orderId} is on its way to ${message.customer}`);
    this.emit('in-transit', message);
  }

  private onDelivered(message: ParcelMessage, ack: MessageAck): void {
    ack({ ok: true });
    if (!this.seen.add(message.messageId)) return;
    this.log(`VENDOR: Thank you for delivering ${message.orderId} to ${message.customer}`);
    this.awaiting.delete(message.orderId);
    this.emit('delivered', message);
  }

  private onFailed(message: ParcelMessage, ack: MessageAck): void {
    ack({ ok: true });
    if (!this.seen.add(message.messageId)) return;
    const reason = message.details?.reason ?? 'no reason given';
    this.log(`VENDOR: attempt ${message.attempt ?? 1} to deliver ${message.orderId} failed (${reason}); ${message.reattempt === true ? 'it goes back to the drivers' : 'it comes back to the store'}`);
    this.emit('failed', message);
  }

  /** Returned or cancelled: this parcel will not be delivered. */
  private onEnded(event: 'returned' | 'cancelled', message: ParcelMessage, ack: MessageAck): void {
    ack({ ok: true });
    if (!this.seen.add(message.messageId)) return;
    this.log(event === 'returned' ? `VENDOR: ${message.orderId} is back at the store` : `VENDOR: ${message.orderId} is cancelled`);
    this.awaiting.delete(message.orderId);
    this.emit(event, message);
  }

  private emitProblem(problem: string): void {
    if (this.closed) return;
    this.log(`VENDOR: ${problem}`);
    this.emit('problem', problem);
  }
}
