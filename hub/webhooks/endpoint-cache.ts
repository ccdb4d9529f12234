import type { ParcelEvent } from '../../protocol/schemas.js';
import type { WebhookEndpoint } from './types.js';

/**
 * A hub's view of the webhook endpoints, in memory, for both outboxes: every endpoint by id, oldest
 * first, and each store's active ones, kept by every change that goes through it, so that the
 * publish path's questions ("does this store have an endpoint for this step?") are one lookup and
 * never a copy of the list refreshed by hand.
 */
export class EndpointCache {
  private byId = new Map<string, WebhookEndpoint>();
  /** Active endpoints by store. */
  private active = new Map<string, WebhookEndpoint[]>();
  /** False until the endpoints were read once (a shared outbox loads them from Redis). */
  loaded = false;

  /** Every endpoint, as loaded: replaces what was known. */
  replaceAll(endpoints: readonly WebhookEndpoint[]): void {
    const sorted = [...endpoints].sort(oldestFirst);
    this.byId = new Map(sorted.map((e) => [e.id, e]));
    this.loaded = true;
    this.reindex();
  }

  set(endpoint: WebhookEndpoint): void {
    this.byId.set(endpoint.id, endpoint);
    this.reindex();
  }

  delete(id: string): void {
    if (this.byId.delete(id)) this.reindex();
  }

  get(id: string): WebhookEndpoint | undefined {
    return this.byId.get(id);
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  /** Every endpoint, oldest first. */
  all(): WebhookEndpoint[] {
    return [...this.byId.values()];
  }

  /** Whether a step of `store` may have an endpoint to go to: any active one (or not loaded yet). */
  watches(store: string): boolean {
    return !this.loaded || this.active.has(store);
  }

  /** The active endpoints of `store` that take `event`. */
  takers(store: string, event: ParcelEvent): WebhookEndpoint[] {
    return (this.active.get(store) ?? []).filter((e) => e.events === undefined || e.events.includes(event));
  }

  /** Endpoints change rarely (a registration, a removal, a state): the index is rebuilt whole. */
  private reindex(): void {
    const active = new Map<string, WebhookEndpoint[]>();
    for (const e of this.byId.values()) {
      if (e.state !== 'active') continue;
      const list = active.get(e.store);
      if (list) list.push(e);
      else active.set(e.store, [e]);
    }
    this.active = active;
  }
}

/** Oldest first, then by id. */
export function oldestFirst(a: WebhookEndpoint, b: WebhookEndpoint): number {
  return a.created - b.created || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}
