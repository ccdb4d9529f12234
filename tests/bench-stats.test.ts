import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { UsageError } from '../cli/args.js';
import { parseFlags } from '../cli/args.js';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchCommand, formatTable, verdictLines } from '../bench/bench.js';
import type { RunResult } from '../bench/bench.js';
import { cpuShare, cpuTicksOf, machineTicksOf, percentile, ratio, statusKb, stealShare, summarize } from '../bench/stats.js';
import { median, mediansOfRounds, rate } from '../bench/summary.js';
import { parseTargets } from '../bench/targets.js';

describe('bench statistics', () => {
  it('takes percentiles by nearest rank', () => {
    const values = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(values, 50)).toBe(50);
    expect(percentile(values, 90)).toBe(90);
    expect(percentile(values, 99)).toBe(99);
    expect(percentile(values, 100)).toBe(100);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([], 50)).toBeNaN();
  });

  it('summarises unsorted latencies without changing them', () => {
    const values = [5, 1, 4, 2, 3];
    const s = summarize(values);
    expect(s).toMatchObject({ count: 5, p50: 3, p99: 5, max: 5, mean: 3 });
    expect(values).toEqual([5, 1, 4, 2, 3]);
    expect(summarize([]).count).toBe(0);
  });

  it('gives a ratio only against a usable baseline', () => {
    expect(ratio(50, 100)).toBe(0.5);
    expect(ratio(50, 0)).toBeNaN();
    expect(ratio(Number.NaN, 10)).toBeNaN();
  });

  it('reads CPU ticks and memory from /proc text', () => {
    const stat = '1234 (node my app) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 11';
    expect(cpuTicksOf(stat)).toBe(300);
    expect(cpuShare(100, 200, 2_000)).toBe(0.5);
    expect(statusKb('Name:\tnode\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n', 'VmHWM')).toBe(2048 * 1024);
    expect(statusKb('Name:\tnode\n', 'VmRSS')).toBeNaN();
  });

  it('reads the hypervisor’s share of the machine (steal) from /proc/stat text', () => {
    const before = machineTicksOf('cpu  100 0 50 800 10 0 5 35 20 0\ncpu0 50 0 25 400 5 0 2 18 10 0\n');
    const after = machineTicksOf('cpu  200 0 100 1500 10 0 10 80 40 0\n');
    expect(before).toEqual({ total: 1000, steal: 35, busy: 150 });
    expect(stealShare(before, after)).toBeCloseTo(45 / 900, 10);
    expect(stealShare(after, after)).toBeNaN();
    expect(machineTicksOf('intr 1 2 3\n')).toBeUndefined();
  });

  it('takes the median of the values that were measured (of an even count, the mean of the middle two)', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([Number.NaN, 5])).toBe(5);
    expect(median([])).toBeNaN();
  });
});

describe('caps bench flags', () => {
  it('runs the relay, memory and sqlite by default, the relay first; redis when asked', () => {
    expect(parseTargets(undefined, undefined)).toEqual(['relay', 'memory', 'sqlite']);
    expect(parseTargets('sqlite', undefined)).toEqual(['relay', 'sqlite']);
    expect(parseTargets(undefined, 'memory')).toEqual(['relay', 'memory']);
    expect(parseTargets(undefined, 'redis')).toEqual(['relay', 'redis']);
    expect(parseTargets('redis,memory', 'sqlite')).toEqual(['relay', 'memory', 'sqlite', 'redis']);
  });

  it('refuses unknown targets and stores with a usage error', () => {
    expect(() => parseTargets('postgres', undefined)).toThrow(UsageError);
    expect(() => parseTargets('postgres', undefined)).toThrow(/unknown target 'postgres'; pick from relay, memory, sqlite, redis/);
    expect(() => parseTargets(undefined, 'relay')).toThrow(/--store must be one of memory, sqlite, redis/);
    expect(() => parseTargets(',', undefined)).toThrow(/names no target/);
  });

  it('has defaults that make a default run short, and bounds on every number', () => {
    const flags = parseFlags(benchCommand, []);
    expect(flags).toMatchObject({ vendors: 4, drivers: 4, inflight: 16, rate: 1000, seconds: 8, warmup: 2, repeat: 1, out: 'bench-results' });
    expect(() => parseFlags(benchCommand, ['--repeat', '0'])).toThrow(UsageError);
    expect(flags.connections).toBeUndefined();
    expect(() => parseFlags(benchCommand, ['--vendors', '0'])).toThrow(UsageError);
    expect(parseFlags(benchCommand, ['--connections', '10000']).connections).toBe(10_000);
  });
});

