import { randomUUID } from 'node:crypto';
import type { ParcelMessage } from '../../protocol/messages.js';
import { DRIVER_QUEUE } from '../../protocol/messages.js';
import { RecentIds } from '../../protocol/recent-ids.js';
import type { Order } from '../../protocol/schemas.js';
import type { AckOutcome, ParcelRecord, QueueInfo, StepInput, StepOutcome, StorageLimits } from './storage.js';
import { endedAt, isPlainHistory } from './storage.js';
import type { ParcelStep } from './storage.js';
import { PUBLISHED_BY, attemptOf, isDuplicate, move } from '../../protocol/lifecycle.js';
import type { StepDetails } from '../../protocol/schemas.js';

/**
 * A change to persist, in the order it happened. Values, not references to the core's live
 * parcels: a store may persist a change after later changes to the same parcel were made.
 */
export type Mutation =
  /** A step recorded and its message queued (`message.queueId`, `message.seq`). */
  | {
      kind: 'step';
      /** parcelKey(order.store, order.orderId), worked out once for the step. */
      key: string;
      order: Order;
      input: StepInput;
      /** The parcel's driver after the step. */
      driver: string | undefined;
      message: ParcelMessage;
      /**
       * The parcel's whole history after the step, when it is not the course's plain one (a
       * failure, a re-attempt, a cancel, details): SQLite keeps it so, and columns otherwise.
       */
      history?: ParcelStep[];
    }
  | { kind: 'ack'; queue: string; messageId: string; seq: number };

interface QueueState {
  lastSeq: number;
  /** messageId → message, in sequence order (Map keeps insertion order): a store's window. */
  messages: Map<string, ParcelMessage>;
  /** A store's messages past its window, in its log; they are after every message of the window. */
  spilled: number;
  /** The seq of the last message the window holds or has held: the log is read past it. */
  windowEnd: number;
}

/** How many acknowledged message ids to remember, to tell "already acknowledged" from "unknown". */
const RECENT_ACKS = 10_000;

export function parcelKey(store: string, orderId: string): string {
  return `${store}\u0000${orderId}`;
}

/**
 * The parcel state machine and the queues, in memory and synchronous. Both the memory storage and
 * the SQLite storage run their logic here, so they behave the same; SQLite persists the mutations.
 *
 * `loadParcel` lets a store keep only some parcels in memory and fetch the rest on demand.
 */
export class StorageCore {
  readonly parcels = new Map<string, ParcelRecord>();
  readonly queueStates = new Map<string, QueueState>();
  /** Ids acknowledged lately, to tell "already acknowledged" from "unknown". */
  private readonly recentAcks = new RecentIds(RECENT_ACKS);
  /** Pickups waiting in the driver queue, by store: each store's quota is `maxQueueDepth`. */
  private readonly waitingPickups = new Map<string, number>();
  /** parcelKey → the messageId of its pickup waiting in the driver pool (bounded by the pool). */
  private readonly pickupIds = new Map<string, string>();

  constructor(
    private readonly limits: StorageLimits,
    private readonly loadParcel: (store: string, orderId: string) => ParcelRecord | undefined = () => undefined,
    /** A message that went to the log past its store's window (the memory storage keeps it). */
    private readonly spill?: (queue: string, message: ParcelMessage) => void,
  ) {}

  getParcel(store: string, orderId: string, key = parcelKey(store, orderId)): ParcelRecord | undefined {
    let parcel = this.parcels.get(key);
    if (!parcel) {
      parcel = this.loadParcel(store, orderId);
      if (parcel) this.parcels.set(key, parcel);
    }
    return parcel;
  }

