/** redis-server processes of the bench and the tests: a free port (or a given one), a folder of their own, never the machine's Redis. */
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdirSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { createInterface } from 'node:readline';
import { freePort } from './processes.js';

export interface BenchRedis {
  readonly url: string;
  /** Its process id (the bench counts its CPU and memory with the hub's). */
  readonly pid: number;
  stop(): Promise<void>;
}

/** Where redis-server is: on PATH or in /usr/bin; undefined when it is not installed. */
export function findRedisServer(): string | undefined {
  for (const dir of [...(process.env['PATH'] ?? '').split(delimiter), '/usr/bin', '/usr/local/bin']) {
    if (dir === '') continue;
    const candidate = join(dir, 'redis-server');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** A redis-server process started by runRedisServer. */
export interface RedisProcess {
  readonly pid: number;
  /** SIGTERM, then SIGKILL after 5 s; resolves once it has exited. */
  stop(): Promise<void>;
  /** SIGKILL; resolves once it has exited. */
  kill(): Promise<void>;
  readonly running: boolean;
}

/**
 * Starts redis-server on 127.0.0.1:`port` with its files in `dir` and an append-only file synced on
 * every write (`appendfsync always`): an acknowledged write is on disk before its answer, as with
 * SQLite, and survives a restart on the same folder; no rewrite of that file (a fork) may land in
 * a measured run. Resolves once it accepts connections; rejects if it cannot, leaving no process.
 * The tests' own Redis (tests/helpers/redis.ts) is one of these too.
 */
export async function runRedisServer(binary: string, port: number, dir: string, timeoutMs = 10_000, extraArgs: readonly string[] = []): Promise<RedisProcess> {
  mkdirSync(dir, { recursive: true });
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--auto-aof-rewrite-percentage', '0', '--save', '', '--protected-mode', 'no', ...extraArgs];
  const child = spawn(binary, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const last: string[] = [];
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const gone = (): boolean => child.exitCode !== null || child.signalCode !== null;
  const end = async (signal: NodeJS.Signals): Promise<void> => {
    if (gone()) return;
    child.kill(signal);
    const timer = signal === 'SIGKILL' ? undefined : setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  };
  try {
    await ready(child, exited, last, timeoutMs);
  } catch (err) {
    await end('SIGKILL');
    throw err;
  }
  return {
    pid: child.pid ?? -1,
    stop: () => end('SIGTERM'),
    kill: () => end('SIGKILL'),
    get running() {
      return !gone();
    },
  };
}

/** A redis-server of the bench's own (runRedisServer) on a free port; rejects, naming what to install, without one. */
export async function startBenchRedis(dir: string): Promise<BenchRedis> {
  const binary = findRedisServer();
  if (!binary) throw new Error('redis-server is not installed; install it (on Debian: apt-get install -y redis-server) or leave redis out of --targets');
  const port = await freePort();
  const redis = await runRedisServer(binary, port, dir);
  return { url: `redis://127.0.0.1:${port}`, pid: redis.pid, stop: () => redis.stop() };
}

function ready(child: ReturnType<typeof spawn>, exited: Promise<void>, last: string[], timeoutMs: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server did not start within ${timeoutMs} ms: ${last.join(' | ')}`)), timeoutMs);
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue;
      createInterface({ input: stream }).on('line', (line) => {
        last.push(line);
        if (last.length > 5) last.shift();
        // 'Ready to accept connections' (Redis 7), 'The server is now ready to accept connections' (older)
        if (/ready to accept connections/i.test(line)) {
          clearTimeout(timer);
          resolve();
        }
      });
    }
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited before it was ready: ${last.join(' | ')}`));
    });
  });
}
