/**
 * From the runs of `caps bench --store redis --hubs N` to what it reports: per-parcel costs of the
 * hubs and of Redis, each N-hub run's ratios to the one-hub run of the same Redis kind, loop and
 * round, medians over rounds, the table and the verdicts. Pure, so it is tested alone.
 */
import type { RedisKind, RedisSample } from './redis-probe.js';
import { callsDelta, formatNumber, ratio } from './stats.js';
import type { LatencySummary } from './stats.js';
import type { Loop } from './summary.js';
import { median } from './summary.js';

/** The issue's targets for several hubs on one Redis. */
export const HUBS_TARGETS = { hubCpuRatio: 1.2, commandsPerParcel: 12 } as const;

/** What one run measured: `hubs` hubs serving the load (and one idle hub) on one Redis. */
export interface HubsRun {
  redis: RedisKind;
  primaries: number;
  hubs: number;
  loop: Loop;
  /** Open loop: the offered rate. */
  rate?: number;
  round: number;
  parcelsPerSecond: number;
  latencyMs: LatencySummary;
  /** Parcels delivered in the measured window, and over the whole run (warm-up included). */
  parcels: number;
  delivered: number;
  /** CPU (utime + stime) of the serving hubs together, µs per parcel delivered in the window. */
  hubCpuUs: number;
  /** CPU of the extra hub no client connects to, µs per parcel (what a hub costs by just being there). */
  idleHubCpuUs: number;
  /** CPU of the redis-server processes together, µs per parcel. */
  redisCpuUs: number;
  /** Each primary's share of that CPU (one primary: [1]). */
  primaryCpuShares: number[];
  /** Commands over all primaries per parcel (INFO commandstats: those run inside Lua scripts count too), the bench's own INFO left out. */
  commands: number;
  /** The same by command name, per parcel. */
  commandsByName: Record<string, number>;
  /** used_memory over all primaries, from before the load to after it, per parcel delivered in the whole run. */
  bytesPerParcel: number;
  loadCpu: number;
  steal: number;
  /** Share of the machine's CPU time (all cores) that processes outside the run kept busy meanwhile. */
  otherCpu: number;
  errors: number;
  outstanding: number;
  firstError?: string;
  /** WARN and ERROR lines of the hubs' logs, grouped, and what they wrote on stderr (the first few). */
  hubWarnings: string[];
  /** `WARN BACKLOG ... waiting="drivers busy"` lines of the hubs' logs (a single SQLite hub logs them under a closed loop too): counted only. */
  busyBacklogLines: number;
}

export interface RatedHubsRun extends HubsRun {
  /** Over the one-hub run of the same Redis kind, loop and round (1 for that run itself). */
  throughputRatio: number;
  hubCpuRatio: number;
  redisCpuRatio: number;
  commandsRatio: number;
  /** How many rounds this row stands for. */
  rounds: number;
}

/** Commands the primaries ran between two samples, the bench's own `probe` calls (per primary) left out. */
export function windowCommands(start: RedisSample, end: RedisSample, probe: ReadonlyMap<string, number>): { total: number; byName: Map<string, number>; perPrimary: number[] } {
  const byName = new Map<string, number>();
  const perPrimary: number[] = [];
  end.calls.forEach((after, i) => {
    const delta = callsDelta(start.calls[i] ?? new Map(), after);
    for (const [name, own] of probe) {
      const n = (delta.get(name) ?? 0) - own;
      if (n > 0) delta.set(name, n);
      else delta.delete(name);
    }
    let sum = 0;
    for (const [name, n] of delta) {
      byName.set(name, (byName.get(name) ?? 0) + n);
      sum += n;
    }
    perPrimary.push(sum);
  });
  return { total: perPrimary.reduce((a, b) => a + b, 0), byName, perPrimary };
}

/** Each run with its ratios to the one-hub run of the same Redis kind, loop and round. */
export function rateHubs(runs: readonly HubsRun[]): RatedHubsRun[] {
  return runs.map((r) => {
    const base = runs.find((b) => b.hubs === 1 && b.redis === r.redis && b.loop === r.loop && b.round === r.round);
    return {
      ...r,
      throughputRatio: ratio(r.parcelsPerSecond, base?.parcelsPerSecond),
      hubCpuRatio: ratio(r.hubCpuUs, base?.hubCpuUs),
      redisCpuRatio: ratio(r.redisCpuUs, base?.redisCpuUs),
      commandsRatio: ratio(r.commands, base?.commands),
      rounds: 1,
    };
  });
}

