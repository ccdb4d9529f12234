import { randomUUID } from 'node:crypto';
import { Cluster } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DriverClient } from '../driver/driver-client.js';
import type { ParcelMessage } from '../protocol/messages.js';
import { VendorClient } from '../vendor/vendor-client.js';
import { RedisStorage } from '../hub/storage/redis-storage.js';
import { RedisKeys, SHARDS } from '../hub/storage/redis-keys.js';
import type { CliProcess } from './helpers/cli.js';
import { killAllCli, startCli } from './helpers/cli.js';
import { Cleanup, RawClient, order, startHub } from './helpers/hub.js';
import { TestRedisCluster, freePort } from './helpers/redis.js';
import { poll, waitUntil } from './helpers/wait.js';

/** One real Redis Cluster of three primaries for the file; each test under a key prefix of its own. */
const cleanup = new Cleanup();
let cluster: TestRedisCluster;
beforeAll(async () => {
  cluster = await TestRedisCluster.start(3);
}, 60_000);
afterAll(async () => {
  await cluster.stop();
});
afterEach(async () => {
  await cleanup.run();
  await killAllCli();
});

function collect(vendor: VendorClient, event: 'delivered' | 'in-transit' = 'delivered'): ParcelMessage[] {
  const got: ParcelMessage[] = [];
  vendor.on(event, (m) => got.push(m));
  return got;
}

async function hubsOnCluster(n: number, options: { driverPrefetch?: number } = {}) {
  const prefix = `t${randomUUID()}:`;
  const hubs = [];
  for (let i = 0; i < n; i++) hubs.push(cleanup.add(await startHub({ redisCluster: cluster.nodes, redisPrefix: prefix, ...options }), (h) => h.close()));
  return { hubs, prefix };
}

