/**
 * A token bucket per client (hub/client-limits.ts: one for all of a token's or an address's
 * connections): `ratePerSecond` events on average, bursts up to `burst`. A client over the limit
 * has its events refused (slowed); a connection that keeps going is cut off (FloodWatch).
 */
export interface RateLimitOptions {
  ratePerSecond: number;
  burst: number;
  /** Refused events of one connection within FLOOD_WINDOW_MS after which it is disconnected. */
  cutOffAfter: number;
}

export const DEFAULT_RATE_LIMIT: RateLimitOptions = { ratePerSecond: 500, burst: 1_000, cutOffAfter: 1_000 };

export type RateVerdict = 'ok' | 'limited';

export class RateLimiter {
  private tokens: number;
  private last = performance.now();

  constructor(private readonly options: RateLimitOptions) {
    this.tokens = options.burst;
  }

  take(now = performance.now()): RateVerdict {
    this.tokens = Math.min(this.options.burst, this.tokens + ((now - this.last) / 1000) * this.options.ratePerSecond);
    this.last = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 'ok';
    }
    return 'limited';
  }
}

/** The window refusals of one connection are counted in. */
export const FLOOD_WINDOW_MS = 10_000;

/**
 * Refusals of one connection, counted in a window that starts with its first refusal: a client
 * that goes on sending over its limit is cut off even while its bucket trickles back a token at a
 * time (a count of refusals in a row would restart at every token).
 */
export class FloodWatch {
  private since = 0;
  /** Refusals in the current window. */
  refused = 0;

  constructor(private readonly cutOffAfter: number) {}

  /** Counts a refusal; true when the connection is to be cut off. */
  refuse(now = performance.now()): boolean {
    if (this.refused === 0 || now - this.since > FLOOD_WINDOW_MS) {
      this.since = now;
      this.refused = 0;
    }
    this.refused++;
    return this.refused >= this.cutOffAfter;
  }
}
