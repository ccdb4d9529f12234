/**
 * Fair dispatch of waiting pickups to drivers (dispatch `one`), with no sockets and no timers:
 * the policy alone, so that it can be tested alone.
 *
 * - Pickups wait per store, in sequence order. A turn goes round the stores that have pickups
 *   waiting, one pickup each, so that a store's burst delays another store's next parcel by at
 *   most one turn, never by the burst.
 * - A driver holds at most `prefetch` pickups at once; drivers take turns (round robin), and a
 *   pickup that timed out on a driver goes to another one first.
 * - A store has at most a fair share of the pickups in drivers' hands (the slots of every driver
 *   online, shared among the stores with work), unless no other store has any waiting: the cap
 *   keeps a store with slow parcels from filling every driver, and never leaves a driver idle.
 */

/** What the dispatcher needs of a pickup. */
export interface Dispatchable<D> {
  readonly store: string;
  /** Position in the pickup queue: the order in which a store's pickups go out. */
  readonly seq: number;
  /** The driver holding it, if any (set and cleared by the dispatcher). */
  holder?: D | undefined;
  /** A driver that let it time out: offered to the others first. */
  avoid?: D | undefined;
}

export interface DispatchOptions {
  /** Pickups one driver may hold at once. */
  prefetch: number;
  /** Pickups one store may have in drivers' hands at once; undefined: a fair share. */
  maxInHandsPerStore?: number;
}

/** A driver as the dispatcher sees it: a key, and whether it may be handed more now. */
export interface DriverSlot<D> {
  readonly driver: D;
  /** False while the driver cannot take pickups (several hubs: a claim is pending, etc.). */
  readonly available?: boolean;
}

export class Dispatcher<D, P extends Dispatchable<D>> {
  /** Waiting pickups by store, each in sequence order. */
  private readonly waiting = new Map<string, Fifo<P>>();
  /** Pickups waiting or in hands, by store: its size is the number of stores with work. */
  private readonly work = new Map<string, number>();
  /**
   * Stores in the order their turn comes. A store whose queue empties keeps its slot (dead) until
   * the ring is compacted, so that dropping one costs nothing however many stores wait.
   */
  private ring: string[] = [];
  private readonly inRing = new Set<string>();
  private turn = 0;
  /** Pickups in drivers' hands, by store. */
  private readonly inHands = new Map<string, number>();
  /** What each driver holds. */
  private readonly holding = new Map<D, Set<P>>();
  private nextDriver = 0;

  constructor(private readonly options: DispatchOptions) {}

  /** A new pickup, or one going back to the pool (its driver left or timed out). */
  enqueue(pickup: P): void {
    let queue = this.waiting.get(pickup.store);
    if (!queue) {
      queue = new Fifo();
      this.waiting.set(pickup.store, queue);
      // a store back with work takes its old slot, if the ring still has it
      if (!this.inRing.has(pickup.store)) {
        this.ring.push(pickup.store);
        this.inRing.add(pickup.store);
      }
    }
    queue.insert(pickup);
    this.count(pickup.store, 1);
  }

  /** A pickup off the queue for good (acknowledged, delivered): out of the pool or the hands that held it. */
  remove(pickup: P): void {
    if (pickup.holder !== undefined) {
      this.release(pickup);
      return;
    }
    const queue = this.waiting.get(pickup.store);
    if (queue?.delete(pickup)) {
      this.count(pickup.store, -1);
      if (queue.size === 0) this.dropStore(pickup.store);
    }
  }

  /** Frees a pickup from its driver without putting it back (the caller decides). */
  release(pickup: P): void {
    const driver = pickup.holder;
    if (driver === undefined) return;
    this.holding.get(driver)?.delete(pickup);
    pickup.holder = undefined;
    const n = (this.inHands.get(pickup.store) ?? 1) - 1;
    if (n > 0) this.inHands.set(pickup.store, n);
    else this.inHands.delete(pickup.store);
    this.count(pickup.store, -1);
  }

  /** A driver is gone: what it held, in no particular order (the caller puts them back). */
  driverGone(driver: D): P[] {
    const held = [...(this.holding.get(driver) ?? [])];
    for (const pickup of held) this.release(pickup);
    this.holding.delete(driver);
    return held;
  }

  /** Pickups this driver holds. */
  heldBy(driver: D): ReadonlySet<P> {
    return this.holding.get(driver) ?? EMPTY;
  }

  waitingCount(): number {
    let n = 0;
    for (const queue of this.waiting.values()) n += queue.size;
    return n;
  }

