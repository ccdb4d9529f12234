import { secretRotateCommand } from '../cli/secret.js';
import { revokeCommand } from '../cli/token.js';
import { LAB_MODE_TOLERATES } from '../hub/lab-mode.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { CommandSpec } from '../cli/args.js';
import { demoCommand } from '../cli/demo.js';
import { driverCommand } from '../driver/main.js';
import { hubCommand } from '../hub/main.js';
import { vendorCommand } from '../vendor/main.js';
import type { CliProcess, StartOptions } from './helpers/cli.js';
import { childProcesses, healthz, isAlive, killAllCli, portOf, runCli, startCli } from './helpers/cli.js';
import { RawClient, order } from './helpers/hub.js';

const LISTENING = /listening on (http:\/\/\S+)/;
const DEMO_RUNNING = /^\[demo\]\s+CAPS demo running: hub at (http:\/\/\S+)/;

/** Process ids found while a test ran (e.g. `caps demo`'s children): SIGKILLed afterwards if still alive. */
const strayPids = new Set<number>();
const rawClients: RawClient[] = [];
const tempDirs: string[] = [];

/** A fresh data folder for a hub, removed after the test. */
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'caps-cli-'));
  tempDirs.push(dir);
  return dir;
}

afterEach(async () => {
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  for (const client of rawClients.splice(0)) client.close();
  await killAllCli();
  for (const pid of strayPids) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  strayPids.clear();
});

/** Starts `caps hub` on 127.0.0.1 and a free port; resolves once it says where it listens. */
async function startHub(extra: string[] = []): Promise<{ hub: CliProcess; url: string }> {
  const hub = startCli(['hub', '--port', '0', '--host', '127.0.0.1', '--data', tempDir(), '--allow-anonymous', ...extra]);
  const [line] = await hub.stdout.waitFor(LISTENING, 'the hub to report where it listens', 10_000);
  const url = LISTENING.exec(line ?? '')?.[1];
  if (url === undefined) throw new Error(`no URL in the hub's listening line: ${line}`);
  return { hub, url };
}

/** The first capture group of each line matching `pattern`. */
function captures(lines: readonly string[], pattern: RegExp): string[] {
  return lines.map((line) => pattern.exec(line)?.[1]).filter((id): id is string => id !== undefined);
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

async function expectConnectionRefused(port: number, what: string): Promise<void> {
  const error = await healthz(port).then(
    (status) => new Error(`${what}: GET /healthz on port ${port} still answered ${status}`),
    (err: NodeJS.ErrnoException) => err,
  );
  expect((error as NodeJS.ErrnoException).code, `${what}: ${error.message}`).toBe('ECONNREFUSED');
}

describe('caps hub + driver + vendor as separate processes', () => {
  it('delivers 3 parcels end to end; the vendor exits 0 by itself; SIGTERM stops driver and hub with 0', async () => {
    const { hub, url } = await startHub();
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);

    const driver = startCli(['driver', '--url', url, '--name', 'd1', '--delay', '0']);
    // the hub dispatches a pickup only to drivers online at that moment: the driver must be in first
    await hub.lines.waitFor(/^CONNECTED .*role=driver name=d1\b/, 'the hub to log driver d1 connecting');

    const vendor = startCli(['vendor', '--url', url, '--store', 'acme-widgets', '--count', '3', '--interval', '50']);
    expect(await vendor.waitExit('the vendor to deliver its 3 parcels and exit by itself', 20_000)).toEqual({ code: 0, signal: null });

    const thanked = captures(vendor.lines.all, /^VENDOR: Thank you for delivering (\S+) to /);
    expect(thanked).toHaveLength(3);
    const ids = new Set(thanked);
    expect(ids.size).toBe(3);
    expect(new Set(captures(vendor.lines.all, /^VENDOR: handed over (\S+) for /))).toEqual(ids);
    expect(vendor.lines.all).toContain('VENDOR: all 3 parcels delivered');
    expect(vendor.stderr.all).toEqual([]);

    // the driver logs before it reports, but its pipe may still be in flight: wait, bounded
    const anyId = [...ids].map(escape).join('|');
    await driver.lines.waitFor(new RegExp(`^DRIVER: delivered (${anyId})$`), 'the driver to log delivering the 3 parcels', 10_000, 3);
    expect(new Set(captures(driver.lines.all, /^DRIVER: picked up (\S+)$/))).toEqual(ids);
    expect(captures(driver.lines.all, /^DRIVER: picked up (\S+)$/)).toHaveLength(3);
    expect(captures(driver.lines.all, /^DRIVER: delivered (\S+)$/).sort()).toEqual([...ids].sort());

    await hub.lines.waitFor(/^DISCONNECTED .*role=vendor store=acme-widgets\b/, 'the hub to log the vendor disconnecting');
    expect(hub.lines.matching(/^CONNECTED .*role=vendor store=acme-widgets\b/)).toHaveLength(1);
    for (const id of ids) {
      for (const event of ['pickup', 'in-transit', 'delivered']) {
        const logged = hub.lines.matching(new RegExp(`^EVENT: \\{ event: '${event}'.*orderId: '${escape(id)}'`));
        expect(logged, `hub EVENT lines for ${event} of ${id}`).toHaveLength(1);
      }
    }

    driver.stop('SIGTERM');
    expect(await driver.waitExit('the driver to stop after SIGTERM')).toEqual({ code: 0, signal: null });
    expect(driver.stderr.all).toEqual([]);
    await hub.lines.waitFor(/^DISCONNECTED .*role=driver name=d1\b/, 'the hub to log driver d1 disconnecting');

    hub.stop('SIGTERM');
    expect(await hub.waitExit('the hub to stop after SIGTERM')).toEqual({ code: 0, signal: null });
    expect(hub.lines.all.slice(-2)).toEqual(['STOPPING signal=SIGTERM', 'STOPPED']);
    expect(hub.stderr.all).toEqual([]);
    await expectConnectionRefused(portOf(url), 'after the hub stopped');
  });
});

