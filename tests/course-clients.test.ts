import { fileURLToPath } from 'node:url';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { CliProcess } from './helpers/cli.js';
import { killAllCli, startCli, startScript } from './helpers/cli.js';
import { queueDepth } from './helpers/hub.js';
import { poll } from './helpers/wait.js';

/**
 * The course's clients as processes (tests/fixtures/course-clients: plain socket.io-client
 * scripts, no CAPS code) against `caps hub --allow-anonymous`: every parcel end to end, each
 * thanked once, and no refusal in the hub's log.
 */
const FIXTURES = fileURLToPath(new URL('./fixtures/course-clients/', import.meta.url));
const LISTENING = /listening on (http:\/\/\S+)/;
const dirs: string[] = [];
afterEach(async () => {
  await killAllCli();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

async function labHub(extra: string[] = []): Promise<{ hub: CliProcess; url: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'caps-course-'));
  dirs.push(dir);
  const hub = startCli(['hub', '--port', '0', '--host', '127.0.0.1', '--data', dir, '--allow-anonymous', '--json', ...extra]);
  const [line] = await hub.stdout.waitFor(LISTENING, 'the lab hub to listen');
  const url = LISTENING.exec(line ?? '')?.[1];
  if (url === undefined) throw new Error(`no URL in ${line}`);
  return { hub, url };
}

function client(script: string, url: string, store = '', count = 0): CliProcess {
  return startScript(join(FIXTURES, script), [], { HUB: url, STORE: store, COUNT: String(count) });
}

const variants: Array<{ name: string; vendor: string; driver: string; hub?: string[]; vendorAcks: boolean }> = [
  { name: 'lab 12: flat payloads, a driver that never says who it is', vendor: 'lab12-vendor.mjs', driver: 'lab12-driver.mjs', vendorAcks: false },
  { name: 'lab 13 written loosely: PICKUP, storeName, get-all, subscribe, received echoed and by orderId', vendor: 'loose-vendor.mjs', driver: 'loose-driver.mjs', vendorAcks: true },
  { name: 'a driver listening on one connection and reporting on another', vendor: 'lab12-vendor.mjs', driver: 'two-socket-driver.mjs', vendorAcks: false },
  { name: 'the same two-connection driver with --dispatch one', vendor: 'lab12-vendor.mjs', driver: 'two-socket-driver.mjs', hub: ['--dispatch', 'one'], vendorAcks: false },
];

describe('the course’s clients, as processes, against caps hub --allow-anonymous', () => {
  for (const variant of variants) {
    it(variant.name, async () => {
      const { hub, url } = await labHub(variant.hub);
      const count = 5;
      const store = 'course-store';
      const driver = client(variant.driver, url);
      // lab 12 queues nothing for a driver that is not there yet: it must be connected first
      await hub.stdout.waitFor(/"msg":"CONNECTED"/, 'the driver to connect', 10_000, variant.driver === 'two-socket-driver.mjs' ? 2 : 1);
      const vendor = client(variant.vendor, url, store, count);
      await vendor.stdout.waitFor(/^VENDOR: Thank you for delivering /, 'the vendor to thank the driver for every order', 15_000, count);
      // the last received may still be on its way
      await poll(async () => ((await queueDepth(url, 'driver')) === 0 ? true : undefined), 'every pickup taken off the driver queue');
      if (variant.vendorAcks) await poll(async () => ((await queueDepth(url, store)) === 0 ? true : undefined), `every step received by the vendor of ${store}`);
      const orders = Array.from({ length: count }, (_, i) => `${store}-${i + 1}`);
      const thanks = vendor.stdout.matching(/^VENDOR: Thank you for delivering /).map((l) => l.replace('VENDOR: Thank you for delivering ', ''));
      expect(thanks.sort()).toEqual(orders.sort());
      expect(driver.stdout.matching(/^DRIVER: picked up /)).toHaveLength(count);
      expect(hub.stdout.matching(/"msg":"REFUSED"/)).toEqual([]);
      expect(vendor.stderr.all.concat(driver.stderr.all)).toEqual([]);
    });
  }
});
