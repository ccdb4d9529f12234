/**
 * `caps bench --store redis --idle-stores N [--cluster]`: what a hub and Redis spend doing nothing,
 * with no stores and then with N stores each holding one queued vendor message (the in-transit of
 * a pickup, written through RedisStorage itself, as a hub would). One hub, one driver and one
 * vendor (of a store of its own) connected, no traffic: Redis commands/s, hub and Redis CPU over
 * IDLE_WINDOW_MS. Neither should grow with N.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { io } from 'socket.io-client';
import type { Socket } from 'socket.io-client';
import type { FlagValues } from '../cli/args.js';
import { RedisStorage } from '../hub/storage/redis-storage.js';
import type { StepInput } from '../hub/storage/storage.js';
import type { benchCommand } from './bench.js';
import { freePorts, hubWarnings, redisHubArgs } from './hubs.js';
import { redisLabel, windowCommands } from './hubs-summary.js';
import { machineTicks, Progress, Running, startServer, waitListening } from './processes.js';
import type { Server } from './processes.js';
import { CLUSTER_PRIMARIES, PROBE_CALLS, RedisProbe, startRedisOf, ticksOf } from './redis-probe.js';
import type { RedisKind } from './redis-probe.js';
import { formatNumber, othersShare } from './stats.js';

/** The measured window of each idle run. */
export const IDLE_WINDOW_MS = 5_000;
/** Stores seeded at once (two round trips of pipelined scripts each). */
const SEED_BATCH = 500;
/** What "does not grow" allows: this share more, plus a floor for the noise (CPU ticks are 10 ms). */
export const IDLE_TOLERANCE = { share: 1.2, commandsPerSecond: 2, cpuMsPerSecond: 4 } as const;

export interface IdleRun {
  stores: number;
  seedSeconds: number;
  /** used_memory the seeded stores added, per store. */
  bytesPerStore: number;
  commandsPerSecond: number;
  commandsByName: Record<string, number>;
  /** CPU ms per second of wall time (10 = 1% of a core). */
  hubCpuMsPerSecond: number;
  redisCpuMsPerSecond: number;
  /** Share of the machine's CPU time that processes outside the run kept busy meanwhile. */
  otherCpu: number;
  hubWarnings: string[];
}

export function grewWith(empty: number, seeded: number, floor: number): boolean {
  return seeded > empty * IDLE_TOLERANCE.share + floor;
}

