import { PARCEL_EVENTS } from '../../protocol/lifecycle.js';
import type { ParcelMessage } from '../../protocol/messages.js';
import type { Order, ParcelEvent, StepDetails } from '../../protocol/schemas.js';
import type { Mutation } from './storage-core.js';
import { buildMessage, parcelKey } from './storage-core.js';
import type { ParcelStep, StepInput } from './storage.js';

/**
 * The SQLite storage's journal: what one commit changed, as one compact row, so that a commit (and
 * the fsync before its callers are answered) writes a few pages at the end of one table instead of
 * rows of three tables at random places. The tables catch up later, many commits at a time
 * (`foldPlan`), and a message taken off its queue before then is never written to them at all.
 *
 * A row's text is a JSON array of records, tagged by their first element:
 * - `[0, event, store, orderId, customer, address, time, stepDriver, parcelDriver, queue, seq, messageId, more?]`:
 *   a step recorded and its message queued (the message is rebuilt from these fields); `more`, only
 *   for a step beyond the course's plain three, holds its attempt, details, whether a failure went
 *   back to the pool, and the parcel's whole history after it (StepMore);
 * - `[1, queue, seq, messageId]`: a message taken off its queue.
 */
type StepRecord = [0, ParcelEvent, string, string, string, string, string, string | null, string | null, string, number, string, StepMore?];
/** What a step beyond the course's plain three adds to its record. */
interface StepMore {
  /** The message's attempt, from the second on. */
  a?: number;
  d?: StepDetails;
  /** A failed step: it went back to the driver pool. */
  r?: boolean;
  /** The parcel's whole history after the step. */
  h?: ParcelStep[];
}
type AckRecord = [1, string, number, string];

export function encodeJournal(mutations: readonly Mutation[]): string {
  const records: Array<StepRecord | AckRecord> = [];
  for (const m of mutations) {
    if (m.kind === 'step') {
      const { order, input, message } = m;
      const record: StepRecord = [0, input.event, order.store, order.orderId, order.customer, order.address, input.time, input.driver ?? null, m.driver ?? null, message.queueId, message.seq, message.messageId];
      if (m.history !== undefined || message.attempt !== undefined || message.details !== undefined || message.reattempt !== undefined) {
        const more: StepMore = {};
        if (message.attempt !== undefined) more.a = message.attempt;
        if (message.details !== undefined) more.d = message.details;
        if (message.reattempt !== undefined) more.r = message.reattempt;
        if (m.history !== undefined) more.h = m.history;
        record.push(more);
      }
      records.push(record);
    } else {
      records.push([1, m.queue, m.seq, m.messageId]);
    }
  }
  return JSON.stringify(records);
}

/** The mutations of one journal row; throws on a row that is not one `encodeJournal` wrote. */
export function decodeJournal(text: string): Mutation[] {
  const records = JSON.parse(text) as unknown;
  if (!Array.isArray(records)) throw new Error('a journal row is not an array');
  return records.map((record: unknown): Mutation => {
    if (isStepRecord(record)) {
      const [, event, store, orderId, customer, address, time, stepDriver, parcelDriver, queue, seq, messageId, more] = record;
      const order: Order = { store, orderId, customer, address };
      const input: StepInput = { event, store, orderId, time };
      if (event === 'pickup') {
        input.customer = customer;
        input.address = address;
      }
      if (stepDriver !== null) input.driver = stepDriver;
      if (more?.a !== undefined) input.attempt = more.a;
      if (more?.d !== undefined) input.details = more.d;
      const message = buildMessage(order, input, queue, seq, messageId, more?.a, more?.r);
      const mutation: Mutation = { kind: 'step', key: parcelKey(store, orderId), order, input, driver: parcelDriver ?? undefined, message };
      if (more?.h !== undefined) mutation.history = more.h;
      return mutation;
    }
    if (isAckRecord(record)) return { kind: 'ack', queue: record[1], seq: record[2], messageId: record[3] };
    throw new Error(`a journal record is not a step or an ack: ${JSON.stringify(record).slice(0, 200)}`);
  });
}

function isStepRecord(r: unknown): r is StepRecord {
  return (
    Array.isArray(r) && (r.length === 12 || (r.length === 13 && typeof r[12] === 'object' && r[12] !== null && !Array.isArray(r[12]))) && r[0] === 0 &&
    (PARCEL_EVENTS as readonly unknown[]).includes(r[1]) &&
    [2, 3, 4, 5, 6, 9, 11].every((i) => typeof r[i] === 'string') && [7, 8].every((i) => r[i] === null || typeof r[i] === 'string') && Number.isInteger(r[10])
  );
}

function isAckRecord(r: unknown): r is AckRecord {
  return Array.isArray(r) && r.length === 4 && r[0] === 1 && typeof r[1] === 'string' && Number.isInteger(r[2]) && typeof r[3] === 'string';
}

