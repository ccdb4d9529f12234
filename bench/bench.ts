/**
 * `caps bench`: starts the server under test as its own process and a load generator in another,
 * for each target in turn (the bare relay first: every figure is a ratio to it), then prints a
 * table, writes the results as JSON and draws them as SVG.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { CommandSpec, FlagValues } from '../cli/args.js';
import { runCommand, UsageError } from '../cli/args.js';
import { renderChart } from './chart.js';
import { runBacklog } from './backlog.js';
import { runConnections } from './connections.js';
import { runHubs } from './hubs.js';
import { runIdleStores } from './idle-stores.js';
import type { BenchProtocol, LoadConfig, LoadResult, LoadToParent } from './protocol.js';
import { capsHubArgs, cpuTicks, forkChild, freePort, LOAD_JS, machineTicks, memory, Progress, RELAY_JS, startServer, waitListening } from './processes.js';
import type { Server } from './processes.js';
import { startBenchRedis } from './redis.js';
import { cpuShare, formatNumber, stealShare } from './stats.js';
import type { MachineTicks } from './stats.js';
import type { Loop, RatedResult, RunResult } from './summary.js';
import { mediansOfRounds, rate } from './summary.js';
import type { Target } from './targets.js';
import { parseTargets } from './targets.js';

export type { Loop, RatedResult, RunResult } from './summary.js';

export const benchCommand = {
  usage: 'caps bench',
  summary:
    'Measures CAPS against a bare Socket.IO relay (the course hub) under the same load: each target runs as its own process, ' +
    'the load in another. V vendors keep K parcels in flight each (closed loop), then publish at a fixed rate (open loop); D drivers answer at once. ' +
    'Prints parcels/s, events/s, pickup→delivered latency, hub CPU, peak RSS and the machine\'s steal time, with ratios to the relay of the same run; writes JSON and an SVG chart. ' +
    'With --repeat N: every run N times, medians reported. ' +
    'With --connections N: N idle drivers instead, hub RSS per connection, then a hub restart and the time until all are back and replayed. ' +
    'With --backlog N: N stores whose vendors are offline, each with M notifications on disk; the hub\'s RSS and restart time on them, and the other stores\' throughput against an empty folder. ' +
    'With --store redis --hubs N [--cluster]: N hubs on one Redis (or a Redis Cluster), costs per parcel against one hub; with --idle-stores N: an idle hub\'s cost with N stores in Redis.',
  flags: {
    vendors: { type: 'integer', description: 'vendor connections (one store each)', placeholder: 'V', default: 4, min: 1, max: 1000 },
    drivers: { type: 'integer', description: 'driver connections; they ack each pickup and publish in-transit and delivered at once', placeholder: 'D', default: 4, min: 1, max: 1000 },
    inflight: { type: 'integer', description: 'closed loop: parcels each vendor keeps in flight; 0 skips the closed-loop runs', placeholder: 'K', default: 16, min: 0, max: 10000 },
    rate: { type: 'integer', description: 'open loop: parcels per second over all vendors, latency counted from when each was due; 0 skips the open-loop runs', placeholder: 'N', default: 1000, min: 0, max: 1000000 },
    seconds: { type: 'integer', description: 'measured seconds of each run', placeholder: 'S', default: 8, min: 1, max: 3600 },
    warmup: { type: 'integer', description: 'seconds of load before measuring', placeholder: 'S', default: 2, min: 0, max: 600 },
    targets: {
      type: 'string',
      description: 'comma-separated: relay (the baseline, always run), memory, sqlite (synchronous=FULL), redis (a redis-server of its own, appendfsync always; needs redis-server installed)',
      placeholder: 'LIST',
      default: 'relay,memory,sqlite',
    },
    store: { type: 'string', description: 'shorthand for --targets relay,STORE; in connections mode the hub store (default sqlite)', placeholder: 'memory|sqlite|redis' },
    protocol: {
      type: 'choice',
      description: "caps: CAPS's own clients (acks everywhere, D drivers); lab: the course's clients (no identity, join, publishes without acks, received instead of acks, one driver re-emitting each pickup), CAPS in its open lab mode",
      choices: ['caps', 'lab'],
      default: 'caps',
    },
    repeat: { type: 'integer', description: 'rounds of every run; the table shows the median of each figure, ratios taken within each round', placeholder: 'N', default: 1, min: 1, max: 20 },
    connections: { type: 'integer', description: 'connections mode: N idle drivers (10000 is the target); hub RSS per connection, then restart and replay time', placeholder: 'N', min: 1, max: 100000 },
    backlog: {
      type: 'integer',
      description: 'backlog mode: N stores (10000 is the target) whose vendors are offline with notifications waiting on disk (SQLite); hub RSS, restart time and the other stores\' closed-loop throughput against an empty folder',
      placeholder: 'N',
      min: 1,
      max: 1000000,
    },
    'backlog-messages': { type: 'integer', description: 'backlog mode: notifications waiting per store (in-transit and delivered of half as many parcels)', placeholder: 'M', default: 100, min: 2, max: 100000 },
    queued: { type: 'integer', description: 'connections mode: messages queued (unacknowledged) when the hub is restarted', placeholder: 'M', default: 1000, min: 0, max: 100000 },
    hubs: {
      type: 'integer',
      description:
        'with --store redis: N caps hub processes on one Redis (+1 idle hub with no clients), vendors and drivers spread round-robin over them; per parcel: hub CPU, Redis CPU, commands and memory, with ratios to one hub on the same Redis, run in the same rounds',
      placeholder: 'N',
      default: 1,
      min: 1,
      max: 8,
    },
    cluster: { type: 'boolean', description: 'with --hubs or --idle-stores: a Redis Cluster of 3 primaries (caps hub --redis-cluster) instead of one redis-server' },
    'idle-stores': {
      type: 'integer',
      description: 'with --store redis: an idle hub\'s Redis commands/s and CPU (one driver, one vendor, no traffic) with no stores, then with N stores (10000 is the target) each holding one queued vendor message',
      placeholder: 'N',
      min: 1,
      max: 1000000,
    },
    out: { type: 'string', description: 'folder for results.json, chart.svg (and CPU profiles)', placeholder: 'DIR', default: 'bench-results' },
    'cpu-prof': { type: 'boolean', description: 'write a V8 CPU profile of each CAPS hub run (with --hubs, of every hub, the idle one too) into --out (open in Chrome DevTools or speedscope)' },
  },
  examples: [
    'npm run bench',
    'caps bench --repeat 5',
    'caps bench --protocol lab --repeat 5',
    'caps bench --store redis --seconds 20',
    'caps bench --inflight 0 --rate 2000',
    'caps bench --connections 10000',
    'caps bench --backlog 10000 --repeat 3',
    'caps bench --store redis --hubs 2 --repeat 3',
    'caps bench --store redis --hubs 4 --cluster',
    'caps bench --store redis --idle-stores 10000',
  ],
} as const satisfies CommandSpec;

type Flags = FlagValues<typeof benchCommand>;

export function runBench(argv: readonly string[]): Promise<number> {
  return runCommand(benchCommand, argv, async (flags) => {
    let targets: Target[];
    try {
      targets = parseTargets(argv.some((a) => a === '--targets' || a.startsWith('--targets=')) ? flags.targets : undefined, flags.store);
    } catch (err) {
      if (!(err instanceof UsageError)) throw err;
      process.stderr.write(`caps bench: ${err.message}\nRun 'caps bench --help' to see the flags.\n`);
      return 2;
    }
    const given = (flag: string): boolean => argv.some((a) => a === `--${flag}` || a.startsWith(`--${flag}=`));
    const hubsMode = given('hubs') || flags.cluster === true;
    const idleStores = flags['idle-stores'] !== undefined;
    if ((hubsMode || idleStores) && flags.store !== 'redis') {
      process.stderr.write(`caps bench: ${idleStores ? '--idle-stores' : given('hubs') ? '--hubs' : '--cluster'} needs --store redis\nRun 'caps bench --help' to see the flags.\n`);
      return 2;
    }
    if ((hubsMode || idleStores) && (flags.protocol !== 'caps' || flags.connections !== undefined || flags.backlog !== undefined)) {
      process.stderr.write(`caps bench: --hubs, --cluster and --idle-stores run CAPS's own protocol, on their own (not with --protocol lab, --connections or --backlog)\nRun 'caps bench --help' to see the flags.\n`);
      return 2;
    }
    const out = resolve(flags.out);
    mkdirSync(out, { recursive: true });
    if (idleStores) return runIdleStores(flags, out);
    if (hubsMode) return runHubs(flags, out);
    if (flags.connections !== undefined) return runConnections(flags, out);
    if (flags.backlog !== undefined) return runBacklog(flags, out);
    return runThroughput(flags, targets, out);
  });
}

async function runThroughput(flags: Flags, targets: Target[], out: string): Promise<number> {
  const loops: Loop[] = [...(flags.inflight > 0 ? (['closed'] as const) : []), ...(flags.rate > 0 ? (['open'] as const) : [])];
  if (loops.length === 0) {
    process.stderr.write('caps bench: --inflight 0 and --rate 0 leave nothing to run\n');
    return 2;
  }
  const started = new Date();
  const lab = flags.protocol === 'lab';
  process.stdout.write(
    `caps bench: ${targets.join(', ')}; ${lab ? "the course's lab protocol, " : ''}${flags.vendors} vendors, ${lab ? 1 : flags.drivers} driver${lab ? '' : 's'}; ` +
      `${loops.map((l) => (l === 'closed' ? `closed loop K=${flags.inflight}` : `open loop ${flags.rate}/s`)).join(' and ')}; ` +
      `${flags.warmup} s warm-up + ${flags.seconds} s each` +
      (flags.repeat > 1 ? `; ${flags.repeat} rounds, medians reported` : '') +
      '\n',
  );
  const results: RunResult[] = [];
  for (let round = 1; round <= flags.repeat; round++) {
    for (const loop of loops) {
      for (const target of targets) {
        try {
          results.push({ ...(await runOne(flags, target, loop, out)), round });
        } catch (err) {
          process.stderr.write(`caps bench: ${target} (${loop} loop${flags.repeat > 1 ? `, round ${round}` : ''}) failed: ${err instanceof Error ? err.message : String(err)}\n`);
          return 1;
        }
      }
    }
  }
  const runs = rate(results);
  const rows = mediansOfRounds(runs);
  const table = formatTable(rows);
  const verdicts = verdictLines(rows, flags.rate, flags.protocol as BenchProtocol);
  process.stdout.write(`\n${table}\n${verdicts.join('\n')}\n`);
  const json = {
    started: started.toISOString(),
    command: `caps bench ${process.argv.slice(3).join(' ')}`.trim(),
    machine: { cpus: (await import('node:os')).cpus().length, node: process.version },
    config: { protocol: flags.protocol, vendors: flags.vendors, drivers: lab ? 1 : flags.drivers, inflight: flags.inflight, rate: flags.rate, seconds: flags.seconds, warmup: flags.warmup, repeat: flags.repeat, targets },
    /** One row per target and loop: the median over the rounds when there were several. */
    results: rows,
    runs,
    table,
    verdicts,
  };
  writeFileSync(join(out, 'results.json'), `${JSON.stringify(json, null, 2)}\n`);
  const svg = renderChart(
    `caps bench, ${started.toISOString().slice(0, 19)}Z: ${flags.vendors} vendors, ${flags.drivers} drivers`,
    loops.map((loop) => ({
      title: loop === 'closed' ? `closed loop, ${flags.inflight} in flight per vendor` : `open loop, ${flags.rate} parcels/s`,
      rows: rows.filter((r) => r.loop === loop).map((r) => ({ label: labelOf(r.target), parcelsPerSecond: r.parcelsPerSecond, p50: r.latencyMs.p50, p99: r.latencyMs.p99 })),
    })),
  );
  writeFileSync(join(out, 'chart.svg'), svg);
  process.stdout.write(`results: ${join(out, 'results.json')}\nchart:   ${join(out, 'chart.svg')}\n`);
  return 0;
}

