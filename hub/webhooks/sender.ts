import type { Logger } from '../logger.js';
import type { PostResult } from './post.js';
import { signatureHeader } from './signing.js';
import type { Outbox, PendingDelivery, WebhookEndpoint } from './types.js';

export interface SenderOptions {
  /** The first retry's wait; each further one doubles it. Default 1 s. */
  retryBaseMs: number;
  /** The longest wait between two attempts. Default 1 h. */
  retryMaxMs: number;
  /** An endpoint that has failed for this long without a success is disabled. Default 24 h. */
  disableAfterMs: number;
  /** Requests in flight to one endpoint at once (each for another parcel). */
  perEndpoint: number;
}

/** What the sender needs of the world: the HTTP POST, and what it reports (metrics). */
export interface SenderContext {
  outbox: Outbox;
  logger: Logger;
  post(url: string, headers: Record<string, string>, body: string): Promise<PostResult>;
  /** An attempt ended: `delivered` or `failed`. */
  attempted(result: 'delivered' | 'failed'): void;
  /** An endpoint was just disabled. */
  disabled(endpoint: WebhookEndpoint): void;
}

/** The longest a timer may be set for (about 24.8 days); a later due time is looked at again then. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * The wait before attempt `attempt + 1` after `attempt` failures: base, 2 × base, 4 × base... capped at
 * `max`, plus up to a quarter of it at random, so receivers coming back are not hit by every hub's
 * retries in the same second.
 */
export function backoff(attempt: number, base: number, max: number, random: () => number = Math.random): number {
  const capped = Math.min(max, base * 2 ** Math.min(Math.max(attempt - 1, 0), 40));
  return Math.round(capped * (1 + random() / 4));
}

/**
 * The delivery loop, apart from the outbox and from HTTP (BullMQ's lock-manager habit: a timer
 * concern behind a narrow context). Each pass takes, per active endpoint, the deliveries that are
 * due and head their parcel's line (the outbox keeps the rest blocked), POSTs them signed, and
 * records what came of each. A parcel's next event is due only once the one before is delivered,
 * so events go out in order per parcel and endpoint, while other parcels' go on.
 *
 * Woken by an enqueue, by an attempt settling, and by a timer set for the next due retry; nothing
 * else runs while there is nothing to do. With an outbox shared by several hubs (`pollMs`), it also
 * looks every `pollMs`: other hubs' enqueues do not wake this one, and a dead hub's claims lapse.
 * One pass at a time: a wake during a pass makes another after it.
 */
export class Sender {
  /** Outbox rows being attempted, by endpoint id. */
  private readonly inFlight = new Map<string, Set<number>>();
  private readonly settling = new Set<Promise<void>>();
  private scheduled: NodeJS.Immediate | undefined;
  private timer: NodeJS.Timeout | undefined;
  private passing: Promise<void> | undefined;
  private again = false;
  private closed = false;

  constructor(
    private readonly ctx: SenderContext,
    private readonly options: SenderOptions,
  ) {}

  /** Looks for due deliveries soon (once per turn, however often it is called). */
  wake(): void {
    if (this.closed) return;
    this.scheduled ??= setImmediate(() => {
      this.scheduled = undefined;
      this.pass();
    });
  }

  private pass(): void {
    if (this.closed) return;
    if (this.passing) {
      this.again = true;
      return;
    }
    this.passing = this.run()
      .catch((err: unknown) => {
        // the outbox away (Redis down): looked at again at the next wake or poll
        if (!this.closed) this.ctx.logger.warn('WEBHOOK OUTBOX READ FAILED', { reason: err instanceof Error ? err.message : String(err) });
        this.schedule(this.ctx.outbox.pollMs ?? 1_000);
      })
      .finally(() => {
        this.passing = undefined;
        if (this.again) {
          this.again = false;
          this.wake();
        }
      });
  }

  private async run(): Promise<void> {
    const now = Date.now();
    const nexts = await Promise.all(
      this.ctx.outbox.endpoints().map(async (endpoint) => {
        if (endpoint.state !== 'active') return undefined;
        const busy = this.inFlight.get(endpoint.id) ?? new Set<number>();
        const room = this.options.perEndpoint - busy.size;
        if (room > 0) {
          const due = await this.ctx.outbox.claim(endpoint.id, now, room, busy);
          for (const delivery of due) {
            if (this.closed) await this.ctx.outbox.release(delivery);
            else this.attempt(endpoint, delivery, busy);
          }
        }
        return this.ctx.outbox.nextDue(endpoint.id, now);
      }),
    );
    let next: number | undefined;
    for (const at of nexts) if (at !== undefined && (next === undefined || at < next)) next = at;
    const poll = this.ctx.outbox.pollMs;
    const wait = next === undefined ? poll : Math.max(0, next - now);
    this.schedule(poll !== undefined && wait !== undefined ? Math.min(wait, poll) : wait);
  }