/** A parcel's row as the steps of one fold leave it; the step columns only where a step of the fold set them. */
export interface ParcelChange {
  order: Order;
  state: ParcelEvent;
  driver: string | null;
  /** Set when the pickup is in this fold: the row is new. */
  pickedUpAt?: string;
  inTransitAt?: string;
  inTransitDriver?: string | null;
  deliveredAt?: string;
  deliveredDriver?: string | null;
  /** The whole history as JSON, once the parcel's story is more than the course's three steps. */
  history?: string;
}

/** What a run of mutations leaves in the tables, written in one go. */
export interface FoldPlan {
  parcels: ParcelChange[];
  /** Messages still queued at the end of the run: to insert. */
  queued: ParcelMessage[];
  /** Messages queued before the run and taken off in it: to delete. */
  removed: Array<{ queue: string; seq: number; messageId: string }>;
  /** Each queue's last seq. */
  lastSeqs: Map<string, number>;
}

/**
 * The net effect of mutations, added in order as they are committed: one change per parcel however
 * many steps it took, and a message queued and taken off within the run is neither inserted nor
 * deleted.
 */
export class FoldPlanBuilder {
  private parcels = new Map<string, ParcelChange>();
  private queued = new Map<string, ParcelMessage>();
  private removed: FoldPlan['removed'] = [];
  private lastSeqs = new Map<string, number>();
  /** Mutations added since the last take(). */
  size = 0;

  add(m: Mutation): void {
    this.size++;
    if (m.kind === 'ack') {
      if (!this.queued.delete(`${m.queue}\u0000${m.seq}`)) this.removed.push({ queue: m.queue, seq: m.seq, messageId: m.messageId });
      return;
    }
    const { key, order, input, message } = m;
    let change = this.parcels.get(key);
    if (!change) {
      change = { order, state: input.event, driver: null };
      this.parcels.set(key, change);
    }
    // a failed step that goes back to the pool leaves the parcel waiting: its pickup comes next
    change.state = m.message.reattempt === true ? 'pickup' : input.event;
    change.driver = m.driver ?? null;
    if (m.history !== undefined) change.history = JSON.stringify(m.history);
    // a re-attempt's pickup is in the history; created_at stays the first pickup's
    if (input.event === 'pickup' && (m.message.attempt ?? 1) === 1) change.pickedUpAt = input.time;
    else if (input.event === 'in-transit') {
      change.inTransitAt = input.time;
      change.inTransitDriver = input.driver ?? null;
    } else if (input.event === 'delivered') {
      change.deliveredAt = input.time;
      change.deliveredDriver = input.driver ?? null;
    }
    this.queued.set(`${message.queueId}\u0000${message.seq}`, message);
    this.lastSeqs.set(message.queueId, message.seq);
  }

  /** True when a mutation added since the last take() changed this parcel (parcelKey). */
  changed(key: string): boolean {
    return this.parcels.has(key);
  }

  /** The plan of everything added, and a fresh start. */
  take(): FoldPlan {
    const plan: FoldPlan = { parcels: [...this.parcels.values()], queued: [...this.queued.values()], removed: this.removed, lastSeqs: this.lastSeqs };
    this.parcels = new Map();
    this.queued = new Map();
    this.removed = [];
    this.lastSeqs = new Map();
    this.size = 0;
    return plan;
  }
}

/** The net effect of `mutations`, in order (FoldPlanBuilder over all of them). */
export function foldPlan(mutations: readonly Mutation[]): FoldPlan {
  const builder = new FoldPlanBuilder();
  for (const m of mutations) builder.add(m);
  return builder.take();
}

/** How far the writes of a plan have gone: its parcels, then queued messages, then removed ones. */
export interface PlanProgress {
  parcels: number;
  queued: number;
  removed: number;
}

/**
 * Runs up to `budget` of a plan's writes (queue seqs, a few, at the very end), resuming where
 * `progress` stands; true once every write is done.
 */
export function applySome(plan: FoldPlan, progress: PlanProgress, budget: number, writes: PlanWrites): boolean {
  let left = budget;
  for (; progress.parcels < plan.parcels.length && left > 0; progress.parcels++, left--) writes.parcel(plan.parcels[progress.parcels] as ParcelChange);
  for (; progress.queued < plan.queued.length && left > 0; progress.queued++, left--) writes.queued(plan.queued[progress.queued] as ParcelMessage);
  for (; progress.removed < plan.removed.length && left > 0; progress.removed++, left--) writes.removed(plan.removed[progress.removed] as FoldPlan['removed'][number]);
  if (left === 0 && (progress.parcels < plan.parcels.length || progress.queued < plan.queued.length || progress.removed < plan.removed.length)) return false;
  for (const [queue, lastSeq] of plan.lastSeqs) writes.lastSeq(queue, lastSeq);
  return true;
}

/** The statements a plan's writes go to. */
export interface PlanWrites {
  parcel(change: ParcelChange): void;
  queued(message: ParcelMessage): void;
  removed(message: { queue: string; seq: number; messageId: string }): void;
  lastSeq(queue: string, seq: number): void;
}
