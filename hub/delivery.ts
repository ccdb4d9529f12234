import type { ParcelMessage } from '../protocol/messages.js';
import { DRIVER_QUEUE } from '../protocol/messages.js';
import type { ParcelEvent } from '../protocol/schemas.js';
import type { AckWait } from './acknowledgements.js';
import { Acknowledgements } from './acknowledgements.js';
import type { Dispatchable, DriverSlot } from './dispatch.js';
import { Dispatcher } from './dispatch.js';
import { DRIVERS_ROOM, driverRoom, storeRoom } from './identity.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import type { RedisFeed } from './redis-feed.js';
import { SHARD_IDS, shardOf } from './storage/redis-keys.js';
import type { AckOutcome, Storage } from './storage/storage.js';
import { DEFAULT_LIMITS } from './storage/storage.js';
import { parcelKey } from './storage/storage-core.js';
import type { CapsNamespace, CapsSocket } from './types.js';

/** Queues restored at start that get a log line each; past it, one line counts them all. */
const RESTORED_LINES = 20;

/**
 * `one`: each pickup goes to exactly one declared driver. `broadcast`: to every connection but its
 * sender, vendors and dashboards (the lab's hub: `socket.broadcast.emit`).
 */
export type DispatchMode = 'one' | 'broadcast';

export interface DeliveryOptions {
  dispatch: DispatchMode;
  /** First wait for a client's ack before sending again; doubles on each try. */
  ackTimeoutMs: number;
  /** Longest wait between tries. */
  maxBackoffMs: number;
  /** Pickups one driver may hold unacknowledged at once. */
  driverPrefetch: number;
  /** Pickups one store may have in drivers' hands at once; default: a fair share of the drivers online. */
  maxInHandsPerStore?: number;
  /** Several hubs: messages of one followed store held in memory; past it, they wait in its log. Default: the storage's window. */
  window?: number;
}

export const DEFAULT_DELIVERY: DeliveryOptions = {
  dispatch: 'one',
  ackTimeoutMs: 30_000,
  maxBackoffMs: 300_000,
  driverPrefetch: 64,
};

/** Acks an unknown (lab) client may let time out before it is sent messages without one. */
const MAX_UNANSWERED = 3;
/**
 * Several hubs: how often a hub whose drivers have room looks at every shard for pickups, bells
 * or not; the look also sweeps pickups a dead hub left idle (CLAIM_IDLE_MS), so they reach this
 * hub's drivers within CLAIM_IDLE_MS + this.
 */
const PULL_EVERY_MS = 1_000;
/** Several hubs: how often a hub claims again the pickups it holds (well inside CLAIM_IDLE_MS). */
const HOLD_REFRESH_MS = 2_000;
/** Several hubs: how often a hub reads the logs it follows again, bells or not. */
const FOLLOWED_CHECK_MS = 30_000;

interface Entry extends Dispatchable<CapsSocket> {
  message: ParcelMessage;
  /** The parcel's key (parcelKey of its store and orderId). */
  key: string;
  /** message.store and message.seq, as the dispatcher reads them. */
  store: string;
  seq: number;
  /** The driver holding this pickup (dispatch `one`; set by the dispatcher). */
  holder?: CapsSocket | undefined;
  /** How many times it was sent; sets the back-off of the next wait. */
  attempts: number;
  /**
   * Connections it was already sent to. Within one connection socket.io delivers in order and
   * without loss, so a replay (join, getAll) skips them; a reconnect is a new socket and gets it.
   */
  sentTo: string[];
  /** A driver that let this pickup time out: offered to the others first. */
  avoid?: CapsSocket | undefined;
  /** Taken off its queue. */
  acked?: boolean;
}

/** A message sent and not yet acknowledged by that connection. */
type Pending = AckWait<Entry, CapsSocket>;

/** How a message left its queue. */
export type AckVia = 'ack' | 'received' | 'delivered';

/**
 * Moves queued messages to connected clients and takes them off their queue when acknowledged.
 *
 * - The driver queue: with dispatch `one` each pickup is held by one driver at a time (competing
 *   consumers, round robin, at most `driverPrefetch` each); if that driver disconnects or does not
 *   acknowledge in time, the pickup goes to another driver. With `broadcast` every driver gets it.
 * - A store's queue: every vendor process of the store gets each message; the first ack removes it.
 * - Unacknowledged messages are sent again on reconnect (join), on `getAll`, and after the ack
 *   time-out, with back-off. A lab client that never acknowledges anything is not re-sent on a
 *   timer (it would repeat itself forever); its messages wait for `received`, `getAll` or a
 *   reconnect.
 */
