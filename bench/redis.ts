/** redis-server processes of the bench and the tests: a free port (or a given one), a folder of their own, never the machine's Redis. */
import { execFile, spawn } from 'node:child_process';
import { accessSync, constants, mkdirSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
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
  return findBinary('redis-server');
}

/** Where redis-cli is (Debian: redis-tools, which redis-server depends on): on PATH or in /usr/bin; undefined when it is not installed. */
export function findRedisCli(): string | undefined {
  return findBinary('redis-cli');
}

function findBinary(name: string): string | undefined {
  for (const dir of [...(process.env['PATH'] ?? '').split(delimiter), '/usr/bin', '/usr/local/bin']) {
    if (dir !== '' && isExecutable(join(dir, name))) return join(dir, name);
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
  // its own process group, so that a stop reaches the children it forks too (an AOF rewrite after
  // a replica's sync, an RDB for a replica): a child left writing in `dir` outlives its parent
  const child = spawn(binary, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const last: string[] = [];
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const gone = (): boolean => child.exitCode !== null || child.signalCode !== null;
  const signalAll = (signal: NodeJS.Signals): void => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, signal);
    } catch {
      // the group is gone already (or never was): the process alone
      child.kill(signal);
    }
  };
  const end = async (signal: NodeJS.Signals): Promise<void> => {
    if (gone()) return;
    signalAll(signal);
    const timer = signal === 'SIGKILL' ? undefined : setTimeout(() => signalAll('SIGKILL'), 5_000);
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

/** A Redis Cluster started by runRedisCluster: primaries only, no replicas. */
export interface RedisCluster {
  /** '127.0.0.1:p1,127.0.0.1:p2,...': the primaries, in order. */
  readonly nodes: string;
  readonly ports: readonly number[];
  /** Process ids, in the order of `ports`; a restarted node has a new one. */
  readonly pids: readonly number[];
  /** Stops every node (SIGTERM, then SIGKILL after 5 s); resolves once all have exited. */
  stop(): Promise<void>;
  /** SIGKILL to primary `i`; resolves once it has exited (the others notice after the node timeout). */
  kill(i: number): Promise<void>;
  /** Starts primary `i` again on its port and folder (its nodes.conf and AOF): it rejoins; resolves once every node says cluster_state:ok again. */
  restart(i: number): Promise<void>;
}

export interface RedisClusterOptions {
  /** How many primaries (at least 3, the least `redis-cli --cluster create` accepts); 3 unless told. */
  primaries?: number;
  /** The bound on each step: a node starting, the cluster forming, the cluster healthy again; 30 s unless told. */
  timeoutMs?: number;
  /** redis-cli; the one beside `binary`, else the one on PATH or in /usr/bin. */
  cli?: string;
}

/** Milliseconds a node waits before calling an unreachable peer failed (`--cluster-node-timeout`). */
export const CLUSTER_NODE_TIMEOUT_MS = 2_000;
const SLOTS = 16_384;

/**
 * Starts a Redis Cluster of `primaries` primaries on 127.0.0.1, each a runRedisServer (AOF synced
 * on every write) on a free port with a folder of its own under `dir` holding its nodes.conf, and a
 * free cluster-bus port given with `--cluster-port` (the default, port + 10000, may be taken or
 * past 65535). Forms the cluster with `redis-cli --cluster create` (no replicas) and resolves once
 * every node says cluster_state:ok with all 16384 slots served; rejects, leaving no process, if not
 * within `timeoutMs` per step. Needs Redis 7 (`--cluster-port`).
 */
export async function runRedisCluster(binary: string, dir: string, options: RedisClusterOptions = {}): Promise<RedisCluster> {
  const primaries = options.primaries ?? 3;
  const timeoutMs = options.timeoutMs ?? 30_000;
  if (!Number.isInteger(primaries) || primaries < 3) throw new Error(`a Redis Cluster needs at least 3 primaries, not ${primaries}`);
  const cli = options.cli ?? (isExecutable(join(dirname(binary), 'redis-cli')) ? join(dirname(binary), 'redis-cli') : findRedisCli());
  if (!cli) throw new Error('redis-cli is not installed; install it (on Debian: apt-get install -y redis-tools)');

  // two free ports per node, all different (freePort closes its listener, so it may hand one out twice)
  const taken = new Set<number>();
  const another = async (): Promise<number> => {
    for (;;) {
      const port = await freePort();
      if (taken.has(port)) continue;
      taken.add(port);
      return port;
    }
  };
  const ports: number[] = [];
  const busPorts: number[] = [];
  for (let i = 0; i < primaries; i++) {
    ports.push(await another());
    busPorts.push(await another());
  }
  const folder = (i: number): string => join(dir, String(ports[i]));
  const start = (i: number): Promise<RedisProcess> => {
    const port = ports[i] as number;
    const args = ['--cluster-enabled', 'yes', '--cluster-config-file', join(folder(i), `nodes-${port}.conf`), '--cluster-node-timeout', String(CLUSTER_NODE_TIMEOUT_MS), '--cluster-port', String(busPorts[i])];
    return runRedisServer(binary, port, folder(i), timeoutMs, args);
  };
  const processes: Array<RedisProcess | undefined> = [];
  const stopAll = async (): Promise<void> => {
    await Promise.all(processes.map((p) => p?.stop()));
  };
  const healthy = (what: string): Promise<void> => waitClusterOk(cli, ports, `${what}: every node saying cluster_state:ok with all ${SLOTS} slots served`, timeoutMs);

  try {
    const started = await Promise.allSettled(ports.map((_, i) => start(i)));
    for (const result of started) processes.push(result.status === 'fulfilled' ? result.value : undefined);
    const failed = started.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    const create = ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'];
    try {
      await run(cli, create, timeoutMs);
    } catch (err) {
      throw new Error(`redis-cli ${create.join(' ')} failed: ${(err as Error).message}`, { cause: err });
    }
    await healthy('the new cluster');
  } catch (err) {
    await stopAll();
    throw err;
  }

  const check = (i: number): void => {
    if (!Number.isInteger(i) || i < 0 || i >= primaries) throw new Error(`no primary ${i}: the cluster has ${primaries} (0 to ${primaries - 1})`);
  };
  return {
    nodes: ports.map((p) => `127.0.0.1:${p}`).join(','),
    ports,
    get pids() {
      return processes.map((p) => p?.pid ?? -1);
    },
    stop: stopAll,
    async kill(i) {
      check(i);
      await processes[i]?.kill();
    },
    async restart(i) {
      check(i);
      if (processes[i]?.running) throw new Error(`primary ${i} (port ${ports[i]}) is still running; kill it first`);
      processes[i] = await start(i);
      await healthy(`primary ${i} (port ${ports[i]}) back`);
    },
  };
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Runs a command; resolves with its stdout, rejects with its stderr/stdout when it fails or outlasts `timeoutMs`. */
function run(command: string, args: readonly string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message.split('\n')[0]}: ${`${stderr}${stdout}`.trim().split('\n').slice(-5).join(' | ')}`));
      else resolve(stdout);
    });
  });
}

/** Asks every node for CLUSTER INFO until all say cluster_state:ok, all slots assigned and ok, and know every node; rejects after `timeoutMs` with what each said last. */
async function waitClusterOk(cli: string, ports: readonly number[], what: string, timeoutMs: number): Promise<void> {
  const last = new Map<number, string>();
  await pollUntil(async () => {
    const answers = await Promise.all(
      ports.map(async (port) => {
        let info: string;
        try {
          info = await run(cli, ['-h', '127.0.0.1', '-p', String(port), 'cluster', 'info'], 5_000);
        } catch (err) {
          last.set(port, (err as Error).message);
          return false;
        }
        const field = (name: string): string | undefined => new RegExp(`^${name}:(\\S+)`, 'm').exec(info)?.[1];
        last.set(port, `cluster_state:${field('cluster_state')} slots assigned ${field('cluster_slots_assigned')}, ok ${field('cluster_slots_ok')}, known nodes ${field('cluster_known_nodes')}`);
        return field('cluster_state') === 'ok' && field('cluster_slots_assigned') === String(SLOTS) && field('cluster_slots_ok') === String(SLOTS) && field('cluster_known_nodes') === String(ports.length);
      }),
    );
    return answers.every(Boolean) ? true : undefined;
  }, what, timeoutMs).catch((err: Error) => {
    throw new Error(`${err.message}; last seen: ${[...last].map(([port, said]) => `${port}: ${said}`).join('; ')}`);
  });
}

/**
 * Resolves with the first value `check` returns that is not undefined, asking again every `everyMs`;
 * rejects after `timeoutMs`, naming what it waited for (the bench's own tests/helpers/wait.ts poll).
 */
export async function pollUntil<T>(check: () => Promise<T | undefined> | T | undefined, what: string, timeoutMs: number, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}