  recordStep(input: StepInput, mutations: Mutation[]): StepOutcome {
    const key = parcelKey(input.store, input.orderId);
    const existing = this.getParcel(input.store, input.orderId, key);
    const checked = checkStep(existing, input);
    // an authenticated driver learns nothing of parcels not given to it: one that does not exist is
    // "not dispatched" too. Its own step sent again is a duplicate, whatever became of the parcel
    // since (a failure sent it back to the pool, another driver has it): that retry is what
    // re-queues the step's webhooks
    if (input.dispatched === false && (!existing || existing.driver !== input.driver)) {
      const own = checked.status === 'duplicate' && existing?.history.some((step) => step.event === input.event && step.driver === input.driver);
      if (!own) return { status: 'refused', code: 'CAPS_ERR_NOT_DISPATCHED', reason: `order ${input.orderId} of ${input.store} was not dispatched to ${input.driver ?? 'this driver'}` };
    }
    if (checked.status !== 'ok') return checked;
    const { attempt, reattempt } = checked;

    let parcel: ParcelRecord;
    if (input.event === 'pickup') {
      if (input.customer === undefined || input.address === undefined) {
        return { status: 'refused', code: 'CAPS_ERR_INVALID_PAYLOAD', reason: 'a pickup needs customer and address' };
      }
      parcel = {
        order: { store: input.store, orderId: input.orderId, customer: input.customer, address: input.address },
        state: 'pickup',
        history: [],
      };
    } else {
      parcel = existing as ParcelRecord;
    }

    const queue = input.event === 'pickup' ? DRIVER_QUEUE : input.store;
    const state = this.queueState(queue);
    if (input.event !== 'pickup' && input.unacknowledged === true && state.spilled === 0 && state.messages.size >= this.limits.maxQueueDepth) {
      return { status: 'refused', code: 'CAPS_ERR_QUEUE_FULL', reason: `queue ${queue} holds ${state.messages.size} messages its vendors have not acknowledged, its limit` };
    }
    if (input.event === 'pickup' || reattempt) {
      // the drivers' queue is shared: each store has its own quota of it, so a flood refuses only its own store
      const refused = this.pickupRoom(input.store);
      if (refused) return refused;
    }

    parcel.state = checked.state;
    if (input.driver !== undefined) parcel.driver = input.driver;
    parcel.history.push(historyStep(input.event, input.time, input.driver, attempt, input.details));
    if (!existing) this.parcels.set(key, parcel);
    // a copy of the list: its steps are never changed once pushed
    const history = isPlainHistory(parcel.history) ? undefined : parcel.history.slice();

    state.lastSeq += 1;
    const message = buildMessage(parcel.order, input, queue, state.lastSeq, undefined, attempt, reattempt);
    // a store's vendors behind by a window: the message waits in the log, after those already there
    // and with none of its vendors online, nothing of it is held in memory at all; vendors that
    // never acknowledge would never drain a window: theirs is held up to --max-queue, then refused
    const spilled = queue !== DRIVER_QUEUE && (state.spilled > 0 || input.toLog === true || (state.messages.size >= this.limits.window && input.unacknowledged !== true));
    if (spilled) {
      state.spilled++;
      this.spill?.(queue, message);
    } else {
      state.messages.set(message.messageId, message);
      state.windowEnd = message.seq;
    }
    if (queue === DRIVER_QUEUE) {
      this.countPickup(input.store, 1);
      this.pickupIds.set(key, message.messageId);
    }
    mutations.push({ kind: 'step', key, order: parcel.order, input, driver: parcel.driver, message, ...(history ? { history } : {}) });
    // a driver's step says its attempt's pickup reached a driver: it leaves the pool in the same
    // commit (as with Redis), so no restart can hand it out again
    if (PUBLISHED_BY[input.event] === 'driver') this.settlePickup(key, attempt, mutations);
    const outcome: StepOutcome = { status: 'accepted', message, pickedUpAt: parcel.history[0]?.time ?? input.time, ...(spilled ? { spilled: true } : {}) };

    if (reattempt) {
      // the failed attempt goes back to the driver pool as the next attempt's pickup, in the same commit
      delete parcel.driver;
      const next = attempt + 1;
      const pickup: StepInput = { event: 'pickup', store: input.store, orderId: input.orderId, time: input.time };
      parcel.history.push(historyStep('pickup', input.time, undefined, next, undefined));
      const pool = this.queueState(DRIVER_QUEUE);
      pool.lastSeq += 1;
      const requeued = buildMessage(parcel.order, pickup, DRIVER_QUEUE, pool.lastSeq, undefined, next);
      pool.messages.set(requeued.messageId, requeued);
      pool.windowEnd = requeued.seq;
      this.countPickup(input.store, 1);
      this.pickupIds.set(key, requeued.messageId);
      mutations.push({ kind: 'step', key, order: parcel.order, input: { ...pickup, attempt: next }, driver: undefined, message: requeued, history: parcel.history.slice() });
      outcome.requeued = requeued;
    }
    if (input.event === 'cancelled') {
      // a pickup no driver has taken yet leaves the pool with the cancel: no driver is sent it
      const waiting = this.pickupIds.get(key);
      if (waiting !== undefined && this.ack(DRIVER_QUEUE, waiting, mutations) === 'removed') outcome.withdrawn = waiting;
    }
    return outcome;
  }

