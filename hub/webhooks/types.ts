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
