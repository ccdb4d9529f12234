import { randomUUID } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import type { ParcelMessage } from '../protocol/messages.js';
import { SHARD_IDS } from './storage/redis-keys.js';
import type { RedisStorage } from './storage/redis-storage.js';
import { bellMessageOf, redisClient, streamIdAfter, streamIdOf } from './storage/redis-storage.js';
import { storeMessageId } from './storage/redis-keys.js';

/** What the feed tells the hub's delivery. */
export interface FeedHandlers {
  /** New pickups in a shard (its bell rang): worth a read when this hub's drivers have room. */
  pickups(shard: number): void;
  /** A followed store's log may hold what this hub has not read: read it. */
  storeNews(store: string): void;
  /** The next vendor message of a followed store, as its bell carried it; false: not taken (the store's window is full). */
  storeMessage(store: string, message: ParcelMessage): boolean;
  /** A vendor (on any hub) took this message off a followed store's queue. */
  storeAcked(store: string, messageId: string): void;
  /** The bells were away: what they would have said may have been missed, so look at everything followed. */
  reconnected(): void;
}

/** A consumer of the pickups' groups that held nothing for this long is a hub gone: it leaves the groups. */
const GONE_AFTER_MS = 10 * 60_000;

/** Bells kept per followed store while its log is being read (or is behind): past it, the oldest go. */
const MAX_BUFFERED = 10_000;

/** Where this hub is in the log of a store it follows. */
interface Followed {
  /** The stream id of the last message taken ('-': none yet), and its seq (one per message of the store's log). */
  cursor: string;
  seq: number;
  /** Resolves once its bell listens: a read before it could miss what comes between. */
  listening: Promise<void>;
  /** A read of the log in flight (or due: `behind`): bells wait in `buffer`, to come with what it brings, in order. */
  reading: boolean;
  buffer: Array<{ id: string; message: ParcelMessage }>;
  /** Messages past the cursor are waiting in the log (not taken, or a bell missed): bells are not enough, a read is due. */
  behind: boolean;
}

/**
 * One hub's view of the queues it serves in Redis (hub/storage/redis-storage.ts holds them).
 *
 * - Pickups: a hub whose drivers have room reads them through the consumer group `drivers` of each
 *   shard's stream (XREADGROUP), so a pickup is read by one hub; its pending entry names this
 *   hub's consumer. The hub claims again (`keep`) what it holds every HOLD_REFRESH_MS; a hub that
 *   dies stops doing so, and after CLAIM_IDLE_MS another hub's sweep (XAUTOCLAIM) takes its
 *   pickups. A hub whose last driver leaves hands its pickups on at once (`release`).
 * - A store's log (its vendors' messages) is followed only by hubs where one of its vendors is
 *   connected (`follow`): read once from its start, then heard through the store's bell, which
 *   carries each new message (its seq says when one was missed: then the log is read again from
 *   where this hub is). The log is the queue; the bell is a copy for those listening, so that a
 *   vendor on every hub gets each message even when another hub's vendor acknowledges it first.
 * - Bells are Redis sharded pub/sub channels rung by the scripts: a pickups bell per shard
 *   (listened to while this hub has drivers; it only says "look") and a bell per store (while it
 *   is followed). A hub hears only what its own clients need.
 */
export class RedisFeed {
  /** This hub's consumer name in the pickups' groups: unique per process. */
  readonly hubId = randomUUID();
  private readonly bells: Redis | Cluster;
  /** Followed stores. */
  private readonly cursors = new Map<string, Followed>();
  /** Bell channel → followed store. */
  private readonly channels = new Map<string, string>();
  private readonly pickupChannels: Map<string, number>;
  private watching = false;
  private handlers: FeedHandlers | undefined;
  private closing: Promise<void> | undefined;
  private sweeper: NodeJS.Timeout | undefined;

  constructor(private readonly storage: RedisStorage) {
    this.bells = redisClient(storage.options, { lazyConnect: true, ...(storage.isCluster ? { shardedSubscribers: true } : {}) });
    this.bells.on('error', () => undefined);
    this.pickupChannels = new Map(SHARD_IDS.map((k) => [storage.keys.pickupBell(k), k]));
    let readyOnce = false;
    this.bells.on('ready', () => {
      if (readyOnce) this.handlers?.reconnected();
      readyOnce = true;
    });
    this.bells.on('smessage', (channel: string, text: string) => this.ring(channel, text));
  }

  async open(handlers: FeedHandlers): Promise<void> {
    this.handlers = handlers;
    await this.bells.connect();
    // hubs come and go, each with a consumer of its own: those gone leave the groups
    this.sweeper = setInterval(() => void this.storage.dropIdleConsumers(this.hubId, GONE_AFTER_MS).catch(() => undefined), GONE_AFTER_MS / 10);
    // prevents the timer from keeping the process alive
    this.sweeper.unref();
  }

