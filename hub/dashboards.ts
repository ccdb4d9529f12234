import type { DashboardStats, DriverLocation, ParcelMessage, ParcelUpdate } from '../protocol/messages.js';
import { parcelRoom, positionRoom, storeRoom } from './identity.js';
import { InTransit } from './in-transit.js';
import type { ParcelRef } from './in-transit.js';
import { parcelKey } from './storage/storage-core.js';
import { trackingPosition, trackingStep } from './tracking.js';
import type { Delivery } from './delivery.js';
import type { Metrics } from './metrics.js';
import type { CapsNamespace, CapsSocket } from './types.js';
import type { SharedWatchers } from './watchers.js';

const ALL_STORES = 'dashboards';
const storeDashboards = (store: string): string => `dashboards:${store}`;
const STATS_EVERY_MS = 1_000;
const PARCEL_ROOM = parcelRoom('', '').slice(0, parcelRoom('', '').indexOf(':') + 1);
const POSITION_ROOM = positionRoom('');

/** The rooms of dashboards (all stores, or one) and of tracking pages. */
function isWatcherRoom(room: string): boolean {
  return room === ALL_STORES || room.startsWith(`${ALL_STORES}:`) || room.startsWith(PARCEL_ROOM);
}

/**
 * The live feed for dashboards: every recorded step as it happens (not queued: a dashboard
 * shows the present and loads the past over HTTP), and a stats snapshot each second.
 * A dashboard token limited to one store sees only that store.
 */
export class Dashboards {
  private timer: NodeJS.Timeout | undefined;
  private lastTotal = 0;
  private lastAt = performance.now();
  /** The parcels each driver has in transit: they, with its pickups held, say whose its position is. */
  private readonly inTransit = new InTransit();

  constructor(
    private readonly nsp: CapsNamespace,
    private readonly delivery: Delivery,
    private readonly metrics: Metrics,
    /** Several hubs: whether anyone watches on any hub (absent: one hub). */
    private readonly shared?: SharedWatchers,
  ) {
    // a dashboard or a tracking page joining its room: the other hubs hear of it now
    if (shared) nsp.adapter.on('join-room', (room: unknown) => typeof room === 'string' && isWatcherRoom(room) && shared.arrived());
  }

  /** True when a broadcast may reach someone: a watcher here, or (several hubs) on some hub. */
  private watchedAnywhere(room?: string): boolean {
    if (this.shared) return this.shared.anywhere();
    return room === undefined ? this.timer !== undefined : this.nsp.adapter.rooms.has(room);
  }

  /** Dashboards and tracking pages connected to this hub. */
  localWatchers(): number {
    let n = 0;
    for (const [room, members] of this.nsp.adapter.rooms) if (isWatcherRoom(room)) n += members.size;
    return n;
  }

