import { createHmac } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createHub } from '../hub/hub.js';
import { Keyring } from '../hub/keyring.js';
import { createLogger } from '../hub/logger.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { peekClaims, signToken, verifyToken } from '../protocol/token.js';
import { RawClient } from './helpers/hub.js';
import { Lines, poll, waitUntil } from './helpers/wait.js';
import type { CliProcess } from './helpers/cli.js';
import { killAllCli, runCli, startCli } from './helpers/cli.js';

const LISTENING = /listening on (http:\/\/\S+)/;
const dirs: string[] = [];
afterEach(async () => {
  await killAllCli();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'caps-token-'));
  dirs.push(dir);
  return dir;
}

/** Runs `caps token` and returns the token it printed. */
async function mint(data: string, ...args: string[]): Promise<string> {
  const result = await runCli(['token', '--data', data, ...args], { env: { CAPS_SECRET: undefined } });
  expect(result.code, result.output).toBe(0);
  const token = result.stdout.trim();
  expect(token).toMatch(/^[\w-]+\.[\w-]+$/);
  return token;
}

async function startAuthHub(data: string): Promise<{ hub: CliProcess; url: string }> {
  const hub = startCli(['hub', '--port', '0', '--host', '127.0.0.1', '--data', data], { CAPS_SECRET: undefined });
  const [line] = await hub.stdout.waitFor(LISTENING, 'the hub to report where it listens', 10_000);
  const url = LISTENING.exec(line ?? '')?.[1];
  if (!url) throw new Error(`no URL in ${line}`);
  return { hub, url };
}

describe('caps token', () => {
  it('mints tokens with the secret kept in the data folder (created private on first use)', async () => {
    const data = tempDir();
    const vendor = await mint(data, '--role', 'vendor', '--store', 'acme-widgets');
    const secretFile = join(data, 'secret');
    expect(statSync(secretFile).mode & 0o777).toBe(0o600);
    const secret = readFileSync(secretFile, 'utf8').trim();
    expect(verifyToken(secret, vendor)).toMatchObject({ role: 'vendor', store: 'acme-widgets' });
    const driver = await mint(data, '--role', 'driver', '--name', 'd1', '--expires-in', '12h');
    const claims = verifyToken(secret, driver);
    expect(claims).toMatchObject({ role: 'driver', name: 'd1' });
    expect((claims.exp ?? 0) - claims.iat).toBe(12 * 3600);
    expect(verifyToken(secret, await mint(data, '--role', 'dashboard'))).toMatchObject({ role: 'dashboard' });
  });

  it('gives a minted token a default lifetime of 30 days and says when it expires; never only when asked', async () => {
    const env = { CAPS_SECRET: 'an-environment-secret-123' };
    const plain = await runCli(['token', '--data', tempDir(), '--role', 'vendor', '--store', 'acme'], { env });
    expect(plain.code, plain.output).toBe(0);
    const claims = verifyToken('an-environment-secret-123', plain.stdout.trim());
    expect((claims.exp ?? 0) - claims.iat).toBe(30 * 86_400);
    expect(plain.stderr).toContain(`expires ${new Date((claims.exp ?? 0) * 1000).toISOString()}`);
    const forever = await runCli(['token', '--data', tempDir(), '--role', 'vendor', '--store', 'acme', '--expires-in', 'never'], { env });
    expect(forever.code, forever.output).toBe(0);
    expect(verifyToken('an-environment-secret-123', forever.stdout.trim()).exp).toBeUndefined();
    expect(forever.stderr).toMatch(/never expires/);
  });

  it('uses CAPS_SECRET when it is set', async () => {
    const result = await runCli(['token', '--data', tempDir(), '--role', 'driver', '--name', 'd9'], { env: { CAPS_SECRET: 'an-environment-secret-123' } });
    expect(result.code, result.output).toBe(0);
    expect(verifyToken('an-environment-secret-123', result.stdout.trim())).toMatchObject({ name: 'd9' });
  });

  const misuse: Array<[string, string[], RegExp]> = [
    ['no role', [], /--role is required/],
    ['a vendor without a store', ['--role', 'vendor'], /--role vendor needs --store NAME/],
    ['a driver without a name', ['--role', 'driver'], /--role driver needs --name NAME/],
    ['a driver with a store', ['--role', 'driver', '--name', 'd', '--store', 's'], /--store is for vendors/],
    ['a bad expiry', ['--role', 'driver', '--name', 'd', '--expires-in', 'soon'], /--expires-in must look like/],
    ['an unknown role', ['--role', 'admin'], /--role must be one of vendor, driver, dashboard/],
  ];
  it.each(misuse)('exits 2 on %s', async (_what, args, message) => {
    const result = await runCli(['token', '--data', tempDir(), ...args]);
    expect(result.code, result.output).toBe(2);
    expect(result.stderr).toMatch(message);
    expect(result.stdout).toBe('');
  });
});

