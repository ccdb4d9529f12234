/**
 * Where the Redis storage keeps what. Stores are spread over SHARDS shards by a hash of their
 * name; every key of a shard carries the shard's hash tag (`{7}`), so it lives in one Redis
 * Cluster slot, and a step, which touches its parcel, its store's counters and log and its
 * shard's pickups, is one atomic script.
 */
import type { ParcelEvent } from '../../protocol/schemas.js';

/**
 * Shards of the stores. Each has one pickups stream that hubs with drivers read through the
 * consumer group `drivers`: enough of them to spread over the primaries of a cluster, few enough
 * that a hub with idle drivers looks at all of them cheaply. Changing it moves every store: it is
 * part of the data layout, not a setting.
 */
export const SHARDS = 16;

/** Every shard's number, 0 to SHARDS - 1: for what is done on every shard. */
export const SHARD_IDS: readonly number[] = Array.from({ length: SHARDS }, (_, k) => k);

/** The consumer group of every pickups stream. */
export const DRIVERS_GROUP = 'drivers';

/** FNV-1a, 32 bits: cheap and stable across processes and versions. */
export function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export function shardOf(store: string): number {
  return hash32(store) % SHARDS;
}

export class RedisKeys {
  constructor(readonly prefix: string) {}

  /** Every key of shard `k` starts with this. */
  shard(k: number): string {
    return `${this.prefix}{${k}}:`;
  }

  /**
   * The shard prefix of a store's keys. The methods below take it as `at` from a caller that has it
   * already (a step builds a dozen keys of one store), so that the store's name is hashed once.
   */
  ofStore(store: string): string {
    return this.shard(shardOf(store));
  }

  parcel(store: string, orderId: string, at = this.ofStore(store)): string {
    return `${at}p:${store}\0${orderId}`;
  }

  counts(store: string, at = this.ofStore(store)): string {
    return `${at}c:${store}`;
  }

  list(store: string, state: ParcelEvent | 'all', at = this.ofStore(store)): string {
    return `${at}sp:${store}:${state}`;
  }

  /** A store's pickups waiting for their turn in the shard's stream (ACTIVE_PER_STORE). */
  waitingPickups(store: string): string {
    return `${this.ofStore(store)}pw:${store}`;
  }

  log(store: string, at = this.ofStore(store)): string {
    return `${at}log:${store}`;
  }

  storeBell(store: string, at = this.ofStore(store)): string {
    return `${at}bell:${store}`;
  }

  stores(k: number): string {
    return `${this.shard(k)}stores`;
  }

  orders(k: number, orderId: string): string {
    return `${this.shard(k)}o:${orderId}`;
  }

  pickups(k: number): string {
    return `${this.shard(k)}pickups`;
  }

  pickupBell(k: number): string {
    return `${this.shard(k)}bell`;
  }

  /** Parcels of shard `k` whose story ended (delivered, returned, cancelled), by when it ended (ms): what retention removes, oldest first. */
  done(k: number): string {
    return `${this.shard(k)}done`;
  }

  meta(k: number): string {
    return `${this.shard(k)}meta`;
  }
}

/**
 * Message ids: a pickup's is `P.<shard>.<stream id>`, a vendor message's `L.<store hash>.<stream
 * id>` (stream ids are unique per stream only; the prefix keeps ids apart across streams).
 */
export function pickupMessageId(k: number, streamId: string): string {
  return `P.${k}.${streamId}`;
}

export function storeMessageId(store: string, streamId: string): string {
  return `L.${hash32(store).toString(36)}.${streamId}`;
}

const STREAM_ID = /^\d{1,20}-\d{1,20}$/;

/** The shard and stream id of a pickup's message id; undefined for anything else. */
export function parsePickupId(messageId: string): { shard: number; id: string } | undefined {
  const [tag, shard, id] = messageId.split('.');
  const k = Number(shard);
  if (tag !== 'P' || id === undefined || !STREAM_ID.test(id) || !Number.isInteger(k) || k < 0 || k >= SHARDS) return undefined;
  return { shard: k, id };
}

/** The stream id of a vendor message of `store`; undefined for anything else. */
export function parseStoreId(store: string, messageId: string): string | undefined {
  const [tag, h, id] = messageId.split('.');
  if (tag !== 'L' || h !== hash32(store).toString(36) || id === undefined || !STREAM_ID.test(id)) return undefined;
  return id;
}
