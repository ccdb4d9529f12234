import { closeSync, fdatasync, fsyncSync, openSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { ParcelMessage } from '../../protocol/messages.js';
import { DRIVER_QUEUE } from '../../protocol/messages.js';
import type { ParcelEvent } from '../../protocol/schemas.js';
import { CapsError } from '../../protocol/errors.js';
import { openPrivate, prepareDataFolder } from '../data-folder.js';
import type { ParcelChange, PlanWrites } from './journal.js';
import { applySome, decodeJournal, foldPlan } from './journal.js';
import type { CommitWaiter } from './sqlite-commit.js';
import { GroupCommit } from './sqlite-commit.js';
import { TableFolder } from './sqlite-fold.js';
import { CoreBackedStorage, parcelKey, StorageCore } from './storage-core.js';
import { ParcelFilter } from './parcel-filter.js';
import { JOURNAL_SCHEMA, migrate, SCHEMA } from './sqlite-schema.js';
import type { AckOutcome, ParcelCursor, ParcelPage, ParcelRecord, ParcelStep, Storage, StepInput, StepOutcome, StorageLimits, StoreSummary } from './storage.js';
import { DEFAULT_LIMITS, noCounts, page } from './storage.js';
import { FINAL_STATES } from '../../protocol/lifecycle.js';

export interface SqliteStorageOptions extends Partial<StorageLimits> {
  /** Folder for `caps.sqlite` and `caps-journal.sqlite` (created if missing). */
  dir: string;
  /**
   * `full`: fsync on every commit, survives power loss. `normal`: survives a killed process, may
   * lose the last commits on power loss. Default `full`.
   */
  sync?: 'full' | 'normal';
  /** WAL pages after which a commit checkpoints (SQLite's default 1,000); 0 never does (bench/sqlite-pages.ts). */
  walAutocheckpoint?: number;
  /** How `full` flushes the journal's WAL after a commit; `fs.fdatasync` unless a test holds or fails it. */
  syncWal?: (fd: number, done: (err: Error | null) => void) => void;
  /**
   * How long committed changes may wait in the journal before the tables start to catch up, in
   * ms (default 200); they also do after FOLD_AT changes, and all at once before a query and at
   * close. Infinity: only then (bench/sqlite-pages.ts, which counts pages and must not depend on time).
   */
  foldAfterMs?: number;
  /**
   * At most this many parcels (or messages) are written to the tables in one turn of the event loop
   * while they catch up, and no more than FOLD_SLICE_MS of writing. Default 256.
   */
  foldChunk?: number;
  /** How the tables' WAL is flushed after a fold; `fs.fdatasync` unless a test holds or fails it. */
  syncTables?: (fd: number, done: (err: Error | null) => void) => void;
  /** Parcels kept in memory before delivered ones are dropped from it (they stay on disk). Default 50,000. */
  cachedParcels?: number;
}

/**
 * How long an acknowledgement may wait for a commit to ride along with before it gets one of its
 * own, in ms. A hub killed meanwhile sends the message again after its restart: at least once.
 */
const ACK_COMMIT_MS = 50;

/** Parcels the filter of known parcels has room for, at least (1 MiB of bits). */
const KNOWN_PARCELS = 500_000;

/** SQLite's page cache, in KiB (its default is 2 MiB). */
const PAGE_CACHE_KIB = 64 * 1024;

/**
 * The embedded default: SQLite in WAL mode, in two files. State is worked out in memory
 * (StorageCore), and the changes of one event-loop turn are committed together as one row of a
 * journal (journal.ts) in `caps-journal.sqlite`, so one small write and one fsync cover many
 * events; every caller of a step is answered only after the commit that holds its change is synced.
 *
 * The tables (parcels, queues, messages) live in `caps.sqlite` and catch up from the journal
 * every `foldAfterMs` (200 ms) or so, a chunk a turn (sqlite-fold.ts); the schema and its
 * migrations are in sqlite-schema.ts, the journal's rows and fold plans in journal.ts. A store
 * opened on a folder with journal rows past the tables' mark (a hub that was killed) folds them in
 * before anything else. Two files, so that the fsync an
 * answer waits for flushes the journal's few pages, never the tables'.
 *
 * An acknowledgement is answered at once and committed with the next step's commit (or on its own
 * within ACK_COMMIT_MS, without waiting for a sync): one lost with a killed hub or the machine's
 * power is a message sent again after the restart, which at-least-once delivery allows.
 *
 * `full` is SQLite's `synchronous=NORMAL` (the WAL is synced at checkpoints, and its header when
 * it restarts) plus an `fdatasync` of the journal's WAL after every commit, which is what `FULL`
 * adds; here that sync runs on libuv's thread pool instead of blocking the event loop, and its
 * callers are answered when it completes. While it runs the next turns' changes gather into one
 * batch, which is committed (and synced) when it ends: one sync in flight at a time, as in group commit
 * (sqlite-commit.ts).
 */
export class SqliteStorage extends CoreBackedStorage implements Storage {
  readonly kind = 'sqlite' as const;
  /** caps.sqlite: the tables. */
  private readonly db: Database.Database;
  /** caps-journal.sqlite: the journal. */
  private readonly journal: Database.Database;
  protected readonly core: StorageCore;
  /** Commits the changes of each turn as one journal row (sqlite-commit.ts). */
  private readonly groupCommit: GroupCommit;
  /** Folds the journal into the tables (sqlite-fold.ts). */
  private readonly folder: TableFolder;
  private ackTimer: NodeJS.Timeout | undefined;
  private readonly cachedParcels: number;
  /** Every parcel in the tables or the journal: a pickup that is in neither needs no lookup. */
  private readonly known: ParcelFilter;
  private broken: Error | undefined;
  private closing: Promise<void> | undefined;
  private readonly statements;
  private readonly writes: PlanWrites;
  private readonly dir: string;

  constructor(options: SqliteStorageOptions) {
    super();
    // customers' names and addresses: a 0700 folder, refused if others may write to it or own it
    prepareDataFolder(options.dir);
    this.dir = options.dir;
    const file = join(options.dir, 'caps.sqlite');
    const journalFile = join(options.dir, 'caps-journal.sqlite');
    this.db = openPrivate(file);
    this.journal = openPrivate(journalFile);
    for (const db of [this.db, this.journal]) {
      db.pragma('journal_mode = WAL');
      // `full` syncs the journal's WAL itself after each commit (see above), off the event loop
      db.pragma('synchronous = NORMAL');
      if (options.walAutocheckpoint !== undefined) db.pragma(`wal_autocheckpoint = ${Math.max(0, Math.floor(options.walAutocheckpoint))}`);
    }
    // parcels are keyed by random ids: a larger page cache spares commits the reads of B-tree pages
    this.db.pragma(`cache_size = -${PAGE_CACHE_KIB}`);
    this.db.exec(SCHEMA);
    migrate(this.db);
    this.db.exec(`
      DROP INDEX IF EXISTS parcels_by_order;
      CREATE INDEX IF NOT EXISTS parcels_by_store_time ON parcels (store, created_at DESC, order_id DESC);
    `);
    this.journal.exec(JOURNAL_SCHEMA);
    this.cachedParcels = options.cachedParcels ?? 50_000;
    this.statements = {
      appendJournal: this.journal.prepare('INSERT INTO journal (id, changes) VALUES (?, ?)'),
      deleteJournal: this.journal.prepare('DELETE FROM journal WHERE id <= ?'),
      insertParcel: this.db.prepare(
        `INSERT INTO parcels (store, order_id, customer, address, state, driver, created_at, in_transit_at, in_transit_driver, delivered_at, delivered_driver, history)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (order_id, store) DO UPDATE SET state = excluded.state, driver = excluded.driver, history = coalesce(excluded.history, history)`,
      ),
      updateParcel: this.db.prepare(
        `UPDATE parcels SET state = ?, driver = ?,
           in_transit_at = coalesce(?, in_transit_at), in_transit_driver = coalesce(?, in_transit_driver),
           delivered_at = coalesce(?, delivered_at), delivered_driver = coalesce(?, delivered_driver),
           history = coalesce(?, history)
         WHERE store = ? AND order_id = ?`,
      ),
      upsertQueue: this.db.prepare('INSERT INTO queues (queue, last_seq) VALUES (?, ?) ON CONFLICT (queue) DO UPDATE SET last_seq = excluded.last_seq'),
      insertMessage: this.db.prepare('INSERT INTO messages (queue, seq, message_id, body) VALUES (?, ?, ?, ?)'),
      deleteMessage: this.db.prepare('DELETE FROM messages WHERE queue = ? AND seq = ? AND message_id = ?'),
      setFolded: this.db.prepare('INSERT INTO folded (only, journal_id) VALUES (1, ?) ON CONFLICT (only) DO UPDATE SET journal_id = excluded.journal_id'),
      selectParcel: this.db.prepare<[string, string], ParcelRow>(
        'SELECT customer, address, state, driver, created_at, in_transit_at, in_transit_driver, delivered_at, delivered_driver, history FROM parcels WHERE store = ? AND order_id = ?',
      ),
      selectByOrder: this.db.prepare<[string], { store: string }>('SELECT store FROM parcels WHERE order_id = ?'),
      selectPage: this.db.prepare<[{ store: string; status: string | null; t: string; id: string; all: number; limit: number }], { order_id: string }>(
        `SELECT order_id FROM parcels WHERE store = @store AND (@status IS NULL OR state = @status)
           AND (@all = 1 OR created_at < @t OR (created_at = @t AND order_id < @id))
         ORDER BY created_at DESC, order_id DESC LIMIT @limit`,
      ),
      selectCounts: this.db.prepare<[], { store: string; state: string; n: number }>('SELECT store, state, count(*) AS n FROM parcels GROUP BY store, state ORDER BY store'),
      // retention: parcels in pickup order, a page at a time
      prunePage: this.db.prepare<[number], { id: number; store: string; order_id: string; state: string; created_at: string; delivered_at: string | null; history: string | null }>(
        'SELECT id, store, order_id, state, created_at, delivered_at, history FROM parcels WHERE id > ? ORDER BY id LIMIT 512',
      ),
      deleteParcel: this.db.prepare<[number]>('DELETE FROM parcels WHERE id = ?'),
      // a store's log past its window
      selectLogPage: this.db.prepare<[string, number, number], { body: string }>('SELECT body FROM messages WHERE queue = ? AND seq > ? ORDER BY seq LIMIT ?'),
    };
    const s = this.statements;
    this.writes = {
      parcel: (p: ParcelChange) => {
        const { store, orderId, customer, address } = p.order;
        if (p.pickedUpAt !== undefined) {
          s.insertParcel.run(store, orderId, customer, address, p.state, p.driver, p.pickedUpAt, p.inTransitAt ?? null, p.inTransitDriver ?? null, p.deliveredAt ?? null, p.deliveredDriver ?? null, p.history ?? null);
        } else {
          s.updateParcel.run(p.state, p.driver, p.inTransitAt ?? null, p.inTransitDriver ?? null, p.deliveredAt ?? null, p.deliveredDriver ?? null, p.history ?? null, store, orderId);
        }
      },
      queued: (m) => s.insertMessage.run(m.queueId, m.seq, m.messageId, JSON.stringify(m)),
      removed: (r) => s.deleteMessage.run(r.queue, r.seq, r.messageId),
      lastSeq: (queue, seq) => s.upsertQueue.run(queue, seq),
    };

    // a hub killed before its tables caught up: they do now, before anything is read from them,
    // and are synced before the journal rows they took in are deleted
    const mark = this.db.prepare<[], { journal_id: number }>('SELECT journal_id FROM folded').get()?.journal_id ?? 0;
    const rows = this.journal.prepare<[number], { id: number; changes: string }>('SELECT id, changes FROM journal WHERE id > ? ORDER BY id').all(mark);
    const last = rows.at(-1);
    if (last) {
      const plan = foldPlan(rows.flatMap((row) => decodeJournal(row.changes)));
      this.db.transaction(() => {
        applySome(plan, { parcels: 0, queued: 0, removed: 0 }, Infinity, this.writes);
        s.setFolded.run(last.id);
      })();
    }
    const lastJournalId = Math.max(mark, last?.id ?? 0);
    this.groupCommit = new GroupCommit(
      {
        appendJournal: (id, changes) => s.appendJournal.run(id, changes),
        committed: (batch) => {
          for (const m of batch) {
            this.folder.add(m);
            // in memory until folded (evictEnded), so a lookup can wait for the filter until now
            if (m.kind === 'step' && m.input.event === 'pickup') this.known.add(m.key);
          }
        },
        foldSoon: () => this.folder.soon(),
        fail: (err, waiters) => this.fail(err, waiters),
        openWal: (path) => this.openWal(path),
      },
      { syncWal: options.sync === 'normal' ? undefined : (options.syncWal ?? fdatasync), journalWalPath: `${journalFile}-wal`, lastJournalId },
    );
    const db = this.db;
    this.folder = new TableFolder(
      {
        db,
        writes: this.writes,
        setFolded: (upTo) => s.setFolded.run(upTo),
        deleteJournal: (upTo) => s.deleteJournal.run(upTo),
        lastJournalId: () => this.groupCommit.lastJournalId,
        isBroken: () => this.broken !== undefined,
        isClosing: () => this.closing !== undefined,
        fail: (err) => this.fail(err, []),
        folded: () => this.evictEnded(),
        openWal: (path) => this.openWal(path),
      },
      {
        foldAfterMs: options.foldAfterMs ?? 200,
        foldChunk: Math.max(1, Math.floor(options.foldChunk ?? 256)),
        tablesWalPath: `${file}-wal`,
        syncTablesWal: options.syncTables ?? fdatasync,
      },
    );
    if (lastJournalId > 0) this.folder.syncNow(lastJournalId);

    const parcelCount = this.db.prepare<[], { n: number }>('SELECT count(*) AS n FROM parcels').get()?.n ?? 0;
    this.known = new ParcelFilter(Math.max(KNOWN_PARCELS, 2 * parcelCount));
    for (const [store, orderId] of this.db.prepare<[], [string, string]>('SELECT store, order_id FROM parcels').raw().iterate()) this.known.add(parcelKey(store, orderId));
    this.core = new StorageCore({ ...DEFAULT_LIMITS, ...options }, (store, orderId) => this.loadParcel(store, orderId));
    const queues = this.db.prepare<[], { queue: string; last_seq: number }>('SELECT queue, last_seq FROM queues').all();
    const counts = new Map(this.db.prepare<[], [string, number]>('SELECT queue, count(*) FROM messages GROUP BY queue').raw().all());
    const pickups = this.db.prepare<[string], { body: string }>('SELECT body FROM messages WHERE queue = ? ORDER BY seq');
    for (const { queue, last_seq } of queues) {
      // the drivers' queue whole (bounded by --max-pickups); a store's stays on disk, however long,
      // and is paged in by more() once one of its vendors is back: a restart costs no memory per backlog
      if (queue === DRIVER_QUEUE) this.core.restoreQueue(queue, last_seq, pickups.all(queue).map((row) => JSON.parse(row.body) as ParcelMessage));
      else this.core.restoreQueue(queue, last_seq, [], counts.get(queue) ?? 0);
    }
  }

  /** Journal rows committed so far (each covers every change of one event-loop turn). */
  get commits(): number {
    return this.groupCommit.count;
  }

  /** True while a fold's transaction is open on the tables (it writes a chunk a turn). */
  get folding(): boolean {
    return this.folder.folding;
  }

  async recordStep(input: StepInput): Promise<StepOutcome> {
    this.assertUsable();
    const outcome = this.core.recordStep(input, this.groupCommit.batch);
    // a duplicate or a refusal is answered after the commit too: the step it refers to may still be in this batch
    await this.groupCommit.durable();
    return outcome;
  }

  async ack(queue: string, messageId: string): Promise<AckOutcome> {
    this.assertUsable();
    const outcome = this.core.ack(queue, messageId, this.groupCommit.batch);
    // answered at once: the ack goes to disk with the next commit, or on its own within ACK_COMMIT_MS
    if (outcome === 'removed' && !this.ackTimer) {
      this.ackTimer = setTimeout(() => {
        this.ackTimer = undefined;
        this.groupCommit.schedule();
      }, ACK_COMMIT_MS);
      // prevents the timer from keeping the process alive; close() commits what is left
      this.ackTimer.unref();
    }
    return outcome;
  }

  async findParcels(orderId: string): Promise<ParcelRecord[]> {
    await this.folder.caughtUp();
    const found = this.statements.selectByOrder.all(orderId).map((row) => this.core.getParcel(row.store, orderId));
    return found.filter((p): p is ParcelRecord => p !== undefined).map((p) => structuredClone(p));
  }

  async listParcels(store: string, options: { status?: ParcelEvent; limit: number; after?: ParcelCursor }): Promise<ParcelPage> {
    const { after, status, limit } = options;
    await this.folder.caughtUp();
    const rows = this.statements.selectPage.all({ store, status: status ?? null, t: after?.t ?? '', id: after?.id ?? '', all: after ? 0 : 1, limit: limit + 1 });
    // the rows are as the journal stood; a step of this very turn may have moved a parcel on since
    const parcels = rows.map((row) => this.core.getParcel(store, row.order_id)).filter((p): p is ParcelRecord => p !== undefined && (status === undefined || p.state === status));
    return page(parcels.map((p) => structuredClone(p)), limit);
  }

  async stores(): Promise<StoreSummary[]> {
    const byStore = new Map<string, StoreSummary>();
    await this.folder.caughtUp();
    for (const row of this.statements.selectCounts.all()) {
      const summary = byStore.get(row.store) ?? { store: row.store, counts: noCounts() };
      summary.counts[row.state as ParcelEvent] = row.n;
      byStore.set(row.store, summary);
    }
    // in the memory storage's order
    return [...byStore.values()].sort((a, b) => a.store.localeCompare(b.store));
  }

  /**
   * Walks the parcels in pickup order (their id), a page at a time, up to the first picked up
   * after `before`, and deletes the delivered ones delivered before it. A delete lost to a crash
   * (the tables are synced with the next fold) is only done again later.
   */
  async prune(before: string, limit: number): Promise<number> {
    await this.folder.caughtUp();
    this.assertUsable();
    const { prunePage: page, deleteParcel: remove } = this.statements;
    let removed = 0;
    let after = 0;
    for (;;) {
      const rows = page.all(after);
      for (const row of rows) {
        if (row.created_at >= before || removed >= limit) return removed;
        after = row.id;
        const ended = rowEndedAt(row);
        if (ended === undefined || ended >= before) continue;
        const key = parcelKey(row.store, row.order_id);
        // changed since the last fold: left for the next time
        if (this.folder.changed(key)) continue;
        remove.run(row.id);
        this.core.parcels.delete(key);
        removed++;
      }
      if (rows.length < 512) return removed;
    }
  }

  inLog(queue: string): number {
    return this.core.logDepth(queue);
  }

  /** A page of a store's log, read from the tables once they hold every commit so far. */
  async more(queue: string): Promise<ParcelMessage[]> {
    if (!this.core.wantsPage(queue)) return [];
    // read only with no fold open: an open fold's rows would be a partial, unordered view
    for (let tries = 0; ; tries++) {
      await this.folder.caughtUp();
      if (!this.folder.folding) break;
      if (tries >= 10) return [];
    }
    this.assertUsable();
    const request = this.core.pageRequest(queue);
    if (!request) return [];
    const rows = this.statements.selectLogPage.all(queue, request.afterSeq, request.limit);
    return this.core.pageIn(queue, rows.map((row) => JSON.parse(row.body) as ParcelMessage));
  }

  async ping(): Promise<void> {
    this.assertUsable();
    this.db.prepare('SELECT 1').get();
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.groupCommit.settled();
      this.folder.stopTimer();
      clearTimeout(this.ackTimer);
      // what is left is committed, folded and synced here and now: nothing waits for another turn
      if (!this.broken && this.groupCommit.pending) this.groupCommit.commit(true);
      this.folder.finish();
      await this.folder.drain();
      for (const fd of [this.groupCommit.walFile, this.folder.walFile]) if (fd !== undefined) closeSync(fd);
      this.journal.close();
      this.db.close();
    })();
    return this.closing;
  }

  private assertUsable(): void {
    if (this.closing) throw new CapsError('CAPS_ERR_STORAGE', 'the store is closed');
    if (this.broken) throw new CapsError('CAPS_ERR_STORAGE', `storage failed: ${this.broken.message}`, { cause: this.broken });
  }

  /**
   * Opens a WAL file to sync it, and syncs the folder once: SQLite creates the WAL when the store
   * opens (it deletes it at a clean close), and a new file's name is on disk only once its folder is.
   */
  private openWal(path: string): number {
    const fd = openSync(path, 'r+');
    const dir = openSync(this.dir, 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
    return fd;
  }

  /** Memory is now ahead of disk: refuse everything from here on rather than acknowledge what is not stored. */
  private fail(err: unknown, waiters: CommitWaiter[]): void {
    this.broken ??= err instanceof Error ? err : new Error(String(err));
    const failure = new CapsError('CAPS_ERR_STORAGE', `storage failed: ${this.broken.message}`, { cause: this.broken });
    const rejected = [...waiters, ...this.groupCommit.abort(), ...this.folder.abort()];
    for (const waiter of rejected) waiter.reject(failure);
  }

  private loadParcel(store: string, orderId: string): ParcelRecord | undefined {
    if (!this.known.mightHave(parcelKey(store, orderId))) return undefined;
    const row = this.statements.selectParcel.get(store, orderId);
    if (!row) return undefined;
    let history: ParcelStep[];
    if (row.history !== null) history = JSON.parse(row.history) as ParcelStep[];
    else {
      history = [{ event: 'pickup', time: row.created_at }];
      if (row.in_transit_at !== null) history.push(step('in-transit', row.in_transit_at, row.in_transit_driver));
      if (row.delivered_at !== null) history.push(step('delivered', row.delivered_at, row.delivered_driver));
    }
    return {
      order: { store, orderId, customer: row.customer, address: row.address },
      state: row.state as ParcelEvent,
      ...(row.driver !== null ? { driver: row.driver } : {}),
      history,
    };
  }

  /**
   * Parcels whose story ended are in the tables once folded: keep memory bounded by dropping them from the
   * cache, but not one changed since this fold began (the tables do not have that change yet).
   */
  private evictEnded(): void {
    if (this.core.parcels.size <= this.cachedParcels) return;
    const unfolded = new Set<string>();
    for (const m of this.groupCommit.batch) if (m.kind === 'step') unfolded.add(m.key);
    for (const [key, parcel] of this.core.parcels) {
      if (FINAL_STATES.has(parcel.state) && !this.folder.changed(key) && !unfolded.has(key)) this.core.parcels.delete(key);
    }
  }
}

interface ParcelRow {
  customer: string;
  address: string;
  state: string;
  driver: string | null;
  created_at: string;
  in_transit_at: string | null;
  in_transit_driver: string | null;
  delivered_at: string | null;
  delivered_driver: string | null;
  history: string | null;
}

/** When the story of a parcel's row ended (delivered, returned or cancelled), if it has. */
function rowEndedAt(row: { state: string; delivered_at: string | null; history: string | null }): string | undefined {
  if (row.state === 'delivered' && row.delivered_at !== null && row.history === null) return row.delivered_at;
  if (!FINAL_STATES.has(row.state as ParcelEvent) || row.history === null) return undefined;
  const history = JSON.parse(row.history) as ParcelStep[];
  return history.findLast((s) => s.event === row.state)?.time;
}

function step(event: ParcelEvent, time: string, driver: string | null): ParcelStep {
  return driver !== null ? { event, time, driver } : { event, time };
}
