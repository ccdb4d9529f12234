import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { ParcelEvent } from '../../protocol/schemas.js';
import { checkPrivateFile, openPrivate, prepareDataFolder } from '../data-folder.js';
import { EndpointCache } from './endpoint-cache.js';
import type { NewDelivery, Outbox, PendingDelivery, WebhookEndpoint } from './types.js';

/** The outbox's file in the hub's data folder. */
const OUTBOX_FILE = 'webhooks.sqlite';

/**
 * A row waiting behind an earlier event of its parcel: never due until that one is delivered. Only
 * the head of each parcel's line has a real `next_at`, so "what is due" is one index range, however
 * long the lines behind failing heads grow.
 */
const BLOCKED = Number.MAX_SAFE_INTEGER;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS endpoints (
  id TEXT PRIMARY KEY,
  store TEXT NOT NULL,
  url TEXT NOT NULL,
  events TEXT,
  secret TEXT NOT NULL,
  created INTEGER NOT NULL,
  state TEXT NOT NULL DEFAULT 'active',
  disabled_reason TEXT,
  disabled_at INTEGER,
  failing_since INTEGER,
  last_error TEXT,
  last_error_at INTEGER,
  last_success_at INTEGER
);
CREATE TABLE IF NOT EXISTS deliveries (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  endpoint_id TEXT NOT NULL,
  event_id TEXT NOT NULL,
  store TEXT NOT NULL,
  order_id TEXT NOT NULL,
  position INTEGER NOT NULL,
  body TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_at INTEGER NOT NULL,
  created INTEGER NOT NULL,
  delivered_at INTEGER,
  UNIQUE (endpoint_id, event_id)
);
CREATE INDEX IF NOT EXISTS deliveries_parcel ON deliveries (endpoint_id, store, order_id, position, seq) WHERE delivered_at IS NULL;
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (endpoint_id, next_at) WHERE delivered_at IS NULL;
CREATE INDEX IF NOT EXISTS deliveries_done ON deliveries (delivered_at) WHERE delivered_at IS NOT NULL;
`;

export interface OutboxOptions {
  /** The hub's data folder; undefined: an in-memory database, gone with the process. */
  dir?: string;
  /** `full`: every commit is fsynced (survives power loss); `normal`: survives a killed process. Default `full`. */
  sync?: 'full' | 'normal';
}

interface EndpointRow {
  id: string;
  store: string;
  url: string;
  events: string | null;
  secret: string;
  created: number;
  state: string;
  disabled_reason: string | null;
  disabled_at: number | null;
  failing_since: number | null;
  last_error: string | null;
  last_error_at: number | null;
  last_success_at: number | null;
}

interface DeliveryRow {
  seq: number;
  endpoint_id: string;
  event_id: string;
  store: string;
  order_id: string;
  body: string;
  attempts: number;
}

type Write = () => void;

/**
 * One hub's durable outbox: endpoints and the deliveries waiting for them, in SQLite (`webhooks.sqlite` in
 * the data folder, WAL; or an in-memory database for a hub without one). Its own file, so that its
 * fsyncs never wait behind the parcel storage's group commit, nor its tables' schema on ours.
 *
 * Endpoints are few and held in memory; deliveries are not: they are read from SQLite a page at a
 * time (`due`), so memory follows the requests in flight, not the backlog.
 *
 * Writes of one event-loop turn are committed together (one transaction, one fsync), and each
 * caller's promise resolves once its write is committed: enqueues answer a publisher only when
 * durable. Delivered rows keep their event id (not their body) for `retainDeliveredMs`, so a step
 * enqueued again in that time (a publisher's late retry) is not sent twice; then they are pruned.
 */
export class SqliteOutbox implements Outbox {
  /** Opened at once on a file; in memory, only once an endpoint is added (see `opened`). */
  private opened: { db: Database.Database; statements: ReturnType<typeof prepareStatements> } | undefined;
  readonly cache = new EndpointCache();
  private writes: Array<{ write: Write; resolve: () => void; reject: (err: unknown) => void }> = [];
  private flushScheduled: NodeJS.Immediate | undefined;
  private closed = false;
  /** Where it lives, for the log: a file, or `memory`. */
  readonly where: string;
  /** Only this hub writes to it. */
  readonly pollMs = undefined;

  constructor(options: OutboxOptions = {}) {
    if (options.dir !== undefined) {
      prepareDataFolder(options.dir);
      const file = join(options.dir, OUTBOX_FILE);
      // it holds the endpoints' signing secrets: refused if others could read or swap it
      checkPrivateFile(file, { risk: 'can sign webhooks as this hub', removed: 'every webhook endpoint and pending delivery is lost' });
      const db = openPrivate(file);
      db.pragma('journal_mode = WAL');
      db.pragma(`synchronous = ${options.sync === 'normal' ? 'NORMAL' : 'FULL'}`);
      this.where = file;
      this.opened = { db, statements: prepareStatements(db) };
      this.cache.replaceAll(this.statements.endpoints.all().map(endpointOf));
    } else {
      // a hub with no data folder and no endpoint never loads SQLite's native addon (a packed
      // client library, installed without native builds, runs a memory hub)
      this.where = 'memory';
      this.cache.replaceAll([]);
    }
  }

  private get db(): Database.Database {
    return this.open().db;
  }

  private get statements(): ReturnType<typeof prepareStatements> {
    return this.open().statements;
  }

  /** The in-memory outbox, opened on first use. */
  private open(): NonNullable<SqliteOutbox['opened']> {
    if (!this.opened) {
      const db = new Database(':memory:');
      this.opened = { db, statements: prepareStatements(db) };
    }
    return this.opened;
  }

  /** Every endpoint, oldest first. */
  endpoints(): WebhookEndpoint[] {
    return this.cache.all();
  }

  endpoint(id: string): WebhookEndpoint | undefined {
    return this.cache.get(id);
  }

  /** Loaded by the constructor. */
  ready(): Promise<void> {
    return Promise.resolve();
  }

  /** Nothing changes it but this hub. */
  start(): void {}

  endpointsOf(store: string): Promise<WebhookEndpoint[]> {
    return Promise.resolve(this.endpoints().filter((e) => e.store === store));
  }

  /** Registers an endpoint; resolves once it is durable. */
  addEndpoint(endpoint: WebhookEndpoint): Promise<void> {
    return this.write(() => {
      this.statements.insertEndpoint.run({ id: endpoint.id, store: endpoint.store, url: endpoint.url, events: endpoint.events ? JSON.stringify(endpoint.events) : null, secret: endpoint.secret, created: endpoint.created, state: endpoint.state });
      this.cache.set(endpoint);
    });
  }

  /** Removes an endpoint and every delivery still waiting for it. */
  removeEndpoint(endpoint: WebhookEndpoint): Promise<void> {
    const id = endpoint.id;
    return this.write(() => {
      this.statements.deleteDeliveries.run(id);
      this.statements.deleteEndpoint.run(id);
      this.cache.delete(id);
    });
  }

  /** Saves an endpoint's state (held in memory at once, durable when the promise resolves). */
  saveEndpoint(endpoint: WebhookEndpoint): Promise<void> {
    // one removed meanwhile (a delivery settling after DELETE) stays removed
    if (!this.cache.has(endpoint.id)) return Promise.resolve();
    this.cache.set(endpoint);
    return this.write(() => {
      this.statements.updateEndpoint.run({
        id: endpoint.id,
        state: endpoint.state,
        disabledReason: endpoint.disabledReason ?? null,
        disabledAt: endpoint.disabledAt ?? null,
        failingSince: endpoint.failingSince ?? null,
        lastError: endpoint.lastError ?? null,
        lastErrorAt: endpoint.lastErrorAt ?? null,
        lastSuccessAt: endpoint.lastSuccessAt ?? null,
      });
    });
  }

  /**
   * Adds deliveries (idempotent by endpoint and event id: one already there, or delivered within
   * the retention, is left alone); resolves once they are durable.
   */
  enqueue(deliveries: readonly NewDelivery[], now = Date.now()): Promise<void> {
    return this.write(() => {
      const s = this.statements;
      for (const d of deliveries) {
        const behind = s.earlier.get(d.endpointId, d.store, d.orderId, d.position) !== undefined;
        const inserted = s.insert.run({ ...d, nextAt: behind ? BLOCKED : now, now }).changes > 0;
        if (inserted && !behind) s.demote.run(BLOCKED, d.endpointId, d.store, d.orderId, d.position, BLOCKED);
      }
    });
  }

  /** Up to `limit` deliveries of `endpointId` due at `now`, each the head of its parcel's line, none of `inFlight`. */
  claim(endpointId: string, now: number, limit: number, inFlight: ReadonlySet<number>): Promise<PendingDelivery[]> {
    // the rows in flight are still due: asked for along with the room left, and skipped
    const rows = this.statements.due.all(endpointId, now, limit + inFlight.size).filter((r) => !inFlight.has(r.seq));
    return Promise.resolve(rows.slice(0, limit).map((r) => ({ seq: r.seq, endpointId: r.endpoint_id, eventId: r.event_id, store: r.store, orderId: r.order_id, body: r.body, attempts: r.attempts })));
  }

  nextDue(endpointId: string, now: number): Promise<number | undefined> {
    return Promise.resolve(this.statements.nextDue.get(endpointId, now, BLOCKED)?.at ?? undefined);
  }

  pendingTotal(): Promise<number> {
    // an in-memory outbox never opened holds nothing
    if (!this.opened) return Promise.resolve(0);
    return Promise.resolve(this.statements.pendingTotal.get()?.n ?? 0);
  }

  /** A delivery succeeded: its parcel's next event, if any, is due at once. */
  delivered(delivery: PendingDelivery, now = Date.now()): Promise<void> {
    return this.write(() => {
      this.statements.delivered.run(now, delivery.seq);
      this.statements.promote.run(now, delivery.endpointId, delivery.store, delivery.orderId, BLOCKED);
    });
  }

  /** A delivery failed: tried again at `nextAt`; its parcel's later events keep waiting. */
  retry(delivery: PendingDelivery, nextAt: number): Promise<void> {
    return this.write(() => {
      this.statements.retry.run(nextAt, delivery.seq);
    });
  }

  /** Only this hub attempts its rows: nothing is held. */
  release(): Promise<void> {
    return Promise.resolve();
  }

  /** Makes every parcel head of `endpointId` due now (an endpoint enabled again). */
  wake(endpointId: string, now = Date.now()): Promise<void> {
    return this.write(() => {
      this.statements.wakeHeads.run(now, endpointId, BLOCKED);
    });
  }

  /** Deliveries of `endpointId` not delivered yet. */
  pending(endpoint: WebhookEndpoint): Promise<number> {
    return Promise.resolve(this.statements.pending.get(endpoint.id)?.n ?? 0);
  }

  /** Forgets delivered rows older than `before` (unix ms). */
  prune(before: number): Promise<void> {
    if (!this.opened) return Promise.resolve();
    return this.write(() => {
      this.statements.prune.run(before);
    });
  }

  /** Commits what is waiting, then closes the database. Idempotent. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.flushScheduled) clearImmediate(this.flushScheduled);
    this.flush();
    this.closed = true;
    this.opened?.db.close();
    return Promise.resolve();
  }

  /** Queues a write for this turn's transaction. */
  private write(write: Write): Promise<void> {
    if (this.closed) return Promise.reject(new Error('the webhook outbox is closed'));
    return new Promise<void>((resolve, reject) => {
      this.writes.push({ write, resolve, reject });
      this.flushScheduled ??= setImmediate(() => this.flush());
    });
  }

  private flush(): void {
    this.flushScheduled = undefined;
    const batch = this.writes;
    if (batch.length === 0) return;
    this.writes = [];
    try {
      this.db.transaction(() => {
        for (const { write } of batch) write();
      })();
    } catch (err) {
      for (const { reject } of batch) reject(err);
      return;
    }
    for (const { resolve } of batch) resolve();
  }
}

function endpointOf(row: EndpointRow): WebhookEndpoint {
  return {
    id: row.id,
    store: row.store,
    url: row.url,
    events: row.events === null ? undefined : (JSON.parse(row.events) as ParcelEvent[]),
    secret: row.secret,
    created: row.created,
    state: row.state === 'disabled' ? 'disabled' : 'active',
    disabledReason: row.disabled_reason ?? undefined,
    disabledAt: row.disabled_at ?? undefined,
    failingSince: row.failing_since ?? undefined,
    lastError: row.last_error ?? undefined,
    lastErrorAt: row.last_error_at ?? undefined,
    lastSuccessAt: row.last_success_at ?? undefined,
  };
}

/** The outbox's tables, and the statements it runs on them. */
function prepareStatements(db: Database.Database) {
  db.exec(SCHEMA);
  return {
    endpoints: db.prepare<[], EndpointRow>('SELECT * FROM endpoints ORDER BY created, id'),
    insertEndpoint: db.prepare(
      'INSERT INTO endpoints (id, store, url, events, secret, created, state) VALUES (@id, @store, @url, @events, @secret, @created, @state)',
    ),
    updateEndpoint: db.prepare(
      `UPDATE endpoints SET state = @state, disabled_reason = @disabledReason, disabled_at = @disabledAt, failing_since = @failingSince,
       last_error = @lastError, last_error_at = @lastErrorAt, last_success_at = @lastSuccessAt WHERE id = @id`,
    ),
    deleteEndpoint: db.prepare('DELETE FROM endpoints WHERE id = ?'),
    deleteDeliveries: db.prepare('DELETE FROM deliveries WHERE endpoint_id = ?'),
    earlier: db.prepare<[string, string, string, number], { seq: number }>(
      'SELECT seq FROM deliveries WHERE endpoint_id = ? AND store = ? AND order_id = ? AND delivered_at IS NULL AND position <= ? LIMIT 1',
    ),
    insert: db.prepare(
      'INSERT OR IGNORE INTO deliveries (endpoint_id, event_id, store, order_id, position, body, next_at, created) VALUES (@endpointId, @eventId, @store, @orderId, @position, @body, @nextAt, @now)',
    ),
    // a step enqueued after a later one of its parcel (two answers racing): the later one waits again
    demote: db.prepare(
      'UPDATE deliveries SET next_at = ? WHERE endpoint_id = ? AND store = ? AND order_id = ? AND delivered_at IS NULL AND position > ? AND next_at <> ?',
    ),
    due: db.prepare<[string, number, number], DeliveryRow>(
      'SELECT seq, endpoint_id, event_id, store, order_id, body, attempts FROM deliveries WHERE endpoint_id = ? AND delivered_at IS NULL AND next_at <= ? ORDER BY next_at, seq LIMIT ?',
    ),
    nextDue: db.prepare<[string, number, number], { at: number | null }>(
      'SELECT MIN(next_at) AS at FROM deliveries WHERE endpoint_id = ? AND delivered_at IS NULL AND next_at > ? AND next_at < ?',
    ),
    pendingTotal: db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM deliveries WHERE delivered_at IS NULL'),
    delivered: db.prepare('UPDATE deliveries SET delivered_at = ?, body = NULL WHERE seq = ?'),
    // the next event of the parcel, if any, becomes its head
    promote: db.prepare(
      `UPDATE deliveries SET next_at = ? WHERE seq = (SELECT seq FROM deliveries WHERE endpoint_id = ? AND store = ? AND order_id = ? AND delivered_at IS NULL
       ORDER BY position, seq LIMIT 1) AND next_at = ?`,
    ),
    retry: db.prepare('UPDATE deliveries SET attempts = attempts + 1, next_at = ? WHERE seq = ? AND delivered_at IS NULL'),
    wakeHeads: db.prepare('UPDATE deliveries SET next_at = ? WHERE endpoint_id = ? AND delivered_at IS NULL AND next_at <> ?'),
    pending: db.prepare<[string], { n: number }>('SELECT COUNT(*) AS n FROM deliveries WHERE endpoint_id = ? AND delivered_at IS NULL'),
    prune: db.prepare('DELETE FROM deliveries WHERE delivered_at IS NOT NULL AND delivered_at < ?'),
  };
}
