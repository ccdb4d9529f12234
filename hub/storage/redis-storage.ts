import { Cluster, Redis } from 'ioredis';
import { CapsError } from '../../protocol/errors.js';
import type { CapsErrorCode } from '../../protocol/errors.js';
import { DRIVER_QUEUE } from '../../protocol/messages.js';
import type { ParcelMessage } from '../../protocol/messages.js';
import { COURSE_EVENTS, DEFAULT_MAX_ATTEMPTS, PARCEL_EVENTS } from '../../protocol/lifecycle.js';
import type { ParcelEvent } from '../../protocol/lifecycle.js';
import type { Order, StepDetails } from '../../protocol/schemas.js';
import type { AckOutcome, ParcelCursor, ParcelPage, ParcelRecord, ParcelStep, QueueInfo, Storage, StepInput, StepOutcome, StorageLimits, StoreSummary } from './storage.js';
import { DEFAULT_LIMITS, noCounts, page } from './storage.js';
import { buildMessage } from './storage-core.js';
import { DRIVERS_GROUP, RedisKeys, SHARD_IDS, parsePickupId, parseStoreId, pickupMessageId, shardOf, storeMessageId } from './redis-keys.js';
import { ACK_PICKUP, ACK_STORE, CREATE_GROUP, DROP_CONSUMERS, HOLD, PRUNE, READ_LOG, RECORD_STEP, RECORD_STEP_KEYS } from './redis-scripts.js';

type Client = Redis | Cluster;

interface Scripts {
  capsRecordStep(...args: string[]): Promise<string[]>;
  capsAckPickup(...args: string[]): Promise<AckOutcome>;
  capsAckStore(...args: string[]): Promise<AckOutcome>;
  capsHold(...args: string[]): Promise<string[]>;
  capsPrune(...args: string[]): Promise<number>;
  capsCreateGroup(...args: string[]): Promise<number>;
  capsDropConsumers(...args: string[]): Promise<number>;
  capsReadLog(...args: string[]): Promise<[StreamEntry[], string, string]>;
}

/** A stream entry as ioredis returns it: id, then field, value, field, value... */
type StreamEntry = [string, string[]];

export interface RedisStorageOptions extends Partial<StorageLimits> {
  /** A single Redis (`redis://...`)... */
  url?: string;
  /** ...or the seed nodes of a Redis Cluster (`host:port,host:port`). */
  cluster?: string;
  /** Key prefix, so several CAPS deployments (or tests) can share one Redis. Default `caps:`. */
  prefix?: string;
  /**
   * Replicas that must have each step before it is acknowledged (Redis `WAIT`); 0: none, the
   * primary's own write (and its AOF) is enough. Past REPLICA_WAIT_MS with fewer, the step is
   * refused as temporary (it is on the primary: the publisher's retry is answered as a duplicate).
   * A single Redis only.
   */
  waitReplicas?: number;
}

/**
 * The share of Redis's maxmemory kept for parcels already accepted: past the rest, new pickups are
 * refused (CAPS_ERR_STORAGE) while drivers' steps and acknowledgements go on, so parcels in flight
 * can finish rather than stall when Redis fills up. Looked at every CHECK_MS.
 */
const MEMORY_RESERVE = 0.2;
const CHECK_MS = 1_000;
/** Far from the bound on pickups, they are counted every this many looks only. */
const COUNT_EVERY = 10;

/** How long a step waits for its replicas (with `waitReplicas`) before it is refused. */
export const REPLICA_WAIT_MS = 2_000;

/**
 * A pickup read by a hub whose consumer has not touched it for this long goes to another hub's
 * XAUTOCLAIM: a hub keeps what its drivers hold fresh every HOLD_REFRESH_MS (hub/redis-feed.ts),
 * so only a dead or cut-off hub's pickups reach this idle time.
 */
export const CLAIM_IDLE_MS = 6_000;

/**
 * Pickups of one store in its shard's stream at once; the rest wait in the store's own list and
 * enter the stream as these leave it. A store with thousands waiting thus holds up the other
 * stores of its shard by at most this many, whichever hub reads the stream.
 */
export const ACTIVE_PER_STORE = 32;

/** Pickups kept or released per script call. */
const HOLD_CHUNK = 500;

