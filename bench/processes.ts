/** Starting, watching and stopping the processes of a benchmark run (Linux: reads /proc). */
import type { BenchProtocol } from './protocol.js';
import { fork, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { cpuTicksOf, machineTicksOf, statusKb } from './stats.js';
import type { MachineTicks } from './stats.js';

export const CAPS_JS = fileURLToPath(new URL('../cli/caps.js', import.meta.url));
export const RELAY_JS = fileURLToPath(new URL('./relay.js', import.meta.url));
export const LOAD_JS = fileURLToPath(new URL('./load.js', import.meta.url));
export const IDLE_JS = fileURLToPath(new URL('./idle.js', import.meta.url));

export interface Server {
  readonly child: ChildProcess;
  readonly pid: number;
  /** The last lines it wrote on stderr (its stdout, the event log, goes to /dev/null). */
  readonly stderr: string[];
  readonly exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
  stop(graceMs?: number): Promise<void>;
  kill(): Promise<void>;
}

/** Starts a server process; its stdout (a line per event) is discarded, not parsed, or written to `stdoutFile` (read after the run). */
export function startServer(args: readonly string[], nodeArgs: readonly string[] = [], stdoutFile?: string): Server {
  const fd = stdoutFile === undefined ? undefined : openSync(stdoutFile, 'w');
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, [...nodeArgs, ...args], { stdio: ['ignore', fd ?? 'ignore', 'pipe'] });
  } finally {
    // the child has its own copy
    if (fd !== undefined) closeSync(fd);
  }
  const stderr: string[] = [];
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr.push(...chunk.split('\n').filter((l) => l !== ''));
    if (stderr.length > 20) stderr.splice(0, stderr.length - 20);
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const stop = async (graceMs = 15_000): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };
  return {
    child,
    pid: child.pid ?? -1,
    stderr,
    exited,
    stop,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Forks a bench child (load.js, idle.js) with an IPC channel; its output goes to ours. */
export function forkChild(script: string, arg: unknown): ChildProcess {
  return fork(script, [JSON.stringify(arg)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
}

/** A port free right now on 127.0.0.1 (the hub is then told to use it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts TCP connections on the port; rejects if `server` exits or after `timeoutMs`. */
export async function waitListening(port: number, server: Server, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let gone = false;
  void server.exited.then(() => {
    gone = true;
  });
  while (Date.now() < deadline) {
    if (gone) throw new Error(`${what} exited before listening: ${server.stderr.slice(-5).join(' | ')}`);
    const up = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (up) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${what} was not listening on port ${port} within ${timeoutMs} ms`);
}

/** utime + stime of a process, in clock ticks (NaN if it is gone). */
export function cpuTicks(pid: number): number {
  try {
    return cpuTicksOf(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return Number.NaN;
  }
}

/** The machine's CPU ticks, from /proc/stat; undefined where it cannot be read. */
export function machineTicks(): MachineTicks | undefined {
  try {
    return machineTicksOf(readFileSync('/proc/stat', 'utf8'));
  } catch {
    return undefined;
  }
}

/** `caps hub` as the bench runs it: open lab mode, no rate or connection limit, full sync, on 127.0.0.1 (and on the bench's Redis, for redis). */
export function capsHubArgs(port: number, store: string, dataDir: string, redisUrl?: string, protocol: BenchProtocol = 'caps'): string[] {
  // open lab mode (no tokens to mint); CAPS's own protocol with its exactly-one dispatch, the lab's with the lab's
  const dispatch = protocol === 'caps' ? ['--dispatch', 'one'] : [];
  const args = [CAPS_JS, 'hub', '--port', String(port), '--host', '127.0.0.1', '--allow-anonymous', ...dispatch, '--rate-limit', '0', '--max-connections', '0', '--max-connections-per-address', '0', '--store', store, '--data', dataDir, '--sync', 'full'];
  return redisUrl === undefined ? args : [...args, '--redis', redisUrl];
}

/** Peak (VmHWM) or current (VmRSS) resident memory of a process, in bytes. */
export function memory(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  try {
    return statusKb(readFileSync(`/proc/${pid}/status`, 'utf8'), field);
  } catch {
    return Number.NaN;
  }
}

/** The soft limit on open files of this process (children inherit it), from /proc/self/limits. */
export function openFilesLimit(): number {
  try {
    const match = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return match?.[1] === 'unlimited' ? Infinity : Number(match?.[1]);
  } catch {
    return Number.NaN;
  }
}

/** A progress line on stderr: rewritten in place on a terminal, one line per call otherwise. */
export class Progress {
  private readonly tty = process.stderr.isTTY === true;
  private last = 0;

  update(line: string): void {
    if (this.tty) {
      process.stderr.write(`\r\x1b[2K${line}`);
      this.last = line.length;
    } else {
      process.stderr.write(`${line}\n`);
    }
  }

  /** Ends the rewritten line so what follows starts on its own. */
  done(): void {
    if (this.tty && this.last > 0) process.stderr.write('\r\x1b[2K');
    this.last = 0;
  }
}

/**
 * What a bench mode has running (hubs, redis-servers), stopped in one go: at its end, and when the
 * bench itself is interrupted (SIGINT, SIGTERM). A Ctrl-C in a terminal reaches the children too;
 * a signal to the bench alone would otherwise leave them running.
 */
export class Running {
  private readonly stops = new Set<() => Promise<void>>();
  private readonly onSignal = (signal: NodeJS.Signals): void => {
    if (this.interrupted) return; // a second Ctrl-C while stopping: still stopping
    this.interrupted = true;
    process.stderr.write(`\ncaps bench: ${signal}: stopping what it started\n`);
    void this.stopAll()
      .then(() => {
        for (const dir of this.folders) rmSync(dir, { recursive: true, force: true });
      })
      .finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  /** Folders of the runs in progress, removed once everything is stopped after a signal. */
  readonly folders = new Set<string>();
  private interrupted = false;

  constructor() {
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
  }

  /** Registers a stop; the returned function runs it (once) and forgets it. */
  add(stop: () => Promise<void>): () => Promise<void> {
    let once: Promise<void> | undefined;
    const run = (): Promise<void> => {
      once ??= stop().finally(() => this.stops.delete(run));
      return once;
    };
    this.stops.add(run);
    return run;
  }

  async stopAll(): Promise<void> {
    await Promise.allSettled([...this.stops].map((stop) => stop()));
  }

  /** Stops what is left and stops listening for signals. */
  async close(): Promise<void> {
    await this.stopAll();
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
  }
}
