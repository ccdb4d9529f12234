/**
 * A token bucket per socket: `ratePerSecond` events on average, bursts up to `burst`. A socket
 * over the limit has its events refused (slowed); one that keeps going is cut off.
 */
export interface RateLimitOptions {
  ratePerSecond: number;
  burst: number;
  /** Refused events, counted since the socket last had room, after which it is disconnected. */
  cutOffAfter: number;
}

export const DEFAULT_RATE_LIMIT: RateLimitOptions = { ratePerSecond: 500, burst: 1_000, cutOffAfter: 1_000 };

export type RateVerdict = 'ok' | 'limited' | 'cut-off';

export class RateLimiter {
  private tokens: number;
  private last = performance.now();
  /** Refusals in the current run of refusals. */
  refusedInRow = 0;

  constructor(private readonly options: RateLimitOptions) {
    this.tokens = options.burst;
  }

  take(now = performance.now()): RateVerdict {
    this.tokens = Math.min(this.options.burst, this.tokens + ((now - this.last) / 1000) * this.options.ratePerSecond);
    this.last = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      this.refusedInRow = 0;
      return 'ok';
    }
    this.refusedInRow++;
    return this.refusedInRow >= this.options.cutOffAfter ? 'cut-off' : 'limited';
  }
}