/** A single Redis or a Redis Cluster, by the options. */
export function redisClient(options: { url?: string; cluster?: string }, extra: { enableOfflineQueue?: boolean; maxRetriesPerRequest?: number; lazyConnect?: boolean; shardedSubscribers?: boolean } = {}): Client {
  const retry = (times: number): number => Math.min(times * 100, 1_000);
  if (options.cluster) {
    const nodes = options.cluster.split(',').map((node) => {
      const [host, port] = node.trim().split(':');
      return { host: host || '127.0.0.1', port: Number(port ?? 6379) };
    });
    const { enableOfflineQueue, lazyConnect, maxRetriesPerRequest, shardedSubscribers } = extra;
    return new Cluster(nodes, {
      ...(shardedSubscribers ? { shardedSubscribers } : {}),
      clusterRetryStrategy: retry,
      enableAutoPipelining: true,
      ...(enableOfflineQueue !== undefined ? { enableOfflineQueue } : {}),
      ...(lazyConnect !== undefined ? { lazyConnect } : {}),
      redisOptions: maxRetriesPerRequest !== undefined ? { maxRetriesPerRequest } : {},
    });
  }
  const { shardedSubscribers: _single, ...rest } = extra;
  return new Redis(options.url ?? 'redis://127.0.0.1:6379', { retryStrategy: retry, enableAutoPipelining: true, ...rest });
}

/**
 * Parcels and queues in Redis (a single server or a Cluster), shared by every hub that points at
 * it. Stores are spread over shards (redis-keys.ts); each step is validated, recorded and queued
 * by one Lua script on its store's shard, so it is atomic across hubs. A store's vendor messages
 * are a stream (its log); pickups are one stream per shard, read by hubs with drivers through the
 * consumer group `drivers` (hub/redis-feed.ts). Durable as far as Redis is: run it with
 * `appendonly yes` and `appendfsync always` for acks that survive a Redis restart.
 */
export class RedisStorage implements Storage {
  readonly kind = 'redis' as const;
  readonly keys: RedisKeys;
  readonly redis: Client & Scripts;
  readonly isCluster: boolean;
  private readonly limits: StorageLimits;
  private closing: Promise<void> | undefined;
  private readyWait: Promise<void> | undefined;
  private readonly waitReplicas: number;
  /** Redis's used share of its maxmemory (the fullest primary) when last looked at; undefined with no maxmemory. */
  private memoryUse: number | undefined;
  /** Pickups in every shard's stream when last counted, plus those recorded here since: the hub's bound. */
  private pickupsQueued = 0;
  private timer: NodeJS.Timeout | undefined;
  private looks = 0;
  private look: Promise<void> | undefined;
  private lookedAt = -Infinity;
  /** The WAIT that the steps recorded in this turn share (one WAIT covers every write before it on this connection). */
  private replicaWait: Promise<number> | undefined;
  /** Where the next read of pickups starts (turns round the shards). */
  private firstShard = 0;
  /** Each shard's XAUTOCLAIM cursor: a sweep goes on where the last one stopped. */
  private readonly sweepFrom: string[] = SHARD_IDS.map(() => '0-0');

  constructor(readonly options: RedisStorageOptions) {
    this.keys = new RedisKeys(options.prefix ?? 'caps:');
    this.limits = { ...DEFAULT_LIMITS, ...options };
    this.waitReplicas = options.waitReplicas ?? 0;
    this.isCluster = options.cluster !== undefined;
    if (this.isCluster && this.waitReplicas > 0) throw new Error('--redis-wait-replicas works with a single Redis primary, not with --redis-cluster');
    // fail at once while Redis is away: the hub refuses publishes rather than queueing them in memory
    this.redis = redisClient(options, { enableOfflineQueue: false, maxRetriesPerRequest: 0, lazyConnect: true }) as Client & Scripts;
    this.redis.on('error', () => undefined); // reported through ping() and refused writes instead
    this.redis.defineCommand('capsRecordStep', { numberOfKeys: RECORD_STEP_KEYS, lua: RECORD_STEP });
    this.redis.defineCommand('capsAckPickup', { numberOfKeys: 2, lua: ACK_PICKUP });
    this.redis.defineCommand('capsAckStore', { numberOfKeys: 2, lua: ACK_STORE });
    this.redis.defineCommand('capsHold', { numberOfKeys: 1, lua: HOLD });
    this.redis.defineCommand('capsPrune', { numberOfKeys: 2, lua: PRUNE });
    this.redis.defineCommand('capsCreateGroup', { numberOfKeys: 1, lua: CREATE_GROUP });
    this.redis.defineCommand('capsDropConsumers', { numberOfKeys: 1, lua: DROP_CONSUMERS });
    this.redis.defineCommand('capsReadLog', { numberOfKeys: 2, lua: READ_LOG });
  }

