import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fstatSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Interface } from 'node:readline';
import { isatty } from 'node:tty';
import { fileURLToPath } from 'node:url';
import type { CommandSpec } from './args.js';
import { loadSecret } from '../hub/secret.js';
import { signToken } from '../protocol/token.js';
import { runCommand, untilSignal } from './args.js';

export const demoCommand = {
  usage: 'caps demo',
  summary:
    'Runs the whole system as separate processes: a hub, vendors 1-800-flowers and acme-widgets, and two drivers, in one prefixed log stream. ' +
    'The drivers fail --fail-percent of attempts (nobody home, no access, ...): the parcel goes back to the drivers, and after 3 attempts back to its store; acme-widgets cancels --cancel-percent of its parcels. ' +
    "Reads commands on standard input (stop, kill, start, restart NAME; status; help). Ctrl-C stops them all.",
  flags: {
    port: { type: 'integer', description: "the hub's TCP port; 0 picks a free one", placeholder: 'PORT', default: 3000, env: 'PORT', min: 0, max: 65535 },
    interval: { type: 'integer', description: 'milliseconds between new parcels at each vendor', placeholder: 'MS', default: 2000, min: 1 },
    data: { type: 'string', description: "the hub's data folder (its SQLite storage)", placeholder: 'DIR', default: './data', env: 'CAPS_DATA' },
    delay: { type: 'integer', description: 'milliseconds each driver takes between in-transit and delivered', placeholder: 'MS', default: 1000, min: 0 },
    'fail-percent': { type: 'integer', description: 'share of delivery attempts the drivers fail, with a reason', placeholder: 'PERCENT', default: 20, min: 0, max: 100 },
    'cancel-percent': { type: 'integer', description: 'share of its parcels acme-widgets cancels right after handing them over', placeholder: 'PERCENT', default: 10, min: 0, max: 100 },
  },
  examples: ['npm start', 'npm start -- --port 4000 --interval 500'],
} as const satisfies CommandSpec;

