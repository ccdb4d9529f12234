import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Keyring } from '../hub/keyring.js';
import { signToken } from '../protocol/token.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function dataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'caps-keyring-'));
  chmodSync(dir, 0o700);
  writeFileSync(join(dir, 'secret'), 'the-current-secret-0123456789\n', { mode: 0o600 });
  dirs.push(dir);
  return dir;
}

describe('the keyring', () => {
  it('takes a revocation even while the previous-key file is broken, and says the problem', () => {
    const dir = dataDir();
    const ring = Keyring.load(dir, {});
    const token = signToken('the-current-secret-0123456789', { role: 'driver', name: 'd1' });
    const id = ring.verify(token).jti ?? '';
    writeFileSync(join(dir, 'secret.previous'), '{ not json', { mode: 0o600 });
    writeFileSync(join(dir, 'revoked'), `${id} never\n`, { mode: 0o600 });
    expect(() => ring.refresh()).toThrow();
    expect(ring.isRevoked(id)).toBe(true);
    expect(() => ring.verify(token)).toThrow(/revoked/);
    // read again while broken: the same content is not a new version
    const version = ring.version;
    expect(() => ring.refresh()).toThrow();
    expect(ring.version).toBe(version);
  });

  it('accepts the previous key until its time, then only the current one', () => {
    let now = Date.parse('2026-12-02T12:00:00Z');
    const dir = dataDir();
    writeFileSync(join(dir, 'secret.previous'), `${JSON.stringify({ secret: 'the-previous-secret-012345', until: '2026-12-02T12:00:05Z' })}\n`, { mode: 0o600 });
    const ring = new Keyring('the-current-secret-0123456789', dir, {}, () => now);
    const old = signToken('the-previous-secret-012345', { role: 'vendor', store: 'acme' }, { now });
    expect(ring.verifyWithKey(old).claims).toMatchObject({ role: 'vendor', store: 'acme' });
    expect(ring.inGrace).toBe(true);
    now += 6_000;
    expect(() => ring.verify(old)).toThrow(/no longer accepts/);
    expect(ring.accepted()).toHaveLength(1);
  });
});