export class Delivery {
  private readonly queues = new Map<string, Map<string, Entry>>();
  /** Who holds which pickup, and which goes next (dispatch `one`): hub/dispatch.ts. */
  private readonly dispatcher: Dispatcher<CapsSocket, Entry>;
  /** Stores whose page read came back empty (the storage was busy): one retry each, soon. */
  private readonly retrying = new Set<string>();
  /** Stores whose next page of the log is being read, and what it will bring. */
  private readonly paging = new Map<string, Promise<ParcelMessage[]>>();
  private readonly backlogNoted = new Map<string, number>();
  /** Drivers each undelivered parcel was sent to, by store and orderId (in memory only). */
  private readonly dispatched = new Map<string, Set<string>>();
  /** Driver-queue entries by store and orderId, so a `delivered` finds its pickup without a scan. */
  private readonly pickups = new Map<string, Entry>();
  /** The drivers room as an array (and as the dispatcher's slots), rebuilt only when someone joins or leaves it. */
  private driverList: CapsSocket[] | undefined;
  private driverSlots: Array<DriverSlot<CapsSocket>> = [];
  /** Every send waiting for its ack: hub/acknowledgements.ts. */
  private readonly acks: Acknowledgements<Entry, CapsSocket>;
  private closed = false;
  private readonly feedTimers: NodeJS.Timeout[] = [];
  /** Several hubs: a read of pickups in flight, and what to read once it is back. */
  private pulling = false;
  private pullNext: { shards: Set<number>; sweep: boolean } | undefined;
  /** Several hubs: the last read filled this hub's room (or a bell rang without room): more may wait. */
  private saturated = false;
  /** Several hubs: followed stores whose bell rang since their log was last read. */
  private readonly storeNews = new Set<string>();
  private readonly window: number;

  constructor(
    private readonly nsp: CapsNamespace,
    private readonly storage: Storage,
    private readonly logger: Logger,
    private readonly options: DeliveryOptions,
    private readonly metrics: Metrics,
    private readonly feed?: RedisFeed,
  ) {
    this.window = options.window ?? DEFAULT_LIMITS.window;
    this.acks = new Acknowledgements(options, (wait) => {
      this.unanswered(wait.socket);
      this.timedOut(wait);
    });
    this.dispatcher = new Dispatcher(options.maxInHandsPerStore !== undefined ? { prefetch: options.driverPrefetch, maxInHandsPerStore: options.maxInHandsPerStore } : { prefetch: options.driverPrefetch });
    const forget = (room: unknown): void => {
      if (room === DRIVERS_ROOM) this.driverList = undefined;
    };
    nsp.adapter.on('join-room', forget);
    nsp.adapter.on('leave-room', forget);
    nsp.adapter.on('delete-room', forget);
    if (feed) {
      // a hub reads the pickups while it has drivers, and a store's log while one of its vendors is here
      nsp.adapter.on('join-room', (room: unknown) => {
        if (room === DRIVERS_ROOM) feed.watchPickups(true);
        else if (typeof room === 'string' && room.startsWith(STORE_ROOM)) feed.follow(room.slice(STORE_ROOM.length));
      });
      nsp.adapter.on('delete-room', (room: unknown) => {
        if (room === DRIVERS_ROOM) {
          feed.watchPickups(false);
          // the last driver's socket is still connected while it leaves its rooms: once it is
          // gone (its pickups back in this hub's pool), they go to the other hubs
          setImmediate(() => {
            if (this.drivers().length === 0) void this.releaseAll();
          });
        } else if (typeof room === 'string' && room.startsWith(STORE_ROOM)) this.unfollow(room.slice(STORE_ROOM.length));
      });
    }
  }

  /**
   * Loads what the store still holds (after a restart) so it flows when clients connect. Several
   * hubs: nothing; each hub reads what its own clients need, as they come.
   */
  async load(): Promise<void> {
    if (this.feed) return this.openFeed(this.feed);
    const restored = { queues: 0, messages: 0, inLog: 0 };
    for (const info of await this.storage.queues()) {
      const pending = await this.storage.pending(info.queue);
      for (const message of pending) this.put(newEntry(message));
      // a store's messages wait in its log until one of its vendors is back;
      // listed (queueStats) even when all of it waits there
      this.entries(info.queue);
      const inLog = this.storage.inLog(info.queue);
      if (info.depth === 0) continue;
      // a line per queue for the first few; thousands of stores with a backlog get one line in all
      if (restored.queues < RESTORED_LINES) this.logger.info('QUEUE RESTORED', { queue: info.queue, depth: info.depth, ...(inLog > 0 ? { inLog } : {}) });
      restored.queues++;
      restored.messages += info.depth;
      restored.inLog += inLog;
    }
    if (restored.queues > RESTORED_LINES) this.logger.info('QUEUES RESTORED', restored);
  }

