import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { UsageError } from '../cli/args.js';
import { parseFlags } from '../cli/args.js';
import { benchCommand, formatTable, ratiosOf, verdictLines } from '../bench/bench.js';
import type { RunResult } from '../bench/bench.js';
import { cpuShare, cpuTicksOf, percentile, ratio, statusKb, summarize } from '../bench/stats.js';
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
});

describe('caps bench flags', () => {
  it('runs every target by default, the relay first', () => {
    expect(parseTargets(undefined, undefined)).toEqual(['relay', 'memory', 'sqlite']);
    expect(parseTargets('sqlite', undefined)).toEqual(['relay', 'sqlite']);
    expect(parseTargets(undefined, 'memory')).toEqual(['relay', 'memory']);
  });

  it('refuses redis (not measured yet) and unknown targets with a usage error', () => {
    expect(() => parseTargets(undefined, 'redis')).toThrow(UsageError);
    expect(() => parseTargets(undefined, 'redis')).toThrow(/does not measure the redis store yet/);
    expect(() => parseTargets('relay,redis', undefined)).toThrow(/does not measure the redis store yet/);
    expect(() => parseTargets('postgres', undefined)).toThrow(/unknown target/);
    expect(() => parseTargets(',', undefined)).toThrow(/names no target/);
  });

  it('has defaults that make a default run short, and bounds on every number', () => {
    const flags = parseFlags(benchCommand, []);
    expect(flags).toMatchObject({ vendors: 4, drivers: 4, inflight: 16, rate: 1000, seconds: 8, warmup: 2, out: 'bench-results' });
    expect(flags.connections).toBeUndefined();
    expect(() => parseFlags(benchCommand, ['--vendors', '0'])).toThrow(UsageError);
    expect(parseFlags(benchCommand, ['--connections', '10000']).connections).toBe(10_000);
  });
});

describe('the bench table', () => {
  const run = (target: RunResult['target'], parcelsPerSecond: number, p99: number, loop: RunResult['loop'] = 'closed'): RunResult => ({
    target,
    loop,
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
    const results = [run('relay', 1000, 10), run('memory', 800, 20), run('sqlite', 400, 30), run('relay', 1000, 2, 'open'), run('sqlite', 1000, 4, 'open')];
    expect(ratiosOf(results[2] as RunResult, results)).toEqual({ throughputRatio: 0.4, p99Ratio: 3 });
    expect(ratiosOf(results[4] as RunResult, results)).toEqual({ throughputRatio: 1, p99Ratio: 2 });
    const table = formatTable(results);
    expect(table).toContain('0.80×');
    const verdicts = verdictLines(results, 1000);
    expect(verdicts).toContain('target: CAPS sqlite ≥ 0.5× relay parcels/s: 0.40× — MISSED');
    expect(verdicts).toContain('target: CAPS memory ≥ 0.7× relay parcels/s: 0.80× — met');
    expect(verdicts).toContain('target: CAPS sqlite open loop 1000/s p99 < 5 ms: 4.00 ms — met');
  });
});

describe('caps bench on the command line', () => {
  it('says in --help that redis is not measured, and refuses it with exit code 2', async () => {
    const { runCli } = await import('./helpers/cli.js');
    const help = await runCli(['bench', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('redis is not measured by the bench yet');
    const refused = await runCli(['bench', '--store', 'redis']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('the bench does not measure the redis store yet');
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

  it('counts the WAL pages a fixed workload writes through the SQLite store', async () => {
    const { code, stdout } = await run(['--parcels', '200']);
    expect(code).toBe(0);
    const m = /^200 parcels, (\d+) commits: (\d+) WAL pages, ([\d.]+) per parcel, ([\d.]+) per commit;/.exec(stdout);
    expect(m, stdout).not.toBeNull();
    const [commits, pages, perParcel] = [Number(m?.[1]), Number(m?.[2]), Number(m?.[3])];
    expect(commits).toBeGreaterThan(0);
    expect(commits).toBeLessThan(200);
    expect(perParcel).toBeCloseTo(pages / 200, 2);
  });

  it('refuses an unknown flag with exit 2', async () => {
    const { code, stderr } = await run(['--bogus']);
    expect(code).toBe(2);
    expect(stderr).toContain('unknown flag --bogus');
  });
});