describe('several hubs on a Redis Cluster of three primaries', () => {
  it('spreads the shards over every primary: each step is one script in one slot', async () => {
    const admin = cleanup.add(new Cluster(cluster.nodes.split(',').map((n) => ({ host: '127.0.0.1', port: Number(n.split(':')[1]) }))), (c) => c.quit());
    const keys = new RedisKeys('caps:');
    const owners = new Set<string>();
    const slots = (await admin.cluster('SLOTS')) as unknown as Array<[number, number, [string, number]]>;
    for (let k = 0; k < SHARDS; k++) {
      const slot = Number(await admin.cluster('KEYSLOT', keys.pickups(k)));
      expect(Number(await admin.cluster('KEYSLOT', keys.meta(k)))).toBe(slot);
      const owner = slots.find(([from, to]) => slot >= from && slot <= to);
      owners.add(String(owner?.[2][1]));
    }
    expect(owners.size).toBe(3);
  });

  it('carries parcels across three hubs: each pickup to exactly one driver, every step back to the store’s vendors on any hub', async () => {
    const { hubs } = await hubsOnCluster(3, { driverPrefetch: 2 });
    const [a, b, c] = hubs;
    if (!a || !b || !c) throw new Error('three hubs');
    const stores = ['acme', 'globex', 'initech', 'umbrella'];
    const vendors = stores.map((store, i) => cleanup.add(new VendorClient({ url: (i % 2 ? a : c).url, store, log: () => undefined }), (v) => v.close()));
    const watcher = cleanup.add(new VendorClient({ url: b.url, store: 'acme', log: () => undefined }), (v) => v.close());
    const drivers = ['d1', 'd2', 'd3'].map((name, i) => cleanup.add(new DriverClient({ url: hubs[i]?.url ?? '', name, delay: 0, log: () => undefined }), (d) => d.close()));
    const picked = new Map<string, string[]>();
    for (const d of drivers) d.on('picked-up', (m) => picked.set(`${m.store}/${m.orderId}`, [...(picked.get(`${m.store}/${m.orderId}`) ?? []), d.name]));
    await Promise.all([...vendors.map((v) => v.start()), watcher.start(), ...drivers.map((d) => d.start())]);
    const delivered = vendors.map((v) => collect(v));
    const watched = collect(watcher);
    const published = await Promise.all(vendors.flatMap((v) => Array.from({ length: 10 }, () => v.publish())));
    await poll(() => (delivered.every((got) => got.length >= 10) ? true : undefined), 'every store to hear its 10 deliveries', 30_000);
    await waitUntil(watcher, 'delivered', () => (watched.length >= 10 ? true : undefined), 'the second vendor of acme, on hub B, to hear them too');
    expect(published).toHaveLength(40);
    expect([...picked.values()].filter((names) => names.length !== 1)).toEqual([]);
    expect(new Set([...picked.values()].map((names) => names[0])).size).toBe(3);
    for (const [i, got] of delivered.entries()) expect(new Set(got.map((m) => m.orderId)).size, stores[i]).toBe(10);
  }, 60_000);

  it('hands a killed hub’s held pickups to another hub’s driver within 10 s (kill -9), and loses nothing', async () => {
    const [portA, portB] = [await freePort(), await freePort()];
    // the default key prefix: the only test of the file to use it
    const hubArgs = (port: number) => ['hub', '--port', String(port), '--host', '127.0.0.1', '--redis-cluster', cluster.nodes, '--json', '--allow-anonymous'];
    const hubA: CliProcess = startCli(hubArgs(portA));
    const hubB: CliProcess = startCli(hubArgs(portB));
    await Promise.all([hubA.stdout.waitFor(/listening on/, 'hub A to listen'), hubB.stdout.waitFor(/listening on/, 'hub B to listen')]);
    const [urlA, urlB] = [`http://127.0.0.1:${portA}`, `http://127.0.0.1:${portB}`];
    // a driver on hub A that takes pickups and never answers: hub A holds them for it
    const holder = cleanup.add(new RawClient(urlA, { auth: { role: 'driver', name: 'd-on-a' }, autoAck: false }), (c) => c.close());
    await holder.connected();
    const vendor = cleanup.add(new RawClient(urlB, { auth: { role: 'vendor', store: 'acme' } }), (c) => c.close());
    await vendor.connected();
    for (let i = 1; i <= 3; i++) await expect(vendor.request('pickup', order('acme', i))).resolves.toMatchObject({ ok: true });
    await holder.waitFor('pickup', 3, 'the driver on hub A to be handed the three pickups');
    const rescuer = cleanup.add(new RawClient(urlB, { auth: { role: 'driver', name: 'd-on-b' }, autoAck: false }), (c) => c.close());
    await rescuer.connected();

    hubA.child.kill('SIGKILL');
    await hubA.waitExit('hub A to die');
    const killed = performance.now();
    await rescuer.waitFor('pickup', 3, 'the driver on hub B to be handed the dead hub’s three pickups', 10_000);
    expect(performance.now() - killed).toBeLessThan(10_000);
    expect(rescuer.of('pickup').map((m) => m.orderId).sort()).toEqual([1, 2, 3].map((i) => order('acme', i).orderId).sort());
  }, 40_000);

  it('loses no acknowledged step when a primary is killed and restarted mid-stream (AOF always)', async () => {
    const { hubs } = await hubsOnCluster(2);
    const [a, b] = hubs;
    if (!a || !b) throw new Error('two hubs');
    const vendor = cleanup.add(new VendorClient({ url: a.url, store: 'acme', ackTimeoutMs: 3_000, log: () => undefined }), (v) => v.close());
    const driver = cleanup.add(new DriverClient({ url: b.url, name: 'd1', delay: 0, ackTimeoutMs: 3_000, log: () => undefined }), (d) => d.close());
    await Promise.all([vendor.start(), driver.start()]);
    const delivered = collect(vendor);
    const acked: string[] = [];
    for (let i = 0; i < 10; i++) acked.push((await vendor.publish()).orderId);
    // the primary serving acme's shard
    const storage = cleanup.add(new RedisStorage({ cluster: cluster.nodes }), (s) => s.close());
    await storage.open();
    const slot = Number(await storage.primaries()[0]?.cluster('KEYSLOT', new RedisKeys('caps:').log('acme')));
    const ports = cluster.ports;
    let victim = -1;
    for (const [i, port] of ports.entries()) {
      const node = storage.primaries().find((n) => n.options.port === port);
      const mine = ((await node?.cluster('SLOTS')) as unknown as Array<[number, number, [string, number]]> | undefined)?.some(([from, to, [, p]]) => slot >= from && slot <= to && p === port);
      if (mine) victim = i;
    }
    expect(victim).toBeGreaterThanOrEqual(0);
    const during = Array.from({ length: 5 }, () => vendor.publish().then((r) => acked.push(r.orderId)));
    await cluster.kill(victim);
    await cluster.restart(victim);
    await Promise.all(during);
    for (let i = 0; i < 5; i++) acked.push((await vendor.publish()).orderId);
    const missing = (): string[] => acked.filter((id) => !delivered.some((m) => m.orderId === id));
    await waitUntil(vendor, 'delivered', () => (missing().length === 0 ? true : undefined), 'every acknowledged pickup to be delivered after the primary came back', 30_000).catch((err: Error) => {
      throw new Error(`${err.message}; missing ${missing().join(', ')}`);
    });
    expect(acked).toHaveLength(20);
  }, 90_000);
});

describe('caps hub --redis-cluster', () => {
  it('says which cluster it could not reach, and exits', async () => {
    const port = await freePort();
    const hub = startCli(['hub', '--port', String(await freePort()), '--redis-cluster', `127.0.0.1:${port}`]);
    const exit = await hub.waitExit('the hub to give up on a cluster nobody serves', 30_000);
    expect(exit.code).not.toBe(0);
    expect(hub.stderr.text()).toMatch(new RegExp(`cannot reach the Redis Cluster at 127\\.0\\.0\\.1:${port}`));
  }, 40_000);

  it('refuses --redis with --redis-cluster, and --redis-wait-replicas with a cluster', async () => {
    const both = startCli(['hub', '--redis', 'redis://127.0.0.1:1', '--redis-cluster', '127.0.0.1:2']);
    expect((await both.waitExit('the hub to refuse two Redis')).code).toBe(2);
    expect(both.stderr.text()).toMatch(/not both/);
    const wait = startCli(['hub', '--redis-cluster', '127.0.0.1:2', '--redis-wait-replicas', '1']);
    expect((await wait.waitExit('the hub to refuse WAIT on a cluster')).code).toBe(2);
    expect(wait.stderr.text()).toMatch(/--redis-wait-replicas works with --redis/);
  });
});