  /** A pickup's room in the driver pool: its store's quota, then the hub's own bound. */
  private pickupRoom(store: string): StepOutcome | undefined {
    const waiting = this.waitingPickups.get(store) ?? 0;
    if (waiting >= this.limits.maxQueueDepth) {
      return { status: 'refused', code: 'CAPS_ERR_QUEUE_FULL', reason: `store ${store} has ${waiting} pickups waiting for drivers, its quota` };
    }
    const size = this.queueStates.get(DRIVER_QUEUE)?.messages.size ?? 0;
    if (size >= this.limits.maxPickups) {
      return { status: 'refused', code: 'CAPS_ERR_QUEUE_FULL', reason: `${size} pickups wait for drivers, the hub's limit` };
    }
    return undefined;
  }

  /** The pickup of this parcel's `attempt` (or an earlier one) leaves the pool, if it is still there. */
  private settlePickup(key: string, attempt: number, mutations: Mutation[]): void {
    const id = this.pickupIds.get(key);
    const message = id === undefined ? undefined : this.queueStates.get(DRIVER_QUEUE)?.messages.get(id);
    if (id !== undefined && message && (message.attempt ?? 1) <= attempt) this.ack(DRIVER_QUEUE, id, mutations);
  }

  /**
   * Removes up to `limit` parcels whose story ended before `before` from memory, walking from the
   * oldest pickup and stopping at the first picked up after `before` (none after can have ended
   * before it). `keep(key)` vetoes a removal.
   */
  pruneEnded(before: string, limit: number, keep: (key: string) => boolean = () => false): number {
    let removed = 0;
    for (const [key, parcel] of this.parcels) {
      if (removed >= limit || (parcel.history[0]?.time ?? '') >= before) break;
      const ended = endedAt(parcel);
      if (ended === undefined || ended >= before || keep(key)) continue;
      this.parcels.delete(key);
      removed++;
    }
    return removed;
  }

  /** Every parcel in memory (the memory storage holds them all). */
  allParcels(): IterableIterator<ParcelRecord> {
    return this.parcels.values();
  }

  ack(queue: string, messageId: string, mutations: Mutation[]): AckOutcome {
    const state = this.queueStates.get(queue);
    if (!state) return 'unknown-queue';
    const message = state.messages.get(messageId);
    if (message) {
      state.messages.delete(messageId);
      if (queue === DRIVER_QUEUE) {
        this.countPickup(message.store, -1);
        const key = parcelKey(message.store, message.orderId);
        if (this.pickupIds.get(key) === messageId) this.pickupIds.delete(key);
      }
      this.recentAcks.add(messageId);
      mutations.push({ kind: 'ack', queue, messageId, seq: message.seq });
      return 'removed';
    }
    return this.recentAcks.has(messageId) ? 'already-acknowledged' : 'unknown-message';
  }

  pending(queue: string): ParcelMessage[] {
    return [...(this.queueStates.get(queue)?.messages.values() ?? [])];
  }

  queues(): QueueInfo[] {
    return [...this.queueStates.entries()].map(([queue, state]) => {
      const oldest = state.messages.values().next().value;
      return { queue, depth: state.messages.size + state.spilled, ...(oldest ? { oldest: oldest.time } : {}) };
    });
  }

  logDepth(queue: string): number {
    return this.queueStates.get(queue)?.spilled ?? 0;
  }

  /** True when a store's window has room for a page of its log (half of it free) and the log has some. */
  wantsPage(queue: string): boolean {
    const state = this.queueStates.get(queue);
    return state !== undefined && state.spilled > 0 && state.messages.size <= this.limits.window / 2;
  }

  /** Where to read the log from, and how much: past the window's end, up to a full window. */
  pageRequest(queue: string): { afterSeq: number; limit: number } | undefined {
    const state = this.queueStates.get(queue);
    if (!state || state.spilled === 0) return undefined;
    return { afterSeq: state.windowEnd, limit: Math.min(state.spilled, this.limits.window - state.messages.size) };
  }

  /** Messages read from the log (in order, past the window's end) join the window. */
  pageIn(queue: string, messages: ParcelMessage[]): ParcelMessage[] {
    const state = this.queueStates.get(queue);
    if (!state) return [];
    const taken: ParcelMessage[] = [];
    for (const message of messages) {
      if (message.seq <= state.windowEnd || state.spilled === 0) continue;
      state.messages.set(message.messageId, message);
      state.windowEnd = message.seq;
      state.spilled--;
      taken.push(message);
    }
    return taken;
  }

  /** For stores that load their queues at start: the window, and how many wait past it in the log. */
  restoreQueue(queue: string, lastSeq: number, messages: ParcelMessage[], spilled = 0): void {
    const windowEnd = messages.at(-1)?.seq ?? 0;
    this.queueStates.set(queue, { lastSeq, messages: new Map(messages.map((m) => [m.messageId, m])), spilled, windowEnd });
    if (queue === DRIVER_QUEUE) {
      for (const m of messages) {
        this.countPickup(m.store, 1);
        this.pickupIds.set(parcelKey(m.store, m.orderId), m.messageId);
      }
    }
  }