  private async openFeed(feed: RedisFeed): Promise<void> {
    await feed.open({
      pickups: (shard) => this.pullPickups([shard], false),
      storeNews: (store) => this.logNews(store),
      storeMessage: (store, message) => {
        const entries = this.entries(store);
        // a full window: the message waits in the log, read once acknowledgements make room
        if (this.closed || entries.size >= this.window || this.paging.has(store)) return false;
        if (!entries.has(message.messageId)) this.deliverNew(message);
        return true;
      },
      storeAcked: (store, messageId) => {
        const entry = this.queues.get(store)?.get(messageId);
        if (!entry) return;
        this.forget(entry);
        // room in the window: what waits past it in the log comes in
        void this.pageIn(store);
      },
      reconnected: () => {
        this.rereadFollowed(feed);
        this.pullPickups(SHARD_IDS, true);
      },
    });
    // prevents the timers from keeping the process alive
    this.feedTimers.push(
      setInterval(() => this.pullPickups(SHARD_IDS, true), PULL_EVERY_MS).unref(),
      setInterval(() => void this.keepHeld(), HOLD_REFRESH_MS).unref(),
      // a bell lost without its channel dropping (nothing says so) costs at most this long
      setInterval(() => this.rereadFollowed(feed), FOLLOWED_CHECK_MS).unref(),
    );
  }

  /** Several hubs: bells may have been missed: every followed store's log is read again. */
  private rereadFollowed(feed: RedisFeed): void {
    feed.missedBells();
    for (const store of feed.followed()) this.logNews(store);
  }

  /** Several hubs: a followed store's log has news: read it. */
  private logNews(store: string): void {
    this.storeNews.add(store);
    void this.pageIn(store);
  }

  /** Several hubs: the last vendor of a store left this hub: its messages leave memory (its log keeps them). */
  private unfollow(store: string): void {
    this.feed?.unfollow(store);
    this.storeNews.delete(store);
    this.paging.delete(store);
    for (const entry of this.queues.get(store)?.values() ?? []) this.acks.forget(entry);
    this.queues.delete(store);
  }

  /**
   * A message the storage has committed: send it where it goes (and tell the other hubs). `from`:
   * the publishing socket, which is not sent its own pickup. `inLog`: it went to its store's log
   * past the window (the vendors are behind): sent once they catch up and it is paged in.
   */
  add(message: ParcelMessage, from?: string, inLog = false): void {
    // several hubs: a pickup waiting its store's turn is sent once it enters the stream
    if (this.feed) return inLog ? undefined : this.addShared(message, from);
    if (inLog) {
      const queue = message.queueId;
      this.entries(queue);
      // a vendor connected meanwhile (the step was being synced): it reads the log now
      if (this.hasListeners(queue)) void this.pageIn(queue);
      else this.noteBacklog(queue, 0);
      return;
    }
    this.deliverNew(message, from);
  }

  /**
   * Several hubs: a pickup goes to the drivers through the consumer group (this hub's, if they
   * have room; a lab client here that has not said who it is hears it, as in lab 12); a vendor
   * message through its store's log, read here if one of its vendors is.
   */
  private addShared(message: ParcelMessage, from?: string): void {
    if (message.queueId === DRIVER_QUEUE) {
      if (this.drivers().length === 0) for (const socket of this.listeners(from)) (socket.emit as (event: string, message: ParcelMessage) => boolean)(message.event, message);
      this.pullPickups([shardOf(message.store)], false);
    }
    // a vendor message reaches this hub's vendors through its store's bell, as on every hub following it
  }

  /** Takes a message off this hub's queue and indexes (the store is told by the caller, if at all). */
  private forget(entry: Entry): void {
    const { queueId: queue, messageId } = entry.message;
    this.queues.get(queue)?.delete(messageId);
    if (queue === DRIVER_QUEUE) {
      this.dispatcher.remove(entry);
    }
    entry.acked = true;
    this.acks.forget(entry);
    // a parcel's later attempt may be the one indexed now (a stale pickup came back after a restart)
    if (queue === DRIVER_QUEUE && this.pickups.get(entry.key) === entry) this.pickups.delete(entry.key);
  }

  private deliverNew(message: ParcelMessage, from?: string): void {
    const entry = newEntry(message);
    const queue = message.queueId;
    this.put(entry);
    if (queue === DRIVER_QUEUE && this.options.dispatch === 'one' && this.drivers().length > 0) {
      this.pump();
      this.noteBacklog(queue, this.drivers().length);
    } else {
      // no declared driver: lab clients that have not said who they are all hear it, as in lab 12
      const sockets = queue === DRIVER_QUEUE ? this.listeners(from) : this.consumers(queue);
      for (const socket of sockets) this.send(socket, entry);
      this.noteBacklog(queue, sockets.length);
    }
  }

