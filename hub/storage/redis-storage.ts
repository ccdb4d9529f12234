import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { CapsError } from '../../protocol/errors.js';
import type { CapsErrorCode } from '../../protocol/errors.js';
import type { ParcelMessage } from '../../protocol/messages.js';
import type { ParcelEvent } from '../../protocol/schemas.js';
import type {
  AckOutcome,
  ParcelCursor,
  ParcelPage,
  ParcelRecord,
  QueueInfo,
  Storage,
  StepInput,
  StepOutcome,
  StorageLimits,
  StoreSummary,
} from './storage.js';
import { DEFAULT_LIMITS, page } from './storage.js';

/**
 * Parcels and queues in Redis, shared by every hub that points at it. Each step is validated,
 * recorded and queued by one Lua script, so it is atomic across hubs. Durable as far as the
 * Redis server is: run it with `appendonly yes` and `appendfsync always` for acks that survive a
 * Redis restart.
 *
 * Keys (under the prefix): p:<store>\0<order> parcel hash · s:<store>\0<order> steps hash ·
 * o:<order> set of stores · sp:<store>:<state|all> parcels by time (lex) · c:<store> counts ·
 * stores · q:<queue> messages by seq · seq:<queue> · m:<id> message · queues · acked:<id> ·
 * w pickups waiting in the driver queue, by store (each store's quota).
 */
const RECORD_STEP = `
local p, event, store, oid, customer, address, driver, time, maxDepth, msgId, dispatched, maxPickups = unpack(ARGV)
local id = store .. '\\0' .. oid
local pk, sk = p .. 'p:' .. id, p .. 's:' .. id
local state = redis.call('HGET', pk, 'state')
if dispatched == '0' and (not state or redis.call('HGET', pk, 'driver') ~= driver) then
  return {'refused', 'CAPS_ERR_NOT_DISPATCHED', 'order ' .. oid .. ' of ' .. store .. ' was not dispatched to ' .. driver}
end
if redis.call('HEXISTS', sk, event) == 1 then return {'duplicate'} end
if event == 'pickup' then
  if customer == '' or address == '' then return {'refused', 'CAPS_ERR_INVALID_PAYLOAD', 'a pickup needs customer and address'} end
else
  if not state then return {'refused', 'CAPS_ERR_UNKNOWN_PARCEL', 'no pickup was recorded for order ' .. oid .. ' of ' .. store} end
  if event == 'in-transit' and state == 'delivered' then return {'refused', 'CAPS_ERR_OUT_OF_ORDER', 'order ' .. oid .. ' is already delivered'} end
end
local queue = store
if event == 'pickup' then queue = 'driver' end
local qk = p .. 'q:' .. queue
if event == 'pickup' then
  local waiting = tonumber(redis.call('HGET', p .. 'w', store) or '0')
  if waiting >= tonumber(maxDepth) then return {'refused', 'CAPS_ERR_QUEUE_FULL', 'store ' .. store .. ' has ' .. waiting .. ' pickups waiting for drivers, its quota'} end
  local all = redis.call('ZCARD', qk)
  if all >= tonumber(maxPickups) then return {'refused', 'CAPS_ERR_QUEUE_FULL', all .. " pickups wait for drivers, the hub's limit"} end
else
  local depth = redis.call('ZCARD', qk)
  if depth >= tonumber(maxDepth) then return {'refused', 'CAPS_ERR_QUEUE_FULL', 'queue ' .. queue .. ' holds ' .. depth .. ' messages, its limit'} end
end
local created
if event == 'pickup' then
  created = time
  redis.call('HSET', pk, 'customer', customer, 'address', address, 'state', 'pickup', 'created', time)
  redis.call('SADD', p .. 'o:' .. oid, store)
  redis.call('SADD', p .. 'stores', store)
  redis.call('HINCRBY', p .. 'c:' .. store, 'pickup', 1)
  redis.call('ZADD', p .. 'sp:' .. store .. ':all', 0, time .. '\\0' .. oid)
  redis.call('ZADD', p .. 'sp:' .. store .. ':pickup', 0, time .. '\\0' .. oid)
else
  created = redis.call('HGET', pk, 'created')
  redis.call('HINCRBY', p .. 'c:' .. store, state, -1)
  redis.call('HINCRBY', p .. 'c:' .. store, event, 1)
  redis.call('ZREM', p .. 'sp:' .. store .. ':' .. state, created .. '\\0' .. oid)
  redis.call('ZADD', p .. 'sp:' .. store .. ':' .. event, 0, created .. '\\0' .. oid)
  redis.call('HSET', pk, 'state', event)
  if driver ~= '' then redis.call('HSET', pk, 'driver', driver) end
end
local step = {time = time}
if driver ~= '' then step.driver = driver end
redis.call('HSET', sk, event, cjson.encode(step))
local seq = redis.call('INCR', p .. 'seq:' .. queue)
local parcel = redis.call('HMGET', pk, 'customer', 'address')
local order = {store = store, orderId = oid, customer = parcel[1], address = parcel[2]}
local msg = {store = store, orderId = oid, customer = parcel[1], address = parcel[2], event = event, messageId = msgId,
  seq = seq, queueId = queue, clientId = queue, order = order, time = time}
if driver ~= '' then msg.driver = driver end
local body = cjson.encode(msg)
redis.call('SET', p .. 'm:' .. msgId, body)
redis.call('ZADD', qk, seq, msgId)
if event == 'pickup' then redis.call('HINCRBY', p .. 'w', store, 1) end
redis.call('SADD', p .. 'queues', queue)
return {'accepted', body, created}
`;

