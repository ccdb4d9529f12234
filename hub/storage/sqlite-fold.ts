import { existsSync, fdatasyncSync } from 'node:fs';
import type Database from 'better-sqlite3';
import type { FoldPlan, PlanProgress, PlanWrites } from './journal.js';
import { applySome, FoldPlanBuilder } from './journal.js';
import type { Mutation } from './storage-core.js';

/** Changes in the journal after which the tables start to catch up at once. */
const FOLD_AT = 4096;

/** How long one turn of the event loop may write to the tables while they catch up, in ms. */
const FOLD_SLICE_MS = 1;

/** What the folding needs of the SQLite storage it works for. */
export interface FoldHost {
  /** caps.sqlite: the tables, where a fold opens its transaction. */
  readonly db: Database.Database;
  readonly writes: PlanWrites;
  /** Records in the tables that they hold the journal up to `upTo` (in the fold's transaction). */
  setFolded(upTo: number): void;
  /** Deletes the journal rows up to `upTo`: the tables hold them, synced. */
  deleteJournal(upTo: number): void;
  /** The id of the last journal row written. */
  lastJournalId(): number;
  /** True once the storage failed: nothing more is written to the tables. */
  isBroken(): boolean;
  /** True once the storage began to close: folds are then finished by `finish()`, not by timers. */
  isClosing(): boolean;
  /** The storage fails: it calls `abort()` back, and refuses everything from then on. */
  fail(err: unknown): void;
  /** A fold committed: parcels it took in may leave the cache. */
  folded(): void;
  /** Opens a WAL file for syncing (and syncs its folder once). */
  openWal(path: string): number;
}

export interface FoldOptions {
  /** A fold starts this long after the first change waiting, in ms (or at FOLD_AT changes). */
  foldAfterMs: number;
  /** At most this many parcels (or messages) written in one turn of the event loop. */
  foldChunk: number;
  tablesWalPath: string;
  syncTablesWal: (fd: number, done: (err: Error | null) => void) => void;
}

type Waiter = { upTo: number; resolve: () => void; reject: (err: Error) => void };

/**
 * Folding the journal into the tables: every `foldAfterMs` or FOLD_AT changes, one transaction on
 * the tables, written a `foldChunk` at a time over several turns of the event loop so that no turn
 * is held for long, committed with the id of the last journal row it holds, then synced on the
 * thread pool; only then are those journal rows deleted (until then a power loss could take the
 * fold back, and the journal must still have it). A message acknowledged before its fold is never
 * written to the tables at all, and a parcel's steps become one row.
 */
export class TableFolder {
  /** Committed to the journal, not yet in a fold. */
  private unfolded = new FoldPlanBuilder();
  /** The fold whose transaction is open on the tables, if one is. */
  private fold: { plan: FoldPlan; progress: PlanProgress; upTo: number } | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Queries waiting for the tables to hold the journal up to an id (a fold goes on meanwhile, a chunk a turn). */
  private waiters: Waiter[] = [];
  /** The tables' sync in flight, and the journal id a fold committed since it started (to sync next). */
  private syncing: Promise<void> | undefined;
  private toSync = 0;
  private walFd: number | undefined;

  constructor(
    private readonly host: FoldHost,
    private readonly options: FoldOptions,
  ) {}

  /** A change committed to the journal, to fold in later. */
  add(mutation: Mutation): void {
    this.unfolded.add(mutation);
  }

  /** True when the parcel was changed since the fold open now began: the tables do not have that change yet. */
  changed(key: string): boolean {
    return this.unfolded.changed(key);
  }

  /** True while a fold's transaction is open on the tables (it writes a chunk a turn). */
  get folding(): boolean {
    return this.fold !== undefined;
  }

