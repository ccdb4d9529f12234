/**
 * `caps bench --store redis --hubs N [--cluster]`: N `caps hub` processes on one Redis (a
 * redis-server, or a Redis Cluster with --cluster), plus one hub no client connects to; vendor i
 * and driver j connect to hubs i % N and j % N, so most parcels cross hubs. Each run measures the
 * throughput, the hubs' and Redis's CPU per parcel (from /proc), Redis's commands per parcel
 * (INFO commandstats of every primary) and its memory per parcel; with N > 1 the same rounds also
 * run one hub on the same kind of Redis, the baseline of every ratio.
 */
import { cpus } from 'node:os';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FlagValues } from '../cli/args.js';
import type { benchCommand } from './bench.js';
import { drive } from './bench.js';
import type { HubsRun } from './hubs-summary.js';
import { formatHubsTable, hubsMedians, hubsVerdicts, rateHubs, redisLabel, windowCommands } from './hubs-summary.js';
import type { LoadConfig } from './protocol.js';
import { capsHubArgs, freePort, machineTicks, Progress, Running, startServer, waitListening } from './processes.js';
import type { Server } from './processes.js';
import { CLUSTER_PRIMARIES, PROBE_CALLS, RedisProbe, startRedisOf, ticksOf } from './redis-probe.js';
import type { BenchRedisSetup, RedisKind, RedisSample } from './redis-probe.js';
import { formatNumber, othersShare, ticksPerItemUs } from './stats.js';
import type { Loop } from './summary.js';

type Flags = FlagValues<typeof benchCommand>;

/** Hub log lines kept per run (WARN, ERROR, stderr). */
const WARNINGS_KEPT = 10;

export async function runHubs(flags: Flags, out: string): Promise<number> {
  const n = flags.hubs;
  const kind: RedisKind = flags.cluster ? 'cluster' : 'single';
  const primaries = kind === 'cluster' ? CLUSTER_PRIMARIES : 1;
  const loops: Loop[] = [...(flags.inflight > 0 ? (['closed'] as const) : []), ...(flags.rate > 0 ? (['open'] as const) : [])];
  if (loops.length === 0) {
    process.stderr.write('caps bench: --inflight 0 and --rate 0 leave nothing to run\n');
    return 2;
  }
  const counts = n > 1 ? [1, n] : [1];
  const started = new Date();
  process.stdout.write(
    `caps bench --hubs: ${counts.map((h) => `${h} hub${h === 1 ? '' : 's'}`).join(' and ')} (+1 idle hub with no clients) on ${kind === 'cluster' ? `a Redis Cluster of ${primaries} primaries` : 'one redis-server'} (appendfsync always), ` +
      `${flags.vendors} vendors and ${flags.drivers} drivers spread round-robin over the hubs; ` +
      `${loops.map((l) => (l === 'closed' ? `closed loop K=${flags.inflight}` : `open loop ${flags.rate}/s`)).join(' and ')}; ${flags.warmup} s warm-up + ${flags.seconds} s each` +
      (flags.repeat > 1 ? `; ${flags.repeat} rounds, medians reported` : '') +
      '\n',
  );
  const running = new Running();
  const progress = new Progress();
  const runs: HubsRun[] = [];
  try {
    for (let round = 1; round <= flags.repeat; round++) {
      for (const loop of loops) {
        for (const hubs of counts) {
          const what = `${hubs} hub${hubs === 1 ? '' : 's'}, ${redisLabel(kind, primaries)}, ${loop === 'closed' ? 'closed' : `open ${flags.rate}/s`}${flags.repeat > 1 ? `, round ${round}` : ''}`;
          let run: HubsRun;
          try {
            run = await runOnce(flags, kind, hubs, loop, round, out, running, progress, what);
          } catch (err) {
            progress.done();
            process.stderr.write(`caps bench: ${what} failed: ${err instanceof Error ? err.message : String(err)}\n`);
            return 1;
          }
          runs.push(run);
          progress.done();
          process.stdout.write(
            `${what}: ${formatNumber(run.parcelsPerSecond)} parcels/s; hub CPU ${formatNumber(run.hubCpuUs)} µs/parcel, idle hub ${formatNumber(run.idleHubCpuUs, 1)} µs/parcel; ` +
              `Redis CPU ${formatNumber(run.redisCpuUs)} µs/parcel, ${formatNumber(run.commands, 1)} commands/parcel, ${formatNumber(run.bytesPerParcel)} B/parcel` +
              (run.errors > 0 ? `; ${run.errors} errors` : '') +
              (run.hubWarnings.length > 0 ? `; ${run.hubWarnings.length} hub log warnings` : '') +
              '\n',
          );
        }
      }
    }
  } finally {
    progress.done();
    await running.close();
  }
  const rated = rateHubs(runs);
  const rows = hubsMedians(rated);
  const table = formatHubsTable(rows);
  const verdicts = hubsVerdicts(rows, cpus().length);
  process.stdout.write(`\n${table}\n${verdicts.join('\n')}\n`);
  const json = {
    started: started.toISOString(),
    command: `caps bench ${process.argv.slice(3).join(' ')}`.trim(),
    machine: { cpus: cpus().length, node: process.version },
    config: { redis: kind, primaries, hubs: n, vendors: flags.vendors, drivers: flags.drivers, inflight: flags.inflight, rate: flags.rate, seconds: flags.seconds, warmup: flags.warmup, repeat: flags.repeat },
    /** One row per hub count and loop: the median over the rounds when there were several. */
    results: rows,
    runs: rated,
    table,
    verdicts,
  };
  writeFileSync(join(out, 'hubs.json'), `${JSON.stringify(json, null, 2)}\n`);
  process.stdout.write(`results: ${join(out, 'hubs.json')}\n`);
  return 0;
}