export async function runIdleStores(flags: FlagValues<typeof benchCommand>, out: string): Promise<number> {
  const n = flags['idle-stores'] ?? 10_000;
  const kind: RedisKind = flags.cluster ? 'cluster' : 'single';
  const label = redisLabel(kind, kind === 'cluster' ? CLUSTER_PRIMARIES : 1);
  if (flags.repeat > 1) process.stdout.write('note: --repeat is for the throughput runs; idle-stores mode runs once\n');
  process.stdout.write(
    `caps bench --idle-stores: one hub on ${label}, one driver and one vendor connected, no traffic; ${flags.warmup} s to settle, then ${IDLE_WINDOW_MS / 1000} s measured: ` +
      `first with no stores, then with ${formatNumber(n)} stores each holding one queued vendor message (the in-transit of a pickup)\n`,
  );
  const running = new Running();
  const progress = new Progress();
  const runs: IdleRun[] = [];
  try {
    for (const stores of [0, n]) {
      const run = await idleOnce(flags, kind, stores, out, running, progress);
      progress.done();
      runs.push(run);
      process.stdout.write(
        `idle, ${formatNumber(stores)} stores: ${formatNumber(run.commandsPerSecond, 1)} Redis commands/s, hub CPU ${formatNumber(run.hubCpuMsPerSecond, 1)} ms/s, Redis CPU ${formatNumber(run.redisCpuMsPerSecond, 1)} ms/s` +
          (stores > 0 ? `; seeded in ${formatNumber(run.seedSeconds, 1)} s, ${formatNumber(run.bytesPerStore)} B of Redis memory per store` : '') +
          `; commands/s by name: ${Object.entries(run.commandsByName)
            .sort((a, b) => b[1] - a[1])
            .map(([name, c]) => `${name} ${formatNumber(c, 1)}`)
            .join(', ')}\n`,
      );
      if (run.otherCpu > 0.1) process.stdout.write(`warning: processes outside the run kept ${formatNumber(run.otherCpu * 100)}% of this machine's CPU busy during idle, ${formatNumber(stores)} stores: its figures are not comparable\n`);
      for (const w of run.hubWarnings) process.stdout.write(`warning: hub log (idle, ${formatNumber(stores)} stores): ${w}\n`);
    }
  } catch (err) {
    progress.done();
    process.stderr.write(`caps bench: idle-stores mode failed: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  } finally {
    progress.done();
    await running.close();
  }
  const [empty, seeded] = runs as [IdleRun, IdleRun];
  const commandsGrew = grewWith(empty.commandsPerSecond, seeded.commandsPerSecond, IDLE_TOLERANCE.commandsPerSecond);
  const cpuGrew = grewWith(empty.hubCpuMsPerSecond, seeded.hubCpuMsPerSecond, IDLE_TOLERANCE.cpuMsPerSecond);
  const verdict =
    `target: an idle hub's cost does not grow with the stores (${formatNumber(n)} vs none): Redis commands/s ${formatNumber(empty.commandsPerSecond, 1)} → ${formatNumber(seeded.commandsPerSecond, 1)}, ` +
    `hub CPU ${formatNumber(empty.hubCpuMsPerSecond, 1)} → ${formatNumber(seeded.hubCpuMsPerSecond, 1)} ms/s — ${commandsGrew || cpuGrew ? 'MISSED' : 'met'} ` +
    `(allowed: ×${IDLE_TOLERANCE.share} + ${IDLE_TOLERANCE.commandsPerSecond} commands/s, + ${IDLE_TOLERANCE.cpuMsPerSecond} ms/s of CPU; the hub's retention sweep, every 60 s, is not in the window)`;
  process.stdout.write(`${verdict}\n`);
  writeFileSync(
    join(out, 'idle-stores.json'),
    `${JSON.stringify({ started: new Date().toISOString(), command: `caps bench ${process.argv.slice(3).join(' ')}`.trim(), redis: kind, windowMs: IDLE_WINDOW_MS, runs, verdict }, null, 2)}\n`,
  );
  process.stdout.write(`results: ${join(out, 'idle-stores.json')}\n`);
  return 0;
}

/** Writes `stores` stores, each with one pickup taken in transit (its vendor message queued in the store's log), through the storage itself. */
export async function seedIdleStores(storage: RedisStorage, stores: number, progress: Progress): Promise<void> {
  const time = new Date().toISOString();
  const step = (event: StepInput['event'], store: string): StepInput => ({
    event,
    store,
    orderId: `${store}-1`,
    time,
    ...(event === 'pickup' ? { customer: 'Idle Customer', address: '1 Idle Road' } : { driver: 'idle-seed-driver', toLog: true }),
  });
  for (let first = 0; first < stores; first += SEED_BATCH) {
    const names = Array.from({ length: Math.min(SEED_BATCH, stores - first) }, (_, i) => `idle-${String(first + i).padStart(7, '0')}`);
    for (const event of ['pickup', 'in-transit'] as const) {
      const outcomes = await Promise.all(names.map((store) => storage.recordStep(step(event, store))));
      const bad = outcomes.find((o) => o.status !== 'accepted');
      if (bad) throw new Error(`seeding: a ${event} was ${bad.status}${bad.status === 'refused' ? ` (${bad.code}: ${bad.reason})` : ''}`);
    }
    progress.update(`seeding: ${formatNumber(first + names.length)}/${formatNumber(stores)} stores`);
  }
}

function connected(socket: Socket, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('connect_error', (err) => reject(new Error(`${what} cannot connect: ${err.message}`)));
  });
}

