import { afterEach, describe, expect, it } from 'vitest';
import { Cleanup, RawClient, order, startHub, startSecureHub, tokenFor } from './helpers/hub.js';

/** Lab 12's stretch goal: a pickup published over HTTP, through the same flow as a socket. */
const cleanup = new Cleanup();
afterEach(() => cleanup.run());

async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: { ok: boolean; data?: Record<string, unknown>; error?: { code: string; message: string } } }> {
  const res = await fetch(`${url}/pickup`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as never };
}

describe('POST /pickup', () => {
  it('in lab mode: publishes a new order once, answers a repeat as a duplicate, and the drivers hear it once', async () => {
    const { url } = cleanup.add(await startHub(), (h) => h.close());
    const driver = cleanup.add(new RawClient(url, { autoAck: false }), (c) => c.close());
    await driver.request('join', 'driver');
    const parcel = order('http-store', 1);
    await expect(post(url, parcel)).resolves.toEqual({ status: 201, body: { ok: true, data: { event: 'pickup', store: 'http-store', orderId: parcel.orderId, duplicate: false, status: 'new' } } });
    await expect(post(url, parcel)).resolves.toMatchObject({ status: 200, body: { ok: true, data: { duplicate: true, status: 'duplicate' } } });
    // read as loosely as a lab socket, and without a content type
    const loose = await fetch(`${url}/pickup`, { method: 'POST', body: JSON.stringify({ storeName: 'http-store', orderID: 'loose-1', Customer: 'Ada', address: '1 Lane' }) });
    expect(loose.status).toBe(201);
    const pickups = await driver.waitFor('pickup', 2, 'the driver to hear both new pickups');
    // round trip: a third copy would have arrived before the answer
    await driver.request('getAll', { clientId: 'driver', event: 'delivered' });
    expect(driver.of('pickup').map((m) => m.orderId)).toEqual([parcel.orderId, 'loose-1']);
    expect(pickups[0]?.customer).toBe(parcel.customer);
    const record = await (await fetch(`${url}/api/packages/${parcel.orderId}`)).json();
    expect(record).toMatchObject({ ok: true, data: { state: 'pickup', store: 'http-store' } });
  });

  it('refuses what it cannot take with the usual codes and statuses, and counts them', async () => {
    const { url, hub } = cleanup.add(await startHub(), (h) => h.close());
    await expect(post(url, { store: 'acme', orderId: 'o-1' })).resolves.toMatchObject({ status: 400, body: { ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD', message: expect.stringMatching(/customer/) } } });
    await expect(post(url, '{not json')).resolves.toMatchObject({ status: 400, body: { ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD', message: expect.stringMatching(/not JSON/) } } });
    await expect(post(url, { ...order('acme', 2), customer: 'x'.repeat(100_000) })).resolves.toMatchObject({ status: 400, body: { error: { code: 'CAPS_ERR_INVALID_PAYLOAD' } } });
    const get = await fetch(`${url}/pickup`);
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST');
    expect(hub.metrics.refusedCount('CAPS_ERR_INVALID_PAYLOAD')).toBe(3);
  });

  it('with tokens: needs a vendor token of the order’s store', async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const bearer = (subject: Parameters<typeof tokenFor>[0]) => ({ authorization: `Bearer ${tokenFor(subject)}` });
    await expect(post(url, order('acme', 1))).resolves.toMatchObject({ status: 401, body: { error: { code: 'CAPS_ERR_UNAUTHORIZED' } } });
    await expect(post(url, order('acme', 1), bearer({ role: 'driver', name: 'd1' }))).resolves.toMatchObject({ status: 403, body: { error: { code: 'CAPS_ERR_FORBIDDEN' } } });
    await expect(post(url, order('acme', 1), bearer({ role: 'vendor', store: 'other' }))).resolves.toMatchObject({ status: 403, body: { error: { code: 'CAPS_ERR_FORBIDDEN' } } });
    // strict with tokens: the lab's synonyms are not read
    await expect(post(url, { storeName: 'acme', orderId: 'o', customer: 'c', address: 'a' }, bearer({ role: 'vendor', store: 'acme' }))).resolves.toMatchObject({ status: 400 });
    await expect(post(url, order('acme', 1), bearer({ role: 'vendor', store: 'acme' }))).resolves.toMatchObject({ status: 201, body: { data: { status: 'new' } } });
  });
});
