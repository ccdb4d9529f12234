import { EndpointCache, oldestFirst } from './endpoint-cache.js';
import type { Cluster, Redis } from 'ioredis';
import type { RedisKeys } from '../storage/redis-keys.js';
import { SHARD_IDS, shardOf } from '../storage/redis-keys.js';
import { WebhookKeys } from './redis-keys.js';
import { CLAIM, DELIVERED, ENQUEUE, REMOVE_ENDPOINT, SAVE_ENDPOINT, SETTLE, WAKE } from './redis-scripts.js';
import type { NewDelivery, Outbox, PendingDelivery, SaveOptions, WebhookEndpoint } from './types.js';

type Client = Redis | Cluster;

interface Scripts {
  capsWhEnqueue(key: string, ...args: Array<string | number>): Promise<number>;
  capsWhClaim(key: string, ...args: Array<string | number>): Promise<Array<[string, string, string, string, number, number, string]>>;
  capsWhDelivered(key: string, ...args: Array<string | number>): Promise<number>;
  capsWhSettle(key: string, ...args: Array<string | number>): Promise<number>;
  capsWhWake(key: string, ...args: Array<string | number>): Promise<[number, number]>;
  capsWhSaveEndpoint(key: string, ...args: Array<string | number>): Promise<[number, string?]>;
  capsWhRemoveEndpoint(key: string, ...args: Array<string | number>): Promise<[number, number]>;
}

/**
 * How often a hub looks whether endpoints changed (one GET of the version counter): an endpoint
 * added, removed, disabled or enabled through another hub is effective on this one within
 * ENDPOINTS_EFFECTIVE_MS. Its deliveries are enqueued by whichever hub records the step.
 */
const ENDPOINTS_POLL_MS = 1_000;
/**
 * The bound documented (README, "Webhooks") and tested: a poll, then the reload of every shard's
 * endpoints. The poll is what an idle hub costs Redis (one GET a second: tests/multi-hub.test.ts
 * holds a hub's idle commands per second under a bound); a pub/sub notice would make it faster.
 */
export const ENDPOINTS_EFFECTIVE_MS = 2_000;
/** How often a hub looks for deliveries due (other hubs' enqueues, lapsed claims) when nothing here wakes it. */
const DELIVERIES_POLL_MS = 1_000;
/** A claim lasts one attempt's time-out and this much: the attempt has settled (or its hub is gone) by then. */
export const LEASE_MARGIN_MS = 5_000;
/** Heads made due per script call when an endpoint is enabled again. */
const WAKE_PAGE = 500;

/** Rows of a removed endpoint deleted per script call. */
const REMOVE_ROWS_PER_CALL = 500;

export interface RedisOutboxOptions {
  /** The storage's client (hub/storage/redis-storage.ts): a single Redis or a Cluster. */
  redis: Client;
  keys: RedisKeys;
  /** This hub, in the claims it holds. */
  hubId: string;
  /** How long a claim holds a delivery: longer than an attempt may take (its time-out). */
  leaseMs: number;
  /** Default ENDPOINTS_POLL_MS. */
  endpointsPollMs?: number;
  /** Default DELIVERIES_POLL_MS. */
  pollMs?: number;
  /** Resolves once an enqueue is on the replicas the hub waits for (`--redis-wait-replicas`). */
  replicated?: () => Promise<void>;
}

/**
 * The outbox of hubs that share Redis (`--store redis`): endpoints and pending deliveries in the
 * store's shard (redis-keys.ts), shared by every hub, so an endpoint registered through one hub
 * gets the steps recorded through any, and any hub delivers what waits. Same guarantees as
 * SqliteOutbox: an enqueue resolves once Redis has it (its AOF settings say how durable that is);
 * idempotent by event id (delivered ids are kept for the retention); one line per parcel and
 * endpoint, only its head due. A hub takes due heads with a claim (claim-1), so two hubs never
 * attempt one delivery at once; a claim lapses after `leaseMs`, so a dead hub's are taken over.
 *
 * Endpoints are cached in memory (EndpointCache: the publish path's `watches` is a lookup): reloaded when the
 * version counter moves (polled every ENDPOINTS_POLL_MS), and at once after this hub's own changes.
 */