  /** Takes a message off its queue (whoever acknowledged it), then frees its driver for more. */
  async ack(queue: string, messageId: string, via: AckVia): Promise<AckOutcome> {
    const entries = this.queues.get(queue);
    const entry = entries?.get(messageId);
    if (entry) this.forget(entry);
    const outcome = await this.storage.ack(queue, messageId);
    if (entry && entries?.size === 0 && this.backlogNoted.has(queue)) {
      this.backlogNoted.delete(queue);
      this.logger.info('QUEUE DRAINED', { queue, via });
    }
    if (entry && queue === DRIVER_QUEUE) this.pump();
    else if (entry) void this.pageIn(queue);
    return outcome;
  }

  /**
   * A store's vendors caught up with its window: the next page of its log comes into memory and
   * goes out to them, in order. One page in flight per store. (Awaited by a lab `getAll`, which
   * replays what is queued.)
   */
  pageIn(queue: string): Promise<ParcelMessage[]> {
    // a read in flight is the answer (the storage may already have taken its page from the log)
    let paging = this.paging.get(queue);
    if (paging) return paging;
    if (this.closed) return Promise.resolve([]);
    if (this.feed) {
      const room = this.window - (this.queues.get(queue)?.size ?? 0);
      // acknowledgements make room, and page in again
      if (!this.feed.following(queue) || room <= 0) return Promise.resolve([]);
      paging = this.readFollowed(this.feed, queue, room);
    } else if (this.storage.inLog(queue) === 0) {
      return Promise.resolve([]);
    } else {
      paging = this.readPage(queue);
    }
    this.paging.set(queue, paging);
    return paging;
  }

  private async readPage(queue: string): Promise<ParcelMessage[]> {
    try {
      const page = await this.storage.more(queue);
      if (this.closed) return [];
      for (const message of page) this.deliverNew(message);
      const left = this.storage.inLog(queue);
      if (page.length > 0) this.logger.info('PAGED IN', { queue, messages: page.length, inLog: left });
      // nothing read (the storage was busy) with nothing in memory to be acknowledged: look again soon, once
      else if (left > 0 && (this.queues.get(queue)?.size ?? 0) === 0 && this.hasListeners(queue) && !this.retrying.has(queue)) {
        this.retrying.add(queue);
        setTimeout(() => {
          this.retrying.delete(queue);
          void this.pageIn(queue);
        }, 100).unref();
      }
      return page;
    } catch (err) {
      this.logger.warn('PAGE IN FAILED', { queue, error: err instanceof Error ? err.message : String(err) });
      return [];
    } finally {
      this.paging.delete(queue);
    }
  }

  /**
   * Several hubs: the next messages of a followed store's log, up to the window, go out to its
   * vendors here, in order; read again when news came meanwhile or the window filled up.
   */
  private async readFollowed(feed: RedisFeed, queue: string, room: number): Promise<ParcelMessage[]> {
    let again = false;
    try {
      this.storeNews.delete(queue);
      const page = await feed.readStore(queue, room);
      if (this.closed || !feed.following(queue)) return [];
      const entries = this.entries(queue);
      for (const message of page) if (!entries.has(message.messageId)) this.deliverNew(message);
      again = page.length >= room || this.storeNews.has(queue) || feed.behind(queue);
      return page;
    } catch (err) {
      this.logger.warn('PAGE IN FAILED', { queue, error: err instanceof Error ? err.message : String(err) });
      return [];
    } finally {
      this.paging.delete(queue);
      if (again) void this.pageIn(queue);
    }
  }

  /** The name of the driver holding a pickup of this hub (dispatch `one`), if one does. */
  holderOf(messageId: string): string | undefined {
    return this.queues.get(DRIVER_QUEUE)?.get(messageId)?.holder?.data.name;
  }

  /** True when the pickup of this parcel was sent to the driver named `name`. */
  wasDispatchedTo(store: string, orderId: string, name: string): boolean {
    return this.dispatched.get(parcelKey(store, orderId))?.has(name) ?? false;
  }