  /** The next pass in `ms` (undefined: none until woken). */
  private schedule(ms: number | undefined): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (ms === undefined || this.closed) return;
    this.timer = setTimeout(() => this.wake(), Math.min(MAX_TIMER_MS, ms));
    // the hub's server keeps the process alive; a retry alone must not
    this.timer.unref();
  }

  private attempt(endpoint: WebhookEndpoint, delivery: PendingDelivery, busy: Set<number>): void {
    busy.add(delivery.seq);
    this.inFlight.set(endpoint.id, busy);
    const timestamp = Math.floor(Date.now() / 1000);
    const headers = {
      'CAPS-Webhook-Id': delivery.eventId,
      'CAPS-Webhook-Timestamp': String(timestamp),
      'CAPS-Signature': signatureHeader(endpoint.secret, delivery.eventId, timestamp, delivery.body),
    };
    const settled = this.ctx
      .post(endpoint.url, headers, delivery.body)
      .then((result) => this.settle(endpoint.id, delivery, result))
      .catch((err: unknown) => {
        // a write that failed (disk full): the row is still pending and goes again later
        if (!this.closed) this.ctx.logger.warn('WEBHOOK OUTBOX WRITE FAILED', { endpoint: endpoint.id, reason: err instanceof Error ? err.message : String(err) });
      })
      .finally(() => {
        busy.delete(delivery.seq);
        if (busy.size === 0 && this.inFlight.get(endpoint.id) === busy) this.inFlight.delete(endpoint.id);
        this.settling.delete(settled);
        this.wake();
      });
    this.settling.add(settled);
  }

  private async settle(endpointId: string, delivery: PendingDelivery, result: PostResult): Promise<void> {
    // aborted by close(): not an attempt; it goes again after the restart, or at once from another hub
    if (this.closed) return this.ctx.outbox.release(delivery);
    const now = Date.now();
    const current = this.ctx.outbox.endpoint(endpointId);
    if (result.ok) {
      this.ctx.attempted('delivered');
      const writes = [this.ctx.outbox.delivered(delivery, now)];
      if (current) writes.push(this.ctx.outbox.saveEndpoint({ ...current, failingSince: undefined, lastSuccessAt: now }));
      await Promise.all(writes);
      return;
    }
    this.ctx.attempted('failed');
    const wait = backoff(delivery.attempts + 1, this.options.retryBaseMs, this.options.retryMaxMs);
    const writes = [this.ctx.outbox.retry(delivery, now + wait)];
    if (current) {
      const failingSince = current.failingSince ?? now;
      const updated: WebhookEndpoint = { ...current, failingSince, lastError: result.error, lastErrorAt: now };
      if (current.state === 'active' && now - failingSince >= this.options.disableAfterMs) {
        updated.state = 'disabled';
        updated.disabledAt = now;
        updated.disabledReason = `failing since ${new Date(failingSince).toISOString()} (${formatDuration(now - failingSince)}) with no success; last error: ${result.error}`;
        this.ctx.logger.warn('WEBHOOK DISABLED', { endpoint: current.id, store: current.store, url: current.url, reason: updated.disabledReason, enable: `caps webhook enable --store ${current.store} --id ${current.id}` });
        this.ctx.disabled(updated);
      }
      writes.push(this.ctx.outbox.saveEndpoint(updated));
    }
    await Promise.all(writes);
  }

  /** Stops: no pass, no timer; resolves once every attempt in flight has settled (the caller aborts them). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = undefined;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.passing;
    await Promise.all([...this.settling]);
  }
}

/** `3 h 20 min`, `45 s`, `250 ms`: how long, for a person. */
function formatDuration(ms: number): string {
  if (ms < 1_000) return `${ms} ms`;
  if (ms < 60_000) return `${Math.round(ms / 1_000)} s`;
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)} min`;
  const hours = Math.floor(ms / 3_600_000);
  const minutes = Math.round((ms % 3_600_000) / 60_000);
  return minutes === 0 ? `${hours} h` : `${hours} h ${minutes} min`;
}