describe('the bench table', () => {
  const run = (target: RunResult['target'], parcelsPerSecond: number, p99: number, loop: RunResult['loop'] = 'closed', round = 1): RunResult => ({
    target,
    loop,
    round,
    parcelsPerSecond,
    eventsPerSecond: parcelsPerSecond * 6,
    latencyMs: { count: 10, p50: p99 / 2, p90: p99, p99, max: p99, mean: p99 / 2 },
    serverCpu: 1,
    loadCpu: 0.5,
    serverPeakRssBytes: 64 * 1024 * 1024,
    errors: 0,
    outstanding: 0,
    ...(loop === 'open' ? { rate: 1000 } : {}),
  });

  it('states each figure as a ratio to the relay of the same loop, and the targets met or missed', () => {
    const results = rate([run('relay', 1000, 10), run('memory', 800, 20), run('sqlite', 400, 30), run('relay', 1000, 2, 'open'), run('sqlite', 1000, 4, 'open')]);
    expect(results[2]).toMatchObject({ throughputRatio: 0.4, p99Ratio: 3, rounds: 1 });
    expect(results[4]).toMatchObject({ throughputRatio: 1, p99Ratio: 2 });
    const table = formatTable(results);
    expect(table).toContain('0.80×');
    const verdicts = verdictLines(results, 1000);
    expect(verdicts).toContain('target: CAPS sqlite ≥ 0.5× relay parcels/s: 0.40× — MISSED');
    expect(verdicts).toContain('target: CAPS memory ≥ 0.7× relay parcels/s: 0.80× — met');
    expect(verdicts).toContain('target: CAPS sqlite open loop 1000/s p99 < 5 ms: 4.00 ms — met');
  });

  it('with several rounds: each ratio within its round, then the median of each figure', () => {
    // the relay was fast in round 2 and sqlite with it: the ratio of medians (600/1000) would hide that
    const runs = rate([
      run('relay', 800, 10, 'closed', 1), run('sqlite', 320, 30, 'closed', 1),
      run('relay', 1600, 8, 'closed', 2), run('sqlite', 960, 20, 'closed', 2),
      run('relay', 1000, 12, 'closed', 3), run('sqlite', 500, 40, 'closed', 3),
    ]);
    const rows = mediansOfRounds(runs);
    expect(rows.map((r) => [r.target, r.rounds, r.parcelsPerSecond])).toEqual([['relay', 3, 1000], ['sqlite', 3, 500]]);
    expect(rows[1]).toMatchObject({ throughputRatio: 0.5, throughputRange: [0.4, 0.6], p99Ratio: 3 });
    expect(verdictLines(rows, 1000)).toContain('target: CAPS sqlite ≥ 0.5× relay parcels/s: 0.50× — met (median of 3 rounds; 0.40–0.60×)');
  });

  it('warns about a run whose machine lost CPU time to its hypervisor', () => {
    const rows = rate([{ ...run('relay', 1000, 10), steal: 0.12 }, run('sqlite', 500, 20)]);
    expect(formatTable(rows)).toContain('12.0%');
    expect(verdictLines(rows, 1000)).toContain("warning: the hypervisor took 12.0% of this machine's CPU time during bare relay (closed): its figures are not comparable");
  });
});

describe('caps bench on the command line', () => {
  it('runs the relay, sqlite and redis (a redis-server of its own) in both loops, and writes the table, JSON and chart', async () => {
    const { runCli } = await import('./helpers/cli.js');
    const out = mkdtempSync(join(tmpdir(), 'caps-bench-'));
    try {
      const result = await runCli(['bench', '--targets', 'sqlite,redis', '--seconds', '1', '--warmup', '0', '--inflight', '2', '--rate', '100', '--out', out], { timeoutMs: 90_000 });
      expect(result.code, result.stderr).toBe(0);
      for (const row of ['bare relay, closed', 'CAPS sqlite, closed', 'CAPS redis, closed', 'bare relay, open 100/s', 'CAPS sqlite, open 100/s', 'CAPS redis, open 100/s']) {
        expect(result.stdout).toMatch(new RegExp(`^${row} +[\\d,]+ +[\\d.]+×`, 'm'));
      }
      expect(result.stdout).toContain('target: CAPS sqlite open loop 1000/s p99 < 5 ms:');
      const json = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as { results: Array<{ target: string; loop: string; parcelsPerSecond: number; errors: number }> };
      expect(json.results.map((r) => `${r.target}/${r.loop}`)).toEqual(['relay/closed', 'sqlite/closed', 'redis/closed', 'relay/open', 'sqlite/open', 'redis/open']);
      expect(json.results.filter((r) => !(r.parcelsPerSecond > 0) || r.errors > 0), 'runs that carried nothing or had errors').toEqual([]);
      expect(readFileSync(join(out, 'chart.svg'), 'utf8')).toContain('CAPS redis');
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 120_000);

  it('refuses an unknown store with exit code 2, naming the choices', async () => {
    const { runCli } = await import('./helpers/cli.js');
    const refused = await runCli(['bench', '--store', 'postgres']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('--store must be one of memory, sqlite, redis');
  });
});

describe('node dist/bench/sqlite-pages.js', () => {
  const script = fileURLToPath(new URL('../dist/bench/sqlite-pages.js', import.meta.url));
  const run = (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      execFile(process.execPath, [script, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
      });
    });

  it('counts the WAL pages a fixed workload writes through the SQLite storage', async () => {
    const { code, stdout } = await run(['--parcels', '200']);
    expect(code).toBe(0);
    const m = /^200 parcels, (\d+) commits: (\d+) WAL pages, ([\d.]+) per parcel, ([\d.]+) per commit;/.exec(stdout);
    expect(m, stdout).not.toBeNull();
    const [commits, pages, perParcel] = [Number(m?.[1]), Number(m?.[2]), Number(m?.[3])];
    expect(commits).toBeGreaterThan(0);
    expect(commits).toBeLessThan(200);
    // printed with two decimals: at most half a hundredth off (0.605 prints as 0.60)
    expect(Math.abs(perParcel - pages / 200)).toBeLessThanOrEqual(0.005 + 1e-9);
  });

  it('refuses an unknown flag with exit 2', async () => {
    const { code, stderr } = await run(['--bogus']);
    expect(code).toBe(2);
    expect(stderr).toContain('unknown flag --bogus');
  });
});