  /**
   * A step of `attempt` (undefined: the parcel's current one) was reported for this parcel: its
   * pickup reached a driver (whether or not that driver acked, and whichever connection reports
   * it). `done` (delivered, failed, returned, cancelled): forget who it went to. The pickup of a
   * later attempt (a failed parcel back in the pool) is not this step's to settle.
   */
  async settlePickup(store: string, orderId: string, done: boolean, attempt?: number): Promise<void> {
    const key = parcelKey(store, orderId);
    if (done) this.dispatched.delete(key);
    const entry = this.pickups.get(key);
    if (!entry || (attempt !== undefined && (entry.message.attempt ?? 1) > attempt)) return;
    if (this.feed) {
      // the step's own script took the pickup off its stream
      this.forget(entry);
      this.pump();
      return;
    }
    await this.ack(DRIVER_QUEUE, entry.message.messageId, 'delivered');
  }

  /**
   * A parcel was cancelled: the drivers its pickup went to from this hub, and `carrier` (the one
   * that has it in transit, known to every hub), hear the cancel at once on every connection, on
   * any hub (their rooms go through the adapter). Best effort: not queued for a driver; one that
   * misses it has its next step refused.
   */
  tellHolders(message: ParcelMessage, carrier?: string): void {
    const names = new Set(this.dispatched.get(parcelKey(message.store, message.orderId)));
    if (carrier !== undefined) names.add(carrier);
    if (names.size === 0) return;
    (this.nsp.to([...names].map(driverRoom)).emit as (event: string, message: ParcelMessage) => boolean)('cancelled', message);
  }

  /** A driver came online or asked for work. */
  driverReady(socket: CapsSocket): void {
    if (this.feed) this.pullPickups(SHARD_IDS, false);
    if (this.options.dispatch === 'one') this.pump();
    else this.replay(socket, DRIVER_QUEUE);
  }

  /**
   * Sends what is queued for `queue` to one socket, in order (connect, join, getAll): everything
   * not yet sent on this connection. A driver (dispatch `one`) gets what nobody holds.
   */
  replay(socket: CapsSocket, queue: string, event?: ParcelEvent): number {
    // a vendor back: if its window has room, the next page of its log follows what it is sent now
    if (queue !== DRIVER_QUEUE) void this.pageIn(queue);
    const entries = this.queues.get(queue);
    if (!entries || entries.size === 0) return 0;
    const competing = queue === DRIVER_QUEUE && this.options.dispatch === 'one';
    // a driver (dispatch `one`) gets its share of what nobody holds, by the same fair turns as any pickup
    if (competing) return this.pump().filter((a) => a.driver === socket).length;
    let sent = 0;
    for (const entry of entries.values()) {
      if (event && entry.message.event !== event) continue;
      if (entry.sentTo.includes(socket.id)) continue;
      this.send(socket, entry);
      sent++;
    }
    if (sent > 0) this.logger.info('REPLAY', { queue, messages: sent, socket: socket.id });
    return sent;
  }

  /** A client is gone: what it held goes to someone else. */
  disconnected(socket: CapsSocket): void {
    const holding = this.dispatcher.driverGone(socket);
    if (holding.length === 0) return;
    for (const entry of holding) this.dispatcher.enqueue(entry);
    this.metrics.redeliveries.inc(holding.length);
    this.logger.info('REDISPATCH', { queue: DRIVER_QUEUE, messages: holding.length, reason: 'driver disconnected', socket: socket.id });
    this.pump();
  }

  /**
   * The queued message a lab `received` names, in the first of `queues` that holds it: by the hub's
   * messageId; failing that, by the parcel (the orderId, which the course's reference hub uses as
   * the messageId), of `event` when given, of `store` when given, the oldest first.
   */
  findQueued(queues: readonly string[], ref: { messageId?: string; orderId?: string; store?: string; event?: ParcelEvent }): { queue: string; messageId: string } | undefined {
    for (const queue of queues) {
      const entries = this.queues.get(queue);
      if (!entries) continue;
      if (ref.messageId !== undefined && entries.has(ref.messageId)) return { queue, messageId: ref.messageId };
      const orderId = ref.orderId ?? ref.messageId;
      // a queue holds messages in sequence order: the first match is the oldest
      for (const entry of entries.values()) {
        const m = entry.message;
        if (m.orderId === orderId && (ref.event === undefined || m.event === ref.event) && (ref.store === undefined || m.store === ref.store)) return { queue, messageId: m.messageId };
      }
    }
    return undefined;
  }

  /** The queue holding this messageId, searched across every queue. */
  locate(messageId: string): string | undefined {
    for (const [queue, entries] of this.queues) if (entries.has(messageId)) return queue;
    return undefined;
  }

  /** The pickups a driver's connection holds. */
  held(socket: CapsSocket): Array<{ store: string; orderId: string }> {
    return [...this.dispatcher.heldBy(socket)].map((e) => ({ store: e.message.store, orderId: e.message.orderId }));
  }

