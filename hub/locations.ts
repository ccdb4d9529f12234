import type { DriverLocation, LocationInput } from '../protocol/messages.js';

/** A driver's position is kept at most this often; more often is refused (CAPS_ERR_RATE_LIMITED). */
export const LOCATION_EVERY_MS = 1_000;

/**
 * Drivers' live positions: the latest one of each driver online, in memory only (a position is
 * news, not history: nothing of it is queued or stored), forgotten when the driver leaves.
 * Bounded by the drivers online.
 */
export class Locations {
  private readonly latest = new Map<string, DriverLocation & { at: number }>();

  constructor(private readonly now: () => number = () => performance.now()) {}

  /** Keeps `input` as `driver`'s position; undefined when the last one is too recent. */
  update(driver: string, input: LocationInput, orderIds: readonly string[]): DriverLocation | undefined {
    const now = this.now();
    const last = this.latest.get(driver);
    if (last && now - last.at < LOCATION_EVERY_MS) return undefined;
    const location: DriverLocation = { driver, lat: input.lat, lng: input.lng, time: new Date().toISOString(), orderIds: [...orderIds] };
    if (input.heading !== undefined) location.heading = input.heading;
    if (input.speed !== undefined) location.speed = input.speed;
    this.latest.set(driver, { ...location, at: now });
    return location;
  }

  /** The latest position of `driver`, if it sent one while online. */
  get(driver: string): DriverLocation | undefined {
    const found = this.latest.get(driver);
    if (!found) return undefined;
    const { at: _at, ...location } = found;
    return location;
  }

  forget(driver: string): void {
    this.latest.delete(driver);
  }

  get size(): number {
    return this.latest.size;
  }
}
