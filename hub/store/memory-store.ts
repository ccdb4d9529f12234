import type { Mutation } from './store-core.js';
import { CoreBackedStore, StoreCore } from './store-core.js';
import type { ParcelEvent } from '../../protocol/schemas.js';
import type { AckOutcome, ParcelCursor, ParcelPage, ParcelRecord, QueueStore, StepInput, StepOutcome, StoreLimits, StoreSummary } from './store.js';
import { DEFAULT_LIMITS, isAfter, newestFirst, page } from './store.js';

/**
 * Keeps everything in the hub's memory: fast, and gone when the hub stops. Delivered parcels stay
 * for the retention period (`prune`), so memory grows with the parcels of that period; for tests,
 * demos and benchmarks.
 */
export class MemoryStore extends CoreBackedStore implements QueueStore {
  readonly kind = 'memory' as const;
  protected readonly core: StoreCore;
  /** The core reports what to persist; in memory there is nothing to do with it. */
  private readonly nothingToPersist: Mutation[] = [];

  constructor(limits: Partial<StoreLimits> = {}) {
    super();
    this.core = new StoreCore({ ...DEFAULT_LIMITS, ...limits });
  }

  async recordStep(input: StepInput): Promise<StepOutcome> {
    const outcome = this.core.recordStep(input, this.nothingToPersist);
    this.nothingToPersist.length = 0;
    return outcome;
  }

  async ack(queue: string, messageId: string): Promise<AckOutcome> {
    const outcome = this.core.ack(queue, messageId, this.nothingToPersist);
    this.nothingToPersist.length = 0;
    return outcome;
  }

  async findParcels(orderId: string): Promise<ParcelRecord[]> {
    return [...this.core.allParcels()].filter((p) => p.order.orderId === orderId).map((p) => structuredClone(p));
  }

  async listParcels(store: string, options: { status?: ParcelEvent; limit: number; after?: ParcelCursor }): Promise<ParcelPage> {
    const { after, status, limit } = options;
    const matching = [...this.core.allParcels()]
      .filter((p) => p.order.store === store && (status === undefined || p.state === status) && (after === undefined || isAfter(p, after)))
      .sort(newestFirst);
    return page(matching.slice(0, limit + 1).map((p) => structuredClone(p)), limit);
  }

  async stores(): Promise<StoreSummary[]> {
    const byStore = new Map<string, StoreSummary>();
    for (const p of this.core.allParcels()) {
      const summary = byStore.get(p.order.store) ?? { store: p.order.store, counts: { pickup: 0, 'in-transit': 0, delivered: 0 } };
      summary.counts[p.state]++;
      byStore.set(p.order.store, summary);
    }
    return [...byStore.values()].sort((a, b) => a.store.localeCompare(b.store));
  }

  async prune(before: string, limit: number): Promise<number> {
    return this.core.pruneDelivered(before, limit);
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {}
}