  /** Every connected driver and the pickups it holds (dispatch `one`). */
  driverLoads(): Array<{ name: string; socket: string; holding: Array<{ store: string; orderId: string }> }> {
    return this.drivers()
      .filter((socket) => socket.data.role === 'driver')
      .map((socket) => ({ name: socket.data.name, socket: socket.id, holding: this.held(socket) }));
  }

  /** Depth and oldest message of every queue the hub knows. */
  queueStats(now = Date.now()): Array<{ queue: string; depth: number; oldestAgeSeconds: number }> {
    return [...this.queues.entries()].map(([queue, entries]) => {
      const oldest = entries.values().next().value;
      return { queue, depth: entries.size + this.storage.inLog(queue), oldestAgeSeconds: oldest ? Math.max(0, (now - Date.parse(oldest.message.time)) / 1000) : 0 };
    });
  }

  /** True when this message, still queued, was sent on this connection. */
  wasSentTo(queue: string, messageId: string, socketId: string): boolean {
    return this.queues.get(queue)?.get(messageId)?.sentTo.includes(socketId) ?? false;
  }

  /**
   * True when some connection in the store's room acknowledges what it is sent (a Socket.IO ack,
   * or the lab's received), so that the store's window drains.
   */
  hasAcknowledgers(store: string): boolean {
    for (const id of this.nsp.adapter.rooms.get(storeRoom(store)) ?? []) {
      const socket = this.nsp.sockets.get(id);
      if (socket && (socket.data.acks === 'callback' || socket.data.receives)) return true;
    }
    return false;
  }

  /** True when a connection on this hub is in the store's room (its vendors, a lab driver). */
  hasListeners(store: string): boolean {
    return (this.nsp.adapter.rooms.get(storeRoom(store))?.size ?? 0) > 0;
  }

  depth(queue: string): number {
    return (this.queues.get(queue)?.size ?? 0) + this.storage.inLog(queue);
  }

  close(): void {
    this.closed = true;
    for (const timer of this.feedTimers) clearInterval(timer);
    this.acks.close();
  }

  /**
   * Several hubs: hands every pickup this hub read and no driver of it holds (all of them, once
   * closed) to the other hubs at once, rather than after CLAIM_IDLE_MS.
   */
  async releaseAll(): Promise<void> {
    const entries = this.queues.get(DRIVER_QUEUE);
    if (!this.feed || !entries) return;
    const gone: string[] = [];
    for (const entry of [...entries.values()]) {
      if (!this.closed && entry.holder?.connected) continue;
      gone.push(entry.message.messageId);
      this.forget(entry);
    }
    if (gone.length === 0) return;
    try {
      await this.feed.release(gone);
      this.logger.info('PICKUPS RELEASED', { pickups: gone.length, reason: this.closed ? 'hub closing' : 'no driver left on this hub' });
    } catch (err) {
      this.logger.warn('RELEASE FAILED', { pickups: gone.length, error: err instanceof Error ? err.message : String(err), reason: 'they go to other hubs once idle' });
    }
  }

  /** Several hubs: pickups this hub's drivers have room for, past those it already holds or keeps for them. */
  private pickupRoom(): number {
    return this.drivers().length * this.options.driverPrefetch - (this.queues.get(DRIVER_QUEUE)?.size ?? 0);
  }

  /**
   * Several hubs: reads pickups for this hub's drivers from these shards (with `sweep`, also those
   * a dead hub left idle), up to their room. One read in flight; what is asked meanwhile follows it.
   */
  private pullPickups(shards: readonly number[], sweep: boolean): void {
    const feed = this.feed;
    if (!feed || this.closed || this.options.dispatch !== 'one') return;
    if (this.pulling) {
      const next = (this.pullNext ??= { shards: new Set(), sweep: false });
      for (const k of shards) next.shards.add(k);
      next.sweep ||= sweep;
      return;
    }
    const room = this.pickupRoom();
    if (room <= 0) {
      if (this.drivers().length > 0) this.saturated = true;
      return;
    }
    this.pulling = true;
    feed
      .takePickups(room, shards, sweep)
      .then(
        (messages) => {
          // closed, or the last driver left while this read was out: the others take them
          if (this.closed || this.drivers().length === 0) {
            if (messages.length > 0) feed.release(messages.map((m) => m.messageId)).catch(() => undefined);
            return;
          }
          const entries = this.entries(DRIVER_QUEUE);
          let added = 0;
          for (const message of messages) {
            if (entries.has(message.messageId)) continue;
            this.put(newEntry(message));
            added++;
          }
          this.saturated = added >= room;
          if (added > 0) this.noteBacklog(DRIVER_QUEUE, this.drivers().length);
        },
        (err: unknown) => {
          // closing: the storage went first
          if (!this.closed) this.logger.warn('PICKUP READ FAILED', { error: err instanceof Error ? err.message : String(err) });
        },
      )
      .finally(() => {
        this.pulling = false;
        const next = this.pullNext;
        this.pullNext = undefined;
        this.pump();
        if (next) this.pullPickups([...next.shards], next.sweep);
      });
  }

