import type { Mutation } from './storage-core.js';
import { CoreBackedStorage, StorageCore } from './storage-core.js';
import type { ParcelEvent } from '../../protocol/schemas.js';
import type { ParcelMessage } from '../../protocol/messages.js';
import type { AckOutcome, ParcelCursor, ParcelPage, ParcelRecord, Storage, StepInput, StepOutcome, StorageLimits, StoreSummary } from './storage.js';
import { DEFAULT_LIMITS, isAfter, newestFirst, noCounts, page } from './storage.js';

/**
 * Keeps everything in the hub's memory: fast, and gone when the hub stops. Delivered parcels stay
 * for the retention period (`prune`), so memory grows with the parcels of that period; for tests,
 * demos and benchmarks.
 */
export class MemoryStorage extends CoreBackedStorage implements Storage {
  readonly kind = 'memory' as const;
  protected readonly core: StorageCore;
  /** The core reports what to persist; in memory there is nothing to do with it. */
  private readonly nothingToPersist: Mutation[] = [];
  /** Each store's log past its window: in memory too, here. */
  private readonly logs = new Map<string, ParcelMessage[]>();

  constructor(limits: Partial<StorageLimits> = {}) {
    super();
    this.core = new StorageCore({ ...DEFAULT_LIMITS, ...limits }, undefined, (queue, message) => {
      let log = this.logs.get(queue);
      if (!log) {
        log = [];
        this.logs.set(queue, log);
      }
      log.push(message);
    });
  }

  inLog(queue: string): number {
    return this.core.logDepth(queue);
  }

  async more(queue: string): Promise<ParcelMessage[]> {
    const request = this.core.wantsPage(queue) ? this.core.pageRequest(queue) : undefined;
    const log = this.logs.get(queue);
    if (!request || !log) return [];
    const taken = this.core.pageIn(queue, log.slice(0, request.limit));
    log.splice(0, taken.length);
    if (log.length === 0) this.logs.delete(queue);
    return taken;
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
      const summary = byStore.get(p.order.store) ?? { store: p.order.store, counts: noCounts() };
      summary.counts[p.state]++;
      byStore.set(p.order.store, summary);
    }
    return [...byStore.values()].sort((a, b) => a.store.localeCompare(b.store));
  }

  async prune(before: string, limit: number): Promise<number> {
    return this.core.pruneEnded(before, limit);
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {}
}
