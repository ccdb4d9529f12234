import { parcelKey } from './storage/storage-core.js';

/** A parcel, by its store and orderId. */
export interface ParcelRef {
  store: string;
  orderId: string;
}

/**
 * Which parcels each driver has in transit, from the steps this hub records: `in-transit` gives
 * a parcel to its driver, any later step takes it back. A pickup a driver acknowledged is no
 * longer "held" by dispatch (hub/dispatch.ts), yet the parcel is in that driver's van: this is
 * what says so, so that its store hears where the van is. In memory (like the positions it serves),
 * bounded by the parcels in transit and by `max` (several hubs: a parcel whose later step was
 * recorded by another hub is never taken back here; the oldest go first); a restarted hub learns
 * them again from the next steps.
 */
export class InTransit {
  private readonly byDriver = new Map<string, Map<string, ParcelRef>>();
  /** parcelKey → its driver, oldest first. */
  private readonly driverOf = new Map<string, string>();

  constructor(private readonly max = 100_000) {}

  /** A recorded step: `in-transit` by `driver` carries the parcel; any other step ends its carriage. */
  step(event: string, parcel: ParcelRef, driver: string | undefined): void {
    const key = parcelKey(parcel.store, parcel.orderId);
    this.drop(key);
    if (event !== 'in-transit' || driver === undefined) return;
    if (this.driverOf.size >= this.max) {
      const oldest = this.driverOf.keys().next().value;
      if (oldest !== undefined) this.drop(oldest);
    }
    this.driverOf.set(key, driver);
    let carried = this.byDriver.get(driver);
    if (!carried) this.byDriver.set(driver, (carried = new Map()));
    carried.set(key, { store: parcel.store, orderId: parcel.orderId });
  }

  /** The parcel is no longer in anyone's van (as far as this hub knows). */
  private drop(key: string): void {
    const before = this.driverOf.get(key);
    if (before === undefined) return;
    const carried = this.byDriver.get(before);
    carried?.delete(key);
    if (carried?.size === 0) this.byDriver.delete(before);
    this.driverOf.delete(key);
  }

  /** The parcels `driver` has in transit. */
  of(driver: string): ParcelRef[] {
    return [...(this.byDriver.get(driver)?.values() ?? [])];
  }

  /** Parcels in transit, every driver together. */
  get size(): number {
    return this.driverOf.size;
  }
}
