import type Database from 'better-sqlite3';

/**
 * The SQLite storage's tables, and the migrations that bring a data folder written by an earlier
 * version up to them. The journal and group commit, and the folding of the journal into these
 * tables, are in sqlite-storage.ts and journal.ts.
 */

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
  history TEXT,
  UNIQUE (order_id, store)
);`;

/**
 * caps-journal.sqlite: one row per commit, what it changed (journal.ts), with the id the store
 * gives it (never reused: ids go on from the tables' mark); deleted once the tables hold it on disk.
 */
export const JOURNAL_SCHEMA = 'CREATE TABLE IF NOT EXISTS journal (id INTEGER PRIMARY KEY, changes TEXT NOT NULL);';

export const SCHEMA = `
${PARCELS_TABLE}
-- the id of the last journal row the tables hold
CREATE TABLE IF NOT EXISTS folded (only INTEGER PRIMARY KEY CHECK (only = 1), journal_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS queues (queue TEXT PRIMARY KEY, last_seq INTEGER NOT NULL) WITHOUT ROWID;
${MESSAGES_TABLE}
`;

/**
 * A parcel's steps after the pickup, as columns of its row (the pickup's time is created_at); a
 * parcel whose story is more than the course's three steps (a failed attempt, a return, a cancel,
 * a step's details) has its whole history in `history`, as JSON, which is then what is read.
 */
const STEP_COLUMNS = ['in_transit_at', 'in_transit_driver', 'delivered_at', 'delivered_driver', 'history'] as const;

/**
 * Brings a data folder written by an earlier version up to SCHEMA (which has created whatever was
 * missing), in one transaction:
 * - parcels from before they had a creation time get the column, and those from before the
 *   lifecycle (issue 17) the `history` column, null: their history is their step columns;
 * - a parcel's steps were rows of a `steps` table (one more B-tree, written at a random place for
 *   every step): they become columns of the parcel's row, and the table goes;
 * - messages were a rowid table with a unique index on message_id (two more B-trees, at random
 *   places, for every message queued and taken off): they move to the table keyed by (queue, seq);
 * - parcels were keyed by (store, order_id), with a second index on order_id (a pickup wrote three
 *   B-trees at random places, and each later step one): they move to the table keyed by pickup
 *   order, oldest first.
 */
export function migrate(db: Database.Database): void {
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
