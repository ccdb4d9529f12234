import { Cluster, Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Cleanup } from './helpers/hub.js';
import { TestRedisCluster } from './helpers/redis.js';

/** The harness itself: a real three-primary Redis Cluster (TestRedisCluster) that ioredis's Cluster client can use, that survives a primary's SIGKILL and restart. */
const cleanup = new Cleanup();
let cluster: TestRedisCluster;
let client: Cluster;
beforeAll(async () => {
  cluster = await TestRedisCluster.start(3, 20_000);
  client = new Cluster(cluster.nodes.split(',').map((node) => ({ host: '127.0.0.1', port: Number(node.split(':')[1]) })));
}, 30_000);
afterAll(async () => {
  client?.disconnect();
  await cluster?.stop();
});
afterEach(async () => {
  await cleanup.run();
});

const KEYS = 100;
const keys = (prefix: string): string[] => Array.from({ length: KEYS }, (_, n) => `${prefix}:${n}`);

/** Each primary's port and the keys it holds, read from the node itself. */
async function keysByPort(): Promise<Map<number, string[]>> {
  const held = new Map<number, string[]>();
  for (const node of client.nodes('master')) {
    const port = node.options.port as number;
    const all = (await node.keys('*')).sort();
    expect(await node.dbsize()).toBe(all.length);
    held.set(port, all);
  }
  return held;
}

describe('TestRedisCluster', () => {
  it('forms a cluster of three primaries on 127.0.0.1 that spreads keys over them', async () => {
    expect(cluster.ports).toHaveLength(3);
    expect(cluster.nodes).toBe(cluster.ports.map((p) => `127.0.0.1:${p}`).join(','));
    for (const key of keys('spread')) expect(await client.set(key, `value of ${key}`)).toBe('OK');
    for (const key of keys('spread')) expect(await client.get(key)).toBe(`value of ${key}`);

    const masters = client.nodes('master');
    expect(masters.map((m) => m.options.port).sort()).toEqual([...cluster.ports].sort());
    const sizes = await Promise.all(masters.map((m) => m.dbsize()));
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(KEYS);
    expect(sizes.filter((n) => n > 0).length).toBeGreaterThanOrEqual(2);
  });

  it('keeps the keys of a primary killed with SIGKILL and restarted (AOF synced on every write)', { timeout: 60_000 }, async () => {
    for (const key of keys('durable')) await client.set(key, `value of ${key}`);
    const held = await keysByPort();
    const i = cluster.ports.findIndex((port) => (held.get(port) ?? []).some((key) => key.startsWith('durable:')));
    expect(i).toBeGreaterThanOrEqual(0);
    const port = cluster.ports[i] as number;
    const mine = (held.get(port) ?? []).filter((key) => key.startsWith('durable:'));
    const pid = cluster.pids[i];

    await cluster.kill(i);
    expect(() => process.kill(pid as number, 0)).toThrow();
    await cluster.restart(i);
    expect(cluster.pids[i]).not.toBe(pid);

    // straight from the restarted node: what it held before, read back from its AOF
    const direct = cleanup.add(new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 1 }), (r) => r.disconnect());
    await direct.connect();
    expect((await direct.keys('durable:*')).sort()).toEqual(mine);
    for (const key of mine) expect(await direct.get(key)).toBe(`value of ${key}`);
    // and through the cluster client that lived through the restart
    for (const key of keys('durable')) expect(await client.get(key)).toBe(`value of ${key}`);
  });
});
