import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { CommandSpec } from './args.js';
import { runCommand, untilSignal } from './args.js';

export const demoCommand = {
  usage: 'caps demo',
  summary: 'Runs the whole system as separate processes: a hub, vendors 1-800-flowers and acme-widgets, and two drivers, in one prefixed log stream. Ctrl-C stops them all.',
  flags: {
    port: { type: 'integer', description: "the hub's TCP port; 0 picks a free one", placeholder: 'PORT', default: 3000, env: 'PORT', min: 0, max: 65535 },
    interval: { type: 'integer', description: 'milliseconds between new parcels at each vendor', placeholder: 'MS', default: 2000, min: 1 },
    data: { type: 'string', description: "the hub's data folder (its SQLite store)", placeholder: 'DIR', default: './data', env: 'CAPS_DATA' },
    delay: { type: 'integer', description: 'milliseconds each driver takes between in-transit and delivered', placeholder: 'MS', default: 1000, min: 0 },
  },
  examples: ['npm start', 'npm start -- --port 4000 --interval 500'],
} as const satisfies CommandSpec;

const CAPS_SCRIPT = fileURLToPath(new URL('./caps.js', import.meta.url));
const COLORS = [36, 33, 35, 32, 34, 31];
const HUB_START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;

interface Child {
  name: string;
  process: ChildProcess;
  exited: Promise<number | null>;
}

export function runDemo(argv: readonly string[]): Promise<number> {
  return runCommand(demoCommand, argv, async (flags) => {
    const color = process.stdout.isTTY === true;
    const width = '[1-800-flowers]'.length + 1;
    const children: Child[] = [];
    let stopping = false;
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

    const start = (name: string, args: string[], onLine?: (line: string) => void): Child => {
      const index = children.length + 1;
      const child = spawn(process.execPath, [CAPS_SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      for (const stream of [child.stdout, child.stderr]) {
        createInterface({ input: stream }).on('line', (line) => {
          process.stdout.write(`${prefix(name, index)}${line}\n`);
          onLine?.(line);
        });
      }
      const exited = new Promise<number | null>((resolve) => {
        child.on('exit', (code, signal) => {
          if (!stopping) {
            say(`${name} exited unexpectedly (${signal ? `signal ${signal}` : `code ${code}`})`);
            if (name === 'hub') onHubDied?.();
          }
          resolve(code);
        });
      });
      const entry = { name, process: child, exited };
      children.push(entry);
      return entry;
    };

    const stopAll = async (): Promise<void> => {
      stopping = true;
      // the demo runs in open lab mode, so its hub listens on this machine only (--host 127.0.0.1)
    // drivers and vendors first, so the hub logs their goodbyes
      for (const child of [...children].reverse()) {
        if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill('SIGTERM');
      }
      await Promise.all(
        children.map(async (child) => {
          const timer = setTimeout(() => child.process.kill('SIGKILL'), STOP_TIMEOUT_MS);
          await child.exited;
          clearTimeout(timer);
        }),
      );
    };

    const stop = untilSignal();
    let hubUrl: string | undefined;
    const listening = new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the hub did not report listening within ${HUB_START_TIMEOUT_MS} ms`)), HUB_START_TIMEOUT_MS);
      const hub = start('hub', ['hub', '--port', String(flags.port), '--host', '127.0.0.1', '--data', flags.data, '--allow-anonymous'], (line) => {
        const match = /listening on (http:\/\/\S+)/.exec(line);
        if (match?.[1] && !hubUrl) {
          hubUrl = match[1];
          clearTimeout(timer);
          resolve(hubUrl);
        }
      });
      void hub.exited.then(() => {
        clearTimeout(timer);
        reject(new Error('the hub exited before it was listening'));
      });
    });

    let url: string;
    try {
      url = await Promise.race([listening, stop.then(() => undefined)]) ?? '';
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
    start('1-800-flowers', ['vendor', ...common, '--store', '1-800-flowers', '--interval', String(flags.interval)]);
    start('acme-widgets', ['vendor', ...common, '--store', 'acme-widgets', '--interval', String(flags.interval)]);
    start('driver-1', ['driver', ...common, '--name', 'driver-1', '--delay', String(flags.delay)]);
    start('driver-2', ['driver', ...common, '--name', 'driver-2', '--delay', String(flags.delay)]);
    say(`CAPS demo running: hub at ${url}  (health: ${url}/healthz). Press Ctrl-C to stop.`);

    const outcome = await Promise.race([stop, hubDied]);
    say(outcome === 'hub-died' ? 'the hub died; stopping the others' : 'stopping all processes');
    await stopAll();
    say('all processes stopped');
    return outcome === 'hub-died' ? 1 : 0;
  });
}
