import type { CapsErrorCode } from '../../protocol/errors.js';
import type { ParcelMessage } from '../../protocol/messages.js';
import type { Order, ParcelEvent } from '../../protocol/schemas.js';

/** One step a client published, as the hub records it. */
export interface StepInput {
  event: ParcelEvent;
  store: string;
  orderId: string;
  customer?: string;
  address?: string;
  /** The driver who reported in-transit or delivered. */
  driver?: string;
  /** When the hub received it (ISO 8601). */
  time: string;
}

/** What became of a published step. Every outcome resolves only once it is durable. */
export type StepOutcome =
  | { status: 'accepted'; message: ParcelMessage }
  | { status: 'duplicate' }
  | { status: 'refused'; code: CapsErrorCode; reason: string };

/** What became of an acknowledgement. */
export type AckOutcome = 'removed' | 'already-acknowledged' | 'unknown-message' | 'unknown-queue';

export interface ParcelStep {
  event: ParcelEvent;
  time: string;
  driver?: string;
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

export type StoreKind = 'memory' | 'sqlite';

/**
 * Where the hub keeps parcels and queues. Every implementation passes the same contract tests
 * (tests/store-contract.test.ts).
 */
export interface QueueStore {
  readonly kind: StoreKind;
  /**
   * Validates a step against the parcel's state, records it and queues its message, atomically.
   * A step seen before (same store, orderId, event) is a duplicate: nothing is stored or queued.
   */
  recordStep(input: StepInput): Promise<StepOutcome>;
  /** Takes a message off its queue. */
  ack(queue: string, messageId: string): Promise<AckOutcome>;
  /** Every message still queued in `queue`, in sequence order. */
  pending(queue: string): Promise<ParcelMessage[]>;
  /** Every queue that has ever held a message, with its depth. */
  queues(): Promise<QueueInfo[]>;
  parcel(store: string, orderId: string): Promise<ParcelRecord | undefined>;
  /** Idempotent. */
  close(): Promise<void>;
}

export interface StoreLimits {
  /** Messages one queue may hold; past it, steps that would go into it are refused. */
  maxQueueDepth: number;
}

export const DEFAULT_LIMITS: StoreLimits = { maxQueueDepth: 10_000 };
