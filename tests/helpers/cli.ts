import { execFile, spawn } from 'node:child_process';
import type { ChildProcess, ChildProcessByStdio } from 'node:child_process';
import { get } from 'node:http';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Lines } from './wait.js';

/** The built CLI (tests/helpers/global-setup.ts builds dist/ before any test runs). */
export const CAPS_JS = fileURLToPath(new URL('../../dist/cli/caps.js', import.meta.url));

/** Environment variables the CLI reads as flag defaults: removed so the caller's shell cannot change a test. */
const CLI_ENV = ['PORT', 'CAPS_URL', 'CAPS_STORE', 'CAPS_DRIVER', 'CAPS_TOKEN', 'CAPS_SECRET', 'CAPS_DATA', 'CAPS_STORE_KIND', 'REDIS_URL', 'CAPS_PUBLIC_URL'] as const;

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface CliProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** e.g. `caps hub --port 0`, for messages. */
  readonly name: string;
  /** stdout and stderr lines, in the order they were read. */
  readonly lines: Lines;
  readonly stdout: Lines;
  readonly stderr: Lines;
  /** Resolves once the process has exited and both its streams are drained. Never rejects. */
  readonly exited: Promise<Exit>;
  /** The exit status, once known. */
  readonly exit: Exit | undefined;
  /** Sends `signal` to this process only (not to anything it started). */
  stop(signal?: NodeJS.Signals): void;
  /** Sends `signal` to this process and everything it started (its process group), like Ctrl-C in a terminal. */
  signalGroup(signal: NodeJS.Signals): void;
  /** Waits (bounded) for the process to exit. */
  waitExit(what: string, timeoutMs?: number): Promise<Exit>;
  /** Writes `line` and a newline to the process's standard input; only with `stdin: 'pipe'`. */
  write(line: string): void;
}

export interface StartOptions {
  /** `ignore` (the default): standard input is /dev/null. `pipe`: write to it with `write(line)`. */
  stdin?: 'ignore' | 'pipe';
}

/** Started with `startCli`, not exited yet: `killAllCli` kills these. */
const running = new Set<CliProcess>();
/** Every CLI process not exited yet, `runCli`'s too: killed if the test worker exits. */
const everything = new Set<CliProcess>();

/**
 * Starts `node dist/cli/caps.js ...args` with piped output. Each child leads its own process group,
 * so `killAllCli()` also reaches the processes it starts (`caps demo`'s hub, vendors and drivers).
 * `env` entries set to undefined are removed.
 */
export function startCli(args: readonly string[], env: Record<string, string | undefined> = {}, options: StartOptions = {}): CliProcess {
  return startScript(CAPS_JS, args, env, options);
}

/** Starts `node script ...args` the same way (a course client, a fixture), killed by `killAllCli()` too. */
export function startScript(script: string, args: readonly string[], env: Record<string, string | undefined> = {}, options: StartOptions = {}): CliProcess {
  const proc = spawnCli(args, env, options, script);
  running.add(proc);
  void proc.exited.then(() => running.delete(proc));
  return proc;
}

