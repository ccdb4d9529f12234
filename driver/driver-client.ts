import { EventEmitter } from 'node:events';
import type { CapsClientSocket } from '../protocol/connect.js';
import { abortController, connectCaps, currentHub, describeFailure, pause, publishUntilAnswered, refusalOf, waitConnected } from '../protocol/connect.js';
import type { CapsErrorBody } from '../protocol/errors.js';
import type { MessageAck } from '../protocol/events.js';
import type { ParcelMessage, PublishResult } from '../protocol/messages.js';
import type { ParcelEvent, PublishPayload, StepDetails } from '../protocol/schemas.js';
import type { FailureReason } from '../protocol/lifecycle.js';
import { RecentIds } from '../protocol/recent-ids.js';
import { createHash } from 'node:crypto';

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
  /**
   * What becomes of each attempt: delivered, or a failure's reason. Default: delivered, but for a
   * share `failShare` of attempts that fail with a reason drawn from a real shop's mix.
   */
  outcome?: (message: ParcelMessage) => 'delivered' | FailureReason;
  /** Share of attempts that fail (0 to 1) when no `outcome` is given. Default 0. */
  failShare?: number;
  /**
   * While carrying parcels, send a (simulated) position this often, in ms: the van drives about
   * town from `start`. Default 0: never (a real driver app sends its GPS fix).
   */
  locationEveryMs?: number;
  /** Where the simulated van starts. Default: near Seattle's centre, a little apart per driver. */
  start?: { lat: number; lng: number };
}

/** The simulated van's speed, in metres per second (about 30 km/h in town). */
const VAN_SPEED = 8;
const METRES_PER_DEGREE = 111_320;

/** Why attempts fail, roughly as often as they do: nobody home by far the most. */
const FAILURES: readonly FailureReason[] = ['recipient-absent', 'recipient-absent', 'recipient-absent', 'access-denied', 'address-not-found', 'refused'];

export interface DriverEvents {
  'picked-up': [ParcelMessage];
  delivered: [ParcelMessage];
  /** An attempt failed: the message, and its reason. */
  failed: [ParcelMessage, FailureReason];
  /** A failed parcel handed back to its store. */
  returned: [ParcelMessage];
  /** The store cancelled a parcel this driver holds. */
  cancelled: [ParcelMessage];
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
  /** Parcels (store and orderId) the store cancelled while this driver held them. */
  private readonly cancelled = new RecentIds(10_000);
  private readonly outcome: (message: ParcelMessage) => 'delivered' | FailureReason;
  /** The simulated van: where it is and which way it heads (degrees clockwise from north). */
  private position: { lat: number; lng: number; heading: number };
  private locationTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly aborter = abortController();
  private closing: Promise<void> | undefined;

