import { Counter, Gauge } from 'prom-client';
import type { Registry } from 'prom-client';
import { CapsError } from '../../protocol/errors.js';
import type { ParcelMessage } from '../../protocol/messages.js';
import type { ParcelEvent } from '../../protocol/schemas.js';
import type { Logger } from '../logger.js';
import type { ParcelRecord } from '../storage/storage.js';
import { Poster } from './post.js';
import { Sender } from './sender.js';
import { eventId, newEndpointId, newSecret } from './signing.js';
import { destinationProblem } from './ssrf.js';
import type { EndpointState, NewDelivery, Outbox, WebhookEndpoint, WebhookEvent } from './types.js';

export interface WebhooksOptions {
  /** Where endpoints and deliveries are kept: hub.ts chooses by the storage (Redis's shared one, or SQLite's file or memory). */
  outbox: Outbox;
  /** Allow endpoints on loopback, private and link-local addresses (`--webhook-allow-private`). */
  allowPrivate?: boolean;
  /** One attempt's limit. Default 10 s. */
  timeoutMs?: number;
  /** First retry's wait, doubled each time. Default 1 s. */
  retryBaseMs?: number;
  /** Longest wait between attempts. Default 1 h. */
  retryMaxMs?: number;
  /** Failing this long without a success disables an endpoint. Default 24 h. */
  disableAfterMs?: number;
  /** How long a delivered event's id is remembered, so a late re-enqueue is not sent again. Default 24 h. */
  retainDeliveredMs?: number;
}

export interface WebhooksContext {
  logger: Logger;
  /** Where the hub's metrics are registered (GET /metrics). */
  registry: Registry;
  /** Reads a parcel: its history gives each step's place and occurrence. */
  parcel(store: string, orderId: string): Promise<ParcelRecord | undefined>;
}

/** An endpoint as the API lists it: never its secret. */
export interface EndpointView {
  id: string;
  store: string;
  url: string;
  /** null: every event. */
  events: ParcelEvent[] | null;
  state: EndpointState;
  disabledReason?: string;
  disabledAt?: string;
  lastError?: string;
  lastErrorAt?: string;
  lastSuccessAt?: string;
  /** Events waiting to be delivered to it. */
  pending: number;
  created: string;
}

/** Endpoints one store may have. */
const MAX_ENDPOINTS_PER_STORE = 16;

export const WEBHOOK_DEFAULTS = {
  timeoutMs: 10_000,
  retryBaseMs: 1_000,
  retryMaxMs: 3_600_000,
  disableAfterMs: 24 * 3_600_000,
  retainDeliveredMs: 24 * 3_600_000,
} as const;

/** How often delivered rows past their retention are pruned. */
const PRUNE_EVERY_MS = 10 * 60_000;

/**
 * Signed webhooks (issue 17): a store's endpoints, the durable outbox of events waiting for them,
 * and the loop that delivers them. publish.ts calls `enqueue` for each recorded step of a store
 * `watches` reports; the routes in routes.ts call the rest.
 */
export class Webhooks {
  private readonly outbox: Outbox;
  private readonly poster: Poster;
  private readonly sender: Sender;
  private readonly allowPrivate: boolean;
  private readonly retainDeliveredMs: number;
  private pruneTimer: NodeJS.Timeout | undefined;
  private closing: Promise<void> | undefined;

