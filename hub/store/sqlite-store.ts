import { closeSync, fdatasync, fdatasyncSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { ParcelMessage } from '../../protocol/messages.js';
import type { ParcelEvent } from '../../protocol/schemas.js';
import { CapsError } from '../../protocol/errors.js';
import type { FoldPlan } from './journal.js';
import { decodeJournal, encodeJournal, foldPlan } from './journal.js';
import type { Mutation } from './store-core.js';
import { CoreBackedStore, parcelKey, StoreCore } from './store-core.js';
import { ParcelFilter } from './parcel-filter.js';
import type { AckOutcome, ParcelCursor, ParcelPage, ParcelRecord, ParcelStep, QueueStore, StepInput, StepOutcome, StoreLimits, StoreSummary } from './store.js';
import { DEFAULT_LIMITS, page } from './store.js';

export interface SqliteStoreOptions extends Partial<StoreLimits> {
  /** Folder for `caps.sqlite` (created if missing). */
  dir: string;
  /**
   * `full`: fsync on every commit, survives power loss. `normal`: survives a killed process, may
   * lose the last commits on power loss. Default `full`.
   */
  sync?: 'full' | 'normal';
  /** WAL pages after which a commit checkpoints (SQLite's default 1,000); 0 never does (bench/sqlite-pages.ts). */
  walAutocheckpoint?: number;
  /** How `full` flushes the WAL after a commit; `fs.fdatasync` unless a test holds or fails it. */
  syncWal?: (fd: number, done: (err: Error | null) => void) => void;
  /**
   * How long committed changes may wait in the journal before the tables catch up, in ms
   * (default 50); they also catch up after FOLD_AT changes, before a query and at close.
   * Infinity: only then (bench/sqlite-pages.ts, which counts pages and must not depend on time).
   */
  foldAfterMs?: number;
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

/**
 * Changes in the journal after which the tables catch up at the next commit. A fold costs about
 * 10 µs a parcel on the event loop: 1,024 changes (some 170 parcels) hold it for 1-2 ms, where
 * 4,096 held it for 5-7 ms, which showed in the latency of every parcel in flight then.
 */
const FOLD_AT = 1024;

/** SQLite's page cache, in KiB (its default is 2 MiB). */
const PAGE_CACHE_KIB = 64 * 1024;


const MESSAGES_TABLE = `CREATE TABLE IF NOT EXISTS messages (
  queue TEXT NOT NULL, seq INTEGER NOT NULL, message_id TEXT NOT NULL, body TEXT NOT NULL,
  PRIMARY KEY (queue, seq)
) WITHOUT ROWID;`;

/**
 * Parcels get an id in the order they are picked up, so new rows and the later steps of parcels
 * in flight land on the last few pages of the table instead of at random places (order ids are
 * the vendors' own, often random UUIDs); the one index by order (which also serves lookups by
 * order id alone) is the only B-tree a pickup writes at a random place.
 */
const PARCELS_TABLE = `CREATE TABLE IF NOT EXISTS parcels (
  id INTEGER PRIMARY KEY,
  store TEXT NOT NULL, order_id TEXT NOT NULL, customer TEXT NOT NULL, address TEXT NOT NULL,
  state TEXT NOT NULL, driver TEXT, created_at TEXT NOT NULL DEFAULT '',
  in_transit_at TEXT, in_transit_driver TEXT, delivered_at TEXT, delivered_driver TEXT,
  UNIQUE (order_id, store)
);`;

/** One row per commit: what it changed (journal.ts); deleted once the tables hold it. */
const JOURNAL_TABLE = 'CREATE TABLE IF NOT EXISTS journal (id INTEGER PRIMARY KEY, changes TEXT NOT NULL);';

const SCHEMA = `
${PARCELS_TABLE}
${JOURNAL_TABLE}
CREATE TABLE IF NOT EXISTS queues (queue TEXT PRIMARY KEY, last_seq INTEGER NOT NULL) WITHOUT ROWID;
${MESSAGES_TABLE}
`;

/** A parcel's steps after the pickup, as columns of its row (the pickup's time is created_at). */
const STEP_COLUMNS = ['in_transit_at', 'in_transit_driver', 'delivered_at', 'delivered_driver'] as const;

/**
 * Brings a data folder written by an earlier version up to SCHEMA (which has created whatever was
 * missing), in one transaction:
 * - parcels from before they had a creation time get the column;
 * - a parcel's steps were rows of a `steps` table (one more B-tree, written at a random place for
 *   every step): they become columns of the parcel's row, and the table goes;
 * - messages were a rowid table with a unique index on message_id (two more B-trees, at random
 *   places, for every message queued and taken off): they move to the table keyed by (queue, seq);
 * - parcels were keyed by (store, order_id), with a second index on order_id (a pickup wrote three
 *   B-trees at random places, and each later step one): they move to the table keyed by pickup
 *   order, oldest first.
 */
function migrate(db: Database.Database): void {
  const tableSql = (name: string): string | undefined =>
    db.prepare<[string], { sql: string }>("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?").get(name)?.sql;
  db.transaction(() => {
    const columns = new Set(db.prepare<[], { name: string }>('PRAGMA table_info(parcels)').all().map((c) => c.name));
    if (!columns.has('created_at')) db.exec("ALTER TABLE parcels ADD COLUMN created_at TEXT NOT NULL DEFAULT ''");
    for (const column of STEP_COLUMNS) if (!columns.has(column)) db.exec(`ALTER TABLE parcels ADD COLUMN ${column} TEXT`);
    if (tableSql('steps') !== undefined) {
      db.exec(`
        UPDATE parcels SET
          created_at = CASE WHEN parcels.created_at = '' THEN coalesce(s.pickup_at, '') ELSE parcels.created_at END,
          in_transit_at = s.in_transit_at, in_transit_driver = s.in_transit_driver,
          delivered_at = s.delivered_at, delivered_driver = s.delivered_driver
        FROM (
          SELECT store, order_id,
            max(CASE WHEN event = 'pickup' THEN time END) AS pickup_at,
            max(CASE WHEN event = 'in-transit' THEN time END) AS in_transit_at,
            max(CASE WHEN event = 'in-transit' THEN driver END) AS in_transit_driver,
            max(CASE WHEN event = 'delivered' THEN time END) AS delivered_at,
            max(CASE WHEN event = 'delivered' THEN driver END) AS delivered_driver
          FROM steps GROUP BY store, order_id
        ) AS s
        WHERE s.store = parcels.store AND s.order_id = parcels.order_id;
        DROP TABLE steps;
      `);
    }
    if (!/WITHOUT ROWID/i.test(tableSql('messages') ?? '')) {
      db.exec(`
        ALTER TABLE messages RENAME TO messages_before_v2;
        ${MESSAGES_TABLE}
        INSERT INTO messages (queue, seq, message_id, body) SELECT queue, seq, message_id, body FROM messages_before_v2;
        DROP TABLE messages_before_v2;
      `);
    }
    if (/WITHOUT ROWID/i.test(tableSql('parcels') ?? '')) {
      const columns = 'store, order_id, customer, address, state, driver, created_at, in_transit_at, in_transit_driver, delivered_at, delivered_driver';
      // its indexes go with the table; the schema's are created on the new one after this
      db.exec(`
        ALTER TABLE parcels RENAME TO parcels_before_v3;
        ${PARCELS_TABLE}
        INSERT INTO parcels (${columns}) SELECT ${columns} FROM parcels_before_v3 ORDER BY created_at, store, order_id;
        DROP TABLE parcels_before_v3;
      `);
    }
  })();
}

/**
 * The embedded default: SQLite in WAL mode. State is worked out in memory (StoreCore) and the
 * changes of one event-loop turn are committed together as one row of the journal (journal.ts),
 * so one small write and one fsync cover many events; every caller of a step is answered only
 * after the commit that holds its change is synced. The tables (parcels, queues, messages) catch
 * up from the journal in one transaction every `foldAfterMs` (50 ms) or FOLD_AT changes, before any query
 * and at close, and that transaction deletes the journal rows it folded in; a store opened on a
 * folder with journal rows (a hub that was killed) folds them in before anything else. A message
 * acknowledged before its fold is never written to the messages table at all.
 *
 * An acknowledgement is answered at once and committed with the next step's commit (or on its own
 * within ACK_COMMIT_MS, without waiting for a sync): one lost with a killed hub or the machine's
 * power is a message sent again after the restart, which at-least-once delivery allows.
 *
 * `full` is SQLite's `synchronous=NORMAL` (the WAL is synced at checkpoints, and its header when
 * it restarts) plus an `fdatasync` of the WAL after every commit, which is what `FULL` adds; here
 * that sync runs on libuv's thread pool instead of blocking the event loop, and its callers are
 * answered when it completes. While it runs the next turns' changes gather into one batch, which
 * is committed (and synced) when it ends: one sync in flight at a time, as in group commit.
 */
export class SqliteStore extends CoreBackedStore implements QueueStore {
  readonly kind = 'sqlite' as const;
  private readonly db: Database.Database;
  protected readonly core: StoreCore;
  private batch: Mutation[] = [];
  /** Committed to the journal, not yet in the tables, oldest first. */
  private unfolded: Mutation[] = [];
  /** The id of the last journal row written. */
  private lastJournalId = 0;
  private foldTimer: NodeJS.Timeout | undefined;
  private ackTimer: NodeJS.Timeout | undefined;
  private readonly foldAfterMs: number;
  private readonly cachedParcels: number;
  /** Every parcel in the tables or the journal: a pickup that is in neither needs no lookup. */
  private readonly known: ParcelFilter;
  private waiters: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];
  private scheduled = false;
  private committed = 0;
  private broken: Error | undefined;
  private closing: Promise<void> | undefined;
  private readonly statements;
  private readonly walPath: string;
  private readonly syncWal: ((fd: number, done: (err: Error | null) => void) => void) | undefined;
  private walFd: number | undefined;
  /** Resolves when the WAL sync in flight has ended; undefined when none is. */
  private syncing: Promise<void> | undefined;

  constructor(options: SqliteStoreOptions) {
    super();
    mkdirSync(options.dir, { recursive: true });
    const file = join(options.dir, 'caps.sqlite');
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    // `full` syncs the WAL itself after each commit (see above), off the event loop
    this.db.pragma('synchronous = NORMAL');
    this.walPath = `${file}-wal`;
    this.syncWal = options.sync === 'normal' ? undefined : (options.syncWal ?? fdatasync);
    // parcels are keyed by random ids: a larger page cache spares commits the reads of B-tree pages
    this.db.pragma(`cache_size = -${PAGE_CACHE_KIB}`);
    if (options.walAutocheckpoint !== undefined) this.db.pragma(`wal_autocheckpoint = ${Math.max(0, Math.floor(options.walAutocheckpoint))}`);
    this.db.exec(SCHEMA);
    migrate(this.db);
    this.db.exec(`
      DROP INDEX IF EXISTS parcels_by_order;
      CREATE INDEX IF NOT EXISTS parcels_by_store_time ON parcels (store, created_at DESC, order_id DESC);
    `);
    this.foldAfterMs = options.foldAfterMs ?? 50;
    this.cachedParcels = options.cachedParcels ?? 50_000;
    this.statements = {
      appendJournal: this.db.prepare('INSERT INTO journal (changes) VALUES (?)'),
      selectJournal: this.db.prepare<[], { id: number; changes: string }>('SELECT id, changes FROM journal ORDER BY id'),
      deleteJournal: this.db.prepare('DELETE FROM journal WHERE id <= ?'),
      insertParcel: this.db.prepare(
        `INSERT INTO parcels (store, order_id, customer, address, state, driver, created_at, in_transit_at, in_transit_driver, delivered_at, delivered_driver)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (order_id, store) DO UPDATE SET state = excluded.state, driver = excluded.driver`,
      ),
      updateParcel: this.db.prepare(
        `UPDATE parcels SET state = ?, driver = ?,
           in_transit_at = coalesce(?, in_transit_at), in_transit_driver = coalesce(?, in_transit_driver),
           delivered_at = coalesce(?, delivered_at), delivered_driver = coalesce(?, delivered_driver)
         WHERE store = ? AND order_id = ?`,
      ),
      upsertQueue: this.db.prepare('INSERT INTO queues (queue, last_seq) VALUES (?, ?) ON CONFLICT (queue) DO UPDATE SET last_seq = excluded.last_seq'),
      insertMessage: this.db.prepare('INSERT INTO messages (queue, seq, message_id, body) VALUES (?, ?, ?, ?)'),
      deleteMessage: this.db.prepare('DELETE FROM messages WHERE queue = ? AND seq = ? AND message_id = ?'),
      selectParcel: this.db.prepare<[string, string], ParcelRow>(
        'SELECT customer, address, state, driver, created_at, in_transit_at, in_transit_driver, delivered_at, delivered_driver FROM parcels WHERE store = ? AND order_id = ?',
      ),
      selectByOrder: this.db.prepare<[string], { store: string }>('SELECT store FROM parcels WHERE order_id = ?'),
      selectPage: this.db.prepare<[{ store: string; status: string | null; t: string; id: string; all: number; limit: number }], { order_id: string }>(
        `SELECT order_id FROM parcels WHERE store = @store AND (@status IS NULL OR state = @status)
           AND (@all = 1 OR created_at < @t OR (created_at = @t AND order_id < @id))
         ORDER BY created_at DESC, order_id DESC LIMIT @limit`,
      ),
      selectCounts: this.db.prepare<[], { store: string; state: string; n: number }>('SELECT store, state, count(*) AS n FROM parcels GROUP BY store, state ORDER BY store'),
    };
    // a hub killed before its tables caught up: they do now, before anything is read from them
    const journal = this.statements.selectJournal.all();
    const last = journal.at(-1);
    if (last) {
      this.db.transaction(() => {
        this.applyPlan(foldPlan(journal.flatMap((row) => decodeJournal(row.changes))));
        this.statements.deleteJournal.run(last.id);
      })();
    }
    const parcelCount = this.db.prepare<[], { n: number }>('SELECT count(*) AS n FROM parcels').get()?.n ?? 0;
    this.known = new ParcelFilter(Math.max(KNOWN_PARCELS, 2 * parcelCount));
    for (const [store, orderId] of this.db.prepare<[], [string, string]>('SELECT store, order_id FROM parcels').raw().iterate()) this.known.add(parcelKey(store, orderId));
    this.core = new StoreCore({ ...DEFAULT_LIMITS, ...options }, (store, orderId) => this.loadParcel(store, orderId));
    const queues = this.db.prepare<[], { queue: string; last_seq: number }>('SELECT queue, last_seq FROM queues').all();
    const bodies = this.db.prepare<[string], { body: string }>('SELECT body FROM messages WHERE queue = ? ORDER BY seq');
    for (const { queue, last_seq } of queues) {
      this.core.restoreQueue(queue, last_seq, bodies.all(queue).map((row) => JSON.parse(row.body) as ParcelMessage));
    }
  }

  /** Transactions committed so far (each covers every change of one event-loop turn). */
  get commits(): number {
    return this.committed;
  }

  async recordStep(input: StepInput): Promise<StepOutcome> {
    this.assertUsable();
    const outcome = this.core.recordStep(input, this.batch);
    if (outcome.status === 'accepted' && input.event === 'pickup') this.known.add(parcelKey(input.store, input.orderId));
    // a duplicate or a refusal is answered after the commit too: the step it refers to may still be in this batch
    await this.commitSoon();
    return outcome;
  }

  async ack(queue: string, messageId: string): Promise<AckOutcome> {
    this.assertUsable();
    const outcome = this.core.ack(queue, messageId, this.batch);
    // answered at once: the ack goes to disk with the next commit, or on its own within ACK_COMMIT_MS
    if (outcome === 'removed' && !this.ackTimer) {
      this.ackTimer = setTimeout(() => {
        this.ackTimer = undefined;
        this.schedule();
      }, ACK_COMMIT_MS);
      // prevents the timer from keeping the process alive; close() commits what is left
      this.ackTimer.unref();
    }
    return outcome;
  }

  async findParcels(orderId: string): Promise<ParcelRecord[]> {
    this.foldNow();
    const found = this.statements.selectByOrder.all(orderId).map((row) => this.core.getParcel(row.store, orderId));
    return found.filter((p): p is ParcelRecord => p !== undefined).map((p) => structuredClone(p));
  }

  async listParcels(store: string, options: { status?: ParcelEvent; limit: number; after?: ParcelCursor }): Promise<ParcelPage> {
    const { after, status, limit } = options;
    this.foldNow();
    const rows = this.statements.selectPage.all({ store, status: status ?? null, t: after?.t ?? '', id: after?.id ?? '', all: after ? 0 : 1, limit: limit + 1 });
    const parcels = rows.map((row) => this.core.getParcel(store, row.order_id)).filter((p): p is ParcelRecord => p !== undefined);
    return page(parcels.map((p) => structuredClone(p)), limit);
  }

  async stores(): Promise<StoreSummary[]> {
    const byStore = new Map<string, StoreSummary>();
    this.foldNow();
    for (const row of this.statements.selectCounts.all()) {
      const summary = byStore.get(row.store) ?? { store: row.store, counts: { pickup: 0, 'in-transit': 0, delivered: 0 } };
      summary.counts[row.state as ParcelEvent] = row.n;
      byStore.set(row.store, summary);
    }
    return [...byStore.values()];
  }

  async ping(): Promise<void> {
    this.assertUsable();
    this.db.prepare('SELECT 1').get();
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.syncing;
      clearTimeout(this.foldTimer);
      clearTimeout(this.ackTimer);
      // what is left is committed and synced here and now: nothing waits for another turn
      if (!this.broken && (this.batch.length > 0 || this.waiters.length > 0)) this.commit(true);
      this.foldNow();
      if (this.walFd !== undefined) closeSync(this.walFd);
      this.db.close();
    })();
    return this.closing;
  }

  private assertUsable(): void {
    if (this.closing) throw new CapsError('CAPS_ERR_STORAGE', 'the store is closed');
    if (this.broken) throw new CapsError('CAPS_ERR_STORAGE', `storage failed: ${this.broken.message}`, { cause: this.broken });
  }

  private commitSoon(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    // a sync in flight schedules the next commit when it ends
    if (this.scheduled || this.syncing) return;
    this.scheduled = true;
    // everything that arrives in this turn of the event loop shares one transaction
    setImmediate(() => this.commit());
  }

  /**
   * Commits what has gathered as one journal row, then answers its callers: once the WAL is synced
   * if it holds a step (`now`: before returning), at once if it holds only acknowledgements.
   */
  private commit(now = false): void {
    this.scheduled = false;
    if (this.batch.length === 0 && this.waiters.length === 0) return;
    const batch = this.batch;
    const waiters = this.waiters;
    this.batch = [];
    this.waiters = [];
    try {
      if (batch.length > 0) {
        this.lastJournalId = Number(this.statements.appendJournal.run(encodeJournal(batch)).lastInsertRowid);
        this.committed++;
        if (this.unfolded.length === 0) this.foldLater();
        for (const m of batch) this.unfolded.push(m);
      }
    } catch (err) {
      this.fail(err, waiters);
      return;
    }
    this.sync(batch, waiters, now);
    // while the sync runs on the thread pool: its callers do not wait for the fold's writes
    if (this.unfolded.length >= FOLD_AT) this.foldNow();
  }

  /** Answers `waiters` once `batch` is on disk: after a sync if it holds a step, at once if it holds only acknowledgements. */
  private sync(batch: readonly Mutation[], waiters: Array<{ resolve: () => void; reject: (err: Error) => void }>, now: boolean): void {
    const syncWal = this.syncWal;
    // nothing new that must survive power loss: whatever these callers wait for was synced before this turn
    if (syncWal === undefined || !batch.some((m) => m.kind === 'step')) return this.answer(waiters);
    let fd: number;
    try {
      fd = this.walFd ??= openSync(this.walPath, 'r+');
      if (now) fdatasyncSync(fd);
    } catch (err) {
      this.fail(err, waiters);
      return;
    }
    if (now) return this.answer(waiters);
    this.syncing = new Promise<void>((resolve) => {
      syncWal(fd, (err) => {
        this.syncing = undefined;
        resolve();
        if (err) return this.fail(err, waiters);
        this.answer(waiters);
        if (this.batch.length > 0 || this.waiters.length > 0) this.schedule();
      });
    });
  }

  private answer(waiters: Array<{ resolve: () => void }>): void {
    for (const waiter of waiters) waiter.resolve();
  }

  private foldLater(): void {
    if (!Number.isFinite(this.foldAfterMs)) return;
    clearTimeout(this.foldTimer);
    this.foldTimer = setTimeout(() => this.foldNow(), this.foldAfterMs);
    // prevents the timer from keeping the process alive; close() folds what is left
    this.foldTimer.unref();
  }

  /**
   * Brings the tables up to the journal in one transaction (no sync of its own: the next synced
   * commit, or a checkpoint, takes it to the disk), and deletes the journal rows it folded in.
   */
  private foldNow(): void {
    clearTimeout(this.foldTimer);
    this.foldTimer = undefined;
    if (this.broken || this.unfolded.length === 0) return;
    const mutations = this.unfolded;
    this.unfolded = [];
    try {
      this.db.transaction(() => {
        this.applyPlan(foldPlan(mutations));
        this.statements.deleteJournal.run(this.lastJournalId);
      })();
    } catch (err) {
      this.fail(err, []);
      return;
    }
    this.evictDelivered();
  }

  /** Memory is now ahead of disk: refuse everything from here on rather than acknowledge what is not stored. */
  private fail(err: unknown, waiters: Array<{ reject: (err: Error) => void }>): void {
    this.broken ??= err instanceof Error ? err : new Error(String(err));
    const failure = new CapsError('CAPS_ERR_STORAGE', `storage failed: ${this.broken.message}`, { cause: this.broken });
    const pending = [...waiters, ...this.waiters];
    this.batch = [];
    this.waiters = [];
    for (const waiter of pending) waiter.reject(failure);
  }

  private applyPlan(plan: FoldPlan): void {
    const s = this.statements;
    for (const p of plan.parcels) {
      const { store, orderId, customer, address } = p.order;
      if (p.pickedUpAt !== undefined) {
        s.insertParcel.run(store, orderId, customer, address, p.state, p.driver, p.pickedUpAt, p.inTransitAt ?? null, p.inTransitDriver ?? null, p.deliveredAt ?? null, p.deliveredDriver ?? null);
      } else {
        s.updateParcel.run(p.state, p.driver, p.inTransitAt ?? null, p.inTransitDriver ?? null, p.deliveredAt ?? null, p.deliveredDriver ?? null, store, orderId);
      }
    }
    for (const m of plan.queued) s.insertMessage.run(m.queueId, m.seq, m.messageId, JSON.stringify(m));
    for (const r of plan.removed) s.deleteMessage.run(r.queue, r.seq, r.messageId);
    for (const [queue, lastSeq] of plan.lastSeqs) s.upsertQueue.run(queue, lastSeq);
  }

  private loadParcel(store: string, orderId: string): ParcelRecord | undefined {
    if (!this.known.mightHave(parcelKey(store, orderId))) return undefined;
    const row = this.statements.selectParcel.get(store, orderId);
    if (!row) return undefined;
    const history: ParcelStep[] = [{ event: 'pickup', time: row.created_at }];
    if (row.in_transit_at !== null) history.push(step('in-transit', row.in_transit_at, row.in_transit_driver));
    if (row.delivered_at !== null) history.push(step('delivered', row.delivered_at, row.delivered_driver));
    return {
      order: { store, orderId, customer: row.customer, address: row.address },
      state: row.state as ParcelEvent,
      ...(row.driver !== null ? { driver: row.driver } : {}),
      history,
    };
  }

  /** Delivered parcels are in the tables once folded; keep memory bounded by dropping them from the cache. */
  private evictDelivered(): void {
    // a parcel changed by a change not yet folded must stay: the tables do not have it yet
    if (this.core.parcels.size <= this.cachedParcels || this.batch.length > 0 || this.unfolded.length > 0) return;
    for (const [key, parcel] of this.core.parcels) {
      if (parcel.state === 'delivered') this.core.parcels.delete(key);
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
}

function step(event: ParcelEvent, time: string, driver: string | null): ParcelStep {
  return driver !== null ? { event, time, driver } : { event, time };
}
