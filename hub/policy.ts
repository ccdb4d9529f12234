import { PUBLISHED_BY } from '../protocol/lifecycle.js';
import { DRIVER_QUEUE } from '../protocol/messages.js';
import type { AckResult } from '../protocol/result.js';
import { fail } from '../protocol/result.js';
import type { ParcelEvent } from '../protocol/schemas.js';
import type { TokenSubject } from '../protocol/token.js';
import { queueOf } from './identity.js';

/**
 * Who may do what, written once for the socket handlers and the HTTP API. `auth` is a verified
 * token's subject; undefined is an anonymous client of the open lab mode, which may do anything.
 */

/** A vendor hands parcels over (and cancels them) for its own store; only drivers report what became of them. */
export function mayPublish(auth: TokenSubject | undefined, event: ParcelEvent, store: string): AckResult<never> | undefined {
  if (!auth) return undefined;
  if (auth.role !== PUBLISHED_BY[event]) return forbidden(auth, `publish ${event}`);
  if (auth.role === 'vendor' && store !== auth.store) {
    return fail('CAPS_ERR_FORBIDDEN', `the token is for store ${auth.store}; the payload names ${store}`);
  }
  return undefined;
}

/** Read, replay or acknowledge the messages of a queue: a vendor its store's, a driver the pool's. */
export function mayUseQueue(auth: TokenSubject | undefined, queue: string): boolean {
  return !auth || (auth.role === 'vendor' && queue === auth.store) || (auth.role === 'driver' && queue === DRIVER_QUEUE);
}

/** join and leave: a queue the client may use, or an authenticated driver's own name. */
export function mayName(auth: TokenSubject | undefined, name: string): boolean {
  return mayUseQueue(auth, queueOf(name)) || (auth?.role === 'driver' && name === auth.name);
}

export function forbidden(auth: TokenSubject | undefined, what: string): AckResult<never> {
  return fail('CAPS_ERR_FORBIDDEN', `${describeAuth(auth)} may not ${what}`);
}

function describeAuth(auth: TokenSubject | undefined): string {
  if (!auth) return 'an anonymous client';
  if (auth.role === 'vendor') return `a vendor of ${auth.store}`;
  if (auth.role === 'driver') return `driver ${auth.name}`;
  if (auth.role === 'tracker') return "a parcel's tracking link (it only listens)";
  return 'a dashboard';
}