  private countPickup(store: string, delta: number): void {
    const n = (this.waitingPickups.get(store) ?? 0) + delta;
    if (n > 0) this.waitingPickups.set(store, n);
    else this.waitingPickups.delete(store);
  }

  private queueState(queue: string): QueueState {
    let state = this.queueStates.get(queue);
    if (!state) {
      state = { lastSeq: 0, messages: new Map(), spilled: 0, windowEnd: 0 };
      this.queueStates.set(queue, state);
    }
    return state;
  }
}

/**
 * The outbound message: the order's fields at top level and under `order`, for every lab client.
 * `reattempt`, for a failed step, says whether the parcel went back to the driver pool (ignored for
 * any other step).
 */
export function buildMessage(
  order: Order,
  input: Pick<StepInput, 'event' | 'time' | 'driver' | 'details'>,
  queue: string,
  seq: number,
  messageId: string = randomUUID(),
  attempt = 1,
  reattempt?: boolean,
): ParcelMessage {
  // one literal of a fixed shape, no spreads: this runs for every event
  const { store, orderId, customer, address } = order;
  const message: ParcelMessage = {
    store,
    orderId,
    customer,
    address,
    event: input.event,
    messageId,
    seq,
    queueId: queue,
    clientId: queue,
    // the parcel's own order, shared by its messages: it never changes once picked up
    order,
    time: input.time,
  };
  if (input.driver !== undefined) message.driver = input.driver;
  if (attempt > 1) message.attempt = attempt;
  if (input.details !== undefined) message.details = input.details;
  if (reattempt !== undefined && input.event === 'failed') message.reattempt = reattempt;
  return message;
}

/** A history step, with only the fields it has. */
function historyStep(event: ParcelStep['event'], time: string, driver: string | undefined, attempt: number, details: StepDetails | undefined): ParcelStep {
  const step: ParcelStep = { event, time };
  if (driver !== undefined) step.driver = driver;
  if (attempt > 1) step.attempt = attempt;
  if (details !== undefined) step.details = details;
  return step;
}

/** What the lifecycle makes of a step on this parcel: a move (with the attempt it belongs to), a duplicate, or a refusal. */
export type StepCheck =
  | { status: 'ok'; state: ParcelRecord['state']; attempt: number; reattempt: boolean }
  | { status: 'duplicate' }
  | { status: 'refused'; code: 'CAPS_ERR_UNKNOWN_PARCEL' | 'CAPS_ERR_OUT_OF_ORDER'; reason: string };

/** The lifecycle's judgement of `input` on `parcel` (protocol/lifecycle.ts), for every storage. */
export function checkStep(parcel: Pick<ParcelRecord, 'state' | 'history'> | undefined, input: Pick<StepInput, 'event' | 'orderId' | 'store' | 'attempt' | 'details' | 'maxAttempts'>): StepCheck {
  if (!parcel) {
    if (input.event !== 'pickup') return { status: 'refused', code: 'CAPS_ERR_UNKNOWN_PARCEL', reason: `no pickup was recorded for order ${input.orderId} of ${input.store}` };
    return { status: 'ok', state: 'pickup', attempt: 1, reattempt: false };
  }
  const attempt = attemptOf(parcel.history);
  if (isDuplicate(parcel.history, parcel.state, input.event, input.attempt, attempt)) return { status: 'duplicate' };
  if (input.attempt !== undefined && input.attempt !== attempt) {
    return { status: 'refused', code: 'CAPS_ERR_OUT_OF_ORDER', reason: `order ${input.orderId} is on attempt ${attempt}, not ${input.attempt}` };
  }
  const moved = move(parcel.state, input.event, attempt, input.maxAttempts, input.details?.reason);
  if (!moved.ok) return { status: 'refused', code: 'CAPS_ERR_OUT_OF_ORDER', reason: `order ${input.orderId} of ${input.store}: ${moved.reason}` };
  return { status: 'ok', state: moved.state, attempt, reattempt: moved.reattempt };
}

/** What the memory and SQLite backends answer straight from their in-memory core. */
export abstract class CoreBackedStorage {
  protected abstract readonly core: StorageCore;

  async pending(queue: string): Promise<ParcelMessage[]> {
    return this.core.pending(queue);
  }

  async queues(): Promise<QueueInfo[]> {
    return this.core.queues();
  }

  async parcel(store: string, orderId: string): Promise<ParcelRecord | undefined> {
    const parcel = this.core.getParcel(store, orderId);
    // a copy: callers must not change the core's state behind its back
    return parcel && structuredClone(parcel);
  }
}
