import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { Cleanup, RawClient, startHub } from './helpers/hub.js';
import { waitUntil } from './helpers/wait.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

describe('hub lifecycle', () => {
  it('answers /healthz, and unknown paths with a coded 404', async () => {
    const { url } = cleanup.add(await startHub(), (h) => h.close());
    const health = await fetch(`${url}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok' });
    const missing = await fetch(`${url}/nope`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ ok: false, error: { code: 'CAPS_ERR_NOT_FOUND' } });
  });

  it('close() is idempotent, disconnects clients and frees the port', async () => {
    const { hub } = await startHub();
    const client = new RawClient(hub.url);
    cleanup.add(client, (c) => c.close());
    await client.connected();
    const dropped = waitUntil(client.socket, 'disconnect', () => (client.socket.connected ? undefined : true), 'the client to be disconnected by close()');
    await Promise.all([hub.close(), hub.close()]);
    await hub.close();
    await dropped;
    const probe = createServer();
    await new Promise<void>((resolve, reject) => {
      probe.once('error', reject);
      probe.listen(hub.port, '127.0.0.1', () => resolve());
    });
    await new Promise<void>((resolve) => probe.close(() => resolve()));
  });

  it.each([
    ['memory', () => []],
    [
      'sqlite (after a commit)',
      () => {
        const dir = mkdtempSync(join(tmpdir(), 'caps-exit-'));
        cleanup.add(dir, (d) => rmSync(d, { recursive: true, force: true }));
        return [dir];
      },
    ],
  ])('lets its process exit by itself after close(), with the %s store', async (_store, args) => {
    const script = fileURLToPath(new URL('./fixtures/close-exits.mjs', import.meta.url));
    const { stdout } = await new Promise<{ stdout: string }>((resolve, reject) => {
      // the timeout is the bound: a hub that keeps the loop alive fails here
      execFile(process.execPath, [script, ...args()], { timeout: 15_000 }, (err, out) => (err ? reject(err) : resolve({ stdout: out })));
    });
    expect(stdout.trim()).toBe('closed');
  });
});
