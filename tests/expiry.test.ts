import { describe, expect, it } from 'vitest';
import { TokenExpiry } from '../hub/expiry.js';

function socket(name: string, expired: string[]) {
  return { name, expire: () => expired.push(name) };
}

describe('token expiry by sweep', () => {
  it('expires each socket once its time is past, whatever the lifetime (past 2^31 ms too), and never twice', () => {
    let now = 1_000_000;
    const expired: string[] = [];
    const expiry = new TokenExpiry(() => now, 60_000);
    const soon = socket('soon', expired);
    const month = socket('month', expired);
    expiry.track(soon, now + 500);
    expiry.track(month, now + 30 * 86_400_000);
    expect(expiry.sweep()).toBe(0);
    now += 500;
    expect(expiry.sweep()).toBe(1);
    expect(expired).toEqual(['soon']);
    now += 29 * 86_400_000;
    expect(expiry.sweep()).toBe(0);
    now += 86_400_000;
    expect(expiry.sweep()).toBe(1);
    expect(expiry.sweep()).toBe(0);
    expect(expired).toEqual(['soon', 'month']);
    expect(expiry.size).toBe(0);
    expiry.stop();
  });

  it('expires at once a token already past, and forgets a socket that left', () => {
    let now = 5_000;
    const expired: string[] = [];
    const expiry = new TokenExpiry(() => now, 60_000);
    expiry.track(socket('late', expired), now - 1);
    expect(expired).toEqual(['late']);
    const gone = socket('gone', expired);
    expiry.track(gone, now + 10);
    expiry.forget(gone);
    now += 100;
    expect(expiry.sweep()).toBe(0);
    expect(expired).toEqual(['late']);
    expiry.stop();
  });
});