function spawnCli(args: readonly string[], env: Record<string, string | undefined>, options: StartOptions = {}, script = CAPS_JS): CliProcess {
  const childEnv: Record<string, string | undefined> = { ...process.env };
  for (const key of CLI_ENV) delete childEnv[key];
  for (const [key, value] of Object.entries(env)) {
    if (value === undefined) delete childEnv[key];
    else childEnv[key] = value;
  }
  const child = spawn(process.execPath, [script, ...args], {
    stdio: [options.stdin ?? 'ignore', 'pipe', 'pipe'],
    env: childEnv,
    detached: process.platform !== 'win32',
  }) as ChildProcessByStdio<Writable | null, Readable, Readable>;
  const name = [script === CAPS_JS ? 'caps' : `node ${script.split('/').pop() ?? script}`, ...args].join(' ');
  const lines = new Lines();
  // a write after the process is gone fails with EPIPE: the test sees that in its own waits, not as a crash
  child.stdin?.on('error', (err) => lines.push(`[test] writing to the standard input of ${name} failed: ${err.message}`));
  const stdout = new Lines();
  const stderr = new Lines();
  createInterface({ input: child.stdout }).on('line', (line) => {
    stdout.push(line);
    lines.push(line);
  });
  createInterface({ input: child.stderr }).on('line', (line) => {
    stderr.push(line);
    lines.push(line);
  });

  let exit: Exit | undefined;
  const exited = new Promise<Exit>((resolve) => {
    child.once('error', (err) => {
      lines.push(`[test] could not start ${name}: ${err.message}`);
      exit = { code: null, signal: null };
      resolve(exit);
    });
    // 'close' (not 'exit'): every line the process wrote has been read by then
    child.once('close', (code, signal) => {
      exit = { code, signal };
      resolve(exit);
    });
  });

  const proc: CliProcess = {
    child,
    pid: child.pid ?? -1,
    name,
    lines,
    stdout,
    stderr,
    exited,
    get exit() {
      return exit;
    },
    stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (exit === undefined) child.kill(signal);
    },
    signalGroup(signal: NodeJS.Signals) {
      signalGroup(proc.pid, signal);
    },
    waitExit(what: string, timeoutMs = 10_000) {
      return new Promise<Exit>((resolve, reject) => {
        const timer = setTimeout(() => {
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${name}) to exit; last lines:\n${lines.all.slice(-15).join('\n')}`));
        }, timeoutMs);
        void exited.then((result) => {
          clearTimeout(timer);
          resolve(result);
        });
      });
    },
    write(line: string) {
      if (!child.stdin) throw new Error(`cannot write '${line}' to ${name}: start it with { stdin: 'pipe' }`);
      child.stdin.write(`${line}\n`);
    },
  };
  everything.add(proc);
  void exited.then(() => everything.delete(proc));
  return proc;
}

export interface CliResult extends Exit {
  stdout: string;
  stderr: string;
  /** stdout and stderr together. */
  output: string;
}

/**
 * Runs a CLI command to completion; fails (and kills it) if it has not exited within `timeoutMs`.
 * It cleans up after itself, so it is safe in concurrent tests (`killAllCli` leaves it alone).
 */
export async function runCli(args: readonly string[], options: { env?: Record<string, string | undefined>; timeoutMs?: number } = {}): Promise<CliResult> {
  const proc = spawnCli(args, options.env ?? {});
  try {
    const exit = await proc.waitExit(`'${proc.name}' to finish`, options.timeoutMs ?? 10_000);
    return { ...exit, stdout: proc.stdout.text(), stderr: proc.stderr.text(), output: proc.lines.text() };
  } finally {
    killGroup(proc);
  }
}

/**
 * For `afterEach`: SIGKILLs every `startCli` process still running, and anything it started; waits
 * (bounded) for them. Not for files whose tests using `startCli` run concurrently.
 */
export async function killAllCli(timeoutMs = 5_000): Promise<void> {
  const procs = [...running];
  for (const proc of procs) killGroup(proc);
  await Promise.all(procs.map((proc) => proc.waitExit('a leftover CLI process after SIGKILL', timeoutMs)));
}

// if the test worker exits with children still running, take them down too
process.once('exit', () => {
  for (const proc of everything) killGroup(proc);
});

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  if (pid <= 0) return;
  try {
    process.kill(process.platform === 'win32' ? pid : -pid, signal);
  } catch (err) {
    // ESRCH: the group is already gone
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/**
 * SIGKILLs a child's process group (the child and whatever it started). Only while the child is not
 * reaped yet: until then its id (the group's id) cannot have been reused by an unrelated process.
 */
function killGroup(proc: CliProcess): void {
  if (proc.child.exitCode === null && proc.child.signalCode === null) signalGroup(proc.pid, 'SIGKILL');
}

/** Whether a process with this id exists (an unreaped zombie counts as existing). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface ProcessInfo {
  pid: number;
  args: string;
}

/** The direct children of `parentPid`, from `ps` (Linux and macOS). */
export function childProcesses(parentPid: number, timeoutMs = 5_000): Promise<ProcessInfo[]> {
  return new Promise((resolve, reject) => {
    execFile('ps', ['-A', '-o', 'pid=,ppid=,args='], { timeout: timeoutMs }, (err, stdout) => {
      if (err) {
        reject(new Error(`listing processes with ps (for the children of ${parentPid}) failed: ${err.message}`));
        return;
      }
      const out: ProcessInfo[] = [];
      for (const row of stdout.split('\n')) {
        const match = /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(row);
        if (match?.[1] && match[2] && Number(match[2]) === parentPid) out.push({ pid: Number(match[1]), args: match[3] ?? '' });
      }
      resolve(out);
    });
  });
}

/** `http://host:PORT...` → `PORT`. */
export function portOf(url: string): number {
  const port = Number(new URL(url).port);
  if (!Number.isInteger(port) || port <= 0) throw new Error(`no port in ${url}`);
  return port;
}

/**
 * GET http://127.0.0.1:PORT/healthz on a fresh connection (no keep-alive pool): resolves with the
 * status code, rejects with the connection error (e.g. ECONNREFUSED) or after `timeoutMs`.
 */
export function healthz(port: number, timeoutMs = 3_000): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path: '/healthz', agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      res.once('end', () => resolve(res.statusCode ?? 0));
    });
    req.once('timeout', () => req.destroy(new Error(`GET http://127.0.0.1:${port}/healthz timed out after ${timeoutMs} ms`)));
    req.once('error', reject);
  });
}
