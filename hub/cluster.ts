import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import type { ParcelMessage } from '../protocol/messages.js';

/** What one hub tells the others sharing its Redis. */
export type ClusterEvent =
  | { type: 'added'; hub: string; message: ParcelMessage }
  | { type: 'acked'; hub: string; queue: string; messageId: string }
  | { type: 'released'; hub: string };

/**
 * Hubs sharing one Redis. Queue state lives in the Redis storage; this carries the news between
 * hubs (new messages, acks, pickups let go) and the claims that keep pickups exactly-one across
 * hubs: a hub sends a pickup to one of its drivers only after `SET claim NX PX lease` succeeds.
 * A claim whose hub dies expires, and another hub takes the pickup.
 * News is best effort (pub/sub); every hub also re-reads the queues from Redis periodically.
 */
export class RedisCluster {
  readonly hubId = randomUUID();
  private readonly sub: Redis;
  private handler: ((event: ClusterEvent) => void) | undefined;
  private closing: Promise<void> | undefined;
  /** Called when the news channel comes back after an outage: news may have been missed. */
  onResubscribed: (() => void) | undefined;

  constructor(
    url: string,
    private readonly pub: Redis,
    private readonly prefix: string,
  ) {
    this.sub = new Redis(url, { retryStrategy: (times) => Math.min(times * 100, 1_000), lazyConnect: true });
    this.sub.on('error', () => undefined);
    let subscribedOnce = false;
    this.sub.on('ready', () => {
      if (subscribedOnce) this.onResubscribed?.();
      subscribedOnce = true;
    });
    this.sub.on('message', (_channel: string, text: string) => {
      let event: ClusterEvent;
      try {
        event = JSON.parse(text) as ClusterEvent;
      } catch {
        return;
      }
      if (event.hub !== this.hubId) this.handler?.(event);
    });
    this.pub.defineCommand('capsRenew', {
      numberOfKeys: 1,
      lua: "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0",
    });
    this.pub.defineCommand('capsUnclaim', {
      numberOfKeys: 1,
      lua: "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    });
  }

  async open(handler: (event: ClusterEvent) => void): Promise<void> {
    this.handler = handler;
    await this.sub.connect();
    await this.sub.subscribe(`${this.prefix}news`);
  }

  announce(event: ClusterEvent extends infer E ? (E extends ClusterEvent ? Omit<E, 'hub'> : never) : never): void {
    // best effort: a hub that misses this catches up when it re-reads the queues
    this.pub.publish(`${this.prefix}news`, JSON.stringify({ ...event, hub: this.hubId })).catch(() => undefined);
  }

  /** Takes a pickup for a driver of this hub; false when a driver of another hub holds it. */
  async claim(messageId: string, leaseMs: number): Promise<boolean> {
    try {
      return (await this.pub.set(`${this.prefix}claim:${messageId}`, this.hubId, 'PX', Math.max(1, Math.round(leaseMs)), 'NX')) === 'OK';
    } catch {
      return false;
    }
  }

  /** Extends this hub's claims on pickups its drivers still hold (one pipeline; a claim another hub has is left alone). */
  async renew(messageIds: readonly string[], leaseMs: number): Promise<void> {
    const pipeline = this.pub.pipeline() as ReturnType<Redis['pipeline']> & { capsRenew(key: string, hub: string, ms: string): unknown };
    for (const id of messageIds) pipeline.capsRenew(`${this.prefix}claim:${id}`, this.hubId, String(Math.round(leaseMs)));
    try {
      await pipeline.exec();
    } catch {
      // a claim not renewed lapses: another hub's driver may then get the pickup (at least once)
    }
  }

  /** Lets go of a pickup this hub claimed. */
  async unclaim(messageId: string): Promise<void> {
    try {
      await (this.pub as Redis & { capsUnclaim(key: string, hub: string): Promise<number> }).capsUnclaim(`${this.prefix}claim:${messageId}`, this.hubId);
    } catch {
      // the claim expires by itself
    }
  }

  close(): Promise<void> {
    this.closing ??= this.sub.quit().then(
      () => undefined,
      () => this.sub.disconnect(),
    );
    return this.closing;
  }
}