async function idleOnce(flags: FlagValues<typeof benchCommand>, kind: RedisKind, stores: number, out: string, running: Running, progress: Progress): Promise<IdleRun> {
  const dir = join(out, `data-idle-${process.pid}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  running.folders.add(dir);
  const name = `idle, ${formatNumber(stores)} stores`;
  progress.update(`${name}: starting Redis`);
  const redis = await startRedisOf(kind, dir);
  const stopRedis = running.add(() => redis.stop());
  let probe: RedisProbe | undefined;
  let hub: Server | undefined;
  let stopHub: (() => Promise<void>) | undefined;
  const sockets: Socket[] = [];
  const log = join(dir, 'hub-1.log');
  let measured: Omit<IdleRun, 'hubWarnings'> | undefined;
  let failure: unknown;
  try {
    probe = await RedisProbe.open(redis.ports);
    const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);
    const empty = sum((await probe.sample()).usedMemory);
    const t0 = performance.now();
    if (stores > 0) {
      // no bound on pickups here: the seed settles each one with its in-transit
      const storage = new RedisStorage({ ...redis.storageOptions, maxPickups: Number.MAX_SAFE_INTEGER });
      try {
        await storage.open();
        await seedIdleStores(storage, stores, progress);
      } finally {
        await storage.close();
      }
    }
    const seedSeconds = (performance.now() - t0) / 1000;
    const seededMemory = sum((await probe.sample()).usedMemory);

    const [port] = await freePorts(1);
    const h = startServer(redisHubArgs(port ?? 0, join(dir, 'hub-1'), redis), [], log);
    hub = h;
    stopHub = running.add(() => h.stop());
    progress.update(`${name}: starting the hub`);
    await waitListening(port ?? 0, h, 'the hub');
    const url = `http://127.0.0.1:${port}/caps`;
    const options = { transports: ['websocket'], forceNew: true, reconnection: false, timeout: 15_000 };
    sockets.push(io(url, { ...options, auth: { role: 'driver', name: 'idle-bench-driver' } }), io(url, { ...options, auth: { role: 'vendor', store: 'idle-bench-vendor-store' } }));
    await Promise.all(sockets.map((s, i) => connected(s, i === 0 ? 'the driver' : 'the vendor')));
    progress.update(`${name}: settling for ${flags.warmup} s`);
    await new Promise((resolve) => setTimeout(resolve, flags.warmup * 1000));
    progress.update(`${name}: measuring for ${IDLE_WINDOW_MS / 1000} s`);
    const mark = (): { at: number; hub: number; redis: number; self: number; machine: ReturnType<typeof machineTicks> } => ({
      at: performance.now(),
      hub: ticksOf([h.pid])[0] ?? Number.NaN,
      redis: sum(ticksOf(redis.pids)),
      self: ticksOf([process.pid])[0] ?? Number.NaN,
      machine: machineTicks(),
    });
    const a = mark();
    const s = await probe.sample();
    await new Promise((resolve) => setTimeout(resolve, IDLE_WINDOW_MS));
    const b = mark();
    const e = await probe.sample();
    if (h.child.exitCode !== null || h.child.signalCode !== null) throw new Error(`the hub exited while idle: ${h.stderr.slice(-5).join(' | ')}`);
    const seconds = (b.at - a.at) / 1000;
    const commands = windowCommands(s, e, PROBE_CALLS);
    measured = {
      stores,
      seedSeconds,
      bytesPerStore: stores > 0 ? (seededMemory - empty) / stores : Number.NaN,
      commandsPerSecond: commands.total / seconds,
      commandsByName: Object.fromEntries([...commands.byName].map(([cmd, c]) => [cmd, c / seconds])),
      // ticks are 10 ms each
      hubCpuMsPerSecond: ((b.hub - a.hub) * 10) / seconds,
      redisCpuMsPerSecond: ((b.redis - a.redis) * 10) / seconds,
      otherCpu: othersShare(a.machine, b.machine, b.hub - a.hub + (b.redis - a.redis) + (b.self - a.self)),
    };
  } catch (err) {
    failure = err;
  } finally {
    for (const socket of sockets) socket.disconnect();
    probe?.close();
    await stopHub?.();
    await stopRedis();
  }
  const warnings = hub ? hubWarnings([log], [hub], join(out, 'hub-logs', `idle-${stores}-stores-${Date.now()}`)).lines : [];
  rmSync(dir, { recursive: true, force: true });
  running.folders.delete(dir);
  if (failure !== undefined || !measured) {
    const message = failure instanceof Error ? failure.message : String(failure);
    throw new Error(warnings.length > 0 ? `${message}\n  ${warnings.join('\n  ')}` : message, { cause: failure });
  }
  return { ...measured, hubWarnings: warnings };
}
