import type { LookupAddress } from 'node:dns';
import { lookup as dnsLookup } from 'node:dns';
import { afterEach, describe, expect, it } from 'vitest';
import { Poster } from '../hub/webhooks/post.js';
import { destinationProblem, forbiddenReason, guardedLookup } from '../hub/webhooks/ssrf.js';
import { Cleanup, startHub } from './helpers/hub.js';
import { WebhookReceiver } from './helpers/webhook-receiver.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** A dns.lookup that answers `addresses` for every name (a resolver an attacker controls). */
function resolvesTo(...addresses: string[]): typeof dnsLookup {
  const found: LookupAddress[] = addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
  return ((_host: string, _options: unknown, callback: (err: null, found: LookupAddress[]) => void) => callback(null, found)) as unknown as typeof dnsLookup;
}

describe('the SSRF guard: address classes', () => {
  it.each([
    ['127.0.0.1', 'loopback'],
    ['127.255.0.9', 'loopback'],
    ['0.0.0.0', 'unspecified'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['169.254.169.254', 'link-local'],
    ['100.64.0.1', 'CGNAT'],
    ['100.127.255.254', 'CGNAT'],
    ['224.0.0.251', 'multicast'],
    ['255.255.255.255', 'reserved'],
    ['::', 'unspecified'],
    ['::1', 'loopback'],
    ['fe80::1', 'link-local'],
    ['febf::1', 'link-local'],
    ['fc00::1', 'unique local'],
    ['fd12:3456::1', 'unique local'],
    ['ff02::1', 'multicast'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:7f00:1', 'loopback'],
    ['::ffff:10.0.0.1', 'private'],
    ['::ffff:169.254.169.254', 'link-local'],
    ['::127.0.0.1', 'loopback'],
    ['fe80::1%eth0', 'link-local'],
    ['fec0::1', 'site-local'],
    ['198.18.0.1', 'benchmarking'],
    ['198.19.255.254', 'benchmarking'],
    ['192.0.0.8', 'IETF'],
    // an IPv4 address carried by a NAT64 or 6to4 address is reached through their gateways
    ['64:ff9b::a9fe:a9fe', 'link-local (169.254.0.0/16), NAT64'],
    ['64:ff9b::127.0.0.1', 'loopback (127.0.0.0/8), NAT64'],
    ['64:ff9b:1::a00:1', 'private (RFC 1918), NAT64'],
    ['2002:a9fe:a9fe::', 'link-local (169.254.0.0/16), 6to4'],
    ['2002:0a00:0001::1', 'private (RFC 1918), 6to4'],
  ])('refuses %s (%s)', (address, kind) => {
    expect(forbiddenReason(address)).toContain(kind);
  });

  it.each(['93.184.216.34', '8.8.8.8', '172.15.255.255', '172.32.0.1', '100.63.255.255', '100.128.0.1', '169.253.1.1', '2606:4700::1111', '::ffff:8.8.8.8', '64:ff9b::808:808', '2002:808:808::1', '198.17.255.255', '198.20.0.1', '192.0.1.1', '2001:db8::1'])('allows the public address %s', (address) => {
    expect(forbiddenReason(address)).toBeUndefined();
  });

  it('checks every address a name resolves to, and the URL scheme, at registration', async () => {
    expect(await destinationProblem('https://hooks.example.com/x', false, resolvesTo('93.184.216.34'))).toBeUndefined();
    expect(await destinationProblem('https://hooks.example.com/x', false, resolvesTo('93.184.216.34', '10.0.0.5'))).toContain('10.0.0.5, private');
    expect(await destinationProblem('http://[::ffff:127.0.0.1]:8080/', false)).toContain('loopback');
    expect(await destinationProblem('http://169.254.169.254/latest/meta-data', false)).toContain('link-local');
    expect(await destinationProblem('file:///etc/passwd', false)).toContain('http: or https:');
    expect(await destinationProblem('https://user:pw@hooks.example.com/', false)).toContain('password');
    // allowed by the flag
    expect(await destinationProblem('http://127.0.0.1:8080/', true)).toBeUndefined();
  });

  it('refuses at connect time what the name resolves to then (DNS rebinding), whichever form the lookup is asked in', async () => {
    const lookup = guardedLookup(resolvesTo('10.0.0.7'));
    const error = await new Promise<Error | null>((resolve) => lookup('rebind.example.com', {}, (err) => resolve(err)));
    expect(error?.message).toContain('10.0.0.7, private');
    const ok = guardedLookup(resolvesTo('93.184.216.34', '2606:4700::1111'));
    expect(await new Promise((resolve) => ok('hooks.example.com', { all: true }, (_err, found) => resolve(found)))).toHaveLength(2);
    expect(await new Promise((resolve) => ok('hooks.example.com', {}, (_err, address, family) => resolve([address, family])))).toEqual(['93.184.216.34', 4]);
  });

  it('a delivery to a name that resolves to loopback never reaches it without the flag', async () => {
    const receiver = cleanup.add(await WebhookReceiver.start(), (r) => r.close());
    const poster = cleanup.add(new Poster({ timeoutMs: 2_000, allowPrivate: false }), (p) => p.close());
    const byName = receiver.url.replace('127.0.0.1', 'localhost');
    const result = await poster.post(byName, {}, '{}');
    expect(result).toMatchObject({ ok: false, error: expect.stringContaining('refused: localhost resolves to') });
    expect(await poster.post(receiver.url, {}, '{}')).toMatchObject({ ok: false, error: expect.stringContaining('loopback') });
    expect(receiver.received).toHaveLength(0);
    // and with it, it does
    const allowed = cleanup.add(new Poster({ timeoutMs: 2_000, allowPrivate: true }), (p) => p.close());
    expect(await allowed.post(receiver.url, {}, '{}')).toEqual({ ok: true, status: 200 });
  });
});

describe('the SSRF guard: registration over HTTP', () => {
  it('refuses a loopback or private endpoint with CAPS_ERR_INVALID_PAYLOAD unless the hub allows private addresses', async () => {
    const { url } = cleanup.add(await startHub(), (h) => h.close());
    for (const target of ['http://127.0.0.1:9/hooks', 'http://localhost:9/hooks', 'http://[::1]:9/', 'http://10.0.0.1/', 'http://169.254.169.254/latest/meta-data']) {
      const res = await fetch(`${url}/api/stores/acme/webhooks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ url: target }) });
      const body = (await res.json()) as { error?: { code: string; message: string } };
      expect(res.status, target).toBe(400);
      expect(body.error?.code).toBe('CAPS_ERR_INVALID_PAYLOAD');
      expect(body.error?.message, target).toMatch(/loopback|private|link-local/);
      expect(body.error?.message).toContain('--webhook-allow-private');
    }
    const open = cleanup.add(await startHub({ webhookAllowPrivate: true }), (h) => h.close());
    const res = await fetch(`${open.url}/api/stores/acme/webhooks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ url: 'http://127.0.0.1:9/hooks' }) });
    expect(res.status).toBe(201);
  });
});
