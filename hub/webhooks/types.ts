import type { EndpointCache } from './endpoint-cache.js';
import type { ParcelEvent } from '../../protocol/schemas.js';

/** Whether an endpoint is sent events: `disabled` after failing for too long, until enabled again. */
export type EndpointState = 'active' | 'disabled';

/** A store's registered webhook endpoint, as the outbox keeps it. */
export interface WebhookEndpoint {
  id: string;
  store: string;
  url: string;
  /** The events it is sent; undefined: every event, those added to PARCEL_EVENTS later too. */
  events: ParcelEvent[] | undefined;
  /** The HMAC key; never shown again after registration. */
  secret: string;
  /** Unix ms. */
  created: number;
  state: EndpointState;
  disabledReason: string | undefined;
  disabledAt: number | undefined;
  /** The first failure since the last success (unix ms): the clock of the disable rule. */
  failingSince: number | undefined;
  lastError: string | undefined;
  lastErrorAt: number | undefined;
  lastSuccessAt: number | undefined;
}

/** One event waiting for one endpoint. */
export interface PendingDelivery {
  /** The outbox row: increases with each row enqueued. */
  seq: number;
  endpointId: string;
  eventId: string;
  store: string;
  orderId: string;
  /** The exact bytes POSTed (and signed) on every attempt. */
  body: string;
  /** Attempts made so far. */
  attempts: number;
  /** A shared outbox's claim on it (this hub's, until it settles or the lease lapses); undefined: only this hub delivers. */
  claim?: string;
}

/** A step to enqueue for one endpoint. */
export interface NewDelivery {
  endpointId: string;
  eventId: string;
  store: string;
  orderId: string;
  /** The step's place in its parcel's history: the order a parcel's events go out in. */
  position: number;
  body: string;
}

/** The webhook event as POSTed: `data` is the step's message. */
export interface WebhookEvent {
  id: string;
  type: `parcel.${ParcelEvent}`;
  /** When the step was recorded (ISO 8601). */
  created: string;
  data: unknown;
}

/** How `saveEndpoint` may change an endpoint's state. */
export interface SaveOptions {
  /** `caps webhook enable`: active again, its failure clock reset. Without it a save never re-activates (another hub may have disabled it meanwhile). */
  enable?: boolean;
}

/**
 * Where endpoints and their pending deliveries are kept: SQLite (outbox.ts: one hub's file, or in
 * memory) or Redis (redis-outbox.ts: shared by every hub on it). The sender and the facade see
 * only this. Reads of endpoints are from memory (`endpoints`, `endpoint`: the publish path's);
 * deliveries are read a page at a time (`claim`), never all at once.
 */
export interface Outbox {
  /** Where it lives, for the start-up log: a file, `memory`, or `redis`. */
  readonly where: string;
  /**
   * Set when other hubs write to it too: the sender looks at it at least this often (their
   * enqueues do not wake this hub; a dead hub's claims lapse), in ms. Undefined: only this hub does.
   */
  readonly pollMs: number | undefined;
  /** Resolves once the endpoints are known (a shared outbox loads them from its backend). */
  ready(): Promise<void>;
  /** Starts following changes made elsewhere; `changed` is called when this hub's view of the endpoints changed. */
  start(changed: () => void): void;
  /** This hub's view of the endpoints (memory): what the publish path asks. */
  readonly cache: EndpointCache;
  /** Every endpoint, oldest first, as this hub knows them now (memory). */
  endpoints(): WebhookEndpoint[];
  endpoint(id: string): WebhookEndpoint | undefined;
  /** A store's endpoints as they are now (a shared outbox asks its backend: what another hub changed is seen at once). */
  endpointsOf(store: string): Promise<WebhookEndpoint[]>;
  /** Registers an endpoint; resolves once it is durable. */
  addEndpoint(endpoint: WebhookEndpoint): Promise<void>;
  /** Removes an endpoint and every delivery still waiting for it. */
  removeEndpoint(endpoint: WebhookEndpoint): Promise<void>;
  /** Saves an endpoint's state; one removed meanwhile stays removed. */
  saveEndpoint(endpoint: WebhookEndpoint, options?: SaveOptions): Promise<void>;
  /** Adds deliveries, idempotent by endpoint and event id (one pending, or delivered within the retention, is left alone); resolves once durable. */
  enqueue(deliveries: readonly NewDelivery[], now?: number): Promise<void>;
  /**
   * Up to `limit` deliveries of `endpointId` due at `now`, each the head of its parcel's line, none
   * of `inFlight` (this hub's attempts, by seq). A shared outbox claims them for this hub: no other
   * hub gets them until they settle, are released, or the claim's lease lapses (a dead hub's).
   */
  claim(endpointId: string, now: number, limit: number, inFlight: ReadonlySet<number>): Promise<PendingDelivery[]>;
  /** When the first delivery of `endpointId` due after `now` will be; undefined if none waits on a clock. */
  nextDue(endpointId: string, now: number): Promise<number | undefined>;
  /** A delivery succeeded: its parcel's next event, if any, is due at once. */
  delivered(delivery: PendingDelivery, now?: number): Promise<void>;
  /** A delivery failed: tried again at `nextAt`; its parcel's later events keep waiting. */
  retry(delivery: PendingDelivery, nextAt: number): Promise<void>;
  /** An attempt aborted (the hub closing): not counted, due again at once for whichever hub. */
  release(delivery: PendingDelivery): Promise<void>;
  /** Makes every parcel head of `endpointId` due now (an endpoint enabled again). */
  wake(endpointId: string, now?: number): Promise<void>;
  /** Deliveries of `endpoint` not delivered yet. */
  pending(endpoint: WebhookEndpoint): Promise<number>;
  /** Deliveries not delivered yet, every endpoint together (for /metrics). */
  pendingTotal(): Promise<number>;
  /** Forgets delivered events older than `before` (unix ms). */
  prune(before: number): Promise<void>;
  /** Stops following, commits what is waiting, closes. Idempotent. */
  close(): Promise<void>;
}
