import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { freePort } from '../../bench/processes.js';
import { Lines } from './wait.js';

export { freePort };

export const REDIS_SERVER = '/usr/bin/redis-server';

/**
 * A real redis-server of the test's own: a free port on 127.0.0.1, a temporary folder, AOF with
 * fsync on every write (so an acknowledged write survives a restart). Never the machine's Redis.
 */
export class TestRedis {
  readonly dir = mkdtempSync(join(tmpdir(), 'caps-redis-'));
  readonly lines = new Lines();
  private child: ChildProcess | undefined;
  private constructor(readonly port: number) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  static async start(): Promise<TestRedis> {
    const redis = new TestRedis(await freePort());
    await redis.run();
    return redis;
  }

  /** Starts (again) on the same port and folder; resolves when it accepts connections. */
  async run(): Promise<void> {
    const child = spawn(REDIS_SERVER, [
      '--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir,
      '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--protected-mode', 'no',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    for (const stream of [child.stdout, child.stderr]) createInterface({ input: stream }).on('line', this.lines.push);
    const before = this.lines.matching(/Ready to accept connections/).length;
    await this.lines.waitFor(/Ready to accept connections/, `redis-server on port ${this.port} to start`, 10_000, before + 1);
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Stops it the hard way (SIGKILL); resolves once it has exited. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }

  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