  /**
   * Several hubs: claims again every pickup this hub holds, so that no other hub's sweep takes
   * it; one another hub settled (its step came there) or took (this hub stalled) is let go here.
   */
  private async keepHeld(): Promise<void> {
    const entries = this.queues.get(DRIVER_QUEUE);
    if (!this.feed || this.closed || !entries || entries.size === 0) return;
    const ids = [...entries.keys()];
    let kept: Set<string>;
    try {
      kept = await this.feed.keep(ids);
    } catch {
      return; // Redis away: tried again next time
    }
    for (const id of ids) {
      const entry = entries.get(id);
      if (entry && !kept.has(id)) this.forget(entry);
    }
    this.pump();
  }


  /** Puts a message on its queue (and, for the driver pool, in the indexes pump() uses). */
  private put(entry: Entry): void {
    const { queueId: queue, messageId } = entry.message;
    this.entries(queue).set(messageId, entry);
    if (queue === DRIVER_QUEUE) {
      this.pickups.set(entry.key, entry);
      if (this.options.dispatch === 'one') this.dispatcher.enqueue(entry);
    }
  }

  private entries(queue: string): Map<string, Entry> {
    let entries = this.queues.get(queue);
    if (!entries) {
      entries = new Map();
      this.queues.set(queue, entries);
    }
    return entries;
  }

  /**
   * Hands waiting pickups to drivers with room for more: stores take turns, drivers take turns
   * (hub/dispatch.ts). Returns who got what.
   */
  private pump(): Array<{ pickup: Entry; driver: CapsSocket }> {
    // broadcast sends every pickup to everyone as it comes: nothing to hand out
    if (this.closed || this.options.dispatch !== 'one') return [];
    const drivers = this.drivers();
    if (drivers.length === 0) return [];
    const assigned = this.dispatcher.dispatch(this.driverSlots);
    for (const { pickup, driver } of assigned) this.send(driver, pickup);
    // several hubs: room made while more pickups may wait in Redis
    if (this.feed && this.saturated && !this.pulling && this.pickupRoom() > 0) this.pullPickups(SHARD_IDS, false);
    return assigned;
  }

  private send(socket: CapsSocket, entry: Entry): void {
    if (this.closed) return;
    const again = entry.sentTo.includes(socket.id);
    // tries, for the back-off: a send again, or a pickup handed to a driver to hold; the first
    // copies of a message fanned out to several clients are one try
    if (again || entry.holder === socket || entry.attempts === 0) entry.attempts++;
    if (!again) entry.sentTo.push(socket.id);
    this.metrics.send(entry.message.event);
    if (entry.message.event === 'pickup' && socket.data.role === 'driver') {
      if (this.feed) {
        // several hubs: noted in the parcel in Redis, whichever hub the driver reports its steps
        // through (written before the pickup is sent: this hub's own steps come after it)
        const { store, orderId } = entry.message;
        if (socket.data.auth) this.storage.noteDispatch?.(store, orderId, socket.data.name).catch((err: unknown) => this.logger.warn('DISPATCH NOT NOTED', { store, orderId, error: String(err) }));
      } else {
        const { key } = entry;
        const names = this.dispatched.get(key) ?? new Set<string>();
        names.add(socket.data.name);
        this.dispatched.set(key, names);
      }
    }
    const { queueId: queue, messageId, event } = entry.message;
    // a store's messages are its vendors' to acknowledge: anyone else in the room (a lab driver
    // that joined it) only listens, and its ack must not take them off the vendors' queue
    const listener = queue !== DRIVER_QUEUE && socket.data.role !== 'vendor';
    if (socket.data.acks === 'none' || listener) {
      // an ack callback nobody answers would stay in socket.io's table until the client leaves
      // (the contract's ack is always there for CAPS's own clients, which answer acks)
      (socket.emit as (event: string, message: ParcelMessage) => boolean)(event, entry.message);
      // a pickup held by a driver that never acks still times out, to go to another driver
      if (entry.holder === socket) this.acks.start(entry, socket, entry.attempts);
      return;
    }
    const pending = this.acks.start(entry, socket, entry.attempts);
    socket.emit(event, entry.message, () => {
      // an ack after the time-out is ignored, as socket.io's own timeout() would: the message went elsewhere
      if (this.closed || !this.acks.settle(pending)) return;
      socket.data.acks = 'callback';
      // already off its queue (its driver reported it delivered, another vendor process acked it): nothing to tell the store
      if (entry.acked) return;
      void this.ack(queue, messageId, 'ack').catch((e: unknown) => this.logger.error('ACK FAILED', { queue, messageId, error: String(e) }));
    });
  }

