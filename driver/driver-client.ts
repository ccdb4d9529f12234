import { EventEmitter } from 'node:events';
import type { CapsClientSocket } from '../protocol/connect.js';
import { abortController, connectCaps, currentHub, describeFailure, pause, publishUntilAnswered, refusalOf, waitConnected } from '../protocol/connect.js';
import type { CapsErrorBody } from '../protocol/errors.js';
import type { MessageAck } from '../protocol/events.js';
import type { ParcelMessage, PublishResult } from '../protocol/messages.js';
import type { ParcelEvent } from '../protocol/schemas.js';
import { RecentIds } from '../protocol/recent-ids.js';

export interface DriverOptions {
  url: string;
  /** This driver's name, shown in the hub's logs and in each parcel's history. */
  name: string;
  /** A driver token for this name (`caps token`); required unless the hub runs in lab mode. */
  token?: string;
  /** Time between reporting in-transit and delivered, in ms. Default 1000. */
  delay?: number;
  /** How long to wait for each publish ack before sending again. Default 5000 ms. */
  ackTimeoutMs?: number;
  log?: (line: string) => void;
}

export interface DriverEvents {
  'picked-up': [ParcelMessage];
  delivered: [ParcelMessage];
  problem: [string];
  /** The hub refused the connection (bad or expired token): retrying will not help. */
  refused: [CapsErrorBody];
}

/** A driver's process: takes pickups, reports in-transit, then delivered. */
export class DriverClient extends EventEmitter<DriverEvents> {
  readonly socket: CapsClientSocket;
  private readonly log: (line: string) => void;
  private readonly delay: number;
  private readonly ackTimeoutMs: number;
  /** Pickups in hand, by messageId, with the ack to answer once delivered. */
  private readonly jobs = new Map<string, { ack: MessageAck }>();
  /** Pickups already delivered: a copy sent again is only acknowledged. */
  private readonly finished = new RecentIds(10_000);
  private closed = false;
  private readonly aborter = abortController();
  private closing: Promise<void> | undefined;

  constructor(private readonly options: DriverOptions) {
    super();
    this.log = options.log ?? ((line) => console.log(line));
    this.delay = options.delay ?? 1_000;
    this.ackTimeoutMs = options.ackTimeoutMs ?? 5_000;
    this.socket = connectCaps(options.url, { role: 'driver', name: options.name, ...(options.token ? { token: options.token } : {}) });
    this.socket.on('connect', () => this.log(`DRIVER: ${options.name} connected to ${currentHub(this.socket)}`));
    this.socket.on('connect_error', (err) => {
      const refusal = refusalOf(err);
      if (refusal) this.emit('refused', refusal);
      else this.emitProblem(`cannot reach the hub at ${currentHub(this.socket)}: ${err.message}`);
    });
    this.socket.on('disconnect', (reason) => {
      if (!this.closed) this.log(`DRIVER: ${options.name} lost the hub (${reason}); reconnecting`);
    });
    this.socket.on('pickup', (message, ack) => this.onPickup(message, ack));
  }

  get name(): string {
    return this.options.name;
  }

  start(timeoutMs = 10_000): Promise<void> {
    return waitConnected(this.socket, timeoutMs);
  }

  /** Stops and disconnects; parcels in hand are left to the hub to hand to another driver. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      this.aborter.abort();
      this.socket.disconnect();
    })();
    return this.closing;
  }

  /**
   * Takes a pickup. Its ack goes back only once the parcel is delivered: if this driver stops
   * half-way, the hub still holds the pickup and hands it to another driver.
   */
  private onPickup(message: ParcelMessage, ack: MessageAck): void {
    if (this.finished.has(message.messageId)) {
      ack({ ok: true });
      return;
    }
    const job = this.jobs.get(message.messageId);
    if (job) {
      // sent again (a reconnect, or our ack was late): answer on the newest callback when done
      job.ack = ack;
      return;
    }
    this.jobs.set(message.messageId, { ack });
    this.log(`DRIVER: picked up ${message.orderId}`);
    this.emit('picked-up', message);
    void this.deliver(message);
  }

  private async deliver(message: ParcelMessage): Promise<void> {
    const transit = await this.report('in-transit', message);
    if (this.closed) return;
    if (transit === 'not-mine') {
      // the hub gave this pickup to someone else meanwhile (a hub restart, a failover): drop it
      // unacknowledged; if it comes back to this driver, it is a new job
      this.jobs.delete(message.messageId);
      return;
    }
    if (transit !== 'refused') {
      await pause(this.delay, this.aborter.signal);
      if (this.closed) return;
      this.log(`DRIVER: delivered ${message.orderId}`);
      const delivered = await this.report('delivered', message);
      if (this.closed) return;
      if (delivered === 'not-mine') {
        this.jobs.delete(message.messageId);
        return;
      }
      if (delivered !== 'refused') this.emit('delivered', message);
    }
    // done with it either way: a refused step will not succeed by trying again
    this.finished.add(message.messageId);
    this.jobs.get(message.messageId)?.ack({ ok: true });
    this.jobs.delete(message.messageId);
  }

  /** Publishes a step for a parcel; sends again until the hub answers. */
  private async report(event: ParcelEvent, message: ParcelMessage): Promise<PublishResult | 'refused' | 'not-mine' | undefined> {
    const payload = { store: message.store, orderId: message.orderId, customer: message.customer, address: message.address };
    const result = await publishUntilAnswered(this.socket, event, payload, {
      ackTimeoutMs: this.ackTimeoutMs,
      signal: this.aborter.signal,
      what: `${event} of ${message.orderId}`,
      problem: (text) => this.emitProblem(text),
    });
    if (!result) return undefined;
    if (result.ok) return result.data;
    if (result.error.code === 'CAPS_ERR_NOT_DISPATCHED') {
      this.emitProblem(`${event} for ${message.orderId} refused: the hub says it is not ours (any more)`);
      return 'not-mine';
    }
    this.emitProblem(`${event} for ${message.orderId} refused: ${describeFailure(result)}`);
    return 'refused';
  }

  private emitProblem(problem: string): void {
    if (this.closed) return;
    this.log(`DRIVER: ${problem}`);
    this.emit('problem', problem);
  }
}