const ACK = `
local p, queue, id = unpack(ARGV)
if redis.call('SISMEMBER', p .. 'queues', queue) == 0 then return 'unknown-queue' end
if redis.call('ZREM', p .. 'q:' .. queue, id) == 1 then
  if queue == 'driver' then
    local body = redis.call('GET', p .. 'm:' .. id)
    if body then
      -- pickups queued before the count existed were never counted: never below 0, and no field left at 0
      local store = cjson.decode(body).store
      if tonumber(redis.call('HINCRBY', p .. 'w', store, -1)) <= 0 then redis.call('HDEL', p .. 'w', store) end
    end
  end
  redis.call('DEL', p .. 'm:' .. id)
  redis.call('SET', p .. 'acked:' .. id, '1', 'EX', 86400)
  return 'removed'
end
if redis.call('EXISTS', p .. 'acked:' .. id) == 1 then return 'already-acknowledged' end
return 'unknown-message'
`;

/**
 * Retention: each store's delivered parcels picked up before the cutoff, oldest first; those
 * also delivered before it go, with their steps, their place in the lists and their count.
 */
const PRUNE = `
local p, before, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local removed = 0
for _, store in ipairs(redis.call('SMEMBERS', p .. 'stores')) do
  if removed >= limit then break end
  local list = p .. 'sp:' .. store .. ':delivered'
  for _, member in ipairs(redis.call('ZRANGEBYLEX', list, '-', '(' .. before, 'LIMIT', 0, limit - removed)) do
    local oid = string.sub(member, string.find(member, '\0', 1, true) + 1)
    local id = store .. '\0' .. oid
    local step = redis.call('HGET', p .. 's:' .. id, 'delivered')
    if step and cjson.decode(step).time < before then
      redis.call('DEL', p .. 'p:' .. id, p .. 's:' .. id)
      redis.call('SREM', p .. 'o:' .. oid, store)
      redis.call('ZREM', list, member)
      redis.call('ZREM', p .. 'sp:' .. store .. ':all', member)
      redis.call('HINCRBY', p .. 'c:' .. store, 'delivered', -1)
      removed = removed + 1
    end
  end
  -- a store with no parcels left is no longer listed
  if redis.call('ZCARD', p .. 'sp:' .. store .. ':all') == 0 then
    redis.call('SREM', p .. 'stores', store)
    redis.call('DEL', p .. 'c:' .. store)
  end
end
return removed
`;

type RedisWithScripts = Redis & {
  capsPrune(...args: string[]): Promise<number>;
  capsRecordStep(...args: string[]): Promise<string[]>;
  capsAck(...args: string[]): Promise<AckOutcome>;
};

