import { createHash, createHmac, randomBytes } from 'node:crypto';

/**
 * What a webhook receiver checks (README, "Webhooks"): every POST carries the event id, the unix
 * time of the attempt and an HMAC-SHA256 over both and the raw body, keyed with the endpoint's
 * secret, so a receiver can tell the hub's requests from forgeries and refuse old ones replayed.
 */

/** The signature scheme's version: the `v1=` of `CAPS-Signature`. A new scheme gets a new prefix, so receivers can accept both while it rolls out. */
const SIGNATURE_VERSION = 'v1';

/** `hex(HMAC-SHA256(secret, id + '.' + timestamp + '.' + rawBody))`; the key is the whole secret string, `whsec_` included. */
export function signature(secret: string, id: string, timestamp: number, rawBody: string): string {
  return createHmac('sha256', secret).update(`${id}.${timestamp}.${rawBody}`).digest('hex');
}

/** The value of the `CAPS-Signature` header. */
export function signatureHeader(secret: string, id: string, timestamp: number, rawBody: string): string {
  return `${SIGNATURE_VERSION}=${signature(secret, id, timestamp, rawBody)}`;
}

/** A new endpoint's signing secret: shown once, when the endpoint is registered. */
export function newSecret(): string {
  return `whsec_${randomBytes(24).toString('base64url')}`;
}

/** A new endpoint's id. */
export function newEndpointId(): string {
  return `wh_${randomBytes(8).toString('hex')}`;
}

/**
 * The id of the webhook event for one step: the same whenever that step is enqueued again (a
 * publisher's retry after a crash) and on every attempt, so receivers dedupe on it.
 *
 * Not derived from the step's messageId or seq: those are drawn when the step is recorded and
 * are not kept in the parcel's history, so a step rebuilt from the history (the duplicate path in
 * publish.ts) could not find them again. `occurrence` (1 for the first `event` step of the parcel,
 * 2 for the second: a re-attempt's second `in-transit`) is in the history, and tells the steps of
 * one parcel apart as well.
 */
export function eventId(store: string, orderId: string, event: string, occurrence: number): string {
  return `evt_${createHash('sha256').update(`${store}\u0000${orderId}\u0000${event}\u0000${occurrence}`).digest('hex').slice(0, 32)}`;
}
