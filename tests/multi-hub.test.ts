import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { DriverClient } from '../driver/driver-client.js';
import type { ParcelMessage } from '../protocol/messages.js';
import { VendorClient } from '../vendor/vendor-client.js';
import type { TokenSubject } from '../protocol/token.js';
import { signToken } from '../protocol/token.js';
import type { CliProcess } from './helpers/cli.js';
import { killAllCli, startCli } from './helpers/cli.js';
import { Cleanup, RawClient, connectClient, order, records, startHub, startSecureHub } from './helpers/hub.js';
import { RedisStorage } from '../hub/storage/redis-storage.js';
import { RedisKeys, shardOf } from '../hub/storage/redis-keys.js';
import { TestRedis, fileRedis, freePort } from './helpers/redis.js';
import { Lines, poll, waitUntil } from './helpers/wait.js';

const cleanup = new Cleanup();
const testRedis = fileRedis();
afterEach(async () => {
  await cleanup.run();
  await killAllCli();
  // a test that stopped Redis leaves it running again for the next one
  if (!testRedis().running) await testRedis().run();
});

/** Two in-process hubs on the test's Redis, under a prefix of their own, each pickup to one driver. */
async function twoHubs(options: { ackTimeoutMs?: number; driverPrefetch?: number } = {}) {
  const prefix = `t${randomUUID()}:`;
  const a = cleanup.add(await startHub({ redisUrl: testRedis().url, redisPrefix: prefix, dispatch: 'one', ...options }), (h) => h.close());
  const b = cleanup.add(await startHub({ redisUrl: testRedis().url, redisPrefix: prefix, dispatch: 'one', ...options }), (h) => h.close());
  return { a, b, prefix };
}

function collect(vendor: VendorClient): ParcelMessage[] {
  const got: ParcelMessage[] = [];
  vendor.on('delivered', (m) => got.push(m));
  return got;
}

