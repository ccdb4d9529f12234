import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../bench/processes.js';
import type { RedisProcess } from '../../bench/redis.js';
import { runRedisServer } from '../../bench/redis.js';

export { freePort };

export const REDIS_SERVER = '/usr/bin/redis-server';

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