export class RedisOutbox implements Outbox {
  readonly where = 'redis';
  readonly pollMs: number;
  private readonly redis: Client & Scripts;
  private readonly keys: WebhookKeys;
  readonly cache = new EndpointCache();
  private version: string | null | undefined;
  private loading: Promise<boolean> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly options: RedisOutboxOptions) {
    this.redis = options.redis as Client & Scripts;
    this.keys = new WebhookKeys(options.keys);
    this.pollMs = options.pollMs ?? DELIVERIES_POLL_MS;
    const define = (name: keyof Scripts, lua: string): void => {
      if (!(name in this.redis)) this.redis.defineCommand(name, { numberOfKeys: 1, lua });
    };
    define('capsWhEnqueue', ENQUEUE);
    define('capsWhClaim', CLAIM);
    define('capsWhDelivered', DELIVERED);
    define('capsWhSettle', SETTLE);
    define('capsWhWake', WAKE);
    define('capsWhSaveEndpoint', SAVE_ENDPOINT);
    define('capsWhRemoveEndpoint', REMOVE_ENDPOINT);
    void this.refresh();
  }

  /**
   * Resolves once the endpoints were loaded once (a step recorded before waits for it); rejects
   * when Redis cannot be read now, so a publish is refused (and retried) rather than left waiting.
   */
  async ready(): Promise<void> {
    if (this.cache.loaded) return;
    await this.refresh();
    if (!this.cache.loaded) throw new Error('Redis: the webhook endpoints could not be read');
  }

  start(changed: () => void): void {
    this.timer = setInterval(() => {
      void this.refresh().then((moved) => {
        if (moved && !this.closed) changed();
      });
    }, this.options.endpointsPollMs ?? ENDPOINTS_POLL_MS);
    // prevents the timer from keeping the process alive
    this.timer.unref();
  }

  /** Reloads every endpoint when the version moved (or was never read); true when it did. Never rejects: Redis away, the next poll tries again. */
  private refresh(): Promise<boolean> {
    this.loading ??= (async () => {
      try {
        const version = await this.redis.get(this.keys.version);
        if (this.version !== undefined && version === this.version) return false;
        // read before the endpoints: a change meanwhile moves it again, and the next poll reloads
        const shards = await Promise.all(SHARD_IDS.map((k) => this.redis.hgetall(this.keys.endpoints(k))));
        this.cache.replaceAll(shards.flatMap((hash) => Object.values(hash).map((json) => endpointOf(json))));
        this.version = version;
        return true;
      } catch {
        return false;
      } finally {
        this.loading = undefined;
      }
    })();
    return this.loading;
  }

  /** After a change of this hub's: the version moved, the others hear of it; this one knows already. */
  private async bump(): Promise<void> {
    await this.redis.incr(this.keys.version);
  }

  endpoints(): WebhookEndpoint[] {
    return this.cache.all();
  }

  endpoint(id: string): WebhookEndpoint | undefined {
    return this.cache.get(id);
  }

  async endpointsOf(store: string): Promise<WebhookEndpoint[]> {
    const hash = await this.redis.hgetall(this.keys.endpointsOf(store));
    const found = Object.values(hash)
      .map((json) => endpointOf(json))
      .filter((e) => e.store === store);
    found.sort(oldestFirst);
    return found;
  }

  async addEndpoint(endpoint: WebhookEndpoint): Promise<void> {
    await this.redis.hset(this.keys.endpointsOf(endpoint.store), endpoint.id, JSON.stringify(endpoint));
    await this.bump();
    this.cache.set(endpoint);
  }

  async removeEndpoint(endpoint: WebhookEndpoint): Promise<void> {
    // a page of its rows per call: a large backlog never holds Redis in one long script
    for (;;) {
      const [, left] = await this.redis.capsWhRemoveEndpoint(this.keys.endpointsOf(endpoint.store), this.keys.shardOf(endpoint.store), endpoint.id, REMOVE_ROWS_PER_CALL);
      if (left === 0) break;
    }
    await this.bump();
    this.cache.delete(endpoint.id);
  }

  async saveEndpoint(endpoint: WebhookEndpoint, options: SaveOptions = {}): Promise<void> {
    const [changed, json] = await this.redis.capsWhSaveEndpoint(this.keys.endpointsOf(endpoint.store), endpoint.id, JSON.stringify(endpoint), options.enable ? '1' : '0');
    if (changed === -1 || json === undefined) {
      this.cache.delete(endpoint.id);
      return;
    }
    if (this.cache.has(endpoint.id)) this.cache.set(endpointOf(json));
    if (changed === 1) await this.bump();
  }

  async enqueue(deliveries: readonly NewDelivery[], now = Date.now()): Promise<void> {
    // one script per store shard: a step's deliveries (every endpoint of its store) are one
    const byShard = new Map<number, NewDelivery[]>();
    for (const d of deliveries) {
      const k = shardOf(d.store);
      const group = byShard.get(k);
      if (group) group.push(d);
      else byShard.set(k, [d]);
    }
    await Promise.all(
      [...byShard.values()].map((group) => {
        const store = group[0]?.store ?? '';
        const args = group.flatMap((d) => [d.endpointId, d.eventId, d.store, d.orderId, d.position, d.body]);
        return this.redis.capsWhEnqueue(this.keys.endpointsOf(store), this.keys.shardOf(store), now, ...args);
      }),
    );
    // a publisher is answered only once its webhooks are as safe as its step
    await this.options.replicated?.();
  }

  async claim(endpointId: string, now: number, limit: number, _inFlight?: ReadonlySet<number>): Promise<PendingDelivery[]> {
    const endpoint = this.cache.get(endpointId);
    if (!endpoint || limit <= 0) return [];
    const store = endpoint.store;
    // this hub's attempts in flight hold claims: they are not due, so never returned again here
    const rows = await this.redis.capsWhClaim(this.keys.due(store, endpointId), this.keys.shardOf(store), endpointId, now, limit, this.options.leaseMs, this.options.hubId);
    return rows.map(([eventId, rowStore, orderId, body, attempts, seq, claim]) => ({ seq, endpointId, eventId, store: rowStore, orderId, body, attempts, claim }));
  }

  async nextDue(endpointId: string, now: number): Promise<number | undefined> {
    const endpoint = this.cache.get(endpointId);
    if (!endpoint) return undefined;
    const [, score] = await this.redis.zrangebyscore(this.keys.due(endpoint.store, endpointId), `(${now}`, '+inf', 'WITHSCORES', 'LIMIT', 0, 1);
    return score === undefined ? undefined : Number(score);
  }

  async delivered(delivery: PendingDelivery, now = Date.now()): Promise<void> {
    await this.redis.capsWhDelivered(this.keys.rows(delivery.store, delivery.endpointId), this.keys.shardOf(delivery.store), delivery.endpointId, delivery.eventId, now);
  }

  async retry(delivery: PendingDelivery, nextAt: number): Promise<void> {
    await this.settle(delivery, nextAt, true);
  }

  async release(delivery: PendingDelivery): Promise<void> {
    await this.settle(delivery, Date.now(), false);
  }

  private async settle(delivery: PendingDelivery, at: number, counted: boolean): Promise<void> {
    if (delivery.claim === undefined) return;
    await this.redis.capsWhSettle(this.keys.rows(delivery.store, delivery.endpointId), this.keys.shardOf(delivery.store), delivery.endpointId, delivery.eventId, at, delivery.claim, counted ? '1' : '0');
  }

  async wake(endpointId: string, now = Date.now()): Promise<void> {
    const endpoint = this.cache.get(endpointId);
    if (!endpoint) return;
    let offset = 0;
    for (;;) {
      const [woken, skipped] = await this.redis.capsWhWake(this.keys.due(endpoint.store, endpointId), this.keys.shardOf(endpoint.store), endpointId, now, offset, WAKE_PAGE);
      if (woken + skipped < WAKE_PAGE) return;
      offset += skipped;
    }
  }

  pending(endpoint: WebhookEndpoint): Promise<number> {
    return this.redis.hlen(this.keys.rows(endpoint.store, endpoint.id));
  }

  async pendingTotal(): Promise<number> {
    const counts = await Promise.all(this.endpoints().map((e) => this.redis.hlen(this.keys.rows(e.store, e.id))));
    return counts.reduce((sum, n) => sum + n, 0);
  }

  async prune(before: number): Promise<void> {
    await Promise.all(this.endpoints().map((e) => this.redis.zremrangebyscore(this.keys.done(e.store, e.id), '-inf', before)));
  }

  /** Stops following; the client is the storage's, closed with it. */
  close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    return Promise.resolve();
  }
}

function endpointOf(json: string): WebhookEndpoint {
  const e = JSON.parse(json) as Partial<WebhookEndpoint>;
  return {
    id: e.id ?? '',
    store: e.store ?? '',
    url: e.url ?? '',
    events: Array.isArray(e.events) ? e.events : undefined,
    secret: e.secret ?? '',
    created: e.created ?? 0,
    state: e.state === 'disabled' ? 'disabled' : 'active',
    disabledReason: e.disabledReason,
    disabledAt: e.disabledAt,
    failingSince: e.failingSince,
    lastError: e.lastError,
    lastErrorAt: e.lastErrorAt,
    lastSuccessAt: e.lastSuccessAt,
  };
}