describe('several hubs on one Redis', () => {
  it('carries parcels from a vendor on hub A to a driver on hub B, and back to every vendor of the store on either hub', async () => {
    const { a, b } = await twoHubs();
    const onA = cleanup.add(new VendorClient({ url: a.url, store: 'acme', log: () => undefined }), (v) => v.close());
    const alsoOnB = cleanup.add(new VendorClient({ url: b.url, store: 'acme', log: () => undefined }), (v) => v.close());
    const driver = cleanup.add(new DriverClient({ url: b.url, name: 'd-on-b', delay: 0, log: () => undefined }), (d) => d.close());
    await Promise.all([onA.start(), alsoOnB.start(), driver.start()]);
    const heardOnA = collect(onA);
    const heardOnB = collect(alsoOnB);
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await onA.publish()).orderId);
    await waitUntil(onA, 'delivered', () => (heardOnA.length >= 5 ? true : undefined), 'the vendor on hub A to hear 5 deliveries');
    await waitUntil(alsoOnB, 'delivered', () => (heardOnB.length >= 5 ? true : undefined), 'the vendor of the same store on hub B to hear them too');
    expect(heardOnA.map((m) => m.orderId).sort()).toEqual([...ids].sort());
    expect(heardOnB.map((m) => m.orderId).sort()).toEqual([...ids].sort());
    expect(heardOnA.every((m) => m.driver === 'd-on-b')).toBe(true);
  });

  it('tells a driver on hub B of a cancel a vendor sent through hub A, and refuses its next step', async () => {
    const { a, b } = await twoHubs();
    const lines: string[] = [];
    const vendor = cleanup.add(new VendorClient({ url: a.url, store: 'acme', log: (l) => lines.push(l) }), (v) => v.close());
    const driver = cleanup.add(new DriverClient({ url: b.url, name: 'd-on-b', delay: 60_000, log: () => undefined }), (d) => d.close());
    const told: ParcelMessage[] = [];
    driver.on('cancelled', (m) => told.push(m));
    const transit: ParcelMessage[] = [];
    vendor.on('in-transit', (m) => transit.push(m));
    await Promise.all([vendor.start(), driver.start()]);
    const placed = vendor.makeOrder();
    await vendor.publish(placed);
    await waitUntil(vendor, 'in-transit', () => (transit.length === 1 ? true : undefined), 'the driver on hub B to take the parcel on its way');
    expect(await vendor.cancel(placed.orderId, 'out of stock'), lines.join('\n')).toMatchObject({ duplicate: false });
    await waitUntil(driver, 'cancelled', () => (told.length === 1 ? true : undefined), 'the driver on hub B to be told of the cancel made on hub A');
    expect(told[0]).toMatchObject({ orderId: placed.orderId, details: { note: 'out of stock' } });
  });

  it('shows a dashboard on hub B the steps recorded on hub A', async () => {
    const { a, b } = await twoHubs();
    const dashboard = cleanup.add(new RawClient(b.url, { auth: { role: 'dashboard' } }), (c) => c.close());
    const vendor = cleanup.add(new RawClient(a.url, { auth: { role: 'vendor', store: 'acme' } }), (c) => c.close());
    await Promise.all([dashboard.connected(), vendor.connected()]);
    // hub A hears within a second that a dashboard is open somewhere (what it missed before, the
    // dashboard loads over HTTP): pickups until one shows
    let n = 0;
    const [update] = await poll(async () => {
      await vendor.request('pickup', order('acme', ++n));
      const seen = dashboard.of('parcel');
      return seen.length > 0 ? seen : undefined;
    }, 'the dashboard on hub B to see a pickup made on hub A', 10_000, 100);
    expect(update).toMatchObject({ event: 'pickup', store: 'acme' });
    expect(n).toBeLessThan(40);
  });

  it('broadcasts nothing between hubs while no dashboard or tracking page is open on any of them', async () => {
    const { a, b, prefix } = await twoHubs();
    const admin = cleanup.add(new Redis(testRedis().url), (r) => r.quit());
    const vendor = cleanup.add(new VendorClient({ url: a.url, store: 'acme', log: () => undefined }), (v) => v.close());
    const driver = cleanup.add(new DriverClient({ url: b.url, name: 'd1', delay: 0, log: () => undefined }), (d) => d.close());
    await Promise.all([vendor.start(), driver.start()]);
    const delivered = collect(vendor);
    const broadcasts = async (): Promise<number> => Number(await admin.xlen(`${prefix}socket.io`));
    const before = await broadcasts();
    for (let i = 0; i < 10; i++) await vendor.publish();
    await waitUntil(vendor, 'delivered', () => (delivered.length >= 10 ? true : undefined), 'ten parcels delivered across the hubs');
    expect((await broadcasts()) - before, 'adapter messages with nobody watching').toBe(0);
  });

  it('gives each pickup to exactly one driver across hubs', async () => {
    // two pickups a driver at most, so the hub where pickups arrive cannot keep them all
    const { a, b } = await twoHubs({ driverPrefetch: 2 });
    const drivers = [
      cleanup.add(new DriverClient({ url: a.url, name: 'da', delay: 0, log: () => undefined }), (d) => d.close()),
      cleanup.add(new DriverClient({ url: b.url, name: 'db', delay: 0, log: () => undefined }), (d) => d.close()),
    ];
    const picked = new Map<string, string[]>();
    for (const d of drivers) d.on('picked-up', (m) => picked.set(m.orderId, [...(picked.get(m.orderId) ?? []), d.name]));
    const vendor = cleanup.add(new VendorClient({ url: a.url, store: 'acme', log: () => undefined }), (v) => v.close());
    await Promise.all([vendor.start(), ...drivers.map((d) => d.start())]);
    const delivered = collect(vendor);
    await Promise.all(Array.from({ length: 30 }, () => vendor.publish()));
    await waitUntil(vendor, 'delivered', () => (delivered.length >= 30 ? true : undefined), '30 parcels delivered across two hubs');
    expect([...picked.values()].filter((names) => names.length !== 1)).toEqual([]);
    expect(new Set([...picked.values()].map((names) => names[0])).size).toBe(2);
  });

  it('takes the steps of a driver (with a token) that moved to another hub after it was handed the pickup', async () => {
    const prefix = `t${randomUUID()}:`;
    const a = cleanup.add(await startSecureHub({ redisUrl: testRedis().url, redisPrefix: prefix }), (h) => h.close());
    const b = cleanup.add(await startSecureHub({ redisUrl: testRedis().url, redisPrefix: prefix }), (h) => h.close());
    const [vendor, onA] = await Promise.all([connectClient(cleanup, a.url, { role: 'vendor', store: 'acme' }), connectClient(cleanup, a.url, { role: 'driver', name: 'd1' })]);
    await expect(vendor.request('pickup', order('acme', 1))).resolves.toMatchObject({ ok: true });
    await onA.waitFor('pickup', 1, 'the driver on hub A to be handed the pickup');
    onA.close();
    // the same driver, now on hub B, which never dispatched anything to it
    const onB = await connectClient(cleanup, b.url, { role: 'driver', name: 'd1' });
    await expect(onB.request('in-transit', order('acme', 1))).resolves.toMatchObject({ ok: true });
    await expect(onB.request('delivered', order('acme', 1))).resolves.toMatchObject({ ok: true });
    // and another driver still may not
    const other = await connectClient(cleanup, b.url, { role: 'driver', name: 'd2' });
    await expect(vendor.request('pickup', order('acme', 2))).resolves.toMatchObject({ ok: true });
    await expect(other.request('in-transit', order('acme', 1))).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_NOT_DISPATCHED' } });
  });

  it('reads on past a full window once the vendors acknowledge, on their hub and on another hub', async () => {
    const prefix = `t${randomUUID()}:`;
    const a = cleanup.add(await startHub({ redisUrl: testRedis().url, redisPrefix: prefix, window: 2 }), (h) => h.close());
    const b = cleanup.add(await startHub({ redisUrl: testRedis().url, redisPrefix: prefix, window: 2 }), (h) => h.close());
    // vendors that acknowledge only with received, when the test says so
    const onA = cleanup.add(new RawClient(a.url, { auth: { role: 'vendor', store: 'acme' }, autoAck: false }), (c) => c.close());
    const onB = cleanup.add(new RawClient(b.url, { auth: { role: 'vendor', store: 'acme' }, autoAck: false }), (c) => c.close());
    const driver = cleanup.add(new RawClient(a.url, { auth: { role: 'driver', name: 'd1' } }), (c) => c.close());
    await Promise.all([onA.connected(), onB.connected(), driver.connected()]);
    for (let i = 1; i <= 4; i++) await expect(onA.request('pickup', order('acme', i))).resolves.toMatchObject({ ok: true });
    for (let i = 1; i <= 4; i++) await expect(driver.request('in-transit', order('acme', i))).resolves.toMatchObject({ ok: true });
    // each hub holds its window of two
    await onA.waitFor('in-transit', 2, 'the vendor on hub A to get its window');
    await onB.waitFor('in-transit', 2, 'the vendor on hub B to get its window');
    // the vendor on hub A takes them off the queue: both hubs read on
    for (const m of onA.of('in-transit').slice(0, 2)) await expect(onA.request('received', { clientId: 'acme', messageId: m.messageId })).resolves.toMatchObject({ ok: true });
    await onA.waitFor('in-transit', 4, 'the vendor on hub A to get the rest');
    await onB.waitFor('in-transit', 4, 'the vendor on hub B to get the rest, though another hub’s vendor acknowledged');
    expect(onB.of('in-transit').map((m) => m.orderId)).toEqual([1, 2, 3, 4].map((i) => order('acme', i).orderId));
  });

  it('hands the pickups of a hub’s last driver to another hub’s drivers as soon as it leaves, not once they are idle', async () => {
    const { a, b } = await twoHubs();
    const vendor = cleanup.add(new RawClient(b.url, { auth: { role: 'vendor', store: 'acme' } }), (c) => c.close());
    const leaving = cleanup.add(new RawClient(a.url, { auth: { role: 'driver', name: 'd-on-a' }, autoAck: false }), (c) => c.close());
    await Promise.all([vendor.connected(), leaving.connected()]);
    for (let i = 1; i <= 3; i++) await expect(vendor.request('pickup', order('acme', i))).resolves.toMatchObject({ ok: true });
    await leaving.waitFor('pickup', 3, 'the driver on hub A to be handed the three pickups');
    const staying = cleanup.add(new RawClient(b.url, { auth: { role: 'driver', name: 'd-on-b' }, autoAck: false }), (c) => c.close());
    await staying.connected();
    leaving.close();
    // released at once: well before the 6 s after which another hub would sweep them
    await staying.waitFor('pickup', 3, 'the driver on hub B to be handed the three pickups', 4_000);
    expect(records(a.logs, 'PICKUPS RELEASED')).toEqual([expect.objectContaining({ pickups: 3, reason: 'no driver left on this hub' })]);
  });

  it('keeps a flood of one store from holding up the other stores of its shard, across hubs', async () => {
    const { a, b } = await twoHubs({ driverPrefetch: 2 });
    // two stores of the same shard: one pickups stream
    const noisy = 'noisy';
    let quiet = 'quiet-0';
    for (let i = 1; shardOf(quiet) !== shardOf(noisy); i++) quiet = `quiet-${i}`;
    const flood = cleanup.add(new RawClient(a.url, { auth: { role: 'vendor', store: noisy } }), (c) => c.close());
    const calm = cleanup.add(new RawClient(a.url, { auth: { role: 'vendor', store: quiet } }), (c) => c.close());
    await Promise.all([flood.connected(), calm.connected()]);
    for (let i = 0; i < 300; i += 50) await Promise.all(Array.from({ length: 50 }, (_, k) => flood.request('pickup', order(noisy, i + k))));
    for (let i = 0; i < 3; i++) await expect(calm.request('pickup', order(quiet, i))).resolves.toMatchObject({ ok: true });
    // one driver, on the other hub, two pickups at a time
    const driver = cleanup.add(new DriverClient({ url: b.url, name: 'd1', delay: 0, log: () => undefined }), (d) => d.close());
    await driver.start();
    await poll(() => (calm.of('delivered').length >= 3 ? true : undefined), `the quiet store's 3 parcels to be delivered`, 30_000);
    expect(flood.of('delivered').length, 'noisy parcels delivered before the quiet store’s three').toBeLessThan(100);
  }, 60_000);

  it.each(['in open lab mode', 'with tokens'])('loses nothing when a hub is killed: its clients move on to the next hub in --url (%s)', async (mode) => {
    const own = cleanup.add(await TestRedis.start(), (r) => r.stop());
    const [portA, portB] = [await freePort(), await freePort()];
    const secret = `multi-hub-secret-${randomUUID()}`;
    const withTokens = mode === 'with tokens';
    const hubArgs = (port: number) => ['hub', '--port', String(port), '--host', '127.0.0.1', '--redis', own.url, '--ack-timeout', '1000', '--json', ...(withTokens ? [] : ['--allow-anonymous'])];
    const hubA: CliProcess = startCli(hubArgs(portA), { CAPS_SECRET: secret });
    const hubB: CliProcess = startCli(hubArgs(portB), { CAPS_SECRET: secret });
    const token = (subject: TokenSubject): { token?: string } => (withTokens ? { token: signToken(secret, subject) } : {});
    await Promise.all([hubA.stdout.waitFor(/listening on/, 'hub A to listen'), hubB.stdout.waitFor(/listening on/, 'hub B to listen')]);
    const [urlA, urlB] = [`http://127.0.0.1:${portA}`, `http://127.0.0.1:${portB}`];
    const lines = new Lines();
    const vendor = cleanup.add(new VendorClient({ url: `${urlA},${urlB}`, store: 'acme', ackTimeoutMs: 500, log: lines.push, ...token({ role: 'vendor', store: 'acme' }) }), (v) => v.close());
    const drivers = [
      cleanup.add(new DriverClient({ url: `${urlA},${urlB}`, name: 'd1', delay: 5, ackTimeoutMs: 500, log: lines.push, ...token({ role: 'driver', name: 'd1' }) }), (d) => d.close()),
      cleanup.add(new DriverClient({ url: `${urlB},${urlA}`, name: 'd2', delay: 5, ackTimeoutMs: 500, log: lines.push, ...token({ role: 'driver', name: 'd2' }) }), (d) => d.close()),
    ];
    await Promise.all([vendor.start(), ...drivers.map((d) => d.start())]);
    const delivered = collect(vendor);
    const acked: string[] = [];
    for (let i = 0; i < 30; i++) {
      acked.push((await vendor.publish()).orderId);
      if (acked.length === 10) {
        hubA.child.kill('SIGKILL');
        await hubA.waitExit('hub A to die');
      }
    }
    const missing = (): string[] => acked.filter((id) => !delivered.some((m) => m.orderId === id));
    await waitUntil(vendor, 'delivered', () => (missing().length === 0 ? true : undefined), 'every acknowledged pickup to be delivered after hub A died', 40_000).catch((err: Error) => {
      throw new Error(`${err.message}; missing ${missing().join(', ')}`);
    });
    // exactly once after the client's dedupe, and the vendor now talks to hub B
    expect(new Set(delivered.map((m) => m.orderId)).size).toBe(delivered.length);
    expect(lines.matching(new RegExp(`acme connected to ${urlB}`)).length).toBeGreaterThan(0);
  }, 60_000);

  it('hands a killed hub’s held pickups to another hub’s driver within 10 s, with the default ack timeout', async () => {
    const own = cleanup.add(await TestRedis.start(), (r) => r.stop());
    const [portA, portB] = [await freePort(), await freePort()];
    const hubArgs = (port: number) => ['hub', '--port', String(port), '--host', '127.0.0.1', '--redis', own.url, '--json', '--allow-anonymous', '--dispatch', 'one'];
    const hubA: CliProcess = startCli(hubArgs(portA));
    const hubB: CliProcess = startCli(hubArgs(portB));
    await Promise.all([hubA.stdout.waitFor(/listening on/, 'hub A to listen'), hubB.stdout.waitFor(/listening on/, 'hub B to listen')]);
    const [urlA, urlB] = [`http://127.0.0.1:${portA}`, `http://127.0.0.1:${portB}`];
    // a driver on hub A that takes the pickup and never answers: hub A holds it for it
    const holder = cleanup.add(new RawClient(urlA, { auth: { role: 'driver', name: 'd-on-a' }, autoAck: false }), (c) => c.close());
    await holder.connected();
    const vendor = cleanup.add(new RawClient(urlB, { auth: { role: 'vendor', store: 'acme' } }), (c) => c.close());
    await vendor.connected();
    await expect(vendor.request('pickup', order('acme', 1))).resolves.toMatchObject({ ok: true });
    await holder.waitFor('pickup', 1, 'the driver on hub A to be handed the pickup');
    const rescuer = cleanup.add(new RawClient(urlB, { auth: { role: 'driver', name: 'd-on-b' }, autoAck: false }), (c) => c.close());
    await rescuer.connected();

    hubA.child.kill('SIGKILL');
    await hubA.waitExit('hub A to die');
    const killed = performance.now();
    await rescuer.waitFor('pickup', 1, 'the driver on hub B to be handed the dead hub’s pickup', 10_000);
    expect(performance.now() - killed).toBeLessThan(10_000);
    expect(rescuer.of('pickup')[0]?.orderId).toBe(order('acme', 1).orderId);
  }, 30_000);

  it('sends no message twice without a fault', async () => {
    const { a, b } = await twoHubs();
    // raw clients that count every copy they are sent (our own clients would drop a repeat)
    const vendorA = cleanup.add(new RawClient(a.url, { auth: { role: 'vendor', store: 'acme' } }), (c) => c.close());
    const vendorB = cleanup.add(new RawClient(b.url, { auth: { role: 'vendor', store: 'acme' } }), (c) => c.close());
    const driver = cleanup.add(new DriverClient({ url: b.url, name: 'd1', delay: 0, log: () => undefined }), (d) => d.close());
    await Promise.all([vendorA.connected(), vendorB.connected(), driver.start()]);
    const n = 150;
    let pickedUp = 0;
    driver.on('picked-up', () => pickedUp++);
    for (let i = 0; i < n; i += 10) await Promise.all(Array.from({ length: 10 }, (_, k) => vendorA.request('pickup', order('acme', i + k))));
    await poll(() => (vendorA.of('delivered').length >= n && vendorB.of('delivered').length >= n ? true : undefined), `both vendors to hear ${n} deliveries`, 30_000).catch((err: Error) => {
      const heard = (v: RawClient): string => `${v.of('in-transit').length} in-transit, ${v.of('delivered').length} delivered`;
      const warnings = [...a.logs.all, ...b.logs.all].filter((line) => /"level":"(warn|error)"/.test(line)).slice(-10);
      throw new Error(`${err.message}: vendor A heard ${heard(vendorA)}, vendor B ${heard(vendorB)}; the driver picked up ${pickedUp}; hub warnings: ${warnings.join(' | ')}`);
    });
    for (const vendor of [vendorA, vendorB]) {
      const ids = [...vendor.of('in-transit'), ...vendor.of('delivered')].map((m) => m.messageId);
      expect(ids.length - new Set(ids).size, 'messages sent twice to one vendor').toBe(0);
    }
  }, 60_000);

  it('with --redis-wait-replicas 1, acknowledges a step only once a replica has it, and refuses steps while none does', async () => {
    const primary = cleanup.add(await TestRedis.start(), (r) => r.stop());
    const replica = cleanup.add(await TestRedis.start(['--replicaof', '127.0.0.1', String(primary.port)]), (r) => r.stop());
    const prefix = `t${randomUUID()}:`;
    const hub = cleanup.add(await startHub({ redisUrl: primary.url, redisPrefix: prefix, redisWaitReplicas: 1 }), (h) => h.close());
    const reader = cleanup.add(new Redis(replica.url), (r) => r.quit());
    // it is killed below: its reconnection attempts are expected
    reader.on('error', () => undefined);
    await poll(async () => ((await reader.info('replication')).includes('master_link_status:up') ? true : undefined), 'the replica to sync with its primary');
    const vendor = cleanup.add(new RawClient(hub.url, { auth: { role: 'vendor', store: 'acme' } }), (c) => c.close());
    await vendor.connected();

    await expect(vendor.request('pickup', order('acme', 1))).resolves.toMatchObject({ ok: true });
    // acknowledged: the replica has it already
    expect(await reader.exists(new RedisKeys(prefix).parcel('acme', order('acme', 1).orderId))).toBe(1);

    await replica.kill();
    await expect(vendor.request('pickup', order('acme', 2), 10_000)).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_STORAGE', message: expect.stringContaining('replicas') } });
    await replica.run();
    // the step refused was stored on the primary: once a replica has it, the retry is acknowledged
    await poll(async () => ((await vendor.request<{ ok: boolean }>('pickup', order('acme', 2), 10_000)).ok ? true : undefined), 'the retried pickup to be acknowledged once the replica is back', 20_000);
  }, 40_000);

  it('keeps the last fifth of Redis memory for parcels already accepted: new pickups wait, drivers’ steps go on', async () => {
    const own = cleanup.add(await TestRedis.start(), (r) => r.stop());
    const hub = cleanup.add(await startHub({ redisUrl: own.url, redisPrefix: `t${randomUUID()}:` }), (h) => h.close());
    const admin = cleanup.add(new Redis(own.url), (r) => r.quit());
    const vendor = cleanup.add(new RawClient(hub.url, { auth: { role: 'vendor', store: 'acme' } }), (c) => c.close());
    const driver = cleanup.add(new RawClient(hub.url, { auth: { role: 'driver', name: 'd1' } }), (c) => c.close());
    await Promise.all([vendor.connected(), driver.connected()]);
    await expect(vendor.request('pickup', order('acme', 1))).resolves.toMatchObject({ ok: true });

    // Redis at ~85% of its maxmemory: it still takes writes, but it is near the end
    const used = Number(/used_memory:(\d+)/.exec(await admin.info('memory'))?.[1]);
    await admin.config('SET', 'maxmemory', String(Math.ceil(used / 0.85)));
    const refused = await poll(
      async () => {
        const answer = await vendor.request<{ ok: boolean; error?: { code: string; message: string } }>('pickup', order('acme', 2));
        return answer.ok ? undefined : answer;
      },
      'the hub to see Redis nearly full and hold new pickups back',
    );
    expect(refused.error).toMatchObject({ code: 'CAPS_ERR_STORAGE', message: expect.stringContaining('nearly full') });
    await expect(driver.request('in-transit', order('acme', 1))).resolves.toMatchObject({ ok: true });
    await expect(driver.request('delivered', order('acme', 1))).resolves.toMatchObject({ ok: true });

    await admin.config('SET', 'maxmemory', '0');
    await poll(async () => ((await vendor.request<{ ok: boolean }>('pickup', order('acme', 3))).ok ? true : undefined), 'new pickups to be taken again once Redis has room');
  }, 30_000);

  it('costs nothing per idle store: 2,000 stores with queued messages, a hub with a driver and a vendor online, Redis busy only with its periodic look at the 16 shards', async () => {
    const own = cleanup.add(await TestRedis.start(), (r) => r.stop());
    const prefix = `t${randomUUID()}:`;
    const admin = cleanup.add(new Redis(own.url), (r) => r.quit());
    const storage = cleanup.add(new RedisStorage({ url: own.url, prefix }), (s) => s.close());
    await storage.open();
    // 2,000 stores, each with a notification its (absent) vendors have not acknowledged
    const stores = 2_000;
    for (let i = 0; i < stores; i += 200) {
      await Promise.all(
        Array.from({ length: 200 }, async (_, k) => {
          const input = { store: `idle-${i + k}`, orderId: 'o1', time: new Date().toISOString() };
          await storage.recordStep({ ...input, event: 'pickup', customer: 'C', address: 'A' });
          await storage.recordStep({ ...input, event: 'in-transit', driver: 'd0' });
        }),
      );
    }
    await storage.close();
    const hub = cleanup.add(await startHub({ redisUrl: own.url, redisPrefix: prefix }), (h) => h.close());
    const driver = cleanup.add(new RawClient(hub.url, { auth: { role: 'driver', name: 'd1' } }), (c) => c.close());
    const vendor = cleanup.add(new RawClient(hub.url, { auth: { role: 'vendor', store: 'busy' } }), (c) => c.close());
    await Promise.all([driver.connected(), vendor.connected()]);
    const stats = async (): Promise<Map<string, number>> => {
      const out = new Map<string, number>();
      for (const [, command, calls] of (await admin.info('commandstats')).matchAll(/cmdstat_([a-z|]+):calls=(\d+)/g)) out.set(command ?? '', Number(calls));
      return out;
    };
    const before = await stats();
    // the hub looks at every shard for pickups once a second while its drivers have room: three looks
    await poll(async () => (((await stats()).get('xautoclaim') ?? 0) - (before.get('xautoclaim') ?? 0) >= 3 * 16 ? true : undefined), 'three looks at the 16 shards', 15_000, 100);
    const after = await stats();
    const spent = new Map([...after].map(([command, calls]) => [command, calls - (before.get(command) ?? 0)]));
    const sweeps = (spent.get('xautoclaim') ?? 0) / 16;
    // INFO: this test's own looks at the stats
    const total = [...spent].filter(([command]) => command !== 'info').reduce((sum, [, calls]) => sum + calls, 0);
    // per look: XAUTOCLAIM and XREADGROUP per shard, and the memory and depth check (INFO, XLEN per shard); nothing per store
    expect(total / sweeps, `commands per look: ${JSON.stringify(Object.fromEntries(spent))}`).toBeLessThan(45);
    // the one store with a vendor online is read once, when it connects; the 2,000 others never
    expect(spent.get('xrange') ?? 0, 'store logs read while nobody follows them').toBeLessThanOrEqual(1);
    expect(spent.get('smembers') ?? 0).toBe(0);
  }, 60_000);

  it('is not ready while Redis refuses writes (maxmemory reached), refuses publishes with a code, and recovers when memory frees', async () => {
    const own = cleanup.add(await TestRedis.start(), (r) => r.stop());
    const hub = cleanup.add(await startHub({ redisUrl: own.url, redisPrefix: `t${randomUUID()}:` }), (h) => h.close());
    const admin = cleanup.add(new Redis(own.url), (r) => r.quit());
    const vendor = cleanup.add(new RawClient(hub.url, { auth: { role: 'vendor', store: 'acme' } }), (c) => c.close());
    await vendor.connected();
    await expect(vendor.request('pickup', order('acme', 1))).resolves.toMatchObject({ ok: true });
    expect((await fetch(`${hub.url}/readyz`)).status).toBe(200);

    // Redis still answers PING, but refuses every write: OOM with the default noeviction policy
    await admin.config('SET', 'maxmemory', '1');
    const full = await fetch(`${hub.url}/readyz`);
    expect(full.status).toBe(503);
    expect(((await full.json()) as { reason: string }).reason).toMatch(/OOM/);
    await expect(vendor.request('pickup', order('acme', 2))).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_STORAGE' } });

    await admin.config('SET', 'maxmemory', '0');
    expect((await fetch(`${hub.url}/readyz`)).status).toBe(200);
    await expect(vendor.request('pickup', order('acme', 2))).resolves.toMatchObject({ ok: true });
  });

  it('is not ready while its Redis is a read-only replica (a failover went the other way), and ready again once it is a primary', async () => {
    const own = cleanup.add(await TestRedis.start(), (r) => r.stop());
    const other = cleanup.add(await TestRedis.start(), (r) => r.stop());
    const hub = cleanup.add(await startHub({ redisUrl: own.url, redisPrefix: `t${randomUUID()}:` }), (h) => h.close());
    const admin = cleanup.add(new Redis(own.url), (r) => r.quit());
    expect((await fetch(`${hub.url}/readyz`)).status).toBe(200);
    await admin.replicaof('127.0.0.1', other.port);
    const demoted = await fetch(`${hub.url}/readyz`);
    expect(demoted.status).toBe(503);
    expect(((await demoted.json()) as { reason: string }).reason).toMatch(/READONLY/);
    await admin.replicaof('NO', 'ONE');
    expect((await fetch(`${hub.url}/readyz`)).status).toBe(200);
  });

  it('loses no acknowledged event when Redis stops and comes back, and refuses publishes meanwhile', async () => {
    const own = cleanup.add(await TestRedis.start(), (r) => r.stop());
    const prefix = `t${randomUUID()}:`;
    const a = cleanup.add(await startHub({ redisUrl: own.url, redisPrefix: prefix }), (h) => h.close());
    const b = cleanup.add(await startHub({ redisUrl: own.url, redisPrefix: prefix }), (h) => h.close());
    const vendor = cleanup.add(new VendorClient({ url: a.url, store: 'acme', ackTimeoutMs: 5_000, log: () => undefined }), (v) => v.close());
    const driver = cleanup.add(new DriverClient({ url: b.url, name: 'd1', delay: 0, ackTimeoutMs: 5_000, log: () => undefined }), (d) => d.close());
    const probe = cleanup.add(new RawClient(a.url, { auth: { role: 'vendor', store: 'probe' } }), (c) => c.close());
    await Promise.all([vendor.start(), driver.start(), probe.connected()]);
    const delivered = collect(vendor);
    const acked: string[] = [];
    for (let i = 0; i < 10; i++) acked.push((await vendor.publish()).orderId);

    await own.kill();
    const ready = await fetch(`${a.url}/readyz`);
    expect(ready.status).toBe(503);
    await expect(probe.request('pickup', order('probe', 1), 10_000)).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_STORAGE' } });
    // publishes made while Redis is away are retried by the vendor until they are stored
    const during = Array.from({ length: 5 }, () => vendor.publish().then((r) => acked.push(r.orderId)));
    await own.run();
    await Promise.all(during);
    for (let i = 0; i < 5; i++) acked.push((await vendor.publish()).orderId);
    expect((await fetch(`${a.url}/readyz`)).status).toBe(200);

    const missing = (): string[] => acked.filter((id) => !delivered.some((m) => m.orderId === id));
    await waitUntil(vendor, 'delivered', () => (missing().length === 0 ? true : undefined), 'every acknowledged pickup to be delivered after Redis came back', 30_000).catch((err: Error) => {
      throw new Error(`${err.message}; missing ${missing().join(', ')}`);
    });
    expect(acked).toHaveLength(20);
    expect(new Set(delivered.map((m) => m.orderId)).size).toBe(delivered.length);
  }, 60_000);
});
