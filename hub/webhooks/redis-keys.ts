/**
 * Where the shared outbox keeps what in Redis (redis-outbox.ts). A store's endpoints and their
 * deliveries live in the store's shard (hub/storage/redis-keys.ts: the `{k}` hash tag), so enqueueing
 * a step for every endpoint of its store is one script on one Cluster slot, as recording it was.
 *
 * In shard `{k}`:
 * - `whe`: the endpoints of the shard's stores, a hash id → JSON (WebhookEndpoint);
 * - `whr:<endpoint>`: its pending deliveries, a hash event id → JSON row (`s` store, `o` order id,
 *   `p` position, `b` body, `a` attempts, `q` seq, `h` the claim holding it, if any);
 * - `whd:<endpoint>`: the heads of its parcels' lines, a sorted set event id → when due (ms); a
 *   claimed head is scored by when its claim lapses, so a dead hub's claims come due by themselves;
 * - `whl:<endpoint>:<store>\0<order>`: a parcel's line, a sorted set event id → position (built by
 *   the scripts from the rows, never by the hub);
 * - `whx:<endpoint>`: events delivered, a sorted set event id → when (ms), kept for the retention;
 * - `whq`: the rows' seq counter.
 *
 * And `{webhooks}:v`, a counter every change of an endpoint's existence or state bumps: what hubs
 * poll to know their cache of endpoints is stale.
 */
import type { RedisKeys } from '../storage/redis-keys.js';
import { shardOf } from '../storage/redis-keys.js';

export class WebhookKeys {
  constructor(private readonly keys: RedisKeys) {}

  /** One key, its own slot: read by every hub every poll. */
  get version(): string {
    return `${this.keys.prefix}{webhooks}:v`;
  }

  /** The shard prefix of a store's keys (passed to the scripts, which build the rest from it). */
  shardOf(store: string): string {
    return this.keys.ofStore(store);
  }

  /** The endpoints hash of shard `k`. */
  endpoints(k: number): string {
    return `${this.keys.shard(k)}whe`;
  }

  endpointsOf(store: string): string {
    return this.endpoints(shardOf(store));
  }

  rows(store: string, endpointId: string): string {
    return `${this.shardOf(store)}whr:${endpointId}`;
  }

  due(store: string, endpointId: string): string {
    return `${this.shardOf(store)}whd:${endpointId}`;
  }

  done(store: string, endpointId: string): string {
    return `${this.shardOf(store)}whx:${endpointId}`;
  }
}
