import { fdatasyncSync } from 'node:fs';
import { encodeJournal } from './journal.js';
import type { Mutation } from './storage-core.js';

export interface CommitWaiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

/** What the group commit needs of the SQLite storage it works for. */
export interface CommitHost {
  /** Writes one journal row (in caps-journal.sqlite, its own transaction). */
  appendJournal(id: number, changes: string): void;
  /** A batch is in the journal (not yet synced): the storage hands it on to the folding. */
  committed(batch: readonly Mutation[]): void;
  /** After a commit and the start of its sync: the tables may start to catch up. */
  foldSoon(): void;
  /** The storage fails: `waiters` and everything else waiting are rejected. */
  fail(err: unknown, waiters: CommitWaiter[]): void;
  /** Opens a WAL file for syncing (and syncs its folder once). */
  openWal(path: string): number;
}

export interface CommitOptions {
  /** Syncs the journal's WAL after a commit; undefined with `--sync normal` (no sync). */
  syncWal: ((fd: number, done: (err: Error | null) => void) => void) | undefined;
  journalWalPath: string;
  /** The id of the last journal row already on disk. */
  lastJournalId: number;
}

/**
 * Group commit of the journal: the changes of one turn of the event loop are committed together
 * as one journal row, and their callers are answered once it is synced (an `fdatasync` of the
 * journal's WAL on libuv's thread pool, so the event loop is not blocked). While a sync runs, the
 * next turns' changes gather into one batch, which is committed (and synced) when it ends: one
 * sync in flight at a time. A batch of acknowledgements only is answered without a sync.
 */
export class GroupCommit {
  /** Changes made since the last commit, in order: StorageCore appends to it. */
  batch: Mutation[] = [];
  private waiters: CommitWaiter[] = [];
  private scheduled = false;
  /** Resolves when the journal sync in flight has ended; undefined when none is. */
  private syncing: Promise<void> | undefined;
  private walFd: number | undefined;
  private lastId: number;
  private commits = 0;

  constructor(
    private readonly host: CommitHost,
    private readonly options: CommitOptions,
  ) {
    this.lastId = options.lastJournalId;
  }

  /** The id of the last journal row written. */
  get lastJournalId(): number {
    return this.lastId;
  }

  /** Journal rows committed so far. */
  get count(): number {
    return this.commits;
  }

  /** The file descriptor of the journal's WAL, if one was opened (the storage closes it). */
  get walFile(): number | undefined {
    return this.walFd;
  }

  /** True when changes or callers wait for a commit. */
  get pending(): boolean {
    return this.batch.length > 0 || this.waiters.length > 0;
  }

  /** Resolves once every change made so far is committed (and synced, if it must survive power loss). */
  durable(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.schedule();
    });
  }

  /** Commits what has gathered at the end of this turn of the event loop (or after the sync in flight). */
  schedule(): void {
    // a sync in flight schedules the next commit when it ends
    if (this.scheduled || this.syncing) return;
    this.scheduled = true;
    // everything that arrives in this turn of the event loop shares one transaction
    setImmediate(() => this.commit());
  }

  /** At close: waits for the sync in flight. */
  settled(): Promise<void> {
    return this.syncing ?? Promise.resolve();
  }

  /** Commits what has gathered as one journal row, then answers its callers (`now`: synced before returning). */
  commit(now = false): void {
    this.scheduled = false;
    if (!this.pending) return;
    const batch = this.batch;
    const waiters = this.waiters;
    this.batch = [];
    this.waiters = [];
    let steps = false;
    try {
      if (batch.length > 0) {
        this.host.appendJournal(this.lastId + 1, encodeJournal(batch));
        this.lastId++;
        this.commits++;
        steps = batch.some((m) => m.kind === 'step');
        this.host.committed(batch);
      }
    } catch (err) {
      this.host.fail(err, waiters);
      return;
    }
    this.sync(steps, waiters, now);
    if (batch.length > 0) this.host.foldSoon();
  }

  /** The storage failed: drops what gathered and returns its callers, to reject. */
  abort(): CommitWaiter[] {
    const waiters = this.waiters;
    this.batch = [];
    this.waiters = [];
    return waiters;
  }

  /** Answers `waiters` once what they wait for is on disk: after a sync if `steps` were committed, at once if only acknowledgements. */
  private sync(steps: boolean, waiters: CommitWaiter[], now: boolean): void {
    const syncWal = this.options.syncWal;
    // nothing new that must survive power loss: whatever these callers wait for was synced before this turn
    if (syncWal === undefined || !steps) return answer(waiters);
    let fd: number;
    try {
      fd = this.walFd ??= this.host.openWal(this.options.journalWalPath);
      if (now) fdatasyncSync(fd);
    } catch (err) {
      this.host.fail(err, waiters);
      return;
    }
    if (now) return answer(waiters);
    this.syncing = new Promise<void>((resolve) => {
      syncWal(fd, (err) => {
        this.syncing = undefined;
        resolve();
        if (err) return this.host.fail(err, waiters);
        answer(waiters);
        if (this.pending) this.schedule();
      });
    });
  }
}

function answer(waiters: readonly CommitWaiter[]): void {
  for (const waiter of waiters) waiter.resolve();
}
