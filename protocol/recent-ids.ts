/**
 * The ids handled lately, bounded: the hub delivers at least once, so a client dedupes by
 * `messageId` without remembering every message forever, and the hub tells an id acknowledged
 * lately from one it never sent.
 *
 * Two generations: when the newer one holds `capacity` ids it becomes the older and the oldest is
 * dropped whole, so an add costs one Set.add (dropping the oldest id one at a time would walk the
 * Set's deleted slots from its start). Between `capacity` and twice as many ids are remembered.
 */
export class RecentIds {
  private newer = new Set<string>();
  private older = new Set<string>();

  constructor(private readonly capacity: number) {}

  /** Adds `id`; false when it was already there (a duplicate). */
  add(id: string): boolean {
    if (this.has(id)) return false;
    if (this.newer.size >= this.capacity) {
      this.older = this.newer;
      this.newer = new Set();
    }
    this.newer.add(id);
    return true;
  }

  has(id: string): boolean {
    return this.newer.has(id) || this.older.has(id);
  }
}