/** `count` ports free right now on 127.0.0.1, all different (freePort closes its listener, so it may hand one out twice). */
export async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

/** `caps hub` on the bench's Redis: the bench's usual hub flags, then --redis URL or --redis-cluster NODES. */
export function redisHubArgs(port: number, dataDir: string, redis: BenchRedisSetup): string[] {
  return [...capsHubArgs(port, 'redis', dataDir), ...redis.hubArgs];
}

/** What every bench hub logs, being started in open lab mode (--allow-anonymous): not a warning about the run. */
const EXPECTED = /^WARN OPEN LAB MODE /;
/** What a hub logs under a closed loop whatever its storage (a single SQLite hub too): counted, not listed. */
const UNDER_LOAD = /^WARN BACKLOG queue=driver .*waiting="drivers busy"/;

/**
 * The WARN and ERROR lines of a hub's log, grouped by kind (`WARN BACKLOG`) with a count and the
 * first of each, those logged once the hub was stopping marked so; the open lab mode's left out and
 * the drivers-busy BACKLOG lines only counted. Pure, so it is tested alone.
 */
export function groupWarnings(hub: number, text: string): { lines: string[]; busyBacklog: number } {
  const kinds = new Map<string, { count: number; first: string }>();
  let busyBacklog = 0;
  let stopping = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('STOPPING')) stopping = true;
    if (!(line.startsWith('WARN ') || line.startsWith('ERROR ')) || EXPECTED.test(line)) continue;
    if (UNDER_LOAD.test(line)) {
      busyBacklog++;
      continue;
    }
    const kind = (/^(WARN|ERROR) [A-Z][A-Z0-9 _-]*?(?= [a-z]|$)/.exec(line)?.[0] ?? line.slice(0, 40)) + (stopping ? ' (while stopping)' : '');
    const seen = kinds.get(kind);
    if (seen) seen.count++;
    else kinds.set(kind, { count: 1, first: line });
  }
  return { lines: [...kinds].map(([kind, { count, first }]) => `hub ${hub}: ${kind} ×${count}; first: ${first}`), busyBacklog };
}