  /** Connects and makes sure every shard's pickups stream has its consumer group; rejects when Redis cannot be reached. */
  async open(): Promise<void> {
    if (this.redis.status === 'wait') await this.redis.connect();
    await this.ready(10_000);
    await Promise.all(SHARD_IDS.map((k) => this.createGroup(k)));
    await this.ping();
    await this.check();
    this.timer = setInterval(() => void this.check(), CHECK_MS);
    // prevents the timer from keeping the process alive
    this.timer.unref();
  }

  private async createGroup(k: number): Promise<void> {
    await this.call(() => this.redis.capsCreateGroup(this.keys.pickups(k), DRIVERS_GROUP));
  }

  /** The primaries: one client for a single Redis, each primary's for a cluster. */
  primaries(): Redis[] {
    return this.redis instanceof Cluster ? this.redis.nodes('master') : [this.redis];
  }

  /** True when Redis was past its reserve at the last look: new pickups wait. */
  private nearlyFull(): boolean {
    return this.memoryUse !== undefined && this.memoryUse >= 1 - MEMORY_RESERVE;
  }

  /** How full Redis is, and how many pickups are queued. One look in flight, at most one every 100 ms. */
  private check(): Promise<void> {
    if (this.look) return this.look;
    if (performance.now() - this.lookedAt < 100) return Promise.resolve();
    this.look = this.lookAround().finally(() => {
      this.look = undefined;
      this.lookedAt = performance.now();
    });
    return this.look;
  }

  private async lookAround(): Promise<void> {
    try {
      let fullest: number | undefined;
      for (const node of this.primaries()) {
        const info = await node.info('memory');
        const used = Number(/^used_memory:(\d+)/m.exec(info)?.[1]);
        const max = Number(/^maxmemory:(\d+)/m.exec(info)?.[1]);
        if (max > 0 && Number.isFinite(used)) fullest = Math.max(fullest ?? 0, used / max);
      }
      this.memoryUse = fullest;
      // the hub's bound on pickups: counted near it, and every COUNT_EVERY looks (other hubs add pickups too)
      if (this.pickupsQueued < this.limits.maxPickups / 2 && ++this.looks % COUNT_EVERY !== 0) return;
      const counts = await Promise.all(SHARD_IDS.map((k) => this.redis.hget(this.keys.meta(k), 'waiting')));
      this.pickupsQueued = counts.reduce((sum, n) => sum + Math.max(0, Number(n ?? 0)), 0);
    } catch {
      // Redis away: its refusals say so
    }
  }

