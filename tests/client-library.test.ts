import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { CapsClient, CapsError } from '../client/index.js';
import type { ParcelMessage } from '../protocol/messages.js';
import { Cleanup, order, queueDepth, startHub, startSecureHub, tokenFor } from './helpers/hub.js';
import { poll } from './helpers/wait.js';

/** Lab 13's stretch goal: the package is a client library. */
const cleanup = new Cleanup();
afterEach(() => cleanup.run());
const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));

function client(options: ConstructorParameters<typeof CapsClient>[0]): CapsClient {
  return cleanup.add(new CapsClient(options), (c) => c.close());
}

function driverDepth(url: string): Promise<number> {
  return queueDepth(url, 'driver', tokenFor({ role: 'dashboard' }));
}

describe('CapsClient', () => {
  it('publish resolves once the hub has stored the step, and rejects a refusal with its code', async () => {
    const { url } = cleanup.add(await startHub(), (h) => h.close());
    const vendor = client({ url, role: 'vendor', store: 'lib-store' });
    await vendor.start();
    const parcel = order('lib-store', 1);
    await expect(vendor.publish('pickup', parcel)).resolves.toEqual({ event: 'pickup', store: 'lib-store', orderId: parcel.orderId, duplicate: false });
    // stored by the time publish resolved: readable at once
    const record = (await (await fetch(`${url}/api/packages/${parcel.orderId}`)).json()) as { ok: boolean };
    expect(record.ok).toBe(true);
    await expect(vendor.publish('pickup', parcel)).resolves.toMatchObject({ duplicate: true });
    const refused = vendor.publish('delivered', { store: 'lib-store', orderId: 'never-picked-up' });
    await expect(refused).rejects.toBeInstanceOf(CapsError);
    await expect(refused).rejects.toMatchObject({ code: 'CAPS_ERR_UNKNOWN_PARCEL' });
  });

  it('subscribe acknowledges after the handler returns, and not when it throws: the hub sends it again', async () => {
    const { url } = cleanup.add(await startSecureHub({ ackTimeoutMs: 200 }), (h) => h.close());
    const driver = client({ url, token: tokenFor({ role: 'driver', name: 'lib-driver' }) });
    const vendor = client({ url, token: tokenFor({ role: 'vendor', store: 'lib-store' }) });
    const seen: string[] = [];
    const failures: string[] = [];
    driver.on('error', (err) => failures.push(err.message));
    let release: (() => void) | undefined;
    const handling = new Promise<void>((resolve) => {
      release = resolve;
    });
    driver.subscribe('pickup', async (m: ParcelMessage) => {
      seen.push(m.orderId);
      // the first delivery fails; the second waits until the test has looked at the queue
      if (seen.length === 1) throw new Error('van broke down');
      await handling;
    });
    await Promise.all([driver.start(), vendor.start()]);
    const parcel = order('lib-store', 2);
    await vendor.publish('pickup', parcel);
    await poll(() => (seen.length === 2 ? true : undefined), 'the pickup sent again after the handler threw', 5_000);
    expect(failures).toEqual(['van broke down']);
    // the handler has not returned: still on the queue
    expect(await driverDepth(url)).toBe(1);
    release?.();
    await poll(async () => ((await driverDepth(url)) === 0 ? true : undefined), 'the pickup acknowledged once the handler returned');
    expect(seen).toEqual([parcel.orderId, parcel.orderId]);
  });
});

describe('CapsClient, misused', () => {
  it('a handler that throws with no error listener crashes nothing; unsubscribing the last handler stops taking messages', async () => {
    const { url } = cleanup.add(await startSecureHub({ ackTimeoutMs: 200 }), (h) => h.close());
    const driver = client({ url, token: tokenFor({ role: 'driver', name: 'careless' }) });
    const vendor = client({ url, token: tokenFor({ role: 'vendor', store: 'lib-store' }) });
    let calls = 0;
    const unsubscribe = driver.subscribe('pickup', () => {
      calls++;
      throw new Error('no listener for this');
    });
    await Promise.all([driver.start(), vendor.start()]);
    await vendor.publish('pickup', order('lib-store', 3));
    await poll(() => (calls >= 2 ? true : undefined), 'the pickup sent again after each throw', 5_000);
    unsubscribe();
    // from now on this driver takes nothing: the pickup stays queued, unacknowledged
    const before = calls;
    await vendor.publish('pickup', order('lib-store', 4));
    await poll(async () => ((await driverDepth(url)) === 2 ? true : undefined), 'both pickups still queued');
    expect(calls).toBe(before);
  });
});

describe('the package', () => {
  it('npm pack output installs in an empty folder, and imports with its types', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'caps-pack-'));
    cleanup.add(dir, (d) => rmSync(d, { recursive: true, force: true }));
    // dist/ is built by the test set-up; --ignore-scripts: no second build
    await run('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', dir], { cwd: ROOT, timeout: 60_000 });
    const tarball = readdirSync(dir).find((f) => f.endsWith('.tgz'));
    expect(tarball).toBeDefined();
    const app = join(dir, 'app');
    await run('mkdir', [app]);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    // tarballs from npm's cache where it has them (npm ci filled it); no native builds: the client needs none
    await run('npm', ['install', '--prefer-offline', '--ignore-scripts', '--no-audit', '--no-fund', join(dir, tarball ?? '')], { cwd: app, timeout: 120_000 });
    const script = [
      "import { CapsClient, VendorClient, DriverClient, CapsError } from 'caps';",
      "import { createHub } from 'caps/hub';",
      "const hub = await createHub({ port: 0, host: '127.0.0.1', allowAnonymous: true, storage: 'memory', logger: { info() {}, warn() {}, error() {}, event() {} } });",
      "const c = new CapsClient({ url: hub.url, role: 'vendor', store: 'packed' });",
      'await c.start();',
      "const r = await c.publish('pickup', { store: 'packed', orderId: 'p-1', customer: 'Ada', address: '1 Lane' });",
      "console.log(JSON.stringify({ r, classes: [typeof VendorClient, typeof DriverClient, typeof CapsError] }));",
      'await c.close(); await hub.close();',
    ].join('\n');
    writeFileSync(join(app, 'use.mjs'), script);
    const { stdout } = await run('node', ['use.mjs'], { cwd: app, timeout: 30_000 });
    expect(JSON.parse(stdout)).toEqual({ r: { event: 'pickup', store: 'packed', orderId: 'p-1', duplicate: false }, classes: ['function', 'function', 'function'] });
    // the types come with it: a TypeScript user's mistake is caught
    writeFileSync(join(app, 'typed.ts'), "import { CapsClient } from 'caps';\nconst c = new CapsClient({ url: 'http://localhost:3000' });\nvoid c.publish('pickup', { store: 'a', orderId: 'o', customer: 'c', address: 'a' });\nvoid c.publish('teleported', {});\n");
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const typed = await run('node', [tsc, '--noEmit', '--strict', '--skipLibCheck', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--types', '', 'typed.ts'], { cwd: app, timeout: 60_000 }).then(
      () => '',
      (err: { stdout?: string }) => err.stdout ?? '',
    );
    expect(typed).toMatch(/typed\.ts\(4,.*"teleported"/);
    expect(typed.trim().split('\n')).toHaveLength(1);
  }, 200_000);
});
