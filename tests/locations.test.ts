import { afterEach, describe, expect, it } from 'vitest';
import { LOCATION_EVERY_MS, Locations } from '../hub/locations.js';
import { InTransit } from '../hub/in-transit.js';
import type { DriverLocation } from '../protocol/messages.js';
import { poll } from './helpers/wait.js';
import { Cleanup, RawClient, order, startSecureHub, tokenFor } from './helpers/hub.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

describe('drivers’ positions, in memory', () => {
  it('keeps the latest position of each driver, at most once a second, and forgets a driver that left', () => {
    let now = 10_000;
    const book = new Locations(() => now);
    expect(book.update('d1', { lat: 52.5, lng: 13.4 }, ['o1'])).toMatchObject({ driver: 'd1', lat: 52.5, lng: 13.4, orderIds: ['o1'] });
    expect(book.update('d1', { lat: 52.6, lng: 13.4 }, ['o1'])).toBeUndefined();
    now += LOCATION_EVERY_MS;
    expect(book.update('d1', { lat: 52.7, lng: 13.5, heading: 90, speed: 8 }, [])).toMatchObject({ lat: 52.7, heading: 90, speed: 8 });
    expect(book.get('d1')).toMatchObject({ lat: 52.7, lng: 13.5 });
    book.forget('d1');
    expect(book.get('d1')).toBeUndefined();
    expect(book.size).toBe(0);
  });
});

describe('location over sockets', () => {
  it('reaches the vendors and dashboards of the stores whose parcels the driver holds, and nobody else', async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const client = (token: string, autoAck = true): RawClient => cleanup.add(new RawClient(url, { auth: { token }, autoAck }), (c) => c.close());
    const acme = client(tokenFor({ role: 'vendor', store: 'acme' }));
    const other = client(tokenFor({ role: 'vendor', store: 'other' }));
    const acmeBoard = client(tokenFor({ role: 'dashboard', store: 'acme' }));
    const board = client(tokenFor({ role: 'dashboard' }));
    const driver = client(tokenFor({ role: 'driver', name: 'd1' }), false);
    await Promise.all([acme, other, acmeBoard, board, driver].map((c) => c.connected()));
    const heard = (c: RawClient): DriverLocation[] => {
      const got: DriverLocation[] = [];
      c.socket.on('location', (l: DriverLocation) => got.push(l));
      return got;
    };
    const [atAcme, atOther, atAcmeBoard, atBoard] = [heard(acme), heard(other), heard(acmeBoard), heard(board)];
    await expect(acme.request('pickup', order('acme', 1))).resolves.toMatchObject({ ok: true });
    await driver.waitFor('pickup', 1, 'the driver to hold acme’s parcel');

    await expect(driver.request('location', { lat: 48.8566, lng: 2.3522, heading: 180, speed: 6.5 })).resolves.toMatchObject({ ok: true, data: { kept: true } });
    const expected = { driver: 'd1', lat: 48.8566, lng: 2.3522, heading: 180, speed: 6.5, orderIds: [order('acme', 1).orderId] };
    await poll(() => (atAcme.length > 0 && atAcmeBoard.length > 0 && atBoard.length > 0 ? true : undefined), 'acme’s vendor and both dashboards to hear the position', 5_000);
    expect(atAcme[0]).toMatchObject(expected);
    expect(atAcmeBoard[0]).toMatchObject(expected);
    expect(atBoard[0]).toMatchObject(expected);
    // another store's vendor heard nothing (its next message proves the stream is live)
    await expect(other.request('pickup', order('other', 1))).resolves.toMatchObject({ ok: true });
    expect(atOther).toEqual([]);

    // too often, out of range, or not a driver: coded refusals
    await expect(driver.request('location', { lat: 48.9, lng: 2.4 })).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_RATE_LIMITED' } });
    await expect(driver.request('location', { lat: 91, lng: 0 })).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD' } });
    await expect(driver.request('location', { lat: 1, lng: 1, secret: true })).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_INVALID_PAYLOAD' } });
    await expect(acme.request('location', { lat: 1, lng: 1 })).resolves.toMatchObject({ ok: false, error: { code: 'CAPS_ERR_FORBIDDEN' } });
  });

  it('reaches a store while its parcel is in transit with the driver (pickup acknowledged), and stops once delivered', async () => {
    const { url } = cleanup.add(await startSecureHub(), (h) => h.close());
    const client = (token: string): RawClient => cleanup.add(new RawClient(url, { auth: { token } }), (c) => c.close());
    const acme = client(tokenFor({ role: 'vendor', store: 'acme' }));
    const acmeBoard = client(tokenFor({ role: 'dashboard', store: 'acme' }));
    const otherBoard = client(tokenFor({ role: 'dashboard', store: 'other' }));
    // a driver that acknowledges its pickups at once, like CAPS's own: it holds none by the time it moves
    const driver = client(tokenFor({ role: 'driver', name: 'd1' }));
    await Promise.all([acme, acmeBoard, otherBoard, driver].map((c) => c.connected()));
    const parcel = order('acme', 1);
    await expect(acme.request('pickup', parcel)).resolves.toMatchObject({ ok: true });
    await driver.waitFor('pickup', 1, 'the driver to be handed acme’s parcel');
    await expect(driver.request('in-transit', parcel)).resolves.toMatchObject({ ok: true });

    await expect(driver.request('location', { lat: 48.8566, lng: 2.3522 })).resolves.toMatchObject({ ok: true });
    const expected = { driver: 'd1', lat: 48.8566, lng: 2.3522, orderIds: [parcel.orderId] };
    await expect(acme.waitFor('location', 1, 'acme’s vendor to hear its driver in transit')).resolves.toMatchObject([expected]);
    await expect(acmeBoard.waitFor('location', 1, 'acme’s dashboard to hear its driver in transit')).resolves.toMatchObject([expected]);

    await expect(driver.request('delivered', parcel)).resolves.toMatchObject({ ok: true });
    // once a second at most: the next position is kept as soon as the hub takes one again
    await poll(async () => ((await driver.request<{ ok: boolean }>('location', { lat: 48.86, lng: 2.36 })).ok ? true : undefined), 'the hub to keep the next position', 5_000, 100);
    // a round trip on each socket after the relay: nothing more arrived
    await expect(acmeBoard.request('getAll', { queue: 'acme' })).resolves.toBeDefined();
    await expect(otherBoard.request('getAll', { queue: 'other' })).resolves.toBeDefined();
    expect(acmeBoard.of('location')).toHaveLength(1);
    expect(otherBoard.of('location')).toEqual([]);
  });
});

describe('InTransit: which parcels each driver carries', () => {
  it('takes a parcel back at its next step, and stays within its bound, the oldest going first', () => {
    const vans = new InTransit(2);
    const parcel = (n: number) => ({ store: 'acme', orderId: `o${n}` });
    vans.step('in-transit', parcel(1), 'd1');
    vans.step('in-transit', parcel(2), 'd1');
    vans.step('in-transit', parcel(3), 'd2');
    expect(vans.size).toBe(2);
    expect(vans.of('d1')).toEqual([parcel(2)]);
    expect(vans.of('d2')).toEqual([parcel(3)]);
    vans.step('failed', parcel(2), 'd1');
    vans.step('delivered', parcel(3), 'd2');
    expect([vans.size, vans.of('d1'), vans.of('d2')]).toEqual([0, [], []]);
  });
});
