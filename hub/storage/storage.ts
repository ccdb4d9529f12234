import type { CapsErrorCode } from '../../protocol/errors.js';
import type { ParcelMessage } from '../../protocol/messages.js';
import { COURSE_EVENTS, FINAL_STATES, PARCEL_EVENTS } from '../../protocol/lifecycle.js';

const COURSE: ReadonlySet<ParcelEvent> = new Set(COURSE_EVENTS);
import type { Order, ParcelEvent, StepDetails } from '../../protocol/schemas.js';

/** One step a client published, as the hub records it. */
export interface StepInput {
  /** A hint: none of the store's vendors is online, so its message goes to the log, not memory. */
  toLog?: boolean;
  /**
   * A hint: none of the store's vendors online acknowledges anything (a lab vendor that never says
   * received). Its window would never drain, so it is held in memory up to --max-queue, as before.
   */
  unacknowledged?: boolean;
  event: ParcelEvent;
  store: string;
  orderId: string;
  customer?: string;
  address?: string;
  /** The driver who reported in-transit or delivered. */
  driver?: string;
  /**
   * Set for an authenticated driver: whether the parcel's pickup was dispatched to it. When
   * false, the step is refused (CAPS_ERR_NOT_DISPATCHED) unless this driver already carries the
   * parcel, checked in the same atomic step as the record itself.
   */
  dispatched?: boolean;
  /** When the hub received it (ISO 8601). */
  time: string;
  /** The attempt the publisher names (absent: the current one); a step of an attempt over is refused. */
  attempt?: number;
  /** What the step tells beside the parcel (a failure's reason, a proof of delivery, an ETA). */
  details?: StepDetails;
  /** A failed step: the store's maximum of attempts (protocol/lifecycle.ts DEFAULT_MAX_ATTEMPTS). */
  maxAttempts?: number;
}

/** What became of a published step. Every outcome resolves only once it is durable. */
export type StepOutcome =
  /**
   * `spilled`: the message went to the store's log past what is held in memory (its vendors are
   * behind): stored, but sent only once `more()` pages it in.
   */
  | {
      status: 'accepted';
      message: ParcelMessage;
      pickedUpAt: string;
      spilled?: boolean;
      /** A failed attempt went back to the driver pool: the new attempt's pickup, queued for drivers. */
      requeued?: ParcelMessage;
      /**
       * A cancel took the parcel's pickup off the driver pool before any driver had it: its messageId.
       * (Redis: a pickup still waiting its turn in its store's list has no id yet; it is taken off, not reported.)
       */
      withdrawn?: string;
    }
  | { status: 'duplicate' }
  | { status: 'refused'; code: CapsErrorCode; reason: string };

/** What became of an acknowledgement. */
export type AckOutcome = 'removed' | 'already-acknowledged' | 'unknown-message' | 'unknown-queue';

export interface ParcelStep {
  event: ParcelEvent;
  time: string;
  driver?: string;
  /** The attempt it belongs to, from the second on (absent: the first). */
  attempt?: number;
  details?: StepDetails;
}

/** A parcel's state and history. */
export interface ParcelRecord {
  order: Order;
  state: ParcelEvent;
  driver?: string;
  history: ParcelStep[];
}

export interface QueueInfo {
  queue: string;
  depth: number;
  /** Time of the oldest message still queued. */
  oldest?: string;
}

export type StorageKind = 'memory' | 'sqlite' | 'redis';

/** Where a page of a store's parcels ends: the next page starts after this parcel. */
export interface ParcelCursor {
  /** The pickup time of the last parcel of the page. */
  t: string;
  /** Its orderId (ties on time are ordered by orderId). */
  id: string;
}

export interface ParcelPage {
  parcels: ParcelRecord[];
  next?: ParcelCursor;
}

export interface StoreSummary {
  store: string;
  counts: Record<ParcelEvent, number>;
}

/** A store's counts before any parcel is counted: every state, at 0. */
export function noCounts(): Record<ParcelEvent, number> {
  return Object.fromEntries(PARCEL_EVENTS.map((event) => [event, 0])) as Record<ParcelEvent, number>;
}

/** Newest first: by pickup time, then orderId, both descending. */
export function newestFirst(a: ParcelRecord, b: ParcelRecord): number {
  const ta = a.history[0]?.time ?? '';
  const tb = b.history[0]?.time ?? '';
  if (ta !== tb) return ta < tb ? 1 : -1;
  return a.order.orderId < b.order.orderId ? 1 : a.order.orderId > b.order.orderId ? -1 : 0;
}

/** True when `parcel` comes after `cursor` in newest-first order. */
export function isAfter(parcel: ParcelRecord, cursor: ParcelCursor): boolean {
  const t = parcel.history[0]?.time ?? '';
  return t < cursor.t || (t === cursor.t && parcel.order.orderId < cursor.id);
}

