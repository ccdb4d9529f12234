import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { groupWarnings } from '../bench/hubs.js';
import type { HubsRun } from '../bench/hubs-summary.js';
import { formatHubsTable, hubsMedians, hubsVerdicts, projectedCeiling, rateHubs, windowCommands } from '../bench/hubs-summary.js';
import { grewWith } from '../bench/idle-stores.js';
import { PROBE_CALLS } from '../bench/redis-probe.js';
import { machineTicksOf, callsDelta, commandCallsOf, infoNumber, othersShare, ticksPerItemUs } from '../bench/stats.js';
import { runCli } from './helpers/cli.js';

const latency = { count: 10, p50: 5, p90: 8, p99: 10, max: 12, mean: 6 };

function run(hubs: number, round: number, figures: Partial<HubsRun> = {}): HubsRun {
  return {
    redis: 'single',
    primaries: 1,
    hubs,
    loop: 'closed',
    round,
    parcelsPerSecond: 400,
    latencyMs: latency,
    parcels: 800,
    delivered: 1200,
    hubCpuUs: 1000,
    idleHubCpuUs: 0,
    redisCpuUs: 500,
    primaryCpuShares: [1],
    commands: 40,
    commandsByName: { evalsha: 6, xadd: 6 },
    bytesPerParcel: 2000,
    loadCpu: 0.2,
    steal: 0,
    otherCpu: 0.01,
    errors: 0,
    outstanding: 64,
    hubWarnings: [],
    busyBacklogLines: 0,
    ...figures,
  };
}