/** One row per Redis kind, loop and hub count, in the order they first ran: the median of each figure over its rounds (ratios taken within each round first). */
export function hubsMedians(rated: readonly RatedHubsRun[]): RatedHubsRun[] {
  const groups = new Map<string, RatedHubsRun[]>();
  for (const r of rated) {
    const key = `${r.redis} ${r.loop} ${r.hubs}`;
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  return [...groups.values()].map((runs): RatedHubsRun => {
    const first = runs[0] as RatedHubsRun;
    if (runs.length === 1) return first;
    const m = (pick: (r: RatedHubsRun) => number): number => median(runs.map(pick));
    const names = new Set(runs.flatMap((r) => Object.keys(r.commandsByName)));
    const row: RatedHubsRun = {
      ...first,
      parcelsPerSecond: m((r) => r.parcelsPerSecond),
      latencyMs: {
        count: runs.reduce((n, r) => n + r.latencyMs.count, 0),
        p50: m((r) => r.latencyMs.p50),
        p90: m((r) => r.latencyMs.p90),
        p99: m((r) => r.latencyMs.p99),
        max: Math.max(...runs.map((r) => r.latencyMs.max)),
        mean: m((r) => r.latencyMs.mean),
      },
      parcels: runs.reduce((n, r) => n + r.parcels, 0),
      delivered: runs.reduce((n, r) => n + r.delivered, 0),
      hubCpuUs: m((r) => r.hubCpuUs),
      idleHubCpuUs: m((r) => r.idleHubCpuUs),
      redisCpuUs: m((r) => r.redisCpuUs),
      primaryCpuShares: first.primaryCpuShares.map((_, i) => m((r) => r.primaryCpuShares[i] ?? Number.NaN)),
      commands: m((r) => r.commands),
      commandsByName: Object.fromEntries([...names].map((name) => [name, m((r) => r.commandsByName[name] ?? 0)])),
      bytesPerParcel: m((r) => r.bytesPerParcel),
      loadCpu: m((r) => r.loadCpu),
      steal: m((r) => r.steal),
      otherCpu: m((r) => r.otherCpu),
      errors: runs.reduce((n, r) => n + r.errors, 0),
      outstanding: runs.reduce((n, r) => n + r.outstanding, 0),
      hubWarnings: runs.flatMap((r) => r.hubWarnings).slice(0, 10),
      busyBacklogLines: runs.reduce((n, r) => n + r.busyBacklogLines, 0),
      throughputRatio: m((r) => r.throughputRatio),
      hubCpuRatio: m((r) => r.hubCpuRatio),
      redisCpuRatio: m((r) => r.redisCpuRatio),
      commandsRatio: m((r) => r.commandsRatio),
      rounds: runs.length,
    };
    const firstError = runs.find((r) => r.firstError !== undefined)?.firstError;
    if (firstError === undefined) delete row.firstError;
    else row.firstError = firstError;
    return row;
  });
}

export function redisLabel(kind: RedisKind, primaries: number): string {
  return kind === 'cluster' ? `redis cluster ×${primaries}` : 'redis';
}

function runLabel(r: HubsRun): string {
  return `${r.hubs} hub${r.hubs === 1 ? '' : 's'}, ${redisLabel(r.redis, r.primaries)}, ${r.loop === 'closed' ? 'closed' : `open ${r.rate}/s`}`;
}

/** The rows as an aligned text table; ratios to the one-hub run of the same loop. */
export function formatHubsTable(rows: readonly RatedHubsRun[]): string {
  const header = ['run', 'parcels/s', '× 1 hub', 'p50 ms', 'p99 ms', 'hub CPU µs/parcel', '× 1 hub', 'idle hub µs/parcel', 'Redis CPU µs/parcel', '× 1 hub', 'Redis cmds/parcel', 'Redis B/parcel', 'load CPU', 'steal', 'others', 'errors'];
  const lines = rows.map((r) => [
    runLabel(r),
    formatNumber(r.parcelsPerSecond),
    `${formatNumber(r.throughputRatio, 2)}×`,
    formatNumber(r.latencyMs.p50, 2),
    formatNumber(r.latencyMs.p99, 2),
    formatNumber(r.hubCpuUs),
    `${formatNumber(r.hubCpuRatio, 2)}×`,
    formatNumber(r.idleHubCpuUs, 1),
    formatNumber(r.redisCpuUs),
    `${formatNumber(r.redisCpuRatio, 2)}×`,
    formatNumber(r.commands, 1),
    formatNumber(r.bytesPerParcel),
    `${formatNumber(r.loadCpu * 100)}%`,
    `${formatNumber(r.steal * 100, 1)}%`,
    `${formatNumber(r.otherCpu * 100)}%`,
    String(r.errors),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((row) => (row[i] ?? '').length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...lines.map(line)].join('\n');
}

/** Parcels/s one Redis primary could carry at this CPU per parcel, if Redis is single-threaded and CPU-bound; `primaries` of them, the stores spread evenly. */
export function projectedCeiling(redisCpuUs: number, primaries: number): { perPrimary: number; total: number } {
  const perPrimary = redisCpuUs > 0 ? 1e6 / redisCpuUs : Number.NaN;
  return { perPrimary, total: perPrimary * primaries };
}

/** The machine's hypervisor took more than this share of its CPU time: the run is not one to compare. */
const STEAL_WARNING = 0.05;
/** Other processes kept more than this share of the machine busy: the run is not one to compare. */
const OTHERS_WARNING = 0.1;
const TOP_COMMANDS = 10;
/** An open loop that delivers less than this share of its rate is saturated. */
const SATURATED = 0.9;

/** The targets met or missed, the ratios, the projected ceiling and the warnings, from the rows (medians with --repeat). */
export function hubsVerdicts(rows: readonly RatedHubsRun[], cpus: number): string[] {
  const lines: string[] = [];
  const verdict = (ok: boolean): string => (ok ? 'met' : 'MISSED');
  const of = (r: RatedHubsRun): string => (r.rounds > 1 ? ` (median of ${r.rounds} rounds)` : '');
  const one = (r: RatedHubsRun): RatedHubsRun | undefined => rows.find((b) => b.hubs === 1 && b.redis === r.redis && b.loop === r.loop);
  const most = Math.max(...rows.map((r) => r.hubs));
  for (const r of rows.filter((row) => row.hubs === most)) {
    const what = `${r.hubs} hub${r.hubs === 1 ? '' : 's'} on ${redisLabel(r.redis, r.primaries)}, ${r.loop === 'closed' ? 'closed loop' : `open loop ${r.rate}/s`}`;
    const base = one(r);
    if (r.hubs > 1 && base) {
      lines.push(
        `target: hub CPU per parcel ≤ ${HUBS_TARGETS.hubCpuRatio}× one hub's (${what}): ${formatNumber(r.hubCpuRatio, 2)}× (${formatNumber(r.hubCpuUs)} vs ${formatNumber(base.hubCpuUs)} µs) — ${verdict(r.hubCpuRatio <= HUBS_TARGETS.hubCpuRatio)}${of(r)}`,
      );
      lines.push(`throughput vs one hub (${what}): ${formatNumber(r.throughputRatio, 2)}× (${formatNumber(r.parcelsPerSecond)} vs ${formatNumber(base.parcelsPerSecond)} parcels/s)${of(r)}`);
      lines.push(`Redis CPU per parcel vs one hub (${what}): ${formatNumber(r.redisCpuRatio, 2)}× (${formatNumber(r.redisCpuUs)} vs ${formatNumber(base.redisCpuUs)} µs)${of(r)}`);
    }
    lines.push(
      `target: Redis commands per parcel ≤ ${HUBS_TARGETS.commandsPerParcel} (${what}): ${formatNumber(r.commands, 1)} — ${verdict(r.commands <= HUBS_TARGETS.commandsPerParcel)}` +
        (r.hubs > 1 && base ? `; one hub: ${formatNumber(base.commands, 1)}` : '') +
        ` (INFO commandstats of all primaries: commands a Lua script runs count too)${of(r)}`,
    );
    const top = Object.entries(r.commandsByName)
      .sort((a, b) => b[1] - a[1])
      .slice(0, TOP_COMMANDS);
    lines.push(`commands per parcel by name (${what}): ${top.map(([name, n]) => `${name} ${formatNumber(n, 2)}`).join(', ')}`);
    const perHub = r.hubCpuUs / r.hubs;
    lines.push(
      `idle hub (no clients) CPU per parcel (${what}): ${formatNumber(r.idleHubCpuUs, 1)} µs, ${formatNumber((r.idleHubCpuUs / perHub) * 100)}% of a serving hub's ${formatNumber(perHub)} µs (should be ~0)${of(r)}`,
    );
    const ceiling = projectedCeiling(r.redisCpuUs, r.primaries);
    const spread = r.primaries > 1 ? `; here the busiest primary had ${formatNumber(Math.max(...r.primaryCpuShares) * 100)}% of Redis's CPU (shares ${r.primaryCpuShares.map((s) => `${formatNumber(s * 100)}%`).join(' / ')})` : '';
    lines.push(
      `projected ceiling per shard (${what}): 1e6 / ${formatNumber(r.redisCpuUs)} µs = ${formatNumber(ceiling.perPrimary)} parcels/s per Redis primary` +
        (r.primaries > 1 ? `, ×${r.primaries} primaries = ${formatNumber(ceiling.total)} parcels/s` : '') +
        ` (assumes Redis single-threaded and CPU-bound${r.primaries > 1 ? ', the stores spread evenly over the primaries' : ''}; appendfsync always)${spread}`,
    );
  }
  if (rows.length > 0 && cpus < most + 3) {
    lines.push(`note: ${most} hub${most === 1 ? '' : 's'}, the idle hub, Redis and the load generator share this machine's ${cpus} CPUs: throughput is bounded by the machine; the per-parcel figures are the ones to compare`);
  }
  const busy = rows.reduce((n, r) => n + r.busyBacklogLines, 0);
  if (busy > 0) lines.push(`note: the hubs logged ${formatNumber(busy)} 'WARN BACKLOG queue=driver ... waiting="drivers busy"' lines in all (a single SQLite hub logs them too under a closed loop): not listed`);
  for (const r of rows) {
    const what = runLabel(r);
    if (r.loop === 'open' && r.rate !== undefined && r.parcelsPerSecond < r.rate * SATURATED)
      lines.push(`warning: ${what} delivered ${formatNumber(r.parcelsPerSecond)} of the ${formatNumber(r.rate)} parcels/s offered: saturated; its per-parcel figures include work on parcels not delivered within the window`);
    if (r.errors > 0) lines.push(`warning: ${what} had ${r.errors} errors; first: ${r.firstError ?? '?'}`);
    if (!(r.parcels > 0)) lines.push(`warning: ${what} delivered no parcel in the measured window`);
    if (r.loadCpu > 0.9) lines.push(`warning: the load generator used ${formatNumber(r.loadCpu * 100)}% of a core in ${what}: it may be the limit, not the hubs`);
    if (r.otherCpu > OTHERS_WARNING)
      lines.push(`warning: processes outside the run kept ${formatNumber(r.otherCpu * 100)}% of this machine's CPU busy during ${what}${r.rounds > 1 ? ' (median of its rounds)' : ''}: its figures are not comparable`);
    if (r.steal > STEAL_WARNING) lines.push(`warning: the hypervisor took ${formatNumber(r.steal * 100, 1)}% of this machine's CPU time during ${what}: its figures are not comparable`);
  }
  // the same kind of hub log line in many runs: one line, with the runs it came up in
  const kinds = new Map<string, { runs: string[]; count: number; first: string }>();
  for (const r of rows) {
    for (const w of r.hubWarnings) {
      const match = /^hub \d+: (.*?) ×(\d+); first: (.*)$/.exec(w);
      const kind = match?.[1] ?? w.replace(/^hub \d+: /, '');
      const seen = kinds.get(kind) ?? { runs: [], count: 0, first: match?.[3] ?? w };
      if (!seen.runs.includes(runLabel(r))) seen.runs.push(runLabel(r));
      seen.count += Number(match?.[2] ?? 1);
      kinds.set(kind, seen);
    }
  }
  for (const [kind, { runs, count, first }] of kinds) lines.push(`warning: hub logs: ${kind} ×${count} (${runs.join('; ')}); first: ${first}`);
  return lines;
}