  private ring(channel: string, text: string): void {
    const handlers = this.handlers;
    if (!handlers || this.closing) return;
    const shard = this.pickupChannels.get(channel);
    if (shard !== undefined) return handlers.pickups(shard);
    const store = this.channels.get(channel);
    const followed = store === undefined ? undefined : this.cursors.get(store);
    if (store === undefined || !followed) return;
    if (text.startsWith('a ')) return handlers.storeAcked(store, storeMessageId(store, text.slice(2)));
    const bell = text.startsWith('m ') ? bellMessageOf(store, text.slice(2)) : undefined;
    if (!bell) return handlers.storeNews(store);
    // had already (a read brought it)
    if (!streamIdAfter(bell.id, followed.cursor)) return;
    if (!followed.reading && !followed.behind && bell.message.seq === followed.seq + 1 && handlers.storeMessage(store, bell.message)) {
      followed.cursor = bell.id;
      followed.seq = bell.message.seq;
      return;
    }
    // kept for the read that comes: another hub's vendor may take it off the log before that read
    // (the first acknowledgement removes it), and this hub's vendors are to get it too
    followed.buffer.push(bell);
    if (followed.buffer.length > MAX_BUFFERED) followed.buffer.shift();
    if (followed.reading) return;
    // a message missed (or not taken): the log has the rest
    followed.behind = true;
    handlers.storeNews(store);
  }

  /** Listens to the pickups bells (this hub has drivers) or stops (it has none). */
  watchPickups(on: boolean): void {
    if (on === this.watching || this.closing) return;
    this.watching = on;
    const channels = [...this.pickupChannels.keys()];
    // one channel per call: on a cluster each shard's channel lives on its own node
    for (const channel of channels) void (on ? this.bells.ssubscribe(channel) : this.bells.sunsubscribe(channel)).catch(() => undefined);
  }

  following(store: string): boolean {
    return this.cursors.has(store);
  }

  /** Starts following a store's log (one of its vendors connected here): from its start, once its bell listens. */
  follow(store: string): void {
    if (this.cursors.has(store) || this.closing) return;
    const channel = this.storage.keys.storeBell(store);
    this.channels.set(channel, store);
    const listening = this.bells.ssubscribe(channel).then(
      () => undefined,
      () => undefined,
    );
    this.cursors.set(store, { cursor: '-', seq: 0, listening, reading: false, buffer: [], behind: true });
  }

  /** Stops following a store (its last vendor here left). */
  unfollow(store: string): void {
    if (!this.cursors.delete(store)) return;
    const channel = this.storage.keys.storeBell(store);
    this.channels.delete(channel);
    if (!this.closing) void this.bells.sunsubscribe(channel).catch(() => undefined);
  }

  followed(): string[] {
    return [...this.cursors.keys()];
  }

  /** The bells were away: every followed store is read again from where this hub is. */
  missedBells(): void {
    for (const followed of this.cursors.values()) followed.behind = true;
  }

  /**
   * The next messages of a followed store, at most `max`, in order: its log past the cursor, then
   * what its bell brought meanwhile. The cursor moves past them.
   */
  async readStore(store: string, max: number): Promise<ParcelMessage[]> {
    const followed = this.cursors.get(store);
    if (!followed || max <= 0 || followed.reading) return [];
    followed.reading = true;
    try {
      await followed.listening;
      const from = followed.cursor;
      const read = await this.storage.follow(store, from, max);
      // unfollowed meanwhile: nothing to move
      if (this.cursors.get(store) !== followed) return [];
      // what the log holds past the cursor, and what the bells brought that it no longer holds (or
      // not yet), in order, once each
      const byId = new Map<string, ParcelMessage>();
      for (const message of read.messages) byId.set(streamIdOf(message), message);
      for (const bell of followed.buffer) if (streamIdAfter(bell.id, from) && !byId.has(bell.id)) byId.set(bell.id, bell.message);
      const ids = [...byId.keys()].sort((a, b) => (streamIdAfter(a, b) ? 1 : -1));
      const taken = ids.slice(0, max);
      const messages = taken.map((id) => byId.get(id)).filter((m): m is ParcelMessage => m !== undefined);
      const last = messages[messages.length - 1];
      if (last) {
        followed.cursor = streamIdOf(last);
        followed.seq = last.seq;
      }
      const full = read.messages.length >= max || ids.length > max;
      // read to the end: the cursor goes to the end, past what other hubs' vendors took off (else
      // the next bell would not follow on, and every one would mean a read)
      if (!full && read.last !== '' && streamIdAfter(read.last, followed.cursor)) {
        followed.cursor = read.last;
        followed.seq = read.seq;
      }
      followed.buffer = followed.buffer.filter((bell) => streamIdAfter(bell.id, followed.cursor));
      followed.behind = full || followed.buffer.length > 0;
      return messages;
    } finally {
      followed.reading = false;
    }
  }

  /** True when a followed store's log may hold messages past what this hub took. */
  behind(store: string): boolean {
    return this.cursors.get(store)?.behind ?? false;
  }

  /** Pickups for this hub's drivers: at most `max`, from `shards`; `sweep`: also those idle elsewhere. */
  takePickups(max: number, shards: readonly number[], sweep: boolean): Promise<ParcelMessage[]> {
    return this.storage.takePickups(this.hubId, max, shards, sweep);
  }

  /** Claims again the pickups this hub holds; resolves with those still its own. */
  keep(messageIds: readonly string[]): Promise<Set<string>> {
    return this.storage.keep(this.hubId, messageIds);
  }

  /** Hands these pickups to the other hubs now. */
  release(messageIds: readonly string[]): Promise<void> {
    return this.storage.release(this.hubId, messageIds);
  }

  close(): Promise<void> {
    clearInterval(this.sweeper);
    this.closing ??= this.bells.quit().then(
      () => undefined,
      () => this.bells.disconnect(),
    );
    return this.closing;
  }
}