describe('bench arithmetic for several hubs', () => {
  it('reads INFO commandstats and memory, and takes the delta of two samples', () => {
    const info = '# Memory\r\nused_memory:123456\r\nused_memory_human:120.56K\r\n# Commandstats\r\ncmdstat_evalsha:calls=10,usec=500,usec_per_call=50.00,rejected_calls=0,failed_calls=0\r\ncmdstat_XADD:calls=30,usec=90\r\n';
    const calls = commandCallsOf(info);
    expect([...calls]).toEqual([
      ['evalsha', 10],
      ['xadd', 30],
    ]);
    expect(infoNumber(info, 'used_memory')).toBe(123456);
    expect(infoNumber(info, 'maxmemory')).toBeNaN();
    expect([...callsDelta(new Map([['xadd', 10]]), new Map([['xadd', 25], ['hset', 3]]))]).toEqual([
      ['xadd', 15],
      ['hset', 3],
    ]);
    expect(ticksPerItemUs(50, 1000)).toBe(500); // 0.5 s of CPU over 1000 parcels
    expect(ticksPerItemUs(50, 0)).toBeNaN();
  });

  it('counts the commands of every primary in the window, leaving out the bench’s own INFO', () => {
    const start = { calls: [new Map([['info', 3], ['xadd', 10]]), new Map([['info', 1]])], usedMemory: [0, 0] };
    const end = { calls: [new Map([['info', 4], ['xadd', 40], ['evalsha', 10]]), new Map([['info', 3], ['hset', 5]])], usedMemory: [0, 0] };
    const w = windowCommands(start, end, PROBE_CALLS);
    // primary 1: 30 xadd + 10 evalsha (its one INFO was the bench's); primary 2: 5 hset + 1 INFO of a hub's
    expect(w.perPrimary).toEqual([40, 6]);
    expect(w.total).toBe(46);
    expect(Object.fromEntries(w.byName)).toEqual({ xadd: 30, evalsha: 10, hset: 5, info: 1 });
  });

  it('takes each ratio to the one-hub run of the same round, then the median over rounds', () => {
    const runs = [
      run(1, 1, { hubCpuUs: 1000, parcelsPerSecond: 400 }),
      run(2, 1, { hubCpuUs: 1100, parcelsPerSecond: 600, idleHubCpuUs: 50 }),
      run(1, 2, { hubCpuUs: 2000, parcelsPerSecond: 200 }),
      run(2, 2, { hubCpuUs: 3000, parcelsPerSecond: 240, idleHubCpuUs: 70 }),
      run(1, 3, { hubCpuUs: 1000, parcelsPerSecond: 400 }),
      run(2, 3, { hubCpuUs: 1300, parcelsPerSecond: 480, idleHubCpuUs: 60 }),
    ];
    const rated = rateHubs(runs);
    expect(rated.map((r) => r.hubCpuRatio)).toEqual([1, 1.1, 1, 1.5, 1, 1.3]);
    const rows = hubsMedians(rated);
    expect(rows).toHaveLength(2);
    const two = rows[1];
    expect(two).toMatchObject({ hubs: 2, rounds: 3, hubCpuRatio: 1.3, throughputRatio: 1.2, hubCpuUs: 1300, idleHubCpuUs: 60, parcels: 2400 });
    const verdicts = hubsVerdicts(rows, 8);
    expect(verdicts).toContain("target: hub CPU per parcel ≤ 1.2× one hub's (2 hubs on redis, closed loop): 1.30× (1,300 vs 1,000 µs) — MISSED (median of 3 rounds)");
    expect(verdicts).toContain('target: Redis commands per parcel ≤ 12 (2 hubs on redis, closed loop): 40.0 — MISSED; one hub: 40.0 (INFO commandstats of all primaries: commands a Lua script runs count too) (median of 3 rounds)');
    expect(verdicts.some((l) => l.startsWith('projected ceiling per shard (2 hubs on redis, closed loop): 1e6 / 500 µs = 2,000 parcels/s per Redis primary'))).toBe(true);
    expect(verdicts.some((l) => l.startsWith('idle hub (no clients) CPU per parcel (2 hubs on redis, closed loop): 60.0 µs, 9% of a serving hub'))).toBe(true);
    const table = formatHubsTable(rows);
    expect(table).toMatch(/^2 hubs, redis, closed +480 +1\.20× +5\.00 +10\.00 +1,300 +1\.30× +60\.0 +500 +1\.00× +40\.0 +2,000 +20% +0\.0% +1% +0$/m);
  });

  it('tells what other processes kept the machine busy with, from /proc/stat', () => {
    const before = machineTicksOf('cpu  100 0 50 800 10 0 5 35 20 0\n');
    const after = machineTicksOf('cpu  300 0 150 1300 10 0 5 35 0 0\n');
    // user + nice + system; idle, iowait, irq, softirq and steal left out
    expect(before).toEqual({ total: 1000, busy: 150, steal: 35 });
    expect(after).toEqual({ total: 1800, busy: 450, steal: 35 });
    // 300 ticks busy in 800, 100 of them the run's own
    expect(othersShare(before, after, 100)).toBe(0.25);
    expect(othersShare(before, after, 400)).toBe(0);
    expect(othersShare(undefined, after, 0)).toBeNaN();
  });

  it('projects the ceiling of one primary and of a cluster whose stores spread evenly', () => {
    expect(projectedCeiling(250, 1)).toEqual({ perPrimary: 4000, total: 4000 });
    expect(projectedCeiling(250, 3)).toEqual({ perPrimary: 4000, total: 12000 });
    expect(projectedCeiling(0, 3).perPrimary).toBeNaN();
  });

  it('groups the hubs’ warnings by kind, without the open lab mode’s', () => {
    const log = [
      'WARN OPEN LAB MODE (--allow-anonymous): anyone',
      'EVENT: pickup',
      'WARN BACKLOG queue=driver depth=16 waiting="drivers busy"',
      'WARN BACKLOG queue=driver depth=64 waiting="drivers busy"',
      'WARN BACKLOG queue=bench-store-1 depth=1 waiting="no vendor online"',
      'ERROR PICKUP READ FAILED error="x"',
      'STOPPING signal=SIGTERM',
      'WARN PICKUP READ FAILED error="Redis: Connection is closed."',
    ].join('\n');
    expect(groupWarnings(2, log)).toEqual({
      lines: [
        'hub 2: WARN BACKLOG ×1; first: WARN BACKLOG queue=bench-store-1 depth=1 waiting="no vendor online"',
        'hub 2: ERROR PICKUP READ FAILED ×1; first: ERROR PICKUP READ FAILED error="x"',
        'hub 2: WARN PICKUP READ FAILED (while stopping) ×1; first: WARN PICKUP READ FAILED error="Redis: Connection is closed."',
      ],
      busyBacklog: 2,
    });
    expect(groupWarnings(1, 'WARN OPEN LAB MODE (--allow-anonymous): x\nLISTENING')).toEqual({ lines: [], busyBacklog: 0 });
  });

  it('says an idle cost grew only past its share and its noise floor', () => {
    expect(grewWith(30, 35, 2)).toBe(false);
    expect(grewWith(30, 39, 2)).toBe(true);
    expect(grewWith(0, 3, 4)).toBe(false);
  });
});

/** A number as the bench prints it: 1,234 or 12.5 or 1.20. */
const NUM = String.raw`[\d,]+(?:\.\d+)?`;