  /**
   * Waits briefly for a (re)connecting Redis; a Redis that stays away is reported, not waited
   * for. Callers share one wait, so an outage does not pile up listeners and timers.
   */
  private ready(timeoutMs = 2_000): Promise<void> {
    if (this.redis.status === 'ready') return Promise.resolve();
    if (this.redis.status === 'wait') void this.redis.connect().catch(() => undefined);
    this.readyWait ??= new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.redis.off('ready', onReady);
        reject(new CapsError('CAPS_ERR_STORAGE', `Redis is not reachable (${this.redis.status})`));
      }, timeoutMs);
      const onReady = (): void => {
        clearTimeout(timer);
        resolve();
      };
      this.redis.once('ready', onReady);
    }).finally(() => {
      this.readyWait = undefined;
    });
    return this.readyWait;
  }

  /** A store's log is read by the hubs following it (hub/redis-feed.ts), not paged here. */
  async more(): Promise<ParcelMessage[]> {
    return [];
  }

  inLog(): number {
    return 0;
  }

  async prune(before: string, limit: number): Promise<number> {
    let removed = 0;
    const beforeMs = String(Date.parse(before));
    for (const k of SHARD_IDS) {
      if (removed >= limit) break;
      removed += await this.call(() => this.redis.capsPrune(this.keys.done(k), this.keys.stores(k), this.keys.shard(k), beforeMs, String(limit - removed)));
    }
    return removed;
  }

  async recordStep(input: StepInput): Promise<StepOutcome> {
    if (input.event === 'pickup') {
      // looked at again before refusing: room may have been made since the last look
      if (this.nearlyFull() || this.pickupsQueued >= this.limits.maxPickups) await this.check();
      if (this.nearlyFull()) {
        const percent = Math.round((this.memoryUse ?? 1) * 100);
        return { status: 'refused', code: 'CAPS_ERR_STORAGE', reason: `Redis is nearly full (${percent}% of its maxmemory): new pickups wait for room; parcels already accepted go on` };
      }
      if (this.pickupsQueued >= this.limits.maxPickups) {
        return { status: 'refused', code: 'CAPS_ERR_QUEUE_FULL', reason: `${this.pickupsQueued} pickups wait for drivers, the hub's limit` };
      }
    }
    const { store, orderId, event } = input;
    const k = shardOf(store);
    const keys = this.keys;
    // the store's keys from its shard's prefix, its name hashed once (shardOf above)
    const at = keys.shard(k);
    const reply = await this.call(() =>
      this.redis.capsRecordStep(
        keys.parcel(store, orderId, at),
        keys.counts(store, at),
        keys.stores(k),
        keys.orders(k, orderId),
        keys.pickups(k),
        keys.log(store, at),
        keys.meta(k),
        keys.done(k),
        keys.list(store, 'all', at),
        ...PARCEL_EVENTS.map((state) => keys.list(store, state, at)),
        event,
        store,
        orderId,
        input.customer ?? '',
        input.address ?? '',
        input.driver ?? '',
        input.time,
        String(this.limits.maxQueueDepth),
        input.dispatched === undefined ? '' : input.dispatched ? '1' : '0',
        String(this.limits.maxPickups),
        keys.pickupBell(k),
        keys.storeBell(store, at),
        String(ACTIVE_PER_STORE),
        String(Date.parse(input.time) || Date.now()),
        input.attempt === undefined ? '' : String(input.attempt),
        String(input.maxAttempts ?? DEFAULT_MAX_ATTEMPTS),
        input.details?.reason ?? '',
        // a pickup carries no details (STEP_DETAILS)
        input.details === undefined || event === 'pickup' ? '' : JSON.stringify(input.details),
      ),
    );
    // a step stored (or one stored before) is answered once enough replicas have it
    if (reply[0] !== 'refused') await this.replicated();
    switch (reply[0]) {
      case 'duplicate':
        return { status: 'duplicate' };
      case 'refused':
        return { status: 'refused', code: reply[1] as CapsErrorCode, reason: reply[2] ?? '' };
      default: {
        const [, id = '', seq = '0', created = input.time, customer = '', address = '', attempt = '1', reattempt = '', requeuedId = '', requeuedSeq = '', withdrawn = ''] = reply;
        const order: Order = { store, orderId, customer, address };
        const pickup = event === 'pickup';
        const queue = pickup ? DRIVER_QUEUE : store;
        const messageId = !pickup ? storeMessageId(store, id) : id === '' ? '' : pickupMessageId(k, id);
        const message = buildMessage(order, { event, time: input.time, driver: input.driver || undefined, details: pickup ? undefined : input.details }, queue, Number(seq), messageId, Number(attempt), reattempt === '1');
        const outcome: StepOutcome = { status: 'accepted', message, pickedUpAt: created };
        // a pickup waiting in its store's list gets its id when it enters the stream
        if (pickup && id === '') outcome.spilled = true;
        if (pickup) this.pickupsQueued++;
        if (reattempt === '1') {
          this.pickupsQueued++;
          const next = { event: 'pickup' as const, time: input.time };
          outcome.requeued = buildMessage(order, next, DRIVER_QUEUE, Number(requeuedSeq), requeuedId === '' ? '' : pickupMessageId(k, requeuedId), Number(attempt) + 1);
        }
        if (withdrawn !== '') {
          this.pickupsQueued = Math.max(0, this.pickupsQueued - 1);
          outcome.withdrawn = pickupMessageId(k, withdrawn);
        }
        return outcome;
      }
    }
  }

  async ack(queue: string, messageId: string): Promise<AckOutcome> {
    if (queue === DRIVER_QUEUE) {
      const ref = parsePickupId(messageId);
      if (!ref) return 'unknown-message';
      const outcome = await this.call(() => this.redis.capsAckPickup(this.keys.pickups(ref.shard), this.keys.meta(ref.shard), this.keys.shard(ref.shard), ref.id));
      if (outcome === 'removed') this.pickupsQueued = Math.max(0, this.pickupsQueued - 1);
      return outcome;
    }
    const id = parseStoreId(queue, messageId);
    if (!id) {
      const known = await this.call(() => this.redis.exists(this.keys.counts(queue)));
      return known ? 'unknown-message' : 'unknown-queue';
    }
    return this.call(() => this.redis.capsAckStore(this.keys.log(queue), this.keys.counts(queue), id, this.keys.storeBell(queue)));
  }

  /** Every message queued: the pickups of every shard, or a store's log, in order. */
  async pending(queue: string): Promise<ParcelMessage[]> {
    if (queue !== DRIVER_QUEUE) return this.readLog(queue, '-', -1);
    const shards = await Promise.all(SHARD_IDS.map((k) => this.call(() => this.redis.xrange(this.keys.pickups(k), '-', '+'))));
    const inStreams = shards.flatMap((entries, k) => entries.map((entry) => pickupOf(k, entry as StreamEntry)));
    // and those waiting their store's turn (no message id until they enter the stream)
    const waiting: ParcelMessage[] = [];
    for (const store of await this.storeNames()) {
      for (const raw of await this.call(() => this.redis.lrange(this.keys.waitingPickups(store), 0, -1))) {
        const e = JSON.parse(raw) as { o: string; q: number; t: string; c: string; a: string; n?: number };
        waiting.push(buildMessage({ store, orderId: e.o, customer: e.c, address: e.a }, { event: 'pickup', time: e.t }, DRIVER_QUEUE, e.q, '', e.n ?? 1));
      }
    }
    return [...inStreams, ...waiting];
  }

  /** Up to `count` (-1: all) of a store's vendor messages after the stream id `after` ('-': from the start). */
  async readLog(store: string, after: string, count: number): Promise<ParcelMessage[]> {
    return (await this.follow(store, after, count)).messages;
  }

  /**
   * What a hub following a store reads: up to `count` messages of its log after the stream id
   * `after` ('-': from the start), and where the log ends (its last seq and stream id), read at
   * the same instant.
   */
  async follow(store: string, after: string, count: number): Promise<{ messages: ParcelMessage[]; seq: number; last: string }> {
    const from = after === '-' ? '-' : `(${after}`;
    const [entries, seq, last] = await this.call(() => this.redis.capsReadLog(this.keys.log(store), this.keys.counts(store), from, String(count < 0 ? 1_000_000 : count)));
    return { messages: entries.map((entry) => storeMessageOf(store, entry)), seq: Number(seq), last };
  }

  /**
   * Pickups for this hub's drivers, at most `max`, from the shards given: first those another
   * consumer left idle past CLAIM_IDLE_MS (a dead hub's, or released), then new ones.
   */
  async takePickups(consumer: string, max: number, shards: readonly number[], sweep: boolean): Promise<ParcelMessage[]> {
    const out: ParcelMessage[] = [];
    // each read starts one shard further: a shard with a backlog does not hold up the ones after it
    const start = this.firstShard++ % Math.max(1, shards.length);
    const order = [...shards.slice(start), ...shards.slice(0, start)];
    for (const k of order) {
      if (out.length >= max) break;
      const key = this.keys.pickups(k);
      if (sweep) {
        try {
          const reply = (await this.call(() => this.redis.xautoclaim(key, DRIVERS_GROUP, consumer, CLAIM_IDLE_MS, this.sweepFrom[k] ?? '0-0', 'COUNT', max - out.length))) as [string, Array<StreamEntry | null>];
          this.sweepFrom[k] = reply[0];
          for (const entry of reply[1]) if (entry && entry[1]) out.push(pickupOf(k, entry));
        } catch (err) {
          // a Redis that lost its data (no AOF) lost the group too: made again, read next time
          if (!String(err).includes('NOGROUP')) throw err;
          await this.createGroup(k);
          continue;
        }
      }
      if (out.length >= max) break;
      const read = await this.readGroup(k, consumer, max - out.length);
      for (const entry of read) out.push(pickupOf(k, entry));
    }
    return out;
  }

  private async readGroup(k: number, consumer: string, count: number): Promise<StreamEntry[]> {
    const key = this.keys.pickups(k);
    try {
      const reply = (await this.call(() => this.redis.xreadgroup('GROUP', DRIVERS_GROUP, consumer, 'COUNT', count, 'STREAMS', key, '>'))) as Array<[string, StreamEntry[]]> | null;
      return reply?.[0]?.[1] ?? [];
    } catch (err) {
      // a Redis that lost its data (no AOF) lost the group too: made again, read next time
      if (String(err).includes('NOGROUP')) await this.createGroup(k);
      else throw err;
      return [];
    }
  }

  /**
   * The pickups' groups forget consumers that hold nothing and were idle `idleMs` (hubs gone: each
   * hub process is a consumer of its own); `self` stays. Resolves with how many went.
   */
  async dropIdleConsumers(self: string, idleMs: number): Promise<number> {
    const dropped = await Promise.all(SHARD_IDS.map((k) => this.call(() => this.redis.capsDropConsumers(this.keys.pickups(k), DRIVERS_GROUP, self, String(idleMs)))));
    return dropped.reduce((a, b) => a + b, 0);
  }

  /** Of these pickups, those still this consumer's, claimed again (their idle time starts over). */
  async keep(consumer: string, messageIds: readonly string[]): Promise<Set<string>> {
    return this.hold(consumer, messageIds, 'keep');
  }

  /** Hands these pickups (if still this consumer's) to the next hub's sweep at once. */
  async release(consumer: string, messageIds: readonly string[]): Promise<void> {
    await this.hold(consumer, messageIds, 'release');
  }

  private async hold(consumer: string, messageIds: readonly string[], mode: 'keep' | 'release'): Promise<Set<string>> {
    const byShard = new Map<number, string[]>();
    for (const messageId of messageIds) {
      const ref = parsePickupId(messageId);
      if (!ref) continue;
      const ids = byShard.get(ref.shard) ?? [];
      ids.push(ref.id);
      byShard.set(ref.shard, ids);
    }
    // in chunks: Lua unpacks a few thousand values at most
    const calls: Array<Promise<string[]>> = [];
    for (const [k, ids] of byShard) {
      for (let i = 0; i < ids.length; i += HOLD_CHUNK) {
        const chunk = ids.slice(i, i + HOLD_CHUNK);
        calls.push(this.call(() => this.redis.capsHold(this.keys.pickups(k), consumer, mode, ...chunk)).then((kept) => kept.map((id) => pickupMessageId(k, id))));
      }
    }
    return new Set((await Promise.all(calls)).flat());
  }

  async queues(): Promise<QueueInfo[]> {
    const pickups = await this.pending(DRIVER_QUEUE);
    const out: QueueInfo[] = [{ queue: DRIVER_QUEUE, depth: pickups.length, ...(pickups[0] ? { oldest: pickups.map((m) => m.time).sort()[0] ?? pickups[0].time } : {}) }];
    for (const store of await this.storeNames()) {
      const key = this.keys.log(store);
      const [depth, first] = await Promise.all([this.call(() => this.redis.xlen(key)), this.call(() => this.redis.xrange(key, '-', '+', 'COUNT', 1))]);
      if (depth === 0 && !(await this.call(() => this.redis.exists(key)))) continue;
      const oldest = first[0] ? storeMessageOf(store, first[0] as StreamEntry).time : undefined;
      out.push({ queue: store, depth, ...(oldest ? { oldest } : {}) });
    }
    return out;
  }

  private async storeNames(): Promise<string[]> {
    const shards = await Promise.all(SHARD_IDS.map((k) => this.call(() => this.redis.smembers(this.keys.stores(k)))));
    return shards.flat().sort();
  }

  async noteDispatch(store: string, orderId: string, driver: string): Promise<void> {
    await this.call(() => this.redis.hset(this.keys.parcel(store, orderId), `to:${driver}`, '1'));
  }

  async parcel(store: string, orderId: string): Promise<ParcelRecord | undefined> {
    const fields = await this.call(() => this.redis.hgetall(this.keys.parcel(store, orderId)));
    if (!fields['state']) return undefined;
    // a plain parcel keeps a field per step (the course's three, in their order); any other its whole history
    const whole = fields['hist'];
    const history: ParcelStep[] = whole
      ? (JSON.parse(whole) as ParcelStep[])
      : COURSE_EVENTS.flatMap((event) => {
          const json = fields[`h:${event}`];
          return json ? [{ event, ...(JSON.parse(json) as { time: string; driver?: string }) }] : [];
        });
    return {
      order: { store, orderId, customer: fields['customer'] ?? '', address: fields['address'] ?? '' },
      state: fields['state'] as ParcelEvent,
      ...(fields['driver'] ? { driver: fields['driver'] } : {}),
      history,
    };
  }

  async findParcels(orderId: string): Promise<ParcelRecord[]> {
    const shards = await Promise.all(SHARD_IDS.map((k) => this.call(() => this.redis.smembers(this.keys.orders(k, orderId)))));
    const found = await Promise.all(shards.flat().sort().map((store) => this.parcel(store, orderId)));
    return found.filter((p): p is ParcelRecord => p !== undefined);
  }

  async listParcels(store: string, options: { status?: ParcelEvent; limit: number; after?: ParcelCursor }): Promise<ParcelPage> {
    const key = this.keys.list(store, options.status ?? 'all');
    const max = options.after ? `(${options.after.t}\0${options.after.id}` : '+';
    const members = await this.call(() => this.redis.zrevrangebylex(key, max, '-', 'LIMIT', 0, options.limit + 1));
    const parcels = (await Promise.all(members.map((m) => this.parcel(store, m.slice(m.indexOf('\0') + 1))))).filter((p): p is ParcelRecord => p !== undefined);
    return page(parcels, options.limit);
  }

  async stores(): Promise<StoreSummary[]> {
    const out: StoreSummary[] = [];
    for (const store of await this.storeNames()) {
      const counts = await this.call(() => this.redis.hmget(this.keys.counts(store), ...PARCEL_EVENTS));
      const summary = { store, counts: noCounts() };
      PARCEL_EVENTS.forEach((event, i) => {
        summary.counts[event] = Number(counts[i] ?? 0);
      });
      out.push(summary);
    }
    return out;
  }

  /**
   * A write to every shard, not a PING: a Redis that answers but refuses writes (maxmemory reached
   * with noeviction, a read-only replica after a failover, a cluster primary down) is not ready.
   */
  async ping(): Promise<void> {
    const now = new Date().toISOString();
    await Promise.all(SHARD_IDS.map((k) => this.call(() => this.redis.set(`${this.keys.shard(k)}ready`, now, 'PX', 60_000))));
  }

  close(): Promise<void> {
    clearInterval(this.timer);
    this.closing ??= this.redis.quit().then(
      () => undefined,
      () => this.redis.disconnect(),
    );
    return this.closing;
  }

  /**
   * Resolves once `waitReplicas` replicas have every write made so far on this connection (at once
   * without `waitReplicas`); throws CAPS_ERR_STORAGE past REPLICA_WAIT_MS. The webhook outbox,
   * which writes on this connection too, waits the same way.
   */
  async replicated(): Promise<void> {
    const redis = this.redis;
    if (this.waitReplicas === 0 || redis instanceof Cluster) return;
    this.replicaWait ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
      // the steps of the next turn need a WAIT sent after their own writes
      this.replicaWait = undefined;
      return this.call(() => redis.wait(this.waitReplicas, REPLICA_WAIT_MS));
    });
    const confirmed = await this.replicaWait;
    if (confirmed < this.waitReplicas) {
      throw new CapsError('CAPS_ERR_STORAGE', `only ${confirmed} of ${this.waitReplicas} Redis replicas confirmed the step within ${REPLICA_WAIT_MS} ms (--redis-wait-replicas)`);
    }
  }

  /** Runs a Redis command; a Redis that is away becomes CAPS_ERR_STORAGE, never an ack. */
  private async call<T>(command: () => Promise<T>): Promise<T> {
    if (this.closing) throw new CapsError('CAPS_ERR_STORAGE', 'the store is closed');
    if (this.redis.status !== 'ready') await this.ready();
    try {
      return await command();
    } catch (err) {
      throw new CapsError('CAPS_ERR_STORAGE', `Redis: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
  }
}

function fieldsOf(entry: StreamEntry): Map<string, string> {
  const fields = new Map<string, string>();
  const flat = entry[1];
  for (let i = 0; i + 1 < flat.length; i += 2) fields.set(flat[i] ?? '', flat[i + 1] ?? '');
  return fields;
}

function pickupOf(k: number, entry: StreamEntry): ParcelMessage {
  const f = fieldsOf(entry);
  const order = { store: f.get('s') ?? '', orderId: f.get('o') ?? '', customer: f.get('c') ?? '', address: f.get('a') ?? '' };
  return buildMessage(order, { event: 'pickup', time: f.get('t') ?? '' }, DRIVER_QUEUE, Number(f.get('q') ?? 0), pickupMessageId(k, entry[0]), Number(f.get('n') ?? 1));
}

/** What a log entry or a bell says beside the order (RECORD_STEP): the attempt, the details, a failure's reattempt. */
interface StepExtras {
  n?: string | number | undefined;
  x?: string | undefined;
  r?: string | number | undefined;
}

/** A vendor message of `store` as the log or its bell carries it, with what buildMessage adds. */
function vendorMessage(store: string, orderId: string, customer: string, address: string, event: ParcelEvent, time: string, driver: string, seq: number, streamId: string, extras: StepExtras): ParcelMessage {
  const details = extras.x ? (JSON.parse(extras.x) as StepDetails) : undefined;
  return buildMessage({ store, orderId, customer, address }, { event, time, driver: driver || undefined, details }, store, seq, storeMessageId(store, streamId), Number(extras.n ?? 1), String(extras.r) === '1');
}

function storeMessageOf(store: string, entry: StreamEntry): ParcelMessage {
  const f = fieldsOf(entry);
  const event = (f.get('e') ?? 'in-transit') as ParcelEvent;
  return vendorMessage(store, f.get('o') ?? '', f.get('c') ?? '', f.get('a') ?? '', event, f.get('t') ?? '', f.get('d') ?? '', Number(f.get('q') ?? 0), entry[0], { n: f.get('n'), x: f.get('x'), r: f.get('r') });
}

/** A vendor message as a store's bell carries it (RECORD_STEP): undefined when it is not one. */
export function bellMessageOf(store: string, json: string): { id: string; message: ParcelMessage } | undefined {
  try {
    const b = JSON.parse(json) as { id?: unknown; o?: unknown; e?: unknown; q?: unknown; t?: unknown; d?: unknown; c?: unknown; a?: unknown; n?: unknown; x?: unknown; r?: unknown };
    if (typeof b.id !== 'string' || typeof b.o !== 'string' || typeof b.e !== 'string') return undefined;
    const str = (v: unknown): string => (typeof v === 'string' ? v : '');
    const extras: StepExtras = { n: typeof b.n === 'number' ? b.n : undefined, x: str(b.x) || undefined, r: typeof b.r === 'number' ? b.r : undefined };
    return { id: b.id, message: vendorMessage(store, b.o, str(b.c), str(b.a), b.e as ParcelEvent, str(b.t), str(b.d), Number(b.q ?? 0), b.id, extras) };
  } catch {
    return undefined;
  }
}

/** Whether stream id `a` comes after `b` ('-' is before everything). */
export function streamIdAfter(a: string, b: string): boolean {
  if (b === '-') return true;
  const [am = 0, as = 0] = a.split('-').map(Number);
  const [bm = 0, bs = 0] = b.split('-').map(Number);
  return am > bm || (am === bm && as > bs);
}

/** The stream id inside a vendor message's id (the cursor of a hub following its store). */
export function streamIdOf(message: ParcelMessage): string {
  return message.messageId.slice(message.messageId.lastIndexOf('.') + 1);
}
