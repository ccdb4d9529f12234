/**
 * `caps bench --connections N`: N idle drivers on one hub. Reports the hub's RSS per connection,
 * then queues messages (delivered, not yet acknowledged), kills the hub (SIGKILL), starts it again
 * on the same port and data folder, and reports how long until every driver is back and every
 * queued message was replayed and acknowledged.
 */
import type { ChildProcess } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { io } from 'socket.io-client';
import type { FlagValues } from '../cli/args.js';
import type { benchCommand } from './bench.js';
import type { IdleConfig, IdleFromParent, IdleToParent } from './protocol.js';
import { capsHubArgs, forkChild, freePort, IDLE_JS, memory, openFilesLimit, Progress, startServer, waitListening } from './processes.js';
import type { Server } from './processes.js';
import { startBenchRedis } from './redis.js';
import type { BenchRedis } from './redis.js';
import { formatNumber } from './stats.js';

/** Clients per generator process: one process would spend its core on handshakes alone. */
const PER_GENERATOR = 5_000;
const RAMP_TIMEOUT_MS = 120_000;
const REPLAY_TIMEOUT_MS = 60_000;

export async function runConnections(flags: FlagValues<typeof benchCommand>, out: string): Promise<number> {
  const n = flags.connections ?? 10_000;
  const m = flags.queued;
  if (flags.repeat > 1) process.stdout.write('note: --repeat is for the throughput runs; connections mode runs once\n');
  const store = flags.store ?? 'sqlite';
  if (store === 'memory' && m > 0) {
    process.stderr.write(`caps bench: the restart part needs a durable store; --store memory forgets its queue on restart (use sqlite or redis, or --queued 0)\n`);
    return 2;
  }
  // the hub holds a descriptor per connection, each generator one per client it holds
  const limit = openFilesLimit();
  const need = n + 1_000;
  process.stdout.write(`open-files limit (ulimit -n): ${Number.isFinite(limit) ? limit : 'unlimited'}; the hub needs about ${need}\n`);
  if (limit < need) {
    process.stderr.write(`caps bench: ulimit -n is ${limit}, too low for ${n} connections; raise it (ulimit -n ${need * 2}) and run again\n`);
    return 1;
  }

  const port = await freePort();
  const dataDir = join(out, `data-connections-${process.pid}`);
  rmSync(dataDir, { recursive: true, force: true });
  let redis: BenchRedis | undefined;
  try {
    if (store === 'redis') redis = await startBenchRedis(join(dataDir, 'redis'));
  } catch (err) {
    process.stderr.write(`caps bench: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
  const hubArgs = capsHubArgs(port, store, dataDir, redis?.url);
  const progress = new Progress();
  let hub: Server = startServer(hubArgs);
  const generators: ChildProcess[] = [];
  const states: Array<IdleToParent & { type: 'progress' }> = [];
  const ids = new Set<string>();
  const sum = (key: 'connected' | 'failed' | 'received'): number => states.reduce((s, st) => s + (st?.[key] ?? 0), 0);
  try {
    await waitListening(port, hub, 'the hub');
    await new Promise((r) => setTimeout(r, 500));
    const rssIdle = memory(hub.pid, 'VmRSS');

    const count = Math.max(1, Math.ceil(n / PER_GENERATOR));
    const t0 = performance.now();
    for (let g = 0; g < count; g++) {
      const first = g * PER_GENERATOR;
      const config: IdleConfig = { url: `http://127.0.0.1:${port}`, first, count: Math.min(PER_GENERATOR, n - first), prefix: 'idle-driver', concurrency: 200 };
      const child = forkChild(IDLE_JS, config);
      child.on('message', (message: IdleToParent) => {
        if (message.type !== 'progress') return;
        states[g] = message;
        for (const id of message.newIds) ids.add(id);
      });
      generators.push(child);
    }
    await until(() => sum('connected') >= n, RAMP_TIMEOUT_MS, () => `connecting: ${sum('connected')}/${n} connected`, progress, `${n} drivers to connect`);
    const rampSeconds = (performance.now() - t0) / 1000;
    progress.done();
    await new Promise((r) => setTimeout(r, 1_000));
    const rss = memory(hub.pid, 'VmRSS');
    const perConnection = (rss - rssIdle) / n;
    process.stdout.write(
      `${n} idle drivers connected in ${rampSeconds.toFixed(1)} s; hub RSS ${formatNumber(rssIdle / 1048576, 1)} MB idle → ${formatNumber(rss / 1048576, 1)} MB: ` +
        `${formatNumber(perConnection / 1024, 1)} KB per connection (target < 20 KB: ${perConnection < 20 * 1024 ? 'met' : 'MISSED'})\n`,
    );

    let restart: Record<string, number> | undefined;
    if (m > 0) {
      // queue M pickups; the drivers get them and do not acknowledge, so they stay queued
      await publish(`http://127.0.0.1:${port}`, m);
      process.stdout.write(`${m} pickups published and handed to drivers, unacknowledged; killing the hub (SIGKILL) and starting it again\n`);
      for (const g of generators) g.send({ type: 'ack-mode' } satisfies IdleFromParent);
      const tKill = performance.now();
      await hub.kill();
      await until(() => sum('connected') === 0, 30_000, () => `waiting for the drivers to notice: ${sum('connected')} still connected`, progress, 'every driver to see the hub gone');
      const tStart = performance.now();
      hub = startServer(hubArgs);
      await waitListening(port, hub, 'the restarted hub');
      const tListening = performance.now();
      let tBack = Number.NaN;
      await until(
        () => {
          if (Number.isNaN(tBack) && sum('connected') >= n) tBack = performance.now();
          return sum('connected') >= n && ids.size >= m;
        },
        REPLAY_TIMEOUT_MS,
        () => `after restart: ${sum('connected')}/${n} back, ${ids.size}/${m} replayed`,
        progress,
        `${n} drivers back and ${m} messages replayed`,
      );
      const tDone = performance.now();
      progress.done();
      restart = {
        hubListeningSeconds: (tListening - tStart) / 1000,
        allBackSeconds: (tBack - tStart) / 1000,
        allReplayedSeconds: (tDone - tStart) / 1000,
        sinceKillSeconds: (tDone - tKill) / 1000,
      };
      process.stdout.write(
        `restart: hub listening ${restart['hubListeningSeconds']?.toFixed(2)} s after start; all ${n} back after ${restart['allBackSeconds']?.toFixed(2)} s; ` +
          `all ${m} replayed and acknowledged after ${restart['allReplayedSeconds']?.toFixed(2)} s (target ≤ 20 s: ${(restart['allReplayedSeconds'] ?? Infinity) <= 20 ? 'met' : 'MISSED'}); ` +
          `${restart['sinceKillSeconds']?.toFixed(2)} s since the kill\n`,
      );
    }
    const result = {
      started: new Date().toISOString(),
      command: `caps bench ${process.argv.slice(3).join(' ')}`.trim(),
      connections: n,
      store,
      rampSeconds,
      hubRssIdleBytes: rssIdle,
      hubRssBytes: rss,
      rssPerConnectionBytes: perConnection,
      queued: m,
      restart,
      connectErrors: sum('failed'),
    };
    writeFileSync(join(out, 'connections.json'), `${JSON.stringify(result, null, 2)}\n`);
    process.stdout.write(`results: ${join(out, 'connections.json')}\n`);
    return 0;
  } catch (err) {
    progress.done();
    process.stderr.write(`caps bench: connections mode failed: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  } finally {
    for (const g of generators) {
      if (g.connected) g.send({ type: 'stop' } satisfies IdleFromParent);
    }
    await Promise.all(
      generators.map(async (g) => {
        if (g.exitCode !== null) return;
        const timer = setTimeout(() => g.kill('SIGKILL'), 10_000);
        await new Promise((r) => g.once('exit', r));
        clearTimeout(timer);
      }),
    );
    await hub.stop();
    await redis?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function until(check: () => boolean, timeoutMs: number, line: () => string, progress: Progress, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  let shown = 0;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what} (${line()})`);
    if (performance.now() - shown >= 1_000) {
      progress.update(line());
      shown = performance.now();
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Publishes `m` pickups from one vendor connection and waits for every ack. */
async function publish(url: string, m: number): Promise<void> {
  const socket = io(`${url}/caps`, { auth: { role: 'vendor', store: 'bench-restart' }, transports: ['websocket'], forceNew: true, reconnection: false });
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', reject);
    });
    await Promise.all(
      Array.from(
        { length: m },
        (_, i) =>
          new Promise<void>((resolve, reject) => {
            socket.timeout(30_000).emit('pickup', { store: 'bench-restart', orderId: `queued-${i}`, customer: 'Bench', address: '1 Restart Road' }, (err: Error | null, r: { ok?: boolean }) => {
              if (err || !r?.ok) reject(new Error(`pickup ${i} was not acknowledged: ${err?.message ?? JSON.stringify(r)}`));
              else resolve();
            });
          }),
      ),
    );
  } finally {
    socket.disconnect();
  }
}
