import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { Cleanup, RawClient, order, startHub } from './helpers/hub.js';
import { within } from './helpers/hub-process.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

describe('a SQLite hub whose writes fail', () => {
  it('refuses publishes with CAPS_ERR_STORAGE, reports not ready, and keeps running until closed', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'caps-fail-'));
    cleanup.add(dataDir, (d) => rmSync(d, { recursive: true, force: true }));
    const hub = cleanup.add(await startHub({ storage: 'sqlite', dataDir }), (h) => h.close());
    const vendor = cleanup.add(new RawClient(hub.url, { auth: { role: 'vendor', store: 'acme' } }), (c) => c.close());
    await vendor.connected();
    await expect(vendor.request('pickup', order('acme', 1))).resolves.toMatchObject({ ok: true });

    // another connection makes the hub's next commit fail
    const saboteur = cleanup.add(new Database(join(dataDir, 'caps-journal.sqlite'), { fileMustExist: true }), (db) => db.close());
    saboteur.exec("CREATE TRIGGER refuse BEFORE INSERT ON journal BEGIN SELECT RAISE(ABORT, 'disk says no'); END");

    await expect(vendor.request('pickup', order('acme', 2))).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_STORAGE' } });
    // and every publish after it: the hub's memory is ahead of its disk now
    await expect(vendor.request('pickup', order('acme', 3))).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_STORAGE' } });
    const ready = await fetch(`${hub.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({ status: 'not ready', storage: 'sqlite', reason: expect.stringContaining('disk says no') });
    expect((await fetch(`${hub.url}/healthz`)).status).toBe(200);
    expect(hub.logs.all.filter((line) => line.includes('HANDLER FAILED')), 'storage failures are refusals, not handler crashes').toEqual([]);
    await within(hub.close(), 10_000, 'the hub with a failed store to close');
  });
});
