/** What `caps bench` and its load-generator children say to each other over the IPC channel. */
import type { LatencySummary } from './stats.js';

export interface LoadConfig {
  url: string;
  /** Several hubs: vendor i connects to urls[i % n], driver j to urls[j % n] (`url` is then unused). */
  urls?: string[];
  vendors: number;
  drivers: number;
  /** Closed loop: parcels each vendor keeps in flight. */
  inflight: number;
  /** Open loop: parcels per second over all vendors; 0 means closed loop. */
  rate: number;
  warmupMs: number;
  measureMs: number;
  /** Drivers acknowledge the hub's messages (CAPS asks for acks; the relay does not). */
  label: string;
  /**
   * `caps`: CAPS's own clients (handshake identity, publish acks, Socket.IO acks of messages).
   * `lab`: the course's (no identity, `join`, publishes without acks, `received` instead of acks,
   * the pickup message re-emitted as the driver's steps).
   */
  protocol: BenchProtocol;
}

export type BenchProtocol = 'caps' | 'lab';

export interface LoadResult {
  /** Parcels whose `delivered` reached their vendor inside the measured window. */
  parcels: number;
  /** Parcels whose `delivered` reached their vendor over the whole run, warm-up included. */
  delivered: number;
  /** Socket.IO events carried in the window: publishes acknowledged plus messages received. */
  events: number;
  seconds: number;
  /** pickup sent → delivered received at the vendor, in ms. */
  latency: LatencySummary;
  /** Publishes refused or not acknowledged, and connection errors. */
  errors: number;
  firstError?: string;
  /** Pickups sent that never came back delivered before the end (in flight at the end). */
  outstanding: number;
}

export type LoadToParent =
  | { type: 'connected' }
  | { type: 'measure-start' }
  | { type: 'measure-end' }
  | { type: 'progress'; phase: 'warmup' | 'measure'; elapsedMs: number; parcels: number; errors: number }
  | { type: 'result'; result: LoadResult }
  | { type: 'failed'; message: string };

export interface IdleConfig {
  url: string;
  /** Names of the drivers this process holds. */
  first: number;
  count: number;
  prefix: string;
  /** Connections started at once while ramping up. */
  concurrency: number;
}

export type IdleToParent =
  | { type: 'progress'; connected: number; failed: number; received: number; newIds: string[]; firstError?: string }
  | { type: 'failed'; message: string };

/** The parent tells idle drivers to start acknowledging (after the restart). */
export type IdleFromParent = { type: 'ack-mode' } | { type: 'stop' };