  constructor(
    private readonly ctx: WebhooksContext,
    options: WebhooksOptions,
  ) {
    this.outbox = options.outbox;
    this.allowPrivate = options.allowPrivate === true;
    this.retainDeliveredMs = options.retainDeliveredMs ?? WEBHOOK_DEFAULTS.retainDeliveredMs;
    this.poster = new Poster({ timeoutMs: options.timeoutMs ?? WEBHOOK_DEFAULTS.timeoutMs, allowPrivate: this.allowPrivate });
    const attempts = new Counter({ name: 'caps_webhook_attempts_total', help: 'Webhook POSTs, by result (delivered: a 2xx; failed: anything else)', labelNames: ['result'] as const, registers: [ctx.registry] });
    const disabled = new Counter({ name: 'caps_webhook_endpoints_disabled_total', help: 'Webhook endpoints disabled after failing for too long', registers: [ctx.registry] });
    const outbox = this.outbox;
    new Gauge({
      name: 'caps_webhook_endpoints',
      help: 'Webhook endpoints, by state',
      labelNames: ['state'] as const,
      registers: [ctx.registry],
      collect() {
        this.reset();
        for (const state of ['active', 'disabled'] as const) this.set({ state }, outbox.endpoints().filter((e) => e.state === state).length);
      },
    });
    new Gauge({
      name: 'caps_webhook_pending_deliveries',
      help: 'Webhook events waiting in the outbox, every endpoint together',
      registers: [ctx.registry],
      async collect() {
        this.set(await outbox.pendingTotal());
      },
    });
    this.sender = new Sender(
      {
        outbox: this.outbox,
        logger: ctx.logger,
        post: (url, headers, body) => this.poster.post(url, headers, body),
        attempted: (result) => attempts.inc({ result }),
        disabled: () => disabled.inc(),
      },
      {
        retryBaseMs: options.retryBaseMs ?? WEBHOOK_DEFAULTS.retryBaseMs,
        retryMaxMs: options.retryMaxMs ?? WEBHOOK_DEFAULTS.retryMaxMs,
        disableAfterMs: options.disableAfterMs ?? WEBHOOK_DEFAULTS.disableAfterMs,
        perEndpoint: 8,
      },
    );
    // Redis away at start: the first enqueue or the outbox's next poll loads them
    this.outbox.ready().catch(() => undefined);
  }

  /** Where the outbox lives (a file, or `memory`), for the start-up log. */
  get where(): string {
    return this.outbox.where;
  }

  /** Starts delivering what the outbox holds (after a restart: what was pending). */
  start(): void {
    // endpoints added, removed, disabled or enabled through another hub
    this.outbox.start(() => this.sender.wake());
    this.sender.wake();
    this.pruneTimer = setInterval(() => {
      this.outbox.prune(Date.now() - this.retainDeliveredMs).catch((err: unknown) => this.ctx.logger.warn('WEBHOOK OUTBOX PRUNE FAILED', { reason: err instanceof Error ? err.message : String(err) }));
    }, PRUNE_EVERY_MS);
    // prevents the timer from keeping the process alive
    this.pruneTimer.unref();
  }

  /** Whether a step of `store` may have an endpoint to go to (the hot path's test). */
  watches(store: string): boolean {
    return this.outbox.cache.watches(store);
  }

  /**
   * Puts a recorded step in the outbox for each active endpoint of its store that takes its event;
   * resolves once that is durable. `message` is the step as recorded; without it (a duplicate
   * publish, which fills the gap a hub killed between recording and enqueueing left) the step is
   * rebuilt from the parcel's history. Idempotent: the event id is the same both ways.
   */
  async enqueue(store: string, orderId: string, event: ParcelEvent, message?: ParcelMessage): Promise<void> {
    if (!this.outbox.cache.loaded) await this.outbox.ready();
    const endpoints = this.outbox.cache.takers(store, event);
    if (endpoints.length === 0) return;
    const parcel = await this.ctx.parcel(store, orderId);
    // the step's place in the history (the latest step of this event: the one just recorded), and
    // how many steps of this event there are up to it: every one, as it is the latest
    const history = parcel?.history ?? [];
    let position = -1;
    let occurrence = 0;
    history.forEach((step, i) => {
      if (step.event !== event) return;
      position = i;
      occurrence++;
    });
    if (position === -1 && message === undefined) return;
    occurrence = Math.max(occurrence, 1);
    const data = message ?? rebuild(parcel as ParcelRecord, position);
    const id = eventId(store, orderId, event, occurrence);
    const body: WebhookEvent = { id, type: `parcel.${event}`, created: message?.time ?? history[position]?.time ?? new Date().toISOString(), data };
    const raw = JSON.stringify(body);
    const rows: NewDelivery[] = endpoints.map((e) => ({ endpointId: e.id, eventId: id, store, orderId, position: Math.max(position, 0), body: raw }));
    await this.outbox.enqueue(rows);
    this.sender.wake();
  }

