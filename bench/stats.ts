/** The arithmetic of a benchmark run: percentiles, rates and ratios. Pure, so it is tested alone. */

/**
 * The p-th percentile (0..100) of `values` by the nearest-rank method: the smallest value with at
 * least p% of the values at or below it. `sorted` must be ascending. NaN when empty.
 */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  if (p <= 0) return sorted[0] ?? Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, rank) - 1] ?? Number.NaN;
}

export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/** Summarises latencies in milliseconds (sorts a copy). */
export function summarize(values: readonly number[]): LatencySummary {
  const sorted = Float64Array.from(values).sort();
  const arr = Array.from(sorted);
  let sum = 0;
  for (const v of arr) sum += v;
  return {
    count: arr.length,
    p50: percentile(arr, 50),
    p90: percentile(arr, 90),
    p99: percentile(arr, 99),
    max: arr.length > 0 ? (arr[arr.length - 1] ?? Number.NaN) : Number.NaN,
    mean: arr.length > 0 ? sum / arr.length : Number.NaN,
  };
}

/** `value / baseline`, or NaN when there is no usable baseline. */
export function ratio(value: number, baseline: number | undefined): number {
  if (baseline === undefined || !Number.isFinite(value) || !Number.isFinite(baseline) || baseline <= 0) return Number.NaN;
  return value / baseline;
}

/** CPU time between two `/proc/<pid>/stat` samples as a share of one core (1 = one core busy). */
export function cpuShare(beforeTicks: number, afterTicks: number, wallMs: number, ticksPerSecond = 100): number {
  if (wallMs <= 0) return Number.NaN;
  return (afterTicks - beforeTicks) / ticksPerSecond / (wallMs / 1000);
}

/** utime + stime, in clock ticks, from the text of `/proc/<pid>/stat`. */
export function cpuTicksOf(statText: string): number {
  // the command name (field 2) is in parentheses and may hold spaces: count fields after the last ')'
  const rest = statText.slice(statText.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime and stime are fields 14 and 15
  return Number(rest[11]) + Number(rest[12]);
}

/** The machine's CPU time, in clock ticks: all of it, and what its hypervisor took (steal). */
export interface MachineTicks {
  total: number;
  steal: number;
  /** user + nice + system: the time processes kept the cores busy. */
  busy: number;
}

/**
 * The machine's CPU time from `/proc/stat`'s first (`cpu `) line (user nice system idle iowait irq
 * softirq steal ...), in clock ticks: all of it, the hypervisor's steal, and what processes kept
 * busy (user, nice, system: not idle, iowait, steal, nor irq and softirq, which the kernel does not
 * charge to a process, so that the run's own loopback traffic is not counted as another's).
 */
export function machineTicksOf(statText: string): MachineTicks | undefined {
  const line = statText.split('\n').find((l) => l.startsWith('cpu '));
  if (!line) return undefined;
  // guest and guest_nice (fields 9 and 10) are already counted in user and nice
  const fields = line.trim().split(/\s+/).slice(1, 9).map(Number);
  if (fields.length < 8 || fields.some((n) => !Number.isFinite(n))) return undefined;
  return { total: fields.reduce((a, b) => a + b, 0), steal: fields[7] ?? 0, busy: (fields[0] ?? 0) + (fields[1] ?? 0) + (fields[2] ?? 0) };
}

/** The hypervisor's share of the machine's CPU time between two samples; NaN without two usable ones. */
export function stealShare(before: MachineTicks | undefined, after: MachineTicks | undefined): number {
  if (!before || !after || after.total <= before.total) return Number.NaN;
  return (after.steal - before.steal) / (after.total - before.total);
}

/** A `VmHWM:` or `VmRSS:` line of `/proc/<pid>/status`, in bytes. */
export function statusKb(statusText: string, field: 'VmHWM' | 'VmRSS'): number {
  const match = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(statusText);
  return match?.[1] ? Number(match[1]) * 1024 : Number.NaN;
}

/** "1234.5" → "1,235"; NaN → "–". */
export function formatNumber(n: number, digits = 0): string {
  if (!Number.isFinite(n)) return '–';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** `calls=` of each command in the text of `INFO commandstats` (`cmdstat_xadd:calls=3,usec=...`), by lower-case name. */
export function commandCallsOf(infoText: string): Map<string, number> {
  const calls = new Map<string, number>();
  for (const match of infoText.matchAll(/^cmdstat_([^:\s]+):calls=(\d+)/gm)) {
    const name = match[1];
    if (name !== undefined) calls.set(name.toLowerCase(), Number(match[2]));
  }
  return calls;
}

/** A number field (`used_memory:1234`) of the text of `INFO`; NaN when missing. */
export function infoNumber(infoText: string, field: string): number {
  const match = new RegExp(`^${field}:(\\d+(?:\\.\\d+)?)\\r?$`, 'm').exec(infoText);
  return match?.[1] !== undefined ? Number(match[1]) : Number.NaN;
}

/** Each command's calls in `after` less those in `before` (a command first seen in `after` counts from 0). */
export function callsDelta(before: ReadonlyMap<string, number>, after: ReadonlyMap<string, number>): Map<string, number> {
  const delta = new Map<string, number>();
  for (const [name, n] of after) {
    const d = n - (before.get(name) ?? 0);
    if (d > 0) delta.set(name, d);
  }
  return delta;
}

/** CPU time in clock ticks (100 per second) as microseconds per item; NaN without items. */
export function ticksPerItemUs(ticks: number, items: number, ticksPerSecond = 100): number {
  if (!(items > 0) || !Number.isFinite(ticks)) return Number.NaN;
  return (ticks / ticksPerSecond) * 1e6 / items;
}

/**
 * The share of the machine's CPU time (all cores) that processes other than `oursTicks` kept busy
 * between two samples: another job on the machine makes a run's figures not comparable. NaN without two samples.
 */
export function othersShare(before: { total: number; busy: number } | undefined, after: { total: number; busy: number } | undefined, oursTicks: number): number {
  if (!before || !after || after.total <= before.total) return Number.NaN;
  return Math.max(0, (after.busy - before.busy - oursTicks) / (after.total - before.total));
}
