import type { AckCallback } from './result.js';
import type { ClientRole, DashboardStats, DriverLocation, GetAllResult, JoinResult, LocationInput, ParcelMessage, ParcelUpdate, PublishResult, ReceivedResult, TrackingPosition, TrackingStep, TrackingView } from './messages.js';
import type { TokenSubject } from './token.js';
import type { GetAllPayload, PublishPayload, ReceivedPayload, RoomPayload } from './schemas.js';

/** What a client may emit on `/caps`. Every ack is optional: lab clients rarely ask for one. */
export interface ClientToServerEvents {
  join: (room: RoomPayload, ack?: AckCallback<JoinResult>) => void;
  leave: (room: RoomPayload, ack?: AckCallback<JoinResult>) => void;
  pickup: (payload: PublishPayload, ack?: AckCallback<PublishResult>) => void;
  'in-transit': (payload: PublishPayload, ack?: AckCallback<PublishResult>) => void;
  delivered: (payload: PublishPayload, ack?: AckCallback<PublishResult>) => void;
  /** Drivers: an attempt that did not succeed, with its reason (protocol/lifecycle.ts). */
  failed: (payload: PublishPayload, ack?: AckCallback<PublishResult>) => void;
  /** Drivers: a parcel whose attempts are over, handed back to its store. */
  returned: (payload: PublishPayload, ack?: AckCallback<PublishResult>) => void;
  /** Vendors: the store calls the delivery off before it is delivered. */
  cancelled: (payload: PublishPayload, ack?: AckCallback<PublishResult>) => void;
  received: (payload: ReceivedPayload, ack?: AckCallback<ReceivedResult>) => void;
  getAll: (payload: GetAllPayload, ack?: AckCallback<GetAllResult>) => void;
  /** Drivers only: where the driver is now. Kept (the latest per driver), never queued. */
  location: (payload: LocationInput, ack?: AckCallback<{ kept: true }>) => void;
}

/** A client's answer to a message: anything truthy-free works; `{ ok: true }` is conventional. */
export type MessageAck = (result?: unknown) => void;

/** What the hub emits to clients on `/caps`. */
export interface ServerToClientEvents {
  pickup: (message: ParcelMessage, ack: MessageAck) => void;
  'in-transit': (message: ParcelMessage, ack: MessageAck) => void;
  delivered: (message: ParcelMessage, ack: MessageAck) => void;
  failed: (message: ParcelMessage, ack: MessageAck) => void;
  returned: (message: ParcelMessage, ack: MessageAck) => void;
  /** A store's vendors, and the driver holding the parcel (told at once, never queued for it). */
  cancelled: (message: ParcelMessage, ack: MessageAck) => void;
  /** Dashboards only: a step as it is recorded. */
  parcel: (update: ParcelUpdate) => void;
  /** Dashboards only: a snapshot each second. */
  stats: (stats: DashboardStats) => void;
  /** A store's vendors and dashboards: the position of a driver holding its parcels. */
  location: (location: DriverLocation) => void;
  /** Tracking pages only: their parcel as it is, once connected (and again on each reconnect). */
  tracking: (view: TrackingView) => void;
  /** Tracking pages only: a step of their parcel as it is recorded. */
  'tracking-step': (step: TrackingStep) => void;
  /** Tracking pages only: where the driver carrying their parcel is, while it is in transit. */
  'tracking-position': (position: TrackingPosition) => void;
}

// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface InterServerEvents {}

/** How a client acknowledges messages (see SocketData.acks). */
export type AckStyle = 'callback' | 'none' | 'unknown';

/** What the hub keeps on each socket. */
export interface SocketData {
  role: ClientRole;
  /** A driver's name, or a lab client's id. */
  name: string;
  /** Stores whose rooms a vendor has joined. */
  stores: Set<string>;
  /** Who the client is for its limits (its token's subject, or its address): hub/client-limits.ts. */
  client?: string;
  /** Its token's id and key id, when it has them: checked against revocations and retired keys while connected. */
  tokenId?: string;
  keyId?: string;
  /** When its token expires (ms since the epoch), if it does. */
  expiresAt?: number;
  /**
   * How the client acknowledges messages: `callback` (Socket.IO acks: our clients from the start,
   * a lab client after its first), `none` (a lab client that says `received`, or has left many
   * acks unanswered: sent messages without one, so none pile up), or `unknown` yet. Only
   * `callback` clients are re-sent on a timer.
   */
  acks: AckStyle;
  /** Acks asked of an `unknown` client and not answered. */
  unanswered: number;
  /** It has said `received`: it acknowledges, the lab's way. */
  receives?: boolean;
  /** Lab notes already said on this connection (refusals, no-ops), each said once. */
  noted: Set<string>;
  /** The verified token's subject; absent for an anonymous lab client. */
  auth?: TokenSubject;
}

/** The namespace every CAPS client connects to. */
export const CAPS_NAMESPACE = '/caps';