  /** Registers an endpoint; the answer is the only time its secret is shown. */
  async register(store: string, url: string, events: ParcelEvent[] | undefined): Promise<EndpointView & { secret: string }> {
    const problem = await destinationProblem(url, this.allowPrivate);
    if (problem !== undefined) throw new CapsError('CAPS_ERR_INVALID_PAYLOAD', `url: ${problem}`);
    if ((await this.outbox.endpointsOf(store)).length >= MAX_ENDPOINTS_PER_STORE) {
      throw new CapsError('CAPS_ERR_INVALID_PAYLOAD', `${store} has ${MAX_ENDPOINTS_PER_STORE} webhook endpoints already, the most a store may have: remove one first`);
    }
    const endpoint: WebhookEndpoint = {
      id: newEndpointId(),
      store,
      url,
      // listed in PARCEL_EVENTS' order, once each
      events: events === undefined ? undefined : [...new Set(events)],
      secret: newSecret(),
      created: Date.now(),
      state: 'active',
      disabledReason: undefined,
      disabledAt: undefined,
      failingSince: undefined,
      lastError: undefined,
      lastErrorAt: undefined,
      lastSuccessAt: undefined,
    };
    await this.outbox.addEndpoint(endpoint);
    this.ctx.logger.info('WEBHOOK ADDED', { endpoint: endpoint.id, store, url, events: endpoint.events?.join(',') ?? 'all' });
    return { ...(await this.view(endpoint)), secret: endpoint.secret };
  }

  /** A store's endpoints, with their state and backlog (as they are now, whichever hub changed them). */
  async list(store: string): Promise<EndpointView[]> {
    return Promise.all((await this.outbox.endpointsOf(store)).map((e) => this.view(e)));
  }

  /** An endpoint of `store` as it is now. */
  private async find(store: string, id: string): Promise<WebhookEndpoint | undefined> {
    return (await this.outbox.endpointsOf(store)).find((e) => e.id === id);
  }

  /** Removes an endpoint of `store` and what waits for it; false when it has none by that id. */
  async remove(store: string, id: string): Promise<boolean> {
    const endpoint = await this.find(store, id);
    if (!endpoint) return false;
    await this.outbox.removeEndpoint(endpoint);
    this.ctx.logger.info('WEBHOOK REMOVED', { endpoint: id, store });
    return true;
  }

  /** Enables an endpoint again: its waiting events go at once, its failure clock starts afresh. */
  async enable(store: string, id: string): Promise<EndpointView | undefined> {
    const endpoint = await this.find(store, id);
    if (!endpoint) return undefined;
    const updated: WebhookEndpoint = { ...endpoint, state: 'active', disabledReason: undefined, disabledAt: undefined, failingSince: undefined };
    await Promise.all([this.outbox.saveEndpoint(updated, { enable: true }), this.outbox.wake(id)]);
    if (endpoint.state === 'disabled') this.ctx.logger.info('WEBHOOK ENABLED', { endpoint: id, store });
    this.sender.wake();
    return await this.view(updated);
  }

  /** Stops the loop (attempts in flight are aborted and go again after a restart) and closes the outbox. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      clearInterval(this.pruneTimer);
      const stopped = this.sender.close();
      this.poster.close();
      await stopped;
      await this.outbox.close();
    })();
    return this.closing;
  }

  private async view(e: WebhookEndpoint): Promise<EndpointView> {
    const iso = (ms: number | undefined): string | undefined => (ms === undefined ? undefined : new Date(ms).toISOString());
    const view: EndpointView = { id: e.id, store: e.store, url: e.url, events: e.events ?? null, state: e.state, pending: await this.outbox.pending(e), created: iso(e.created) ?? '' };
    if (e.disabledReason !== undefined) view.disabledReason = e.disabledReason;
    if (e.disabledAt !== undefined) view.disabledAt = iso(e.disabledAt);
    if (e.lastError !== undefined) view.lastError = e.lastError;
    if (e.lastErrorAt !== undefined) view.lastErrorAt = iso(e.lastErrorAt);
    if (e.lastSuccessAt !== undefined) view.lastSuccessAt = iso(e.lastSuccessAt);
    return view;
  }
}

/**
 * A step rebuilt from the parcel's history, shaped as its message: the order's fields at top level
 * and under `order`, and the step's own (event, time, driver, and whatever a step carries). The
 * message's messageId and seq are not kept in the history, so a rebuilt step has none.
 */
function rebuild(parcel: ParcelRecord, position: number): Record<string, unknown> {
  return { ...parcel.order, ...parcel.history[position], order: parcel.order };
}
