import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { killAllCli } from './helpers/cli.js';
import { Cleanup, RawClient, order } from './helpers/hub.js';
import { freePort, killHard, startHubProcess } from './helpers/hub-process.js';
import { poll } from './helpers/wait.js';
import { WebhookReceiver, deliveredEvents, inOrderPerParcel, verifies } from './helpers/webhook-receiver.js';

/**
 * The outbox is durable: a hub killed with `kill -9` while deliveries wait for a failing receiver,
 * restarted on the same data folder, sends every event (same ids, same bodies) in order per parcel.
 * The hub is a child process, so SIGKILL is a real one: no close, no last write.
 */
const cleanup = new Cleanup();
afterEach(async () => {
  await cleanup.run();
  await killAllCli();
});

const HUB_FLAGS = ['--webhook-allow-private', '--webhook-retry-base', '50'];

describe('webhooks across kill -9 of the hub', () => {
  it('loses no event, keeps the order per parcel and the event ids, and every signature verifies', async () => {
    const dir = cleanup.add(mkdtempSync(join(tmpdir(), 'caps-webhooks-kill-')), (d) => rmSync(d, { recursive: true, force: true }));
    const receiver = cleanup.add(await WebhookReceiver.start(), (r) => r.close());
    // parcels 1 and 2 get their pickup through, then their in-transit fails; 3 to 5 fail from the pickup on
    const through = new Set(['acme-order-1', 'acme-order-2']);
    receiver.answer = (r) => (through.has(String(r.body.data['orderId'])) && r.body.type === 'parcel.pickup' ? 200 : 500);
    const port = await freePort();
    const first = await startHubProcess({ port, dataDir: dir, extra: HUB_FLAGS, what: 'the hub (start 1)' });
    const registered = (await (await fetch(`${first.url}/api/stores/acme/webhooks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ url: receiver.url }) })).json()) as {
      data: { id: string; secret: string };
    };
    const { secret, id } = registered.data;
    const client = new RawClient(first.url);
    await client.connected();
    const parcels = [1, 2, 3, 4, 5].map((n) => order('acme', n));
    for (const event of ['pickup', 'in-transit', 'delivered']) {
      for (const parcel of parcels) await expect(client.request(event, parcel)).resolves.toMatchObject({ ok: true });
    }
    client.close();
    await receiver.waitFor(
      (r) => {
        const failedOnce = new Set(r.filter((x) => x.status === 500).map((x) => `${String(x.body.data['orderId'])} ${x.body.type}`));
        const waiting = ['acme-order-1 parcel.in-transit', 'acme-order-2 parcel.in-transit', 'acme-order-3 parcel.pickup', 'acme-order-4 parcel.pickup', 'acme-order-5 parcel.pickup'];
        return waiting.every((k) => failedOnce.has(k)) ? true : undefined;
      },
      'a failed attempt at the head of each parcel before the kill',
    );
    const before = receiver.received.length;
    await killHard(first.hub, 'the hub (start 1)');

    receiver.answer = () => 200;
    const second = await startHubProcess({ port, dataDir: dir, extra: HUB_FLAGS, what: 'the hub (start 2, same data)' });
    await receiver.waitFor((r) => (new Set(r.filter((x) => x.status === 200).map((x) => x.id)).size === 15 ? true : undefined), 'all 15 events delivered after the restart', 20_000);
    expect(receiver.received.length).toBeGreaterThan(before);
    for (const p of parcels) expect(deliveredEvents(receiver.received, p.orderId), p.orderId).toEqual(['parcel.pickup', 'parcel.in-transit', 'parcel.delivered']);
    expect(inOrderPerParcel(receiver.received)).toEqual([]);
    // one id (and one body) per step, before and after the kill; every request signed with the secret
    const idsByStep = new Map<string, Set<string>>();
    const bodiesById = new Map<string, Set<string>>();
    for (const r of receiver.received) {
      const step = `${String(r.body.data['orderId'])} ${r.body.type}`;
      idsByStep.set(step, (idsByStep.get(step) ?? new Set()).add(r.id));
      bodiesById.set(r.id, (bodiesById.get(r.id) ?? new Set()).add(r.raw));
      expect(verifies(secret, r), `signature of ${r.id}`).toBe(true);
    }
    expect(idsByStep.size).toBe(15);
    expect([...idsByStep.values()].filter((ids) => ids.size !== 1)).toEqual([]);
    expect([...bodiesById.values()].filter((bodies) => bodies.size !== 1)).toEqual([]);
    // the restarted hub knows the endpoint, and has nothing left for it
    const listed = await poll(async () => {
      const body = (await (await fetch(`${second.url}/api/stores/acme/webhooks`)).json()) as { data: { webhooks: Array<{ id: string; pending: number; state: string }> } };
      return body.data.webhooks[0]?.pending === 0 ? body.data.webhooks : undefined;
    }, 'the restarted hub to list the endpoint with nothing pending');
    expect(listed).toEqual([expect.objectContaining({ id, state: 'active', pending: 0 })]);
  });
});
