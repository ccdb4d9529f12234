import type { CliProcess, Exit } from './cli.js';
import { startCli } from './cli.js';

/** The `caps hub --json` line that says where it listens. */
export const LISTENING_JSON = /"msg":"CAPS hub listening on (http:\/\/[^\s"]+)/;

/**
 * A TCP port on 127.0.0.1 that was free a moment ago, for a hub that must come back on the same
 * port after a restart (so its clients find it again). The bench has the same need.
 */
export { freePort } from '../../bench/processes.js';

export interface HubProcessOptions {
  port: number;
  /** The SQLite folder; the same one across restarts. */
  dataDir: string;
  /** More `caps hub` flags. */
  extra?: readonly string[];
  /** For messages: which start this is (e.g. `the hub (start 2)`). */
  what?: string;
}

/**
 * Starts `caps hub --json` on 127.0.0.1 (a `startCli` child, so `killAllCli` reaches it) and waits,
 * bounded, for its listening line on the given port.
 */
export async function startHubProcess(options: HubProcessOptions): Promise<{ hub: CliProcess; url: string }> {
  const what = options.what ?? 'the hub';
  // open lab mode: these tests are about durability; tokens have tests of their own
  const hub = startCli(['hub', '--port', String(options.port), '--host', '127.0.0.1', '--data', options.dataDir, '--json', '--allow-anonymous', ...(options.extra ?? [])]);
  const [line] = await Promise.race([
    hub.stdout.waitFor(LISTENING_JSON, `${what} to report where it listens`, 10_000),
    hub.exited.then((exit) => {
      throw new Error(`${what} exited (${JSON.stringify(exit)}) before it listened; last lines:\n${hub.lines.all.slice(-15).join('\n')}`);
    }),
  ]);
  const url = LISTENING_JSON.exec(line ?? '')?.[1];
  if (url === undefined) throw new Error(`no URL in the listening line of ${what}: ${line}`);
  if (url !== `http://127.0.0.1:${options.port}`) throw new Error(`${what} listens on ${url}, not on port ${options.port}`);
  return { hub, url };
}

/** `kill -9` the hub process (not its group: it starts nothing) and waits, bounded, for it to be gone. */
export async function killHard(hub: CliProcess, what: string): Promise<Exit> {
  hub.stop('SIGKILL');
  return hub.waitExit(`${what} to die after SIGKILL`, 5_000);
}

/** Resolves or rejects as `promise` does, or rejects after `timeoutMs` naming what it waited for. */
export function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