/** The hubs' log warnings (groupWarnings) and what they wrote on stderr; logs with any are kept in `keepDir`, the others removed with the run's folder. */
export function hubWarnings(logs: readonly string[], servers: readonly Server[], keepDir: string): { lines: string[]; busyBacklog: number } {
  const found: string[] = [];
  let busyBacklog = 0;
  logs.forEach((log, i) => {
    let text = '';
    try {
      text = readFileSync(log, 'utf8');
    } catch {
      return;
    }
    const grouped = groupWarnings(i + 1, text);
    busyBacklog += grouped.busyBacklog;
    const lines = [...grouped.lines, ...(servers[i]?.stderr ?? []).map((s) => `hub ${i + 1}: stderr: ${s}`)];
    if (lines.length === 0) return;
    mkdirSync(keepDir, { recursive: true });
    renameSync(log, join(keepDir, `hub-${i + 1}.log`));
    found.push(...lines);
  });
  return { lines: found.slice(0, WARNINGS_KEPT), busyBacklog };
}

async function runOnce(flags: Flags, kind: RedisKind, hubs: number, loop: Loop, round: number, out: string, running: Running, progress: Progress, name: string): Promise<HubsRun> {
  const dir = join(out, `data-hubs-${process.pid}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  running.folders.add(dir);
  progress.update(`${name}: starting Redis`);
  const redis = await startRedisOf(kind, dir);
  const stopRedis = running.add(() => redis.stop());
  const servers: Server[] = [];
  const logs: string[] = [];
  let stopHubs: (() => Promise<void>) | undefined;
  let probe: RedisProbe | undefined;
  let measured: Omit<HubsRun, 'hubWarnings' | 'busyBacklogLines'> | undefined;
  let failure: unknown;
  try {
    // the serving hubs, then the idle one
    const ports = await freePorts(hubs + 1);
    const profiles = join(out, 'profiles', `${name.replace(/[^a-z0-9]+/gi, '-')}-${Date.now()}`);
    for (const [i, port] of ports.entries()) {
      const log = join(dir, `hub-${i + 1}.log`);
      logs.push(log);
      // a folder per hub and Node's own file names: each thread of a hub, if it has several, writes its own profile
      const profile = flags['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', join(profiles, i === hubs ? 'idle-hub' : `hub-${i + 1}`)] : [];
      servers.push(startServer(redisHubArgs(port, join(dir, `hub-${i + 1}`), redis), profile, log));
    }
    const all = [...servers];
    stopHubs = running.add(async () => {
      await Promise.all(all.map((s) => s.stop()));
    });
    progress.update(`${name}: starting ${hubs + 1} hubs`);
    await Promise.all(servers.map((s, i) => waitListening(ports[i] ?? 0, s, `hub ${i + 1} of ${hubs + 1}`)));
    probe = await RedisProbe.open(redis.ports);
    const before = await probe.sample();
    const serving = servers.slice(0, hubs);
    const idle = servers[hubs] as Server;
    const config: LoadConfig = {
      url: `http://127.0.0.1:${ports[0]}`,
      urls: ports.slice(0, hubs).map((p) => `http://127.0.0.1:${p}`),
      vendors: flags.vendors,
      drivers: flags.drivers,
      inflight: flags.inflight,
      rate: loop === 'open' ? flags.rate : 0,
      warmupMs: flags.warmup * 1000,
      measureMs: flags.seconds * 1000,
      label: name,
      protocol: 'caps',
    };
    interface Mark {
      at: number;
      hubs: number;
      idle: number;
      redis: number[];
      self: number;
      machine: { total: number; busy: number } | undefined;
      info: Promise<RedisSample>;
    }
    const p = probe;
    const mark = (): Mark => ({
      at: performance.now(),
      hubs: ticksOf(serving.map((s) => s.pid)).reduce((a, b) => a + b, 0),
      idle: ticksOf([idle.pid])[0] ?? Number.NaN,
      redis: ticksOf(redis.pids),
      self: ticksOf([process.pid])[0] ?? Number.NaN,
      machine: machineTicks(),
      info: p.sample(),
    });
    let start: Mark | undefined;
    let end: Mark | undefined;
    // a sample's INFO that fails rejects when awaited below, not as an unhandled rejection meanwhile
    const quiet = (m: Mark): Mark => {
      m.info.catch(() => undefined);
      return m;
    };
    const result = await drive(config, serving[0] as Server, progress, name, undefined, {
      also: servers.slice(1),
      onMeasureStart: () => {
        start = quiet(mark());
      },
      onMeasureEnd: () => {
        end = quiet(mark());
      },
    });
    progress.done();
    if (!start || !end) throw new Error('the load generator did not report its measured window');
    const [s, e, after] = await Promise.all([start.info, end.info, probe.sample()]);
    const parcels = result.load.parcels;
    const redisTicks = end.redis.map((t, i) => t - (start?.redis[i] ?? Number.NaN));
    const redisTotal = redisTicks.reduce((a, b) => a + b, 0);
    const commands = windowCommands(s, e, PROBE_CALLS);
    // the load generator's ticks, from its share of a core over the window
    const loadTicks = result.loadCpu * ((end.at - start.at) / 1000) * 100;
    const ours = end.hubs - start.hubs + (end.idle - start.idle) + redisTotal + (end.self - start.self) + loadTicks;
    const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);
    measured = {
      redis: kind,
      primaries: redis.ports.length,
      hubs,
      loop,
      ...(loop === 'open' ? { rate: flags.rate } : {}),
      round,
      parcelsPerSecond: parcels / result.load.seconds,
      latencyMs: result.load.latency,
      parcels,
      delivered: result.load.delivered,
      hubCpuUs: ticksPerItemUs(end.hubs - start.hubs, parcels),
      idleHubCpuUs: ticksPerItemUs(end.idle - start.idle, parcels),
      redisCpuUs: ticksPerItemUs(redisTotal, parcels),
      primaryCpuShares: redisTicks.map((t) => (redisTotal > 0 ? t / redisTotal : Number.NaN)),
      commands: parcels > 0 ? commands.total / parcels : Number.NaN,
      commandsByName: Object.fromEntries([...commands.byName].map(([cmd, count]) => [cmd, parcels > 0 ? count / parcels : Number.NaN])),
      bytesPerParcel: result.load.delivered > 0 ? (sum(after.usedMemory) - sum(before.usedMemory)) / result.load.delivered : Number.NaN,
      loadCpu: result.loadCpu,
      steal: result.steal,
      otherCpu: othersShare(start.machine, end.machine, ours),
      errors: result.load.errors,
      outstanding: result.load.outstanding,
      ...(result.load.firstError ? { firstError: result.load.firstError } : {}),
    };
  } catch (err) {
    failure = err;
  } finally {
    probe?.close();
    await stopHubs?.();
    await stopRedis();
  }
  const keepDir = join(out, 'hub-logs', `${name.replace(/[^a-z0-9]+/gi, '-')}-${Date.now()}`);
  const warnings = hubWarnings(logs, servers, keepDir);
  rmSync(dir, { recursive: true, force: true });
  running.folders.delete(dir);
  if (failure !== undefined || !measured) {
    const message = failure instanceof Error ? failure.message : String(failure);
    throw new Error(warnings.lines.length > 0 ? `${message}\n  ${warnings.lines.join('\n  ')}` : message, { cause: failure });
  }
  if (existsSync(keepDir)) process.stderr.write(`caps bench: ${name}: the hubs logged warnings; their logs: ${keepDir}\n`);
  return { ...measured, hubWarnings: warnings.lines, busyBacklogLines: warnings.busyBacklog };
}
