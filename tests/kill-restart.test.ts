import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DriverClient } from '../driver/driver-client.js';
import type { ParcelMessage } from '../protocol/messages.js';
import { VendorClient } from '../vendor/vendor-client.js';
import type { CliProcess } from './helpers/cli.js';
import { killAllCli, startCli } from './helpers/cli.js';
import { freePort, killHard, startHubProcess, within } from './helpers/hub-process.js';
import { Lines, waitUntil } from './helpers/wait.js';

/**
 * A hub killed with `kill -9` and restarted on the same data loses no acknowledged event (DESIGN.md,
 * "The message queue"). The hub is a child process so that SIGKILL is a real SIGKILL: no close, no
 * last commit. A short ack time-out makes the restarted hub resend unacknowledged messages soon.
 */
const HUB_FLAGS = ['--ack-timeout', '1000'];

const tempDirs: string[] = [];
const clients: Array<{ close(): Promise<void> }> = [];

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'caps-kill-'));
  tempDirs.push(dir);
  return dir;
}

afterEach(async () => {
  for (const client of clients.splice(0)) await client.close();
  await killAllCli();
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** The first capture group of each line matching `pattern`. */
function captures(lines: readonly string[], pattern: RegExp): string[] {
  return lines.map((line) => pattern.exec(line)?.[1]).filter((id): id is string => id !== undefined);
}

/** Values that occur more than once. */
function repeated(values: readonly string[]): string[] {
  const seen = new Set<string>();
  const twice = new Set<string>();
  for (const value of values) (seen.has(value) ? twice : seen).add(value);
  return [...twice];
}

const THANKS = /^VENDOR: Thank you for delivering (\S+) to /;

/** Pickups a store has handed over and not yet seen delivered, at most, before it waits. */
const MAX_OUTSTANDING = 200;

/**
 * One in-process vendor publishing without pause on `lanes` concurrent lanes (each lane publishes
 * its next order once the hub acknowledged the previous one), recording what it was acknowledged and
 * what it saw delivered. `progress` emits `acked` and `seen` for bounded waits across vendors.
 */
class VendorStream {
  readonly vendor: VendorClient;
  readonly log = new Lines();
  /** Order ids whose pickup the hub acknowledged (the publish promise resolved), in that order. */
  readonly acked: string[] = [];
  /** Every message the vendor emitted (after its messageId dedupe), in the order it first saw them. */
  readonly seen: ParcelMessage[] = [];
  /** Publishes that failed (refused, or the vendor closed under them). */
  readonly failures: string[] = [];
  private publishing = false;
  private lanes: Array<Promise<void>> = [];

  constructor(
    url: string,
    readonly store: string,
    private readonly progress: EventEmitter,
  ) {
    this.vendor = new VendorClient({ url, store, interval: 10, ackTimeoutMs: 500, log: this.log.push });
    clients.push(this.vendor);
    for (const event of ['in-transit', 'delivered'] as const) {
      this.vendor.on(event, (message) => {
        this.seen.push(message);
        this.progress.emit('seen');
      });
    }
  }

  get delivered(): ParcelMessage[] {
    return this.seen.filter((m) => m.event === 'delivered');
  }

  /** Acknowledged orders not seen delivered yet. */
  undelivered(): string[] {
    const delivered = new Set(this.delivered.map((m) => m.orderId));
    return this.acked.filter((id) => !delivered.has(id));
  }

  startPublishing(lanes: number): void {
    this.publishing = true;
    for (let i = 0; i < lanes; i++) {
      const lane = async (): Promise<void> => {
        while (this.publishing) {
          // a shop hands over what its drivers can carry: an unbounded flood would measure how
          // fast this machine is, not what a kill loses (a hub under flood is bench's business)
          if (this.acked.length - this.delivered.length >= MAX_OUTSTANDING) {
            await new Promise<void>((resolve) => {
              const go = (): void => {
                this.progress.off('seen', go);
                this.progress.off('stop', go);
                resolve();
              };
              this.progress.on('seen', go);
              this.progress.on('stop', go);
            });
            continue;
          }
          const order = this.vendor.makeOrder();
          await this.vendor.publish(order);
          this.acked.push(order.orderId);
          this.progress.emit('acked');
        }
      };
      this.lanes.push(
        lane().catch((err: unknown) => {
          this.failures.push(`${this.store}: ${err instanceof Error ? err.message : String(err)}`);
        }),
      );
    }
  }

  /** No new orders; resolves once every publish in flight has been acknowledged (or failed). */
  stopPublishing(): Promise<void> {
    this.publishing = false;
    this.progress.emit('stop');
    return Promise.all(this.lanes).then(() => undefined);
  }
}

describe('kill -9 of the hub process mid-stream, restart on the same data dir', () => {
  it('every acknowledged pickup ends delivered at its vendor exactly once, nothing lost, store order kept, across 6 kill points', async () => {
    const port = await freePort();
    const dataDir = tempDir();
    const hubs: CliProcess[] = [];
    const start = async (n: number): Promise<CliProcess> => {
      const { hub } = await startHubProcess({ port, dataDir, extra: HUB_FLAGS, what: `the hub (start ${n})` });
      hubs.push(hub);
      return hub;
    };
    let hub = await start(1);
    const url = `http://127.0.0.1:${port}`;

    const progress = new EventEmitter();
    progress.setMaxListeners(50);
    const driverLog = new Lines();
    const drivers = [0, 5].map((delay, i) => {
      const driver = new DriverClient({ url, name: `d${i + 1}`, delay, ackTimeoutMs: 500, log: driverLog.push });
      clients.push(driver);
      return driver;
    });
    const streams = ['store-a', 'store-b'].map((store) => new VendorStream(url, store, progress));
    await Promise.all([...drivers, ...streams.map((s) => s.vendor)].map((client) => client.start()));
    await hub.stdout.waitFor(/"msg":"CONNECTED".*"role":"driver"/, 'the hub to log both drivers connecting', 10_000, 2);

    const totalAcked = (): number => streams.reduce((n, s) => n + s.acked.length, 0);
    const failures = (): string[] => streams.flatMap((s) => s.failures);
    /** Diagnostics for a failed wait: what is missing and the last lines of everyone. */
    const state = (): string =>
      [
        ...streams.map((s) => `${s.store}: ${s.acked.length} acknowledged, ${s.delivered.length} delivered, undelivered: ${s.undelivered().join(' ') || '-'}`),
        `publish failures: ${failures().join('; ') || '-'}`,
        ...streams.map((s) => `last lines of vendor ${s.store}:\n${s.log.all.slice(-8).join('\n')}`),
        `last driver lines:\n${driverLog.all.slice(-8).join('\n')}`,
        `last hub lines:\n${hub.lines.all.slice(-12).join('\n')}`,
      ].join('\n');
    const totalDelivered = (): number => streams.reduce((n, s) => n + s.delivered.length, 0);
    const untilAcked = (n: number, what: string): Promise<unknown> =>
      waitUntil(progress, 'acked', () => (totalAcked() >= n || failures().length > 0 ? true : undefined), `${n} acknowledged pickups in all (${what})`, 15_000);
    const untilDelivered = (n: number, what: string): Promise<unknown> =>
      waitUntil(progress, 'seen', () => (totalDelivered() >= n ? true : undefined), `${n} orders delivered at the vendors in all (${what})`, 15_000);
    const step = async <T>(promise: Promise<T>): Promise<T> => {
      try {
        return await promise;
      } catch (err) {
        throw new Error(`${err instanceof Error ? err.message : String(err)}\n${state()}`);
      }
    };

    for (const stream of streams) stream.startPublishing(3);

    // each kill point resolves when it is time to kill; called once the hub before it is up
    const killPoints: Array<{ name: string; reached: () => Promise<unknown> }> = [
      { name: 'after 10 acknowledged pickups', reached: () => untilAcked(10, 'kill point 1') },
      { name: '15 more pickups acknowledged by the restarted hub', reached: () => untilAcked(totalAcked() + 15, 'kill point 2') },
      {
        name: 'the restarted hub just accepted its first new step (clients back, backlog flowing)',
        reached: () => hub.stdout.waitFor(/"msg":"EVENT"/, 'the restarted hub to accept its first step (kill point 3)', 15_000),
      },
      { name: 'right after the restarted hub listens, before its clients are back', reached: () => Promise.resolve() },
      { name: '10 more orders delivered at the vendors by the restarted hub', reached: () => untilDelivered(totalDelivered() + 10, 'kill point 5') },
      { name: '20 more pickups acknowledged after the restarts', reached: () => untilAcked(totalAcked() + 20, 'kill point 6') },
    ];
    const snapshots: string[] = [];
    let inFlightAtSomeKill = false;
    for (const [i, point] of killPoints.entries()) {
      await step(point.reached());
      expect(failures(), `publishes failed before kill point ${i + 1}`).toEqual([]);
      const undelivered = streams.reduce((n, s) => n + s.undelivered().length, 0);
      if (undelivered > 0) inFlightAtSomeKill = true;
      snapshots.push(`kill ${i + 1} (${point.name}): ${totalAcked()} acknowledged, ${undelivered} of them undelivered`);
      expect(await killHard(hub, `the hub (start ${i + 1})`)).toEqual({ code: null, signal: 'SIGKILL' });
      hub = await step(start(i + 2));
    }

    // the last hub keeps working: more pickups, then no new ones
    await step(untilAcked(totalAcked() + 10, 'after the last restart'));
    await step(within(Promise.all(streams.map((s) => s.stopPublishing())), 10_000, 'the publishes in flight to be acknowledged'));
    expect(failures()).toEqual([]);
    await step(
      waitUntil(progress, 'seen', () => (streams.every((s) => s.undelivered().length === 0) ? true : undefined), 'every acknowledged order to be delivered at its vendor', 20_000),
    );

    const context = snapshots.join('\n');
    expect(inFlightAtSomeKill, `at least one kill caught parcels acknowledged but not yet delivered:\n${context}`).toBe(true);
    const everyDelivered: string[] = [];
    for (const stream of streams) {
      const delivered = stream.delivered;
      const ids = delivered.map((m) => m.orderId);
      everyDelivered.push(...ids);
      expect(stream.acked.length, `${stream.store}: orders acknowledged`).toBeGreaterThan(0);
      expect(repeated(ids), `${stream.store}: orders delivered more than once after the vendor's dedupe\n${context}`).toEqual([]);
      expect([...ids].sort(), `${stream.store}: delivered orders = acknowledged orders\n${context}`).toEqual([...stream.acked].sort());
      expect(delivered.filter((m) => m.store !== stream.store || m.queueId !== stream.store), `${stream.store}: messages of another store`).toEqual([]);

      // store order: delivered messages come in increasing seq
      const seqs = delivered.map((m) => m.seq);
      const backwards = seqs.flatMap((seq, k) => (k > 0 && seq <= (seqs[k - 1] ?? 0) ? [`#${k}: seq ${seqs[k - 1]} then ${seq} (${delivered[k]?.orderId})`] : []));
      expect(backwards, `${stream.store}: delivered out of store order`).toEqual([]);
      // stronger: this vendor is its queue's only consumer, so it saw every message of it, in order, none missing
      const all = stream.seen.map((m) => m.seq);
      expect(all, `${stream.store}: seq of every in-transit and delivered message, as first seen`).toEqual(all.map((_, k) => k + 1));
      const inTransit = stream.seen.filter((m) => m.event === 'in-transit').map((m) => m.orderId);
      expect([...inTransit].sort(), `${stream.store}: one in-transit per acknowledged order`).toEqual([...stream.acked].sort());
      for (const message of delivered) {
        const transit = stream.seen.find((m) => m.event === 'in-transit' && m.orderId === message.orderId);
        expect(transit?.seq ?? Infinity, `${stream.store}: in-transit of ${message.orderId} before its delivered`).toBeLessThan(message.seq);
      }

      const thanked = captures(stream.log.all, THANKS);
      expect(thanked, `${stream.store}: one 'Thank you for delivering' line per acknowledged order`).toHaveLength(stream.acked.length);
      expect(new Set(thanked)).toEqual(new Set(stream.acked));
    }
    expect(repeated(everyDelivered), 'orders delivered at both vendors').toEqual([]);

    // the hub processes: no errors logged, nothing on stderr
    for (const [i, h] of hubs.entries()) {
      expect(h.stderr.all, `stderr of the hub (start ${i + 1})`).toEqual([]);
      const errors = h.stdout.all.filter((line) => line.includes('"level":"error"'));
      expect(errors, `errors logged by the hub (start ${i + 1})`).toEqual([]);
    }
    expect(hubs).toHaveLength(killPoints.length + 1);
  }, 60_000);

  it('caps vendor --count 5 still exits 0 once all 5 are delivered, though the hub was killed -9 and restarted mid-run', async () => {
    const port = await freePort();
    const dataDir = tempDir();
    const first = await startHubProcess({ port, dataDir, extra: HUB_FLAGS, what: 'the hub (start 1)' });
    const url = first.url;

    // a 500 ms drive: every parcel is still on its way when the hub is killed after the first hand-over
    const driver = startCli(['driver', '--url', url, '--name', 'd1', '--delay', '500']);
    await first.hub.stdout.waitFor(/"msg":"CONNECTED".*"role":"driver","name":"d1"/, 'the hub to log driver d1 connecting');
    const vendor = startCli(['vendor', '--url', url, '--store', 's', '--count', '5', '--interval', '50']);
    await vendor.lines.waitFor(/^VENDOR: handed over \S+ for /, 'the vendor to hand over its first parcel');

    expect(vendor.exit, 'the vendor must still be running when the hub is killed').toBeUndefined();
    expect(await killHard(first.hub, 'the hub (start 1)')).toEqual({ code: null, signal: 'SIGKILL' });
    await vendor.lines.waitFor(/^VENDOR: s lost the hub\b/, 'the vendor to notice the hub is gone');
    const second = await startHubProcess({ port, dataDir, extra: HUB_FLAGS, what: 'the hub (start 2)' });

    const exit = await vendor.waitExit('the vendor to see all 5 parcels delivered and exit by itself after the hub restart', 25_000);
    expect(exit, vendor.lines.text()).toEqual({ code: 0, signal: null });

    const lines = vendor.lines.all;
    const thanked = captures(lines, THANKS);
    expect(thanked, lines.join('\n')).toHaveLength(5);
    expect(new Set(thanked).size).toBe(5);
    expect(new Set(captures(lines, /^VENDOR: handed over (\S+) for /))).toEqual(new Set(thanked));
    expect(lines).toContain('VENDOR: all 5 parcels delivered');
    // the kill came mid-run: the vendor lost the hub before it was done, and was thanked after
    const lostAt = lines.findIndex((line) => /^VENDOR: s lost the hub\b/.test(line));
    const doneAt = lines.indexOf('VENDOR: all 5 parcels delivered');
    expect(lostAt).toBeGreaterThanOrEqual(0);
    expect(lostAt, lines.join('\n')).toBeLessThan(doneAt);
    expect(captures(lines.slice(lostAt), THANKS).length, 'parcels delivered after the hub was killed').toBeGreaterThan(0);
    expect(vendor.stderr.all).toEqual([]);

    expect(second.hub.exit, 'the restarted hub is still running').toBeUndefined();
    expect(driver.exit, 'the driver is still running').toBeUndefined();
    expect(second.hub.stderr.all).toEqual([]);
  }, 40_000);
});
