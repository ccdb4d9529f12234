/**
 * The CAPS client library (`import { CapsClient } from 'caps'`): a generic client that publishes
 * and subscribes over the hub's durable queue, and the vendor and driver the CLI runs.
 */
export { CapsClient } from './caps-client.js';
export type { CapsClientEvents, CapsClientOptions, MessageHandler } from './caps-client.js';
export { VendorClient } from '../vendor/vendor-client.js';
export type { VendorEvents, VendorOptions } from '../vendor/vendor-client.js';
export { DriverClient } from '../driver/driver-client.js';
export type { DriverEvents, DriverOptions } from '../driver/driver-client.js';
export { CapsError, CAPS_ERRORS, CAPS_ERROR_CODES, isCapsErrorCode } from '../protocol/errors.js';
export type { CapsErrorBody, CapsErrorCode } from '../protocol/errors.js';
export type { ParcelMessage, PublishResult } from '../protocol/messages.js';
export type { Order, ParcelEvent, PublishPayload } from '../protocol/schemas.js';
export { PARCEL_EVENTS } from '../protocol/schemas.js';
