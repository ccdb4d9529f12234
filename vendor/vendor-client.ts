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
}

export interface VendorEvents {
  'in-transit': [ParcelMessage];
  delivered: [ParcelMessage];
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

  constructor(private readonly options: VendorOptions) {
    super();
    this.log = options.log ?? ((line) => console.log(line));
    this.interval = options.interval ?? 2_000;
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
   * Publishes an order every `interval` ms. With `count`, stops after that many and resolves
   * once every one of them is delivered; without, runs until `close()`.
   */
  run(): Promise<void> {
    const { count } = this.options;
    return new Promise<void>((resolve, reject) => {
      let published = 0;
      /** Publishes not answered yet: a parcel can be delivered before its own ack comes back (a hub restart). */
      let unanswered = 0;
      const checkDone = (): void => {
        if (count !== undefined && published >= count && unanswered === 0 && this.awaiting.size === 0) {
          this.off('delivered', checkDone);
          resolve();
        }
      };
      this.on('delivered', checkDone);
      const tick = (): void => {
        if (this.closed) return;
        if (count !== undefined && published >= count) return;
        published++;
        unanswered++;
        this.publish().then(
          () => {
            unanswered--;
            checkDone();
          },
          (err: unknown) => {
            this.off('delivered', checkDone);
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

  private emitProblem(problem: string): void {
    if (this.closed) return;
    this.log(`VENDOR: ${problem}`);
    this.emit('problem', problem);
  }
}
