/**
 * `caps bench --backlog N`: N stores whose vendors are offline, each with M notifications waiting
 * in its log (the in-transit and delivered of M/2 parcels delivered while they were away), in a
 * SQLite data folder. Reports the hub's restart-to-listening time on it, its RSS once up and at
 * its peak, and the closed-loop throughput of other stores meanwhile, as a ratio to the same load
 * on an empty folder in the same round.
 */
import { cpSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FlagValues } from '../cli/args.js';
import { DRIVER_QUEUE } from '../protocol/messages.js';
import { SqliteStorage } from '../hub/storage/sqlite-storage.js';
import type { StepInput } from '../hub/storage/storage.js';
import type { benchCommand } from './bench.js';
import { drive } from './bench.js';
import type { LoadConfig } from './protocol.js';
import { capsHubArgs, freePort, memory, Progress, startServer, waitListening } from './processes.js';
import { formatNumber } from './stats.js';
import { median } from './summary.js';

/** Stores seeded per batch: a batch is two commits (its pickups, then everything else). */
const STORES_PER_BATCH = 50;
const RESTART_TIMEOUT_MS = 120_000;

/** The targets of the fair-queues issue, also in docs/performance.md. */
export const BACKLOG_TARGETS = { rssBytes: 300 * 1024 * 1024, restartSeconds: 10, throughputRatio: 0.9 } as const;

export interface BacklogRound {
  round: number;
  restartSeconds: number;
  rssReadyBytes: number;
  peakRssBytes: number;
  parcelsPerSecond: number;
  baselineParcelsPerSecond: number;
  baselinePeakRssBytes: number;
  ratio: number;
}

