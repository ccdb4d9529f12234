import type { TokenSubject } from '../protocol/token.js';
import { CapsError } from '../protocol/errors.js';
import type { RateLimitOptions, RateVerdict } from './rate-limit.js';
import { RateLimiter } from './rate-limit.js';

/** How many connections the hub takes: 0 is no limit. */
export interface ConnectionLimits {
  /** In all. */
  total: number;
  /** Of one token's subject (a store's vendor, a driver, a dashboard), however many sockets. */
  perToken: number;
  /** Of one address, for clients without a token (the open lab mode). */
  perAddress: number;
}

export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = { total: 20_000, perToken: 64, perAddress: 256 };

/** Who a client is, for its limits: its token's subject, or its address when it has none. */
export function clientKey(auth: TokenSubject | undefined, address: string): { key: string; kind: 'token' | 'address' } {
  if (!auth) return { key: `address:${address}`, kind: 'address' };
  // a tracking link is one parcel's: its customer's tabs count against that parcel, not the whole store
  if (auth.role === 'tracker') return { key: `tracker:${auth.store}\u0000${auth.orderId}`, kind: 'token' };
  const who = auth.role === 'driver' ? auth.name : (auth.store ?? '*');
  return { key: `${auth.role}:${who}`, kind: 'token' };
}

interface Client {
  connections: number;
  limiter: RateLimiter;
}

/**
 * Limits per client, not per socket: one event bucket for all of a client's connections (so ten
 * sockets of one token get the rate of one), and caps on its connections and the hub's. A client
 * with no connection left is forgotten once its bucket would have refilled, so leaving and coming
 * back does not refill it sooner.
 */
export class ClientLimits {
  private readonly clients = new Map<string, Client>();
  /** Clients with no connection left, and when they left: forgotten after `forgetAfterMs`. */
  private readonly idle = new Map<string, number>();
  private total = 0;
  private readonly forgetAfterMs: number;

  constructor(
    private readonly rate: RateLimitOptions,
    private readonly limits: ConnectionLimits,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.forgetAfterMs = Number.isFinite(rate.ratePerSecond) && rate.ratePerSecond > 0 ? Math.ceil((rate.burst / rate.ratePerSecond) * 1000) : 0;
  }

  /**
   * Takes a new connection of `key` in and counts it (undefined), or says why not. Counted at once,
   * not when it is connected: CONNECTs sent in a burst each see the ones before them.
   */
  admit(key: string, kind: 'token' | 'address'): CapsError | undefined {
    this.forgetIdle();
    const cap = kind === 'token' ? this.limits.perToken : this.limits.perAddress;
    if (cap > 0 && (this.clients.get(key)?.connections ?? 0) >= cap) {
      const flag = kind === 'token' ? '--max-connections-per-token' : '--max-connections-per-address';
      return new CapsError('CAPS_ERR_TOO_MANY_CONNECTIONS', `this ${kind} has ${cap} connections already, its limit (${flag})`);
    }
    if (this.limits.total > 0 && this.total >= this.limits.total) {
      return new CapsError('CAPS_ERR_TOO_MANY_CONNECTIONS', `the hub has ${this.limits.total} connections, its limit (--max-connections)`);
    }
    const client = this.clients.get(key);
    if (client) client.connections++;
    else this.clients.set(key, { connections: 1, limiter: new RateLimiter(this.rate) });
    this.idle.delete(key);
    this.total++;
    return undefined;
  }

  /** A connection of `key` closed. */
  leave(key: string): void {
    const client = this.clients.get(key);
    if (!client) return;
    client.connections--;
    this.total--;
    if (client.connections <= 0) this.idle.set(key, this.now());
  }

  /** One event of `key`: `limited` when its bucket (shared by all its connections) is empty. */
  take(key: string): RateVerdict {
    return this.clients.get(key)?.limiter.take(this.now()) ?? 'ok';
  }

  /** Connections open now. */
  get connections(): number {
    return this.total;
  }

  /** Clients tracked (connected, or left lately): bounded by the connections and the recent departures. */
  get size(): number {
    return this.clients.size;
  }

  private forgetIdle(): void {
    const now = this.now();
    for (const [key, since] of this.idle) {
      // in order of leaving: the first still too recent ends the walk
      if (now - since < this.forgetAfterMs) break;
      this.idle.delete(key);
      this.clients.delete(key);
    }
  }
}