export interface RedisStorageOptions extends Partial<StorageLimits> {
  url: string;
  /** Key prefix, so several CAPS deployments (or tests) can share one Redis. Default `caps:`. */
  prefix?: string;
  /**
   * Replicas that must have each step before it is acknowledged (Redis `WAIT`); 0: none, the
   * primary's own write (and its AOF) is enough. Past REPLICA_WAIT_MS with fewer, the step is
   * refused as temporary (it is on the primary: the publisher's retry is answered as a duplicate).
   */
  waitReplicas?: number;
}

/**
 * The share of Redis's maxmemory kept for parcels already accepted: past the rest, new pickups are
 * refused (CAPS_ERR_STORAGE) while drivers' steps and acknowledgements go on, so parcels in flight
 * can finish rather than stall when Redis fills up. Looked at every MEMORY_CHECK_MS.
 */
const MEMORY_RESERVE = 0.2;
const MEMORY_CHECK_MS = 1_000;

/** How long a step waits for its replicas (with `waitReplicas`) before it is refused. */
export const REPLICA_WAIT_MS = 2_000;

const EVENT_ORDER: Record<ParcelEvent, number> = { pickup: 0, 'in-transit': 1, delivered: 2 };

export class RedisStorage implements Storage {
  readonly kind = 'redis' as const;
  readonly prefix: string;
  readonly redis: RedisWithScripts;
  private readonly limits: StorageLimits;
  private closing: Promise<void> | undefined;
  private readyWait: Promise<void> | undefined;
  private readonly waitReplicas: number;
  /** Redis's used share of its maxmemory when last looked at, or undefined with no maxmemory. */
  private memoryUse: number | undefined;
  private memoryTimer: NodeJS.Timeout | undefined;
  private memoryLook: Promise<void> | undefined;
  private memoryLookedAt = -Infinity;
  /** The WAIT that the steps recorded in this turn share (one WAIT covers every write before it on this connection). */
  private replicaWait: Promise<number> | undefined;

  constructor(options: RedisStorageOptions) {
    this.prefix = options.prefix ?? 'caps:';
    this.limits = { ...DEFAULT_LIMITS, ...options };
    this.waitReplicas = options.waitReplicas ?? 0;
    this.redis = new Redis(options.url, {
      // fail at once while Redis is away: the hub refuses publishes rather than queueing them in memory
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: (times) => Math.min(times * 100, 1_000),
      lazyConnect: true,
    }) as RedisWithScripts;
    this.redis.on('error', () => undefined); // reported through ping() and refused writes instead
    this.redis.defineCommand('capsRecordStep', { numberOfKeys: 0, lua: RECORD_STEP });
    this.redis.defineCommand('capsAck', { numberOfKeys: 0, lua: ACK });
    this.redis.defineCommand('capsPrune', { numberOfKeys: 0, lua: PRUNE });
  }

  /** Connects; rejects when Redis cannot be reached. */
  async open(): Promise<void> {
    if (this.redis.status === 'wait') await this.redis.connect();
    await this.ping();
    await this.checkMemory();
    this.memoryTimer = setInterval(() => void this.checkMemory(), MEMORY_CHECK_MS);
    // prevents the timer from keeping the process alive
    this.memoryTimer.unref();
  }

  /** True when Redis was past its reserve at the last look: new pickups wait. */
  private nearlyFull(): boolean {
    return this.memoryUse !== undefined && this.memoryUse >= 1 - MEMORY_RESERVE;
  }

  /** How full Redis is (INFO memory): used_memory over maxmemory. One look in flight, at most one every 100 ms. */
  private checkMemory(): Promise<void> {
    if (this.memoryLook) return this.memoryLook;
    if (performance.now() - this.memoryLookedAt < 100) return Promise.resolve();
    this.memoryLook = this.lookAtMemory().finally(() => {
      this.memoryLook = undefined;
      this.memoryLookedAt = performance.now();
    });
    return this.memoryLook;
  }