describe('an authenticated hub from the command line', () => {
  it('carries parcels for clients with minted tokens', async () => {
    const data = tempDir();
    const { url } = await startAuthHub(data);
    const driver = startCli(['driver', '--url', url, '--delay', '0', '--token', await mint(data, '--role', 'driver', '--name', 'd1')]);
    await driver.lines.waitFor(/DRIVER: d1 connected/, 'the driver (named by its token) to connect');
    const vendor = startCli(['vendor', '--url', url, '--count', '2', '--interval', '20', '--token', await mint(data, '--role', 'vendor', '--store', 'acme-widgets')]);
    expect(await vendor.waitExit('the vendor to deliver 2 parcels and exit', 20_000)).toEqual({ code: 0, signal: null });
    expect(vendor.lines.matching(/^VENDOR: Thank you for delivering /)).toHaveLength(2);
    expect(vendor.lines.matching(/acme-widgets connected/)).toHaveLength(1);
  });

  it('sends a client away with the refusal code: no token, an expired token, a token of the wrong role', async () => {
    const data = tempDir();
    const { url } = await startAuthHub(data);
    const none = await runCli(['vendor', '--url', url, '--count', '1'], { env: { CAPS_TOKEN: undefined } });
    expect(none.code, none.output).toBe(1);
    expect(none.stderr).toMatch(/the hub refused the connection: CAPS_ERR_UNAUTHORIZED/);

    const secret = readFileSync(join(data, 'secret'), 'utf8').trim();
    const expired = signToken(secret, { role: 'driver', name: 'd1' }, { expiresInSeconds: 60, now: Date.now() - 3_600_000 });
    const late = await runCli(['driver', '--url', url, '--token', expired]);
    expect(late.code, late.output).toBe(1);
    expect(late.stderr).toMatch(/CAPS_ERR_TOKEN_EXPIRED/);

    const wrong = await runCli(['vendor', '--url', url, '--token', await mint(data, '--role', 'driver', '--name', 'd1')]);
    expect(wrong.code, wrong.output).toBe(2);
    expect(wrong.stderr).toMatch(/--token is not a vendor token \(it is a driver token\)/);
  });
});