const CAPS_SCRIPT = fileURLToPath(new URL('./caps.js', import.meta.url));
const COLORS = [36, 33, 35, 32, 34, 31];
const HUB_START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;
const LISTENING = /listening on (http:\/\/\S+)/;
/** A pickup in the hub's log (human format): its store and orderId. */
const FIRST_PICKUP = /EVENT: \{ event: 'pickup'.*?store: '([^']+)'.*?orderId: '([^']+)'/;

const HINT =
  "Type 'stop driver-1' and 'stop driver-2' to build a backlog, 'start driver-1' to drain it, " +
  "'restart hub' to kill -9 and restart the hub, 'help' for more.";

const HELP = [
  'commands (one per line):',
  '  stop NAME      stop a process (SIGTERM)',
  '  kill NAME      kill a process (SIGKILL); a killed hub loses nothing',
  '  start NAME     start a stopped process again with the same flags (the hub on the same port and data folder)',
  '  restart NAME   kill -9 the hub, or stop any other process, then start it again',
  '  status         each process: running or stopped, and its pid',
  '  help           this list',
];

/** One run of a child: the process, and how it ended once it has. */
interface Run {
  process: ChildProcess;
  /** Resolves (with e.g. `code 0` or `signal SIGKILL`) once it has exited and its output is read. */
  exited: Promise<string>;
  /** How it ended; undefined while it runs. */
  ended: string | undefined;
  /** Ended on purpose (a command, or the demo stopping): not reported as unexpected. */
  deliberate: boolean;
}

/** A process of the demo, by name; started again with the same arguments. */
interface Child {
  name: string;
  /** Its colour. */
  index: number;
  args: () => string[];
  onLine?: (line: string) => void;
  /** Its token, handed over in CAPS_TOKEN. */
  token?: string;
  /** The latest run. */
  run?: Run;
}

/** Whether commands can come on standard input: a terminal, a pipe or a file (not /dev/null, not closed). */
function stdinAvailable(): boolean {
  try {
    if (isatty(0)) return true;
    const stat = fstatSync(0);
    return stat.isFIFO() || stat.isSocket() || stat.isFile();
  } catch {
    return false;
  }
}

export function runDemo(argv: readonly string[]): Promise<number> {
  return runCommand(demoCommand, argv, async (flags) => {
    const color = process.stdout.isTTY === true;
    const width = '[1-800-flowers]'.length + 1;
    const children: Child[] = [];
    let stopping = false;
    /** The hub's port once it is known, so that a restarted hub comes back where its clients look (even with --port 0). */
    let hubPort: number | undefined;
    let onHubDied: (() => void) | undefined;
    const hubDied = new Promise<'hub-died'>((resolve) => {
      onHubDied = () => resolve('hub-died');
    });

    const say = (line: string): void => {
      process.stdout.write(`${prefix('demo', 0)}${line}\n`);
    };
    function prefix(name: string, index: number): string {
      const label = `[${name}]`.padEnd(width);
      return color ? `\x1b[${COLORS[index % COLORS.length]}m${label}\x1b[0m ` : `${label} `;
    }

    const running = (child: Child): Run | undefined => (child.run && child.run.ended === undefined ? child.run : undefined);

    /** Starts a run of `child`. */
    const launch = (child: Child): Run => {
      // a token travels in the environment, not on the command line where `ps` would show it
      const env = child.token ? { ...process.env, CAPS_TOKEN: child.token } : { ...process.env, CAPS_TOKEN: undefined };
      const proc = spawn(process.execPath, [CAPS_SCRIPT, ...child.args()], { stdio: ['ignore', 'pipe', 'pipe'], env });
      for (const stream of [proc.stdout, proc.stderr]) {
        createInterface({ input: stream }).on('line', (line) => {
          process.stdout.write(`${prefix(child.name, child.index)}${line}\n`);
          child.onLine?.(line);
        });
      }
      const run: Run = { process: proc, exited: Promise.resolve(''), ended: undefined, deliberate: false };
      run.exited = new Promise<string>((resolve) => {
        const ended = (how: string, signal?: NodeJS.Signals | null): void => {
          if (run.ended !== undefined) return;
          run.ended = how;
          if (stopping) {
            // the demo is stopping everything: it says so once
          } else if (run.deliberate || signal === 'SIGINT') {
            // SIGINT: Ctrl-C in the terminal reaches the whole process group, and a child may end
            // before the demo's own handler has run; the demo stops everything next
            say(`${child.name} stopped (${how})`);
          } else {
            say(`${child.name} exited unexpectedly (${how})`);
            if (child.name === 'hub') onHubDied?.();
          }
          resolve(how);
        };
        // 'close', not 'exit': by then every line it wrote has been shown
        proc.once('close', (code, signal) => ended(signal ? `signal ${signal}` : `code ${code}`, signal));
        proc.once('error', (err) => ended(`could not start: ${err.message}`));
      });
      child.run = run;
      return run;
    };

    const add = (name: string, args: () => string[], onLine?: (line: string) => void, token?: string): Child => {
      const child: Child = { name, index: children.length + 1, args, onLine, ...(token ? { token } : {}) };
      children.push(child);
      return child;
    };

    /** Sends `signal` to a running child and waits until it has exited (SIGKILL after a while, if SIGTERM does not do it). */
    const end = async (child: Child, signal: 'SIGTERM' | 'SIGKILL'): Promise<boolean> => {
      const run = running(child);
      if (!run) {
        say(`${child.name} is not running`);
        return false;
      }
      run.deliberate = true;
      say(`${signal === 'SIGKILL' ? 'killing' : 'stopping'} ${child.name} (pid ${run.process.pid}, ${signal})`);
      run.process.kill(signal);
      const timer =
        signal === 'SIGTERM'
          ? setTimeout(() => {
              say(`${child.name} did not stop within ${STOP_TIMEOUT_MS} ms; killing it`);
              run.process.kill('SIGKILL');
            }, STOP_TIMEOUT_MS)
          : undefined;
      await run.exited;
      clearTimeout(timer);
      return true;
    };

    const startAgain = (child: Child): void => {
      if (stopping) return;
      const run = running(child);
      if (run) {
        say(`${child.name} is already running (pid ${run.process.pid})`);
        return;
      }
      const started = launch(child);
      say(`started ${child.name} (pid ${started.process.pid})`);
    };

    const stopAll = async (): Promise<void> => {
      stopping = true;
      // drivers and vendors first, so the hub logs their goodbyes
      const runs = children.map(running).filter((run): run is Run => run !== undefined);
      for (const run of [...runs].reverse()) {
        run.deliberate = true;
        run.process.kill('SIGTERM');
      }
      await Promise.all(
        runs.map(async (run) => {
          const timer = setTimeout(() => run.process.kill('SIGKILL'), STOP_TIMEOUT_MS);
          await run.exited;
          clearTimeout(timer);
        }),
      );
    };

    const command = async (line: string): Promise<void> => {
      const [verb, name, ...rest] = line.trim().split(/\s+/);
      if (!verb) return;
      const names = children.map((c) => c.name).join(', ');
      const target = (): Child | undefined => {
        if (name === undefined || rest.length > 0) {
          say(`usage: ${verb} NAME (one of ${names})`);
          return undefined;
        }
        const child = children.find((c) => c.name === name);
        if (!child) say(`no process named '${name}'; the names are ${names}`);
        return child;
      };
      switch (verb.toLowerCase()) {
        case 'stop': {
          const child = target();
          if (child) await end(child, 'SIGTERM');
          return;
        }
        case 'kill': {
          const child = target();
          if (child) await end(child, 'SIGKILL');
          return;
        }
        case 'start': {
          const child = target();
          if (child) startAgain(child);
          return;
        }
        case 'restart': {
          const child = target();
          if (!child) return;
          // the hub is killed outright: what it acknowledged is on disk, nothing is lost
          if (running(child)) await end(child, child.name === 'hub' ? 'SIGKILL' : 'SIGTERM');
          startAgain(child);
          return;
        }
        case 'status':
          for (const child of children) {
            const run = running(child);
            say(`${child.name.padEnd(width - 2)} ${run ? `running  pid ${run.process.pid}` : `stopped${child.run?.ended ? `  (${child.run.ended})` : ''}`}`);
          }
          return;
        case 'help':
        case '?':
          for (const text of HELP) say(text);
          say(`NAME is one of ${names}. Ctrl-C stops them all.`);
          return;
        default:
          say(`unknown command '${line.trim()}'; type 'help' for the list`);
      }
    };

    /** Reads commands from standard input, one per line, one at a time. */
    const readCommands = (): Interface => {
      const input = createInterface({ input: process.stdin });
      let chain = Promise.resolve();
      input.on('line', (line) => {
        chain = chain.then(() => (stopping ? undefined : command(line))).catch((err: unknown) => {
          say(`command '${line.trim()}' failed: ${err instanceof Error ? err.message : String(err)}`);
        });
      });
      return input;
    };

    // the hub and the demo read the same secret (CAPS_SECRET, or the secret file in --data)
    let secret: string;
    try {
      secret = loadSecret(flags.data).secret;
    } catch (err) {
      say(`cannot read or create the token secret in ${flags.data}: ${err instanceof Error ? err.message : String(err)}`);
      return 1;
    }
    const stop = untilSignal();
    let hubUrl: string | undefined;
    let tracked = false;
    const listening = new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the hub did not report listening within ${HUB_START_TIMEOUT_MS} ms`)), HUB_START_TIMEOUT_MS);
      // a demo: its hub listens on this machine only (--host 127.0.0.1), and runs authenticated
      const hub = add('hub', () => ['hub', '--port', String(hubPort ?? flags.port), '--host', '127.0.0.1', '--data', flags.data], (line) => {
        // the first parcel gets a tracking link, as a shop would give its customer
        const pickup = hubUrl && !tracked ? FIRST_PICKUP.exec(line) : null;
        if (pickup?.[1] && pickup[2]) {
          tracked = true;
          const token = signToken(secret, { role: 'tracker', store: pickup[1], orderId: pickup[2] }, { expiresInSeconds: 7 * 86_400 });
          say(`Tracking link for order ${pickup[2]} of ${pickup[1]} (what its customer would see): ${hubUrl}/track/${token}`);
        }
        const match = LISTENING.exec(line);
        if (match?.[1] && !hubUrl) {
          hubUrl = match[1];
          hubPort = Number(new URL(hubUrl).port) || flags.port;
          clearTimeout(timer);
          resolve(hubUrl);
        }
      });
      void launch(hub).exited.then(() => {
        clearTimeout(timer);
        reject(new Error('the hub exited before it was listening'));
      });
    });

    let url: string;
    try {
      url = (await Promise.race([listening, stop.then(() => undefined)])) ?? '';
    } catch (err) {
      say(`cannot start: ${err instanceof Error ? err.message : String(err)}`);
      await stopAll();
      return 1;
    }
    if (url === '') {
      await stopAll();
      return 0;
    }

    const common = ['--url', url];
    for (const store of ['1-800-flowers', 'acme-widgets']) {
      // one store's customers change their minds now and then
      const cancels = store === 'acme-widgets' ? ['--cancel-percent', String(flags['cancel-percent'])] : [];
      launch(add(store, () => ['vendor', ...common, '--store', store, '--interval', String(flags.interval), ...cancels], undefined, signToken(secret, { role: 'vendor', store })));
    }
    for (const name of ['driver-1', 'driver-2']) {
      // a real round has doors nobody opens: some attempts fail, go back to the drivers, and some parcels back to their store
      launch(add(name, () => ['driver', ...common, '--name', name, '--delay', String(flags.delay), '--fail-percent', String(flags['fail-percent']), '--location-every', '1500'], undefined, signToken(secret, { role: 'driver', name })));
    }
    const dashboard = `${url}/#token=${signToken(secret, { role: 'dashboard' }, { expiresInSeconds: 7 * 86_400 })}`;
    say(`CAPS demo running: hub at ${url}  (health: ${url}/healthz). Press Ctrl-C to stop.`);
    say(`Dashboard: ${dashboard}`);
    const commands = stdinAvailable() ? readCommands() : undefined;
    if (commands) say(HINT);

    const outcome = await Promise.race([stop, hubDied]);
    say(outcome === 'hub-died' ? 'the hub died; stopping the others' : 'stopping all processes');
    commands?.close();
    // standard input would keep the process alive
    if (commands) process.stdin.destroy();
    await stopAll();
    say('all processes stopped');
    return outcome === 'hub-died' ? 1 : 0;
  });
}
