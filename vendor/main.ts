import type { CommandSpec } from '../cli/args.js';
import { runCommand, untilSignal } from '../cli/args.js';
import { VendorClient } from './vendor-client.js';

export const vendorCommand = {
  usage: 'caps vendor',
  summary: "Runs one store's vendor: hands a new parcel (a fake order) to the hub every --interval ms and thanks the driver when it is delivered.",
  flags: {
    url: { type: 'string', description: 'hub URL', placeholder: 'URL', default: 'http://localhost:3000', env: 'CAPS_URL' },
    store: { type: 'string', description: "the store's name (its room on the hub)", placeholder: 'NAME', default: '1-800-flowers', env: 'CAPS_STORE' },
    interval: { type: 'integer', description: 'milliseconds between new parcels', placeholder: 'MS', default: 2000, min: 1 },
    count: { type: 'integer', description: 'publish N parcels, then exit 0 once all N are delivered (default: run until stopped)', min: 1 },
  },
  examples: ['caps vendor --store acme-widgets', 'caps vendor --count 3 --interval 100'],
} as const satisfies CommandSpec;

export function runVendor(argv: readonly string[]): Promise<number> {
  return runCommand(vendorCommand, argv, async (flags) => {
    const vendor = new VendorClient({ url: flags.url, store: flags.store, interval: flags.interval, count: flags.count });
    const stop = untilSignal();
    const outcome = await Promise.race([
      vendor.run().then(() => 'done' as const),
      stop.then(() => 'stopped' as const),
    ]).catch((err: unknown) => {
      console.error(`caps vendor: ${err instanceof Error ? err.message : String(err)}`);
      return 'failed' as const;
    });
    if (outcome === 'done') console.log(`VENDOR: all ${flags.count} parcels delivered`);
    await vendor.close();
    return outcome === 'failed' ? 1 : 0;
  });
}