describe('rotating the secret and revoking tokens, on a running hub', () => {
  const clients: RawClient[] = [];
  afterEach(() => {
    for (const c of clients.splice(0)) c.close();
  });
  const connect = (url: string, token: string): RawClient => {
    const client = new RawClient(url, { auth: { token } });
    clients.push(client);
    return client;
  };
  const gone = (client: RawClient, what: string): Promise<true> =>
    waitUntil(client.socket, 'disconnect', () => (client.socket.connected ? undefined : true), what, 10_000);

  it('caps secret rotate: new tokens at once, old ones through the grace period, then dropped and refused', async () => {
    const data = tempDir();
    const { hub, url } = await startAuthHub(data);
    const old = await mint(data, '--role', 'driver', '--name', 'd-old');
    const before = connect(url, old);
    await before.connected();

    const rotated = await runCli(['secret', 'rotate', '--data', data, '--grace', '3s'], { env: { CAPS_SECRET: undefined } });
    expect(rotated.code, rotated.output).toBe(0);
    expect(rotated.stderr).toMatch(/tokens of the old key \S+ are accepted until/);
    expect(statSync(join(data, 'secret.previous')).mode & 0o777).toBe(0o600);
    // the hub reads its keyring again within a second, and says so
    await hub.stdout.waitFor(/KEYRING RELOADED/, 'the hub to read the new secret');
    const fresh = await mint(data, '--role', 'driver', '--name', 'd-new');
    expect(peekClaims(fresh)?.kid).not.toBe(peekClaims(old)?.kid);
    await connect(url, fresh).connected();
    // within the grace period the old key still lets a client in
    await connect(url, old).connected();

    await gone(before, 'the client of the old key to be dropped when its grace period ends');
    await hub.stdout.waitFor(/TOKEN KEY RETIRED/, 'the hub to say why it dropped it');
    await expect(connect(url, old).refused()).resolves.toMatchObject({ code: 'CAPS_ERR_UNAUTHORIZED', message: expect.stringContaining('no longer accepts') });
    await connect(url, fresh).connected();
  }, 30_000);

  it('caps token revoke: the client using it is dropped within seconds and refused after; other tokens are untouched', async () => {
    const data = tempDir();
    const { hub, url } = await startAuthHub(data);
    const minted = await runCli(['token', '--data', data, '--role', 'vendor', '--store', 'acme'], { env: { CAPS_SECRET: undefined } });
    const token = minted.stdout.trim();
    const id = /caps token revoke --id ([a-f0-9]{16})/.exec(minted.stderr)?.[1];
    expect(id, minted.stderr).toBe(peekClaims(token)?.jti);
    const other = await mint(data, '--role', 'vendor', '--store', 'acme');
    const victim = connect(url, token);
    const bystander = connect(url, other);
    await Promise.all([victim.connected(), bystander.connected()]);

    const revoked = await runCli(['token', 'revoke', '--id', id ?? '', '--data', data], { env: { CAPS_SECRET: undefined } });
    expect(revoked.code, revoked.output).toBe(0);
    expect(statSync(join(data, 'revoked')).mode & 0o777).toBe(0o600);
    await gone(victim, 'the client of the revoked token to be dropped');
    await hub.stdout.waitFor(/TOKEN REVOKED/, 'the hub to say why it dropped it');
    await expect(connect(url, token).refused()).resolves.toMatchObject({ code: 'CAPS_ERR_UNAUTHORIZED', message: expect.stringContaining('revoked') });
    expect(bystander.socket.connected).toBe(true);
    await expect(bystander.request('pickup', { store: 'acme', orderId: 'still-1', customer: 'C', address: 'A' })).resolves.toMatchObject({ ok: true });

    // by the token itself, and refusals of what is not one
    const third = await mint(data, '--role', 'vendor', '--store', 'acme');
    const reloads = hub.stdout.all.filter((l) => l.includes('KEYRING RELOADED')).length;
    expect((await runCli(['token', 'revoke', '--token', third, '--data', data], { env: { CAPS_SECRET: undefined } })).code).toBe(0);
    await poll(() => (hub.stdout.all.filter((l) => l.includes('KEYRING RELOADED')).length > reloads ? true : undefined), 'the hub to read the new revocation');
    await expect(connect(url, third).refused()).resolves.toMatchObject({ code: 'CAPS_ERR_UNAUTHORIZED' });
    const bad = await runCli(['token', 'revoke', '--id', 'nope', '--data', data]);
    expect(bad.code, bad.output).toBe(2);
    expect(bad.stderr).toMatch(/--id must be a token id of 16 hex characters/);
  }, 30_000);
});

describe('a key retired after its grace period', () => {
  it('drops a connected client whose token names no key (minted before key ids) once the old key retires', async () => {
    const data = tempDir();
    const oldSecret = 'the-old-secret-0123456789';
    writeFileSync(join(data, 'secret'), 'the-new-secret-0123456789\n', { mode: 0o600 });
    chmodSync(data, 0o700);
    writeFileSync(join(data, 'secret.previous'), `${JSON.stringify({ secret: oldSecret, until: new Date(Date.now() + 1_500).toISOString() })}\n`, { mode: 0o600 });
    // a token as minted before tokens named their key: no kid, no jti
    const body = Buffer.from(JSON.stringify({ v: 1, role: 'driver', name: 'd-legacy', iat: Math.floor(Date.now() / 1000) })).toString('base64url');
    const legacy = `${body}.${createHmac('sha256', oldSecret).update(body).digest('base64url')}`;
    const logs = new Lines();
    const hub = await createHub({ port: 0, host: '127.0.0.1', storage: 'memory', keyring: Keyring.load(data, {}), logger: createLogger({ format: 'json', write: logs.push }) });
    try {
      const client = new RawClient(hub.url, { auth: { token: legacy } });
      await client.connected();
      await waitUntil(client.socket, 'disconnect', () => (client.socket.connected ? undefined : true), 'the legacy token’s client to be dropped when the old key retires', 10_000);
      expect(logs.all.some((l) => l.includes('TOKEN KEY RETIRED'))).toBe(true);
      client.close();
    } finally {
      await hub.close();
    }
  });
});
