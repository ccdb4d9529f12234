/**
 * Every error CAPS reports, in one table: a stable code, a default message and an HTTP status.
 * The same codes travel in error acks, in `connect_error` data, in logs and (later) in HTTP bodies.
 * docs/errors.md lists the same codes; tests/errors-doc.test.ts keeps the two in step.
 */
export const CAPS_ERRORS = {
  CAPS_ERR_INVALID_PAYLOAD: { status: 400, message: 'The payload does not match the schema of this event' },
  CAPS_ERR_UNKNOWN_EVENT: { status: 400, message: 'This event is not part of the CAPS protocol' },
  CAPS_ERR_MISSING_NAME: { status: 400, message: 'join and leave need a store name or a client id' },
  CAPS_ERR_UNKNOWN_PARCEL: { status: 404, message: 'No pickup was recorded for this parcel' },
  CAPS_ERR_OUT_OF_ORDER: { status: 409, message: 'This step cannot follow the parcel\'s current state' },
  CAPS_ERR_QUEUE_FULL: { status: 503, message: 'The queue this step would go into is full; try again once its client catches up' },
  CAPS_ERR_UNKNOWN_QUEUE: { status: 404, message: 'No such queue' },
  CAPS_ERR_UNKNOWN_MESSAGE: { status: 404, message: 'No such message in this queue' },
  CAPS_ERR_STORAGE: { status: 503, message: 'The hub cannot store events right now' },
  CAPS_ERR_UNAUTHORIZED: { status: 401, message: 'A valid token is required' },
  CAPS_ERR_TOKEN_EXPIRED: { status: 401, message: 'The token has expired' },
  CAPS_ERR_FORBIDDEN: { status: 403, message: 'This token does not allow that' },
  CAPS_ERR_NOT_DISPATCHED: { status: 403, message: 'This parcel was not dispatched to this driver' },
  CAPS_ERR_RATE_LIMITED: { status: 429, message: 'Too many events: slow down' },
  CAPS_ERR_TOO_MANY_CONNECTIONS: { status: 429, message: 'Too many connections: for this token, this address, or the hub' },
  CAPS_ERR_INVALID_QUERY: { status: 400, message: 'The request\'s path or query is not valid' },
  CAPS_ERR_NOT_FOUND: { status: 404, message: 'No such resource' },
  CAPS_ERR_INTERNAL: { status: 500, message: 'The hub failed to handle this request' },
} as const satisfies Record<string, { status: number; message: string }>;

/** A stable, namespaced error code such as `CAPS_ERR_INVALID_PAYLOAD`. */
export type CapsErrorCode = keyof typeof CAPS_ERRORS;

/** Every code, in table order. */
export const CAPS_ERROR_CODES = Object.keys(CAPS_ERRORS) as CapsErrorCode[];

/** What travels over the wire when something is refused. */
export interface CapsErrorBody {
  code: CapsErrorCode;
  message: string;
}

/** An error with a stable code; `cause` survives through `ErrorOptions`. */
export class CapsError extends Error {
  override readonly name = 'CapsError';
  readonly code: CapsErrorCode;
  readonly status: number;

  constructor(code: CapsErrorCode, message?: string, options?: ErrorOptions) {
    super(message ?? CAPS_ERRORS[code].message, options);
    this.code = code;
    this.status = CAPS_ERRORS[code].status;
  }

  toBody(): CapsErrorBody {
    return { code: this.code, message: this.message };
  }
}

/** Narrows an unknown string to a known code (for clients reading acks). */
export function isCapsErrorCode(value: unknown): value is CapsErrorCode {
  return typeof value === 'string' && Object.hasOwn(CAPS_ERRORS, value);
}

/** Refusals that may pass if the same request is sent again a little later. */
export const TRANSIENT_CODES: ReadonlySet<CapsErrorCode> = new Set<CapsErrorCode>(['CAPS_ERR_STORAGE', 'CAPS_ERR_QUEUE_FULL', 'CAPS_ERR_RATE_LIMITED', 'CAPS_ERR_INTERNAL']);