  /**
   * A client not known to answer acks let one time out: after a few, it is taken for one that
   * answers none (a course client), and sent messages without a callback from then on.
   */
  private unanswered(socket: CapsSocket): void {
    if (socket.data.acks !== 'unknown' || ++socket.data.unanswered < MAX_UNANSWERED) return;
    socket.data.acks = 'none';
    this.logger.info('NO ACKS', { socket: socket.id, unanswered: socket.data.unanswered, reason: 'this client answers no Socket.IO acks: its messages go without one from now on, leave their queue by received (or its steps), and come again on getAll or a reconnect' });
  }

  /** A send was not acknowledged in time: hand the pickup to another driver, or send it again. */
  private timedOut({ entry, socket, wait }: Pending): void {
    if (this.closed) return;
    const { queueId: queue, messageId } = entry.message;
    if (this.queues.get(queue)?.get(messageId) !== entry) return; // acknowledged some other way meanwhile
    if (queue === DRIVER_QUEUE && this.options.dispatch === 'one') {
      if (entry.holder !== socket) return;
      this.dispatcher.release(entry);
      entry.avoid = socket;
      this.dispatcher.enqueue(entry);
      this.metrics.redeliveries.inc();
      this.logger.info('REDISPATCH', { queue, messageId, orderId: entry.message.orderId, reason: `no ack within ${wait} ms`, socket: socket.id });
      this.pump();
    } else if (socket.connected && socket.data.acks === 'callback') {
      this.metrics.redeliveries.inc();
      this.logger.info('REDELIVER', { queue, messageId, orderId: entry.message.orderId, attempt: entry.attempts + 1, socket: socket.id });
      this.send(socket, entry);
    }
  }

  /** Who receives messages of a store's queue: everyone in its room. */
  private consumers(queue: string): CapsSocket[] {
    const room = this.nsp.adapter.rooms.get(storeRoom(queue));
    if (!room) return [];
    const out: CapsSocket[] = [];
    for (const id of room) {
      const socket = this.nsp.sockets.get(id);
      if (socket) out.push(socket);
    }
    return out;
  }

  /**
   * Every connection a lab pickup reaches: all but its sender, vendors and dashboards (and, with a
   * token, anyone but a driver). Whoever has not said who it is hears it, as in lab 12, but is
   * never the one driver a pickup waits for: a connection that only reports steps cannot hear.
   */
  private listeners(except?: string): CapsSocket[] {
    const out: CapsSocket[] = [];
    for (const socket of this.nsp.sockets.values()) {
      const { role, auth } = socket.data;
      if (socket.id === except || role === 'vendor' || role === 'dashboard' || (auth && auth.role !== 'driver')) continue;
      out.push(socket);
    }
    return out;
  }

  /**
   * Drivers who said so: a driver token or handshake, `join` of a driver id, or `getAll` of the
   * driver queue. Only these are handed pickups to hold (dispatch `one`).
   */
  private drivers(): CapsSocket[] {
    if (!this.driverList) {
      const room = this.nsp.adapter.rooms.get(DRIVERS_ROOM);
      const list: CapsSocket[] = [];
      for (const id of room ?? []) {
        const socket = this.nsp.sockets.get(id);
        if (socket) list.push(socket);
      }
      this.driverList = list;
      this.driverSlots = list.map((driver) => ({ driver }));
    }
    return this.driverList;
  }

  /** Logs a backlog when a queue has nobody to take it, at 1, 10, 100, ... messages. */
  private noteBacklog(queue: string, consumers: number): void {
    if (consumers > 0 && queue !== DRIVER_QUEUE) return;
    const depth = this.depth(queue);
    const noted = this.backlogNoted.get(queue) ?? 0;
    if (depth >= Math.max(1, noted * 10) && (consumers === 0 || depth >= 10)) {
      this.backlogNoted.set(queue, depth);
      this.logger.warn('BACKLOG', { queue, depth, waiting: consumers === 0 ? `no ${queue === DRIVER_QUEUE ? 'driver' : 'vendor'} online` : 'drivers busy' });
    }
  }
}

function newEntry(message: ParcelMessage): Entry {
  return { message, key: parcelKey(message.store, message.orderId), store: message.store, seq: message.seq, attempts: 0, sentTo: [] };
}

const STORE_ROOM = storeRoom('');