describe('caps hub --json', () => {
  it('writes one JSON object per stdout line, from start to stop', async () => {
    const { hub, url } = await startHub(['--json']);
    const client = new RawClient(url);
    rawClients.push(client);
    await client.connected();
    const parcel = order('acme-widgets', 1);
    await expect(client.request('pickup', parcel)).resolves.toMatchObject({ ok: true });
    client.close();
    await hub.stdout.waitFor(/"msg":"DISCONNECTED"/, 'the hub to log the raw client disconnecting');
    hub.stop('SIGTERM');
    expect(await hub.waitExit('the JSON hub to stop after SIGTERM')).toEqual({ code: 0, signal: null });

    expect(hub.stdout.all.length).toBeGreaterThan(0);
    const records = hub.stdout.all.map((line, i) => {
      try {
        return JSON.parse(line) as Record<string, unknown>;
      } catch {
        throw new Error(`stdout line ${i + 1} is not JSON: ${line}`);
      }
    });
    for (const record of records) {
      expect(record).toEqual(expect.objectContaining({ time: expect.any(String), level: expect.stringMatching(/^(info|warn|error)$/), msg: expect.any(String) }));
    }
    const msgs = records.map((r) => String(r['msg']));
    expect(msgs[0]).toMatch(/^OPEN LAB MODE/);
    // what lab mode tolerates, said at start
    const lab = msgs.indexOf("LAB MODE: the course's clients work unchanged; it accepts:");
    expect(lab).toBeGreaterThan(0);
    expect(msgs.slice(lab + 1, lab + 1 + LAB_MODE_TOLERATES.length)).toEqual(LAB_MODE_TOLERATES.map((line) => `  - ${line}`));
    expect(msgs.find((m) => LISTENING.test(m))).toMatch(/dispatch broadcast\)$/);
    const listening = records.find((r) => LISTENING.test(String(r['msg'])));
    expect(listening).toMatchObject({ port: portOf(url) });
    expect(records.find((r) => r['msg'] === 'STORAGE')).toMatchObject({ kind: 'sqlite', sync: 'full' });
    expect(msgs).toEqual(expect.arrayContaining(['CONNECTED', 'EVENT', 'DISCONNECTED']));
    expect(records.find((r) => r['msg'] === 'EVENT')).toMatchObject({ event: 'pickup', payload: { orderId: parcel.orderId } });
    expect(msgs.slice(-2)).toEqual(['STOPPING', 'STOPPED']);
    expect(hub.stderr.all).toEqual([]);
  });
});

