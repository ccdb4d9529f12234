import type { Logger } from './logger.js';
import type { Storage } from './storage/storage.js';

export interface RetentionOptions {
  /** How long a delivered parcel's history is kept; 0 keeps it forever. */
  retentionMs: number;
  /** How often the hub looks for parcels past it. */
  everyMs: number;
}

/** Parcels removed per call to the store: a turn of the event loop is never held for long. */
const BATCH = 1_000;

/**
 * Removes delivered parcels once they are older than the retention period, in the background: a
 * batch at a time, a turn apart, every `everyMs`. Parcels not delivered yet are kept.
 */
export class Retention {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly storage: Storage,
    private readonly logger: Logger,
    private readonly options: RetentionOptions,
  ) {}

  start(): void {
    if (this.options.retentionMs <= 0 || this.timer) return;
    this.timer = setInterval(() => void this.run(), this.options.everyMs);
    // prevents the timer from keeping the process alive
    this.timer.unref();
  }

  /** One sweep (never two at once). */
  run(): Promise<void> {
    this.running ??= this.sweep().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.running;
  }

  private async sweep(): Promise<void> {
    const before = new Date(Date.now() - this.options.retentionMs).toISOString();
    let removed = 0;
    try {
      for (;;) {
        if (this.closed) break;
        const n = await this.storage.prune(before, BATCH);
        removed += n;
        if (n < BATCH) break;
        await new Promise((resolve) => setImmediate(resolve));
      }
    } catch (err) {
      this.logger.warn('RETENTION FAILED', { error: err instanceof Error ? err.message : String(err) });
    }
    if (removed > 0) this.logger.info('RETENTION', { removed, deliveredBefore: before });
  }
}