/**
 * Where the hub keeps parcels and queues. Every implementation passes the same contract tests
 * (tests/storage-contract.test.ts).
 */
export interface Storage {
  readonly kind: StorageKind;
  /**
   * Validates a step against the parcel's state, records it and queues its message, atomically.
   * A step seen before (same store, orderId, event) is a duplicate: nothing is stored or queued.
   */
  recordStep(input: StepInput): Promise<StepOutcome>;
  /** Takes a message off its queue. */
  ack(queue: string, messageId: string): Promise<AckOutcome>;
  /**
   * Every message still queued in `queue` and held in memory, in sequence order: a store's queue
   * holds at most a window of them; the rest wait in its log (see `more`).
   */
  pending(queue: string): Promise<ParcelMessage[]>;
  /**
   * The next messages of a store's log past its window, in order, now held in memory (their
   * vendors have caught up); none when nothing waits there.
   */
  more(queue: string): Promise<ParcelMessage[]>;
  /** How many of a store's messages wait in its log past its window (none with Redis). */
  inLog(queue: string): number;
  /** Every queue that has ever held a message, with its depth. */
  queues(): Promise<QueueInfo[]>;
  /**
   * Several hubs (Redis): each queue's version (its last seq and depth), read in one round trip.
   * A queue whose version is unchanged since a hub last read it holds what that hub saw.
   */
  queueVersions?(): Promise<Map<string, string>>;
  /**
   * Several hubs (Redis): a parcel's pickup was handed to this driver, so that its steps are taken
   * on whichever hub it reports them (one hub alone knows it in memory: `dispatched`).
   */
  noteDispatch?(store: string, orderId: string, driver: string): Promise<void>;
  parcel(store: string, orderId: string): Promise<ParcelRecord | undefined>;
  /** Every parcel with this orderId, whatever its store. */
  findParcels(orderId: string): Promise<ParcelRecord[]>;
  /** A store's parcels, newest first, optionally only those in one state. */
  listParcels(store: string, options: { status?: ParcelEvent; limit: number; after?: ParcelCursor }): Promise<ParcelPage>;
  /** Every store with parcels, and how many are in each state. */
  stores(): Promise<StoreSummary[]>;
  /**
   * Retention: removes up to `limit` parcels whose story ended (delivered, returned, cancelled)
   * before `before` (ISO 8601), with their history; parcels still under way are kept, however old. Messages still queued are
   * not touched (they carry their order). Resolves with how many were removed.
   */
  prune(before: string, limit: number): Promise<number>;
  /** Resolves when the store can take writes; rejects with the reason when it cannot. */
  ping(): Promise<void>;
  /** Idempotent. */
  close(): Promise<void>;
}

export interface StorageLimits {
  /**
   * Per store: pickups it may have waiting for drivers, and messages its vendors' queue may hold;
   * past it, that store's steps that would go into it are refused.
   */
  maxQueueDepth: number;
  /** Pickups waiting for drivers across every store: the hub's own bound, whatever the stores. */
  maxPickups: number;
  /**
   * Messages of one store's queue held in memory; past it, its vendors' messages wait in the log
   * (disk, for SQLite) and are paged in as the vendors acknowledge. A driver's step is never
   * refused because a store's vendors are behind.
   */
  window: number;
}

export const DEFAULT_LIMITS: StorageLimits = { maxQueueDepth: 10_000, maxPickups: 100_000, window: 2_000 };

/** When a parcel's story ended (delivered, returned or cancelled), if it has. */
export function endedAt(parcel: ParcelRecord): string | undefined {
  return FINAL_STATES.has(parcel.state) ? parcel.history.findLast((step) => step.event === parcel.state)?.time : undefined;
}

/**
 * True when a parcel took only the course's steps, once each, with nothing beside them: the
 * storages keep such a parcel's history as it always was (SQLite: columns of its row), and only
 * the others' in full.
 */
export function isPlainHistory(history: readonly ParcelStep[]): boolean {
  for (const step of history) {
    if (step.details !== undefined || step.attempt !== undefined) return false;
    if (!COURSE.has(step.event)) return false;
  }
  return true;
}

/** Cuts `limit + 1` sorted parcels into a page and the cursor of the next one. */
export function page(parcels: ParcelRecord[], limit: number): ParcelPage {
  if (parcels.length <= limit) return { parcels };
  const shown = parcels.slice(0, limit);
  const last = shown[shown.length - 1];
  return last ? { parcels: shown, next: { t: last.history[0]?.time ?? '', id: last.order.orderId } } : { parcels: shown };
}