  private async lookAtMemory(): Promise<void> {
    try {
      const info = await this.redis.info('memory');
      const used = Number(/^used_memory:(\d+)/m.exec(info)?.[1]);
      const max = Number(/^maxmemory:(\d+)/m.exec(info)?.[1]);
      this.memoryUse = max > 0 && Number.isFinite(used) ? used / max : undefined;
    } catch {
      // Redis away: its refusals say so
    }
  }

  /**
   * Waits briefly for a (re)connecting Redis; a Redis that stays away is reported, not waited
   * for. Callers share one wait, so an outage does not pile up listeners and timers.
   */
  private ready(timeoutMs = 2_000): Promise<void> {
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

  /** Redis keeps a store's queue whole, bounded by --max-queue (its log and cursor: issue 15). */
  async more(): Promise<ParcelMessage[]> {
    return [];
  }

  inLog(): number {
    return 0;
  }

  async prune(before: string, limit: number): Promise<number> {
    return this.call(() => this.redis.capsPrune(this.prefix, before, String(limit)));
  }

  async recordStep(input: StepInput): Promise<StepOutcome> {
    // looked at again before refusing: room may have been made since the last look
    if (input.event === 'pickup' && this.nearlyFull()) await this.checkMemory();
    if (input.event === 'pickup' && this.nearlyFull()) {
      const percent = Math.round((this.memoryUse ?? 1) * 100);
      return { status: 'refused', code: 'CAPS_ERR_STORAGE', reason: `Redis is nearly full (${percent}% of its maxmemory): new pickups wait for room; parcels already accepted go on` };
    }
    const reply = await this.call(() =>
      this.redis.capsRecordStep(
        this.prefix,
        input.event,
        input.store,
        input.orderId,
        input.customer ?? '',
        input.address ?? '',
        input.driver ?? '',
        input.time,
        String(this.limits.maxQueueDepth),
        randomUUID(),
        input.dispatched === undefined ? '' : input.dispatched ? '1' : '0',
        String(this.limits.maxPickups),
      ),
    );
    // a step stored (or one stored before) is answered once enough replicas have it
    if (reply[0] !== 'refused' && this.waitReplicas > 0) await this.replicated();
    switch (reply[0]) {
      case 'duplicate':
        return { status: 'duplicate' };
      case 'refused':
        return { status: 'refused', code: reply[1] as CapsErrorCode, reason: reply[2] ?? '' };
      default:
        return { status: 'accepted', message: JSON.parse(reply[1] ?? '{}') as ParcelMessage, pickedUpAt: reply[2] ?? input.time };
    }
  }

  ack(queue: string, messageId: string): Promise<AckOutcome> {
    return this.call(() => this.redis.capsAck(this.prefix, queue, messageId));
  }

  async pending(queue: string): Promise<ParcelMessage[]> {
    const ids = await this.call(() => this.redis.zrange(`${this.prefix}q:${queue}`, 0, -1));
    if (ids.length === 0) return [];
    const bodies = await this.call(() => this.redis.mget(ids.map((id) => `${this.prefix}m:${id}`)));
    return bodies.filter((b): b is string => b !== null).map((b) => JSON.parse(b) as ParcelMessage);
  }

  async queues(): Promise<QueueInfo[]> {
    const names = await this.call(() => this.redis.smembers(`${this.prefix}queues`));
    const out: QueueInfo[] = [];
    for (const queue of names.sort()) {
      const [first] = await this.call(() => this.redis.zrange(`${this.prefix}q:${queue}`, 0, 0));
      const depth = await this.call(() => this.redis.zcard(`${this.prefix}q:${queue}`));
      const body = first ? await this.call(() => this.redis.get(`${this.prefix}m:${first}`)) : null;
      out.push({ queue, depth, ...(body ? { oldest: (JSON.parse(body) as ParcelMessage).time } : {}) });
    }
    return out;
  }

  async queueVersions(): Promise<Map<string, string>> {
    const names = await this.call(() => this.redis.smembers(`${this.prefix}queues`));
    const pipeline = this.redis.pipeline();
    for (const queue of names) pipeline.get(`${this.prefix}seq:${queue}`).zcard(`${this.prefix}q:${queue}`);
    const replies = (await this.call(() => pipeline.exec())) ?? [];
    const versions = new Map<string, string>();
    names.forEach((queue, i) => {
      const [seqErr, seq] = replies[2 * i] ?? [null, null];
      const [cardErr, card] = replies[2 * i + 1] ?? [null, null];
      if (seqErr || cardErr) throw new CapsError('CAPS_ERR_STORAGE', `Redis: ${(seqErr ?? cardErr)?.message ?? 'no reply'}`);
      versions.set(queue, `${String(seq ?? 0)}:${String(card ?? 0)}`);
    });
    return versions;
  }

  async parcel(store: string, orderId: string): Promise<ParcelRecord | undefined> {
    const id = `${store}\0${orderId}`;
    const [fields, steps] = await this.call(() => Promise.all([this.redis.hgetall(`${this.prefix}p:${id}`), this.redis.hgetall(`${this.prefix}s:${id}`)]));
    if (!fields['state']) return undefined;
    const history = Object.entries(steps)
      .map(([event, json]) => ({ event: event as ParcelEvent, ...(JSON.parse(json) as { time: string; driver?: string }) }))
      .sort((a, b) => EVENT_ORDER[a.event] - EVENT_ORDER[b.event]);
    return {
      order: { store, orderId, customer: fields['customer'] ?? '', address: fields['address'] ?? '' },
      state: fields['state'] as ParcelEvent,
      ...(fields['driver'] ? { driver: fields['driver'] } : {}),
      history,
    };
  }

  async findParcels(orderId: string): Promise<ParcelRecord[]> {
    const stores = await this.call(() => this.redis.smembers(`${this.prefix}o:${orderId}`));
    const found = await Promise.all(stores.sort().map((store) => this.parcel(store, orderId)));
    return found.filter((p): p is ParcelRecord => p !== undefined);
  }

  async listParcels(store: string, options: { status?: ParcelEvent; limit: number; after?: ParcelCursor }): Promise<ParcelPage> {
    const key = `${this.prefix}sp:${store}:${options.status ?? 'all'}`;
    const max = options.after ? `(${options.after.t}\0${options.after.id}` : '+';
    const members = await this.call(() => this.redis.zrevrangebylex(key, max, '-', 'LIMIT', 0, options.limit + 1));
    const parcels = (await Promise.all(members.map((m) => this.parcel(store, m.slice(m.indexOf('\0') + 1))))).filter((p): p is ParcelRecord => p !== undefined);
    return page(parcels, options.limit);
  }

  async stores(): Promise<StoreSummary[]> {
    const names = await this.call(() => this.redis.smembers(`${this.prefix}stores`));
    const out: StoreSummary[] = [];
    for (const store of names.sort()) {
      const counts = await this.call(() => this.redis.hgetall(`${this.prefix}c:${store}`));
      out.push({ store, counts: { pickup: Number(counts['pickup'] ?? 0), 'in-transit': Number(counts['in-transit'] ?? 0), delivered: Number(counts['delivered'] ?? 0) } });
    }
    return out;
  }

  /**
   * A write, not a PING: a Redis that answers but refuses writes (maxmemory reached with
   * noeviction, a read-only replica after a failover) is not ready either.
   */
  async ping(): Promise<void> {
    await this.call(() => this.redis.set(`${this.prefix}ready`, new Date().toISOString(), 'PX', 60_000));
  }

  close(): Promise<void> {
    clearInterval(this.memoryTimer);
    this.closing ??= this.redis.quit().then(
      () => undefined,
      () => this.redis.disconnect(),
    );
    return this.closing;
  }

  /** Resolves once `waitReplicas` replicas have every write made so far on this connection; throws CAPS_ERR_STORAGE past REPLICA_WAIT_MS. */
  private async replicated(): Promise<void> {
    this.replicaWait ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
      // the steps of the next turn need a WAIT sent after their own writes
      this.replicaWait = undefined;
      return this.call(() => this.redis.wait(this.waitReplicas, REPLICA_WAIT_MS));
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
