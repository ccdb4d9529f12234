import type { CapsErrorBody, CapsErrorCode } from './errors.js';
import { CAPS_ERRORS } from './errors.js';

/** Every ack answers with a result, never a throw across the wire. */
export type AckResult<T> = { ok: true; data: T } | { ok: false; error: CapsErrorBody };

export type AckCallback<T> = (result: AckResult<T>) => void;

export function ok<T>(data: T): AckResult<T> {
  return { ok: true, data };
}

export function fail(code: CapsErrorCode, message?: string): { ok: false; error: CapsErrorBody } {
  return { ok: false, error: { code, message: message ?? CAPS_ERRORS[code].message } };
}
