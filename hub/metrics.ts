import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { CapsErrorCode } from '../protocol/errors.js';

/**
 * What the hub counts, in Prometheus form (GET /metrics). One registry per hub, so several hubs
 * in one process (tests) keep their own figures. Gauges that mirror live state (clients, queue
 * depths) are read when scraped, through `observe`.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly refusals = new Counter({ name: 'caps_refusals_total', help: 'Requests refused, by error code', labelNames: ['code'] as const, registers: [this.registry] });
  // the two counters that move on every event are plain numbers, handed to prom-client when scraped
  private readonly receivedByEvent = new Map<string, number>();
  private readonly sentByEvent = new Map<string, number>();
  readonly received = countedOnScrape('caps_events_received_total', 'Parcel events received from clients and past validation (duplicates included), by event', this.receivedByEvent, this.registry);
  readonly sent = countedOnScrape('caps_events_sent_total', 'Messages sent to clients (re-sends included), by event', this.sentByEvent, this.registry);
  readonly redeliveries = new Counter({ name: 'caps_redeliveries_total', help: 'Messages sent again after a time-out or a lost consumer', registers: [this.registry] });
  readonly duplicates = new Counter({ name: 'caps_duplicates_total', help: 'Steps published again and acknowledged as duplicates', labelNames: ['event'] as const, registers: [this.registry] });
  readonly latency = new Histogram({
    name: 'caps_pickup_to_delivered_seconds',
    help: 'Time from a parcel’s pickup to its delivery',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  readonly clients = new Gauge({ name: 'caps_connected_clients', help: 'Connected clients, by role', labelNames: ['role'] as const, registers: [this.registry] });
  readonly queueDepth = new Gauge({ name: 'caps_queue_depth', help: 'Messages waiting for acknowledgement, by queue', labelNames: ['queue'] as const, registers: [this.registry] });
  readonly queueOldest = new Gauge({ name: 'caps_queue_oldest_message_age_seconds', help: 'Age of the oldest unacknowledged message, by queue', labelNames: ['queue'] as const, registers: [this.registry] });

  private readonly refusedByCode = new Map<CapsErrorCode, number>();

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'caps_' });
  }

  refuse(code: CapsErrorCode): void {
    this.refusals.inc({ code });
    this.refusedByCode.set(code, (this.refusedByCode.get(code) ?? 0) + 1);
  }

  receive(event: string): void {
    this.receivedByEvent.set(event, (this.receivedByEvent.get(event) ?? 0) + 1);
  }

  /** A message went out to a client. */
  send(event: string): void {
    this.sentByEvent.set(event, (this.sentByEvent.get(event) ?? 0) + 1);
  }

  refusedCount(code: CapsErrorCode): number {
    return this.refusedByCode.get(code) ?? 0;
  }

  /** Events accepted so far, all kinds (for events per second on the dashboard). */
  receivedTotal(): number {
    let total = 0;
    for (const n of this.receivedByEvent.values()) total += n;
    return total;
  }
}

/** A counter by event whose figures live in `counts`, copied into prom-client at each scrape. */
function countedOnScrape(name: string, help: string, counts: Map<string, number>, registry: Registry): Counter<'event'> {
  return new Counter({
    name,
    help,
    labelNames: ['event'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [event, n] of counts) this.inc({ event }, n);
    },
  });
}