// runCli cleans up after itself, so these short runs can go side by side
describe.concurrent('--help', () => {
  const specs: Array<[string, CommandSpec]> = [
    ['hub', hubCommand],
    ['vendor', vendorCommand],
    ['driver', driverCommand],
    ['demo', demoCommand],
  ];

  it.each(['--help', '-h', 'help'])('caps %s exits 0 and lists every command', async (flag) => {
    const result = await runCli([flag]);
    expect(result.code, result.output).toBe(0);
    expect(result.stdout).toContain('Usage: caps <command>');
    for (const [name, spec] of specs) {
      expect(spec.usage).toBe(`caps ${name}`);
      expect(result.stdout).toMatch(new RegExp(`^  ${name}\\s+\\S`, 'm'));
    }
    expect(result.stderr).toBe('');
  });

  it.each(specs)('caps %s --help exits 0 and documents every flag of its spec', async (name, spec) => {
    const result = await runCli([name, '--help']);
    expect(result.code, result.output).toBe(0);
    expect(result.stdout).toContain('Usage:');
    expect(result.stdout).toContain(`Usage: ${spec.usage} [flags]`);
    expect(result.stdout).toContain(spec.summary);
    for (const [flag, def] of Object.entries(spec.flags)) {
      expect(result.stdout, `--${flag} in '${spec.usage} --help'`).toMatch(new RegExp(`^  --${escape(flag)}\\b`, 'm'));
      if (def.type === 'choice') expect(result.stdout).toContain(`--${flag} ${def.choices.join('|')}`);
      if (def.type !== 'boolean' && def.default !== undefined) expect(result.stdout).toContain(`default ${def.default}`);
      if (def.type !== 'boolean' && def.env !== undefined) expect(result.stdout).toContain(`env ${def.env}`);
    }
    expect(result.stdout).toContain('-h, --help');
    expect(result.stderr).toBe('');
  });
});

describe.concurrent('--help of the sub-commands', () => {
  it.each<[string, CommandSpec]>([
    ['secret rotate', secretRotateCommand],
    ['token revoke', revokeCommand],
  ])('caps %s --help exits 0 and documents every flag', async (name, spec) => {
    const result = await runCli([...name.split(' '), '--help']);
    expect(result.code, result.output).toBe(0);
    expect(result.stdout).toContain(`Usage: caps ${name} [flags]`);
    expect(result.stdout).toContain(spec.summary);
    for (const flag of Object.keys(spec.flags)) expect(result.stdout, `--${flag}`).toMatch(new RegExp(`^  --${escape(flag)}\\b`, 'm'));
  });

  it('caps secret with no sub-command exits 2 and says which there is', async () => {
    const result = await runCli(['secret']);
    expect(result.code, result.output).toBe(2);
    expect(result.stderr).toContain('Usage: caps secret rotate');
  });
});

describe.concurrent('usage errors exit 2', () => {
  it.each<[string, string[], RegExp]>([
    ['an unknown flag', ['vendor', '--bogus'], /^caps vendor: unknown flag --bogus$/m],
    ['a non-integer --count', ['vendor', '--count', 'x'], /^caps vendor: --count must be a whole number, got 'x'$/m],
    ['a --count below its minimum', ['vendor', '--count', '0'], /^caps vendor: --count must be at least 1, got 0$/m],
    ['a flag without its value', ['driver', '--name'], /^caps driver: --name needs a value$/m],
    ['a stray argument', ['driver', 'd1'], /^caps driver: unexpected argument 'd1'$/m],
    ['a --port out of range', ['hub', '--port', '99999'], /^caps hub: --port must be at most 65535, got 99999$/m],
    ['an unknown --dispatch', ['hub', '--dispatch', 'sideways'], /^caps hub: --dispatch must be one of one, broadcast; got 'sideways'$/m],
    ['a value on a boolean flag', ['hub', '--json=yes'], /^caps hub: --json takes no value$/m],
    ['an unknown command', ['frobnicate'], /^caps: unknown command 'frobnicate'$/m],
    ['a bad --allowed-origins', ['hub', '--allowed-origins', 'shop.example.com'], /^caps hub: --allowed-origins: 'shop.example.com' is not an origin/m],
  ])('%s: caps %j', async (_what, args, message) => {
    const result = await runCli(args);
    expect(result.code, result.output).toBe(2);
    expect(result.signal).toBeNull();
    expect(result.stderr).toMatch(message);
    expect(result.stdout).toBe('');
  });

  it('a bad value from the environment (PORT=abc caps hub) names the variable', async () => {
    const result = await runCli(['hub', '--host', '127.0.0.1', '--store', 'memory'], { env: { PORT: 'abc' } });
    expect(result.code, result.output).toBe(2);
    expect(result.stderr).toMatch(/^caps hub: PORT must be a whole number, got 'abc'$/m);
  });

  it('no command at all: exits 2 and shows the usage', async () => {
    const result = await runCli([]);
    expect(result.code, result.output).toBe(2);
    expect(result.stderr).toContain('Usage: caps <command>');
  });
});

