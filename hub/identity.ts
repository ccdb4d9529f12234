import { DRIVER_QUEUE } from '../protocol/messages.js';

/**
 * The course's drivers name themselves `driver`, `DRIVER`, `driver-client` and the like.
 * Any id that starts with "driver" (any case) therefore means the driver pool, never a store.
 */
export function isDriverId(id: string): boolean {
  return /^driver/i.test(id);
}

/** Maps a client id from a lab payload to the queue it means: the driver pool or a store. */
export function queueOf(id: string): string {
  return isDriverId(id) ? DRIVER_QUEUE : id;
}

/** Socket.IO room of a store's vendors. Prefixed so that no store name can collide with the pool. */
export function storeRoom(store: string): string {
  return `store:${store}`;
}

/** Socket.IO room of every driver. */
export const DRIVERS_ROOM = 'drivers';

/**
 * Socket.IO room of one parcel's tracking pages. The NUL between store and orderId cannot occur in
 * either (both refuse control characters), so no two parcels share a room.
 */
export function parcelRoom(store: string, orderId: string): string {
  return `parcel:${store}\u0000${orderId}`;
}

/** Socket.IO room of every connection of one driver, on every hub (a cancel is told there). */
export function driverRoom(driver: string): string {
  return `driver:${driver}`;
}

/** Socket.IO room of the tracking pages whose parcel this driver is carrying (in transit). */
export function positionRoom(driver: string): string {
  return `position:${driver}`;
}