  /**
   * Hands out what it can: stores take turns, one pickup each, to drivers with room, until no
   * driver has room or nothing waits. Returns the assignments in the order they were made; each
   * pickup's `holder` is set.
   */
  dispatch(drivers: ReadonlyArray<DriverSlot<D>>): Array<{ pickup: P; driver: D }> {
    const out: Array<{ pickup: P; driver: D }> = [];
    if (drivers.length === 0 || this.waiting.size === 0) return out;
    if (this.ring.length > 2 * this.waiting.size + 64) this.compact();
    const cap = this.storeCap(drivers.length);
    // first every store under its share; then, if drivers still have room, anyone (work-conserving)
    for (const capped of [true, false]) {
      let idle = 0;
      while (this.ring.length > 0 && idle < this.ring.length) {
        if (this.turn >= this.ring.length) this.turn = 0;
        const store = this.ring[this.turn] ?? '';
        const queue = this.waiting.get(store);
        const head = queue?.peek();
        if (!queue || !head || (capped && (this.inHands.get(store) ?? 0) >= cap)) {
          this.turn++;
          idle++;
          continue;
        }
        const driver = this.pickDriver(drivers, head.avoid);
        if (driver === undefined) return out;
        queue.shift();
        this.hold(head, driver);
        out.push({ pickup: head, driver });
        if (queue.size === 0) this.dropStore(store);
        this.turn++;
        idle = 0;
      }
    }
    return out;
  }

  /** The most pickups one store may hold while others wait: a fair share of every driver's slots. */
  private storeCap(drivers: number): number {
    if (this.options.maxInHandsPerStore !== undefined) return this.options.maxInHandsPerStore;
    return Math.max(1, Math.ceil((drivers * this.options.prefetch) / Math.max(1, this.work.size)));
  }

  private pickDriver(drivers: ReadonlyArray<DriverSlot<D>>, avoid: D | undefined): D | undefined {
    const others = avoid !== undefined && drivers.length > 1;
    return this.pickFrom(drivers, others ? avoid : undefined) ?? (others ? this.pickFrom(drivers, undefined) : undefined);
  }

  private pickFrom(drivers: ReadonlyArray<DriverSlot<D>>, skip: D | undefined): D | undefined {
    for (let i = 0; i < drivers.length; i++) {
      const index = (this.nextDriver + i) % drivers.length;
      const slot = drivers[index];
      if (!slot || slot.available === false || slot.driver === skip) continue;
      if ((this.holding.get(slot.driver)?.size ?? 0) < this.options.prefetch) {
        this.nextDriver = (index + 1) % drivers.length;
        return slot.driver;
      }
    }
    return undefined;
  }

  private hold(pickup: P, driver: D): void {
    pickup.holder = driver;
    let set = this.holding.get(driver);
    if (!set) {
      set = new Set();
      this.holding.set(driver, set);
    }
    set.add(pickup);
    this.inHands.set(pickup.store, (this.inHands.get(pickup.store) ?? 0) + 1);
  }

  private count(store: string, delta: number): void {
    const n = (this.work.get(store) ?? 0) + delta;
    if (n > 0) this.work.set(store, n);
    else this.work.delete(store);
  }

  private dropStore(store: string): void {
    this.waiting.delete(store);
  }

  /** Drops the slots of stores with nothing waiting; the store whose turn it is keeps it. */
  private compact(): void {
    let next: string | undefined;
    for (let i = 0; i < this.ring.length && next === undefined; i++) {
      const store = this.ring[(this.turn + i) % this.ring.length] ?? '';
      if (this.waiting.has(store)) next = store;
    }
    this.ring = this.ring.filter((store) => this.waiting.has(store));
    this.inRing.clear();
    for (const store of this.ring) this.inRing.add(store);
    this.turn = next === undefined ? 0 : this.ring.indexOf(next);
  }
}

const EMPTY: ReadonlySet<never> = new Set();

/**
 * A queue in sequence order with O(1) shift (an array with a head index: `Array.shift` copies the
 * rest). A pickup coming back is put in its place, a rare walk from the end.
 */
class Fifo<P extends { readonly seq: number }> {
  private items: P[] = [];
  private head = 0;

  get size(): number {
    return this.items.length - this.head;
  }

  peek(): P | undefined {
    return this.items[this.head];
  }

  shift(): P | undefined {
    const item = this.items[this.head];
    this.head++;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  insert(item: P): void {
    // new pickups have the highest seq: appending keeps the order
    let at = this.items.length;
    while (at > this.head && (this.items[at - 1]?.seq ?? 0) > item.seq) at--;
    if (at === this.items.length) this.items.push(item);
    else this.items.splice(at, 0, item);
  }

  delete(item: P): boolean {
    const at = this.items.indexOf(item, this.head);
    if (at < 0) return false;
    this.items.splice(at, 1);
    return true;
  }
}
