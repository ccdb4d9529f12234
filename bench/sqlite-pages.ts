#!/usr/bin/env node
/**
 * What the SQLite storage writes per parcel, counted rather than timed: a fixed workload (pickup,
 * ack, in-transit and delivered, their acks; 20 parcels at a time, as one turn's batch) goes
 * through SqliteStorage with automatic checkpoints off, and the sizes of the two WALs (the journal's,
 * which every answer waits for a sync of, and the tables') then say how many pages were written.
 * The same on any machine, however busy, so layouts can be compared exactly.
 *
 *   node dist/bench/sqlite-pages.js [--parcels N]
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CommandSpec } from '../cli/args.js';
import { runCommand } from '../cli/args.js';
import { DRIVER_QUEUE } from '../protocol/messages.js';
import { SqliteStorage } from '../hub/storage/sqlite-storage.js';
import type { StepInput, StepOutcome } from '../hub/storage/storage.js';

export const sqlitePagesCommand = {
  usage: 'node dist/bench/sqlite-pages.js',
  summary: 'Counts the WAL pages the SQLite storage writes per parcel (pickup, in-transit, delivered and their acks), 20 parcels per commit.',
  flags: {
    parcels: { type: 'integer', description: 'parcels to run through the store', placeholder: 'N', default: 3000, min: 20, max: 1_000_000 },
  },
} as const satisfies CommandSpec;

/** Bytes of a WAL file's header, and of each frame: a 24-byte header and a 4 KiB page. */
const WAL_HEADER = 32;
const FRAME = 24 + 4096;
const LANES = 20;

const exitCode = await runCommand(sqlitePagesCommand, process.argv.slice(2), async (flags) => {
  const dir = mkdtempSync(join(tmpdir(), 'caps-pages-'));
  // no checkpoints and no timed folds: what is written depends on the workload alone
  const store = new SqliteStorage({ dir, walAutocheckpoint: 0, foldAfterMs: Infinity });
  let clock = Date.UTC(2026, 0, 1);
  const step = (event: StepInput['event'], store: string, orderId: string): StepInput =>
    event === 'pickup'
      ? { event, store, orderId, customer: 'Customer', address: '1 Main Street', time: new Date(clock++).toISOString() }
      : { event, store, orderId, driver: 'driver-1', time: new Date(clock++).toISOString() };
  const accepted = (outcome: StepOutcome) => {
    if (outcome.status !== 'accepted') throw new Error(`a step was not accepted: ${outcome.status}`);
    return outcome.message;
  };
  const lane = async (first: number): Promise<void> => {
    for (let n = first; n < flags.parcels; n += LANES) {
      const shop = `store-${n % 4}`;
      const orderId = randomUUID();
      const pickup = accepted(await store.recordStep(step('pickup', shop, orderId)));
      await store.ack(DRIVER_QUEUE, pickup.messageId);
      const steps = await Promise.all([store.recordStep(step('in-transit', shop, orderId)), store.recordStep(step('delivered', shop, orderId))]);
      await Promise.all(steps.map(accepted).map((m) => store.ack(m.queueId, m.messageId)));
    }
  };
  const cpu = process.cpuUsage();
  await Promise.all(Array.from({ length: LANES }, (_, l) => lane(l)));
  const used = process.cpuUsage(cpu);
  const walPages = (file: string): number => (statSync(join(dir, file)).size - WAL_HEADER) / FRAME;
  // before close(), which folds what is left and checkpoints
  const journal = walPages('caps-journal.sqlite-wal');
  const tables = walPages('caps.sqlite-wal');
  const pages = journal + tables;
  const commits = store.commits;
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  process.stdout.write(
    `${flags.parcels} parcels, ${commits} commits: ${pages} WAL pages, ${(pages / flags.parcels).toFixed(2)} per parcel, ` +
      `${(pages / commits).toFixed(1)} per commit; journal ${journal} (${(journal / commits).toFixed(1)} per commit, what each answer waits for), tables ${tables}; ` +
      `CPU ${((used.user + used.system) / 1000).toFixed(0)} ms (timed, so noisy)\n`,
  );
  return 0;
});
process.exitCode = exitCode;