  watch(socket: CapsSocket, store: string | undefined): void {
    void socket.join(store === undefined ? ALL_STORES : storeDashboards(store));
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(), STATS_EVERY_MS);
      // prevents the timer from keeping the process alive
      this.timer.unref();
    }
    socket.emit('stats', this.stats(store));
  }

  /** With several hubs, broadcast while a dashboard is open on any hub. */
  step(message: ParcelMessage): void {
    this.inTransit.step(message.event, message, message.driver);
    this.track(message);
    // nobody watching: skip the encoding of a broadcast that reaches no one
    if (!this.watchedAnywhere()) return;
    const { event, store, orderId, customer, address, time, driver, seq, attempt, details, reattempt } = message;
    const update: ParcelUpdate = { event, store, orderId, customer, address, time, seq };
    if (driver !== undefined) update.driver = driver;
    if (attempt !== undefined) update.attempt = attempt;
    if (details !== undefined) update.details = details;
    if (reattempt !== undefined) update.reattempt = reattempt;
    this.nsp.to(ALL_STORES).to(storeDashboards(store)).emit('parcel', update);
  }

  /**
   * A driver's position: each store whose parcels it holds hears it (vendors and that store's
   * dashboards), with only its own parcels; dashboards of every store hear every position.
   * Its parcels: the pickups it holds (`held`, not yet acknowledged) and those it has in transit.
   */
  location(location: DriverLocation, held: readonly ParcelRef[]): void {
    const byStore = new Map<string, string[]>();
    for (const { store, orderId } of this.carried(location.driver, held)) {
      const ids = byStore.get(store);
      if (ids) ids.push(orderId);
      else byStore.set(store, [orderId]);
    }
    for (const [store, orderIds] of byStore) this.nsp.to(storeRoom(store)).to(storeDashboards(store)).emit('location', { ...location, orderIds });
    if (this.watchedAnywhere(ALL_STORES)) this.nsp.to(ALL_STORES).emit('location', { ...location, orderIds: [...byStore.values()].flat() });
    // the tracking pages of the parcels it carries in transit (held above are pickups not yet reported)
    const room = positionRoom(location.driver);
    if (this.watchedAnywhere(room)) this.nsp.to(room).emit('tracking-position', trackingPosition(location));
  }

  /**
   * A step to its parcel's tracking pages (what and when, nothing else); in transit, they hear its
   * driver's position from then on, and stop once it is delivered.
   */
  private track(message: ParcelMessage): void {
    const { event, store, orderId, driver } = message;
    const room = parcelRoom(store, orderId);
    // most parcels have no page open
    if (!this.watchedAnywhere(room)) return;
    this.nsp.to(room).emit('tracking-step', trackingStep(message));
    if (event === 'cancelled') {
      // a store's cancel names no driver: its pages leave whichever driver's position they heard
      this.nsp
        .in(room)
        .fetchSockets()
        .then(
          (sockets) => {
            for (const socket of sockets) for (const joined of socket.rooms) if (joined.startsWith(POSITION_ROOM)) socket.leave(joined);
          },
          // the page shows no position once cancelled anyway; this only stops it hearing them
          () => undefined,
        );
      return;
    }
    if (driver === undefined) return;
    if (event === 'in-transit') this.nsp.in(room).socketsJoin(positionRoom(driver));
    // delivered, or a failed attempt (the next one may have another driver): no longer carried
    else this.nsp.in(room).socketsLeave(positionRoom(driver));
  }

  /** A driver's parcels: the pickups it holds, then those in transit with it, each once. */
  private carried(driver: string, held: readonly ParcelRef[]): ParcelRef[] {
    const seen = new Set(held.map((h) => parcelKey(h.store, h.orderId)));
    return [...held, ...this.inTransit.of(driver).filter((p) => !seen.has(parcelKey(p.store, p.orderId)))];
  }

  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** What every dashboard's stats are cut from: read once a tick, however many dashboard rooms. */
  private snapshot(): { drivers: Array<{ name: string; carried: ParcelRef[] }>; queues: DashboardStats['queues'] } {
    return {
      drivers: this.delivery.driverLoads().map((d) => ({ name: d.name, carried: this.carried(d.name, d.holding) })),
      queues: this.delivery.queueStats(),
    };
  }

  stats(store?: string, snapshot = this.snapshot()): DashboardStats {
    const now = performance.now();
    const total = this.metrics.receivedTotal();
    const seconds = (now - this.lastAt) / 1000;
    const eventsPerSecond = seconds > 0 ? (total - this.lastTotal) / seconds : 0;
    // a dashboard of one store sees that store: its vendors, and the drivers holding its parcels
    // (pickups not yet acknowledged, or in transit)
    const drivers = snapshot.drivers
      .map((d) => ({ name: d.name, holding: d.carried.filter((h) => store === undefined || h.store === store).map((h) => h.orderId) }))
      .filter((d) => store === undefined || d.holding.length > 0);
    const clients = { vendor: 0, driver: 0, dashboard: 0, unknown: 0 };
    if (store === undefined) {
      for (const socket of this.nsp.sockets.values()) if (socket.data.role !== 'tracker') clients[socket.data.role]++;
    } else {
      for (const socket of this.nsp.sockets.values()) if (socket.data.role === 'vendor' && socket.data.stores.has(store)) clients.vendor++;
      clients.driver = drivers.length;
    }
    return {
      time: new Date().toISOString(),
      clients,
      // the hub's whole rate is every store's business: not for a dashboard of one
      ...(store === undefined ? { eventsPerSecond: Math.round(eventsPerSecond * 10) / 10 } : {}),
      queues: snapshot.queues.filter((q) => store === undefined || q.queue === store),
      drivers,
    };
  }

  private tick(): void {
    const rooms = this.nsp.adapter.rooms;
    const watched = [...rooms.keys()].filter((room) => room === ALL_STORES || room.startsWith(`${ALL_STORES}:`));
    if (watched.length === 0) {
      this.close();
      return;
    }
    const snapshot = this.snapshot();
    for (const room of watched) {
      this.nsp.to(room).emit('stats', this.stats(room === ALL_STORES ? undefined : room.slice(ALL_STORES.length + 1), snapshot));
    }
    this.lastTotal = this.metrics.receivedTotal();
    this.lastAt = performance.now();
  }
}
