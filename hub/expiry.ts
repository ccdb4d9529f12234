/**
 * Token expiry of connected sockets, checked by one sweep a second instead of a timer per socket:
 * a timer cannot be set past 2^31 ms (24.8 days) and fires at once when asked to, and one sweep
 * costs the same whatever the tokens' lifetimes.
 */
export interface Expiring {
  /** Disconnects the socket; called once, when its token has expired. */
  expire(): void;
}

/** How often the sweep runs: a socket outlives its token by at most this long. */
export const EXPIRY_SWEEP_MS = 1_000;

export class TokenExpiry<T extends Expiring> {
  /** Each tracked socket and when its token expires (ms since the epoch). */
  private readonly until = new Map<T, number>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly now: () => number = Date.now,
    private readonly everyMs = EXPIRY_SWEEP_MS,
  ) {}

  /** Tracks `socket` until `forget`; expires it at once if `expiresAt` is already past. */
  track(socket: T, expiresAt: number): void {
    if (expiresAt <= this.now()) {
      socket.expire();
      return;
    }
    this.until.set(socket, expiresAt);
    if (!this.timer) {
      this.timer = setInterval(() => this.sweep(), this.everyMs);
      // prevents the timer from keeping the process alive
      this.timer.unref();
    }
  }

  forget(socket: T): void {
    this.until.delete(socket);
    if (this.until.size === 0) this.stop();
  }

  /** Expires every socket whose token is past; returns how many. */
  sweep(): number {
    const now = this.now();
    let expired = 0;
    for (const [socket, at] of this.until) {
      if (at > now) continue;
      this.until.delete(socket);
      socket.expire();
      expired++;
    }
    if (this.until.size === 0) this.stop();
    return expired;
  }

  get size(): number {
    return this.until.size;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