describe('caps hub --allow-anonymous without --host', () => {
  it('listens on 127.0.0.1 only, and says so', async () => {
    const hub = startCli(['hub', '--port', '0', '--data', tempDir(), '--allow-anonymous', '--store', 'memory']);
    const [line] = await hub.stdout.waitFor(LISTENING, 'the lab-mode hub to report where it listens', 10_000);
    expect(line).toContain('http://127.0.0.1:');
    expect(hub.stdout.all.join('\n')).toContain('LAB MODE listens on 127.0.0.1 only: --host 0.0.0.0 lets other machines in');
    hub.stop('SIGTERM');
    expect(await hub.waitExit('the lab-mode hub to stop after SIGTERM')).toEqual({ code: 0, signal: null });
  });
});

describe('caps hub on a port in use', () => {
  it('exits 1 and says the port is in use', async () => {
    const { hub, url } = await startHub();
    const port = String(portOf(url));
    const second = await runCli(['hub', '--port', port, '--host', '127.0.0.1', '--store', 'memory']);
    expect(second.code, second.output).toBe(1);
    expect(second.stderr).toMatch(new RegExp(`^caps hub: port ${port} is in use\\b`, 'm'));
    expect(second.output).not.toMatch(LISTENING);

    // the first hub is unaffected
    await expect(healthz(portOf(url))).resolves.toBe(200);
    hub.stop('SIGTERM');
    expect(await hub.waitExit('the first hub to stop after SIGTERM')).toEqual({ code: 0, signal: null });
  });
});

