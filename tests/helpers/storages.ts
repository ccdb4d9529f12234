import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { MemoryStorage } from '../../hub/storage/memory-storage.js';
import { RedisStorage } from '../../hub/storage/redis-storage.js';
import { SqliteStorage } from '../../hub/storage/sqlite-storage.js';
import type { Storage, StorageLimits } from '../../hub/storage/storage.js';
import { fileRedis } from './redis.js';

export type StorageFactory = (limits?: Partial<StorageLimits>) => Storage;

/**
 * Every kind of storage for a test file: a test Redis of the file's own (started in its beforeAll,
 * stopped in its afterAll), temporary folders named `dirPrefix…`, and the stores the file opened.
 * The file calls closeAll() in its afterEach: it closes those stores, then removes the folders.
 */
export function testStorages(dirPrefix: string) {
  const dirs: string[] = [];
  /** Stores to close after each test. */
  const open: Storage[] = [];
  const redis = fileRedis();

  function tempDir(): string {
    const dir = mkdtempSync(join(tmpdir(), dirPrefix));
    dirs.push(dir);
    return dir;
  }

  async function closeAll(): Promise<void> {
    for (const store of open.splice(0)) await store.close();
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  }

  const factories: Array<[string, StorageFactory]> = [
    ['memory', (limits = {}) => new MemoryStorage(limits)],
    ['sqlite', (limits = {}) => new SqliteStorage({ dir: tempDir(), ...limits })],
    // every store gets its own key prefix on the test's own redis-server
    ['redis', (limits = {}) => new RedisStorage({ url: redis().url, prefix: `t${randomUUID()}:`, ...limits })],
  ];

  return { factories, tempDir, open, closeAll, redisUrl: (): string => redis().url };
}
