/**
 * The bench's own view of the Redis under test: its primaries' `INFO commandstats` and `INFO memory`,
 * read over a connection of the bench's own to each primary (never through a hub), and the
 * redis-server processes' CPU from /proc. Also starts that Redis: one redis-server or a cluster.
 */
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { cpuTicks } from './processes.js';
import { findRedisServer, runRedisCluster, startBenchRedis } from './redis.js';
import { commandCallsOf, infoNumber } from './stats.js';

/** Which Redis the hubs share: one redis-server, or a Redis Cluster of `primaries` primaries (no replicas). */
export type RedisKind = 'single' | 'cluster';

/** Primaries of the bench's Redis Cluster: the least `redis-cli --cluster create` accepts. */
export const CLUSTER_PRIMARIES = 3;

export interface BenchRedisSetup {
  kind: RedisKind;
  /** Each primary's port on 127.0.0.1. */
  ports: number[];
  /** The redis-server processes (their CPU is Redis's). */
  pids: number[];
  /** What `caps hub` is given to reach it: `--redis URL` or `--redis-cluster NODES`. */
  hubArgs: string[];
  /** What RedisStorage is given to reach it. */
  storageOptions: { url: string } | { cluster: string };
  stop(): Promise<void>;
}

/** Starts an empty Redis of the bench's own in `dir`: one redis-server, or a cluster of CLUSTER_PRIMARIES. */
export async function startRedisOf(kind: RedisKind, dir: string): Promise<BenchRedisSetup> {
  if (kind === 'single') {
    const redis = await startBenchRedis(join(dir, 'redis'));
    const port = Number(new URL(redis.url).port);
    return { kind, ports: [port], pids: [redis.pid], hubArgs: ['--redis', redis.url], storageOptions: { url: redis.url }, stop: () => redis.stop() };
  }
  const binary = findRedisServer();
  if (!binary) throw new Error('redis-server is not installed; install it (on Debian: apt-get install -y redis-server redis-tools)');
  const cluster = await runRedisCluster(binary, join(dir, 'redis-cluster'), { primaries: CLUSTER_PRIMARIES });
  return { kind, ports: [...cluster.ports], pids: [...cluster.pids], hubArgs: ['--redis-cluster', cluster.nodes], storageOptions: { cluster: cluster.nodes }, stop: () => cluster.stop() };
}

/** One look at every primary, in the order of their ports. */
export interface RedisSample {
  /** Each primary's calls of each command (lower-case name), as `INFO commandstats` counts them: commands a Lua script runs are counted too. */
  calls: Array<Map<string, number>>;
  /** Each primary's `used_memory`, in bytes. */
  usedMemory: number[];
}

/** Connections of the bench's own to each primary. */
export class RedisProbe {
  private constructor(private readonly clients: Redis[]) {}

  static async open(ports: readonly number[]): Promise<RedisProbe> {
    const clients = ports.map((port) => new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null }));
    const probe = new RedisProbe(clients);
    try {
      await Promise.all(clients.map((c) => c.connect()));
    } catch (err) {
      probe.close();
      throw new Error(`the bench cannot reach its Redis: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    return probe;
  }

  /** INFO memory and commandstats of every primary: one INFO per primary, itself counted in the next sample (see PROBE_CALLS). */
  async sample(): Promise<RedisSample> {
    const texts = await Promise.all(this.clients.map((c) => c.call('INFO', 'memory', 'commandstats') as Promise<string>));
    return { calls: texts.map(commandCallsOf), usedMemory: texts.map((t) => infoNumber(t, 'used_memory')) };
  }

  close(): void {
    for (const c of this.clients) c.disconnect();
  }
}

/** The INFO a sample sends each primary: counted by the primary after its reply, so one per primary per sample shows up in the next. */
export const PROBE_CALLS: ReadonlyMap<string, number> = new Map([['info', 1]]);

/** Clock ticks (utime + stime) of each process; NaN for one that is gone. */
export function ticksOf(pids: readonly number[]): number[] {
  return pids.map(cpuTicks);
}