  constructor(private readonly options: DriverOptions) {
    super();
    this.log = options.log ?? ((line) => console.log(line));
    this.delay = options.delay ?? 1_000;
    this.ackTimeoutMs = options.ackTimeoutMs ?? 5_000;
    const failShare = options.failShare ?? 0;
    this.outcome = options.outcome ?? (() => (Math.random() < failShare ? (FAILURES[Math.floor(Math.random() * FAILURES.length)] ?? 'other') : 'delivered'));
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
    this.position = { ...(options.start ?? { lat: 47.6062 + (Math.random() - 0.5) * 0.02, lng: -122.3321 + (Math.random() - 0.5) * 0.02 }), heading: Math.floor(Math.random() * 360) };
    if ((options.locationEveryMs ?? 0) > 0) {
      this.locationTimer = setInterval(() => this.drive((options.locationEveryMs ?? 0) / 1000), options.locationEveryMs);
      // prevents the timer from keeping the process alive
      this.locationTimer.unref();
    }
    this.socket.on('pickup', (message, ack) => this.onPickup(message, ack));
    this.socket.on('cancelled', (message) => {
      if (!this.cancelled.add(`${message.store}\u0000${message.orderId}`)) return;
      this.log(`DRIVER: ${options.name} was told ${message.orderId} is cancelled; taking it back`);
      this.emit('cancelled', message);
    });
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
      clearInterval(this.locationTimer);
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
    const transit = await this.report('in-transit', message, { eta: new Date(Date.now() + this.delay).toISOString() });
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
      const ended = this.cancelled.has(`${message.store}\u0000${message.orderId}`) ? 'cancelled' : await this.attempt(message);
      if (ended === 'not-mine') {
        this.jobs.delete(message.messageId);
        return;
      }
    }
    // done with it either way: a refused step will not succeed by trying again
    this.finished.add(message.messageId);
    this.jobs.get(message.messageId)?.ack({ ok: true });
    this.jobs.delete(message.messageId);
  }

  /** At the door: delivered with its proof, or failed with a reason (and, with no attempt left, taken back). */
  private async attempt(message: ParcelMessage): Promise<'done' | 'not-mine' | 'cancelled'> {
    const outcome = this.outcome(message);
    if (outcome === 'delivered') {
      this.log(`DRIVER: delivered ${message.orderId}`);
      // the proof is a reference: here, the hash of what the recipient signed, never the image
      const signature = `sha256:${createHash('sha256').update(`${message.orderId}:${message.customer}`).digest('hex')}`;
      const delivered = await this.report('delivered', message, { recipient: message.customer, signature });
      if (delivered === 'not-mine') return 'not-mine';
      if (delivered !== 'refused') this.emit('delivered', message);
      return 'done';
    }
    this.log(`DRIVER: could not deliver ${message.orderId} (${outcome})`);
    const failed = await this.report('failed', message, { reason: outcome, note: `attempt ${message.attempt ?? 1} by ${this.options.name}` });
    if (failed === 'not-mine') return 'not-mine';
    if (failed === 'refused' || failed === undefined) return 'done';
    this.emit('failed', message, outcome);
    // no attempt left (or a refusal, damage): the parcel goes back to its store
    if (failed.reattempt === false) {
      await pause(this.delay, this.aborter.signal);
      if (this.closed) return 'done';
      const returned = await this.report('returned', message, { note: 'back at the store' });
      if (returned !== 'refused' && returned !== 'not-mine' && returned !== undefined) {
        this.log(`DRIVER: returned ${message.orderId} to ${message.store}`);
        this.emit('returned', message);
      }
    }
    return 'done';
  }

  /**
   * The simulated van moves on for `seconds` (turning a little now and then) and, while it carries
   * parcels, says where it is: the hub keeps the latest and tells the stores whose parcels it carries.
   */
  private drive(seconds: number): void {
    if (this.jobs.size === 0 || !this.socket.connected) return;
    const p = this.position;
    p.heading = (p.heading + (Math.random() - 0.5) * 40 + 360) % 360;
    const metres = VAN_SPEED * seconds;
    const rad = (p.heading * Math.PI) / 180;
    p.lat = Math.max(-89, Math.min(89, p.lat + (metres * Math.cos(rad)) / METRES_PER_DEGREE));
    p.lng = ((p.lng + (metres * Math.sin(rad)) / (METRES_PER_DEGREE * Math.cos((p.lat * Math.PI) / 180)) + 540) % 360) - 180;
    this.socket.emit('location', { lat: p.lat, lng: p.lng, heading: Math.round(p.heading), speed: VAN_SPEED });
  }

  /** Publishes a step for a parcel; sends again until the hub answers. */
  private async report(event: ParcelEvent, message: ParcelMessage, details: StepDetails = {}): Promise<PublishResult | 'refused' | 'not-mine' | undefined> {
    // the attempt the pickup named: a step re-sent late never lands on a later attempt
    const payload: PublishPayload = { store: message.store, orderId: message.orderId, customer: message.customer, address: message.address, attempt: message.attempt ?? 1, ...details };
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