export async function runBacklog(flags: FlagValues<typeof benchCommand>, out: string): Promise<number> {
  const stores = flags.backlog ?? 10_000;
  const perStore = flags['backlog-messages'];
  const parcels = Math.ceil(perStore / 2);
  const seeded = join(out, `data-backlog-seed-${process.pid}`);
  const progress = new Progress();
  try {
    process.stdout.write(
      `caps bench --backlog: ${formatNumber(stores)} stores with their vendors offline, ${parcels * 2} notifications each (${formatNumber(stores * parcels * 2)} in all); ` +
        `then ${flags.vendors} other vendors and ${flags.drivers} drivers, closed loop K=${flags.inflight}, ${flags.warmup} s + ${flags.seconds} s, ` +
        `against the same load on an empty folder; ${flags.repeat} round${flags.repeat > 1 ? 's, medians reported' : ''}\n`,
    );
    const t0 = performance.now();
    await seed(seeded, stores, parcels, progress);
    progress.done();
    process.stdout.write(`seeded in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);

    const rounds: BacklogRound[] = [];
    for (let round = 1; round <= flags.repeat; round++) {
      // a fresh copy each round: the load's own stores must not pile up in the backlog's folder
      const dir = join(out, `data-backlog-${process.pid}`);
      rmSync(dir, { recursive: true, force: true });
      cpSync(seeded, dir, { recursive: true });
      const withBacklog = await runHub(flags, dir, true, progress, `round ${round}, with the backlog`);
      const empty = join(out, `data-empty-${process.pid}`);
      rmSync(empty, { recursive: true, force: true });
      const baseline = await runHub(flags, empty, false, progress, `round ${round}, empty folder`);
      rmSync(dir, { recursive: true, force: true });
      rmSync(empty, { recursive: true, force: true });
      const r: BacklogRound = {
        round,
        restartSeconds: withBacklog.restartSeconds,
        rssReadyBytes: withBacklog.rssReadyBytes,
        peakRssBytes: withBacklog.peakRssBytes,
        parcelsPerSecond: withBacklog.parcelsPerSecond,
        baselineParcelsPerSecond: baseline.parcelsPerSecond,
        baselinePeakRssBytes: baseline.peakRssBytes,
        ratio: withBacklog.parcelsPerSecond / baseline.parcelsPerSecond,
      };
      rounds.push(r);
      process.stdout.write(
        `round ${round}: up in ${r.restartSeconds.toFixed(2)} s, RSS ${mb(r.rssReadyBytes)} once up, peak ${mb(r.peakRssBytes)} (${mb(r.baselinePeakRssBytes)} on the empty folder); ` +
          `${formatNumber(r.parcelsPerSecond)} parcels/s vs ${formatNumber(r.baselineParcelsPerSecond)} without the backlog (${r.ratio.toFixed(2)}×)\n`,
      );
    }
    const m = (pick: (r: BacklogRound) => number): number => median(rounds.map(pick));
    const restart = m((r) => r.restartSeconds);
    const peak = m((r) => r.peakRssBytes);
    const ready = m((r) => r.rssReadyBytes);
    const emptyPeak = m((r) => r.baselinePeakRssBytes);
    const ratio = m((r) => r.ratio);
    const of = flags.repeat > 1 ? ` (median of ${flags.repeat} rounds)` : '';
    const verdict = (ok: boolean): string => (ok ? 'met' : 'MISSED');
    process.stdout.write(
      [
        `target: hub RSS with the backlog < ${mb(BACKLOG_TARGETS.rssBytes)}: once up ${mb(ready)} — ${verdict(ready < BACKLOG_TARGETS.rssBytes)}; ` +
          `peak under the load ${mb(peak)} — ${verdict(peak < BACKLOG_TARGETS.rssBytes)} (the same load on an empty folder: ${mb(emptyPeak)})${of}`,
        `target: restart to listening < ${BACKLOG_TARGETS.restartSeconds} s: ${restart.toFixed(2)} s — ${verdict(restart < BACKLOG_TARGETS.restartSeconds)}${of}`,
        `target: other stores' throughput ≥ ${BACKLOG_TARGETS.throughputRatio}× the same run without the backlog: ${ratio.toFixed(2)}× — ${verdict(ratio >= BACKLOG_TARGETS.throughputRatio)}${of}`,
      ].join('\n') + '\n',
    );
    writeFileSync(
      join(out, 'backlog.json'),
      `${JSON.stringify({ started: new Date().toISOString(), command: `caps bench ${process.argv.slice(3).join(' ')}`.trim(), stores, notificationsPerStore: parcels * 2, rounds, medians: { restartSeconds: restart, rssReadyBytes: ready, peakRssBytes: peak, emptyPeakRssBytes: emptyPeak, ratio }, targets: BACKLOG_TARGETS }, null, 2)}\n`,
    );
    process.stdout.write(`results: ${join(out, 'backlog.json')}\n`);
    return 0;
  } catch (err) {
    progress.done();
    process.stderr.write(`caps bench: backlog mode failed: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  } finally {
    rmSync(seeded, { recursive: true, force: true });
  }
}

/** Writes the backlog through the SQLite storage itself, as a hub would have: pickups taken by a driver, then delivered, with no vendor online. */
export async function seed(dir: string, stores: number, parcels: number, progress: Progress): Promise<void> {
  rmSync(dir, { recursive: true, force: true });
  const storage = new SqliteStorage({ dir, sync: 'normal' });
  const time = new Date().toISOString();
  const input = (event: StepInput['event'], store: string, n: number): StepInput => ({
    event,
    store,
    orderId: `${store}-${n}`,
    time,
    ...(event === 'pickup' ? { customer: 'Backlog Customer', address: '1 Backlog Road' } : { driver: 'backlog-driver', toLog: true }),
  });
  try {
    for (let first = 0; first < stores; first += STORES_PER_BATCH) {
      const names = Array.from({ length: Math.min(STORES_PER_BATCH, stores - first) }, (_, i) => `backlog-${String(first + i).padStart(6, '0')}`);
      const pickups = await Promise.all(names.flatMap((store) => Array.from({ length: parcels }, (_, n) => storage.recordStep(input('pickup', store, n)))));
      const rest: Array<Promise<unknown>> = [];
      for (const outcome of pickups) {
        if (outcome.status !== 'accepted') throw new Error(`seeding: a pickup was ${outcome.status}`);
        rest.push(storage.ack(DRIVER_QUEUE, outcome.message.messageId));
      }
      for (const store of names) {
        for (let n = 0; n < parcels; n++) rest.push(storage.recordStep(input('in-transit', store, n)), storage.recordStep(input('delivered', store, n)));
      }
      await Promise.all(rest);
      progress.update(`seeding: ${formatNumber(first + names.length)}/${formatNumber(stores)} stores`);
    }
  } finally {
    await storage.close();
  }
}

async function runHub(
  flags: FlagValues<typeof benchCommand>,
  dir: string,
  backlog: boolean,
  progress: Progress,
  name: string,
): Promise<{ restartSeconds: number; rssReadyBytes: number; peakRssBytes: number; parcelsPerSecond: number }> {
  const port = await freePort();
  const started = performance.now();
  const server = startServer(capsHubArgs(port, 'sqlite', dir));
  try {
    progress.update(`${name}: starting the hub`);
    await waitListening(port, server, `the hub (${name})`, backlog ? RESTART_TIMEOUT_MS : 20_000);
    const restartSeconds = (performance.now() - started) / 1000;
    const rssReadyBytes = memory(server.pid, 'VmRSS');
    const config: LoadConfig = {
      url: `http://127.0.0.1:${port}`,
      vendors: flags.vendors,
      drivers: flags.drivers,
      inflight: flags.inflight,
      rate: 0,
      warmupMs: flags.warmup * 1000,
      measureMs: flags.seconds * 1000,
      label: name,
      protocol: 'caps',
    };
    const result = await drive(config, server, progress, name);
    progress.done();
    return { restartSeconds, rssReadyBytes, peakRssBytes: memory(server.pid, 'VmHWM'), parcelsPerSecond: result.load.parcels / result.load.seconds };
  } finally {
    await server.stop();
  }
}

function mb(bytes: number): string {
  return `${formatNumber(bytes / 1024 / 1024, 1)} MB`;
}
