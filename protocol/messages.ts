import type { Order, ParcelEvent, StepDetails } from './schemas.js';

/**
 * A message the hub sends to a client. It carries the order's fields at top level and under
 * `order`, plus `event`, `messageId`, `clientId` and `queueId`, so that every course client
 * variant reads what it expects (`payload.orderId`, `payload.order.orderId`, `payload.messageId`).
 */
export interface ParcelMessage extends Order {
  event: ParcelEvent;
  /** Unique per message; clients dedupe on it. */
  messageId: string;
  /** Position in the queue it travels through; increases by one per message in that queue. */
  seq: number;
  /** The queue the message travels through: a store's name, or the driver pool. */
  queueId: string;
  /** Same as queueId: the lab reads `clientId`. */
  clientId: string;
  order: Order;
  /** When the hub recorded the step (ISO 8601). */
  time: string;
  /** The driver who reported the step, for in-transit and delivered. */
  driver?: string;
  /** The attempt the step belongs to, from the second on (absent: the first). */
  attempt?: number;
  /** What the step told: a failure's reason, a proof of delivery, an ETA (protocol/lifecycle.ts). */
  details?: StepDetails;
  /** A failed step: true when the parcel went back to the driver pool for another attempt. */
  reattempt?: boolean;
}

/** Answer to a publish once the hub has accepted it. */
export interface PublishResult {
  event: ParcelEvent;
  store: string;
  orderId: string;
  /** True when this exact step was published before: acknowledged, not relayed again. */
  duplicate: boolean;
  /** A failed step newly recorded: true when the parcel went back to the drivers, false when it goes back to its store. */
  reattempt?: boolean;
}

/** Answer to join and leave. */
export interface JoinResult {
  role: ClientRole;
  /** The room joined or left: a store's name, or the driver pool. */
  room: string;
}

export interface ReceivedResult {
  queue: string;
  messageId: string;
  /** False when the message was not (or no longer) queued: nothing to remove. */
  removed: boolean;
}

export interface GetAllResult {
  queue: string;
  /** How many messages were sent again. */
  sent: number;
}

/** Who a connection is. `unknown` is a lab client that has not said yet; `tracker` a customer's tracking page. */
export type ClientRole = 'vendor' | 'driver' | 'dashboard' | 'tracker' | 'unknown';

/** The queue every driver takes pickups from. */
export const DRIVER_QUEUE = 'driver';

/** A recorded step as dashboards see it, live. */
export interface ParcelUpdate {
  event: ParcelEvent;
  store: string;
  orderId: string;
  customer: string;
  address: string;
  time: string;
  seq: number;
  driver?: string;
  attempt?: number;
  details?: StepDetails;
  reattempt?: boolean;
}

/** What a dashboard is sent every second. */
export interface DashboardStats {
  time: string;
  /** Events the hub takes per second, all stores together: left out for a dashboard of one store. */
  eventsPerSecond?: number;
  /** Tracking pages are left out (a customer's page is nobody's dashboard business); /metrics counts them. */
  clients: Record<Exclude<ClientRole, 'tracker'>, number>;
  queues: Array<{ queue: string; depth: number; oldestAgeSeconds: number }>;
  drivers: Array<{ name: string; holding: string[] }>;
}

/** What a driver sends as `location`: where it is (WGS 84 degrees), and which way and how fast it goes. */
export interface LocationInput {
  lat: number;
  lng: number;
  /** Degrees clockwise from north, 0 to 360. */
  heading?: number;
  /** Metres per second. */
  speed?: number;
}

/** A driver's live position, as a store's vendors and dashboards hear it (`location`). */
export interface DriverLocation extends LocationInput {
  driver: string;
  /** When the hub took it (ISO 8601). */
  time: string;
  /** The parcels of the listener's store this driver holds (all it holds, for a dashboard of every store). */
  orderIds: string[];
}

/**
 * One parcel as its tracking page sees it: its own store and orderId, where it is, and when each
 * step happened. Never the customer, the address, the driver's name, nor anything of another parcel.
 */
export interface TrackingView {
  store: string;
  orderId: string;
  state: ParcelEvent;
  history: TrackingStep[];
  /** While in transit: the latest position of the driver carrying it, if the hub has one. */
  position?: TrackingPosition;
}

/** A step of the tracked parcel: what happened and when (ISO 8601). */
export interface TrackingStep {
  event: ParcelEvent;
  time: string;
  /** The attempt it belongs to, from the second on (absent: the first): a count, nobody's name. */
  attempt?: number;
  /** A failed attempt's reason, and the driver's ETA while in transit: nothing else of the details. */
  reason?: StepDetails['reason'];
  eta?: string;
  /** A failed step heard live: true when the parcel went back to the drivers (its pickup follows). */
  reattempt?: boolean;
}

/** Where the driver carrying the tracked parcel is: no name, no other parcels. */
export interface TrackingPosition extends LocationInput {
  /** When the hub took it (ISO 8601). */
  time: string;
}