  /** Starts a fold now if enough has gathered, else once `foldAfterMs` has passed since the first change waiting. */
  soon(): void {
    if (this.fold || this.host.isBroken() || this.host.isClosing() || this.unfolded.size === 0) return;
    if (this.unfolded.size >= FOLD_AT) {
      this.stopTimer();
      this.start();
      return;
    }
    if (this.timer || !Number.isFinite(this.options.foldAfterMs)) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.start();
    }, this.options.foldAfterMs);
    // prevents the timer from keeping the process alive; close() folds what is left
    this.timer.unref();
  }

  /** Resolves once the tables hold every journal row written so far; the fold goes on a chunk a turn meanwhile. */
  caughtUp(): Promise<void> {
    if (this.host.isBroken()) return Promise.resolve();
    const upTo = this.host.lastJournalId();
    if (!this.fold && this.unfolded.size === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ upTo, resolve, reject });
      if (!this.fold) {
        this.stopTimer();
        this.start();
      }
    });
  }

  /** At close: brings the tables up to the journal before returning. */
  finish(): void {
    this.stopTimer();
    // a fold finished here may start the next one: finish that too
    while (!this.broken() && (this.fold || this.unfolded.size > 0)) {
      if (!this.fold) this.start();
      if (this.fold) this.continue(this.fold, true);
    }
  }

  /** The storage failed: no more folds; the open one is rolled back. Returns the queries waiting, to reject. */
  abort(): Waiter[] {
    this.stopTimer();
    const waiting = this.waiters;
    this.waiters = [];
    if (this.fold) {
      this.fold = undefined;
      try {
        // what a failed fold wrote stays out of the tables (and out of queries' sight)
        this.host.db.exec('ROLLBACK');
      } catch {
        // SQLite rolled it back already, or the failure was the transaction's own
      }
    }
    return waiting;
  }

  /** At start and close: syncs the tables and deletes the journal rows they hold (up to `upTo` at least), before returning. */
  syncNow(upTo = 0): void {
    this.toSync = Math.max(this.toSync, upTo);
    // no WAL file: the tables are all in caps.sqlite, synced by the checkpoint that emptied it
    if (this.walFd === undefined && existsSync(this.options.tablesWalPath)) this.walFd = this.host.openWal(this.options.tablesWalPath);
    if (this.walFd !== undefined) fdatasyncSync(this.walFd);
    this.host.deleteJournal(this.toSync);
    this.toSync = 0;
  }

  /** At close, once `finish()` ran: waits for a sync of the tables in flight, then syncs what is left. */
  async drain(): Promise<void> {
    // a sync of the tables still in flight hands its journal rows back to the one below
    await this.syncing;
    if (this.broken() || this.toSync === 0) return;
    try {
      this.syncNow();
    } catch (err) {
      this.host.fail(err);
    }
  }

  /** The file descriptor of the tables' WAL, if one was opened (the storage closes it). */
  get walFile(): number | undefined {
    return this.walFd;
  }

  stopTimer(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private broken(): boolean {
    return this.host.isBroken();
  }

  /** Opens a fold's transaction on the tables and writes its first chunk; the rest follow, a chunk a turn. */
  private start(): void {
    if (this.fold || this.broken() || this.unfolded.size === 0) return;
    const fold = { plan: this.unfolded.take(), progress: { parcels: 0, queued: 0, removed: 0 }, upTo: this.host.lastJournalId() };
    try {
      this.host.db.exec('BEGIN');
    } catch (err) {
      this.host.fail(err);
      return;
    }
    this.fold = fold;
    this.continue(fold);
  }

  /** Writes the next chunk of a fold (`all`: the rest of it), then commits it once it is all written. */
  private continue(fold: NonNullable<TableFolder['fold']>, all = false): void {
    // this fold may have been finished meanwhile (close), or the store failed
    if (this.fold !== fold || this.broken()) return;
    const chunk = this.options.foldChunk;
    try {
      const until = performance.now() + FOLD_SLICE_MS;
      let done = false;
      for (let written = 0; !done && (all || (written < chunk && performance.now() < until)); written += 16) {
        done = applySome(fold.plan, fold.progress, all ? Infinity : Math.min(16, chunk - written), this.host.writes);
      }
      if (!done) {
        setImmediate(() => this.continue(fold));
        return;
      }
      this.host.setFolded(fold.upTo);
      this.host.db.exec('COMMIT');
    } catch (err) {
      this.host.fail(err);
      return;
    }
    this.fold = undefined;
    this.host.folded();
    this.sync(fold.upTo);
    const waiting = this.waiters;
    this.waiters = waiting.filter((w) => w.upTo > fold.upTo);
    for (const w of waiting) if (w.upTo <= fold.upTo) w.resolve();
    // a query waits for rows written after that fold began (they are in `unfolded`): the next fold starts now
    if (this.waiters.length > 0) this.start();
    else this.soon();
  }

  /**
   * Syncs the tables' WAL on the thread pool, then deletes the journal rows they hold (up to
   * `upTo`): until then a power loss could take the fold back, and the journal must still have it.
   */
  private sync(upTo: number): void {
    this.toSync = Math.max(this.toSync, upTo);
    // closing: close() syncs what is left before it returns
    if (this.syncing || this.host.isBroken() || this.host.isClosing()) return;
    const target = this.toSync;
    this.toSync = 0;
    let fd: number;
    try {
      fd = this.walFd ??= this.host.openWal(this.options.tablesWalPath);
    } catch (err) {
      this.host.fail(err);
      return;
    }
    this.syncing = new Promise<void>((resolve) => {
      this.options.syncTablesWal(fd, (err) => {
        this.syncing = undefined;
        resolve();
        if (err) return this.host.fail(err);
        if (this.host.isClosing()) {
          this.toSync = Math.max(this.toSync, target);
          return;
        }
        try {
          this.host.deleteJournal(target);
        } catch (e) {
          this.host.fail(e);
          return;
        }
        if (this.toSync > 0) this.sync(this.toSync);
      });
    });
  }
}