describe('caps demo', () => {
  /** Every parcel delivered, none cancelled: what the tests of backlogs and restarts count on. */
  const NO_FAILURES = ['--fail-percent', '0', '--cancel-percent', '0'];

  /** Starts the demo and waits until it runs; returns the hub's port and the 5 processes it started. */
  async function startDemo(options: StartOptions = {}, lifecycle: readonly string[] = NO_FAILURES): Promise<{ demo: CliProcess; port: number; children: Array<{ pid: number; args: string }> }> {
    const demo = startCli(['demo', '--port', '0', '--interval', '200', '--delay', '50', '--data', tempDir(), ...lifecycle], {}, options);
    const [running] = await demo.lines.waitFor(DEMO_RUNNING, "the demo to say it's running", 15_000);
    const url = DEMO_RUNNING.exec(running ?? '')?.[1];
    if (url === undefined) throw new Error(`no hub URL in the demo's line: ${running}`);
    const port = portOf(url);
    const children = await childProcesses(demo.pid);
    for (const child of children) strayPids.add(child.pid);
    const commands = children.map((c) => /caps\.js (\w+)/.exec(c.args)?.[1]).sort();
    expect(commands, children.map((c) => `${c.pid} ${c.args}`).join('\n')).toEqual(['driver', 'driver', 'hub', 'vendor', 'vendor']);
    return { demo, port, children };
  }

  function expectAllGone(children: ReadonlyArray<{ pid: number; args: string }>): void {
    expect(children.filter((c) => isAlive(c.pid)).map((c) => `${c.pid} ${c.args}`)).toEqual([]);
  }

  /** The demo's children now (after commands restarted some), remembered for the clean-up. */
  async function currentChildren(demo: CliProcess): Promise<Array<{ pid: number; args: string }>> {
    const children = await childProcesses(demo.pid);
    for (const child of children) strayPids.add(child.pid);
    return children;
  }

  /** Where the `nth` line matching `pattern` is (-1: not there). */
  function indexOfMatch(lines: readonly string[], pattern: RegExp, nth = 1): number {
    let seen = 0;
    for (let i = 0; i < lines.length; i++) {
      if (pattern.test(lines[i] ?? '') && ++seen === nth) return i;
    }
    return -1;
  }

  /**
   * Runs `action`, then waits for one more line matching `pattern` than there were before it;
   * resolves with that line's index in `lines.all`.
   */
  async function afterAction(lines: CliProcess['lines'], action: () => void, pattern: RegExp, what: string, timeoutMs = 15_000): Promise<number> {
    const next = lines.matching(pattern).length + 1;
    action();
    await lines.waitFor(pattern, what, timeoutMs, next);
    return indexOfMatch(lines.all, pattern, next);
  }

  /** Stops the demo (SIGINT by default) and checks it exits 0, reports nothing odd, leaves nothing behind. */
  async function expectCleanStop(demo: CliProcess, port: number, options: { children?: ReadonlyArray<{ pid: number; args: string }>; send?: () => void } = {}): Promise<void> {
    const children = options.children ?? (await currentChildren(demo));
    (options.send ?? (() => demo.stop('SIGINT')))();
    expect(await demo.waitExit('the demo to stop after SIGINT', 15_000)).toEqual({ code: 0, signal: null });
    expect(demo.lines.all.at(-1)).toMatch(/^\[demo\]\s+all processes stopped$/);
    expect(demo.lines.matching(/exited unexpectedly/)).toEqual([]);
    expectAllGone(children);
    await expectConnectionRefused(port, 'after the demo stopped');
  }

  it('shows real deliveries: failed attempts with a reason go back to the drivers, then to their store; acme-widgets cancels', async () => {
    const { demo, port } = await startDemo({}, ['--fail-percent', '100', '--cancel-percent', '100']);
    await demo.lines.waitFor(/^\[1-800-flowers\]\s+VENDOR: attempt 1 to deliver \S+ failed \((recipient-absent|access-denied|address-not-found|refused)\)/, 'a failed attempt, with its reason', 15_000);
    await demo.lines.waitFor(/^\[hub\]\s+REATTEMPT/, 'a parcel back with the drivers for another attempt', 15_000);
    await demo.lines.waitFor(/^\[1-800-flowers\]\s+VENDOR: \S+ is back at the store$/, 'a parcel returned to its store', 20_000);
    await demo.lines.waitFor(/^\[acme-widgets\]\s+VENDOR: cancelled \S+ \(the customer changed their mind\)$/, 'acme-widgets to cancel a parcel', 15_000);
    expect(demo.lines.matching(/Thank you for delivering/)).toEqual([]);
    await expectCleanStop(demo, port);
  });

  it('runs parcels end to end; SIGINT stops every process it started and exits 0', async () => {
    const { demo, port, children } = await startDemo();
    await demo.lines.waitFor(/^\[[\w-]+\]\s+VENDOR: Thank you for delivering \S+/, 'a vendor in the demo to thank a driver', 15_000);
    await expect(healthz(port)).resolves.toBe(200);
    // one tracking link, for the first parcel: its page opens
    const [tracking] = await demo.lines.waitFor(/^\[demo\]\s+Tracking link for order \S+ of \S+ \(what its customer would see\): (http:\/\/\S+)$/, 'the demo to print a tracking link');
    const link = /(http:\/\/\S+)$/.exec(tracking ?? '')?.[1] ?? '';
    const page = await fetch(link);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain(/Tracking link for order (\S+)/.exec(tracking ?? '')?.[1] ?? 'an order id');
    expect(demo.lines.matching(/Tracking link for order/)).toHaveLength(1);

    await expectCleanStop(demo, port, { children });
    expect(demo.lines.matching(/^\[demo\]\s+stopping all processes$/)).toHaveLength(1);
    expect(demo.lines.matching(/^\[hub\]\s+STOPPED$/)).toHaveLength(1);
  });

  it('Ctrl-C in a terminal (SIGINT to the whole process group) also stops cleanly with exit 0', async () => {
    const { demo, port, children } = await startDemo();
    await expectCleanStop(demo, port, { children, send: () => demo.signalGroup('SIGINT') });
  });

  it('reports a hub that dies, stops the others and exits 1', async () => {
    const { demo, port, children } = await startDemo();
    const hub = children.find((c) => /caps\.js hub\b/.test(c.args));
    if (!hub) throw new Error('no hub among the demo children');
    process.kill(hub.pid, 'SIGKILL');

    await demo.lines.waitFor(/^\[demo\]\s+hub exited unexpectedly \(signal SIGKILL\)$/, 'the demo to report the hub died');
    await demo.lines.waitFor(/^\[demo\]\s+the hub died; stopping the others$/, 'the demo to say it stops the others');
    expect(await demo.waitExit('the demo to exit after its hub died', 15_000)).toEqual({ code: 1, signal: null });
    expect(demo.lines.all.at(-1)).toMatch(/^\[demo\]\s+all processes stopped$/);
    // only the hub died unexpectedly: the others were stopped by the demo
    expect(demo.lines.matching(/exited unexpectedly/)).toHaveLength(1);
    expectAllGone(children);
    await expectConnectionRefused(port, 'after the hub was killed');
  });

  const PICKUP_EVENT = /^\[hub\]\s+EVENT: \{ event: 'pickup'.*?orderId: '([^']+)'/;

  it("reads commands on stdin: stop both drivers and a backlog builds up; 'start driver-1' drains it", async () => {
    const { demo, port } = await startDemo({ stdin: 'pipe' });
    await demo.lines.waitFor(/^\[demo\]\s+Type 'stop driver-1' and 'stop driver-2' to build a backlog/, 'the demo to print its command hint');
    // both drivers online first, so that stopping them is what leaves the pickups waiting
    await demo.lines.waitFor(/^\[hub\]\s+CONNECTED .*role=driver name=driver-[12]\b/, 'the hub to log both drivers connecting', 15_000, 2);

    const backlog = /^\[hub\]\s+WARN BACKLOG queue=driver depth=\d+ waiting="no driver online"$/;
    const drained = /^\[hub\]\s+QUEUE DRAINED queue=driver\b/;
    const driverGone = /^\[hub\]\s+DISCONNECTED .*role=driver name=driver-[12]\b/;
    const backlogsBefore = demo.lines.matching(backlog).length;
    demo.write('stop driver-1');
    demo.write('stop driver-2');
    const stopped = /^\[demo\]\s+driver-[12] stopped \(code 0\)$/;
    await demo.lines.waitFor(stopped, 'the demo to report both drivers stopped (exit code 0)', 15_000, 2);
    // the demo reports a stop once the process has exited and all its output is shown
    const driversSilentFrom = indexOfMatch(demo.lines.all, stopped, 2);
    await demo.lines.waitFor(driverGone, 'the hub to log both drivers disconnecting', 10_000, 2);
    const noDriverFrom = indexOfMatch(demo.lines.all, driverGone, 2);

    // pickups keep coming from the vendors, and nobody takes them
    await demo.lines.waitFor(backlog, 'the hub to log a backlog on the driver queue with no driver online', 15_000, backlogsBefore + 1);
    expect(indexOfMatch(demo.lines.all, backlog, backlogsBefore + 1)).toBeGreaterThan(noDriverFrom);
    // from here on only a driver's ack can drain the queue
    const drainedBefore = demo.lines.matching(drained).length;

    const backAt = await afterAction(demo.lines, () => demo.write('start driver-1'), /^\[hub\]\s+CONNECTED .*role=driver name=driver-1\b/, 'the hub to log driver-1 connecting again');
    await demo.lines.waitFor(/^\[demo\]\s+started driver-1 \(pid \d+\)$/, 'the demo to say it started driver-1 again');

    // the pickups the hub took in while no driver was online (it logs each one before queueing it)
    const waiting = captures(demo.lines.all.slice(noDriverFrom, backAt), PICKUP_EVENT);
    expect(waiting.length, 'pickups handed over while no driver was online').toBeGreaterThan(0);
    const anyWaiting = waiting.map(escape).join('|');
    await demo.lines.waitFor(new RegExp(`^\\[driver-1\\]\\s+DRIVER: picked up (${anyWaiting})$`), `driver-1 to pick up all ${waiting.length} parcels of the backlog`, 15_000, waiting.length);
    await demo.lines.waitFor(new RegExp(`^\\[(1-800-flowers|acme-widgets)\\]\\s+VENDOR: Thank you for delivering (${anyWaiting}) `), `the vendors to thank a driver for all ${waiting.length} parcels of the backlog`, 15_000, waiting.length);
    await demo.lines.waitFor(drained, 'the hub to log the driver queue drained', 15_000, drainedBefore + 1);
    expect(indexOfMatch(demo.lines.all, drained, drainedBefore + 1)).toBeGreaterThan(backAt);
    // driver-2 is still stopped
    expect(demo.lines.all.slice(driversSilentFrom + 1).filter((line) => line.startsWith('[driver-2]'))).toEqual([]);

    await expectCleanStop(demo, port);
  }, 60_000);

  it("'restart hub' kills -9 the hub and starts it again on the same port; parcels keep flowing; the demo keeps running", async () => {
    const { demo, port } = await startDemo({ stdin: 'pipe' });
    await demo.lines.waitFor(/^\[[\w-]+\]\s+VENDOR: Thank you for delivering \S+/, 'a vendor in the demo to thank a driver', 15_000);
    const hubStatus = /^\[demo\]\s+hub\s+running\s+pid (\d+)$/;

    demo.write('status');
    const [before] = await demo.lines.waitFor(hubStatus, "'status' to show the hub running");
    const oldPid = Number(hubStatus.exec(before ?? '')?.[1]);

    const listening = /^\[hub\]\s+.*listening on (http:\/\/\S+)/;
    const relistenAt = await afterAction(demo.lines, () => demo.write('restart hub'), listening, 'the restarted hub to report where it listens');
    expect(demo.lines.matching(new RegExp(`^\\[demo\\]\\s+killing hub \\(pid ${oldPid}, SIGKILL\\)$`))).toHaveLength(1);
    expect(demo.lines.matching(/^\[demo\]\s+hub stopped \(signal SIGKILL\)$/)).toHaveLength(1);
    expect(demo.lines.matching(/^\[demo\]\s+started hub \(pid \d+\)$/)).toHaveLength(1);
    // the same port, though the demo was started with --port 0: the vendors and drivers find it again
    expect(captures(demo.lines.matching(listening), listening)).toEqual([`http://127.0.0.1:${port}`, `http://127.0.0.1:${port}`]);

    // a parcel the new hub took in is delivered, and its vendor says thank you
    await demo.lines.waitFor(PICKUP_EVENT, 'the restarted hub to take in a pickup', 15_000, demo.lines.all.slice(0, relistenAt).filter((l) => PICKUP_EVENT.test(l)).length + 1);
    const [id] = captures(demo.lines.all.slice(relistenAt), PICKUP_EVENT);
    if (id === undefined) throw new Error('no pickup after the restart');
    await demo.lines.waitFor(new RegExp(`^\\[[\\w-]+\\]\\s+VENDOR: Thank you for delivering ${escape(id)} `), `a vendor to thank a driver for ${id}, handed over after the restart`, 15_000);
    await expect(healthz(port)).resolves.toBe(200);

    demo.write('status');
    const [, now] = await demo.lines.waitFor(hubStatus, "'status' to show the restarted hub running", 10_000, 2);
    expect(Number(hubStatus.exec(now ?? '')?.[1])).not.toBe(oldPid);
    demo.write('frobnicate');
    await demo.lines.waitFor(/^\[demo\]\s+unknown command 'frobnicate'; type 'help' for the list$/, 'the demo to answer an unknown command');

    expect(demo.exit, 'the demo must keep running when a command kills its hub').toBeUndefined();
    expect(demo.lines.matching(/the hub died/)).toEqual([]);
    await expectCleanStop(demo, port);
    // the killed hub never got to say STOPPED; the new one did
    expect(demo.lines.matching(/^\[hub\]\s+STOPPED$/)).toHaveLength(1);
  }, 60_000);
});
