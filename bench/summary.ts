/**
 * From the runs of `caps bench` to the rows it reports: each run's ratios to the relay of the same
 * loop and round, then, with --repeat, one row per target and loop holding the median of every
 * figure over the rounds (ratios too: each taken within its own round, then the median).
 */
import type { LatencySummary } from './stats.js';
import { ratio } from './stats.js';
import type { Target } from './targets.js';

export type Loop = 'closed' | 'open';

/** What one run of one target measured. */
export interface RunResult {
  target: Target;
  loop: Loop;
  /** Which repetition (1-based) it belongs to; runs are compared with the relay of their own. */
  round?: number;
  /** Open loop: the offered rate. */
  rate?: number;
  parcelsPerSecond: number;
  eventsPerSecond: number;
  latencyMs: LatencySummary;
  /** Cores the server used while measured (1 = one core busy). */
  serverCpu: number;
  /** Cores the load generator used (near 1: the generator, not the server, may be the limit). */
  loadCpu: number;
  serverPeakRssBytes: number;
  /** Share of the machine's CPU time its hypervisor took while measured (NaN where /proc/stat has none). */
  steal?: number;
  errors: number;
  outstanding: number;
  firstError?: string;
}

export interface RatedResult extends RunResult {
  /** parcels/s over the relay's, in the same loop and round. */
  throughputRatio: number;
  /** p99 over the relay's. */
  p99Ratio: number;
  /** How many rounds this row stands for (1 without --repeat). */
  rounds: number;
  /** Lowest and highest throughput ratio over those rounds. */
  throughputRange: [number, number];
}

/** Each run with its ratios to the relay of the same loop and round. */
export function rate(results: readonly RunResult[]): RatedResult[] {
  return results.map((r) => {
    const base = results.find((b) => b.target === 'relay' && b.loop === r.loop && (b.round ?? 1) === (r.round ?? 1));
    const throughputRatio = ratio(r.parcelsPerSecond, base?.parcelsPerSecond);
    return { ...r, throughputRatio, p99Ratio: ratio(r.latencyMs.p99, base?.latencyMs.p99), rounds: 1, throughputRange: [throughputRatio, throughputRatio] };
  });
}

/** The median (of an even count, the mean of the two middle values) of the values that were measured; NaN if none. */
export function median(values: readonly number[]): number {
  const sorted = values.filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] ?? Number.NaN) : ((sorted[mid - 1] ?? Number.NaN) + (sorted[mid] ?? Number.NaN)) / 2;
}

/** One row per target and loop, in the order they first ran: the median of each figure over its rounds. */
export function mediansOfRounds(rated: readonly RatedResult[]): RatedResult[] {
  const groups = new Map<string, RatedResult[]>();
  for (const r of rated) {
    const key = `${r.loop} ${r.target}`;
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  return [...groups.values()].map((runs): RatedResult => {
    const first = runs[0] as RatedResult;
    if (runs.length === 1) return first;
    const m = (pick: (r: RatedResult) => number): number => median(runs.map(pick));
    const ratios = runs.map((r) => r.throughputRatio).filter((v) => !Number.isNaN(v));
    const row: RatedResult = {
      target: first.target,
      loop: first.loop,
      ...(first.rate !== undefined ? { rate: first.rate } : {}),
      parcelsPerSecond: m((r) => r.parcelsPerSecond),
      eventsPerSecond: m((r) => r.eventsPerSecond),
      latencyMs: {
        count: runs.reduce((n, r) => n + r.latencyMs.count, 0),
        p50: m((r) => r.latencyMs.p50),
        p90: m((r) => r.latencyMs.p90),
        p99: m((r) => r.latencyMs.p99),
        max: Math.max(...runs.map((r) => r.latencyMs.max)),
        mean: m((r) => r.latencyMs.mean),
      },
      serverCpu: m((r) => r.serverCpu),
      loadCpu: m((r) => r.loadCpu),
      serverPeakRssBytes: Math.max(...runs.map((r) => r.serverPeakRssBytes)),
      steal: m((r) => r.steal ?? Number.NaN),
      errors: runs.reduce((n, r) => n + r.errors, 0),
      outstanding: runs.reduce((n, r) => n + r.outstanding, 0),
      throughputRatio: m((r) => r.throughputRatio),
      p99Ratio: m((r) => r.p99Ratio),
      rounds: runs.length,
      throughputRange: ratios.length > 0 ? [Math.min(...ratios), Math.max(...ratios)] : [Number.NaN, Number.NaN],
    };
    const firstError = runs.find((r) => r.firstError !== undefined)?.firstError;
    return firstError !== undefined ? { ...row, firstError } : row;
  });
}