describe('caps bench --store redis --hubs on the command line', () => {
  async function bench(args: readonly string[], timeoutMs: number): Promise<{ stdout: string; json: { runs: Array<{ hubs: number; parcels: number; errors: number; commands: number; hubCpuUs: number }> } }> {
    const out = mkdtempSync(join(tmpdir(), 'caps-bench-hubs-'));
    try {
      const result = await runCli(['bench', '--store', 'redis', ...args, '--seconds', '2', '--warmup', '0', '--rate', '0', '--repeat', '1', '--out', out], { timeoutMs });
      expect(result.code, result.output).toBe(0);
      // every run's folder (Redis, the hubs' data and logs) is gone; only logs with warnings stay, under hub-logs
      expect(readdirSync(out).filter((f) => f.startsWith('data-'))).toEqual([]);
      return { stdout: result.stdout, json: JSON.parse(readFileSync(join(out, 'hubs.json'), 'utf8')) };
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }

  // one Redis or a cluster: the same runs and lines; the cluster is the one with more to go wrong
  it('runs one hub and two hubs on a Redis Cluster of three primaries (caps hub --redis-cluster) and prints the costs per parcel and their ratios', async () => {
    const { stdout, json } = await bench(['--hubs', '2', '--cluster'], 90_000);
    expect(stdout).toMatch(new RegExp(`^1 hub, redis cluster ×3, closed +${NUM} +1\\.00×`, 'm'));
    expect(stdout).toMatch(new RegExp(`^2 hubs, redis cluster ×3, closed +${NUM} +${NUM}× +${NUM} +${NUM} +${NUM} +${NUM}×`, 'm'));
    expect(stdout).toMatch(new RegExp(`^idle hub \\(no clients\\) CPU per parcel \\(2 hubs on redis cluster ×3, closed loop\\): ${NUM} µs`, 'm'));
    expect(json.runs.map((r) => r.hubs)).toEqual([1, 2]);
    expect(json.runs.filter((r) => !(r.commands > 0) || !(r.hubCpuUs > 0)), 'runs that measured nothing').toEqual([]);
    expect(stdout).toMatch(new RegExp(`^target: hub CPU per parcel ≤ 1\\.2× one hub's \\(2 hubs on redis cluster ×3, closed loop\\): ${NUM}×`, 'm'));
    expect(stdout).toMatch(new RegExp(`^target: Redis commands per parcel ≤ 12 \\(2 hubs on redis cluster ×3, closed loop\\): ${NUM} — `, 'm'));
    expect(stdout).toMatch(new RegExp(`^projected ceiling per shard \\(2 hubs on redis cluster ×3, closed loop\\): 1e6 / ${NUM} µs = ${NUM} parcels/s per Redis primary, ×3 primaries = ${NUM} parcels/s`, 'm'));
    expect(json.runs.filter((r) => !(r.parcels > 0) || r.errors > 0), 'runs that carried nothing or had errors').toEqual([]);
  }, 90_000);

  it('measures an idle hub with no stores and with stores seeded in Redis', async () => {
    const out = mkdtempSync(join(tmpdir(), 'caps-bench-idle-'));
    try {
      const result = await runCli(['bench', '--store', 'redis', '--idle-stores', '200', '--warmup', '0', '--out', out], { timeoutMs: 60_000 });
      expect(result.code, result.output).toBe(0);
      expect(result.stdout).toMatch(new RegExp(`^idle, 0 stores: ${NUM} Redis commands/s, hub CPU ${NUM} ms/s, Redis CPU ${NUM} ms/s`, 'm'));
      expect(result.stdout).toMatch(new RegExp(`^idle, 200 stores: ${NUM} Redis commands/s, hub CPU ${NUM} ms/s, Redis CPU ${NUM} ms/s; seeded in ${NUM} s, ${NUM} B of Redis memory per store`, 'm'));
      expect(result.stdout).toMatch(/^target: an idle hub's cost does not grow with the stores \(200 vs none\): .* — (met|MISSED)/m);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 60_000);

  it('refuses --hubs, --cluster and --idle-stores without --store redis, and --hubs past 8', async () => {
    for (const args of [['--cluster'], ['--store', 'sqlite', '--idle-stores', '10']]) {
      const refused = await runCli(['bench', ...args]);
      expect(refused.code, args.join(' ')).toBe(2);
      expect(refused.stderr).toContain('needs --store redis');
    }
    const tooMany = await runCli(['bench', '--store', 'redis', '--hubs', '9']);
    expect(tooMany.code).toBe(2);
    expect(tooMany.stderr).toContain('--hubs');
  });
});
