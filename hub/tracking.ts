import { CapsError } from '../protocol/errors.js';
import type { DriverLocation, TrackingPosition, TrackingStep, TrackingView } from '../protocol/messages.js';
import type { TokenSubject } from '../protocol/token.js';
import { parcelRoom, positionRoom } from './identity.js';
import type { Locations } from './locations.js';
import type { Logger } from './logger.js';
import type { ConnectionRefusals } from './refusals.js';
import type { ParcelRecord, ParcelStep, Storage } from './storage/storage.js';
import type { CapsSocket } from './types.js';

/**
 * A customer's tracking page (issue 17): a `tracker` token names one parcel, and its socket hears
 * that parcel only: a view of it once connected, its steps, and while it is in transit the position
 * of the driver carrying it. It may send nothing (hub/connection.ts refuses every event).
 */

export type TrackerSubject = Extract<TokenSubject, { role: 'tracker' }>;

/** `<base>/track/<token>`; a base with a path (a hub behind a proxy's prefix) keeps it. */
export function trackingUrl(base: string, token: string): string {
  return `${base.replace(/\/+$/, '')}/track/${token}`;
}

/** What a tracking page may show of its parcel: no customer, no address, no driver's name. */
export function trackingView(parcel: ParcelRecord, position?: TrackingPosition): TrackingView {
  return {
    store: parcel.order.store,
    orderId: parcel.order.orderId,
    state: parcel.state,
    history: parcel.history.map(trackingStep),
    ...(position && parcel.state === 'in-transit' ? { position } : {}),
  };
}

/**
 * A step as a tracking page sees it: what, when, which attempt, a failed attempt's reason and an
 * in-transit ETA. Never the rest of the details (the driver's note, the recipient, a photo or a
 * signature): a tracking link can be forwarded to anyone.
 */
export function trackingStep(step: Pick<ParcelStep, 'event' | 'time' | 'attempt' | 'details'> & { reattempt?: boolean }): TrackingStep {
  const seen: TrackingStep = { event: step.event, time: step.time };
  if (step.attempt !== undefined && step.attempt > 1) seen.attempt = step.attempt;
  if (step.event === 'failed' && step.details?.reason !== undefined) seen.reason = step.details.reason;
  // live, the failure comes before its re-attempt's pickup: the page must not say "going back" meanwhile
  if (step.event === 'failed' && step.reattempt === true) seen.reattempt = true;
  if (step.event === 'in-transit' && step.details?.eta !== undefined) seen.eta = step.details.eta;
  return seen;
}

/** A driver's position as a tracking page hears it: where and when, not who nor what else it carries. */
export function trackingPosition(location: Omit<DriverLocation, 'orderIds'>): TrackingPosition {
  const position: TrackingPosition = { lat: location.lat, lng: location.lng, time: location.time };
  if (location.heading !== undefined) position.heading = location.heading;
  if (location.speed !== undefined) position.speed = location.speed;
  return position;
}

/**
 * Namespace middleware: a tracking link of a parcel this hub does not know is refused with
 * CAPS_ERR_NOT_FOUND, the same answer its page gets. Other sockets pass untouched.
 */
export function admitTrackers(storage: Storage, refusals: ConnectionRefusals) {
  return (socket: CapsSocket, next: (err?: Error) => void): void => {
    const auth = socket.data.auth;
    if (auth?.role !== 'tracker') {
      next();
      return;
    }
    storage.parcel(auth.store, auth.orderId).then(
      (parcel) => next(parcel ? undefined : refusals.refuse(socket, new CapsError('CAPS_ERR_NOT_FOUND', 'no such parcel'))),
      (err: unknown) => next(refusals.refuse(socket, new CapsError('CAPS_ERR_STORAGE', undefined, { cause: err }))),
    );
  };
}

/**
 * A tracking page connected: it joins its parcel's room first, then is sent the parcel as stored,
 * so a step recorded meanwhile reaches it at least once (the page merges what it hears twice).
 */
export async function watchParcel(socket: CapsSocket, auth: TrackerSubject, deps: { storage: Storage; locations: Locations; logger: Logger }): Promise<void> {
  await socket.join(parcelRoom(auth.store, auth.orderId));
  let parcel: ParcelRecord | undefined;
  try {
    parcel = await deps.storage.parcel(auth.store, auth.orderId);
  } catch (err) {
    // the page keeps what it was rendered with, and hears the steps from now on
    deps.logger.warn('TRACKING NOT READ', { socket: socket.id, error: err instanceof Error ? err.message : String(err) });
    return;
  }
  // removed since the connect (retention): nothing more to show
  if (!parcel || !socket.connected) return;
  let position: TrackingPosition | undefined;
  if (parcel.state === 'in-transit' && parcel.driver !== undefined) {
    await socket.join(positionRoom(parcel.driver));
    const latest = deps.locations.get(parcel.driver);
    if (latest) position = trackingPosition(latest);
  }
  socket.emit('tracking', trackingView(parcel, position));
}
