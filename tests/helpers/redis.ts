import { mkdtempSync, rmSync } from 'node:fs';
import { afterAll, beforeAll } from 'vitest';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../bench/processes.js';
import type { RedisCluster, RedisProcess } from '../../bench/redis.js';
import { runRedisCluster, runRedisServer } from '../../bench/redis.js';

export { freePort };

export const REDIS_SERVER = '/usr/bin/redis-server';
export const REDIS_CLI = '/usr/bin/redis-cli';

/**
 * A real redis-server of the test's own: a free port on 127.0.0.1, a temporary folder, AOF with
 * fsync on every write (so an acknowledged write survives a restart). Never the machine's Redis.
 */
export class TestRedis {
  readonly dir = mkdtempSync(join(tmpdir(), 'caps-redis-'));
  private process: RedisProcess | undefined;
  private constructor(
    readonly port: number,
    /** More redis-server arguments, e.g. `--replicaof 127.0.0.1 PORT` for a replica. */
    private readonly extraArgs: readonly string[] = [],
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  static async start(extraArgs: readonly string[] = []): Promise<TestRedis> {
    const redis = new TestRedis(await freePort(), extraArgs);
    await redis.run();
    return redis;
  }

  /** Starts (again) on the same port and folder; resolves when it accepts connections. */
  async run(): Promise<void> {
    this.process = await runRedisServer(REDIS_SERVER, this.port, this.dir, 10_000, this.extraArgs);
  }

  get running(): boolean {
    return this.process?.running ?? false;
  }

  /** Stops it the hard way (SIGKILL); resolves once it has exited. */
  async kill(): Promise<void> {
    await this.process?.kill();
  }

  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A real Redis Cluster of the test's own (runRedisCluster): `primaries` primaries, no replicas, on
 * free ports on 127.0.0.1, each with a folder under one temporary folder (its nodes.conf and AOF,
 * fsync on every write), removed by stop(). Never the machine's Redis.
 */
export class TestRedisCluster {
  private constructor(
    readonly dir: string,
    private readonly cluster: RedisCluster,
  ) {}

  /** Resolves once every node says cluster_state:ok with all 16384 slots served. */
  static async start(primaries = 3, timeoutMs = 20_000): Promise<TestRedisCluster> {
    const dir = mkdtempSync(join(tmpdir(), 'caps-redis-cluster-'));
    try {
      return new TestRedisCluster(dir, await runRedisCluster(REDIS_SERVER, dir, { primaries, timeoutMs, cli: REDIS_CLI }));
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /** '127.0.0.1:p1,127.0.0.1:p2,...', the primaries in order. */
  get nodes(): string {
    return this.cluster.nodes;
  }

  get ports(): readonly number[] {
    return this.cluster.ports;
  }

  get pids(): readonly number[] {
    return this.cluster.pids;
  }

  /** Stops primary `i` the hard way (SIGKILL); resolves once it has exited. */
  kill(i: number): Promise<void> {
    return this.cluster.kill(i);
  }

  /** Starts primary `i` again on its port and folder; resolves once the cluster is ok again. */
  restart(i: number): Promise<void> {
    return this.cluster.restart(i);
  }

  async stop(): Promise<void> {
    await this.cluster.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A test Redis for the whole file: started in its beforeAll, stopped in its afterAll. Returns how
 * to reach it once it runs (the tests of the file call it, never at load time).
 */
export function fileRedis(): () => TestRedis {
  let redis: TestRedis | undefined;
  beforeAll(async () => {
    redis = await TestRedis.start();
  });
  afterAll(async () => {
    await redis?.stop();
  });
  return () => {
    if (!redis) throw new Error('the test Redis is not started yet (it starts in beforeAll)');
    return redis;
  };
}