function labelOf(target: Target): string {
  return target === 'relay' ? 'bare relay' : `CAPS ${target}`;
}

async function runOne(flags: Flags, target: Target, loop: Loop, out: string): Promise<RunResult> {
  const port = await freePort();
  const dataDir = join(out, `data-${target}-${process.pid}`);
  // a folder per run and Node's own file names: each thread of the hub, if it has several, writes its own profile
  const profile = flags['cpu-prof'] && target !== 'relay' ? ['--cpu-prof', '--cpu-prof-dir', join(out, 'profiles', `${target}-${loop}-${Date.now()}`)] : [];
  rmSync(dataDir, { recursive: true, force: true });
  // a redis-server of each run's own, empty, as every SQLite run starts from an empty folder
  const redis = target === 'redis' ? await startBenchRedis(join(dataDir, 'redis')) : undefined;
  const args = target === 'relay' ? [RELAY_JS, '--port', String(port)] : capsHubArgs(port, target, dataDir, redis?.url, flags.protocol as BenchProtocol);
  const server = startServer(args, profile);
  const progress = new Progress();
  const name = `${labelOf(target)} (${loop} loop)`;
  try {
    await waitListening(port, server, name);
    const config: LoadConfig = {
      url: `http://127.0.0.1:${port}`,
      vendors: flags.vendors,
      drivers: flags.drivers,
      inflight: flags.inflight,
      rate: loop === 'open' ? flags.rate : 0,
      warmupMs: flags.warmup * 1000,
      measureMs: flags.seconds * 1000,
      label: name,
      protocol: flags.protocol as BenchProtocol,
    };
    const result = await drive(config, server, progress, name, redis?.pid);
    progress.done();
    return {
      target,
      loop,
      ...(loop === 'open' ? { rate: flags.rate } : {}),
      parcelsPerSecond: result.load.parcels / result.load.seconds,
      eventsPerSecond: result.load.events / result.load.seconds,
      latencyMs: result.load.latency,
      serverCpu: result.serverCpu,
      loadCpu: result.loadCpu,
      steal: result.steal,
      serverPeakRssBytes: memory(server.pid, 'VmHWM') + (redis ? memory(redis.pid, 'VmHWM') : 0),
      errors: result.load.errors,
      outstanding: result.load.outstanding,
      ...(result.load.firstError ? { firstError: result.load.firstError } : {}),
    };
  } finally {
    progress.done();
    await server.stop();
    await redis?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** What a caller of drive() watches besides `server` (several hubs: the others, and its own samples of the measured window). */
export interface DriveWatch {
  /** Further servers whose exit fails the run, as the server's does. */
  also?: readonly Server[];
  /** Called as the measured window starts, right after drive()'s own CPU samples. */
  onMeasureStart?(): void;
  /** Called as it ends, right after them. */
  onMeasureEnd?(): void;
}

/** Runs the load generator against `server`; `alsoPid`: a process whose CPU counts with the server's (its redis-server). */
export async function drive(config: LoadConfig, server: Server, progress: Progress, name: string, alsoPid?: number, watch: DriveWatch = {}): Promise<{ load: LoadResult; serverCpu: number; loadCpu: number; steal: number }> {
  const child = forkChild(LOAD_JS, config);
  const deadline = config.warmupMs + config.measureMs + 30_000;
  let mark: { at: number; server: number; load: number; machine: MachineTicks | undefined } | undefined;
  let cpu = { server: Number.NaN, load: Number.NaN, steal: Number.NaN };
  const sample = (): { at: number; server: number; load: number; machine: MachineTicks | undefined } => ({
    at: performance.now(),
    server: cpuTicks(server.pid) + (alsoPid !== undefined ? cpuTicks(alsoPid) : 0),
    load: cpuTicks(child.pid ?? -1),
    machine: machineTicks(),
  });
  let last = { at: 0, parcels: 0 };
  try {
    const load = await new Promise<LoadResult>((resolvePromise, reject) => {
      const timer = setTimeout(() => reject(new Error(`the load generator did not finish within ${deadline / 1000} s`)), deadline);
      child.on('message', (message: LoadToParent) => {
        switch (message.type) {
          case 'measure-start':
            mark = sample();
            watch.onMeasureStart?.();
            last = { at: 0, parcels: 0 };
            break;
          case 'measure-end':
            if (mark) {
              const now = sample();
              watch.onMeasureEnd?.();
              cpu = { server: cpuShare(mark.server, now.server, now.at - mark.at), load: cpuShare(mark.load, now.load, now.at - mark.at), steal: stealShare(mark.machine, now.machine) };
            }
            break;
          case 'progress': {
            const rate = message.elapsedMs > last.at ? ((message.parcels - last.parcels) * 1000) / (message.elapsedMs - last.at) : 0;
            last = { at: message.elapsedMs, parcels: message.parcels };
            const left = Math.max(0, Math.round((config.warmupMs + config.measureMs - message.elapsedMs) / 1000));
            progress.update(
              `${name}: ${message.phase === 'warmup' ? 'warming up' : `${formatNumber(rate)} parcels/s`}, ${left} s left` + (message.errors > 0 ? `, ${message.errors} errors` : ''),
            );
            break;
          }
          case 'result':
            clearTimeout(timer);
            resolvePromise(message.result);
            break;
          case 'failed':
            clearTimeout(timer);
            reject(new Error(message.message));
            break;
          case 'connected':
            break;
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`the load generator exited (code ${code}) before reporting`));
      });
      for (const watched of [server, ...(watch.also ?? [])]) {
        void watched.exited.then((code) => reject(new Error(`the server (pid ${watched.pid}) exited (code ${code}) under load: ${watched.stderr.slice(-5).join(' | ')}`)));
      }
    });
    return { load, serverCpu: cpu.server, loadCpu: cpu.load, steal: cpu.steal };
  } finally {
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
  }
}

/** The rows as an aligned text table, ratios to the relay of the same loop (and round). */
export function formatTable(rows: readonly RatedResult[]): string {
  const header = ['run', 'parcels/s', '× relay', 'events/s', 'p50 ms', 'p90 ms', 'p99 ms', 'p99 × relay', 'hub CPU', 'load CPU', 'peak RSS', 'steal', 'errors'];
  const lines = rows.map((r) => [
    `${labelOf(r.target)}, ${r.loop === 'closed' ? 'closed' : `open ${r.rate}/s`}`,
    formatNumber(r.parcelsPerSecond),
    `${formatNumber(r.throughputRatio, 2)}×`,
    formatNumber(r.eventsPerSecond),
    formatNumber(r.latencyMs.p50, 2),
    formatNumber(r.latencyMs.p90, 2),
    formatNumber(r.latencyMs.p99, 2),
    `${formatNumber(r.p99Ratio, 2)}×`,
    `${formatNumber(r.serverCpu * 100)}%`,
    `${formatNumber(r.loadCpu * 100)}%`,
    `${formatNumber(r.serverPeakRssBytes / 1024 / 1024, 1)} MB`,
    `${formatNumber((r.steal ?? Number.NaN) * 100, 1)}%`,
    String(r.errors),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((row) => (row[i] ?? '').length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...lines.map(line)].join('\n');
}

/** The machine's hypervisor took more than this share of its CPU time: the run is not one to compare. */
const STEAL_WARNING = 0.05;

/** The issue's throughput and latency targets, met or missed, from this run's figures (medians with --repeat). */
export function verdictLines(rows: readonly RatedResult[], rate: number, protocol: BenchProtocol = 'caps'): string[] {
  const lines: string[] = [];
  const over = (r: RatedResult): string => (r.rounds > 1 ? ` (median of ${r.rounds} rounds; ${formatNumber(r.throughputRange[0], 2)}–${formatNumber(r.throughputRange[1], 2)}×)` : '');
  const closed = (t: Target): RatedResult | undefined => rows.find((r) => r.loop === 'closed' && r.target === t);
  // the course's protocol through the open lab mode: at least half the relay, whatever the storage
  const goals = protocol === 'lab' ? ([['sqlite', 0.5], ['memory', 0.5], ['redis', 0.5]] as const) : ([['sqlite', 0.5], ['memory', 0.7]] as const);
  for (const [target, goal] of goals) {
    const r = closed(target);
    if (!r) continue;
    lines.push(`target: CAPS ${target}${protocol === 'lab' ? ' (lab protocol)' : ''} ≥ ${goal}× relay parcels/s: ${formatNumber(r.throughputRatio, 2)}× — ${r.throughputRatio >= goal ? 'met' : 'MISSED'}${over(r)}`);
  }
  const open = protocol === 'caps' ? rows.find((r) => r.loop === 'open' && r.target === 'sqlite') : undefined;
  if (open) {
    const note = rate === 1000 ? '' : ` (measured at ${rate}/s, the target is at 1000/s)`;
    const rounds = open.rounds > 1 ? ` (median of ${open.rounds} rounds)` : '';
    lines.push(`target: CAPS sqlite open loop 1000/s p99 < 5 ms: ${formatNumber(open.latencyMs.p99, 2)} ms — ${open.latencyMs.p99 < 5 ? 'met' : 'MISSED'}${note}${rounds}`);
  }
  if (rows.some((r) => r.target === 'redis')) lines.push("note: CAPS redis's hub CPU and peak RSS include its redis-server's");
  for (const r of rows) {
    const what = `${labelOf(r.target)} (${r.loop})`;
    if (r.errors > 0) lines.push(`warning: ${what} had ${r.errors} errors; first: ${r.firstError ?? '?'}`);
    if (r.loadCpu > 0.9) lines.push(`warning: the load generator used ${formatNumber(r.loadCpu * 100)}% of a core in ${what}: it may be the limit, not the server`);
    if ((r.steal ?? 0) > STEAL_WARNING) lines.push(`warning: the hypervisor took ${formatNumber((r.steal ?? 0) * 100, 1)}% of this machine's CPU time during ${what}: its figures are not comparable`);
  }
  return lines;
}
