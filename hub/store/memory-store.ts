import type { ParcelMessage } from '../../protocol/messages.js';
import type { Mutation } from './store-core.js';
import { StoreCore } from './store-core.js';
import type { AckOutcome, ParcelRecord, QueueInfo, QueueStore, StepInput, StepOutcome, StoreLimits } from './store.js';
import { DEFAULT_LIMITS } from './store.js';

/**
 * Keeps everything in the hub's memory: fast, and gone when the hub stops. Parcels are never
 * evicted, so memory grows with the number of parcels; for tests, demos and benchmarks.
 */
export class MemoryStore implements QueueStore {
  readonly kind = 'memory' as const;
  private readonly core: StoreCore;

  constructor(limits: StoreLimits = DEFAULT_LIMITS) {
    this.core = new StoreCore(limits);
  }

  async recordStep(input: StepInput): Promise<StepOutcome> {
    return this.core.recordStep(input, discard());
  }

  async ack(queue: string, messageId: string): Promise<AckOutcome> {
    return this.core.ack(queue, messageId, discard());
  }

  async pending(queue: string): Promise<ParcelMessage[]> {
    return this.core.pending(queue);
  }

  async queues(): Promise<QueueInfo[]> {
    return this.core.queues();
  }

  async parcel(store: string, orderId: string): Promise<ParcelRecord | undefined> {
    const parcel = this.core.getParcel(store, orderId);
    return parcel && structuredClone(parcel);
  }

  async close(): Promise<void> {}
}

function discard(): Mutation[] {
  return [];
}
